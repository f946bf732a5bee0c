"""ESP32 (no PSRAM: about 110 KB of heap for Python): LED on GPIO 2, BOOT button on GPIO 0.

Same interface as every board, so one main.py runs everywhere: NAME, safe_mode(), setup(config),
feed_watchdog() (the server's tick) and clock_synced. The bring-up itself (Wi-Fi, access point,
NTP, watchdog, reset cause, safe mode) is boards/common/wlan.py's; this file holds the pins and
limits. wlan is imported when first needed and let go once the tick has no more work for it
(clock synced, no blinking from the tick): its code then takes no heap while the gateway serves.
"""

import sys

import machine  # type: ignore

NAME = "esp32"
LED_PIN = 2  # the LED of most ESP32 DevKit boards
BUTTON_PIN = 0  # BOOT: reads 0 while held
TIMER_ID = 0  # hardware timer 0 blinks the LED in access-point mode
WDT_MAX_MS = 0  # no limit of its own: the config's range applies

clock_synced = False  # NTP set the clock (the tick keeps retrying until it has)
_up = None  # the wlan.Bringup while the tick has work for it
_wdt = None


def _led():
    import wlan

    return wlan.Led(machine.Pin(LED_PIN, machine.Pin.OUT), TIMER_ID)


def safe_mode():
    """True when BOOT is held or the file safemode exists (wlan.safe_mode says why and flashes)."""
    import wlan

    held = machine.Pin(BUTTON_PIN, machine.Pin.IN, machine.Pin.PULL_UP).value() == 0
    if wlan.safe_mode(held, _led()):
        return True
    sys.modules.pop("wlan", None)  # setup() imports it again, after the config's tables are made
    return False


def setup(config):
    """Once at boot, after the config loaded: reset cause, Wi-Fi, NTP, then the watchdog."""
    global _up, _wdt, clock_synced
    import wlan

    up = wlan.Bringup(_led(), WDT_MAX_MS)
    busy = up.start(config)
    _wdt = up.wdt
    clock_synced = up.synced
    _up = up
    if not busy:
        _done()


def _done():
    global _up
    _up = None
    sys.modules.pop("wlan", None)  # its code goes with the next collection


def feed_watchdog():
    """The server's tick (every 100 ms): feed the watchdog, and give the bring-up its turn while
    it has work (NTP retry, a blink without a Timer). Once done: two tests, no allocation."""
    global clock_synced
    if _wdt is not None:
        _wdt.feed()
    up = _up
    if up is not None:
        busy = up.tick()
        clock_synced = up.synced
        if not busy:
            _done()

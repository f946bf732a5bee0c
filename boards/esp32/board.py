"""ESP32 (no PSRAM: about 110 KB of heap for Python): Wi-Fi station, NTP, LED on GPIO 2.

Same interface as every board (setup, feed_watchdog, NAME), so one main.py runs everywhere.
"""

import machine  # type: ignore

import wlan

NAME = "esp32"
LED_PIN = 2
clock_synced = False
_wdt = None


def setup(config):
    """Connect Wi-Fi, sync the clock, start the watchdog if the config asks for one."""
    global clock_synced, _wdt
    print("board: esp32, reset cause: " + wlan.reset_cause())
    led = machine.Pin(LED_PIN, machine.Pin.OUT)
    wlan.connect(led)
    clock_synced = wlan.sync_clock()
    wdt_ms = getattr(config.listen, "watchdog_ms", 0)
    if wdt_ms:
        _wdt = machine.WDT(timeout=wdt_ms)


def feed_watchdog():
    if _wdt is not None:
        _wdt.feed()

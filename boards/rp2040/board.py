"""Raspberry Pi Pico W (RP2040, about 190 KB of heap for Python): Wi-Fi station, NTP, on-board LED.

Same interface as every board (setup, feed_watchdog, NAME), so one main.py runs everywhere.
"""

import machine  # type: ignore

import wlan

NAME = "rp2040"
clock_synced = False
_wdt = None


def setup(config):
    """Connect Wi-Fi, sync the clock, start the watchdog if the config asks for one."""
    global clock_synced, _wdt
    print("board: pico w, reset cause: " + wlan.reset_cause())
    led = machine.Pin("LED", machine.Pin.OUT)
    wlan.connect(led)
    clock_synced = wlan.sync_clock()
    wdt_ms = getattr(config.listen, "watchdog_ms", 0)
    if wdt_ms:
        _wdt = machine.WDT(timeout=min(wdt_ms, 8388))  # the RP2040 watchdog tops out at 8.3 s


def feed_watchdog():
    if _wdt is not None:
        _wdt.feed()

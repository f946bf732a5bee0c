"""Wi-Fi station bring-up shared by the ESP32 and Pico W boards (copied to the board with board.py).

Reads the credentials from secrets.json ({"wifi": {"ssid": "...", "password": "..."}}), which is
kept apart from gateway.json and never printed; connects with retries and a growing back-off,
blinking the LED while it tries; syncs the clock over NTP (token expiry needs it, later).
Only board modules import network and machine.
"""

import json
import time

import machine  # type: ignore
import network  # type: ignore


def read_secrets(path="secrets.json"):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def connect(led=None, attempts=6, secrets_path="secrets.json"):
    """Connect the station interface; returns its IP address, or None when it gave up."""
    wifi = read_secrets(secrets_path).get("wifi", {})
    ssid = wifi.get("ssid")
    if not ssid:
        print("board: no wifi.ssid in " + secrets_path + "; staying offline")
        return None
    sta = network.WLAN(network.STA_IF)
    sta.active(True)
    delay_ms = 500
    for attempt in range(attempts):
        if not sta.isconnected():
            sta.connect(ssid, wifi.get("password", ""))
        end = time.ticks_add(time.ticks_ms(), 10000)
        while not sta.isconnected() and time.ticks_diff(end, time.ticks_ms()) > 0:
            if led is not None:
                led.toggle()
            time.sleep_ms(100)
        if sta.isconnected():
            if led is not None:
                led.on()
            ip = sta.ifconfig()[0]
            print("board: wifi connected to " + ssid + " as " + ip)
            return ip
        print("board: wifi attempt " + str(attempt + 1) + " failed; retrying")
        time.sleep_ms(delay_ms)
        delay_ms = min(delay_ms * 2, 8000)
    if led is not None:
        led.off()
    return None


def sync_clock(attempts=3):
    """Set the RTC from NTP; True when the clock is synced."""
    try:
        import ntptime  # type: ignore
    except ImportError:
        return False
    for _ in range(attempts):
        try:
            ntptime.settime()
            return True
        except (OSError, OverflowError):
            time.sleep_ms(1000)
    return False


def reset_cause():
    causes = {
        getattr(machine, "PWRON_RESET", -1): "power on",
        getattr(machine, "HARD_RESET", -2): "hard reset",
        getattr(machine, "WDT_RESET", -3): "watchdog",
        getattr(machine, "DEEPSLEEP_RESET", -4): "deep sleep",
        getattr(machine, "SOFT_RESET", -5): "soft reset",
    }
    return causes.get(machine.reset_cause(), "unknown")

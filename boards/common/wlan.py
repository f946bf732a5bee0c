"""Board bring-up shared by the ESP32 and Pico W boards (copied to the board, or frozen, with board.py):
the Wi-Fi station with bounded, backed-off attempts, the first-setup access point, the status LED,
NTP with a slow retry from the server's tick, the hardware watchdog, the reset cause, safe mode.

Credentials come from secrets.json ({"wifi": {"ssid", "password"}, "ap": {"ssid", "password"}}),
kept apart from gateway.json. The passwords and the station's SSID are never printed, put in an
error or kept on an object: they stay in locals (Bringup.start, connect, start_ap). Settings come
from the config's `board` section (Config.extra["board"], checked by apigw/config.py; defaults in
DEFAULTS). The LED (docs/boards.md): blinking fast = connecting to Wi-Fi; on = connected, serving;
blinking slowly = access point up, waiting for setup; off = offline; three flashes, off = safe mode.

Time goes through `clock` (ticks and sleeps) and output through `log`, module globals a test
replaces, so the host tests run all of this against shims of machine, network and ntptime
without sleeping. Must not: know the gateway beyond config.listen.port and the board section,
raise out of Bringup.tick() (it runs in the server's loop), or hold pins and limits: those are
each board.py's. The unix board imports none of this.
"""

import os
import time

import machine  # type: ignore
import network  # type: ignore

# The `board` section's defaults (docs/config.md).
DEFAULTS = {"ap": "off", "ntp_host": "", "watchdog_ms": 0, "wifi_attempts": 6, "ntp_retry_s": 60}
ATTEMPT_MS = 10000  # one connection attempt waits this long at most
BACKOFF_MS = 500  # the pause after the first failed attempt; it doubles after each one ...
BACKOFF_MAX_MS = 8000  # ... up to this
NTP_TRIES = 3  # at boot, a second apart; then one try per ntp_retry_s from the tick
FAST_MS = 100  # LED period while connecting
SLOW_MS = 1000  # LED period in access-point mode
FLASH_MS = 150  # the safe-mode flashes
AP_ADDRESS = "192.168.4.1"  # both ports' access point, when ifconfig() cannot say
SECRETS = "secrets.json"
SAFEMODE = "safemode"  # the flag file, in the board's root (the working directory at boot)
# The status codes worth naming in a log line (each port has a subset; the ESP32's differ in value).
_STATUS = ("WRONG_PASSWORD", "NO_AP_FOUND", "CONNECT_FAIL", "ASSOC_FAIL", "BEACON_TIMEOUT", "HANDSHAKE_TIMEOUT")
_STATUS += ("CONNECTING", "IDLE")


class Clock:
    """The ticks and sleeps the bring-up waits by (time's); a test puts one that only counts."""

    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_add(self, t, delta):
        return time.ticks_add(t, delta)

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def sleep_ms(self, ms):
        time.sleep_ms(ms)


clock = Clock()
log = print


class Led:
    """The status LED on a machine.Pin (None: a board without one). Its state is kept here: an
    output pin does not read back on every port. Whoever waits blinks it fast (connect()); the
    slow blink is a machine.Timer's when timer_id is given and the port makes one, else tick()'s."""

    def __init__(self, pin, timer_id=None):
        self.pin = pin
        self.timer_id = timer_id
        self.lit = False
        self.timer = None

    def set(self, lit):
        self.stop()
        self._put(lit)

    def _put(self, lit):
        self.lit = lit
        if self.pin is not None:
            self.pin.value(1 if lit else 0)

    def toggle(self, _timer=None):
        """Also the Timer's callback (which passes the timer)."""
        self._put(not self.lit)

    def slow(self):
        """Blink every SLOW_MS: True when a Timer does it, False when the caller must call toggle()."""
        self.stop()
        if self.timer_id is None:
            return False
        try:
            t = machine.Timer(self.timer_id)
            t.init(mode=machine.Timer.PERIODIC, period=SLOW_MS, callback=self.toggle)
        except (ValueError, OSError, TypeError, AttributeError):
            return False
        self.timer = t
        return True

    def stop(self):
        if self.timer is not None:
            self.timer.deinit()
            self.timer = None

    def flash(self, times=3):
        """Short flashes, then off (safe mode)."""
        for _ in range(times):
            self._put(True)
            clock.sleep_ms(FLASH_MS)
            self._put(False)
            clock.sleep_ms(FLASH_MS)


def settings(config):
    """The `board` section over DEFAULTS (config.py has checked the values)."""
    s = dict(DEFAULTS)
    extra = getattr(config, "extra", None) or {}
    s.update(extra.get("board") or {})
    return s


def read_secrets(path=None):
    """The secrets document, or {} when there is none or it is not a JSON object. Its content is
    never logged, not even in the error about a bad file."""
    from apigw.store import read_json  # the firmware's reader: None when there is no file

    path = path or SECRETS
    try:
        doc = read_json(path)
    except OSError:
        return {}
    except ValueError:
        log("board: " + path + " is not valid JSON: no Wi-Fi credentials")
        return {}
    return doc if isinstance(doc, dict) else {}


def _pair(doc, name):
    """(ssid, password) of secrets[name], ("", "") when absent; strings only."""
    d = doc.get(name)
    if not isinstance(d, dict):
        return "", ""
    ssid, password = d.get("ssid"), d.get("password")
    return (ssid if isinstance(ssid, str) else ""), (password if isinstance(password, str) else "")


def backoff_ms(failures):
    """The pause after `failures` failed attempts (1, 2, ...): BACKOFF_MS doubling, capped."""
    ms = BACKOFF_MS
    for _ in range(failures - 1):
        ms = min(ms * 2, BACKOFF_MAX_MS)
    return ms


def status_name(code):
    """A station status code by name ("wrong password"), or "status N"."""
    for name in _STATUS:
        if getattr(network, "STAT_" + name, None) == code:
            return name.lower().replace("_", " ")
    return "status " + str(code)


def _blink_wait(led, ms, sta=None):
    """Blink fast for up to ms; with sta, stop as soon as it is connected (True)."""
    c = clock
    end = c.ticks_add(c.ticks_ms(), ms)
    while c.ticks_diff(end, c.ticks_ms()) > 0:
        if sta is not None and sta.isconnected():
            return True
        led.toggle()
        c.sleep_ms(FAST_MS)
    return sta is not None and sta.isconnected()


def connect(sta, ssid, password, led, attempts=DEFAULTS["wifi_attempts"], attempt_ms=ATTEMPT_MS):
    """Join the network on the station interface sta: its IP address, or None when every attempt
    failed. Each attempt waits at most attempt_ms; after a failure the pause is backoff_ms(n). The
    LED blinks fast all along and stays on once connected. Neither credential is logged."""
    sta.active(True)
    if sta.isconnected():  # kept over a soft reset (ESP32)
        return _connected(sta, led)
    for n in range(1, attempts + 1):
        why = None
        try:
            sta.connect(ssid, password)
        except OSError as e:  # the port's own message, never the credentials
            why = "error " + str(e.args[0] if e.args else "")
        if why is None and _blink_wait(led, attempt_ms, sta):
            return _connected(sta, led)
        if why is None:
            try:
                why = status_name(sta.status())
            except (OSError, TypeError):
                why = "no answer"
        try:
            sta.disconnect()  # ends this attempt: the port would go on trying by itself
        except OSError:
            pass
        if n == attempts:
            log("board: wifi attempt %d of %d failed (%s); giving up" % (n, attempts, why))
            break
        pause = backoff_ms(n)
        log("board: wifi attempt %d of %d failed (%s); next in %d ms" % (n, attempts, why, pause))
        _blink_wait(led, pause)
    led.set(False)
    return None


def _connected(sta, led):
    led.set(True)
    ip = sta.ifconfig()[0]
    log("board: wifi connected as " + ip)
    return ip


def default_ap_ssid(mac):
    """apigw-XXXX from the last two bytes of the MAC address (upper-case hex)."""
    return "apigw-%02X%02X" % (mac[-2], mac[-1])


def start_ap(ssid, password, port):
    """Start the access point: its address, or None when refused (a password shorter than 8
    characters: no open access point is ever started). An empty ssid is default_ap_ssid(); only
    that one is printed (an SSID from secrets.json is known to whoever wrote it), never a password."""
    if len(password) < 8 or len(password) > 63:
        log("board: access point refused: ap.password in " + SECRETS + " must have 8 to 63 characters")
        return None
    ap = network.WLAN(network.AP_IF)
    shown = ""
    if not ssid:
        try:
            mac = ap.config("mac")
        except (OSError, ValueError):
            mac = machine.unique_id()
        ssid = shown = default_ap_ssid(mac)
    auth = getattr(network, "AUTH_WPA2_PSK", None)  # the ESP32 opens the AP unless told; rp2 has no such name
    if auth is None:
        ap.config(essid=ssid, password=password)
    else:
        ap.config(essid=ssid, password=password, authmode=auth)
    ap.active(True)
    try:
        address = ap.ifconfig()[0]
    except OSError:
        address = AP_ADDRESS
    name = shown if shown else "(ssid from " + SECRETS + ")"
    log("board: access point %s up: join it, the gateway is at http://%s:%d/" % (name, address, port))
    return address


def ntp_try(host):
    """One NTP query: True when it set the clock. ntptime's socket timeout (1 s) bounds it; a host
    name costs a DNS lookup too (a LAN server's address does not). Never raises."""
    try:
        import ntptime  # type: ignore

        if host:
            ntptime.host = host
        ntptime.settime()
        return True
    except Exception:  # OSError (timeout, DNS), OverflowError, ImportError: the tick must go on
        return False


def watchdog(ms, max_ms=0):
    """A started machine.WDT of ms (capped at max_ms when the board has a limit), or None for 0."""
    if not ms:
        return None
    if max_ms and ms > max_ms:
        log("board: watchdog_ms %d is above this board's %d ms: using %d" % (ms, max_ms, max_ms))
        ms = max_ms
    wdt = machine.WDT(timeout=ms)
    log("board: watchdog on: %d ms" % ms)
    return wdt


def reset_cause():
    """What reset the board: "power on", "hard reset", "watchdog", "deep sleep", "soft reset"."""
    code = machine.reset_cause()
    for name, text in (
        ("PWRON_RESET", "power on"),
        ("HARD_RESET", "hard reset"),
        ("WDT_RESET", "watchdog"),
        ("DEEPSLEEP_RESET", "deep sleep"),
        ("SOFT_RESET", "soft reset"),
    ):
        if getattr(machine, name, None) == code:
            return text
    return "unknown (" + str(code) + ")"


def safe_mode(button_held, led):
    """True when the boot button is held or the flag file exists: one line says why and how to
    leave, the LED flashes three times and stays off, and main.py does not start the gateway."""
    if button_held:
        why, leave = "boot button held", "reset without holding the button"
    else:
        try:
            os.stat(SAFEMODE)
        except OSError:
            return False
        why, leave = "file " + SAFEMODE, "remove it (import os; os.remove('" + SAFEMODE + "')), then reset"
    log("board: safe mode (" + why + "): the gateway does not start, the REPL is free; to leave: " + leave)
    led.flash()
    return True


class Bringup:
    """One board's bring-up (start) and what the server's tick still has to do after it (tick)."""

    def __init__(self, led, wdt_max_ms=0):
        self.led = led
        self.wdt_max_ms = wdt_max_ms
        self.ip = None  # the station's address once connected
        self.ap_ip = None  # the access point's address once up
        self.synced = False  # NTP set the clock
        self.wdt = None
        self.ntp_host = ""
        self.ntp_every_ms = 0
        self.ntp_at = 0
        self.ntp_pending = False  # tick() retries NTP
        self.blink_at = 0
        self.blink_tick = False  # tick() blinks the LED slowly (no Timer)

    def start(self, config):
        """Reset cause, Wi-Fi (station and/or access point per board.ap), NTP, watchdog.
        Returns busy(): whether tick() has work left."""
        s = settings(config)
        mode = s["ap"]
        port = config.listen.port
        led = self.led
        log("board: reset cause: " + reset_cause())
        doc = read_secrets()
        if mode == "always":
            self.ap_ip = start_ap(*_pair(doc, "ap"), port=port)
        ssid, password = _pair(doc, "wifi")
        if ssid:
            sta = network.WLAN(network.STA_IF)
            self.ip = connect(sta, ssid, password, led, s["wifi_attempts"])
            if self.ip is None:
                sta.active(False)  # gave up: its scans would only disturb the access point
        else:
            log("board: no wifi.ssid in " + SECRETS)
        if self.ip is None and mode == "fallback":
            self.ap_ip = start_ap(*_pair(doc, "ap"), port=port)
        doc = ssid = password = None  # the secrets go with the next collection
        c = clock
        if self.ip is not None:
            led.set(True)
        elif self.ap_ip is not None:
            self.blink_tick = not led.slow()
            self.blink_at = c.ticks_add(c.ticks_ms(), SLOW_MS)
            log("board: access-point mode: waiting for setup (the LED blinks slowly)")
        else:
            led.set(False)
            log("board: offline: no Wi-Fi and no access point (board.ap is " + mode + ")")
        self.ntp_host = s["ntp_host"]
        self.ntp_every_ms = s["ntp_retry_s"] * 1000
        if self.ip is not None:
            for n in range(NTP_TRIES):
                if n:
                    c.sleep_ms(1000)
                if ntp_try(self.ntp_host):
                    self.synced = True
                    log("board: clock synced (NTP)")
                    break
            else:
                self.ntp_pending = True
                self.ntp_at = c.ticks_add(c.ticks_ms(), self.ntp_every_ms)
                log("board: clock not synced: NTP again every %d s" % s["ntp_retry_s"])
        else:
            log("board: clock not synced: no network")
        self.wdt = watchdog(s["watchdog_ms"], self.wdt_max_ms)
        return self.busy()

    def busy(self):
        return self.blink_tick or self.ntp_pending

    def tick(self):
        """The server's tick while busy(): the slow blink when no Timer does it, and one NTP try
        every ntp_retry_s until the clock is synced (it blocks for that try, 1 s at most plus a DNS
        lookup). Never raises. Returns busy()."""
        c = clock
        now = c.ticks_ms()
        if self.blink_tick and c.ticks_diff(now, self.blink_at) >= 0:
            self.led.toggle()
            self.blink_at = c.ticks_add(now, SLOW_MS)
        if self.ntp_pending and c.ticks_diff(now, self.ntp_at) >= 0:
            self.ntp_at = c.ticks_add(now, self.ntp_every_ms)
            if ntp_try(self.ntp_host):
                self.synced = True
                self.ntp_pending = False
                log("board: clock synced (NTP)")
        return self.busy()

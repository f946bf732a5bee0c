"""Portable tests of the board bring-up: boards/common/wlan.py and boards/esp32, rp2040, unix board.py.

The board-only modules are the scripted shims of host_tests/shims (machine, network, ntptime,
rp2), put in sys.modules under the real names for each test and taken out after; boards/ is put
on sys.path the same way. Time is a fake clock whose sleep only counts, and wlan's output goes to
a list, so the tests see every line and never sleep. Checked: Wi-Fi that fails twice then
connects (back-off growing and capped, every attempt bounded, the LED blinking, no credential in
any output or repr), no SSID (offline, or the access point per board.ap), a refused short AP
password, NTP failing then synced from the tick, the watchdog's timeout and feeds, the reset
cause, safe mode by flag file and by button, and the `board` config section's errors.
"""

import os
import sys

from apigw.config import ConfigError, load_config_text
from check import raises, root

SHIMS = ("machine", "network", "ntptime", "rp2")
PASSWORD = "correct-horse-battery"
SSID = "home-net-5g"
AP_PASSWORD = "setup-pass-42"


ROOT = root()
TMP = "/tmp/apigw_test_boards_%d" % (os.getpid() if hasattr(os, "getpid") else 0)


class FakeClock:
    """Ticks that move only when something sleeps; every sleep is recorded."""

    def __init__(self):
        self.now = 0
        self.sleeps = []

    def ticks_ms(self):
        return self.now

    def ticks_add(self, t, delta):
        return t + delta

    def ticks_diff(self, a, b):
        return a - b

    def sleep_ms(self, ms):
        self.sleeps.append(ms)
        self.now += ms


class Env:
    """The shims installed, boards/<name> and boards/common on sys.path, wlan's clock and log
    replaced, secrets.json and the safemode flag in a scratch folder. close() undoes all of it."""

    def __init__(self, board_name=None, secrets=None, board_section=None, port=8080):
        from shims import machine, network, ntptime, rp2

        self.machine, self.network, self.ntptime, self.rp2 = machine, network, ntptime, rp2
        for m in (machine, network, ntptime, rp2):
            m.reset()
        self.saved = {}
        for name, mod in zip(SHIMS, (machine, network, ntptime, rp2)):
            self.saved[name] = sys.modules.get(name)
            sys.modules[name] = mod
        for name in ("wlan", "board"):
            sys.modules.pop(name, None)
        self.paths = [ROOT + "/boards/common"]
        if board_name is not None:
            self.paths.insert(0, ROOT + "/boards/" + board_name)
        for p in reversed(self.paths):
            sys.path.insert(0, p)
        try:
            os.mkdir(TMP)
        except OSError:
            pass
        import wlan

        self.wlan = wlan
        self.clock = wlan.clock = FakeClock()
        self.out = []
        wlan.log = self.out.append
        wlan.SECRETS = TMP + "/secrets.json"
        wlan.SAFEMODE = TMP + "/safemode"
        self._remove(wlan.SECRETS)
        self._remove(wlan.SAFEMODE)
        if secrets is not None:
            import json

            with open(wlan.SECRETS, "w") as f:
                f.write(json.dumps(secrets))
        self.board = None
        if board_name is not None:
            import board

            self.board = board
        self.config = Config(port, board_section)

    def _remove(self, path):
        try:
            os.remove(path)
        except OSError:
            pass

    def text(self):
        return "\n".join(self.out)

    def sta(self):
        return self.network.WLAN(self.network.STA_IF)

    def ap(self):
        return self.network.WLAN(self.network.AP_IF)

    def close(self):
        self._remove(self.wlan.SECRETS)
        self._remove(self.wlan.SAFEMODE)
        try:
            os.rmdir(TMP)
        except OSError:
            pass
        for p in self.paths:
            if p in sys.path:
                sys.path.remove(p)
        for name in ("wlan", "board"):
            sys.modules.pop(name, None)
        for name in SHIMS:
            if self.saved[name] is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = self.saved[name]


class Listen:
    def __init__(self, port):
        self.host = "0.0.0.0"
        self.port = port


class Config:
    """What a board reads from a loaded config: listen.port and extra["board"]."""

    def __init__(self, port=8080, board_section=None):
        self.listen = Listen(port)
        self.extra = {} if board_section is None else {"board": board_section}


def _no_secret(env, *objects):
    """No credential in wlan's output, nor in the repr of any object the bring-up keeps."""
    texts = [env.text()]
    for obj in objects:
        texts.append(repr(obj))
        d = getattr(obj, "__dict__", None)
        if d is not None:
            texts.append(repr(d))
    for text in texts:
        for secret in (PASSWORD, SSID, AP_PASSWORD):
            assert secret not in text, (secret, text)


def _wifi(**ap):
    doc = {"wifi": {"ssid": SSID, "password": PASSWORD}}
    if ap:
        doc["ap"] = ap
    return doc


# -- Wi-Fi station -------------------------------------------------------------------------------


def test_backoff_grows_and_is_capped():
    env = Env()
    try:
        w = env.wlan
        got = [w.backoff_ms(n) for n in range(1, 9)]
        assert got == [500, 1000, 2000, 4000, 8000, 8000, 8000, 8000], got
    finally:
        env.close()


def test_wifi_fails_twice_then_connects():
    for name in ("esp32", "rp2040"):
        env = Env(name, _wifi())
        try:
            n = env.network
            n.script[:] = [n.STAT_NO_AP_FOUND, n.STAT_WRONG_PASSWORD, True]
            env.board.setup(env.config)
            sta = env.sta()
            assert sta.connects == 3 and sta.disconnects == 2 and sta.isconnected()
            assert sta._key == (SSID, PASSWORD)  # the credentials did reach the port
            lines = env.out
            assert "board: wifi attempt 1 of 6 failed (no ap found); next in 500 ms" in lines, lines
            assert "board: wifi attempt 2 of 6 failed (wrong password); next in 1000 ms" in lines, lines
            assert "board: wifi connected as 192.168.1.23" in lines, lines
            # each failed attempt waited ATTEMPT_MS (100 ms steps, LED toggled each), then the pause
            c = env.clock
            assert c.now == 10000 + 500 + 10000 + 1000 + 300 + 0, c.now
            led = env.machine.pins["LED" if name == "rp2040" else 2]
            assert led.changes > 200 and led.level == 1  # blinked fast, then on
            assert env.board.clock_synced and env.ntptime.calls == 1
            _no_secret(env, env.board._up, env.board)
        finally:
            env.close()


def test_wifi_gives_up_after_its_attempts_each_bounded():
    env = Env("esp32", _wifi(), {"wifi_attempts": 8})
    try:
        env.board.setup(env.config)
        sta = env.sta()
        assert sta.connects == 8 and not sta.active()  # gave up: the station is off
        pauses = [int(line.split("next in ")[1].split()[0]) for line in env.out if "next in" in line]
        assert pauses == [500, 1000, 2000, 4000, 8000, 8000, 8000], pauses
        assert "board: wifi attempt 8 of 8 failed (no ap found); giving up" in env.out, env.out
        assert env.clock.now == 8 * 10000 + sum(pauses)  # every attempt waited 10 s at most
        assert env.machine.pins[2].level == 0  # offline: LED off
        assert "board: offline: no Wi-Fi and no access point (board.ap is off)" in env.out
        assert not env.board.clock_synced and env.ntptime.calls == 0
        _no_secret(env)
    finally:
        env.close()


def test_connect_error_from_the_port_is_logged_without_credentials():
    env = Env(None, _wifi())
    try:
        w, n = env.wlan, env.network
        n.raise_on_connect = True
        led = w.Led(None)
        assert w.connect(env.sta(), SSID, PASSWORD, led, 2) is None
        assert env.out[0] == "board: wifi attempt 1 of 2 failed (error -1); next in 500 ms", env.out
        _no_secret(env, led)
    finally:
        env.close()


# -- no SSID, access point -----------------------------------------------------------------------


def test_no_ssid_stays_offline_with_ap_off():
    for secrets in (None, {}, {"wifi": {"ssid": ""}}, {"wifi": "x"}):
        env = Env("rp2040", secrets)
        try:
            env.board.setup(env.config)
            assert env.sta().connects == 0 and not env.ap().active()
            assert "board: no wifi.ssid in " + env.wlan.SECRETS in env.out, env.out
            assert env.machine.pins["LED"].level == 0 and not env.board.clock_synced
            assert env.board._up is None  # nothing left for the tick: wlan is let go
        finally:
            env.close()


def test_bad_secrets_file_is_reported_without_its_content():
    env = Env("esp32")
    try:
        with open(env.wlan.SECRETS, "w") as f:
            f.write('{"wifi": {"ssid": "%s", "password": "%s"' % (SSID, PASSWORD))  # cut short
        env.board.setup(env.config)
        assert "board: " + env.wlan.SECRETS + " is not valid JSON: no Wi-Fi credentials" in env.out, env.out
        _no_secret(env)
    finally:
        env.close()


def test_no_ssid_starts_the_access_point_in_fallback():
    for name, timer_id, authmode in (("esp32", 0, 3), ("rp2040", -1, None)):
        env = Env(name, {"ap": {"password": AP_PASSWORD}}, {"ap": "fallback"})
        try:
            if authmode is None:
                del env.network.AUTH_WPA2_PSK  # the rp2 port has no such name
            env.board.setup(env.config)
            ap = env.ap()
            want = {"essid": "apigw-ABCD", "password": AP_PASSWORD}
            if authmode is not None:
                want["authmode"] = authmode
            assert ap.active() and ap.configured == want, ap.configured
            assert "board: access point apigw-ABCD up: join it, the gateway is at http://192.168.4.1:8080/" in env.out
            t = env.machine.timers[0]  # the slow blink: a Timer of a second
            assert t.id == timer_id and t.period == 1000 and t.mode == env.machine.Timer.PERIODIC
            led = env.machine.pins["LED" if name == "rp2040" else 2]
            before = led.level
            t.fire()
            assert led.level != before
            assert env.board._up is None  # the Timer blinks: nothing for the tick
            _no_secret(env)
        finally:
            env.close()


def test_station_failure_falls_back_to_the_access_point_named_in_secrets():
    env = Env("esp32", _wifi(ssid="gw-setup", password=AP_PASSWORD), {"ap": "fallback", "wifi_attempts": 2})
    try:
        env.board.setup(env.config)
        assert env.sta().connects == 2 and not env.sta().active()
        assert env.ap().active() and env.ap().configured["essid"] == "gw-setup"
        assert "board: access point (ssid from " + env.wlan.SECRETS + ") up" in env.text()
        assert "gw-setup" not in env.text()
        _no_secret(env)
    finally:
        env.close()


def test_access_point_always_runs_beside_the_station():
    env = Env("rp2040", _wifi(password=AP_PASSWORD), {"ap": "always"})
    try:
        env.network.script[:] = [True]
        env.board.setup(env.config)
        assert env.ap().active() and env.sta().isconnected()
        assert env.machine.pins["LED"].level == 1  # connected: on, not blinking
        assert not env.machine.timers
    finally:
        env.close()


def test_access_point_refuses_a_short_password():
    for password in ("", "short", "pw-7chr"):
        env = Env("esp32", {"ap": {"password": password}}, {"ap": "fallback"})
        try:
            env.board.setup(env.config)
            assert not env.ap().active() and env.ap().configured == {}
            want = "board: access point refused: ap.password in %s must have 8 to 63 characters" % env.wlan.SECRETS
            assert want in env.out, env.out
            assert "board: offline: no Wi-Fi and no access point (board.ap is fallback)" in env.out
            assert env.machine.pins[2].level == 0
            if password:
                assert password not in env.text()
        finally:
            env.close()


def test_access_point_blinks_from_the_tick_without_a_timer():
    env = Env("rp2040", {"ap": {"password": AP_PASSWORD}}, {"ap": "fallback"})
    try:
        env.machine.timer_error = True
        env.board.setup(env.config)
        led = env.machine.pins["LED"]
        up = env.board._up
        assert up is not None and up.blink_tick
        changes = led.changes
        for _ in range(50):  # 5 s of ticks: the LED changes once a second
            env.clock.now += 100
            env.board.feed_watchdog()
        assert led.changes - changes == 5, led.changes - changes
    finally:
        env.close()


# -- NTP -----------------------------------------------------------------------------------------


def test_ntp_fails_then_syncs_from_the_tick():
    for name in ("esp32", "rp2040"):
        env = Env(name, _wifi(), {"ntp_host": "192.168.1.1", "watchdog_ms": 5000})
        try:
            n, ntp, board = env.network, env.ntptime, env.board
            n.script[:] = [True]
            ntp.fails = 4  # the three boot tries and the first from the tick fail
            board.setup(env.config)
            assert ntp.calls == 3 and not board.clock_synced and board._up is not None
            assert env.clock.sleeps[-2:] == [1000, 1000]  # a second between the boot tries
            assert "board: clock not synced: NTP again every 60 s" in env.out
            wdt = env.machine.wdts[0]
            for _ in range(599):  # 59.9 s of ticks: no try yet, the watchdog fed at each
                env.clock.now += 100
                board.feed_watchdog()
            assert ntp.calls == 3 and wdt.feeds == 599
            env.clock.now += 100
            board.feed_watchdog()  # 60 s: one try, which fails
            assert ntp.calls == 4 and not board.clock_synced
            for _ in range(600):
                env.clock.now += 100
                board.feed_watchdog()
            assert ntp.calls == 5 and board.clock_synced and board._up is None
            assert ntp.hosts == ["192.168.1.1"] * 5
            assert env.out[-1] == "board: clock synced (NTP)"
            assert "wlan" not in sys.modules  # done: the bring-up's code is let go
            board.feed_watchdog()
            assert ntp.calls == 5 and wdt.feeds == 1201
        finally:
            env.close()


def test_ntp_not_tried_without_a_network():
    env = Env("esp32", None, {"ap": "off"})
    try:
        env.board.setup(env.config)
        assert env.ntptime.calls == 0 and "board: clock not synced: no network" in env.out
    finally:
        env.close()


# -- watchdog, reset cause -----------------------------------------------------------------------


def test_watchdog_timeout_capped_on_rp2040_and_fed():
    for name, asked, want in (("esp32", 20000, 20000), ("rp2040", 20000, 8388), ("rp2040", 3000, 3000)):
        env = Env(name, None, {"watchdog_ms": asked})
        try:
            env.board.setup(env.config)
            wdts = env.machine.wdts
            assert len(wdts) == 1 and wdts[0].timeout == want, (name, [w.timeout for w in wdts])
            assert "board: watchdog on: %d ms" % want in env.out
            if want != asked:
                assert "board: watchdog_ms 20000 is above this board's 8388 ms: using 8388" in env.out
            for _ in range(7):
                env.board.feed_watchdog()
            assert wdts[0].feeds == 7
        finally:
            env.close()


def test_no_watchdog_by_default():
    env = Env("esp32")
    try:
        env.board.setup(env.config)
        assert env.machine.wdts == []
        env.board.feed_watchdog()  # nothing to feed: no error
    finally:
        env.close()


def test_reset_cause_names():
    for attr, text in (
        ("PWRON_RESET", "power on"),
        ("HARD_RESET", "hard reset"),
        ("WDT_RESET", "watchdog"),
        ("DEEPSLEEP_RESET", "deep sleep"),
        ("SOFT_RESET", "soft reset"),
    ):
        env = Env("rp2040")
        try:
            env.machine.cause = getattr(env.machine, attr)
            env.board.setup(env.config)
            assert env.out[0] == "board: reset cause: " + text, env.out
        finally:
            env.close()
    env = Env()
    try:
        env.machine.cause = 99
        assert env.wlan.reset_cause() == "unknown (99)"
    finally:
        env.close()


# -- safe mode -----------------------------------------------------------------------------------


def test_safe_mode_by_flag_file():
    for name in ("esp32", "rp2040"):
        env = Env(name)
        try:
            with open(env.wlan.SAFEMODE, "w") as f:
                f.write("")
            assert env.board.safe_mode() is True
            assert len(env.out) == 1, env.out
            line = env.out[0]
            assert line.startswith("board: safe mode (file " + env.wlan.SAFEMODE + "): the gateway does not start")
            assert "os.remove('" + env.wlan.SAFEMODE + "')" in line
            led = env.machine.pins["LED" if name == "rp2040" else 2]
            assert led.changes == 6 and led.level == 0  # three flashes, then off
        finally:
            env.close()


def test_safe_mode_by_button():
    for name in ("esp32", "rp2040"):
        env = Env(name)
        try:
            if name == "esp32":
                env.machine.levels[0] = 0  # BOOT (GPIO 0) held: reads low
            else:
                env.rp2.button = 1  # BOOTSEL held
            assert env.board.safe_mode() is True
            assert env.out == [
                "board: safe mode (boot button held): the gateway does not start, the REPL is free; "
                "to leave: reset without holding the button"
            ], env.out
            if name == "esp32":
                assert env.machine.pins[0].pull == env.machine.Pin.PULL_UP
        finally:
            env.close()


def test_unix_board_safe_mode_by_flag_file_and_clock():
    env = Env("unix")
    try:
        board = env.board
        board.SAFEMODE = env.wlan.SAFEMODE
        assert board.safe_mode() is False
        with open(board.SAFEMODE, "w") as f:
            f.write("")
        assert board.safe_mode() is True
        assert board.clock_synced is True and board.NAME == "unix"
        board.feed_watchdog()
    finally:
        env.close()


# -- the board section of gateway.json -----------------------------------------------------------


def test_board_section_loads_and_errors_name_the_field():
    small = '"limits": {"services": 1, "routes": 1, "strtab_bytes": 256}'
    doc = '{%s, "board": {"ap": "fallback", "ntp_host": "192.168.1.1", "watchdog_ms": 8000, "_c": 1}}' % small
    cfg = load_config_text(doc)
    assert cfg.extra["board"]["ap"] == "fallback" and cfg.extra["board"]["watchdog_ms"] == 8000
    assert load_config_text('{%s, "board": {}}' % small).extra["board"] == {}
    for section, want in (
        ('{"ap": "on"}', "board.ap: must be one of off, fallback, always"),
        ('{"ap": true}', "board.ap: must be one of off, fallback, always"),
        ('{"ntp_host": 5}', "board.ntp_host: must be a string"),
        ('{"watchdog_ms": 500}', "board.watchdog_ms: must be 0 (off) or 1000-3600000"),
        ('{"watchdog_ms": -1}', "board.watchdog_ms: must be an integer 0-3600000"),
        ('{"watchdog_ms": true}', "board.watchdog_ms: must be an integer 0-3600000"),
        ('{"wifi_attempts": 0}', "board.wifi_attempts: must be an integer 1-100"),
        ('{"ntp_retry_s": 5}', "board.ntp_retry_s: must be an integer 10-86400"),
        ('{"wifi": {}}', "board.wifi: unknown key"),
        ("[]", "board: must be an object"),
    ):
        e = raises(ConfigError, load_config_text, '{%s, "board": %s}' % (small, section))
        assert str(e) == want, (section, str(e))


def test_station_kept_over_a_soft_reset_is_used():
    env = Env("esp32", _wifi())
    try:
        env.sta().connected = True  # an ESP32 keeps its connection over a soft reset
        env.board.setup(env.config)
        assert env.sta().connects == 0 and "board: wifi connected as 192.168.1.23" in env.out
        assert env.machine.pins[2].level == 1 and env.clock.now == 0
    finally:
        env.close()


def test_safe_mode_check_lets_wlan_go_before_the_config_loads():
    for name in ("esp32", "rp2040"):
        env = Env(name)
        try:
            assert env.board.safe_mode() is False and env.out == [] and "wlan" not in sys.modules
            assert env.machine.pins["LED" if name == "rp2040" else 2].changes == 0
        finally:
            env.close()

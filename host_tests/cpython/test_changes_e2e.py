"""End to end, nothing lost: changes made at run time through the admin API's shell (a service and
a route added, a config route removed, an instance drained and re-weighted, another added, a
breaker tripped) are written to gateway.changes.json as they are made, and a gateway killed without
warning (SIGKILL: a power cut, as far as the process can tell) comes back with every one of them.
"""

import json
import os

import pytest

ADMIN = ("admin", "admin-pass")


def shell(gw, command):
    import base64

    auth = "Basic " + base64.b64encode(("%s:%s" % ADMIN).encode()).decode()
    status, _, data = gw.request(
        "POST",
        "/_gw/admin/shell",
        body=json.dumps({"command": command}),
        headers={"Authorization": auth, "Content-Type": "application/json"},
    )
    assert status == 200, (command, status, data)
    return json.loads(data)["output"]


def rows(text, cols=None):
    """A shell table's rows, sorted, without their id column (ids are reused: they differ after a
    restart), or only the columns cols."""
    out = []
    for line in text.split("\n"):
        cells = line.split()
        out.append(cells[1:] if cols is None else [cells[i] for i in cols])
    return sorted(out)


@pytest.fixture()
def gw(e2e, upstreams, tmp_path):
    cfg = e2e.e2e_config(upstreams, e2e.free_port())
    g = e2e.Gateway(cfg, tmp_path, "changed").start()
    try:
        yield g
    finally:
        g.kill()


def test_changes_survive_a_kill(gw, upstreams):
    changes = os.path.join(gw.workdir, "changed.changes.json")
    assert not os.path.exists(changes)
    port = upstreams["controller"].port
    assert shell(gw, "gateway add-service lamp 127.0.0.1:%d timeout_ms=3000" % port).startswith("added service")
    assert shell(gw, "gateway add-route /lamp lamp name=lamp strip").startswith("added route")
    assert shell(gw, "gateway remove-route cached") == "removed route cached"
    assert "drained" in shell(gw, "lb drain 0")
    assert "weight 7" in shell(gw, "lb weight 1 7")
    out = shell(gw, "lb add sensors localhost:%d weight=2" % upstreams["sensors"].port)
    assert " in sensors: weight 2" in out, out
    assert "every call refused" in shell(gw, "resilience trip guarded-flaky")
    assert os.path.exists(changes) and os.path.exists(changes[:-5] + ".prev.json")

    def observed():
        lamp = gw.request("GET", "/lamp/echo")
        return (
            lamp[0],
            gw.request("GET", "/cached/sensors/temp")[0],
            shell(gw, "resilience breaker guarded-flaky").split("\n")[0],
            rows(shell(gw, "gateway routes")),
            rows(shell(gw, "gateway services")),
            rows(shell(gw, "lb instances"), (1, 2, 3, 6)),  # pool, address, weight, drained (not probe times)
            shell(gw, "gateway changes"),
        )

    before = observed()
    assert before[:2] == (200, 404) and "every call refused until reset" in before[2], before[:3]

    gw.kill()  # SIGKILL: no clean stop, nothing flushed on the way out
    gw.start()  # the same files
    assert "apigw: 7 run-time change(s) applied from " in gw.output(), gw.output()
    after = observed()
    assert after == before
    for line in (
        "route removed: cached",
        "service added: lamp 127.0.0.1:%d" % port,
        "breaker held open: guarded-flaky",
    ):
        assert line in after[-1].split("\n"), after[-1]

    assert shell(gw, "gateway changes clear").startswith("forgot 7 change(s)")
    gw.kill()
    gw.start()
    assert "run-time change" not in gw.output()
    assert gw.request("GET", "/lamp/echo")[0] == 404 and gw.request("GET", "/cached/sensors/temp")[0] == 200

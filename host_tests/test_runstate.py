"""Portable tests for run-time changes kept across a reboot (runstate.py, store.py): every change the
shells make to routes, services, instances and breakers is written to the change file, and a
gateway loaded again from the same config comes back with them."""

import json
import os

from apigw import runstate
from apigw.compat import ticks_ms
from apigw.config import load_config_text
from apigw.shell import Shell
from apigw.store import atomic_write, read_json_kept, write_json

CONFIG = """{"limits": {"services": 6, "routes": 8, "strtab_bytes": 1024},
 "services": [
  {"name": "temp", "host": "10.0.0.1", "port": 80},
  {"name": "web", "pool": "web", "resilience": {"breaker": {"failure_threshold": 3}}},
  {"name": "old", "host": "10.0.0.9", "port": 90}],
 "balancer": {"pools": 2, "instances": 6},
 "pools": [{"name": "web", "instances": [{"host": "10.0.1.1", "port": 80}, {"host": "10.0.1.2", "port": 80}]}],
 "routes": [
  {"path": "/temp", "service": "temp", "name": "temp"},
  {"path": "/web", "service": "web"},
  {"path": "/old", "service": "old", "match": "exact", "methods": ["GET"]}]}"""

PATH = "runstate_test.changes.json"
PREV = "runstate_test.changes.prev.json"


class _Server:
    """What the shells and runstate read from a running server."""

    gate = None
    mediator = None
    monitoring = None

    def __init__(self, cfg, path=PATH):
        self.gw = cfg.gateway
        self.balancer = cfg.balancer
        self.guard = cfg.guard
        self.changes_path = path


def _clean():
    for p in (PATH, PREV, PATH + ".tmp"):
        try:
            os.remove(p)
        except OSError:
            pass


def _boot():
    """A server loaded from CONFIG with the change file applied, as main.py does at boot."""
    srv = _Server(load_config_text(CONFIG))
    logged = []
    runstate.load(srv, PATH, ticks_ms(), logged.append)
    return srv, Shell(srv.gw, srv), logged


def _tables(sh):
    """Routes, services and instances as sorted rows without their ids (ids are reused: they differ
    after a reboot)."""
    out = []
    for cmd in ("gateway routes", "gateway services", "lb instances"):
        out.append(sorted(line.split()[1:] for line in sh.execute(cmd).split("\n")))
    return out


def test_changes_survive_a_reboot():
    _clean()
    try:
        srv, sh, logged = _boot()
        assert logged == [] and sh.execute("gateway changes").startswith("no run-time changes")
        assert sh.execute("gateway add-service lamp 10.0.0.5:8080 timeout_ms=2500").startswith("added service")
        assert sh.execute("gateway add-route /lamp lamp name=lamp methods=get,put").startswith("added route")
        assert sh.execute("gateway add-route /hello respond=200 body=hi match=exact").startswith("added route")
        assert sh.execute("gateway remove-route 2") == "removed route 2"
        assert sh.execute("gateway remove-route temp") == "removed route temp"
        assert sh.execute("gateway remove-service old") == "removed service old"
        assert "weight 5" in sh.execute("lb weight 1 5")
        assert "drained" in sh.execute("lb drain 0")
        out = sh.execute("lb add web 10.0.1.3:80 weight=2")
        assert out.startswith("instance 2 10.0.1.3:80 in web: weight 2"), out
        assert sh.execute("resilience trip web").startswith("breaker")
        doc = json.loads(open(PATH).read())
        assert doc["v"] == 1 and doc["services_added"]["lamp"] == {"host": "10.0.0.5", "port": 8080, "timeout_ms": 2500}
        assert doc["routes_removed"] == ["exact /old GET", "temp"]
        assert doc["breakers"] == {"web": "open"}
        before = _tables(sh)

        srv2, sh2, logged = _boot()  # the reboot: the same config, the change file applied
        assert logged == ["apigw: 10 run-time change(s) applied from " + PATH], logged
        assert _tables(sh2) == before
        assert "lamp" in sh2.execute("gateway route PUT /lamp/x")
        assert sh2.execute("gateway route GET /hello").endswith("respond 200")
        assert sh2.execute("gateway route GET /old").startswith("404")
        assert srv2.guard.breakers.state(srv2.guard.breakers.find("web")) == 1  # OPEN, held
        lines = sh2.execute("gateway changes").split("\n")
        assert "route removed: temp" in lines and "breaker held open: web" in lines
        assert (
            "instance: web 10.0.1.1:80 weight 1, drained" in lines
            and "instance added: web 10.0.1.3:80 weight 2" in lines
        )
    finally:
        _clean()


def test_undoing_a_change_leaves_nothing_to_apply():
    _clean()
    try:
        srv, sh, _ = _boot()
        sh.execute("gateway add-service lamp 10.0.0.5:80")
        sh.execute("gateway add-route /lamp lamp")
        assert sh.execute("gateway remove-route 3") == "removed route 3"  # the id the added route got
        sh.execute("lb add web 10.0.1.3:80")
        assert sh.execute("lb remove 2") == "removed instance web 10.0.1.3:80"
        sh.execute("resilience trip web")
        sh.execute("resilience reset web")
        doc = runstate.of(srv).doc
        assert doc["routes_added"] == [] and doc["routes_removed"] == [] and doc["breakers"] == {}
        assert doc["instances_added"] == {} and doc["instances"] == {}
        assert sh.execute("gateway changes clear").startswith(
            "forgot 2 change(s)"
        )  # the service, and the instance removal (kept: harmless)
        assert sh.execute("gateway changes").startswith("no run-time changes")
        _, sh2, logged = _boot()
        assert logged == [] and "lamp" not in sh2.execute("gateway services")
    finally:
        _clean()


def test_a_change_that_no_longer_applies_is_reported_and_kept():
    _clean()
    try:
        write_json(
            PATH,
            {
                "routes_added": [{"key": "x", "path": "/x", "service": "gone", "name": "x"}],
                "instances": {"web 10.9.9.9:80": {"drained": True, "weight": 1}},
                "breakers": {"nope": "open"},
                "routes_removed": ["no such route"],
            },
        )
        srv, sh, logged = _boot()
        assert len(logged) == 4, logged
        assert logged[0].startswith("apigw: change not applied: add route x (")
        assert logged[1] == "apigw: change not applied: set instance web 10.9.9.9:80 (no such instance)"
        assert logged[2] == "apigw: change not applied: hold breaker nope (no such breaker)"
        assert logged[3] == "apigw: 0 run-time change(s) applied from " + PATH + ", 3 not"
        assert runstate.of(srv).doc["routes_added"][0]["service"] == "gone"  # kept for a later config
    finally:
        _clean()


def test_the_previous_copy_is_kept_and_read_when_the_file_is_missing_or_damaged():
    _clean()
    try:
        write_json(PATH, {"breakers": {"web": "open"}}, PREV)
        assert read_json_kept(PATH, PREV) == {"breakers": {"web": "open"}}
        write_json(PATH, {"breakers": {"web": "closed"}}, PREV)
        assert json.loads(open(PREV).read()) == {"breakers": {"web": "open"}}  # the one before
        os.remove(PATH)  # a reset between atomic_write's two renames
        assert read_json_kept(PATH, PREV) == {"breakers": {"web": "open"}}
        atomic_write(PATH, '{"breakers": {"we')  # damaged by hand
        assert read_json_kept(PATH, PREV) == {"breakers": {"web": "open"}}
        srv, sh, logged = _boot()
        assert "breaker held open: web" in sh.execute("gateway changes")
    finally:
        _clean()


def test_without_a_change_file_nothing_is_recorded():
    srv = _Server(load_config_text(CONFIG), None)
    sh = Shell(srv.gw, srv)
    assert sh.execute("gateway add-route /n respond=204") == "added route 3"
    assert sh.execute("gateway changes").startswith("error: no change file")
    assert Shell(srv.gw).execute("gateway remove-route 3") == "removed route 3"  # offline shell


def test_a_write_that_fails_is_reported():
    srv = _Server(load_config_text(CONFIG), "no/such/folder/x.changes.json")
    out = Shell(srv.gw, srv).execute("gateway add-route /n respond=204")
    assert out.startswith("added route 3\nwarning: not saved ("), out
    assert out.endswith("): the change is lost at the next reboot")


def test_bad_input():
    _clean()
    try:
        _, sh, _ = _boot()
        for line, err in (
            ("gateway add-service lamp", "error: usage: gateway add-service NAME HOST:PORT [timeout_ms=N]"),
            ("gateway add-service lamp 10.0.0.5", "error: usage: gateway add-service NAME HOST:PORT [timeout_ms=N]"),
            ("gateway add-service lamp h:1 timeout_ms=x", "error: timeout_ms must be a number of milliseconds"),
            ("gateway remove-service", "error: usage: gateway remove-service NAME"),
            ("gateway changes now", "error: usage: gateway changes [clear]"),
            ("lb add web 10.0.1.1:80", "error: 10.0.1.1:80 is already in pool web"),
            ("lb add web 10.0.1.9", "error: usage: lb add POOL HOST:PORT [weight=W]"),
            ("lb add web 10.0.1.9:80 w=2", "error: usage: lb add POOL HOST:PORT [weight=W]"),
            ("lb add nope 10.0.1.9:80", "error: no pool 'nope'"),
            ("lb remove 9", "error: no instance '9' (see 'lb instances')"),
        ):
            assert sh.execute(line) == err, (line, sh.execute(line))
        assert sh.execute("gateway remove-service temp").startswith("error: ")  # a route uses it
        assert not os.path.exists(PATH) if hasattr(os, "path") else True  # nothing was changed
    finally:
        _clean()

"""Portable tests for the `lb` shell command (lbshell.py) on a balancer built from a config."""

# mpy_run: heapsize=1024k  (the shell, the balancer and the auth section's code, compiled here from
# source, leave no 8 KB gap in 512 KB for the auth tables; a board loads them as .mpy)

from apigw.compat import ticks_ms
from apigw.config import load_config_text
from apigw.lb import LoadBalancer
from apigw.shell import Shell

CONFIG = """{"limits": {"services": 4, "routes": 4, "strtab_bytes": 512},
 "services": [{"name": "api", "pool": "web"}, {"name": "calc", "pool": "wrr"}, {"name": "kv", "pool": "hash"}],
 "auth": {"limits": {"tokens": 2, "api_keys": 2, "users": 1, "revoked": 2, "buckets": 2, "policies": 2},
          "policies": {"instances": {"schemes": ["api_key"]}}},
 "balancer": {"pools": 4, "instances": 8, "registry": {"policy": "instances"}},
 "pools": [
  {"name": "web", "instances": [{"host": "10.0.0.1", "port": 80}, {"host": "10.0.0.2", "port": 80}],
   "health_check": {"path": "/hz"}, "sticky_cookie": "srv"},
  {"name": "wrr", "strategy": "weighted_round_robin", "when_all_down": "panic",
   "instances": [{"host": "10.0.1.1", "port": 81, "weight": 3}, {"host": "10.0.1.2", "port": 81}]},
  {"name": "hash", "strategy": "ip_hash", "registration": true,
   "instances": [{"host": "a.lan", "port": 1}, {"host": "b.lan", "port": 2}, {"host": "c.lan", "port": 3}]}
 ]}"""


class _Server:
    """What Shell reads from a running server."""

    gate = None
    mediator = None

    def __init__(self, balancer):
        self.balancer = balancer


def _shell():
    b = load_config_text(CONFIG).balancer
    return Shell(None, _Server(b)), b


def _row(out, first):
    """The table row whose first column is first, split into cells."""
    for line in out.split("\n"):
        cells = line.split()
        if cells and cells[0] == str(first):
            return cells
    raise AssertionError("no row %r in:\n%s" % (first, out))


def _picked(out):
    assert out.startswith("instance "), out
    return int(out.split()[1])


def test_registered_only_with_a_balancer():
    sh, b = _shell()
    out = sh.execute("help lb")
    for sub in ("pools", "instances [POOL]", "select POOL [CLIENT]", "drain IID", "weight IID W", "registry"):
        assert "lb " + sub in out, sub
    assert sh.execute("lb").startswith("lb - ")
    assert "lb" in Shell(None, balancer=b).commands
    assert "lb" not in Shell(None, _Server(None)).commands
    assert sh.execute("lb bogus").startswith("error: unknown sub-command 'lb bogus'")
    assert sh.execute("lb select") == "error: usage: lb select POOL [CLIENT]"


def test_pools_table():
    sh, b = _shell()
    b.lb.mark_unhealthy(4)
    out = sh.execute("lb pools")
    assert _row(out, "id")[:3] == ["id", "name", "strategy"]
    assert _row(out, 0) == ["0", "web", "round_robin", "2", "2", "0", "srv", "fail", "/hz"]
    assert _row(out, 1) == ["1", "wrr", "weighted_round_robin", "2", "2", "0", "-", "panic", "-"]
    assert _row(out, 2) == ["2", "hash", "ip_hash", "3", "2", "0", "-", "fail", "-"]


def test_instances_table_all_and_by_pool():
    sh, b = _shell()
    now = ticks_ms()
    b.health.probe_started(1, now)
    b.health.probe_result(1, True, 3, now)
    b.lb.increment_connections(2)
    out = sh.execute("lb instances")
    assert len(out.split("\n")) == 8  # header and seven instances
    assert _row(out, 0)[:9] == ["0", "web", "10.0.0.1:80", "1", "unknown", "yes", "no", "no", "0"]
    r = _row(out, 1)
    assert r[-1] == "-" and r[-2] != "-" and int(r[-2]) < 5000  # probed just now; not registered
    assert _row(out, 0)[-2] == "-"
    assert _row(out, 2)[:4] == ["2", "wrr", "10.0.1.1:81", "3"] and _row(out, 2)[8] == "1"
    for pool in ("hash", "2"):
        out = sh.execute("lb instances " + pool)
        assert len(out.split("\n")) == 4 and "c.lan:3" in out and "10.0.0.1" not in out
    assert sh.execute("lb instances nope") == "error: no pool 'nope'"
    assert sh.execute("lb instances 9") == "error: no pool '9'"


def test_select_is_a_dry_run():
    sh, b = _shell()
    lb = b.lb
    for pool, pid in (("web", 0), ("wrr", 1)):
        for _ in range(7):  # weights 3,1: a a b a; round robin: a b a b
            dry = _picked(sh.execute("lb select " + pool))
            assert _picked(sh.execute("lb select " + str(pid))) == dry
            assert lb.select_instance(pid) == dry
    for client in ("192.168.1.7", "10.1.1.1", "::1"):
        out = sh.execute("lb select hash " + client)
        c = client.encode()
        assert _picked(out) == lb.select_instance(2, LoadBalancer.client_hash(c, 0, len(c))), client
        assert lb.get_instance(_picked(out)).address in out and "(ip_hash)" in out
    assert sh.execute("lb select hash").startswith("error: pool 'hash' hashes the client address")
    assert sh.execute("lb select nope") == "error: no pool 'nope'"


def test_select_when_nothing_is_in_rotation():
    sh, b = _shell()
    lb = b.lb
    lb.mark_unhealthy(0)
    lb.drain(1)
    assert sh.execute("lb select web").endswith("when_all_down is fail: the request gets a 503")
    lb.mark_unhealthy(2)
    lb.mark_unhealthy(3)
    cursor = lb._cursor[1]
    out = sh.execute("lb select wrr")
    assert out.startswith("no instance in rotation (weighted_round_robin)")
    assert "panic mode would pick instance 2 10.0.1.1:81" in out
    assert lb._cursor[1] == cursor and "instance 2 " in sh.execute("lb select wrr")
    assert lb.select_any(1) == 2
    lb.drain(2)
    lb.drain(3)
    assert "panic mode finds none" in sh.execute("lb select wrr")


def test_drain_undrain_and_weight():
    sh, b = _shell()
    lb = b.lb
    out = sh.execute("lb drain 1")
    assert out == "instance 1 10.0.0.2:80 in web: weight 1, unknown, drained, out of rotation"
    assert not lb.health_check(1) and lb.get_instance(1).drained
    assert _row(sh.execute("lb instances web"), 1)[5:7] == ["no", "yes"]
    for _ in range(3):
        assert _picked(sh.execute("lb select web")) == 0 == lb.select_instance(0)
    assert sh.execute("lb undrain 1").endswith("weight 1, unknown, in rotation")
    assert lb.health_check(1) and not lb.get_instance(1).drained
    assert sh.execute("lb weight 3 7") == "instance 3 10.0.1.2:81 in wrr: weight 7, unknown, in rotation"
    assert lb.get_instance(3).weight == 7
    assert sh.execute("lb weight 3 0") == "error: weight 0 out of range 1..255"
    assert sh.execute("lb weight 3 x") == "error: weight must be a number 1..255"
    assert lb.get_instance(3).weight == 7
    assert sh.execute("lb drain 7").startswith("error: no instance '7'")
    assert sh.execute("lb undrain x").startswith("error: no instance 'x'")
    assert sh.execute("lb weight 99 2").startswith("error: no instance '99'")
    assert sh.execute("lb drain") == "error: usage: lb drain IID"


def test_health_state_and_counters():
    sh, b = _shell()
    hc = b.health
    now = ticks_ms()
    for _ in range(3):
        hc.probe_result(0, False, 5, now)
    hc.probe_started(1, now)
    hc.record(4, False, now)
    out = sh.execute("lb health")
    assert _row(out, 0) == ["0", "web", "unhealthy", "0", "3", "0", "0", "no"]
    assert _row(out, 1) == ["1", "web", "unknown", "0", "0", "0", "0", "yes"]
    assert _row(out, 4) == ["4", "hash", "unknown", "0", "0", "1", "0", "no"]
    assert "probes: 0" in out and "ejections: 0" in out and "no_instance: 0" in out
    assert "outlier: 5 errors in a row" in out
    one = sh.execute("lb health 4")
    assert _row(one, 4)[2] == "unknown" and "10.0.0" not in one and " web " not in one
    assert sh.execute("lb health 12").startswith("error: no instance '12'")


def test_registry_and_stats():
    sh, b = _shell()
    assert sh.execute("lb registry").startswith("no registered instances")
    assert sh.execute("lb registry").endswith("pools open to registration: hash")
    iid, created = b.registry.register("hash", "10.9.9.9", 90, 2, 30000, ticks_ms())
    assert created and iid == 7
    out = sh.execute("lb registry")
    r = _row(out, 7)
    assert r[:4] == ["7", "hash", "10.9.9.9:90", "2"] and r[4].endswith("s")
    assert 25.0 < float(r[4][:-1]) <= 30.0
    r = _row(sh.execute("lb instances hash"), 7)
    assert r[2] == "10.9.9.9:90" and r[-3] == "yes," and r[-1] == "left" and 25.0 < float(r[-2][:-1]) <= 30.0
    assert _row(sh.execute("lb instances hash"), 4)[-1] == "-"
    out = sh.execute("lb stats")
    for line in ("pools: 3", "instances: 8", "registered: 1", "upstream: None", "no_instance: 0"):
        assert line in out.split("\n"), line
    b.registry = None
    assert sh.execute("lb registry") == "registration is off"

"""Portable tests for the `pools` array and the `balancer` section (lbconfig.py): what a good config
builds, and that every bad field gets an error naming it."""

from apigw.config import ConfigError, load_config_text
from apigw.lb import BalancingStrategy as S
from check import raises

HEAD = '"limits": {"services": 4, "routes": 4, "strtab_bytes": 512}, "services": [{"name": "api", "pool": "web"}]'
WEB = '{"name": "web", "instances": [{"host": "10.0.0.1", "port": 80}]}'
AUTH = '"auth": {"limits": {"tokens": 2, "api_keys": 2, "users": 1, "revoked": 2, "buckets": 2, "policies": 2}, "policies": {"reg": {"schemes": ["api_key"]}}}'


def _load(pools, balancer=None, extra=""):
    text = '{%s, %s"pools": [%s]%s}' % (
        HEAD,
        extra + ", " if extra else "",
        ", ".join(pools),
        ', "balancer": ' + balancer if balancer else "",
    )
    return load_config_text(text)


def _err(pools, balancer=None, extra=""):
    return str(raises(ConfigError, _load, pools, balancer, extra))


def test_a_good_config_builds_the_balancer():
    b = _load(
        [
            '{"name": "web", "strategy": "weighted", "sticky_cookie": "srv", "when_all_down": "panic",'
            ' "health_check": {"path": "/hz", "expect_status": 204, "slow_ms": 0},'
            ' "instances": [{"host": "10.0.0.1", "port": 80, "weight": 5}, {"host": "Web.LAN", "port": 81}]}'
        ],
        '{"pools": 2, "instances": 4, "max_tries": 2, "outlier": {"consecutive_errors": 3}}',
    ).balancer
    lb = b.lb
    web = lb.pool_id("web")
    assert web == 0 and lb.strategy(web) == S.WEIGHTED_ROUND_ROBIN
    assert [(i.address, i.port, i.weight) for i in lb.instances(web)] == [("10.0.0.1", 80, 5), ("Web.LAN", 81, 1)]
    assert lb.find_instance(web, "web.lan", 81) == 1
    assert b.cookie[web] == b"srv" and b.panic[web] and b.check_path[web] == b"/hz" and b.check_status[web] == 204
    assert b.max_tries == 2 and b.health.consecutive_errors == 3 and lb.max_instances == 4


BAD = (
    (['{"instances": []}'], None, "pools[0].name: required"),
    (['{"name": "web", "strategy": "fastest", "instances": []}'], None, "pools[0].strategy: must be one of"),
    (['{"name": "web"}'], None, "pools[0].instances: a pool needs instances, or registration: true"),
    (
        ['{"name": "web", "when_all_down": "panic"}'],
        None,
        "pools[0].instances: a pool needs instances, or registration: true",
    ),
    (['{"name": "web", "instances": {}}'], None, "pools[0].instances: must be an array"),
    (['{"name": "web", "instances": [{"host": "a"}]}'], None, "pools[0].instances[0].port: required"),
    (
        ['{"name": "web", "instances": [{"host": "a", "port": 0}]}'],
        None,
        "pools[0].instances[0].port: must be an integer 1-65535",
    ),
    (
        ['{"name": "web", "instances": [{"host": "a b", "port": 1}]}'],
        None,
        "pools[0].instances[0].host: a host name or IP address",
    ),
    (
        ['{"name": "web", "instances": [{"host": "a", "port": 1, "weight": 0}]}'],
        None,
        "pools[0].instances[0].weight: must be an integer 1-255",
    ),
    (
        ['{"name": "web", "instances": [{"host": "a", "port": 1}, {"host": "A", "port": 1}]}'],
        None,
        "pools[0].instances[1]: A:1 is already in the pool",
    ),
    (
        ['{"name": "web", "instances": [{"host": "a", "port": 1, "colour": 1}]}'],
        None,
        "pools[0].instances[0].colour: unknown key",
    ),
    (
        ['{"name": "web", "sticky_cookie": "a=b", "instances": [{"host": "a", "port": 1}]}'],
        None,
        "pools[0].sticky_cookie: letters, digits",
    ),
    (
        ['{"name": "web", "sticky_cookie": "%s", "instances": [{"host": "a", "port": 1}]}' % ("c" * 33)],
        None,
        "pools[0].sticky_cookie: must be a non-empty string of at most 32 characters",
    ),
    (
        ['{"name": "web", "when_all_down": "retry", "instances": [{"host": "a", "port": 1}]}'],
        None,
        "pools[0].when_all_down: must be",
    ),
    (
        ['{"name": "web", "health_check": {"path": "hz"}, "instances": [{"host": "a", "port": 1}]}'],
        None,
        "pools[0].health_check.path: must start with /",
    ),
    (
        ['{"name": "web", "health_check": {"interval_ms": 5}, "instances": [{"host": "a", "port": 1}]}'],
        None,
        "pools[0].health_check.interval_ms: must be an integer 100-",
    ),
    (
        ['{"name": "web", "registration": true, "instances": [{"host": "a", "port": 1}]}'],
        None,
        "pools[0].registration: needs balancer.registry (its auth policy)",
    ),
    ([WEB, WEB], None, "pools[1]: "),
    ([WEB], '{"max_tries": 0}', "balancer.max_tries: must be an integer 1-16"),
    ([WEB], '{"instances": 0}', "balancer.instances: must be an integer 1-4096"),
    (
        [WEB],
        '{"outlier": {"max_ejected_percent": 101}}',
        "balancer.outlier.max_ejected_percent: must be an integer 0-100",
    ),
    ([WEB], '{"colour": 1}', "balancer.colour: unknown key"),
    ([WEB], '{"registry": {}}', "balancer.registry.policy: required"),
    ([WEB], '{"registry": {"policy": "reg"}}', "balancer.registry.policy: registration needs an auth section"),
    (
        [WEB, WEB.replace("web", "w2").replace("10.0.0.1", "10.0.0.2")],
        '{"pools": 1}',
        "pools[1]: pool table full",
    ),
)


def test_every_bad_field_is_named():
    for pools, balancer, want in BAD:
        got = _err(pools, balancer)
        assert got.startswith(want), (pools, balancer, got)


def test_registry_needs_a_policy_and_a_pool_that_takes_registrations():
    got = _err([WEB], '{"registry": {"policy": "nope"}}', AUTH)
    assert got == "balancer.registry.policy: no policy 'nope' in auth.policies", got
    got = _err([WEB], '{"registry": {"policy": "reg"}}', AUTH)
    assert got == "balancer.registry: no pool has registration: true", got
    b = _load(['{"name": "web", "registration": true}'], '{"registry": {"policy": "reg"}}', AUTH).balancer
    assert b.registry is not None and b.registry.accepts[0]  # registration alone: no static instances needed


def test_services_and_pools_must_agree():
    text = '{%s, "pools": [%s]}' % (HEAD.replace('"pool": "web"', '"pool": "nope"'), WEB)
    assert str(raises(ConfigError, load_config_text, text)) == "services[0].pool: no pool 'nope'"
    text = '{%s, "pools": [%s]}' % (HEAD.replace('"pool": "web"', '"pool": "web", "host": "a", "port": 1'), WEB)
    got = str(raises(ConfigError, load_config_text, text))
    assert got == "services[0].pool: a service has a pool or a host and port, not both", got
    text = "{%s}" % HEAD
    assert str(raises(ConfigError, load_config_text, text)) == "services[0].pool: pools need a pools section"

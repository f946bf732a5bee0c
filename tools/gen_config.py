"""Generate a large gateway config: N services, M routes of mixed kinds (CPython tool).

    .venv/bin/python tools/gen_config.py [--services 256] [--routes 512] [--upstream-port 9002]
                                         [--upstream-host 127.0.0.1] [--listen-port 8080]
                                         [--slots 4] [-o big.json] [--requests requests.json]

Every service points at one upstream (host:port), so one demo upstream (the `controller` of
tools/demo_upstreams.py, which echoes any path) answers for all of them. Routes cycle through
eight kinds (route i has kind i % 8):

  0  prefix    /api/s{i}                strip_prefix          GET /api/s{i}/items/{i} -> /items/{i}
  1  exact     /static/p{i}             methods GET, HEAD     GET /static/p{i}        -> /static/p{i}
  2  wildcard  /dev/{i}/*/status        rewrite /d            GET /dev/{i}/42/status  -> /d/42/status
  3  prefix    /api/h{i}                X-Api-Version: {i}    GET /api/h{i}/x         -> /hv/x
                                        rewrite /hv
  4  wildcard  /files/{i}/**            rewrite /f            GET /files/{i}/a/b      -> /f/a/b
  5  regex     ^/legacy/{i}/[0-9]+$     rewrite /echo         GET /legacy/{i}/99      -> /echo
     (one route in `regex_every`; the other kind-5 routes are prefix /more/{i})
  6  respond   /info/{i} (exact)        200 {"route": i}      GET /info/{i}
  7  prefix    /admin/{i}               methods POST          POST /admin/{i}/do      -> /admin/do
                                        rewrite /admin

make_config() returns the config as a dict; sample_requests() returns one request per route
that exercises it, with what the client should get back (benchmarks and end-to-end tests use
both). The tables are sized to the content (limits.services/routes exact, strtab_bytes from
the strings actually stored, header_conditions as many as there are).
"""

import argparse
import json
import sys

KINDS = 8


def _is_regex(i, regex_every):
    return i % KINDS == 5 and regex_every > 0 and (i // KINDS) % max(1, regex_every // KINDS) == 0


def route_spec(i, services, regex_every=64):
    """Route i as (route dict, sample request dict). See the module docstring for the kinds."""
    s = "svc%d" % (i % services)
    k = i % KINDS
    req = {"method": "GET", "headers": {}, "body": None, "status": 200}
    if k == 0:
        route = {"path": "/api/s%d" % i, "service": s, "strip_prefix": True}
        req.update(path="/api/s%d/items/%d" % (i, i), upstream_path="/items/%d" % i)
    elif k == 1:
        route = {"path": "/static/p%d" % i, "match": "exact", "methods": ["GET", "HEAD"], "service": s}
        req.update(path="/static/p%d" % i, upstream_path="/static/p%d" % i)
    elif k == 2:
        route = {"path": "/dev/%d/*/status" % i, "match": "wildcard", "service": s, "rewrite": "/d"}
        req.update(path="/dev/%d/42/status" % i, upstream_path="/d/42/status")
    elif k == 3:
        route = {"path": "/api/h%d" % i, "headers": {"X-Api-Version": str(i)}, "service": s, "rewrite": "/hv"}
        req.update(path="/api/h%d/x" % i, upstream_path="/hv/x", headers={"X-Api-Version": str(i)})
    elif k == 4:
        route = {"path": "/files/%d/**" % i, "match": "wildcard", "service": s, "rewrite": "/f"}
        req.update(path="/files/%d/a/b" % i, upstream_path="/f/a/b")
    elif k == 5 and _is_regex(i, regex_every):
        route = {"path": "^/legacy/%d/[0-9]+$" % i, "match": "regex", "service": s, "rewrite": "/echo"}
        req.update(path="/legacy/%d/99" % i, upstream_path="/echo")
    elif k == 5:
        route = {"path": "/more/%d" % i, "service": s}
        req.update(path="/more/%d/z" % i, upstream_path="/more/%d/z" % i)
    elif k == 6:
        route = {"path": "/info/%d" % i, "match": "exact", "respond": {"status": 200, "body": {"route": i}}}
        req.update(path="/info/%d" % i, upstream_path=None, json={"route": i})
    else:
        route = {"path": "/admin/%d" % i, "methods": ["POST"], "service": s, "rewrite": "/admin"}
        req.update(method="POST", path="/admin/%d/do" % i, upstream_path="/admin/do", body=b'{"n": %d}' % i)
    route["name"] = "r%d" % i
    req["route"] = i
    return route, req


def _strings(cfg):
    """Distinct strings the gateway stores in its string table (sizes limits.strtab_bytes)."""
    seen = set()
    for svc in cfg["services"]:
        seen.update((svc["name"], svc["host"]))
    for r in cfg["routes"]:
        seen.add(r["path"])
        for key in ("name", "rewrite", "service"):
            if isinstance(r.get(key), str):
                seen.add(r[key])
        for h, v in r.get("headers", {}).items():
            seen.add(h.lower())
            if isinstance(v, str):
                seen.add(v)
    return seen


def make_config(
    services=256,
    routes=512,
    upstream_port=9002,
    listen_port=8080,
    upstream_host="127.0.0.1",
    listen_host="127.0.0.1",
    slots=4,
    regex_every=64,
):
    """The generated config as a dict (json.dump it to a file for the gateway)."""
    if services < 1 or routes < 1:
        raise ValueError("need at least one service and one route")
    cfg = {
        "_comment": "generated by tools/gen_config.py: %d services, %d routes" % (services, routes),
        "listen": {"host": listen_host, "port": listen_port, "slots": slots},
        "limits": {"services": services, "routes": routes},
        "services": [{"name": "svc%d" % i, "host": upstream_host, "port": upstream_port} for i in range(services)],
        "routes": [route_spec(i, services, regex_every)[0] for i in range(routes)],
    }
    strtab = sum(len(s.encode()) for s in _strings(cfg))
    conditions = sum(len(r.get("headers", {})) for r in cfg["routes"])
    cfg["limits"]["strtab_bytes"] = max(1024, (strtab * 5 // 4 + 1023) // 1024 * 1024)
    cfg["limits"]["header_conditions"] = max(1, conditions)
    return cfg


def sample_requests(services=256, routes=512, regex_every=64):
    """One request per route of make_config(services, routes, regex_every=...), in route order.

    Each is a dict: method, path, headers (dict), body (bytes or None), status (expected),
    upstream_path (the path the upstream should see, or None for a respond route), json (the
    expected body of a respond route), route (its index)."""
    return [route_spec(i, services, regex_every)[1] for i in range(routes)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--services", type=int, default=256)
    ap.add_argument("--routes", type=int, default=512)
    ap.add_argument("--upstream-host", default="127.0.0.1")
    ap.add_argument("--upstream-port", type=int, default=9002, help="default 9002: the demo controller")
    ap.add_argument("--listen-port", type=int, default=8080)
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--regex-every", type=int, default=64, help="one regex route per this many routes (0: none)")
    ap.add_argument("-o", "--out", help="output file (default: stdout)")
    ap.add_argument("--requests", help="also write sample_requests() as JSON to this file")
    args = ap.parse_args(argv)
    cfg = make_config(
        args.services,
        args.routes,
        upstream_port=args.upstream_port,
        listen_port=args.listen_port,
        upstream_host=args.upstream_host,
        slots=args.slots,
        regex_every=args.regex_every,
    )
    text = json.dumps(cfg, indent=1) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    if args.requests:
        reqs = sample_requests(args.services, args.routes, args.regex_every)
        for r in reqs:
            if r["body"] is not None:
                r["body"] = r["body"].decode()
        with open(args.requests, "w") as f:
            json.dump(reqs, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

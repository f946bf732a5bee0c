"""The benchmark: micro-benchmarks, throughput and latency, memory; a table and build/bench.json.

    python tools/bench.py [--quick] [--loadgen] [--duration S] [--rounds N] [--firmware DIR]
                          [--out build/bench.json]

Everything runs on the MicroPython unix port on this machine:

1. tools/bench_mpy.py: route decision (512 mixed routes) against a linear scan, parse of a 1 KB
   request, bytes allocated by each; the auth checks (tools/bench_auth_mpy.py): a full and a
   cached HS256 JWT check, an API key check, a rate-limit check; the mediation stage
   (tools/bench_med_mpy.py): protobuf encode / decode of a 10-field message and its JSON value,
   a schema check, and the steps of a response-cache hit (route, lookup, compose, send).
   The load balancer (tools/bench_lb_mpy.py): LoadBalancer.select_instance for each strategy
   (round robin, least connections, smooth weighted round robin, IP hash with the client hash
   changing on every call) over one pool of 256 instances and, for context, of 8, and the bytes
   it allocates per call (micropython.mem_total() over 1,000 calls; target 0 B). The circuit
   breaker (tools/bench_res_mpy.py): an admit() + record() pair on a closed breaker with a full
   window of 20 (a failure in eight outcomes, never two in a row: it stays closed), admit()
   alone on a closed and on an open breaker, and the bytes a pair allocates (over 1,000 pairs;
   target 0 B). The monitoring stage (tools/bench_mon_mpy.py): ApiMonitor.record_response() on a
   monitor of 16 services and 32 routes (ring 1024, window 60 s) with the route, service, status
   and latency changing on every call, record_request(), the server's hooks for one request
   (monio.Monitoring begin() + upstream() + end() on a stand-in slot), the bytes each allocates
   (over 1,000 calls; target 0 B), and the whole Prometheus exposition
   (promexport.write_exposition, its write() counting bytes) of a server (never started) of
   tools/gen_config.py's 256 services and 512 routes with a monitoring section and traffic
   recorded on every service and route: ms, bytes, and what it allocates on the way. That process
   runs with a heap of MICRO_HEAP (the default 2 MB leaves no piece for that monitor's tables
   after the other micro-benchmarks).
2. tools/bare_server.py (a bare asyncio server with a fixed answer) and the gateway firmware
   (firmware/main.py) with a temporary config: a direct `respond` route /direct, a prefix route
   /proxied forwarding to a second instance of the bare server (same code; it is idle while the
   first is measured, and its connection count tells how well the gateway reuses connections),
   /authed, the same forward behind a policy that takes a JWT (an `auth` section with a
   secrets file written for the run; the token is signed here with PyJWT), and /cached, the
   same forward through a mediation transform that caches (a `mediation` section; the bare
   server's answer is a 200 with Content-Length and no Cache-Control or Set-Cookie, so the
   gateway stores it). One warming request fills the cache; a sample of requests must then
   come back `X-Cache: HIT`, or the run stops.
3. Load, keep-alive, 4 connections, the same duration for the bare server, /direct, /proxied,
   /authed (every request with `Authorization: Bearer <token>`) and /cached, one after the
   other, in rounds (3; 1 with --quick), medians reported: wrk (`wrk -t2 -c4 --latency`) when
   installed, else tools/loadgen.py (or with --loadgen). Requests/s and p50/p99 latency.
   CPU time of each process per request (from /proc) shows where the time goes. The requests
   the upstream answered during each load come from its written bytes (/proc/PID/io): during
   the loads of /cached, and the alloc run below, there must be none (every request a hit).
4. Bytes allocated per proxied (and per direct, authed and cached) request: `alloc_total`
   (micropython.mem_total()) from /_gw/health before and after 1,000 requests over one
   keep-alive connection, less the cost of one health request. Heap in use right after boot:
   `heap_used` of the first health call, of a gateway booted without the auth section and
   /authed (comparable with runs before they existed), of one with the auth section but no
   mediation (comparable with runs before mediation), and of the measured one (both).
5. Load balancing (tools/bench_pool.py), once the gateway above and its servers are stopped: a
   gateway of its own with services /pool1 and /pool3 sending round robin to a pool of one
   instance and to one of three (three new bare servers; no health checks), idle upstream
   connections capped at 4 per instance and 12 in all (`upstream_pool_size`). From its boot,
   exactly 1,000 requests to /pool3 over 4 concurrent keep-alive connections: the upstream
   connections the gateway opened for them (`upstream_connections_per_1000_requests`, from
   /_gw/health lb.upstream.connects; target: at most the pool size). Then loads of /pool1 and
   /pool3 in rounds as in 3 (`pooled_3_vs_1_rps_ratio`, target >= 0.90), each started once the
   gateway holds no idle upstream connection (the two pools share the cap of idle ones). At the
   end the connections its instances accepted must equal the gateway's count, or the run stops.
6. Resilience (tools/bench_res.py), once the pool gateway is stopped: a gateway of its own with a
   direct route /direct, /open to a service nobody listens for behind a breaker that opens on the
   first failure and stays open for an hour, /healthy to a new bare server, and /hung to a TCP
   server in this process that never answers, behind a bulkhead of one call with no queue and a
   first-byte timeout of 2 s; 6 listen slots (4 for the loads, 2 for the clients of /hung). One
   request trips the breaker; the next must be a 503 circuit_open with Retry-After. Loads of
   /open (every answer a 503 refusal: answers, not errors, here; the gateway's refused_open
   count must cover them) and /direct in rounds as in 3 (`open_breaker_vs_direct_rps_ratio`,
   target >= 0.90), and the bytes allocated per refusal (as in 4). Then loads of /healthy in
   rounds, alone and with two client threads sending to /hung (one call hangs until the 504, the
   other gets 503 bulkhead_full and waits 20 ms before the next): p99 with the hung neighbour
   over p99 alone (`healthy_p99_with_hung_neighbour_ratio`, target <= 1.5).
7. Monitoring (tools/bench_mon.py), once the resilience gateway is stopped: two gateways with a
   direct route /direct and nothing else, the second with a `monitoring` section, never running
   at once: before each load the other one stops and the one loaded boots anew and is warmed.
   Loads of /direct with monitoring off and on in alternating rounds as in 3
   (`monitoring_on_vs_off_rps_ratio`, target >= 0.95), p50/p99 and CPU per request of each, and
   the heap after boot of each. The gateway without the section must have no /_gw/stats; one
   more load at the one with it must grow its /_gw/stats requests by more than the load's
   answers, or the run stops.

The process helpers (start, stop, CPU from /proc, the loads in rounds) are tools/benchproc.py.

Targets are printed beside the figures with pass/miss; the exit status is 0 either way (1 only
if something could not run). The servers and the load generator share the machine's cores:
ratios are only meaningful within one run.
"""

import argparse
import base64
import datetime
import http.client
import json
import os
import sys
import shutil
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import bare_server  # noqa: E402  (its fixed answer: the upstream's requests are counted by it)
import bench_mon  # noqa: E402
import bench_pool  # noqa: E402
import bench_res  # noqa: E402
from benchproc import (  # noqa: E402  (the names tools and tests reach as bench.NAME)
    CONNECTIONS,
    MPY,
    WRK,
    BenchError,
    add_count,
    first_health,
    free_port,
    gateway_connection,
    health,
    measure_loads,
    start_bare,
    start_firmware,
    stop,
    stop_bare,
    tail,
    upstream_answers,
)

ALLOC_REQUESTS = 1000
JWT_KID = "b1"
AUTH_PATH = "/authed"
CACHED_PATH = "/cached"
CACHE_TTL_S = 3600  # longer than any run: an entry that expired would send a request upstream
CACHE_SAMPLE = 20  # requests whose X-Cache is checked, before the loads and after them
# The micro-benchmarks' heap. At the unix port's default (2 MB) the exposition's gateway of 256
# services (last, after the other micro-benchmarks) finds no piece for its monitor's 84 KB
# histogram array; at 3 MB it fits, but the collections the export causes in the nearly full heap
# made it take twice as long (76 ms, 41 at 4 MB; alone in a fresh 2 MB process: 38). Figures of
# code that allocates nothing do not depend on it; allocations are counted in bytes.
MICRO_HEAP = "4M"

# Every key of bench.json; the strings are load_tool, micropython_version and date.
KEYS = (
    "route_decision_us_median",
    "route_vs_linear_scan_speedup",
    "parse_1k_us",
    "alloc_bytes_per_proxied_request",
    "direct_vs_bare_rps_ratio",
    "proxied_vs_bare_rps_ratio",
    "p50_ms_direct",
    "p99_ms_direct",
    "p50_ms_proxied",
    "p99_ms_proxied",
    "heap_after_boot_bytes",
    "heap_after_boot_auth_bytes",
    "rps_bare",
    "rps_direct",
    "rps_proxied",
    "p50_ms_bare",
    "p99_ms_bare",
    "jwt_verify_us_uncached",
    "jwt_verify_us_cached",
    "api_key_verify_us",
    "rate_limit_check_us",
    "rps_proxied_auth",
    "auth_vs_noauth_rps_ratio",
    "p50_ms_proxied_auth",
    "p99_ms_proxied_auth",
    "alloc_bytes_per_proxied_auth_request",
    "json_to_protobuf_us",
    "json_to_protobuf_into_us",
    "json_to_protobuf_alloc_bytes",
    "protobuf_to_json_us",
    "schema_validate_us",
    "schema_validate_alloc_bytes",
    "rps_cached",
    "cache_hit_vs_direct_rps_ratio",
    "p50_ms_cached",
    "p99_ms_cached",
    "alloc_bytes_per_cached_request",
    "upstream_requests_cached",
    "heap_after_boot_mediation_bytes",
    "select_instance_us_round_robin",
    "select_instance_us_least_connections",
    "select_instance_us_weighted",
    "select_instance_us_ip_hash",
    "select_instance_alloc_bytes",
    "pooled_3_vs_1_rps_ratio",
    "rps_pooled_1",
    "rps_pooled_3",
    "p50_ms_pooled_1",
    "p99_ms_pooled_1",
    "p50_ms_pooled_3",
    "p99_ms_pooled_3",
    "upstream_connections_per_1000_requests",
    "upstream_connections_accepted_pool",
    "upstream_pool_size",
    "breaker_admit_record_us",
    "breaker_alloc_bytes",
    "open_breaker_vs_direct_rps_ratio",
    "rps_open_breaker",
    "rps_direct_res",
    "p99_ms_open_breaker",
    "p99_ms_direct_res",
    "alloc_bytes_per_open_breaker_request",
    "healthy_p99_with_hung_neighbour_ratio",
    "p99_ms_healthy_alone",
    "p99_ms_healthy_hung",
    "rps_healthy_alone",
    "rps_healthy_hung",
    "hung_neighbour_504",
    "hung_neighbour_503",
    "record_response_us",
    "record_response_alloc_bytes",
    "monitoring_hooks_us",
    "export_prometheus_ms_256_services",
    "export_prometheus_bytes_256_services",
    "monitoring_on_vs_off_rps_ratio",
    "rps_direct_mon_on",
    "rps_direct_mon_off",
    "p50_ms_direct_mon_on",
    "p99_ms_direct_mon_on",
    "p50_ms_direct_mon_off",
    "p99_ms_direct_mon_off",
    "cpu_us_per_request_server_direct_mon_on",
    "cpu_us_per_request_server_direct_mon_off",
    "load_tool",
    "micropython_version",
    "date",
)
STRING_KEYS = ("load_tool", "micropython_version", "date")

# (label, key, unit, target text, test) in table order; test None = report only.
ROWS = (
    ("route decision, 512 mixed routes (median)", "route_decision_us_median", "us", "<= 10", lambda v: v <= 10),
    ("  linear scan of the same routes", "linear_scan_us_median", "us", "", None),
    ("  index vs linear scan", "route_vs_linear_scan_speedup", "x", ">= 20", lambda v: v >= 20),
    ("parse, 1 KB request, 10 headers", "parse_1k_us", "us", "<= 25", lambda v: v <= 25),
    ("JWT check, full HS256 of an issued token", "jwt_verify_us_uncached", "us", "", None),
    ("JWT check, cached", "jwt_verify_us_cached", "us", "<= 5", lambda v: v <= 5),
    ("  alloc per cached JWT check", "jwt_cached_alloc_bytes", "B", "", None),
    ("auth stage (AuthGate.check), cached JWT", "auth_gate_check_us", "us", "", None),
    ("  alloc per AuthGate.check, cached JWT", "auth_gate_alloc_bytes", "B", "", None),
    ("API key check", "api_key_verify_us", "us", "", None),
    ("rate-limit check", "rate_limit_check_us", "us", "", None),
    ("protobuf encode, 10-field message from its JSON value", "json_to_protobuf_us", "us", "", None),
    ("  encode_into a buffer of the caller's", "json_to_protobuf_into_us", "us", "", None),
    ("  alloc per encode", "json_to_protobuf_alloc_bytes", "B", "", None),
    ("  alloc per encode_into", "json_to_protobuf_into_alloc_bytes", "B", "", None),
    ("protobuf decode of the same bytes to the JSON value", "protobuf_to_json_us", "us", "", None),
    ("  alloc per decode", "protobuf_to_json_alloc_bytes", "B", "", None),
    ("schema check, valid 10-field object", "schema_validate_us", "us", "", None),
    ("  alloc per schema check", "schema_validate_alloc_bytes", "B", "", None),
    ("request body JSON -> protobuf, schema checked", "mediate_json_to_protobuf_us", "us", "", None),
    ("  alloc per request body conversion", "mediate_json_to_protobuf_alloc_bytes", "B", "", None),
    ("cache hit, step by step: route + dispatch", "cache_hit_route_us", "us", "", None),
    ("  lookup (ResponseCache.lookup)", "cache_hit_lookup_us", "us", "", None),
    ("  compose the answer from the entry", "cache_hit_compose_us", "us", "", None),
    ("  mediation stage call (lookup + compose)", "cache_hit_stage_us", "us", "", None),
    ("  alloc per mediation stage call", "cache_hit_stage_alloc_bytes", "B", "", None),
    ("  send the answer (loopback TCP)", "cache_hit_send_us", "us", "", None),
    ("select_instance, 256 instances: round robin", "select_instance_us_round_robin", "us", "", None),
    ("  least connections, 0..3 held on each", "select_instance_us_least_connections", "us", "", None),
    ("  smooth weighted round robin", "select_instance_us_weighted", "us", "", None),
    ("  IP hash, a new client hash each call", "select_instance_us_ip_hash", "us", "", None),
    (
        "  8 instances: RR / LC / WRR / IP hash",
        tuple("select_instance_us_%s_8" % s for s in ("round_robin", "least_connections", "weighted", "ip_hash")),
        "us",
        "",
        None,
    ),
    ("  alloc per select_instance (most of any)", "select_instance_alloc_bytes", "B", "0", lambda v: v == 0),
    ("circuit breaker admit() + record(), closed, window 20", "breaker_admit_record_us", "us", "", None),
    ("  admit() alone: closed / open (a refusal)", ("breaker_admit_us", "breaker_admit_open_us"), "us", "", None),
    ("  alloc per admit() + record()", "breaker_alloc_bytes", "B", "0", lambda v: v == 0),
    ("monitor record_response(), 16 services, ring 1024", "record_response_us", "us", "", None),
    ("  record_request()", "record_request_us", "us", "", None),
    ("  alloc per record_response()", "record_response_alloc_bytes", "B", "0", lambda v: v == 0),
    ("  server hooks per request: begin + upstream + end", "monitoring_hooks_us", "us", "", None),
    ("  alloc per request's hooks", "monitoring_hooks_alloc_bytes", "B", "0", lambda v: v == 0),
    ("Prometheus exposition, 256 services, 512 routes", "export_prometheus_ms_256_services", "ms", "", None),
    ("  its size", "export_prometheus_bytes_256_services", "B", "", None),
    ("  allocated while it is made (short-lived)", "export_prometheus_alloc_bytes_256_services", "B", "", None),
    ("direct: route / compose / send", ("direct_route_us", "direct_compose_us", "direct_send_us"), "us", "", None),
    ("alloc per proxied keep-alive request", "alloc_bytes_per_proxied_request", "B", "<= 1024", lambda v: v <= 1024),
    ("alloc per direct keep-alive request", "alloc_bytes_per_direct_request", "B", "", None),
    ("alloc per JWT-authed proxied request", "alloc_bytes_per_proxied_auth_request", "B", "", None),
    ("alloc per cached keep-alive request (a hit)", "alloc_bytes_per_cached_request", "B", "0", lambda v: v < 1),
    ("alloc per request refused by an open breaker", "alloc_bytes_per_open_breaker_request", "B", "", None),
    ("heap in use after boot", "heap_after_boot_bytes", "B", "", None),
    ("heap in use after boot, with the auth section", "heap_after_boot_auth_bytes", "B", "", None),
    ("heap in use after boot, with auth and mediation", "heap_after_boot_mediation_bytes", "B", "", None),
    (
        "heap in use after boot, direct route, monitoring off / on",
        ("heap_after_boot_mon_off_bytes", "heap_after_boot_mon_on_bytes"),
        "B",
        "",
        None,
    ),
    ("req/s bare asyncio server", "rps_bare", "/s", "", None),
    ("req/s direct route", "rps_direct", "/s", "", None),
    ("req/s proxied to bare", "rps_proxied", "/s", "", None),
    ("req/s proxied, JWT policy", "rps_proxied_auth", "/s", "", None),
    ("req/s cached route, every request a hit", "rps_cached", "/s", "", None),
    ("req/s proxied to a pool of 1 instance", "rps_pooled_1", "/s", "", None),
    ("req/s proxied to a pool of 3 instances", "rps_pooled_3", "/s", "", None),
    ("req/s refused by an open breaker (503)", "rps_open_breaker", "/s", "", None),
    ("req/s direct route, resilience gateway", "rps_direct_res", "/s", "", None),
    ("req/s proxied, alone / beside a hung route", ("rps_healthy_alone", "rps_healthy_hung"), "/s", "", None),
    ("req/s direct route, monitoring off / on", ("rps_direct_mon_off", "rps_direct_mon_on"), "/s", "", None),
    ("direct / bare", "direct_vs_bare_rps_ratio", "", ">= 0.50", lambda v: v >= 0.5),
    ("proxied / bare", "proxied_vs_bare_rps_ratio", "", ">= 0.25", lambda v: v >= 0.25),
    ("proxied with JWT / without", "auth_vs_noauth_rps_ratio", "", ">= 0.85", lambda v: v >= 0.85),
    ("cache hit / direct", "cache_hit_vs_direct_rps_ratio", "", ">= 0.90", lambda v: v >= 0.9),
    ("pool of 3 / pool of 1", "pooled_3_vs_1_rps_ratio", "", ">= 0.90", lambda v: v >= 0.9),
    ("open breaker / direct", "open_breaker_vs_direct_rps_ratio", "", ">= 0.90", lambda v: v >= 0.9),
    (
        "p99 proxied, beside a hung route / alone",
        "healthy_p99_with_hung_neighbour_ratio",
        "",
        "<= 1.5",
        lambda v: v <= 1.5,
    ),
    ("direct, monitoring on / off", "monitoring_on_vs_off_rps_ratio", "", ">= 0.95", lambda v: v >= 0.95),
    ("p50 / p99 bare", ("p50_ms_bare", "p99_ms_bare"), "ms", "", None),
    ("p50 / p99 direct", ("p50_ms_direct", "p99_ms_direct"), "ms", "", None),
    ("p50 / p99 proxied", ("p50_ms_proxied", "p99_ms_proxied"), "ms", "", None),
    ("p50 / p99 proxied, JWT policy", ("p50_ms_proxied_auth", "p99_ms_proxied_auth"), "ms", "", None),
    ("p50 / p99 cached", ("p50_ms_cached", "p99_ms_cached"), "ms", "", None),
    ("p50 / p99 pool of 1", ("p50_ms_pooled_1", "p99_ms_pooled_1"), "ms", "", None),
    ("p50 / p99 pool of 3", ("p50_ms_pooled_3", "p99_ms_pooled_3"), "ms", "", None),
    ("p50 / p99 refused by an open breaker", ("p50_ms_open_breaker", "p99_ms_open_breaker"), "ms", "", None),
    ("p50 / p99 direct, resilience gateway", ("p50_ms_direct_res", "p99_ms_direct_res"), "ms", "", None),
    ("p50 / p99 proxied, alone", ("p50_ms_healthy_alone", "p99_ms_healthy_alone"), "ms", "", None),
    ("p50 / p99 proxied, beside a hung route", ("p50_ms_healthy_hung", "p99_ms_healthy_hung"), "ms", "", None),
    ("p50 / p99 direct, monitoring off", ("p50_ms_direct_mon_off", "p99_ms_direct_mon_off"), "ms", "", None),
    ("p50 / p99 direct, monitoring on", ("p50_ms_direct_mon_on", "p99_ms_direct_mon_on"), "ms", "", None),
    ("CPU per request: bare", "cpu_us_per_request_server_bare", "us", "", None),
    ("CPU per request: gateway, direct", "cpu_us_per_request_server_direct", "us", "", None),
    ("CPU per request: gateway, proxied", "cpu_us_per_request_server_proxied", "us", "", None),
    ("CPU per request: gateway, proxied with JWT", "cpu_us_per_request_server_proxied_auth", "us", "", None),
    ("CPU per request: gateway, cached", "cpu_us_per_request_server_cached", "us", "", None),
    ("CPU per request: upstream, proxied", "cpu_us_per_request_upstream_proxied", "us", "", None),
    ("CPU per request: upstream, cached", "cpu_us_per_request_upstream_cached", "us", "", None),
    (
        "CPU per request: gateway, pool of 1 / of 3",
        ("cpu_us_per_request_server_pooled_1", "cpu_us_per_request_server_pooled_3"),
        "us",
        "",
        None,
    ),
    (
        "CPU per request: upstreams, pool of 1 / of 3",
        ("cpu_us_per_request_upstream_pooled_1", "cpu_us_per_request_upstream_pooled_3"),
        "us",
        "",
        None,
    ),
    (
        "CPU per request: gateway, open breaker / direct",
        ("cpu_us_per_request_server_open_breaker", "cpu_us_per_request_server_direct_res"),
        "us",
        "",
        None,
    ),
    (
        "CPU per request: gateway, proxied alone / beside a hung route",
        ("cpu_us_per_request_server_healthy_alone", "cpu_us_per_request_server_healthy_hung"),
        "us",
        "",
        None,
    ),
    (
        "CPU per request: gateway, direct, monitoring off / on",
        ("cpu_us_per_request_server_direct_mon_off", "cpu_us_per_request_server_direct_mon_on"),
        "us",
        "",
        None,
    ),
    ("upstream connections opened (whole run)", "upstream_connections", "", "", None),
    ("upstream requests during the cached loads", "upstream_requests_cached", "", "0", lambda v: v == 0),
    ("X-Cache misses in a sample after the loads", "cache_sample_misses", "", "0", lambda v: v == 0),
    (
        "upstream connections per 1,000 requests, pool of 3",
        "upstream_connections_per_1000_requests",
        "",
        "<= pool size",
        lambda v: v <= bench_pool.POOL_SIZE,  # = upstream_pool_size: both from the pool's config
    ),
    ("  idle upstream connections kept, at most (pool size)", "upstream_pool_size", "", "", None),
    ("  answers of each instance for those 1,000", "pool_answers_per_instance", "", "", None),
    (
        "  opened during the loads: pool of 1 / of 3",
        ("upstream_connects_pooled_1", "upstream_connects_pooled_3"),
        "",
        "",
        None,
    ),
    (
        "  connects of that gateway / accepted by its instances",
        ("upstream_connections_pool", "upstream_connections_accepted_pool"),
        "",
        "",  # no verdict: the run stops when they differ
        None,
    ),
    (
        "clients of the hung route: 504 / 503 bulkhead_full",
        ("hung_neighbour_504", "hung_neighbour_503"),
        "",
        "",  # no verdict: the run stops when either is 0 or another answer came
        None,
    ),
    (
        "one load, monitoring on: answers / requests counted",
        ("mon_check_load_requests", "mon_counted_requests"),
        "",
        "",  # no verdict: the run stops when the gateway counted fewer
        None,
    ),
)


# -- 1. micro-benchmarks on the unix port --------------------------------------------------------


def run_micro(quick, firmware):
    env = dict(os.environ, MICROPYPATH="%s:tools:.frozen" % firmware)
    cmd = [MPY, "-X", "heapsize=" + MICRO_HEAP, "tools/bench_mpy.py"] + (["--quick"] if quick else [])
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        raise BenchError("bench_mpy.py failed (%d):\n%s%s" % (p.returncode, p.stdout[-2000:], p.stderr[-2000:]))
    return json.loads(lines[-1])


# -- 2. the gateway's config and the checks of its routes ----------------------------------------


def gateway_config(port, bare_port, secrets_path=None, mediation=False):
    """/direct answers itself; /proxied and /authed forward to the same service, /authed behind a
    policy that takes a JWT (GET needs the read permission: by method, the policy default).
    Without a secrets file: no auth section and no /authed (the config of runs before it).
    With mediation: /cached forwards to the same service through a transform that caches its
    answers for CACHE_TTL_S (the mediation section, with small limits: one answer is stored)."""
    cfg = {
        "listen": {"host": "127.0.0.1", "port": port, "slots": CONNECTIONS, "queue_max": 8},
        "limits": {"services": 4, "routes": 8, "strtab_bytes": 1024},
        "shell": {"enabled": False},
        "services": [{"name": "bare", "host": "127.0.0.1", "port": bare_port}],
        "routes": [
            {"path": "/direct", "match": "exact", "respond": {"status": 200, "body": {"ok": True}}},
            {"path": "/proxied", "service": "bare"},
            {"path": AUTH_PATH, "service": "bare", "policy": "jwt"},
        ],
        "auth": {"secrets": secrets_path, "policies": {"jwt": {"schemes": ["jwt"]}}},
    }
    if secrets_path is None:
        del cfg["auth"]
        cfg["routes"].pop()
    if mediation:
        cfg["routes"].append({"path": CACHED_PATH, "service": "bare", "transform": "cached"})
        cfg["mediation"] = {
            "limits": {"buffers": 2, "buffer_bytes": 1024, "cache_entries": 4, "cache_entry_bytes": 512},
            "transforms": {"cached": {"cache": {"ttl_s": CACHE_TTL_S}}},
        }
    return cfg


def write_secrets(tmp):
    """The secrets file the auth section names (one fresh HS256 key, kid JWT_KID); returns
    (path, key bytes)."""
    key = os.urandom(32)
    path = os.path.join(tmp, "secrets.json")
    with open(path, "w") as f:
        json.dump({"jwt_keys": {JWT_KID: base64.urlsafe_b64encode(key).rstrip(b"=").decode()}}, f)
    return path, key


def sign_token(key):
    """A token the gateway did not issue, signed with PyJWT: sub, role user (read and write), iat,
    exp an hour ahead, jti; kid JWT_KID in the header. About the size of one the gateway issues."""
    try:
        import jwt as pyjwt
    except ImportError:
        raise BenchError("PyJWT is needed to sign the benchmark's token (make venv installs it)")
    now = int(time.time())
    claims = {"sub": "bench", "role": "user", "iat": now, "exp": now + 3600, "jti": os.urandom(8).hex()}
    token = pyjwt.encode(claims, key, algorithm="HS256", headers={"kid": JWT_KID})
    return token if isinstance(token, str) else token.decode()


def check_auth_route(port, header):
    """/authed refuses a request without the token (the policy applies) and forwards one with it."""
    c = gateway_connection(port)
    try:
        status, body, _ = c.get(AUTH_PATH)
        if status != 401:
            raise BenchError("GET %s without a token answered %d, not 401: %r" % (AUTH_PATH, status, body[:200]))
        status, body, keep = c.get(AUTH_PATH, (header,))
        if status != 200 or not keep:
            raise BenchError(
                "GET %s with the token answered %d (keep-alive %s): %r" % (AUTH_PATH, status, keep, body[:200])
            )
    finally:
        c.close()


def cached_sample(port, n):
    """GET CACHED_PATH n times over one keep-alive connection: [(status, X-Cache, Age, body)]."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out = []
    try:
        for _ in range(n):
            conn.request("GET", CACHED_PATH)
            r = conn.getresponse()
            body = r.read()
            out.append((r.status, r.getheader("X-Cache"), r.getheader("Age"), body))
    except (OSError, http.client.HTTPException) as e:
        raise BenchError("GET %s: %s" % (CACHED_PATH, e))
    finally:
        conn.close()
    return out


def sample_misses(sample):
    """How many answers of a sample were not a cache hit with the upstream's body."""
    return sum(1 for st, xc, age, body in sample if st != 200 or xc != "HIT" or age is None or body != bare_server.BODY)


def check_cached_route(port, upstream_pid):
    """One warming request (the upstream answers it), then CACHE_SAMPLE hits and no request to
    the upstream: the cache works, or the figures of /cached would mean nothing."""
    u0 = upstream_answers(upstream_pid)
    warm = cached_sample(port, 1)[0]
    if warm[0] != 200 or warm[3] != bare_server.BODY:
        raise BenchError("GET %s answered %d: %r" % (CACHED_PATH, warm[0], warm[3][:200]))
    u1 = upstream_answers(upstream_pid)
    sample = cached_sample(port, CACHE_SAMPLE)
    u2 = upstream_answers(upstream_pid)
    if sample_misses(sample) or (u0 >= 0 and (u1 - u0 != 1 or u2 != u1)):
        raise BenchError(
            "GET %s is not answered from the cache: warming %s, then (status, X-Cache, Age) %s; upstream "
            "requests %d then %d" % (CACHED_PATH, warm[:3], sorted(set(x[:3] for x in sample)), u1 - u0, u2 - u1)
        )


def start_gateway(tmp, port, bare_port, firmware, secrets_path, name="gateway", mediation=False):
    return start_firmware(tmp, name, gateway_config(port, bare_port, secrets_path, mediation), port, firmware)


# -- 3. memory -------------------------------------------------------------------------------------


def alloc_per_request(port, path, n, headers=()):
    """Bytes allocated per request to path: (alloc_total delta over n requests on one keep-alive
    connection) less one health request's own allocation (two back-to-back health calls)."""
    c = gateway_connection(port)
    try:
        for _ in range(20):  # warm: the upstream connection exists, first-use tables are made
            c.get(path, headers)
        h1 = health(c)["alloc_total"]
        h2 = health(c)["alloc_total"]
        for _ in range(n):
            status, _, keep = c.get(path, headers)
            if status != 200 or not keep:
                raise BenchError("GET %s answered %d (keep-alive %s)" % (path, status, keep))
        h3 = health(c)["alloc_total"]
    finally:
        c.close()
    if h1 < 0:
        raise BenchError("alloc_total is -1: this MicroPython does not count allocations")
    return ((h3 - h2) - (h2 - h1)) / n, h2 - h1


# -- the run -----------------------------------------------------------------------------------------


def run(quick=False, use_loadgen=False, duration=None, rounds=None, firmware=None):
    """Every measurement; returns the flat dict written to bench.json. Raises BenchError."""
    duration = duration if duration is not None else (1.0 if quick else 5.0)
    rounds = rounds if rounds is not None else (1 if quick else 3)
    firmware = firmware or os.path.join(ROOT, "firmware")
    tool = "wrk" if WRK and not use_loadgen else "loadgen"
    print("micro-benchmarks (tools/bench_mpy.py) ...", flush=True)
    res = run_micro(quick, firmware)
    tmp = tempfile.mkdtemp(prefix="apigw-bench-")
    bare = upstream = gw = None
    try:
        bare_port, up_port, gw_port = free_port(), free_port(), free_port()
        bare, _ = start_bare(tmp, bare_port)
        upstream, up_log = start_bare(tmp, up_port, "upstream")
        secrets_path, key = write_secrets(tmp)
        bearer = "Authorization: Bearer " + sign_token(key)
        res["jwt_bench_token_bytes"] = len(bearer) - len("Authorization: Bearer ")
        # Heap after boot without the auth section (the figure of runs before it) and with it but
        # without mediation (the figure of runs before that), each from a gateway booted for that
        # alone; then the one measured below, which has both sections.
        for name, secrets, figure in (
            ("gateway-noauth", None, "after_boot_bytes"),
            ("gateway-nomed", secrets_path, "after_boot_auth_bytes"),
        ):
            port = free_port()
            gw, gw_log = start_gateway(tmp, port, up_port, firmware, secrets, name)
            h = first_health(port)
            res["heap_" + figure] = h["heap_used"]
            res["heap_free_" + figure] = h["heap_free"]
            stop(gw)
        gw, gw_log = start_gateway(tmp, gw_port, up_port, firmware, secrets_path, mediation=True)
        h = first_health(gw_port)
        res["heap_after_boot_mediation_bytes"] = h["heap_used"]
        res["heap_free_after_boot_mediation_bytes"] = h["heap_free"]

        check_auth_route(gw_port, bearer)
        check_cached_route(gw_port, upstream.pid)

        phases = (
            ("bare", "http://127.0.0.1:%d/" % bare_port, bare, ()),
            ("direct", "http://127.0.0.1:%d/direct" % gw_port, gw, ()),
            ("proxied", "http://127.0.0.1:%d/proxied" % gw_port, gw, ()),
            ("proxied_auth", "http://127.0.0.1:%d%s" % (gw_port, AUTH_PATH), gw, (bearer,)),
            ("cached", "http://127.0.0.1:%d%s" % (gw_port, CACHED_PATH), gw, ()),
        )
        warm = 0.2 if quick else 0.5
        measure_loads(res, tool, duration, rounds, warm, phases, [upstream], ("proxied", "proxied_auth", "cached"))
        res["direct_vs_bare_rps_ratio"] = res["rps_direct"] / res["rps_bare"]
        res["proxied_vs_bare_rps_ratio"] = res["rps_proxied"] / res["rps_bare"]
        res["auth_vs_noauth_rps_ratio"] = res["rps_proxied_auth"] / res["rps_proxied"]
        res["cache_hit_vs_direct_rps_ratio"] = res["rps_cached"] / res["rps_direct"]
        res["cache_sample_misses"] = sample_misses(cached_sample(gw_port, CACHE_SAMPLE))

        print("alloc: %d requests each to /proxied and /direct over one connection ..." % ALLOC_REQUESTS, flush=True)
        res["alloc_bytes_per_proxied_request"], res["alloc_bytes_per_health_request"] = alloc_per_request(
            gw_port, "/proxied", ALLOC_REQUESTS
        )
        res["alloc_bytes_per_direct_request"], _ = alloc_per_request(gw_port, "/direct", ALLOC_REQUESTS)
        print(
            "alloc: %d requests to %s with the token over one connection ..." % (ALLOC_REQUESTS, AUTH_PATH), flush=True
        )
        res["alloc_bytes_per_proxied_auth_request"], _ = alloc_per_request(
            gw_port, AUTH_PATH, ALLOC_REQUESTS, (bearer,)
        )
        print(
            "alloc: %d requests to %s (cache hits) over one connection ..." % (ALLOC_REQUESTS, CACHED_PATH), flush=True
        )
        u0 = upstream_answers(upstream.pid)
        res["alloc_bytes_per_cached_request"], _ = alloc_per_request(gw_port, CACHED_PATH, ALLOC_REQUESTS)
        res["upstream_requests_cached"] = add_count(res["upstream_requests_cached"], u0, upstream_answers(upstream.pid))
        if gw.poll() is not None:
            raise BenchError("the gateway exited; log:\n" + tail(gw_log))
        stop(gw)
        gw = None
        res["upstream_connections"] = stop_bare(upstream, up_log)  # opened by the gateway, whole run
        upstream = None
        stop(bare)
        bare = None
        bench_pool.run(res, tool, duration, rounds, warm, firmware, tmp)  # a gateway of its own, alone
        bench_res.run(res, tool, duration, rounds, warm, firmware, tmp)  # likewise, after that one
        bench_mon.run(res, tool, duration, rounds, warm, firmware, tmp)  # two more, one at a time
    finally:
        for proc in (gw, upstream, bare):
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    res["load_tool"] = tool
    res["load_duration_s"] = duration
    res["load_rounds"] = rounds
    res["connections"] = CONNECTIONS
    res["cpu_count"] = os.cpu_count() or 0
    res["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return res


def _fmt(v, unit):
    if isinstance(v, float):
        if unit == "/s":
            return "%.0f" % v
        if unit == "B":
            # a mean below 10 B that is not whole (something allocates now and then) keeps 2 digits
            return "%.2g" % v if 0 < abs(v) < 10 and v != int(v) else "%.0f" % v
        return "%.3g" % v if abs(v) < 100 else "%.0f" % v
    return str(v)


def table(res):
    lines = []
    w = max(len(r[0]) for r in ROWS)
    lines.append("%-*s  %16s  %12s  %s" % (w, "figure", "value", "target", "pass/miss"))
    lines.append("-" * (w + 44))
    for label, key, unit, target, test in ROWS:
        if isinstance(key, tuple):
            val = " / ".join(_fmt(res.get(k), unit) for k in key)
        else:
            val = _fmt(res.get(key), unit)
        val = (val + " " + unit).strip() if unit not in ("", "x") else val + unit
        verdict = ""
        if test is not None and not isinstance(key, tuple) and isinstance(res.get(key), (int, float)):
            verdict = "pass" if test(res[key]) else "MISS"
        lines.append("%-*s  %16s  %12s  %s" % (w, label, val, target, verdict))
    lines.append("")
    errors = [(k[7:], res[k]) for k in sorted(res) if k.startswith("errors_") and res[k]]
    if errors:
        lines.append(
            "ERRORS (socket errors and non-2xx answers, all rounds): " + ", ".join("%s %d" % e for e in errors)
        )
    lines.append(
        "load: %s, keep-alive, %d connections, %g s per load, bare / direct / proxied / proxied with a JWT / "
        "cached one after the other, then pool of 1 / pool of 3 (a gateway of its own), then open breaker / "
        "direct and proxied alone / beside a hung route (another), then direct with monitoring off / on (one "
        "gateway each, one at a time, booted anew before each load), %d round(s), medians; the servers "
        "(MicroPython unix port) and the load generator share %d CPU cores."
        % (res["load_tool"], res["connections"], res["load_duration_s"], res["load_rounds"], res["cpu_count"])
    )
    lines.append("MicroPython: " + res["micropython_version"] + "   date: " + res["date"])
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description="apigw benchmark (figures in a table and build/bench.json)")
    ap.add_argument("--quick", action="store_true", help="1 s loads and fewer batches (smoke use)")
    ap.add_argument("--loadgen", action="store_true", help="use tools/loadgen.py even if wrk is installed")
    ap.add_argument("--duration", type=float, default=None, help="seconds per load (default 5, --quick 1)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds of the loads (default 3, --quick 1)")
    ap.add_argument("--firmware", default=None, help="firmware folder to run (default firmware/; for A/B runs)")
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "bench.json"))
    a = ap.parse_args(argv)
    try:
        res = run(a.quick, a.loadgen, a.duration, a.rounds, a.firmware and os.path.abspath(a.firmware))
    except BenchError as e:
        print("bench: " + str(e), file=sys.stderr)
        return 1
    for k in KEYS:
        if k not in res:
            print("bench: missing figure " + k, file=sys.stderr)
            return 1
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
        f.write("\n")
    print()
    print(table(res))
    print("written: " + os.path.relpath(a.out, os.getcwd()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

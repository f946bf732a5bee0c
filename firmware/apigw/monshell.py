"""The shell's `apimon` command: the monitor's figures as text, the Prometheus exposition, a reset.

`apimon` (or `apimon summary`) shows requests, responses by class, the error rate, the requests in
flight, the throughput over the window, p50/p95/p99 over the latency ring (exact), the heap and a
row per service with traffic. `apimon service`, `latency`, `errors` and `throughput` show one
part in detail; a service is named by its name, or by its id when no service has that name.
`apimon prometheus` is the text GET /_gw/metrics serves (promexport.py, loaded when asked for; it
reads the server, so it needs a running gateway). `apimon reset` zeroes the figures.

Latencies are kept in us and shown in ms to three significant digits. Global percentiles are exact
over the ring (the last ring_size responses); a service's come from its histogram, within
loghist.MAX_REL_ERROR. Registered by shell.Shell when the server (or the config) has a `monitoring`
section. Off the request path: allocates freely. This module only reads and resets the
monio.Monitoring and its monitor.ApiMonitor; it owns no state of its own.
"""

from . import loghist
from .compat import ticks_ms
from .monitor import (
    F_CLASS,
    F_ERRORS,
    F_LAT_MS,
    F_REQUESTS,
    F_UP_MS,
    G_CLASS,
    G_ERRORS,
    G_GW_MS,
    G_IN_FLIGHT,
    G_REFUSED,
    G_REQUESTS,
    G_UP_MS,
    STATUS_CLASSES,
    ErrorType,
    LatencyBucket,
)
from .shell import ShellError, table

MON_SUBS = [
    ("summary", "", "requests, responses by class, error rate, throughput, p50/p95/p99, heap, services"),
    ("service", "NAME|ID", "one service: counts, errors by type, latency p50/p95/p99/min/max/avg, upstream time"),
    ("latency", "[NAME|ID]", "latency percentiles and a histogram (all services, or one)"),
    ("errors", "[NAME|ID]", "errors by type (all services, or one)"),
    ("throughput", "[SECONDS]", "requests per second over the last SECONDS (default: the whole window)"),
    ("prometheus", "", "the Prometheus exposition of GET /_gw/metrics (running gateway only)"),
    ("reset", "", "zero the counters, histograms, latency ring and throughput window"),
]

P3 = ((50, "p50"), (95, "p95"), (99, "p99"))  # summary, service
PERCENTS = ((50, "p50"), (90, "p90"), (95, "p95"), (99, "p99"), (99.9, "p99.9"))  # `apimon latency`
HIST_LINES = 20  # at most this many histogram lines: adjacent buckets merge beyond
BAR = 40  # the widest histogram bar, in characters


def register(shell, monitoring):
    """Add the `apimon` command to shell for monitoring (a monio.Monitoring)."""
    cmd = MonCommand(shell, monitoring)
    shell.register("apimon", cmd.run, "API monitoring: traffic, latency, errors, throughput, Prometheus", MON_SUBS)
    return cmd


def ms(us):
    """us (an int >= 0) as ms to three significant digits: 0.045, 1.23, 12.3, 123, 1235."""
    if us <= 0:
        return "0"
    if us < 1000:
        return "0.%03d" % us
    q = (us + 5) // 10  # hundredths of a ms
    if q < 1000:
        return "%d.%02d" % (q // 100, q % 100)
    q = (us + 50) // 100  # tenths
    if q < 1000:
        return "%d.%d" % (q // 10, q % 10)
    return str((us + 500) // 1000)


def _tenths(num, den):
    """num / den as a percentage to one decimal, from integers (a board's floats are single)."""
    t = (num * 1000 + den // 2) // den if den else 0
    return "%d.%d%%" % (t // 10, t % 10)


class MonCommand:
    def __init__(self, shell, monitoring):
        self.shell = shell
        self.m = monitoring
        self.mon = monitoring.mon
        self.gw = monitoring.gw

    def run(self, words):
        sub, rest = (words[0], words[1:]) if words else ("summary", [])
        if sub == "summary" and not rest:
            return self._summary()
        if sub == "service" and len(rest) == 1:
            return self._service(self._sid(rest[0], sub))
        if sub == "latency" and len(rest) <= 1:
            return self._latency(self._sid(rest[0], sub) if rest else -1)
        if sub == "errors" and len(rest) <= 1:
            return self._errors(self._sid(rest[0], sub) if rest else -1)
        if sub == "throughput" and len(rest) <= 1:
            return self._throughput(self._seconds(rest[0]) if rest else self.mon.window_s)
        if sub == "prometheus" and not rest:
            return self._prometheus()
        if sub == "reset" and not rest:
            self.mon.reset_metrics()
            return "monitoring figures reset (counters, histograms, latency ring, throughput window); %d in flight" % (
                self.mon.global_counter(G_IN_FLIGHT)
            )
        if sub in [s[0] for s in MON_SUBS]:
            raise ShellError(self._usage(sub))
        subs = "|".join(s[0] for s in MON_SUBS)
        raise ShellError("unknown sub-command 'apimon " + sub + "'; usage: apimon [" + subs + "] (try 'help apimon')")

    # -- arguments -------------------------------------------------------------------------------

    def _usage(self, sub):
        for name, usage, _ in MON_SUBS:
            if name == sub:
                return "usage: apimon " + sub + (" " + usage if usage else "")
        return "usage: apimon " + sub

    def _sid(self, word, sub):
        """A service id from its name (first) or its number; ShellError if there is none, or if it
        is past the monitor's rows."""
        gw = self.gw
        sid = gw.service_id(word)
        if sid < 0 and word.isdigit() and gw.get_service(int(word)) is not None:
            sid = int(word)
        if sid < 0:
            raise ShellError("no service '" + word + "' (see 'gateway services'); " + self._usage(sub))
        if sid >= self.mon.max_services:
            raise ShellError(
                "service '%s' (id %d) has no figures: the monitor keeps services 0..%d (monitoring.services)"
                % (self._name(sid), sid, self.mon.max_services - 1)
            )
        return sid

    def _seconds(self, word):
        w = self.mon.window_s
        if not word.isdigit() or not 1 <= int(word) <= w:
            raise ShellError("SECONDS must be 1..%d (monitoring.window_s); %s" % (w, self._usage("throughput")))
        return int(word)

    # -- figures ---------------------------------------------------------------------------------

    def _name(self, sid):
        ep = self.gw.get_service(sid)
        return ep.name if ep is not None else "-"

    def _classes(self, svc):
        """Responses 1xx .. 5xx of svc (-1: all)."""
        mon = self.mon
        if svc < 0:
            return [mon.global_counter(G_CLASS + c) for c in range(5)]
        return [mon.service_counter(svc, F_CLASS + c) for c in range(5)]

    def _errors_of(self, svc):
        mon = self.mon
        if svc < 0:
            return [mon.global_counter(G_ERRORS + t) for t in range(5)]
        return [mon.service_counter(svc, F_ERRORS + t) for t in range(5)]

    def _class_text(self, cls):
        return ", ".join(STATUS_CLASSES[c] + " " + str(cls[c]) for c in range(5))

    def _rate(self, cls):
        return _tenths(cls[3] + cls[4], sum(cls))

    def _ring_n(self):
        """Samples in the latency ring: every response since the reset, up to ring_size."""
        n = self.mon.responses(-1)
        return n if n < self.mon.ring_size else self.mon.ring_size

    def _pcts(self, svc, ps):
        return ", ".join(name + " " + ms(self.mon.calculate_percentile(p, svc)) for p, name in ps) + " ms"

    def _mma(self, svc):
        mon = self.mon
        return "min %s, avg %s, max %s ms" % (
            ms(mon.latency_stat(LatencyBucket.MIN, svc)),
            ms(mon.latency_stat(LatencyBucket.AVG, svc)),
            ms(mon.latency_stat(LatencyBucket.MAX, svc)),
        )

    def _tp(self, seconds):
        r = self.mon.get_throughput(ticks_ms(), seconds)
        c = int(r * 100 + 0.5)
        return "%d.%02d req/s over the last %d s" % (c // 100, c % 100, seconds)

    # -- sub-commands ----------------------------------------------------------------------------

    def _summary(self):
        mon = self.mon
        m = self.m
        cls = self._classes(-1)
        n = sum(cls)
        out = [
            "requests: %d (in flight %d, refused %d)"
            % (mon.global_counter(G_REQUESTS), mon.global_counter(G_IN_FLIGHT), mon.global_counter(G_REFUSED)),
            "responses: %d (%s)" % (n, self._class_text(cls)),
            "error rate: %s (4xx and 5xx)" % self._rate(cls),
            "throughput: " + self._tp(mon.window_s),
            "latency: %s (exact, last %d responses); %s" % (self._pcts(-1, P3), self._ring_n(), self._mma(-1)),
        ]
        if n:
            up = mon.sum_us(-1, G_UP_MS)
            out.append(
                "time per response: upstream %s ms, gateway %s ms" % (ms(up // n), ms(mon.sum_us(-1, G_GW_MS) // n))
            )
        if m.heap_low < 0:
            out.append("heap: - (no reading yet)")
        else:
            out.append("heap: free %d, min free %d bytes" % (m.heap_free, m.heap_low))
        rows = []
        for ep in self.gw.list_services():
            sid = ep.id
            if sid >= mon.max_services:
                continue
            c = self._classes(sid)
            k = sum(c)
            if not k and not mon.service_counter(sid, F_REQUESTS):
                continue
            row = [sid, ep.name, k] + c + [self._rate(c)]
            rows.append(row + [ms(mon.calculate_percentile(p, sid)) for p, _ in P3])
        out.append("")
        if rows:
            head = ["id", "service", "responses"] + list(STATUS_CLASSES) + ["errors", "p50 ms", "p95 ms", "p99 ms"]
            out.append(table(rows, head))
        else:
            out.append("no service has traffic yet")
        return "\n".join(out)

    def _service(self, sid):
        mon = self.mon
        cls = self._classes(sid)
        n = sum(cls)
        err = self._errors_of(sid)
        out = [
            "service %d %s" % (sid, self._name(sid)),
            "requests: %d" % mon.service_counter(sid, F_REQUESTS),
            "responses: %d (%s)" % (n, self._class_text(cls)),
            "error rate: %s (4xx and 5xx)" % self._rate(cls),
            "errors: " + ", ".join(ErrorType.NAMES[t] + " " + str(err[t]) for t in range(5)),
            "latency: %s (histogram, within %s); %s" % (self._pcts(sid, P3), self._err_pct(), self._mma(sid)),
        ]
        lat = mon.sum_us(sid, F_LAT_MS)
        up = mon.sum_us(sid, F_UP_MS)
        if n:
            out.append(
                "upstream time: %s ms per response, %s of the latency (total %s ms)"
                % (ms(up // n), _tenths(up, lat), ms(up))
            )
        else:
            out.append("upstream time: -")
        return "\n".join(out)

    def _err_pct(self):
        """loghist.MAX_REL_ERROR as a percentage: "9.1%"."""
        t = int(loghist.MAX_REL_ERROR * 1000 + 0.5)
        return "%d.%d%%" % (t // 10, t % 10)

    def _latency(self, svc):
        mon = self.mon
        n = mon.responses(svc)
        who = "all services" if svc < 0 else "service %d %s" % (svc, self._name(svc))
        out = ["latency of %s: %d responses since reset" % (who, n)]
        if svc < 0:
            out.append("%s (exact, last %d responses)" % (self._pcts(svc, PERCENTS), self._ring_n()))
        else:
            out.append("%s (histogram, within %s)" % (self._pcts(svc, PERCENTS), self._err_pct()))
        out.append(self._mma(svc))
        if n:
            out.append("histogram, (lower, upper] ms:")
            out += self._histogram(svc, n)
        return "\n".join(out)

    def _histogram(self, svc, n):
        """Lines of the non-empty buckets of svc's histogram: at most HIST_LINES, adjacent
        buckets merged in equal runs when there are more non-empty ones."""
        mon = self.mon
        h = mon.hist
        base = mon.hist_base(svc)
        ks = [k for k in range(loghist.NBUCKETS) if h[base + k]]
        first, last = ks[0], ks[-1]
        g = 1
        if len(ks) > HIST_LINES:
            g = (last - first + HIST_LINES) // HIST_LINES  # ceil(span / HIST_LINES)
        groups = []
        k = first
        while k <= last:
            end = k + g - 1 if k + g - 1 < last else last
            c = 0
            for j in range(k, end + 1):
                c += h[base + j]
            if c:
                lo = ms(loghist.upper_us(k - 1)) if k > 0 else "0"
                hi = "inf" if end >= loghist.NBUCKETS - 1 else ms(loghist.upper_us(end))
                groups.append((lo, hi, c))
            k = end + 1
        widest = max(c for _, _, c in groups)
        wl = max(len(lo) for lo, _, _ in groups)
        wh = max(len(hi) for _, hi, _ in groups)
        wc = len(str(widest))
        lines = []
        for lo, hi, c in groups:
            bar = "#" * (c * BAR // widest or 1)
            label = " " * (wl - len(lo)) + lo + " - " + " " * (wh - len(hi)) + hi
            count = " " * (wc - len(str(c))) + str(c)
            lines.append("  %s  %s  %s |%s" % (label, count, "%6s" % _tenths(c, n), bar))
        return lines

    def _errors(self, svc):
        err = self._errors_of(svc)
        cls = self._classes(svc)
        who = "all services" if svc < 0 else "service %d %s" % (svc, self._name(svc))
        out = ["errors of %s, by type:" % who]
        w = max(len(s) for s in ErrorType.NAMES)
        for t in range(5):
            name = ErrorType.NAMES[t]
            out.append("  " + name + " " * (w - len(name)) + "  " + str(err[t]))
        out.append("responses 4xx %d, 5xx %d of %d (error rate %s)" % (cls[3], cls[4], sum(cls), self._rate(cls)))
        if svc < 0:
            rows = []
            for ep in self.gw.list_services():
                if ep.id < self.mon.max_services:
                    e = self._errors_of(ep.id)
                    if sum(e):
                        rows.append([ep.id, ep.name] + e)
            out.append("")
            out.append(table(rows, ["id", "service"] + list(ErrorType.NAMES)) if rows else "no service has errors")
        return "\n".join(out)

    def _throughput(self, seconds):
        mon = self.mon
        return "throughput: %s (%d requests since reset; window %d s)" % (
            self._tp(seconds),
            mon.get_total_requests(),
            mon.window_s,
        )

    def _prometheus(self):
        srv = self.shell.server
        if srv is None:
            raise ShellError("apimon prometheus needs a running gateway (the exposition reads the server)")
        try:
            from .promexport import exposition
        except ImportError:
            raise ShellError("this build has no Prometheus exporter (apigw/promexport)")
        parts = []
        try:
            for p in exposition(srv):
                parts.append(p if isinstance(p, str) else bytes(p).decode())
            return "".join(parts).rstrip("\n")
        except MemoryError:  # the whole document at once: GET /_gw/metrics sends it in pieces
            parts = None
            raise ShellError("the exposition does not fit in the heap; fetch GET /_gw/metrics instead")

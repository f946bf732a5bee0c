"""ServiceTable: the service registry that ApiGateway is built on.

Owns: service ids, names, hosts, ports, timeouts, keep-alive flags, health, the load-balancer pool
a service sends to (-1: its own host and port), and the count of routes forwarding to each service, in arrays indexed by service id (names and hosts live in the
shared StrTable). Must not know routes beyond that count, do I/O, or allocate in the accessors the
server calls per request (service_port, service_timeout, service_keepalive, service_host_id).
"""

from .gwtypes import GatewayError, HealthStatus, ServiceEndpoint
from .strtab import StrTableError, table


class ServiceTable:
    """Service registry with every table allocated up front; strings go to strtab."""

    # lb.py pool id per service (-1: its own host): a table lbconfig makes when the config has
    # pools. A class attribute until then, so a gateway without pools holds nothing for it.
    _s_pool = None

    def __init__(self, strtab, max_services):
        self.max_services = S = max_services
        self.strtab = strtab
        # Services: name id -1 marks a free id.
        self._s_name = table("h", S, -1)
        self._s_host = table("h", S, -1)
        self._s_port = table("H", S)
        self._s_timeout = table("I", S)
        self._s_keep = bytearray(S)
        self._s_health = bytearray(S)
        self._s_refs = table("H", S)  # routes forwarding to the service
        self._nsvc = 0

    def service_id(self, name):
        """Id of the service called name, or -1 (allocates: encodes name)."""
        sid = self.strtab.find(name.encode(), 0, len(name.encode())) if isinstance(name, str) else -1
        if sid < 0:
            return -1
        names = self._s_name
        for i in range(self.max_services):
            if names[i] == sid:
                return i
        return -1

    def _service(self, name_or_id):
        if type(name_or_id) is int:
            if 0 <= name_or_id < self.max_services and self._s_name[name_or_id] >= 0:
                return name_or_id
            return -1
        return self.service_id(name_or_id)

    def register_service(self, name, host, port, timeout_ms=10000, keepalive=True, pooled=False):
        """Add a service and return its id. Raises GatewayError (full, duplicate, bad value).
        pooled: the service sends to a load-balancer pool (lbconfig sets which), not to host:port."""
        if not isinstance(name, str) or not name:
            raise GatewayError("must be a non-empty string", "name")
        if self.service_id(name) >= 0:
            raise GatewayError("service %r already registered" % name, "name")
        if pooled:
            host = None  # (lbconfig gives it its pool)
        elif not isinstance(host, str) or not host:
            raise GatewayError("must be a non-empty string", "host")
        elif type(port) is not int or not 0 < port < 65536:
            raise GatewayError("must be an integer 1-65535", "port")
        if type(timeout_ms) is not int or not 0 < timeout_ms < 1 << 30:
            raise GatewayError("must be a positive integer", "timeout_ms")
        if self._nsvc >= self.max_services:
            raise GatewayError("service table full (%d)" % self.max_services)
        i = 0
        while self._s_name[i] >= 0:  # a free id exists: the count is below capacity
            i += 1
        st = self.strtab
        try:
            nid = st.add(name)
        except StrTableError as e:
            raise GatewayError(str(e), "name")
        try:
            hid = st.add(host) if host is not None else -1
        except StrTableError as e:
            st.remove(nid)
            raise GatewayError(str(e), "host")
        self._s_name[i] = nid
        self._s_host[i] = hid
        self._s_port[i] = port
        self._s_timeout[i] = timeout_ms
        self._s_keep[i] = 1 if keepalive else 0
        self._s_health[i] = HealthStatus.UNKNOWN
        self._s_refs[i] = 0
        if self._s_pool is not None:
            self._s_pool[i] = -1
        self._nsvc += 1
        return i

    def unregister_service(self, name_or_id):
        i = self._service(name_or_id)
        if i < 0:
            raise GatewayError("no service %r" % (name_or_id,))
        if self._s_refs[i]:
            raise GatewayError(
                "service %r is used by %d route(s)" % (self.strtab.get_str(self._s_name[i]), self._s_refs[i])
            )
        self.strtab.remove(self._s_name[i])
        if self._s_host[i] >= 0:
            self.strtab.remove(self._s_host[i])
        self._s_name[i] = -1
        self._s_host[i] = -1
        self._nsvc -= 1

    def get_service(self, name_or_id):
        """A ServiceEndpoint for the service, or None (allocates)."""
        i = self._service(name_or_id)
        if i < 0:
            return None
        st = self.strtab
        ep = ServiceEndpoint(
            i,
            st.get_str(self._s_name[i]),
            st.get_str(self._s_host[i]) if self._s_host[i] >= 0 else None,
            self._s_port[i],
            self._s_health[i],
            self._s_timeout[i],
            bool(self._s_keep[i]),
            self._s_refs[i],
        )
        ep.pool = self.service_pool(i)
        return ep

    def service_port(self, sid):
        return self._s_port[sid]

    def service_timeout(self, sid):
        return self._s_timeout[sid]

    def service_keepalive(self, sid):
        return bool(self._s_keep[sid])

    def service_pool(self, sid):
        """The load-balancer pool service sid sends to, or -1 (no allocation)."""
        p = self._s_pool
        return p[sid] if p is not None else -1

    def service_host_id(self, sid):
        """StrTable id of the service's host (no allocation)."""
        return self._s_host[sid]

    def is_service_healthy(self, name_or_id):
        """False only when the service is known to be down (UNKNOWN counts as healthy)."""
        i = self._service(name_or_id)
        return i >= 0 and self._s_health[i] != HealthStatus.UNHEALTHY

    def set_service_health(self, name_or_id, status):
        i = self._service(name_or_id)
        if i < 0:
            raise GatewayError("no service %r" % (name_or_id,))
        if type(status) is not int or not 0 <= status <= 2:
            raise GatewayError("bad health status %r" % (status,))
        self._s_health[i] = status

    def note_health(self, sid, status):
        """What real traffic says about service sid (the relay's call: a trusted id, no checks)."""
        self._s_health[sid] = status

    def get_service_count(self):
        return self._nsvc

    def list_services(self):
        for i in range(self.max_services):
            if self._s_name[i] >= 0:
                yield self.get_service(i)

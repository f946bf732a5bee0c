"""The settings a loaded config leaves behind: plain objects, one per section.

They live apart from config.py so that the loader's code can be dropped once the gateway has
booted (main.py does): nothing that stays alive refers to it. Defaults are here; the ranges and
the validation are config.py's.
"""


class Listen:
    """The `listen` section (defaults here; ranges in LISTEN)."""

    def __init__(self):
        self.host = "0.0.0.0"
        self.port = 8080
        self.slots = 4
        self.header_timeout_ms = 5000
        self.idle_timeout_ms = 5000
        self.queue_timeout_ms = 2000
        self.queue_max = 8
        self.upstream_timeout_ms = 10000
        self.connect_timeout_ms = 3000
        self.shutdown_timeout_ms = 5000
        self.max_headers = 32
        self.request_buffer = 8192
        self.io_buffer = 2048
        self.tls_cert = ""  # DER certificate file; with tls_key: the listener serves HTTPS
        self.tls_key = ""  # DER private key file


class Limits:
    def __init__(self):
        self.services = 256
        self.routes = 512
        self.strtab_bytes = 16384
        self.strtab_entries = 0  # 0: 2 * (services + routes)
        self.header_conditions = 0  # 0: as many as routes


class Shell:
    def __init__(self):
        self.enabled = False
        self.host = "127.0.0.1"
        self.port = 8023


class ServiceDefaults:
    """What applies to services that do not say otherwise, and how many were loaded."""

    def __init__(self, timeout_ms=10000, keepalive=True):
        self.timeout_ms = timeout_ms
        self.keepalive = keepalive
        self.count = 0


class Config:
    """A loaded config: the gateway and one plain object per section."""

    balancer = None  # the lbio.Balancer, when the config has pools (set on the instance then)
    guard = None  # the resio.Guard, when the config has resilience settings (likewise)
    monitoring = None  # the monio.Monitoring, when the config has a monitoring section (likewise)

    def __init__(self, gateway, listen, limits, shell, services):
        self.gateway = gateway
        self.listen = listen
        self.limits = limits
        self.shell = shell
        self.services = services
        self.extra = {}  # extension sections, as parsed
        self.route_policies = []  # (route id, policy name, label) until the auth section resolves them
        self.gate = None  # the AuthGate, when the config has an auth section
        self.route_transforms = []  # (route id, transform name, label) until the mediation section resolves them
        self.service_pools = []  # (service id, pool name, label, has a host) until lbconfig resolves them
        self.resilience_items = []  # ("s" or "r", service or route id, settings, label) for resconfig
        self.mediator = None  # the RequestMediator, when the config has a mediation section
        self.base_dir = ""  # the config file's folder: relative paths in the config start there

"""Checks the optional sections' loaders share (authconfig.py, medconfig.py, lbconfig.py): an object
with known keys, an integer in a range, a path relative to the config file; and the TLS files of
the listen section. Apart from config.py, whose code a board's heap holds while any config loads;
these load only with those sections. Errors are config.ConfigError naming the field.
"""

from .config import ConfigError


def check_object(value, label, keys=None):
    """value, if it is an object whose keys are all in keys (None: any); "_..." keys are comments."""
    if not isinstance(value, dict):
        raise ConfigError("%s: must be an object" % label)
    if keys is not None:
        for k in value:
            if k not in keys and not k.startswith("_"):
                raise ConfigError("%s.%s: unknown key (known: %s)" % (label, k, ", ".join(keys)))
    return value


def check_int(value, lo, hi, label):
    if type(value) is not int or not lo <= value <= hi:
        raise ConfigError("%s: must be an integer %d-%d" % (label, lo, hi))
    return value


def config_path(base_dir, name):
    """A path named in the config: relative ones start at the config file's folder."""
    return base_dir + "/" + name if base_dir and not name.startswith("/") else name


def tls_files(listen, base_dir):
    """listen.tls_cert and tls_key: both or neither. A relative path starts in the config file's
    folder; each file must be readable, so a config naming a missing one is refused (and the
    last good one runs). Whether the files hold a usable certificate and key is tls.py's check."""
    if bool(listen.tls_cert) != bool(listen.tls_key):
        given, other = ("tls_cert", "tls_key") if listen.tls_cert else ("tls_key", "tls_cert")
        raise ConfigError("listen.%s: required with listen.%s" % (other, given))
    for field in ("tls_cert", "tls_key"):
        name = getattr(listen, field)
        if not name:
            continue
        if base_dir and not name.startswith("/"):
            name = base_dir + "/" + name
            setattr(listen, field, name)
        try:
            open(name, "rb").close()
        except OSError as e:
            raise ConfigError("listen.%s: cannot read %s (%s)" % (field, name, e))

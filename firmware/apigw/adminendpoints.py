"""The admin API under /_gw/admin/: the shell over HTTP, the config file, and a reload.

    POST /_gw/admin/shell            {"command": "gateway routes"} or the command line as text/plain:
                                     200 {"output": "..."}; 400 for a command's usage error;
                                     403 for `gateway stop` (it would end the gateway for good:
                                     nothing over HTTP could start it again)
    GET  /_gw/admin/config           the config file the gateway was started with, as it is on disk
    PUT  /_gw/admin/config           a config document: checked as at boot, then written over the
                                     file atomically: 200 {"saved": true, "reload": ...}; 422 and
                                     nothing written when it does not load
    POST /_gw/admin/config/validate  a config document: 200 {"valid": true} or 422 naming the field
    POST /_gw/admin/reload           202 {"reloading": true}, then the server stops and main.py loads
                                     the config file again and serves it on a new server

Every path needs the Admin permission (the auth section's admin policy); without an auth section
the API answers 403 to everyone. Errors have the gateway's error shape (errors.py); a config that
does not load is 422 {"error": "invalid_config"} with the loader's message, which names the field.

The file the server was started with is srv.config_path (main.py sets it with srv.good_path, the
last config that loaded: config.load_with_fallback keeps that file up to date at each load, so a
PUT leaves it alone). Checking a config builds its tables as boot does, with the running tables
still in memory: a heap too small for both answers 503 and nothing is written. The loader's
modules are dropped again after each check, as main.py drops them after boot.

Loaded on the first request under /_gw/admin/. Allocates freely: never on the proxy path. Must not
parse the config itself (config.py does) or touch the files of other sections.
"""

import asyncio
import gc
import io
import json
import os
import sys

from . import httpparse as hp
from . import response as rsp
from .endpoints import is_path
from .errors import error_json
from .gateway import GatewayError
from .sockio import send_all
from .store import atomic_write

P_SHELL = b"/_gw/admin/shell"
P_CONFIG = b"/_gw/admin/config"
P_VALIDATE = b"/_gw/admin/config/validate"
P_RELOAD = b"/_gw/admin/reload"
NO_STORE = b"Cache-Control: no-store\r\n"
GET = hp.METHOD_GET | hp.METHOD_HEAD


async def serve_admin(srv, slot, sock, wait):
    """Answer one request under /_gw/admin/; returns whether the connection stays open."""
    g = srv.gate
    if g is None:  # no credentials can be checked: the API is closed, never open to anyone
        return await _answer(srv, slot, sock, wait, 403, "forbidden", "the admin API needs an auth section")
    st = g.check(slot, g.admin_policy)
    if st == -1:  # authgate.NEED_INTROSPECTION
        st = await g.introspect(slot, g.admin_policy)
    if st:
        return await _flush(slot, sock, wait, srv._reply_refused(slot, sock, st, slot.keep_alive))
    m = slot.method
    if is_path(slot, P_SHELL):
        if m != hp.METHOD_POST:
            return await _not_allowed(srv, slot, sock, wait, hp.METHOD_POST)
        status, doc = _shell(srv, _body(slot))
    elif is_path(slot, P_CONFIG):
        path = getattr(srv, "config_path", None)
        if not m & (GET | hp.METHOD_PUT):
            return await _not_allowed(srv, slot, sock, wait, GET | hp.METHOD_PUT)
        if not path:
            status, doc = 404, "the gateway was started without a config file"
        elif m != hp.METHOD_PUT:
            return await _send_file(srv, slot, sock, wait, path)
        else:
            raw = _body(slot)
            status, doc = _check(srv, raw, True)
            if status == 200:
                status, doc = _save(path, raw)
    elif is_path(slot, P_VALIDATE):
        if m != hp.METHOD_POST:
            return await _not_allowed(srv, slot, sock, wait, hp.METHOD_POST)
        status, doc = _check(srv, _body(slot), False)
        if status == 200:
            doc = {"valid": True}
    elif is_path(slot, P_RELOAD):
        if m != hp.METHOD_POST:
            return await _not_allowed(srv, slot, sock, wait, hp.METHOD_POST)
        if not getattr(srv, "config_path", None):
            status, doc = 404, "the gateway was started without a config file: nothing to reload"
        else:
            return await _reload(srv, slot, sock, wait)
    else:
        status, doc = 404, "no such admin endpoint (shell, config, config/validate, reload)"
    if isinstance(doc, str):  # an error message
        code = {400: "bad_request", 403: "forbidden", 404: "not_found", 422: "invalid_config"}.get(status)
        return await _answer(srv, slot, sock, wait, status, code, doc)
    return await _reply(srv, slot, sock, wait, status, json.dumps(doc).encode())


# -- the endpoints ---------------------------------------------------------------------------------


def _body(slot):
    return bytes(slot.buf[slot.head_end : slot.body_end])


def _shell(srv, raw):
    """(status, {"output": text}) or (status, error message) for one command line."""
    try:
        text = raw.decode()
    except UnicodeError:
        return 400, "the body is not UTF-8 text"
    if text.lstrip().startswith("{"):
        try:
            d = json.loads(text)
        except ValueError:
            return 400, "the body is not valid JSON"
        line = d.get("command") if isinstance(d, dict) else None
        if not isinstance(line, str):
            return 400, 'the body must be {"command": "..."} or the command line as text/plain'
    else:
        line = text
    line = line.strip()
    if "\n" in line or "\r" in line:
        return 400, "one command line per request"
    words = line.split()
    if not words:
        return 400, "the command is empty (try 'help')"
    if words[0] == "gateway" and len(words) > 1 and words[1] == "stop":
        return 403, "gateway stop is not available over HTTP: POST /_gw/admin/reload restarts the gateway"
    sh = getattr(srv, "admin_shell", None)
    if sh is None:
        from .shell import Shell

        sh = srv.admin_shell = Shell(srv.gw, srv)  # kept: later commands see what earlier ones did
    from .shell import ShellError

    entry = sh.commands.get(words[0])
    if entry is None:
        return 400, "unknown command '" + words[0] + "' (try 'help')"
    try:
        return 200, {"output": entry[0](words[1:])}
    except (ShellError, GatewayError, ValueError) as e:  # what Shell.execute shows as "error: ..."
        return 400, str(e)


def _check(srv, raw, save_good):
    """(200, None) when raw is a config that loads (the tables are built, then dropped), else
    (422, the loader's message) or (503, message) when the heap cannot hold a second set of tables.
    save_good (a PUT): also write good_path when it is missing."""
    before = set(sys.modules)
    path = getattr(srv, "config_path", None) or ""
    gc.collect()
    try:
        from . import config as loader

        loader.load_config_stream(io.BytesIO(raw), None, None, path[: path.rfind("/")] if "/" in path else "")
        good = getattr(srv, "good_path", None)
        if save_good and good and not _exists(good) and _exists(path):
            # The boot load writes good_path; only a read-only moment at boot leaves it missing, and
            # then the file in place is the one that loaded.
            loader.save_last_good(path, good)
        return 200, None
    except MemoryError:
        return 503, "not enough memory to load a second config beside the running one; nothing was written"
    except OSError as e:
        return 422, "cannot read a file the config names (%s)" % e
    except ValueError as e:  # config.ConfigError: the message names the field
        return 422, str(e)
    finally:
        _drop_new(before)
        gc.collect()


def _save(path, raw):
    try:
        atomic_write(path, raw)
    except OSError as e:
        return 500, "cannot write %s (%s)" % (path, e)
    return 200, {"saved": True, "reload": "POST /_gw/admin/reload to apply"}


async def _reload(srv, slot, sock, wait):
    """202, then stop the server: main.py sees reload_requested and serves the file again."""
    srv.reload_requested = True
    slot.keep_alive = False  # this connection must not hold the stop up
    await _reply(srv, slot, sock, wait, 202, b'{"reloading":true}')
    if not srv.stopping:
        asyncio.create_task(srv.stop())
    return False


async def _send_file(srv, slot, sock, wait, path):
    """The file at path as the body, read through the slot's I/O buffer: never whole in memory."""
    try:
        size = os.stat(path)[6]
        f = open(path, "rb")
    except OSError as e:
        return await _answer(srv, slot, sock, wait, 404, "not_found", "cannot read %s (%s)" % (path, e))
    try:
        buf = slot.io
        keep = slot.keep_alive
        n = rsp.compose(buf, 200, None, b"", size, keep, slot.version, 0, -1, True, NO_STORE, len(NO_STORE))
        srv.stats.count(200)
        slot.status = 200
        slot.resp_started = True
        await send_all(wait, sock, buf, 0, n)
        if slot.method == hp.METHOD_HEAD:
            return keep
        left = size
        while left > 0:
            k = f.readinto(buf)
            if not k:
                break  # shorter than it was: the client sees the connection close early
            k = min(k, left)
            await send_all(wait, sock, buf, 0, k)
            left -= k
        return keep and left == 0
    finally:
        f.close()


# -- helpers ---------------------------------------------------------------------------------------


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _drop_new(before):
    """Forget the apigw modules imported since `before` (the loader and its section modules), so
    their code does not stay on the heap."""
    pkg = sys.modules.get("apigw")
    for name in [k for k in sys.modules if k not in before and k.startswith("apigw.")]:
        sys.modules.pop(name, None)
        attr = name[6:]
        if pkg is not None and attr in pkg.__dict__:
            delattr(pkg, attr)


async def _reply(srv, slot, sock, wait, status, body):
    more = srv._send(slot, sock, status, None, body)
    if more:
        await srv._send_rest(slot, sock, wait, body, more)
    return slot.keep_alive


async def _answer(srv, slot, sock, wait, status, code, message):
    return await _reply(srv, slot, sock, wait, status, error_json(status, code, message))


async def _not_allowed(srv, slot, sock, wait, allow):
    return await _flush(slot, sock, wait, srv._reply_error(slot, sock, 405, slot.keep_alive, allow))


async def _flush(slot, sock, wait, left):
    if left:
        await send_all(wait, sock, slot.io, slot.out_start, slot.out_end)
    return slot.keep_alive

"""The gateway from the host (CPython): its shell, and over the network its admin API.

    python tools/gwshell.py --tcp 127.0.0.1:8023 [COMMAND WORDS...]    a running gateway's TCP shell
    python tools/gwshell.py --serial /dev/ttyUSB0 [COMMAND WORDS...]   a board's serial console
    python tools/gwshell.py --config gateway.json [COMMAND WORDS...]   offline, against a config file
    python tools/gwshell.py --url http://HOST:PORT --user admin [COMMAND WORDS...]   the admin API

With command words it runs that one command and prints the output; without, it reads commands
from the terminal until EOF or `exit`. Options come before the command words: everything from the
first command word on is the command. Offline mode loads the config with the firmware's own
modules, so `gateway route GET /path` shows the decision a board would make, before flashing.

With --url a command line goes to POST /_gw/admin/shell and prints what the console prints, and
these commands are the tool's own (docs/admin.md):

    config get [-o FILE]         the config file the gateway was started with, as it is on disk
    config validate FILE         check FILE as the gateway would load it (the error names the field)
    config put FILE [--reload]   check and save FILE; --reload then applies it, as `reload` does
    reload                       load the saved config file again; waits until the gateway answers
    health                       GET /_gw/health (needs no credentials)

The admin API needs an Admin's credentials: --user NAME (the password from --password, else
APIGW_PASSWORD, else a prompt when stdin is a terminal), --token TOKEN (or APIGW_TOKEN) or
--key KEY (or APIGW_KEY; sent as X-API-Key). The environment keeps secrets out of the process
list; the tool never prints them. For https:// URLs: --cacert cert.pem (tools/devcert.py,
docs/tls.md) trusts the development certificate, --insecure skips the check.

--json prints one JSON document per command (one line each): {"ok": true, "command": "...",
"output": "..."} for a shell command; for health, validate, put and reload the gateway's own
document with "ok" and "command" added; {"ok": true, "command": "config get", "config": {...}}.
A failure has "ok": false, "error" (a short code, the gateway's when it answered) and "message".

Examples:
  gwshell.py --tcp 127.0.0.1:8023 gateway routes
  gwshell.py --config boards/unix/gateway.json gateway route GET /api/sensors/temp
  gwshell.py --url http://127.0.0.1:8080 --user admin gateway routes      (asks for the password)
  gwshell.py --url https://gw.local:8443 --cacert certs/cert.pem --key "$KEY" health
  gwshell.py --url http://gw.local:8080 --user admin config get -o gateway.json
  gwshell.py --url http://gw.local:8080 --user admin config put gateway.json --reload
  gwshell.py --url http://gw.local:8080 --token "$TOKEN" --json apimon summary

Exit status:
  0  the command succeeded
  1  the command failed: a shell line answered `error: ...`, the admin API answered 4xx/5xx
     (a refused config, a bad command), a file could not be read or written
  2  usage error (bad options or command words)
  3  the gateway cannot be reached: connection refused, timeout, name or TLS failure, serial
     port missing, no prompt on the console
  4  authentication or permission refused (401, 403)
"""

import argparse
import base64
import getpass
import http.client
import json
import os
import socket
import ssl
import sys
import time
from urllib.parse import urlsplit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = b"apigw> "
OK, FAILED, USAGE, UNREACHABLE, REFUSED = 0, 1, 2, 3, 4
HOST_COMMANDS = ("config", "reload", "health")
HOST_USAGE = "config get [-o FILE] | config validate FILE | config put FILE [--reload] | reload | health"
DESCRIPTION, _, EPILOG = __doc__.partition("\nExamples:\n")
EPILOG = "examples:\n" + EPILOG


class CliError(Exception):
    """A command that did not succeed: exit code, short code, message, and the gateway's error
    document when it sent one."""

    def __init__(self, exit_code, code, message, doc=None):
        super().__init__(message)
        self.exit_code = exit_code
        self.code = code
        self.message = message
        self.doc = doc


def unreachable(where, e):
    if isinstance(e, ssl.SSLCertVerificationError):
        hint = " (trust the certificate with --cacert FILE, or --insecure)"
        return CliError(UNREACHABLE, "unreachable", "%s: %s%s" % (where, e.verify_message or e, hint))
    if isinstance(e, (TimeoutError, socket.timeout)):
        return CliError(UNREACHABLE, "unreachable", "%s: no answer (timed out)" % where)
    return CliError(UNREACHABLE, "unreachable", "%s: %s" % (where, e))


# -- the shell, three ways ------------------------------------------------------------------------


class TcpShell:
    def __init__(self, where, timeout=10.0):
        host, _, port = where.rpartition(":")
        try:
            port = int(port)
        except ValueError:
            raise CliError(USAGE, "usage", "--tcp wants HOST:PORT, not %r" % where) from None
        self.where = "%s:%d" % (host or "127.0.0.1", port)
        try:
            self.sock = socket.create_connection((host or "127.0.0.1", port), timeout=timeout)
            self._until_prompt()
        except OSError as e:
            raise unreachable(self.where, e) from None

    def _until_prompt(self):
        data = b""
        while not data.endswith(PROMPT):
            chunk = self.sock.recv(4096)
            if not chunk:
                if not data:
                    raise ConnectionError("the gateway closed the shell connection")
                break
            data += chunk
        return data[: -len(PROMPT)] if data.endswith(PROMPT) else data

    def run(self, line):
        try:
            self.sock.sendall(line.encode() + b"\n")
            return self._until_prompt().decode().rstrip("\n")
        except OSError as e:
            raise unreachable(self.where, e) from None

    def close(self):
        self.sock.close()


class SerialShell:
    """The console of a board running the gateway (the shell task reads lines there)."""

    def __init__(self, device, baud=115200, timeout=10.0):
        try:
            import serial  # pyserial, installed with mpremote
        except ImportError:
            raise CliError(FAILED, "missing", "--serial needs pyserial: pip install pyserial") from None
        self.device = device
        try:
            self.port = serial.Serial(device, baud, timeout=0.1)
        except (OSError, ValueError) as e:  # SerialException is an OSError
            raise unreachable(device, e) from None
        self.timeout = timeout

    def run(self, line):
        try:
            self.port.reset_input_buffer()
            self.port.write(line.encode() + b"\r\n")
            data = b""
            end = time.monotonic() + self.timeout
            while not data.endswith(PROMPT) and time.monotonic() < end:
                data += self.port.read(4096)
        except OSError as e:
            raise unreachable(self.device, e) from None
        if not data.endswith(PROMPT):
            raise CliError(
                UNREACHABLE,
                "unreachable",
                "%s: no prompt within %g s (is the gateway running?)" % (self.device, self.timeout),
            )
        text = data.decode(errors="replace").replace("\r\n", "\n")
        if text.startswith(line):  # the console echoes what was typed
            text = text[len(line) :].lstrip("\n")
        return text[: -len(PROMPT)].rstrip("\n")

    def close(self):
        self.port.close()


class OfflineShell:
    """The firmware's Shell over a config loaded in this process (no server: no stats)."""

    def __init__(self, config_path):
        sys.path.insert(0, os.path.join(ROOT, "firmware"))
        from apigw.config import load_config
        from apigw.shell import Shell

        try:
            cfg = load_config(config_path)
        except (OSError, ValueError) as e:  # config.ConfigError names the field
            raise CliError(FAILED, "invalid_config", str(e)) from None
        self.shell = Shell(
            cfg.gateway,
            gate=cfg.gate,
            mediator=cfg.mediator,
            balancer=getattr(cfg, "balancer", None),
            guard=getattr(cfg, "guard", None),
            monitoring=getattr(cfg, "monitoring", None),
        )

    def run(self, line):
        return self.shell.execute(line)

    def close(self):
        pass


# -- the admin API ---------------------------------------------------------------------------------


class Credentials:
    """The Authorization or X-API-Key header of an Admin, found once, on the first request that
    needs it (a password prompt only then)."""

    def __init__(self, args, environ):
        self.args = args
        self.environ = environ
        self._headers = None
        self.prompted = False  # the password came from the terminal: asked again after a 401

    def given(self):
        a, env = self.args, self.environ
        return bool(a.user or a.token or a.key or env.get("APIGW_TOKEN") or env.get("APIGW_KEY"))

    def headers(self):
        if self._headers is None:
            self._headers = self._find()
        return self._headers

    def _find(self):
        a, env = self.args, self.environ
        if a.user:
            pw = a.password if a.password is not None else env.get("APIGW_PASSWORD")
            if pw is None:
                if not sys.stdin.isatty():
                    raise CliError(USAGE, "usage", "--user needs --password, APIGW_PASSWORD or a terminal to ask on")
                pw = getpass.getpass("password for %s: " % a.user)
                self.prompted = True
            return {"Authorization": "Basic " + base64.b64encode((a.user + ":" + pw).encode()).decode()}
        token = a.token or (None if a.key else env.get("APIGW_TOKEN"))
        if token:
            return {"Authorization": "Bearer " + token}
        key = a.key or env.get("APIGW_KEY")
        if key:
            return {"X-API-Key": key}
        return {}


class AdminClient:
    """The admin API of one gateway: a new connection per request (a reload closes them all)."""

    def __init__(self, url, creds, timeout=10.0, cacert=None, insecure=False):
        if "://" not in url:
            url = "http://" + url
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname or u.path not in ("", "/") or u.query:
            raise CliError(USAGE, "usage", "--url wants http://HOST:PORT or https://HOST:PORT, not %r" % url)
        try:
            self.port = u.port or (443 if u.scheme == "https" else 80)
        except ValueError:
            raise CliError(USAGE, "usage", "--url: bad port in %r" % url) from None
        self.host = u.hostname
        self.where = "%s://%s:%d" % (u.scheme, self.host, self.port)
        self.creds = creds
        self.timeout = timeout
        self.tls = None
        if u.scheme == "https":
            if insecure:
                self.tls = ssl.create_default_context()
                self.tls.check_hostname = False
                self.tls.verify_mode = ssl.CERT_NONE
            else:
                try:
                    self.tls = ssl.create_default_context(cafile=cacert)
                except (OSError, ssl.SSLError) as e:
                    raise CliError(USAGE, "usage", "--cacert %s: %s" % (cacert, e)) from None

    def request(self, method, path, body=None, auth=True, timeout=None):
        """(status, body bytes); CliError(3) when there is no HTTP answer."""
        headers = dict(self.creds.headers()) if auth else {}
        if body is not None:
            headers["Content-Type"] = "application/json"
        t = timeout or self.timeout
        if self.tls is not None:
            c = http.client.HTTPSConnection(self.host, self.port, timeout=t, context=self.tls)
        else:
            c = http.client.HTTPConnection(self.host, self.port, timeout=t)
        try:
            c.request(method, path, body=body, headers=headers)
            r = c.getresponse()
            return r.status, r.read()
        except (OSError, http.client.HTTPException) as e:
            if isinstance(e, http.client.HTTPException) and not isinstance(e, http.client.IncompleteRead):
                e = "not an HTTP answer (%s)" % type(e).__name__
            raise unreachable(self.where, e) from None
        finally:
            c.close()

    def call(self, method, path, body=None, auth=True, timeout=None):
        """The JSON document of a 2xx answer; CliError for anything else."""
        status, data = self.request(method, path, body, auth, timeout)
        return self.answer(status, data, auth)

    def answer(self, status, data, auth=True):
        """The JSON document of a 2xx answer; else CliError with the gateway's error document."""
        try:
            doc = json.loads(data) if data else {}
        except ValueError:
            doc = None
        if 200 <= status < 300 and isinstance(doc, dict):
            return doc
        if not isinstance(doc, dict) or "error" not in doc:
            text = data[:200].decode(errors="replace").strip() or http.client.responses.get(status, "")
            doc = {"status": status, "error": "http_%d" % status, "message": text}
        doc.setdefault("message", doc["error"])
        code = REFUSED if status in (401, 403) else FAILED
        msg = doc["message"]
        if status == 401 and auth and not self.creds.given():
            msg += " (the admin API needs --user, --token or --key)"
        if status == 401 and self.creds.prompted:
            self.creds._headers = None  # a typo: the next command asks again
        raise CliError(code, doc["error"], "HTTP %d %s: %s" % (status, doc["error"], msg), doc)

    # -- what the commands do

    def run(self, line):
        """A shell command line: its output, or "error: ..." as the console shows it."""
        try:
            return self.call("POST", "/_gw/admin/shell", json.dumps({"command": line}).encode())["output"]
        except CliError as e:
            if e.doc is not None and e.doc.get("status") == 400:  # the command's own error
                return "error: " + e.doc["message"]
            raise

    def health(self, timeout=None):
        return self.call("GET", "/_gw/health", auth=False, timeout=timeout)

    def reload(self):
        """POST /_gw/admin/reload, then wait until the new server answers: its health document."""
        before = self.health()
        doc = self.call("POST", "/_gw/admin/reload")
        end = time.monotonic() + self.timeout
        down = False
        while time.monotonic() < end:
            time.sleep(0.1)
            try:
                h = self.health(timeout=min(self.timeout, 2.0))
            except CliError:
                down = True  # stopped, or not listening yet
                continue
            if h.get("status") != "ok":
                down = True
            elif (
                down
                or h.get("requests", 0) < before.get("requests", 0)
                or h.get("uptime_s", 0) < before.get("uptime_s", 0)
            ):
                doc["health"] = h
                return doc
        raise CliError(
            UNREACHABLE, "unreachable", "%s: not back within %g s of the reload" % (self.where, self.timeout)
        )

    def close(self):
        pass


# -- commands --------------------------------------------------------------------------------------


def host_command(words):
    """(name, argument) for a command of this tool, None for a shell command line."""
    if words[0] not in HOST_COMMANDS:
        return None
    if words[0] != "config":
        if len(words) > 1:
            raise CliError(USAGE, "usage", "usage: %s (no arguments)" % words[0])
        return words[0], None
    sub, rest = (words[1] if len(words) > 1 else ""), words[2:]
    if sub == "get" and not rest:
        return "config get", None
    if sub == "get" and len(rest) == 2 and rest[0] in ("-o", "--output"):
        return "config get", rest[1]
    if sub == "validate" and len(rest) == 1 and not rest[0].startswith("-"):
        return "config validate", rest[0]
    if sub == "put" and rest:
        files = [w for w in rest if w != "--reload"]
        if len(files) == 1 and not files[0].startswith("-") and len(rest) <= 2:
            return ("config put --reload" if len(rest) == 2 else "config put"), files[0]
    raise CliError(USAGE, "usage", "usage: " + HOST_USAGE)


def read_file(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CliError(FAILED, "file", "cannot read %s (%s)" % (path, e.strerror or e)) from None


def run_host(sh, name, arg, command):
    """(exit code, JSON document, text for stdout) of one of this tool's commands."""
    if not isinstance(sh, AdminClient):
        raise CliError(USAGE, "usage", "'%s' uses the admin API: give --url (the shell has no such command)" % name)
    if name == "health":
        doc = sh.health()
        ok = doc.get("status") == "ok"
        keys = ["status"] + sorted(k for k in doc if k != "status")
        text = "\n".join("%s: %s" % (k, json.dumps(doc[k]) if isinstance(doc[k], dict) else doc[k]) for k in keys)
        return (OK if ok else FAILED), answer(ok, command, doc), text
    if name == "reload":
        doc = sh.reload()
        return OK, answer(True, command, doc), reloaded(doc["health"])
    if name == "config get":
        status, data = sh.request("GET", "/_gw/admin/config")
        if status != 200:
            sh.answer(status, data)  # raises with the gateway's error
        if arg is None:
            try:
                return OK, answer(True, command, {"config": json.loads(data)}), data
            except ValueError:
                return OK, answer(True, command, {"text": data.decode(errors="replace")}), data
        try:
            with open(arg + ".tmp", "wb") as f:
                f.write(data)
            os.replace(arg + ".tmp", arg)  # a failed write leaves FILE as it was
        except OSError as e:
            raise CliError(FAILED, "file", "cannot write %s (%s)" % (arg, e.strerror or e)) from None
        text = "wrote %s (%d bytes)" % (arg, len(data))
        return OK, answer(True, command, {"file": arg, "bytes": len(data)}), text
    body = read_file(arg)
    if name == "config validate":
        doc = sh.call("POST", "/_gw/admin/config/validate", body)
        return OK, answer(True, command, doc), "%s: valid" % arg
    doc = sh.call("PUT", "/_gw/admin/config", body)  # config put
    if not name.endswith("--reload"):
        return OK, answer(True, command, doc), "saved %s; apply it with: reload" % arg
    doc.update(sh.reload())
    return OK, answer(True, command, doc), "saved %s\n%s" % (arg, reloaded(doc["health"]))


def answer(ok, command, doc, **more):
    """The --json document: ok and command first, then the gateway's document."""
    out = {"ok": ok, "command": command}
    out.update(doc)
    out.update(more)
    return out


def reloaded(h):
    return "reloaded: %s routes, %s services" % (h.get("routes"), h.get("services"))


def run_line(sh, words, as_json, out=None, err=None):
    """Run one command (its words), print its result; returns the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    line = " ".join(words)
    try:
        host = host_command(words)
        if host is not None:
            code, doc, text = run_host(sh, host[0], host[1], line)
        else:
            text = sh.run(line)
            doc = {"ok": True, "command": line, "output": text}
            code = OK
            if text.startswith("error:"):
                code = FAILED
                doc.update(ok=False, error="command_failed", message=text[6:].strip())
                if isinstance(sh, AdminClient):
                    doc.update(status=400, error="bad_request")
    except CliError as e:
        doc = answer(False, line, e.doc or {}, error=e.code, message=(e.doc or {}).get("message", e.message))
        if as_json:
            out.write(json.dumps(doc) + "\n")
        else:
            err.write("gwshell: " + e.message + "\n")
        return e.exit_code
    if as_json:
        out.write(json.dumps(doc) + "\n")
    elif isinstance(text, bytes):
        out.flush()
        out.buffer.write(text)
        out.buffer.flush()
    elif text or host is None:
        out.write(text + "\n")
    return code


# -- the command line ------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    json_errors = False

    def error(self, message):
        if self.json_errors:
            sys.stdout.write(json.dumps({"ok": False, "error": "usage", "message": message}) + "\n")
        self.print_usage(sys.stderr)
        self.exit(USAGE, "%s: error: %s\n" % (self.prog, message))


def parser():
    ap = Parser(
        prog="gwshell.py", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", metavar="HOST:PORT", help="a gateway's TCP shell (shell.enabled in its config)")
    where.add_argument("--serial", metavar="DEVICE", help="a board's serial console")
    where.add_argument("--config", metavar="FILE", help="run offline against this gateway.json")
    where.add_argument("--url", metavar="URL", help="a gateway's admin API: http://HOST:PORT or https://HOST:PORT")
    who = ap.add_mutually_exclusive_group()
    who.add_argument("--user", metavar="NAME", help="an Admin user (HTTP Basic)")
    who.add_argument("--token", metavar="TOKEN", help="an Admin's bearer token (default: $APIGW_TOKEN)")
    who.add_argument("--key", metavar="KEY", help="an Admin API key, sent as X-API-Key (default: $APIGW_KEY)")
    ap.add_argument("--password", metavar="PW", help="--user's password (default: $APIGW_PASSWORD, else a prompt)")
    ap.add_argument("--cacert", metavar="FILE", help="trust this certificate (PEM) for https:// URLs")
    ap.add_argument("--insecure", action="store_true", help="https:// without checking the certificate")
    ap.add_argument("--timeout", type=float, default=10.0, metavar="S", help="seconds to wait for an answer (10)")
    ap.add_argument("--json", action="store_true", help="one JSON document per command")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="one command to run (else read commands from stdin)")
    return ap


def main(argv=None, environ=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = parser()
    ap.json_errors = "--json" in argv
    args = ap.parse_args(argv)
    if args.password is not None and not args.user:
        ap.error("--password goes with --user")
    if args.url is None and (args.user or args.token or args.key or args.cacert or args.insecure):
        ap.error("--user, --token, --key, --cacert and --insecure go with --url")
    if args.timeout <= 0:
        ap.error("--timeout must be more than 0")
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    try:
        if args.url:
            creds = Credentials(args, os.environ if environ is None else environ)
            sh = AdminClient(args.url, creds, args.timeout, args.cacert, args.insecure)
        elif args.tcp:
            sh = TcpShell(args.tcp, args.timeout)
        elif args.serial:
            sh = SerialShell(args.serial, timeout=args.timeout)
        else:
            sh = OfflineShell(args.config)
    except CliError as e:
        if args.json:
            print(json.dumps({"ok": False, "error": e.code, "message": e.message}))
        else:
            print("gwshell: " + e.message, file=sys.stderr)
        return e.exit_code
    try:
        if args.command:
            return run_line(sh, args.command, args.json)
        interactive = sys.stdin.isatty()
        while True:
            if interactive:
                sys.stdout.write(PROMPT.decode())
                sys.stdout.flush()
            line = sys.stdin.readline()
            if not line or line.strip() in ("exit", "quit"):
                return OK
            if line.strip():
                code = run_line(sh, line.split(), args.json)
                sys.stdout.flush()
                if code == UNREACHABLE and not isinstance(sh, AdminClient):
                    return code  # the shell connection is gone
    except KeyboardInterrupt:
        return 130
    finally:
        sh.close()


if __name__ == "__main__":
    sys.exit(main())

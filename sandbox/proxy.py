"""The host-side filtering proxy behind `network.mode = "allowlist"`.

A confined run with an allowlist gets a private network namespace with only
a loopback, so it has no route out at all. Its one way out is this proxy:
threads in the host process (stdlib sockets, no trio: `stockade run` starts
cold) listening on a Unix socket in a private per-run directory (mode 0700),
which the backend bind-mounts into the sandbox at the same path. Inside, the
relay (`sandbox.proxy_relay`) turns that into 127.0.0.1:PROXY_PORT, which
HTTP_PROXY/HTTPS_PROXY name. No host TCP port is opened for these backends.

Backends that cannot carry a Unix socket into a network namespace (Seatbelt
on macOS, the Windows restricted-token backend: there is no namespace) ask
for a loopback TCP listener instead (`tcp=True`, `unix=False`): 127.0.0.1,
an ephemeral port, exposed as `tcp_port`. Seatbelt's profile then allows
outbound connections to `localhost:tcp_port` and nothing else. Any local
process can reach that port too; it only ever relays to the run's allowed
destinations, under the same checks. On Windows loopback is not filtered
by Windows Firewall, so there the port is a convenience, not a boundary.

What it accepts: `CONNECT host:port` (HTTPS and any TLS) and absolute-form
plain HTTP (`GET http://host/path`), which is re-sent in origin form with
`Host` set from the URL and `Connection: close` (one request per connection,
so a second pipelined request cannot pick another host). Everything else is
refused (400/405). A request passes only when:
- the host matches an entry of `allow_domains` (`policies.config.parse_allow_entry`:
  exact name, `*.example.com` for subdomains, optional `:port`, default ports
  80 and 443); an IP literal only when that address is listed itself;
- the name resolves (the proxy resolves it: the sandbox has no DNS) to an
  address it may reach: loopback, link-local, private, multicast and other
  non-global addresses are refused (DNS rebinding onto the host's own
  services or the LAN) unless the address is listed, or, private ranges
  only, the name matched an exact (non-wildcard) entry.

Every decision is logged (`decisions`); the denied ones become
`Result.denials` (kind "network", target host:port).

Tests and unusual setups map names to addresses without DNS, like curl's
`--resolve`: `STOCKADE_PROXY_RESOLVE="allowed.test=127.0.0.1,b.test=::1"`
in the environment of the process that starts the run (the host side; the
sandboxed command cannot change it), or `resolve=` here. A mapped address is
trusted as given (it may be loopback) but the name must still be allowed.

Limits: the proxy sees names, not content. Inside a CONNECT tunnel the TLS
SNI and HTTP Host are not checked, so a CDN that serves many sites on one
address can be "domain fronted" through an allowed name.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from policies.config import AllowEntry, normalize_host, parse_allow_entry
from policies.env import PROXY_PORT
from sandbox.proxy_relay import pump
from sandbox.result import Denial

RESOLVE_ENV = "STOCKADE_PROXY_RESOLVE"
SOCKET_NAME = "proxy.sock"
DIR_PREFIX = "proxy-"
MAX_HEAD = 64 * 1024  # request line + headers
HEAD_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0
MAX_CONNECTIONS = 64  # at once, per run: each holds a host thread
MAX_DECISIONS = 1000  # log entries kept per run (the denials among them are reported)
RELAY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "proxy_relay.py")


class RequestError(Exception):
    """A request the proxy will not handle: `status` is the HTTP answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class Request:
    method: str
    host: str  # normalised (lower-case name or canonical IP)
    port: int
    is_ip: bool
    head: bytes  # what goes upstream first (empty for CONNECT)
    rest: bytes  # bytes the client sent after the head

    @property
    def target(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Decision:
    target: str  # host:port as asked
    outcome: str  # "allowed" | "denied" | "failed" (allowed, but the upstream could not be reached)
    reason: str
    at: float


def _split_authority(authority: str, default_port: int | None) -> tuple[str, int]:
    """`host[:port]` or `[v6][:port]` -> (host, port). RequestError when malformed."""
    if "@" in authority:
        raise RequestError(400, "user information in the authority is not accepted")
    host, port_text = authority, ""
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise RequestError(400, f"bad authority {authority!r}")
        host, tail = authority[:close + 1], authority[close + 1:]
        if tail and not tail.startswith(":"):
            raise RequestError(400, f"bad authority {authority!r}")
        port_text = tail[1:]
    elif ":" in authority:
        host, _, port_text = authority.rpartition(":")
        if ":" in host:
            raise RequestError(400, f"IPv6 addresses need brackets: {authority!r}")
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise RequestError(400, f"bad port in {authority!r}")
        port = int(port_text)
    elif default_port is None:
        raise RequestError(400, f"CONNECT needs host:port, got {authority!r}")
    else:
        port = default_port
    if not host:
        raise RequestError(400, f"no host in {authority!r}")
    return host, port


_HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization", b"proxy-authenticate",
               b"host", b"te", b"upgrade"}


def parse_request(data: bytes) -> Request:
    """Parse a complete request head (`data` holds it up to and past the blank line)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise RequestError(400, "incomplete request head")
    head, rest = data[:end], data[end + 4:]
    lines = head.split(b"\r\n")
    try:
        first = lines[0].decode("ascii")
    except UnicodeDecodeError:
        raise RequestError(400, "request line is not ASCII") from None
    parts = first.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise RequestError(400, f"not an HTTP/1.x request line: {first[:100]!r}")
    method, target, version = parts
    if not method.isalpha() or not method.isupper():
        raise RequestError(400, f"bad method {method[:20]!r}")
    if method == "CONNECT":
        raw_host, port = _split_authority(target, None)
        out = b""
    else:
        scheme, sep, remainder = target.partition("://")
        if not sep or scheme.lower() != "http":
            if target.startswith("/"):
                raise RequestError(400, "origin-form request: this is a proxy, ask for http://host/path")
            raise RequestError(400, f"only http:// URLs and CONNECT are proxied, got {target[:100]!r}")
        cut = min((i for i in (remainder.find(c) for c in "/?#") if i >= 0), default=len(remainder))
        authority, path = remainder[:cut], remainder[cut:]
        raw_host, port = _split_authority(authority, 80)
        path = path.split("#", 1)[0]
        if not path.startswith("/"):
            path = "/" + path
        headers = [line for line in lines[1:] if line.split(b":", 1)[0].strip().lower() not in _HOP_BY_HOP]
        host_header = authority.encode("ascii")
        out = b"\r\n".join([f"{method} {path} {version}".encode("ascii"), b"Host: " + host_header, *headers,
                            b"Connection: close", b"", b""])
    try:
        host, is_ip = normalize_host(raw_host)
    except ValueError as exc:
        raise RequestError(400, str(exc)) from None
    return Request(method=method, host=host, port=port, is_ip=is_ip, head=out, rest=rest)


class Allowlist:
    """The parsed `allow_domains` and the address rules that go with them."""

    def __init__(self, domains: tuple[str, ...] | list[str]) -> None:
        self.entries: tuple[AllowEntry, ...] = tuple(parse_allow_entry(d) for d in domains)

    def match(self, host: str, port: int) -> AllowEntry | None:
        """The first entry allowing `host` (normalised) on `port`, or None."""
        return next((e for e in self.entries if e.matches(host, port)), None)

    def why_not(self, host: str, port: int, is_ip: bool) -> str:
        if is_ip:
            return "raw IP addresses are refused unless the address itself is listed"
        if any(e.matches(host, p) for e in self.entries for p in e.ports):
            return f"port {port} is not allowed for {host}"
        return f"{host} is not on the network allowlist"

    def address_ok(self, address: str, entry: AllowEntry) -> bool:
        """May a name that matched `entry` be reached at `address` (from DNS)?"""
        import ipaddress

        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(e.ip and e.host == str(ip) for e in self.entries):
            return True
        if ip.is_global and not ip.is_multicast:
            return True
        risky = ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast or ip.is_reserved
        return ip.is_private and not risky and not entry.wildcard


def parse_resolve(text: str) -> dict[str, str]:
    """`name=address,name2=address2` (STOCKADE_PROXY_RESOLVE) -> {name: address}. ValueError when malformed."""
    import ipaddress

    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, address = item.partition("=")
        if not sep:
            raise ValueError(f"{RESOLVE_ENV}: {item!r} is not name=address")
        host, is_ip = normalize_host(name)
        if is_ip:
            raise ValueError(f"{RESOLVE_ENV}: {name!r} is an address, not a name")
        out[host] = str(ipaddress.ip_address(address.strip().strip("[]")))
    return out


def base_dir() -> str:
    """Where per-run proxy directories go: the user's runtime dir, else their cache dir.

    Not /tmp: the sandbox's /tmp is private, and a path the sandbox sees as it is on
    the host keeps the bind mount simple for both backends.
    """
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK | os.X_OK):
        return os.path.join(runtime, "stockade")
    import pwd

    home = pwd.getpwuid(os.getuid()).pw_dir
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache"), "stockade")


_SWEPT: set[str] = set()


def _sweep_stale(base: str) -> None:
    """Remove proxy dirs of stockade processes that died before their cleanup ran (once per process)."""
    if base in _SWEPT:
        return
    _SWEPT.add(base)
    with contextlib.suppress(OSError):
        for entry in os.scandir(base):
            pid = entry.name[len(DIR_PREFIX):].split("-", 1)[0]
            if not entry.name.startswith(DIR_PREFIX) or not pid.isdigit():
                continue
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                _remove_dir(entry.path)
            except OSError:
                continue


def _remove_dir(path: str) -> None:
    import shutil

    with contextlib.suppress(OSError):
        os.unlink(os.path.join(path, SOCKET_NAME))
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError:
        shutil.rmtree(path, ignore_errors=True)  # never follows symlinks


class FilteringProxy:
    """One run's proxy: `start()` binds the socket and starts the accept thread, `close()` undoes all of it."""

    def __init__(self, allow_domains: tuple[str, ...] | list[str], *, resolve: Mapping[str, str] | None = None,
                 base: str | None = None, unix: bool = True, tcp: bool = False) -> None:
        if not (unix or tcp):
            raise ValueError("the proxy needs a Unix socket, a loopback TCP listener or both")
        self.allowlist = Allowlist(allow_domains)
        self.resolve = dict(resolve or {})
        self._base = base
        self._unix, self._tcp = unix, tcp
        self.directory = ""
        self.socket_path = ""
        self.tcp_port: int | None = None  # the loopback listener's port (tcp=True), for Seatbelt and Windows
        self.decisions: list[Decision] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._tcp_listener: socket.socket | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._thread: threading.Thread | None = None
        self._open: set[socket.socket] = set()
        self._closed = False
        self._reported = 0

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> FilteringProxy:
        try:
            if self._unix:
                self._start_unix()
            if self._tcp:
                self._start_tcp()
            self._wake = socket.socketpair()
            self._thread = threading.Thread(target=self._accept_loop, name="stockade-proxy", daemon=True)
            self._thread.start()
        except BaseException:
            self.close()
            raise
        return self

    def _start_unix(self) -> None:
        base = self._base or base_dir()
        os.makedirs(base, mode=0o700, exist_ok=True)
        _sweep_stale(base)
        self.directory = tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-", dir=base)  # mode 0700
        self.socket_path = os.path.join(self.directory, SOCKET_NAME)
        if len(os.fsencode(self.socket_path)) >= 108:
            raise OSError(f"proxy socket path too long for a Unix socket: {self.socket_path}")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener = listener
        listener.bind(self.socket_path)
        os.chmod(self.socket_path, 0o600)
        listener.listen(128)
        listener.setblocking(False)

    def _start_tcp(self) -> None:
        """127.0.0.1 only, port chosen by the kernel: never a fixed port another process could hold first."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._tcp_listener = listener
        if hasattr(socket, "SO_EXCLUSIVEADDRUSE"):  # Windows: no other socket may bind the same port
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        listener.setblocking(False)
        self.tcp_port = int(listener.getsockname()[1])

    def close(self) -> None:
        """Stop accepting, cut every open connection, remove the socket and its directory. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conns = list(self._open)
        if self._wake is not None:
            with contextlib.suppress(OSError):
                self._wake[1].send(b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes the handler's select; it closes the socket
        for s in (self._listener, self._tcp_listener, *(self._wake or ())):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()
        if self.directory:
            _remove_dir(self.directory)

    # -- reporting -----------------------------------------------------------------------------------

    def _log(self, target: str, outcome: str, reason: str) -> None:
        with self._lock:
            if len(self.decisions) < MAX_DECISIONS:
                self.decisions.append(Decision(target, outcome, reason, time.time()))

    def denials(self, *, since: int = 0) -> list[Denial]:
        """Denied requests (log entries from index `since` on), one Denial per distinct target and reason."""
        seen: set[tuple[str, str]] = set()
        out = []
        with self._lock:
            logged = self.decisions[since:]
        for d in logged:
            if d.outcome == "denied" and (d.target, d.reason) not in seen:
                seen.add((d.target, d.reason))
                out.append(Denial("network", d.target, "network allowlist", d.reason))
        return out

    def take_denials(self) -> list[Denial]:
        """Denials logged since the last call (a session reports them with the command that follows)."""
        with self._lock:
            start, self._reported = self._reported, len(self.decisions)
        return self.denials(since=start)

    # -- serving -------------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._wake is not None
        sel = selectors.DefaultSelector()
        for listener in (self._listener, self._tcp_listener):
            if listener is not None:
                sel.register(listener, selectors.EVENT_READ)
        sel.register(self._wake[0], selectors.EVENT_READ)
        try:
            while not self._closed:
                for key, _ in sel.select():
                    if key.fileobj is self._wake[0]:
                        return
                    try:
                        conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        time.sleep(0.05)  # EMFILE and friends: do not spin
                        continue
                    with self._lock:
                        busy = len(self._open) >= MAX_CONNECTIONS or self._closed
                        if not busy:
                            self._open.add(conn)
                    if busy:
                        self._log("", "denied", f"more than {MAX_CONNECTIONS} connections at once")
                        conn.close()
                        continue
                    threading.Thread(target=self._handle, args=(conn,), name="stockade-proxy-conn",
                                     daemon=True).start()
        finally:
            sel.close()

    def _track(self, s: socket.socket, add: bool) -> bool:
        with self._lock:
            if add:
                if self._closed:
                    return False
                self._open.add(s)
            else:
                self._open.discard(s)
        return True

    def _handle(self, conn: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            conn.setblocking(True)
            conn.settimeout(HEAD_TIMEOUT)
            try:
                data = _read_head(conn)
                req = parse_request(data)
            except RequestError as exc:
                self._log("", "denied", f"bad request: {exc.reason}")
                _answer(conn, exc.status, exc.reason)
                return
            except OSError:
                return
            entry = self.allowlist.match(req.host, req.port)
            if entry is None:
                reason = self.allowlist.why_not(req.host, req.port, req.is_ip)
                self._log(req.target, "denied", reason)
                _answer(conn, 403, f"stockade: {req.target} refused: {reason}")
                return
            try:
                addresses = self._addresses(req, entry)
            except RequestError as exc:
                self._log(req.target, "denied" if exc.status == 403 else "failed", exc.reason)
                _answer(conn, exc.status, f"stockade: {req.target}: {exc.reason}")
                return
            try:
                upstream = _connect(addresses, req.port)
            except OSError as exc:
                self._log(req.target, "failed", f"upstream unreachable: {exc}")
                _answer(conn, 502, f"stockade: {req.target}: cannot connect: {exc}")
                return
            if not self._track(upstream, True):
                return
            self._log(req.target, "allowed", f"{entry.text} -> {upstream.getpeername()[0]}")
            conn.settimeout(None)
            upstream.settimeout(None)
            if req.method == "CONNECT":
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                upstream.sendall(req.head)
            if req.rest:
                upstream.sendall(req.rest)
            pump(conn, upstream)
        except OSError:
            pass
        finally:
            for s in (conn, upstream):
                if s is not None:
                    self._track(s, False)
                    with contextlib.suppress(OSError):
                        s.close()

    def _addresses(self, req: Request, entry: AllowEntry) -> list[str]:
        """Addresses to try for an allowed request, resolved here (the sandbox has no DNS)."""
        if req.is_ip:
            return [req.host]  # matched an address entry: listed explicitly
        mapped = self.resolve.get(req.host)
        if mapped is not None:
            return [mapped]  # the operator's static mapping (host side only)
        try:
            infos = socket.getaddrinfo(req.host, req.port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise RequestError(502, f"cannot resolve {req.host}: {exc}") from None
        found = list(dict.fromkeys(str(info[4][0]) for info in infos))
        usable = [a for a in found if self.allowlist.address_ok(a, entry)]
        if not usable:
            raise RequestError(403, f"{req.host} resolves to {', '.join(found)}: not a public address "
                                    "(list the address itself to allow it)")
        return usable


def _read_head(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD:
            raise RequestError(431, "request head too large")
        chunk = conn.recv(16384)
        if not chunk:
            raise RequestError(400, "connection closed before the request head ended")
        data += chunk
    return data


def _connect(addresses: list[str], port: int) -> socket.socket:
    last: OSError | None = None
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(CONNECT_TIMEOUT)
        try:
            s.connect((address, port))
            return s
        except OSError as exc:
            s.close()
            last = exc
    raise last or OSError("no address")


_STATUS = {400: "Bad Request", 403: "Forbidden", 405: "Method Not Allowed", 431: "Request Header Fields Too Large",
           502: "Bad Gateway"}


def _answer(conn: socket.socket, status: int, text: str) -> None:
    body = (text + "\n").encode("utf-8", "replace")
    head = (f"HTTP/1.1 {status} {_STATUS.get(status, 'Error')}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\nX-Stockade-Proxy: refused\r\n\r\n").encode()
    with contextlib.suppress(OSError):
        conn.sendall(head + body)


def start_proxy(allow_domains: tuple[str, ...], environ: Mapping[str, str] | None = None, *,
                tcp: bool = False) -> FilteringProxy:
    """Start the proxy for one run (or session). `environ`: the host environment STOCKADE_PROXY_RESOLVE is read from.

    `tcp`: a loopback TCP listener instead of the Unix socket, for backends with no network namespace.
    """
    env = os.environ if environ is None else environ
    resolve = parse_resolve(env.get(RESOLVE_ENV, ""))
    return FilteringProxy(allow_domains, resolve=resolve, unix=not tcp, tcp=tcp).start()


def relay_argv(proxy: FilteringProxy, command: list[str], python: str | None = None) -> list[str]:
    """`command` behind the in-sandbox relay (`sandbox.proxy_relay`)."""
    return relay_command(os.path.dirname(proxy.socket_path), command, python)


def relay_command(directory: str, command: list[str], python: str | None = None) -> list[str]:
    import sys

    return [python or sys.executable, "-I", "-S", RELAY, str(PROXY_PORT), os.path.join(directory, SOCKET_NAME),
            "--", *command]


def placeholder_dir() -> str:
    """A would-be per-run directory, for `stockade explain` (nothing is created)."""
    return os.path.join(os.path.realpath(base_dir()), f"{DIR_PREFIX}RUN")

"""The network allowlist: entry parsing, the matcher, request parsing, and the proxy on real sockets.

The proxy tests talk to it over its Unix socket from this process (no sandbox); what a
sandboxed command can reach is tests/security/test_sec_allowlist.py's job.
"""

from __future__ import annotations

import http.server
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from policies.compile.bwrap import bwrap_argv
from policies.compile.mounts import Bind, PrivateTmp, mount_plan
from policies.config import Overrides, PolicyError, apply_overrides, normalize_host, parse_allow_entry
from policies.env import PROXY_ENV, build_env
from policies.host import HostFacts
from policies.model import Mode, NetworkMode, NetworkPolicy, SandboxPolicy
from policies.resolve import ResolvedPolicy
from sandbox.backends.landlock import LandlockBackend
from sandbox.proxy import Allowlist, FilteringProxy, RequestError, parse_request, parse_resolve, relay_argv

# ---------------------------------------------------------------- entries


@pytest.mark.parametrize(("entry", "host", "wildcard", "ip", "ports"), [
    ("example.com", "example.com", False, False, (80, 443)),
    ("Example.COM.", "example.com", False, False, (80, 443)),
    ("*.example.com", "example.com", True, False, (80, 443)),
    ("example.com:8443", "example.com", False, False, (8443,)),
    ("*.pypi.org:443", "pypi.org", True, False, (443,)),
    ("10.0.0.5", "10.0.0.5", False, True, (80, 443)),
    ("10.0.0.5:8080", "10.0.0.5", False, True, (8080,)),
    ("[::1]:8080", "::1", False, True, (8080,)),
    ("2001:db8::1", "2001:db8::1", False, True, (80, 443)),
    ("[::ffff:127.0.0.1]", "127.0.0.1", False, True, (80, 443)),
    ("bücher.example", "xn--bcher-kva.example", False, False, (80, 443)),
])
def test_parse_allow_entry(entry: str, host: str, wildcard: bool, ip: bool, ports: tuple[int, ...]) -> None:
    parsed = parse_allow_entry(entry)
    assert (parsed.host, parsed.wildcard, parsed.ip, parsed.ports) == (host, wildcard, ip, ports)


@pytest.mark.parametrize("entry", ["*", "*.com", "com", "localhost", "*.*.example.com", "ex*ample.com",
                                   "example.com:0", "example.com:99999", "example.com:http", "*.10.0.0.1",
                                   "127.1", "2130706433.", "0x7f.0x1", "exa mple.com", "a..b.com", "[::1",
                                   "[::1]x", ""])
def test_parse_allow_entry_rejects(entry: str) -> None:
    with pytest.raises(ValueError):
        parse_allow_entry(entry)


def test_normalize_host_canonicalises_addresses() -> None:
    assert normalize_host("[::ffff:7f00:1]") == ("127.0.0.1", True)
    assert normalize_host("ALLOWED.test.") == ("allowed.test", False)


# ---------------------------------------------------------------- matcher


def test_exact_entry_matches_only_that_name_and_default_ports() -> None:
    al = Allowlist(["allowed.test"])
    assert al.match("allowed.test", 443) and al.match("allowed.test", 80)
    for host in ("sub.allowed.test", "evilallowed.test", "allowed.test.evil.com", "allowed.tes"):
        assert al.match(host, 443) is None, host
    assert al.match("allowed.test", 22) is None
    assert "port 22" in al.why_not("allowed.test", 22, False)
    assert "not on the network allowlist" in al.why_not("other.test", 443, False)


def test_wildcard_matches_subdomains_only() -> None:
    al = Allowlist(["*.allowed.test"])
    assert al.match("a.allowed.test", 443) and al.match("a.b.allowed.test", 80)
    assert al.match("allowed.test", 443) is None
    assert al.match("xallowed.test", 443) is None


def test_port_entry_allows_only_that_port() -> None:
    al = Allowlist(["allowed.test:8080"])
    assert al.match("allowed.test", 8080)
    assert al.match("allowed.test", 443) is None and al.match("allowed.test", 80) is None


def test_ip_entries_match_only_the_listed_address() -> None:
    al = Allowlist(["10.0.0.5", "allowed.test"])
    assert al.match("10.0.0.5", 443)
    assert al.match("10.0.0.6", 443) is None
    assert "raw IP" in al.why_not("10.0.0.6", 443, True)


@pytest.mark.parametrize(("entries", "address", "ok"), [
    (["allowed.test"], "93.184.216.34", True),  # public
    (["allowed.test"], "127.0.0.1", False),  # loopback: the host's own services
    (["allowed.test"], "::1", False),
    (["allowed.test"], "::ffff:127.0.0.1", False),
    (["allowed.test"], "169.254.169.254", False),  # link-local: cloud metadata
    (["allowed.test"], "0.0.0.0", False),
    (["allowed.test"], "10.1.2.3", True),  # private, but the exact name was listed
    (["*.allowed.test"], "10.1.2.3", False),  # private behind a wildcard: refused
    (["*.allowed.test"], "fd00::1", False),
    (["allowed.test", "127.0.0.1"], "127.0.0.1", True),  # the address itself is listed
])
def test_address_rules(entries: list[str], address: str, ok: bool) -> None:
    al = Allowlist(entries)
    entry = al.entries[0]
    assert al.address_ok(address, entry) is ok


def test_parse_resolve() -> None:
    assert parse_resolve("allowed.test=127.0.0.1, B.test=[::1]") == {"allowed.test": "127.0.0.1", "b.test": "::1"}
    assert parse_resolve("") == {}
    for bad in ("allowed.test", "allowed.test=nope", "127.0.0.1=127.0.0.1"):
        with pytest.raises(ValueError):
            parse_resolve(bad)


# ---------------------------------------------------------------- request parsing


def test_parse_connect() -> None:
    req = parse_request(b"CONNECT Allowed.Test:443 HTTP/1.1\r\nHost: x\r\n\r\nTLSDATA")
    assert (req.method, req.host, req.port, req.is_ip, req.head, req.rest) == (
        "CONNECT", "allowed.test", 443, False, b"", b"TLSDATA")
    v6 = parse_request(b"CONNECT [::1]:8443 HTTP/1.1\r\n\r\n")
    assert (v6.host, v6.port, v6.is_ip, v6.target) == ("::1", 8443, True, "[::1]:8443")


def test_parse_absolute_http_rewrites_to_origin_form() -> None:
    raw = (b"GET http://allowed.test:8080/a/b?q=1#frag HTTP/1.1\r\nHost: evil.test\r\nProxy-Connection: keep-alive\r\n"
           b"Proxy-Authorization: Basic eA==\r\nConnection: keep-alive\r\nUser-Agent: t\r\n\r\nBODY")
    req = parse_request(raw)
    assert (req.host, req.port) == ("allowed.test", 8080)
    lines = req.head.split(b"\r\n")
    assert lines[0] == b"GET /a/b?q=1 HTTP/1.1"
    assert b"Host: allowed.test:8080" in lines and b"Connection: close" in lines and b"User-Agent: t" in lines
    assert not any(line.lower().startswith((b"proxy-", b"host: evil")) for line in lines)
    assert req.head.endswith(b"\r\n\r\n") and req.rest == b"BODY"
    assert parse_request(b"GET http://allowed.test HTTP/1.0\r\n\r\n").head.startswith(b"GET / HTTP/1.0\r\n")


@pytest.mark.parametrize("raw", [
    b"GET /path HTTP/1.1\r\nHost: allowed.test\r\n\r\n",  # origin form: not a proxy request
    b"GET https://allowed.test/ HTTP/1.1\r\n\r\n",  # TLS must go through CONNECT
    b"GET ftp://allowed.test/ HTTP/1.1\r\n\r\n",
    b"GET http://allowed.test@evil.test/ HTTP/1.1\r\n\r\n",  # userinfo confusion
    b"CONNECT allowed.test HTTP/1.1\r\n\r\n",  # no port
    b"CONNECT allowed.test:0 HTTP/1.1\r\n\r\n",
    b"CONNECT ::1:443 HTTP/1.1\r\n\r\n",  # v6 without brackets
    b"CONNECT allowed.test:443 SPDY/3\r\n\r\n",
    b"connect allowed.test:443 HTTP/1.1\r\n\r\n",
    b"\xff\xfe HTTP/1.1\r\n\r\n",
    b"GET http://allowed.test/ HTTP/1.1\r\n",  # incomplete
])
def test_parse_request_rejects(raw: bytes) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(raw)
    assert info.value.status == 400


# ---------------------------------------------------------------- the proxy on real sockets


class _Server:
    """A loopback HTTP server that records every request line it receives."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        seen = self.lines

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(f"{self.requestline} host={self.headers.get('Host')}")
                body = b"HELLO"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.close()


@pytest.fixture
def proxy(tmp_path: Path, server: _Server) -> Iterator[FilteringProxy]:
    p = FilteringProxy([f"allowed.test:{server.port}"], base=str(tmp_path / "base"),
                       resolve={"allowed.test": "127.0.0.1", "denied.test": "127.0.0.1"}).start()
    yield p
    p.close()


def _ask(proxy: FilteringProxy, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(proxy.socket_path)
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data


def test_socket_is_private(proxy: FilteringProxy) -> None:
    assert stat.S_IMODE(os.stat(proxy.directory).st_mode) == 0o700
    assert stat.S_ISSOCK(os.stat(proxy.socket_path).st_mode)


def test_allowed_plain_http(proxy: FilteringProxy, server: _Server) -> None:
    reply = _ask(proxy, f"GET http://allowed.test:{server.port}/ok HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.0 200") and reply.endswith(b"HELLO")
    assert server.lines == [f"GET /ok HTTP/1.1 host=allowed.test:{server.port}"]
    assert [(d.target, d.outcome) for d in proxy.decisions] == [(f"allowed.test:{server.port}", "allowed")]
    assert proxy.denials() == []


def test_allowed_connect_tunnel(proxy: FilteringProxy, server: _Server) -> None:
    reply = _ask(proxy, f"CONNECT allowed.test:{server.port} HTTP/1.1\r\n\r\n"
                        "GET /tunnel HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.0 200")
    assert server.lines == ["GET /tunnel HTTP/1.1 host=t"]


@pytest.mark.parametrize(("request_line", "target"), [
    ("GET http://denied.test:{port}/x HTTP/1.1", "denied.test:{port}"),
    ("CONNECT denied.test:{port} HTTP/1.1", "denied.test:{port}"),
    ("CONNECT allowed.test:22 HTTP/1.1", "allowed.test:22"),
    ("CONNECT 127.0.0.1:{port} HTTP/1.1", "127.0.0.1:{port}"),
    ("GET http://127.0.0.1:{port}/x HTTP/1.1", "127.0.0.1:{port}"),
    ("GET http://[::ffff:127.0.0.1]:{port}/x HTTP/1.1", "127.0.0.1:{port}"),
])
def test_denied_requests_reach_nothing(proxy: FilteringProxy, server: _Server, request_line: str,
                                       target: str) -> None:
    line = request_line.format(port=server.port)
    reply = _ask(proxy, f"{line}\r\nHost: allowed.test\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 403"), reply
    assert server.lines == []
    expected = target.format(port=server.port)
    assert [(d.kind, d.target) for d in proxy.denials()] == [("network", expected)]


def test_bad_request_is_refused(proxy: FilteringProxy, server: _Server) -> None:
    assert _ask(proxy, b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert server.lines == []


def test_name_resolving_to_loopback_is_refused(tmp_path: Path, server: _Server,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: an allowed name whose DNS answer is the host's loopback."""
    def fake_getaddrinfo(host: str, port: int, *args: object, **kw: object) -> list[tuple[object, ...]]:
        assert host == "rebind.test"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    p = FilteringProxy([f"rebind.test:{server.port}"], base=str(tmp_path)).start()
    try:
        reply = _ask(p, f"CONNECT rebind.test:{server.port} HTTP/1.1\r\n\r\n".encode())
    finally:
        p.close()
    assert reply.startswith(b"HTTP/1.1 403") and b"not a public address" in reply
    assert server.lines == []
    assert p.denials()[0].target == f"rebind.test:{server.port}"


def test_take_denials_reports_each_once(proxy: FilteringProxy) -> None:
    _ask(proxy, b"CONNECT denied.test:443 HTTP/1.1\r\n\r\n")
    assert [d.target for d in proxy.take_denials()] == ["denied.test:443"]
    assert proxy.take_denials() == []


def test_close_removes_everything_and_cuts_tunnels(tmp_path: Path, server: _Server) -> None:
    base = tmp_path / "base"
    p = FilteringProxy([f"allowed.test:{server.port}"], base=str(base), resolve={"allowed.test": "127.0.0.1"}).start()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(p.socket_path)
    s.sendall(f"CONNECT allowed.test:{server.port} HTTP/1.1\r\n\r\n".encode())
    assert s.recv(100).startswith(b"HTTP/1.1 200")
    p.close()
    p.close()  # idempotent
    assert s.recv(100) == b""  # the open tunnel was cut
    s.close()
    assert os.listdir(base) == []
    alive = [t.name for t in threading.enumerate() if t.name.startswith("stockade-proxy")]
    for t in threading.enumerate():
        if t.name.startswith("stockade-proxy"):
            t.join(5)
    assert not [t for t in threading.enumerate() if t.name.startswith("stockade-proxy")], alive


def test_stale_dirs_of_dead_processes_are_swept(tmp_path: Path) -> None:
    import sandbox.proxy as proxy_mod

    base = tmp_path / "base"
    stale = base / "proxy-999999999-abc"  # no such pid
    stale.mkdir(parents=True)
    (stale / "proxy.sock").touch()
    proxy_mod._SWEPT.discard(str(base))
    FilteringProxy(["a.test"], base=str(base)).start().close()
    assert not stale.exists() and os.listdir(base) == []


# ---------------------------------------------------------------- wiring: env, config, argv, plans


def test_build_env_sets_proxy_variables_only_for_allowlist() -> None:
    allow = SandboxPolicy(network=NetworkPolicy(NetworkMode.ALLOWLIST, ("a.test",)))
    env = build_env(allow, {"PATH": "/bin", "HTTP_PROXY": "http://corp:8080"})
    assert {k: env[k] for k in PROXY_ENV} == PROXY_ENV
    assert env["HTTPS_PROXY"] == "http://127.0.0.1:3128" and env["NO_PROXY"].startswith("localhost,127.0.0.1")
    off = build_env(SandboxPolicy(), {"PATH": "/bin"})
    assert not set(PROXY_ENV) & set(off)


def test_allow_domain_override_implies_allowlist(tmp_path: Path) -> None:
    base = SandboxPolicy(workspace=str(tmp_path))
    policy = apply_overrides(base, Overrides(allow_domains=("pypi.org", "*.pythonhosted.org")))
    assert policy.network == NetworkPolicy(NetworkMode.ALLOWLIST, ("pypi.org", "*.pythonhosted.org"))
    with pytest.raises(PolicyError, match="--allow-domain"):
        apply_overrides(base, Overrides(allow_domains=("*",)))
    with pytest.raises(PolicyError, match="cannot be combined"):
        apply_overrides(base, Overrides(network="on", allow_domains=("pypi.org",)))
    with pytest.raises(PolicyError, match="allowlist needs domains"):
        apply_overrides(base, Overrides(network="allowlist"))


def test_cli_parses_repeatable_allow_domain() -> None:
    from sandbox.cli import _overrides, parse_run_args

    args = parse_run_args(["--allow-domain", "a.test", "--allow-domain=b.test:8080", "--", "true"])
    assert _overrides(args.options).allow_domains == ("a.test", "b.test:8080")


WS = "/home/u/proj"
PROXY_DIR = "/home/u/.cache/stockade/proxy-1-x"


def _rp(network: NetworkMode = NetworkMode.ALLOWLIST) -> ResolvedPolicy:
    policy = SandboxPolicy(mode=Mode.WORKSPACE_WRITE, workspace=WS, network=NetworkPolicy(network, ("a.test",)))
    return ResolvedPolicy(policy=policy, workspace=WS, cwd=WS, writable=(WS,), protected=(), deny_read=(),
                          home="/home/u")


def test_bwrap_argv_binds_only_the_proxy_socket() -> None:
    host = HostFacts(bwrap_path="/usr/bin/bwrap", bwrap_usable=True, home="/home/u", seccomp=True, uid=1000)
    sock = f"{PROXY_DIR}/proxy.sock"
    argv = bwrap_argv(_rp(), host, ["true"], seccomp_fd=None, hide_sockets=(sock, "/run/docker.sock"),
                      proxy_dir=PROXY_DIR)
    assert "--unshare-net" in argv
    i = argv.index(PROXY_DIR)
    assert argv[i - 1:i + 2] == ["--ro-bind", PROXY_DIR, PROXY_DIR]
    assert sock not in argv  # not hidden under /dev/null
    assert argv[argv.index("/run/docker.sock") - 2:argv.index("/run/docker.sock")] == ["--ro-bind", "/dev/null"]


def test_mount_plan_binds_the_proxy_dir_before_private_tmp() -> None:
    root = HostFacts(uid=0, gid=0, home="/root", landlock_abi=7, seccomp=True)
    plan = mount_plan(_rp(), root, proxy_dir=PROXY_DIR, host_sockets=(f"{PROXY_DIR}/proxy.sock",))
    binds = [op for op in plan.ops if isinstance(op, Bind) and op.dst.startswith(PROXY_DIR)]
    assert binds == [Bind(PROXY_DIR, PROXY_DIR, recursive=False, readonly=True, why="network allowlist proxy socket")]
    first_tmp = next(i for i, op in enumerate(plan.ops) if isinstance(op, PrivateTmp))
    assert plan.ops.index(binds[0]) < first_tmp
    in_tmp = mount_plan(_rp(), root, proxy_dir="/tmp/stockade/proxy-1-x")
    assert any(isinstance(op, PrivateTmp) and op.dst == "/tmp" and "/tmp/stockade/proxy-1-x" in op.keep
               for op in in_tmp.ops)


def test_landlock_without_namespaces_refuses_allowlist() -> None:
    host = HostFacts(uid=1000, gid=1000, home="/home/u", landlock_abi=7, seccomp=True)
    backend = LandlockBackend(namespaces="none")
    assert backend.protections(_rp(), host)["network"].startswith("missing: a network allowlist needs")
    assert LandlockBackend(namespaces="userns").protections(_rp(), host)["network"].startswith("enforced: allowlist")


def test_relay_argv(tmp_path: Path) -> None:
    p = FilteringProxy(["a.test"], base=str(tmp_path)).start()
    try:
        argv = relay_argv(p, ["curl", "x"], python="/usr/bin/python3")
    finally:
        p.close()
    assert argv[:3] == ["/usr/bin/python3", "-I", "-S"] and argv[3].endswith("proxy_relay.py")
    assert argv[4:] == ["3128", p.socket_path, "--", "curl", "x"]


# ---------------------------------------------------------------- the loopback TCP listener (seatbelt, windows)


def _ask_tcp(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data


@pytest.fixture
def tcp_proxy(server: _Server) -> Iterator[FilteringProxy]:
    """Started the way the engine starts it for seatbelt/windows: start_proxy(tcp=True), mapping from the env."""
    from sandbox.proxy import RESOLVE_ENV, start_proxy

    p = start_proxy((f"allowed.test:{server.port}",), {RESOLVE_ENV: "allowed.test=127.0.0.1,denied.test=127.0.0.1"},
                    tcp=True)
    yield p
    p.close()


def test_tcp_listener_is_loopback_only_and_has_no_unix_socket(tcp_proxy: FilteringProxy) -> None:
    assert tcp_proxy.tcp_port and 0 < tcp_proxy.tcp_port < 65536
    assert tcp_proxy.socket_path == "" and tcp_proxy.directory == ""  # nothing made on disk
    assert tcp_proxy._tcp_listener is not None
    assert tcp_proxy._tcp_listener.getsockname() == ("127.0.0.1", tcp_proxy.tcp_port)


def test_tcp_listener_relays_an_allowed_domain(tcp_proxy: FilteringProxy, server: _Server) -> None:
    assert tcp_proxy.tcp_port is not None
    reply = _ask_tcp(tcp_proxy.tcp_port,
                     f"GET http://allowed.test:{server.port}/ok HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.0 200") and reply.endswith(b"HELLO")
    reply = _ask_tcp(tcp_proxy.tcp_port, f"CONNECT allowed.test:{server.port} HTTP/1.1\r\n\r\n"
                                         "GET /tunnel HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.0 200")
    assert server.lines == [f"GET /ok HTTP/1.1 host=allowed.test:{server.port}", "GET /tunnel HTTP/1.1 host=t"]
    assert tcp_proxy.denials() == []


@pytest.mark.parametrize("request_line", ["GET http://denied.test:{port}/x HTTP/1.1",
                                          "CONNECT denied.test:{port} HTTP/1.1", "CONNECT 127.0.0.1:{port} HTTP/1.1"])
def test_tcp_listener_refuses_a_denied_domain(tcp_proxy: FilteringProxy, server: _Server, request_line: str) -> None:
    assert tcp_proxy.tcp_port is not None
    line = request_line.format(port=server.port)
    reply = _ask_tcp(tcp_proxy.tcp_port, f"{line}\r\nHost: allowed.test\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 403"), reply
    assert server.lines == []
    assert [d.kind for d in tcp_proxy.denials()] == ["network"]


def test_tcp_listener_closes(server: _Server) -> None:
    p = FilteringProxy(["a.test"], unix=False, tcp=True).start()
    port = p.tcp_port
    assert port is not None
    p.close()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_both_listeners_serve_the_same_allowlist(tmp_path: Path, server: _Server) -> None:
    p = FilteringProxy([f"allowed.test:{server.port}"], base=str(tmp_path), resolve={"allowed.test": "127.0.0.1"},
                       tcp=True).start()
    try:
        assert p.tcp_port is not None and p.socket_path
        request = f"GET http://allowed.test:{server.port}/a HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        assert _ask(p, request).endswith(b"HELLO") and _ask_tcp(p.tcp_port, request).endswith(b"HELLO")
    finally:
        p.close()
    with pytest.raises(ValueError):
        FilteringProxy(["a.test"], unix=False, tcp=False)


def test_engine_gives_seatbelt_and_windows_the_tcp_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    from sandbox.execute import LOOPBACK_PROXY_BACKENDS, PROXIED_BACKENDS, _start_proxy

    assert set(LOOPBACK_PROXY_BACKENDS) == {"seatbelt", "windows"} <= set(PROXIED_BACKENDS)
    policy = SandboxPolicy(workspace="/", network=NetworkPolicy(NetworkMode.ALLOWLIST, ("a.test",)))
    for backend in LOOPBACK_PROXY_BACKENDS:
        p = _start_proxy(policy, backend)
        assert p is not None
        try:
            assert p.tcp_port and p.socket_path == ""
        finally:
            p.close()
    p = _start_proxy(policy, "bwrap")
    assert p is not None
    try:
        assert p.tcp_port is None and p.socket_path
    finally:
        p.close()
    assert _start_proxy(SandboxPolicy(workspace="/"), "seatbelt") is None  # network off: no proxy

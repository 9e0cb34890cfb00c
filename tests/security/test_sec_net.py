"""THREATS.md "Must be denied", network with policy network=off: judged by what the host's servers
and a host packet sniffer received, never by the client's exit code."""

from __future__ import annotations

import json

import pytest
from conftest import CANARY, PY, NetSpy, frame_summary, host_addresses

# One client for every attempt: argv[1] is a JSON list of [kind, family, host, port]; the payload is
# the test marker, so the host sniffer can spot it on any interface.
CLIENT = r'''
import json, socket, struct, sys
attempts, payload = json.loads(sys.argv[1]), sys.argv[2].encode()
FAM = {4: socket.AF_INET, 6: socket.AF_INET6, 0: socket.AF_UNSPEC}
for kind, fam, host, port in attempts:
    try:
        if kind == "udp":
            s = socket.socket(FAM[fam], socket.SOCK_DGRAM)
            s.sendto(payload, (host, port))
        elif kind == "udp-connected":
            s = socket.socket(FAM[fam], socket.SOCK_DGRAM)
            s.connect((host, port)); s.send(payload)
        elif kind == "udp-sendmsg":
            s = socket.socket(FAM[fam], socket.SOCK_DGRAM)
            s.sendmsg([payload], [], 0, (host, port))
        elif kind == "tcp-name":
            s = socket.create_connection((host, port), timeout=2); s.sendall(payload)
        elif kind == "tcp-fastopen":
            s = socket.socket(FAM[fam], socket.SOCK_STREAM)
            s.sendto(payload, 0x20000000, (host, port))
        elif kind in ("tcp", "mptcp"):
            s = socket.socket(FAM[fam], socket.SOCK_STREAM, 262 if kind == "mptcp" else 0)
            s.settimeout(2); s.connect((host, port)); s.sendall(payload)
        elif kind == "unix":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(2); s.connect(host); s.sendall(payload)
        elif kind == "unix-dgram":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            s.sendto(payload, host)
        print("SENT", kind, host, port, flush=True)
    except OSError as exc:
        print("FAILED", kind, host, port, exc, flush=True)
'''


def attempt(box, attempts: list) -> str:
    path = box.root / "client.py"
    path.write_text(CLIENT)
    return f"{PY} {path} '{json.dumps(attempts)}' {box.marker}"


def tcp_attempts(spy: NetSpy, how: str) -> list:
    v4, v6 = spy.tcp4, spy.tcp6
    table = {
        "v4": [["tcp", 4, "127.0.0.1", v4]],
        "v6": [["tcp", 6, "::1", v6]],
        "v4-mapped-v6": [["tcp", 6, "::ffff:127.0.0.1", v4]],
        "other-loopback-addr": [["tcp", 4, "127.0.0.2", v4], ["tcp", 4, "127.255.0.1", v4]],
        "any-addr": [["tcp", 4, "0.0.0.0", v4], ["tcp", 6, "::", v6]],
        "localhost-name": [["tcp-name", 0, "localhost", v4], ["tcp-name", 0, "localhost", v6]],
        "host-addresses": [["tcp", 6 if ":" in a else 4, a, v6 if ":" in a else v4] for a in host_addresses()],
        "mptcp": [["mptcp", 4, "127.0.0.1", v4], ["mptcp", 6, "::1", v6]],
        "tcp-fastopen": [["tcp-fastopen", 4, "127.0.0.1", v4], ["tcp-fastopen", 6, "::1", v6]],
    }
    return table[how]


TCP_HOWS = ("v4", "v6", "v4-mapped-v6", "other-loopback-addr", "any-addr", "localhost-name", "host-addresses",
            "mptcp", "tcp-fastopen", "bash-dev-tcp", "curl")


@pytest.mark.parametrize("how", TCP_HOWS)
def test_tcp_to_host_denied(backend, mode, how, box, spy, run_in):
    if how == "bash-dev-tcp":
        script = (f"bash -c 'echo {box.marker} > /dev/tcp/127.0.0.1/{spy.tcp4}' 2>&1; "
                  f"bash -c 'echo {box.marker} > /dev/tcp/::1/{spy.tcp6}' 2>&1")
    elif how == "curl":
        script = (f"curl -sS -m 2 http://127.0.0.1:{spy.tcp4}/{box.marker} 2>&1; "
                  f"curl -sS -m 2 -g 'http://[::1]:{spy.tcp6}/{box.marker}' 2>&1; "
                  f"curl -sS -m 2 --noproxy '*' http://localhost:{spy.tcp4}/{box.marker} 2>&1")
    else:
        script = attempt(box, tcp_attempts(spy, how))
    r = run_in(backend, mode, script + "; echo attempted")
    seen = spy.seen_by("tcp4", "tcp6")
    assert not seen, f"host TCP servers got traffic via {how!r}: {frame_summary(seen)}\n{r.why}"


UDP = {
    "v4": lambda s: [["udp", 4, "127.0.0.1", s.udp4]],
    "v6": lambda s: [["udp", 6, "::1", s.udp6]],
    "connected": lambda s: [["udp-connected", 4, "127.0.0.1", s.udp4], ["udp-connected", 6, "::1", s.udp6]],
    "sendmsg": lambda s: [["udp-sendmsg", 4, "127.0.0.1", s.udp4], ["udp-sendmsg", 6, "::1", s.udp6]],
    "v4-mapped-v6": lambda s: [["udp", 6, "::ffff:127.0.0.1", s.udp4]],
    "closed-port": lambda s: [["udp", 4, "127.0.0.1", 9], ["udp", 6, "::1", 9]],
    "host-addresses": lambda s: [["udp", 6 if ":" in a else 4, a, s.udp6 if ":" in a else s.udp4]
                                 for a in host_addresses()],
}


@pytest.mark.parametrize("how", UDP)
def test_udp_to_host_denied(backend, mode, how, box, spy, run_in):
    r = run_in(backend, mode, attempt(box, UDP[how](spy)) + "; echo attempted")
    seen = spy.seen_by("udp4", "udp6")
    assert not seen, f"host got UDP via {how!r}: {frame_summary(seen)}\n{r.why}"


DNS = r'''
import socket, struct, sys
name, system_resolver = sys.argv[1], sys.argv[2] == "1"
try:
    if system_resolver:
        print("RESOLVED", socket.getaddrinfo(name, 80))
except OSError as exc:
    print("getaddrinfo failed:", exc)
q = struct.pack(">HHHHHH", 0x1234, 0x100, 1, 0, 0, 0) + b"".join(
    bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
    try:
        s = socket.socket(socket.AF_INET, kind)
        s.settimeout(1)
        s.connect(("127.0.0.1", 53))
        s.send(q if kind == socket.SOCK_DGRAM else struct.pack(">H", len(q)) + q)
        print("QUERY SENT", kind)
    except OSError as exc:
        print("query failed:", exc)
'''


def test_dns_lookup_denied(backend, mode, box, spy, run_in):
    """No DNS query carrying the name leaves the sandbox (system resolver, 127.0.0.1:53 UDP and TCP)."""
    path = box.root / "dns.py"
    path.write_text(DNS)
    name = f"{box.marker}.example.invalid"
    # The system resolver is off the loopback here; the canary (unconfined) run must not reach it.
    resolver = "0" if CANARY else "1"
    getent = "" if CANARY else f"getent hosts {name} 2>&1; "
    r = run_in(backend, mode, f"{PY} {path} {name} {resolver} 2>&1; {getent}echo attempted")
    seen = spy.seen_by("dns-udp", "dns-tcp")
    assert not seen, f"a DNS query left the sandbox: {frame_summary(seen)}\n{r.why}"
    assert "RESOLVED" not in r.out, r.why


RAW = {
    "raw-icmp": ("socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)",
                 "s.sendto(b'\\x08\\x00\\x00\\x00\\x00\\x01\\x00\\x01' + M, ('127.0.0.1', 0))"),
    "raw-icmpv6": ("socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)",
                   "s.sendto(b'\\x80\\x00\\x00\\x00\\x00\\x01\\x00\\x01' + M, ('::1', 0))"),
    "raw-ip-hdrincl": ("socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)",
                       "s.sendto(b'\\x45' + bytes(19) + M, ('127.0.0.1', 0))"),
    "ping-socket": ("socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)",
                    "s.sendto(b'\\x08\\x00\\x00\\x00\\x00\\x01\\x00\\x01' + M, ('127.0.0.1', 0))"),
    "packet-raw": ("socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))",
                   "s.bind(('lo', 0)); s.send(bytes(12) + b'\\x08\\x00' + M)"),
    "packet-dgram": ("socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))",
                     "s.sendto(M, ('lo', 0x0800, 0, 0, bytes(6)))"),
    "netlink-route": ("socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)",
                      "s.send(struct.pack('=IHHII', 32, 18, 0x301, 1, 0) + bytes(16)); print(s.recv(65536))"),
    "netlink-uevent": ("socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15)", "s.bind((0, 1))"),
    "netlink-audit": ("socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 9)", "pass"),
}


@pytest.mark.parametrize("what", RAW)
def test_raw_packet_netlink_sockets_denied(backend, mode, what, box, spy, run_in):
    make, use = RAW[what]
    code = (f"import socket, struct\nM = b'{box.marker}'\ns = {make}\nprint('SOCKET-CREATED', flush=True)\n"
            f"{use}\nprint('USED')\n")
    r = run_in(backend, mode, code, py=True)
    seen = spy.seen_by()
    assert not seen, f"{what}: a frame with the marker reached the host: {frame_summary(seen)}\n{r.why}"
    assert "SOCKET-CREATED" not in r.out, f"{what} socket could be created inside the sandbox\n{r.why}"


@pytest.mark.parametrize("where", NetSpy.UNIX_KINDS)
def test_host_unix_socket_denied(backend, mode, where, box, spy, run_in):
    """A docker.sock-like host socket: no connection reaches the host server."""
    path = str(spy.unix[where])
    script = attempt(box, [["unix", 0, path, 0], ["unix-dgram", 0, path, 0]]) + "; echo attempted"
    kw = {}
    if where == "appeared-during-run":
        script = "echo READY; sleep 0.3; " + script
        kw["on_output"] = lambda stream, chunk: spy.late_unix(where) if b"READY" in chunk else None
    r = run_in(backend, mode, script, **kw)
    seen = spy.seen_by(where)
    assert not seen, f"host socket {path} ({where}) was reached\n{r.why}"


def test_host_abstract_socket_denied(backend, mode, box, spy, run_in):
    r = run_in(backend, mode, attempt(box, [["unix", 0, "\0" + spy.abstract, 0]]) + "; echo attempted")
    seen = spy.seen_by("abstract")
    assert not seen, f"host abstract socket @{spy.abstract} was reached\n{r.why}"

#!/usr/bin/env python3
"""Per-command cost in a confined session, against bare spawns and sandbox.run, measured in the same run.

    python bench/session.py [--n 300] [--backends bwrap,landlock]

For each backend: Session.exec(["/bin/true"]) against bare
subprocess.run(["/bin/true"]), sampled round-robin (one of each per round)
so load from other processes on the machine hits both alike; then
sandbox.run(["/bin/true"]) in a block of its own. Medians (ms) and ratios.

Also in the round-robin, "floor": the least any Python host + worker pair
can do per command (request with the two pipe fds over a socketpair, an
unconfined worker posix_spawns and waits through a pidfd, a one-line reply,
no validation, no result): what the design itself costs on this machine,
apart from stockade's code.
"""

from __future__ import annotations

import argparse
import array
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from policies.model import SandboxPolicy
from sandbox import run
from sandbox.backends import get_backend
from sandbox.detect import host_facts
from sandbox.session import Session


def sample(variants: dict[str, Callable[[], object]], n: int, warmup: int = 10) -> dict[str, float]:
    """Median ms per variant, sampled round-robin."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(n):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - t0) * 1000)
    return {name: statistics.median(xs) for name, xs in samples.items()}


FLOOR_WORKER = r"""
import os, select, socket, sys
sock = socket.socket(fileno=int(sys.argv[1]))
ep = select.epoll()
ep.register(sock.fileno(), select.EPOLLIN)
env, running = dict(os.environ), {}
while True:
    for fd, _ in ep.poll():
        if fd != sock.fileno():
            pid = running.pop(fd)
            ep.unregister(fd)
            os.close(fd)
            _, status, _ = os.wait4(pid, 0)
            sock.send(b"%d" % status)
            continue
        data, anc, _, _ = sock.recvmsg(64, socket.CMSG_SPACE(8))
        if not data:
            sys.exit(0)
        fds = [int.from_bytes(anc[0][2][i:i + 4], sys.byteorder) for i in (0, 4)]
        pid = os.posix_spawn("/bin/true", ["/bin/true"], env, setsid=True,
                             file_actions=[(os.POSIX_SPAWN_DUP2, fds[0], 1), (os.POSIX_SPAWN_DUP2, fds[1], 2)])
        for f in fds:
            os.close(f)
        pidfd = os.pidfd_open(pid)
        running[pidfd] = pid
        ep.register(pidfd, select.EPOLLIN)
"""


class Floor:
    """The minimal request/spawn/report round trip (see the module docstring)."""

    def __init__(self) -> None:
        self.sock, theirs = socket.socketpair()
        self.proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", FLOOR_WORKER, str(theirs.fileno())],
                                     pass_fds=[theirs.fileno()])
        theirs.close()

    def __call__(self) -> None:
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        self.sock.sendmsg([b"run"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [out_w, err_w]))])
        self.sock.recv(64)
        for fd in (out_r, out_w, err_r, err_w):
            os.close(fd)

    def close(self) -> None:
        self.sock.close()
        self.proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=300, help="rounds (one sample of each variant per round)")
    ap.add_argument("--backends", default="bwrap,landlock")
    args = ap.parse_args()

    host = host_facts()
    workspace = tempfile.mkdtemp(prefix="stockade-bench-")
    policy = SandboxPolicy(workspace=workspace)
    print(f"host: kernel {host.kernel}, landlock ABI {host.landlock_abi}, bwrap {host.bwrap_version}, "
          f"uid {host.uid}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}")
    print(f"per-command cost of /bin/true (median of {args.n} round-robin samples):")
    floor = Floor()
    try:
        for name in args.backends.split(","):
            reason = get_backend(name).unavailable(host)
            if reason:
                print(f"  {name}: unavailable ({reason})")
                continue
            with Session(policy, backend=name, host=host) as session:
                # sandbox.run leaves kernel work behind (namespace teardown runs asynchronously), which
                # would land on the samples after it: it is measured in a block of its own.
                ms = sample({
                    "bare": lambda: subprocess.run(["/bin/true"]),
                    "floor": floor,
                    "session": lambda session=session: session.exec(["/bin/true"]),
                }, args.n)
                ms["run"] = sample({"run": lambda name=name: run(["/bin/true"], policy, backend=name, host=host)},
                                   max(args.n // 3, 10))["run"]
            print(f"  {name}:")
            print(f"    {'bare subprocess.run':<28} {ms['bare']:8.3f} ms")
            print(f"    {'floor (bare round trip)':<28} {ms['floor']:8.3f} ms  {ms['floor'] / ms['bare']:5.2f}x bare")
            print(f"    {'Session.exec':<28} {ms['session']:8.3f} ms  {ms['session'] / ms['bare']:5.2f}x bare")
            print(f"    {'sandbox.run':<28} {ms['run']:8.3f} ms  {ms['run'] / ms['bare']:5.2f}x bare   "
                  f"session is {ms['run'] / ms['session']:.1f}x faster")
    finally:
        floor.close()
        shutil.rmtree(workspace, ignore_errors=True)


if __name__ == "__main__":
    main()

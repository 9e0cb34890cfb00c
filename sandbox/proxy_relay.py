"""Inside the sandbox: 127.0.0.1:PORT -> the host proxy's Unix socket, then exec the command.

Run as `python -I -S proxy_relay.py PORT SOCKET -- CMD [ARGS...]` as the
sandboxed program itself, so it is confined exactly like the command (same
namespaces, Landlock domain and seccomp filter: it needs nothing more than a
loopback TCP listener in the private network namespace and a connect() to
one Unix socket). Why this shape:

- The network namespace has only a loopback, and tools only speak to HTTP
  proxies over TCP (`HTTPS_PROXY=http://127.0.0.1:PORT`), so something must
  listen on the loopback inside. The host proxy cannot: it lives outside the
  namespace and listens on a Unix socket bind-mounted in.
- The listener is bound before the command starts (no race: connections
  queue in the backlog), then the process forks: the child relays, the
  parent execs the command. The command keeps the pid, exit status, signals,
  stdin and session the engine gave the launched process, so nothing in the
  supervision changes. The relay child stays in the command's process
  group: whatever ends the run (bwrap's pid namespace, the engine's process
  group kill, the cgroup) ends it too; it also exits when its parent is gone.
- The relay holds no power the command lacks (same uid, same confinement):
  the command may kill it or talk to the Unix socket directly. The host
  proxy decides every request; this is plumbing, not a boundary.

The child closes every inherited fd (stdio included), or it would keep the
command's output pipes and a session worker's control socket open. It puts
its pid in STOCKADE_PROXY_RELAY_PID for the command, so a session worker
(a child subreaper that sweeps leftovers) spares it.

Stdlib only, no stockade imports: it starts with `python -I -S`.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys
import threading
import time

CHUNK = 64 * 1024
PARENT_CHECK = 2.0  # seconds between checks that the command (our parent) is still there
RELAY_PID_ENV = "STOCKADE_PROXY_RELAY_PID"


def pump(a: socket.socket, b: socket.socket, idle: float | None = None) -> None:
    """Copy bytes both ways until both directions end (half-closes are passed on); closes neither.

    One thread, both sockets non-blocking, each direction with its own small
    buffer, so a slow reader only stops its own direction (backpressure).
    `idle`: give up after this many seconds without any traffic.
    """
    a.setblocking(False)
    b.setblocking(False)
    peers = {a: b, b: a}
    pending: dict[socket.socket, bytes] = {a: b"", b: b""}  # bytes waiting to be written TO the key
    reading = {a: True, b: True}
    sel = selectors.DefaultSelector()
    try:
        while True:
            wanted = {}
            for s in (a, b):
                ev = 0
                if reading[s] and not pending[peers[s]]:
                    ev |= selectors.EVENT_READ
                if pending[s]:
                    ev |= selectors.EVENT_WRITE
                if ev:
                    wanted[s] = ev
            if not wanted:
                return
            for s, ev in wanted.items():
                try:
                    sel.modify(s, ev)
                except KeyError:
                    sel.register(s, ev)
            for s in (a, b):
                if s not in wanted:
                    try:
                        sel.unregister(s)
                    except KeyError:
                        pass
            ready = sel.select(idle)
            if not ready:
                return
            for key, ev in ready:
                s: socket.socket = key.fileobj  # type: ignore[assignment]
                if ev & selectors.EVENT_WRITE and pending[s]:
                    try:
                        sent = s.send(pending[s])
                    except BlockingIOError:
                        sent = 0
                    except OSError:
                        return
                    pending[s] = pending[s][sent:]
                    if not pending[s] and not reading[peers[s]]:
                        _shut(s)
                if ev & selectors.EVENT_READ and reading[s]:
                    try:
                        data = s.recv(CHUNK)
                    except BlockingIOError:
                        continue
                    except OSError:
                        return
                    other = peers[s]
                    if data:
                        pending[other] += data
                    else:
                        reading[s] = False
                        if not pending[other]:
                            _shut(other)
    finally:
        sel.close()


def _shut(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _serve_one(conn: socket.socket, path: str) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(path)
        pump(conn, upstream)
    except OSError:
        pass
    finally:
        upstream.close()
        conn.close()


def serve(listener: socket.socket, path: str, parent: int) -> None:
    """Accept forever (until the parent is gone), one thread per connection."""
    listener.settimeout(PARENT_CHECK)
    while os.getppid() == parent:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:  # EMFILE and friends: do not spin
            time.sleep(0.1)
            continue
        conn.settimeout(None)
        threading.Thread(target=_serve_one, args=(conn, path), daemon=True).start()


def _quiet_fds(keep: int) -> None:
    """stdio to /dev/null, every other inherited fd closed (the command's pipes must not stay open)."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)
    os.closerange(3, keep)
    os.closerange(keep + 1, 1 << 20)


def _exec(command: list[str]) -> None:
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        # What a shell says and returns: 127 not found, 126 found but not executable.
        sys.stderr.write(f"stockade: {command[0]}: {exc.strerror or exc}\n")
        sys.stderr.flush()
        os._exit(127 if isinstance(exc, FileNotFoundError) else 126)


def main(argv: list[str]) -> None:
    if len(argv) < 4 or argv[2] != "--" or not argv[0].isdigit():
        sys.stderr.write("usage: proxy_relay.py PORT SOCKET -- CMD [ARGS...]\n")
        os._exit(125)
    port, path = int(argv[0]), argv[1]
    command = argv[3:]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
    except OSError as exc:
        sys.stderr.write(f"stockade: the network allowlist relay cannot listen on 127.0.0.1:{port}: {exc}\n")
        os._exit(125)
    parent = os.getpid()
    child = os.fork()
    if child == 0:
        try:
            # Terminal signals meant for the command must not take the relay down mid-run.
            for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
                signal.signal(sig, signal.SIG_IGN)
            _quiet_fds(listener.fileno())
            serve(listener, path, parent)
        finally:
            os._exit(0)
    listener.close()  # the command does not get it (it is close-on-exec anyway)
    os.environ[RELAY_PID_ENV] = str(child)
    _exec(command)


if __name__ == "__main__":
    main(sys.argv[1:])

#!/usr/bin/env python3
"""Spawn cost of a sandboxed /bin/true, against baselines measured in the same run.

    python bench/spawn.py [--n 300] [--cold-n 40]

Prints medians (ms) and ratios:
  in-process: sandbox.run(["/bin/true"]) per backend vs bare subprocess.run(["/bin/true"])
  cold:       `stockade run -- /bin/true` (a fresh interpreter) vs the bare bwrap call it wraps,
              and the peak RSS of the `stockade run` process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from policies.model import SandboxPolicy
from policies.resolve import resolve
from sandbox import run
from sandbox.backends import get_backend
from sandbox.detect import host_facts


def timed(fn: Callable[[], object], n: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def row(label: str, ms: float, base: float | None = None, base_label: str = "") -> None:
    ratio = f"  {ms / base:5.2f}x {base_label}" if base else ""
    print(f"  {label:<46} {ms:8.3f} ms{ratio}")


def peak_rss_kb(argv: list[str], env: dict[str, str]) -> int:
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return usage.ru_maxrss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=300, help="in-process iterations per variant")
    ap.add_argument("--cold-n", type=int, default=40, help="cold CLI iterations per variant")
    args = ap.parse_args()

    # An installed package ships compiled bytecode; make sure this checkout has it too, even
    # when PYTHONDONTWRITEBYTECODE is set, so the cold runs measure stockade and not the compiler.
    import compileall

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for pkg in ("policies", "sandbox"):
        compileall.compile_dir(os.path.join(repo, pkg), quiet=1)
    host = host_facts()
    workspace = tempfile.mkdtemp(prefix="stockade-bench-", dir="/srv" if os.access("/srv", os.W_OK) else None)
    policy = SandboxPolicy(workspace=workspace)
    print(f"host: kernel {host.kernel}, landlock ABI {host.landlock_abi}, bwrap {host.bwrap_version}, "
          f"uid {host.uid}, {os.cpu_count()} cpus")

    print(f"\nin-process spawn of /bin/true (median of {args.n}):")
    bare = median(timed(lambda: subprocess.run(["/bin/true"]), args.n))
    row("bare subprocess.run", bare)
    for name in ("landlock", "bwrap"):
        reason = get_backend(name).unavailable(host)
        if reason:
            print(f"  {name}: unavailable ({reason})")
            continue
        ms = median(timed(lambda name=name: run(["/bin/true"], policy, backend=name, host=host), args.n))
        row(f"sandbox.run backend={name}", ms, bare, "of bare")

    print(f"\ncold CLI (median of {args.cold_n}):")
    exe = shutil.which("stockade", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    env = dict(os.environ)
    if not exe:
        print("  stockade console script not found; pip install -e . first")
        return
    if get_backend("bwrap").unavailable(host):
        print("  bwrap unavailable: cold comparison skipped")
        return
    rp = resolve(policy, host)
    from policies.env import build_env

    launch = get_backend("bwrap").launch(rp, host, ["/bin/true"], build_env(policy, os.environ))
    def bare_bwrap_once() -> None:
        for fd in launch.pass_fds:  # bwrap reads the BPF to its end; rewind for the next run
            os.lseek(fd, 0, os.SEEK_SET)
        subprocess.run(launch.argv, env=launch.env, cwd=launch.cwd, pass_fds=launch.pass_fds, check=True)

    try:
        bare_bwrap = median(timed(bare_bwrap_once, args.cold_n))
    finally:
        launch.cleanup()
    row("bare bwrap argv stockade builds", bare_bwrap)
    cli = [exe, "run", "--backend", "bwrap", "--cwd", workspace, "--", "/bin/true"]
    cold = median(timed(lambda: subprocess.run(cli, env=env), args.cold_n, warmup=2))
    row("stockade run -- /bin/true (console script)", cold, bare_bwrap, "of bare bwrap")
    py_s = [sys.executable, "-S", "-c", "import sys; sys.argv[0]='stockade'; from sandbox.cli import main; main()",
            "run", "--backend", "bwrap", "--cwd", workspace, "--", "/bin/true"]
    site = [p for p in sys.path if p.endswith("site-packages")]
    env_s = dict(env, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                   *site]))
    cold_s = median(timed(lambda: subprocess.run(py_s, env=env_s), args.cold_n, warmup=2))
    row("same, python -S (no site .pth hooks)", cold_s, bare_bwrap, "of bare bwrap")
    interp = median(timed(lambda: subprocess.run([sys.executable, "-c", "pass"]), args.cold_n, warmup=2))
    row("reference: python -c pass (interpreter alone)", interp, bare_bwrap, "of bare bwrap")
    rss = peak_rss_kb(cli, env)
    print(f"\npeak RSS of `stockade run -- /bin/true`: {rss / 1024:.1f} MiB")
    shutil.rmtree(workspace, ignore_errors=True)


if __name__ == "__main__":
    main()

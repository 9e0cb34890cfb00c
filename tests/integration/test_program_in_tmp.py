"""A program installed under host /tmp (a CI checkout's .venv) still runs despite the private /tmp."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

import sandbox
from policies.model import SandboxPolicy
from sandbox.backends import get_backend
from sandbox.detect import host_facts


@pytest.mark.parametrize("backend", ["bwrap", "landlock"])
def test_program_under_host_tmp_runs_and_tmp_stays_private(backend: str) -> None:
    reason = get_backend(backend).unavailable(host_facts())
    if reason:
        pytest.skip(reason)
    tool = Path(tempfile.mkdtemp(prefix="stockade-tool-", dir="/tmp"))
    ws = Path(tempfile.mkdtemp(prefix="stockade-ws-", dir="/srv" if os.access("/srv", os.W_OK) else None))
    try:
        script = tool / "bin" / "hello"
        script.parent.mkdir()
        script.write_text("#!/bin/sh\necho hello from $0\n"
                          "echo private > /tmp/written-by-sandbox\ncat /tmp/written-by-sandbox\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        res = sandbox.run([str(script)], SandboxPolicy(workspace=str(ws)), backend=backend)
        assert res.exit_code == 0, res.stderr
        assert res.stdout == f"hello from {script}\nprivate\n".encode()
        assert not Path("/tmp/written-by-sandbox").exists()
        # The tool dir is shown read-only.
        res = sandbox.run(["sh", "-c", f"echo x > {tool}/new"], SandboxPolicy(workspace=str(ws)), backend=backend,
                          env={"PATH": f"{tool}/bin:/usr/bin:/bin"})
        assert res.exit_code != 0 and not (tool / "new").exists()
    finally:
        shutil.rmtree(tool, ignore_errors=True)
        shutil.rmtree(ws, ignore_errors=True)

"""apply_patch plans applied through a real confined `sandbox.Session`; every outcome checked from the host.

The workspace lives under /srv (not /tmp), as in test_session.py: a private
/tmp in the sandbox would hide it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from exec_support import confining_backend_params

from agent.patch import PatchError, PatchPlan, parse_patch, plan_patch
from policies.model import Limits, Mode, SandboxPolicy
from sandbox.detect import host_facts
from sandbox.session import FileOpError, Session

BASE = Path(os.environ.get("STOCKADE_PATCH_TEST_BASE", "/srv/stockade-patch-test"))


@pytest.fixture(autouse=True)
def _hang_guard() -> Iterator[None]:
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@dataclasses.dataclass
class Tree:
    root: Path
    ws: Path
    victim: Path


@pytest.fixture
def tree() -> Iterator[Tree]:
    BASE.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="patch-", dir=BASE))
    ws, outside, home = root / "ws", root / "outside", root / "home"
    for d in (ws / ".git", ws / "src", outside, home):
        d.mkdir(parents=True)
    (ws / ".git" / "config").write_text("[core]\n")
    (ws / "README.md").write_text("hello\r\nworld\r\n")
    (ws / "src" / "app.py").write_text("def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b")
    (ws / "src" / "old.py").write_text("OLD = 1\n")
    victim = outside / "victim.txt"
    victim.write_text("victim\n")
    (ws / "link").symlink_to(outside)  # a relative path that leads out of the workspace
    try:
        yield Tree(root, ws, victim)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        with contextlib.suppress(OSError):
            BASE.rmdir()  # only when no other run is using it


@pytest.fixture(params=confining_backend_params())
def session(request: pytest.FixtureRequest, tree: Tree) -> Iterator[Session]:
    policy = SandboxPolicy(mode=Mode.WORKSPACE_WRITE, workspace=str(tree.ws), limits=Limits(timeout=20.0))
    host = dataclasses.replace(host_facts(), home=str(tree.root / "home"))
    s = Session(policy, backend=str(request.param), host=host)
    s.start()
    try:
        yield s
    finally:
        s.close()


def reader(session: Session) -> Callable[[str], str | None]:
    """Read files the way the patch tool does: through the sandbox, None when missing."""

    def read(path: str) -> str | None:
        try:
            return session.read_file(path, max_bytes=8 << 20).data.decode()
        except FileOpError as exc:
            if exc.errname == "ENOENT":
                return None
            raise

    return read


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every entry under root: file bytes, symlink targets, directories."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "<dir>"
            else:
                out[rel] = p.read_bytes()
    return out


def plan(session: Session, *body: str) -> PatchPlan:
    text = "\n".join(["*** Begin Patch", *body, "*** End Patch"])
    return plan_patch(parse_patch(text), reader(session))


def test_patch_applies_through_the_session(session: Session, tree: Tree) -> None:
    p = plan(session,
             "*** Update File: src/app.py",
             "@@ def sub(a, b):",
             "-    return a - b",
             "+    return a - b  # checked",
             "*** End of File",
             "*** Update File: README.md",
             "@@",
             " hello",
             "-world",
             "+there",
             "*** Add File: docs/new/guide.md",
             "+# Guide",
             "*** Update File: src/old.py",
             "*** Move to: src/renamed.py",
             "@@",
             "-OLD = 1",
             "+NEW = 2",
             )
    changed = session.apply_edits(p.edits, parents=True)
    assert sorted(changed) == sorted(str(tree.ws / e["path"]) for e in p.edits)
    assert (tree.ws / "src" / "app.py").read_bytes() == (b"def add(a, b):\n    return a + b\n\n\n"
                                                         b"def sub(a, b):\n    return a - b  # checked")
    assert (tree.ws / "README.md").read_bytes() == b"hello\r\nthere\r\n"
    assert (tree.ws / "docs" / "new" / "guide.md").read_text() == "# Guide\n"
    assert not (tree.ws / "src" / "old.py").exists()
    assert (tree.ws / "src" / "renamed.py").read_text() == "NEW = 2\n"
    assert p.summary().splitlines() == ["M src/app.py (+1 -1)", "M README.md (+1 -1)", "A docs/new/guide.md (+1)",
                                        "R src/old.py -> src/renamed.py (+1 -1)"]
    assert not [q for q in tree.ws.rglob("*") if ".stockade-" in q.name]


def test_write_into_git_changes_nothing(session: Session, tree: Tree) -> None:
    before, victim = snapshot(tree.ws), tree.victim.read_bytes()
    p = plan(session,
             "*** Update File: README.md", "@@", " hello", "-world", "+pwned",
             "*** Add File: src/added.py", "+x = 1",
             "*** Update File: .git/config", "@@", " [core]", "+\thooksPath = /tmp/evil",
             )
    assert [e["path"] for e in p.edits] == ["README.md", "src/added.py", ".git/config"]
    with pytest.raises(FileOpError) as err:
        session.apply_edits(p.edits, parents=True)
    assert err.value.denial is not None and err.value.denial.kind == "protected"
    assert snapshot(tree.ws) == before
    assert tree.victim.read_bytes() == victim


def test_move_into_git_changes_nothing(session: Session, tree: Tree) -> None:
    before = snapshot(tree.ws)
    p = plan(session, "*** Update File: src/old.py", "*** Move to: .git/hooks/post-checkout", "@@", "-OLD = 1",
             "+#!/bin/sh")
    with pytest.raises(FileOpError):
        session.apply_edits(p.edits, parents=True)
    assert snapshot(tree.ws) == before


def test_write_outside_the_workspace_changes_nothing(session: Session, tree: Tree) -> None:
    before, victim = snapshot(tree.ws), tree.victim.read_bytes()
    p = plan(session,
             "*** Delete File: src/old.py",
             "*** Update File: link/victim.txt", "@@", "-victim", "+pwned",
             )
    assert [e["path"] for e in p.edits] == ["src/old.py", "link/victim.txt"]
    with pytest.raises(FileOpError) as err:
        session.apply_edits(p.edits, parents=True)
    # Through a symlink the sandbox reports the errno (EROFS/EACCES) but may not attribute a Denial.
    assert err.value.errname in ("EROFS", "EACCES", "EPERM") or err.value.denial is not None
    assert snapshot(tree.ws) == before
    assert tree.victim.read_bytes() == victim


def test_plan_edit_with_an_outside_path_changes_nothing(session: Session, tree: Tree) -> None:
    """Defence in depth: even if a plan carried an absolute outside path, the session refuses all of it."""
    before, victim = snapshot(tree.ws), tree.victim.read_bytes()
    p = plan(session, "*** Update File: README.md", "@@", " hello", "-world", "+pwned", "*** Add File: n.txt", "+n")
    edits = [*p.edits, {"path": str(tree.victim), "content": "pwned\n"}]
    with pytest.raises(FileOpError) as err:
        session.apply_edits(edits, parents=True)
    assert err.value.denial is not None and err.value.denial.kind == "write"
    assert snapshot(tree.ws) == before
    assert tree.victim.read_bytes() == victim


def test_patch_paths_cannot_name_outside_files(session: Session, tree: Tree) -> None:
    for path in ("../outside/victim.txt", str(tree.victim)):
        with pytest.raises(PatchError):
            plan(session, f"*** Update File: {path}", "@@", "-victim", "+pwned")
    assert tree.victim.read_bytes() == b"victim\n"


def test_failed_verification_reads_but_never_writes(session: Session, tree: Tree) -> None:
    before = snapshot(tree.ws)
    with pytest.raises(PatchError, match=r"src/app\.py: hunk 1 of 1"):
        plan(session, "*** Update File: README.md", "@@", "-world", "+x",
             "*** Update File: src/app.py", "@@", "-    return a * b", "+    return 0",
             "*** Delete File: src/old.py")
    assert snapshot(tree.ws) == before

"""The `apply_patch` format: parse, verify against the current files, and plan atomic edits.

Pure: nothing here touches the filesystem. `plan_patch` reads through a callable
and returns the edits for `sandbox.Session.apply_edits`, which applies all of
them or none. Error messages are written for the model that produced the patch:
each names the patch line (or the file and hunk) and what was expected, so the
next attempt can fix exactly that.

Grammar (REFERENCE section 8)::

    *** Begin Patch
    *** Add File: path          then one or more "+line"
    *** Delete File: path       nothing after it
    *** Update File: path       optionally "*** Move to: new/path", then hunks:
    @@ [scope text]             stackable; then " ctx", "-old", "+new" lines,
    *** End of File             optional, anchors the hunk at the end of the file
    *** End Patch
"""

from __future__ import annotations

import dataclasses
import difflib
import posixpath
import re
import shlex
from collections.abc import Callable
from typing import Any, Literal

BEGIN = "*** Begin Patch"
END = "*** End Patch"
ADD = "*** Add File: "
DELETE = "*** Delete File: "
UPDATE = "*** Update File: "
MOVE = "*** Move to: "
EOF_MARK = "*** End of File"
PATCH_COMMANDS = frozenset({"apply_patch", "applypatch"})
SHELLS = frozenset({"bash", "sh", "zsh", "dash"})

ChangeKind = Literal["add", "delete", "update", "move"]


class PatchError(ValueError):
    """The patch is malformed or does not fit the files; the message tells the model what to fix."""


# ---------------------------------------------------------------------------------------------- the parsed patch


@dataclasses.dataclass(frozen=True)
class HunkLine:
    """One body line of a hunk: ' ' context, '-' removed, '+' added."""

    op: Literal[" ", "-", "+"]
    text: str


@dataclasses.dataclass(frozen=True)
class Hunk:
    """One `@@` hunk. `scopes` are the `@@ text` headers, searched for in order before the body."""

    scopes: tuple[str, ...]
    lines: tuple[HunkLine, ...]
    end_of_file: bool
    lineno: int  # patch line of the hunk's first header (or first body line)

    @property
    def old(self) -> list[str]:
        """The lines the file must contain (context and removed), in order."""
        return [ln.text for ln in self.lines if ln.op != "+"]

    @property
    def new(self) -> list[str]:
        """The lines that replace them (context and added)."""
        return [ln.text for ln in self.lines if ln.op != "-"]


@dataclasses.dataclass(frozen=True)
class AddFile:
    path: str
    content: str
    lineno: int


@dataclasses.dataclass(frozen=True)
class DeleteFile:
    path: str
    lineno: int


@dataclasses.dataclass(frozen=True)
class UpdateFile:
    path: str
    move_to: str | None
    hunks: tuple[Hunk, ...]
    lineno: int


FileOp = AddFile | DeleteFile | UpdateFile


@dataclasses.dataclass(frozen=True)
class Patch:
    """A parsed patch: file operations in patch order."""

    ops: tuple[FileOp, ...]


# ---------------------------------------------------------------------------------------------- unwrapping


_HEREDOC_RE = re.compile(
    r"""^\s*(?:cd\s+(?P<cd>'[^']*'|"[^"$`\\]*"|[^\s;&|<>'"$`\\]+)\s*&&\s*)?"""
    r"""(?P<cmd>[\w./-]*?apply_?patch)\s*<<(?P<dash>-?)\s*(?P<q>['"]?)(?P<delim>[A-Za-z_][\w-]*)(?P=q)[ \t]*\n""",
)
_QUOTED_RE = re.compile(
    r"""^\s*(?:cd\s+(?P<cd>'[^']*'|"[^"$`\\]*"|[^\s;&|<>'"$`\\]+)\s*&&\s*)?(?P<cmd>[\w./-]*?apply_?patch)\s+(?=['"])""",
)


@dataclasses.dataclass(frozen=True)
class PatchInvocation:
    """A patch found in a shell command, with the directory a leading `cd dir &&` switched to (else None)."""

    patch: str
    cd: str | None


def _unquote_word(word: str | None) -> str | None:
    if word is None:
        return None
    if len(word) >= 2 and word[0] == word[-1] and word[0] in "'\"":
        return word[1:-1]
    return word


def _is_patch_command(word: str) -> bool:
    return posixpath.basename(word) in PATCH_COMMANDS


def _unwrap_script(script: str) -> tuple[PatchInvocation, int] | None:
    """`[cd d &&] apply_patch <<'EOF' ... EOF` or `[cd d &&] apply_patch '...'` → (invocation, body's first line).

    Only a lone invocation counts: anything after the heredoc delimiter or the
    quoted argument (another command) makes it not a plain patch call.
    """
    m = _HEREDOC_RE.match(script)
    if m and _is_patch_command(m["cmd"]):
        delim, rest = m["delim"], script[m.end():]
        lines = rest.split("\n")
        for i, line in enumerate(lines):
            probe = line.rstrip("\r")
            if m["dash"]:
                probe = probe.lstrip("\t")
            if probe == delim:
                if "\n".join(lines[i + 1:]).strip():
                    return None
                body = "\n".join(lines[:i])
                return PatchInvocation(body, _unquote_word(m["cd"])), script[:m.end()].count("\n") + 1
        return None
    m = _QUOTED_RE.match(script)
    if m and _is_patch_command(m["cmd"]):
        try:
            words = shlex.split(script[m.end():], posix=True)
        except ValueError:
            return None
        if len(words) != 1:
            return None
        return PatchInvocation(words[0], _unquote_word(m["cd"])), script[:m.end()].count("\n") + 1
    return None


def parse_patch_invocation(argv: list[str]) -> PatchInvocation | None:
    """Recognise a patch passed as a command: `apply_patch PATCH`, or a shell `-c`/`-lc` script invoking it.

    Returns the patch text and the `cd` directory (relative to the command's cwd)
    the paths are relative to, so the agent can route the call to the patch tool.
    """
    if len(argv) == 2 and _is_patch_command(argv[0]):
        return PatchInvocation(argv[1], None)
    if len(argv) == 3 and posixpath.basename(argv[0]) in SHELLS and argv[1] in ("-c", "-lc"):
        found = _unwrap_script(argv[2])
        return found[0] if found else None
    return None


def extract_patch_from_command(argv: list[str]) -> str | None:
    """The patch text if `argv` is an apply_patch invocation (see `parse_patch_invocation`), else None."""
    found = parse_patch_invocation(argv)
    return found.patch if found else None


# ---------------------------------------------------------------------------------------------- parsing


def _clean_path(raw: str, lineno: int, what: str) -> str:
    """A normalised relative path, or PatchError: the tool resolves paths against the workspace only."""
    path = raw.strip()
    if not path:
        raise PatchError(f"line {lineno}: expected a file path after '{what}'")
    if "\0" in path:
        raise PatchError(f"line {lineno}: the path {path!r} contains a NUL character")
    if path.startswith(("/", "~", "\\")) or re.match(r"^[A-Za-z]:[\\/]", path):
        raise PatchError(f"line {lineno}: {path!r} is absolute; use a path relative to the workspace root")
    norm = posixpath.normpath(path)
    if norm == ".." or norm.startswith("../"):
        raise PatchError(f"line {lineno}: {path!r} leaves the workspace ('..'); use a path inside it")
    if norm == "." or path.endswith("/"):
        raise PatchError(f"line {lineno}: {path!r} is a directory, not a file path")
    return norm


def _show(line: str) -> str:
    return repr(line if len(line) <= 80 else line[:77] + "...")


def _split_envelope(text: str) -> tuple[list[str], int]:
    """The patch lines (CR stripped) and the line number of the first one in `text`."""
    body, offset = text, 0
    stripped = text.strip()
    if not stripped.startswith(BEGIN):
        found = _unwrap_script(text)
        if found is not None:
            body, offset = found[0].patch, found[1] - 1
        elif re.match(r"^(?:cd\s.*&&\s*)?\S*apply_?patch\b", stripped):
            raise PatchError("line 1: could not unwrap the apply_patch invocation: expected "
                             "`apply_patch <<'EOF'`, the patch, then a line `EOF` with nothing after it "
                             "(or simply the patch text starting with '*** Begin Patch')")
    lead = len(body) - len(body.lstrip())
    offset += body[:lead].count("\n")
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in body.strip().split("\n")]
    return lines, offset + 1


def parse_patch(text: str) -> Patch:
    """Parse patch text (optionally wrapped in `apply_patch <<'EOF' ... EOF`) into a `Patch`.

    Raises PatchError naming the line number and what was expected there.
    """
    lines, first = _split_envelope(text)

    def no(i: int) -> int:
        return first + i

    if not lines or lines == [""]:
        raise PatchError("line 1: the patch is empty; expected '*** Begin Patch'")
    if lines[0].rstrip() != BEGIN:
        raise PatchError(f"line {no(0)}: expected '{BEGIN}' as the first line, got {_show(lines[0])}")
    if len(lines) < 2 or lines[-1].rstrip() != END:
        raise PatchError(f"line {no(len(lines) - 1)}: expected '{END}' as the last line, "
                         f"got {_show(lines[-1]) if len(lines) > 1 else 'the end of the patch'}")
    ops: list[FileOp] = []
    i, last = 1, len(lines) - 1
    while i < last:
        line = lines[i]
        if line.startswith(ADD):
            path = _clean_path(line[len(ADD):], no(i), ADD.strip())
            start, i = i, i + 1
            content: list[str] = []
            while i < last and lines[i].startswith("+"):
                content.append(lines[i][1:])
                i += 1
            if not content:
                got = _show(lines[i]) if i < last else f"'{END}'"
                raise PatchError(f"line {no(i)}: '*** Add File: {path}' (line {no(start)}) needs at least one "
                                 f"'+' content line, got {got}")
            ops.append(AddFile(path, "\n".join(content) + "\n", no(start)))
        elif line.startswith(DELETE):
            ops.append(DeleteFile(_clean_path(line[len(DELETE):], no(i), DELETE.strip()), no(i)))
            i += 1
        elif line.startswith(UPDATE):
            path = _clean_path(line[len(UPDATE):], no(i), UPDATE.strip())
            start, i = i, i + 1
            move_to = None
            if i < last and lines[i].startswith(MOVE):
                move_to = _clean_path(lines[i][len(MOVE):], no(i), MOVE.strip())
                i += 1
            hunks, i = _parse_hunks(lines, i, last, no, path)
            if not hunks:
                got = _show(lines[i]) if i < last else f"'{END}'"
                raise PatchError(f"line {no(i)}: '*** Update File: {path}' (line {no(start)}) needs at least one "
                                 f"hunk ('@@' then ' ', '-', '+' lines), got {got}")
            ops.append(UpdateFile(path, None if move_to == path else move_to, tuple(hunks), no(start)))
        elif line.strip() == "":
            i += 1  # blank lines between file sections are harmless
        elif line.rstrip() == END:
            raise PatchError(f"line {no(i)}: '{END}' must be the last line; found it with more lines after it")
        else:
            hint = ""
            if line.startswith("+") and ops and isinstance(ops[-1], AddFile):
                hint = " (every line of an added file, blank ones too, must start with '+')"
            raise PatchError(f"line {no(i)}: expected a file header ('{ADD}<path>', '{DELETE}<path>' or "
                             f"'{UPDATE}<path>'), got {_show(line)}{hint}")
    if not ops:
        raise PatchError(f"line {no(last)}: the patch has no file operations between '{BEGIN}' and '{END}'")
    return Patch(tuple(ops))


_UNIFIED_RANGE = re.compile(r"^@@ -\d+(?:,\d+)? \+\d+(?:,\d+)? @@(.*)$")


def _scope_text(header: str) -> str:
    """The scope of an `@@` header; a unified-diff range (`@@ -3,4 +3,5 @@ def f():`) keeps only its trailing text."""
    m = _UNIFIED_RANGE.match(header.rstrip())
    return (m.group(1) if m else header[2:]).strip()


def _is_file_header(line: str) -> bool:
    return line.startswith((ADD, DELETE, UPDATE)) or line.rstrip() == END


def _parse_hunks(lines: list[str], i: int, last: int, no: Callable[[int], int],
                 path: str) -> tuple[list[Hunk], int]:
    """Hunks from line i until the next file header; returns them and the index after."""
    hunks: list[Hunk] = []
    while i < last and not _is_file_header(lines[i]):
        if lines[i].strip() == "":
            i += 1  # blank lines between hunks (or after '*** End of File') are separators
            continue
        start = i
        scopes: list[str] = []
        while i < last and lines[i].startswith("@@"):
            scope = _scope_text(lines[i])
            if scope:
                scopes.append(scope)
            i += 1
        if start == i and hunks:
            raise PatchError(f"line {no(i)}: expected '@@' to start the next hunk of {path}, a new file header or "
                             f"'{END}', got {_show(lines[i])}")
        body: list[HunkLine] = []
        eof = False
        while i < last:
            line = lines[i]
            if line.startswith("@@") or _is_file_header(line):
                break
            if line.rstrip() == EOF_MARK:
                eof = True
                i += 1
                break
            if line == "":
                body.append(HunkLine(" ", ""))  # a blank context line whose leading space was trimmed
            elif line[0] in " -+":
                body.append(HunkLine(line[0], line[1:]))  # type: ignore[arg-type]
            else:
                raise PatchError(f"line {no(i)}: expected a hunk line of {path} starting with ' ' (context), "
                                 f"'-' (remove) or '+' (add), or '@@', '{EOF_MARK}', a file header or '{END}'; "
                                 f"got {_show(line)}")
            i += 1
        while not eof and body and body[-1] == HunkLine(" ", ""):
            body.pop()  # trailing blank lines are usually separators; dropping context never changes the result
        if not any(ln.op != " " for ln in body):
            what = "no lines" if not body else "only context lines (no '-' or '+')"
            raise PatchError(f"line {no(start)}: hunk {len(hunks) + 1} of {path} has {what}; "
                             f"each hunk must change something")
        hunks.append(Hunk(tuple(scopes), tuple(body), eof, no(start)))
    return hunks, i


# ---------------------------------------------------------------------------------------------- file text model


_LINE_RE = re.compile(r"[^\n]*\n|[^\n]+")


@dataclasses.dataclass
class _Text:
    """A file as (content, line ending) pairs, so untouched lines keep their exact endings."""

    lines: list[tuple[str, str]]
    eol: str
    final_newline: bool

    @classmethod
    def parse(cls, text: str) -> _Text:
        lines: list[tuple[str, str]] = []
        crlf = lf = 0
        for m in _LINE_RE.finditer(text):
            raw = m.group()
            if raw.endswith("\r\n"):
                lines.append((raw[:-2], "\r\n"))
                crlf += 1
            elif raw.endswith("\n"):
                lines.append((raw[:-1], "\n"))
                lf += 1
            else:
                lines.append((raw, ""))
        return cls(lines, "\r\n" if crlf > lf else "\n", not lines or lines[-1][1] != "")

    def render(self) -> str:
        out = []
        n = len(self.lines)
        for k, (content, end) in enumerate(self.lines):
            if k < n - 1:
                end = end or self.eol
            elif self.final_newline:
                end = end or self.eol
            else:
                end = ""
            out.append(content + end)
        return "".join(out)


_PUNCT = str.maketrans({
    **{c: "-" for c in "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"},
    **{c: "'" for c in "\u2018\u2019\u201a\u201b\u2032"},
    **{c: '"' for c in "\u201c\u201d\u201e\u201f\u2033"},
    **{c: " " for c in "\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
                        "\u202f\u205f\u3000\t"},
    **{c: None for c in "\ufeff\u200b\u200c\u200d\u2060"},
})

# Loosening levels, tried in order: each maps a line to the key it is compared by.
_LEVELS: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("exact", lambda s: s),
    ("trailing whitespace ignored", str.rstrip),
    ("surrounding whitespace ignored", str.strip),
    ("unicode punctuation normalized", lambda s: " ".join(s.translate(_PUNCT).split())),
)


def _find(keys: list[str], pattern: list[str], start: int, stop: int) -> int | None:
    """First index in [start, stop] where `pattern` matches `keys` (already normalised)."""
    n = len(pattern)
    first = pattern[0]
    for k in range(start, min(stop, len(keys) - n) + 1):
        if keys[k] == first and keys[k:k + n] == pattern:
            return k
    return None


class _Matcher:
    """Per-level normalised views of a file's lines, computed lazily."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self._keys: dict[int, list[str]] = {}

    def keys(self, level: int) -> list[str]:
        if level not in self._keys:
            self._keys[level] = [_LEVELS[level][1](s) for s in self.lines]
        return self._keys[level]

    def seek(self, pattern: list[str], start: int, eof: bool) -> tuple[int, int] | None:
        """(index, level) of the first match at or after `start`; an end-anchored hunk tries the end first."""
        n = len(self.lines)
        if eof and n - len(pattern) >= start:
            for level, (_, norm) in enumerate(_LEVELS):
                if self.keys(level)[n - len(pattern):] == [norm(p) for p in pattern]:
                    return n - len(pattern), level
        for level, (_, norm) in enumerate(_LEVELS):
            found = _find(self.keys(level), [norm(p) for p in pattern], start, n)
            if found is not None:
                return found, level
        return None

    def seek_line(self, text: str, start: int) -> int | None:
        """A scope line: the first at or after `start`, else the nearest before it (the enclosing scope)."""
        for level, (_, norm) in enumerate(_LEVELS):
            keys, want = self.keys(level), norm(text)
            for k in range(start, len(keys)):
                if keys[k] == want:
                    return k
        for level, (_, norm) in enumerate(_LEVELS):
            keys, want = self.keys(level), norm(text)
            for k in range(min(start, len(keys)) - 1, -1, -1):
                if keys[k] == want:
                    return k
        return None

    def closest(self, pattern: list[str]) -> tuple[int, int] | None:
        """(index, lines matching) of the window most like `pattern` (loosest level), to point the model at it."""
        keys = self.keys(len(_LEVELS) - 1)
        norm = _LEVELS[-1][1]
        want = [norm(p) for p in pattern]
        if not keys or len(keys) * len(want) > 4_000_000:
            return None
        best: tuple[int, int] | None = None
        for k in range(max(1, len(keys) - len(want) + 1)):
            score = sum(1 for a, b in zip(keys[k:k + len(want)], want, strict=False) if a == b and b)
            if score and (best is None or score > best[1]):
                best = (k, score)
        return best


def _quote_lines(lines: list[str], limit: int = 12) -> str:
    shown = [f"    |{ln}" for ln in lines[:limit]]
    if len(lines) > limit:
        shown.append(f"    ... ({len(lines) - limit} more)")
    return "\n".join(shown)


def _apply_hunks(path: str, text: str, hunks: tuple[Hunk, ...]) -> str:
    """The new text of `path` after every hunk, or PatchError naming the hunk that does not fit."""
    doc = _Text.parse(text)
    contents = [c for c, _ in doc.lines]
    matcher = _Matcher(contents)
    cursor = prev_start = 0
    prev_end: int | None = None
    spans: list[tuple[int, int, Hunk]] = []
    total = len(hunks)
    for number, hunk in enumerate(hunks, 1):
        where = f"{path}: hunk {number} of {total} (patch line {hunk.lineno})"
        search_from = cursor
        scope_at: int | None = None
        for scope in hunk.scopes:
            found = matcher.seek_line(scope, search_from)
            if found is None:
                raise PatchError(f"{where}: the '@@ {scope}' line was not found in the file; use a line that "
                                 f"exists verbatim (e.g. the enclosing def/class line) or a bare '@@'")
            scope_at = found
            search_from = found + 1
        search_from = max(search_from, cursor)
        old = hunk.old
        if not old:
            # Pure insertion: right after the scope line if one was given, else at the end of the file.
            at = scope_at + 1 if scope_at is not None else len(contents)
            at = max(at, cursor)
            spans.append((at, 0, hunk))
            cursor = at
            continue
        hit = matcher.seek(old, search_from, hunk.end_of_file)
        if hit is None:
            earlier = matcher.seek(old, 0, hunk.end_of_file) if search_from else None
            if earlier is not None and prev_end is not None and earlier[0] + len(old) > prev_start:
                raise PatchError(f"{where}: its lines match at file line {earlier[0] + 1}, which overlaps hunk "
                                 f"{number - 1} (file lines {prev_start + 1}-{prev_end}); merge the two hunks into one")
            if earlier is not None:
                raise PatchError(f"{where}: its lines match only at file line {earlier[0] + 1}, before the previous "
                                 f"hunk or scope; hunks must be in file order")
            msg = f"{where}: could not find these lines"
            if search_from:
                msg += f" at or after file line {search_from + 1}"
            msg += f" (context and '-' lines, in order):\n{_quote_lines(old)}"
            near = matcher.closest(old)
            if near is not None:
                k, score = near
                msg += (f"\nclosest: file line {k + 1} ({score} of {len(old)} lines match); the file there reads:\n"
                        f"{_quote_lines(contents[k:k + len(old)])}")
            msg += "\nre-read the file and copy the context lines exactly"
            raise PatchError(msg)
        at, _level = hit
        if prev_end is not None and at < prev_end:
            raise PatchError(f"{where}: overlaps hunk {number - 1}; merge them into one hunk")
        spans.append((at, len(old), hunk))
        prev_start, cursor = at, at + len(old)
        prev_end = cursor
    for at, length, hunk in reversed(spans):
        replaced: list[tuple[str, str]] = []
        k = at
        for ln in hunk.lines:
            if ln.op == "+":
                replaced.append((ln.text, doc.eol))
            else:
                if ln.op == " ":
                    replaced.append(doc.lines[k])  # keep the file's own line (whitespace, ending)
                k += 1
        doc.lines[at:at + length] = replaced
    return doc.render()


# ---------------------------------------------------------------------------------------------- planning


@dataclasses.dataclass(frozen=True)
class FileChange:
    """One file operation of the plan; `overwrote` marks an add or move onto an existing file."""

    path: str
    kind: ChangeKind
    move_to: str | None = None
    added: int = 0
    removed: int = 0
    overwrote: bool = False


def _lines(text: str, keepends: bool = False) -> list[str]:
    """Split on "\n" only (str.splitlines also splits on form feeds and other separators)."""
    found = _LINE_RE.findall(text)
    return found if keepends else [ln.rstrip("\n").removesuffix("\r") for ln in found]


def _line_counts(before: str, after: str) -> tuple[int, int]:
    a, b = _lines(before), _lines(after)
    added = removed = 0
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag != "equal":
            removed += i2 - i1
            added += j2 - j1
    return added, removed


@dataclasses.dataclass
class PatchPlan:
    """Verified edits ready for `Session.apply_edits(plan.edits, parents=True)` (all or nothing).

    `edits` holds the final state of each touched path, in first-touch order:
    {"path", "content"} to write/create, {"path", "delete": True} to remove.
    """

    edits: list[dict[str, Any]]
    changes: list[FileChange]
    _diffs: list[tuple[str, str, str, str]] = dataclasses.field(default_factory=list, repr=False)

    @property
    def paths(self) -> list[str]:
        """Every path the edits touch."""
        return [e["path"] for e in self.edits]

    def summary(self) -> str:
        """One line per change (`A`, `M`, `D`, `R old -> new`) with +/- line counts."""
        out = []
        for c in self.changes:
            counts = " ".join(s for s in (f"+{c.added}" if c.added else "", f"-{c.removed}" if c.removed else "") if s)
            note = ", replaced an existing file" if c.overwrote else ""
            tail = f" ({counts or 'no line changes'}{note})"
            if c.kind == "add":
                out.append(f"A {c.path}{tail}")
            elif c.kind == "delete":
                out.append(f"D {c.path}{tail}")
            elif c.kind == "move":
                out.append(f"R {c.path} -> {c.move_to}{tail}")
            else:
                out.append(f"M {c.path}{tail}")
        return "\n".join(out)

    def diff(self) -> str:
        """A unified diff of every change, for display."""
        parts = []
        for old_name, new_name, before, after in self._diffs:
            for line in difflib.unified_diff(_lines(before, True), _lines(after, True), old_name, new_name):
                parts.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
        return "".join(parts)


def plan_patch(patch: Patch, read: Callable[[str], str | None]) -> PatchPlan:
    """Check every hunk of every file against `read(relpath)` (text, or None when missing) and plan the edits.

    Operations apply in patch order over a virtual view, so a later section sees
    earlier ones (update then move, add then update). Nothing is written here: a
    PatchError for any file means the caller applies nothing.
    """
    original: dict[str, str | None] = {}
    state: dict[str, str | None] = {}
    order: list[str] = []

    def current(path: str) -> str | None:
        if path not in state:
            try:
                text = read(path)
            except (OSError, UnicodeDecodeError) as exc:
                raise PatchError(f"{path}: cannot read it ({exc})") from exc
            original[path] = state[path] = text
            order.append(path)
        return state[path]

    changes: list[FileChange] = []
    diffs: list[tuple[str, str, str, str]] = []
    for op in patch.ops:
        if isinstance(op, AddFile):
            old = current(op.path)
            state[op.path] = op.content
            added, removed = _line_counts(old or "", op.content)
            changes.append(FileChange(op.path, "add", None, added, removed, overwrote=old is not None))
            diffs.append(("/dev/null" if old is None else f"a/{op.path}", f"b/{op.path}", old or "", op.content))
        elif isinstance(op, DeleteFile):
            old = current(op.path)
            if old is None:
                raise PatchError(f"line {op.lineno}: cannot delete {op.path}: no such file")
            state[op.path] = None
            changes.append(FileChange(op.path, "delete", None, 0, len(_lines(old))))
            diffs.append((f"a/{op.path}", "/dev/null", old, ""))
        else:
            old = current(op.path)
            if old is None:
                raise PatchError(f"line {op.lineno}: cannot update {op.path}: no such file (use '{ADD}{op.path}' "
                                 f"to create it)")
            new = _apply_hunks(op.path, old, op.hunks)
            added, removed = _line_counts(old, new)
            if op.move_to is None:
                state[op.path] = new
                changes.append(FileChange(op.path, "update", None, added, removed))
                diffs.append((f"a/{op.path}", f"b/{op.path}", old, new))
            else:
                target = current(op.move_to)
                state[op.path] = None
                state[op.move_to] = new
                changes.append(FileChange(op.path, "move", op.move_to, added, removed, overwrote=target is not None))
                diffs.append((f"a/{op.path}", f"b/{op.move_to}", old, new))
    edits: list[dict[str, Any]] = []
    for path in order:
        before, after = original[path], state[path]
        if after == before:
            continue
        edits.append({"path": path, "delete": True} if after is None else {"path": path, "content": after})
    return PatchPlan(edits, changes, diffs)


def plan_patch_text(text: str, read: Callable[[str], str | None]) -> PatchPlan:
    """`plan_patch(parse_patch(text), read)`."""
    return plan_patch(parse_patch(text), read)

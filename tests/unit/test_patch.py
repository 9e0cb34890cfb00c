"""The apply_patch format (agent/patch.py): grammar, matching, planning, shell-invocation extraction."""

from __future__ import annotations

import re

import pytest

from agent.patch import (
    AddFile,
    DeleteFile,
    FileChange,
    PatchError,
    UpdateFile,
    extract_patch_from_command,
    parse_patch,
    parse_patch_invocation,
    plan_patch,
    plan_patch_text,
)


def patch(*body: str) -> str:
    return "\n".join(["*** Begin Patch", *body, "*** End Patch"]) + "\n"


def apply(files: dict[str, str], text: str) -> dict[str, str]:
    """Plan against `files` and apply the edits to a copy, as the session would."""
    plan = plan_patch(parse_patch(text), files.get)
    out = dict(files)
    for edit in plan.edits:
        if edit.get("delete"):
            del out[edit["path"]]
        else:
            out[edit["path"]] = edit["content"]
    return out


def error_of(text: str, files: dict[str, str] | None = None) -> str:
    with pytest.raises(PatchError) as err:
        plan_patch_text(text, (files or {}).get)
    return str(err.value)


# ---------------------------------------------------------------------------------------------- grammar


def test_parse_all_operations() -> None:
    p = parse_patch(patch(
        "*** Add File: new.txt", "+one", "+two",
        "*** Delete File: old.txt",
        "*** Update File: src/a.py", "*** Move to: src/b.py",
        "@@ class A:", "@@     def f(self):", " ctx", "-old", "+new",
        "@@", "-x", "+y", "*** End of File",
    ))
    add, delete, update = p.ops
    assert add == AddFile("new.txt", "one\ntwo\n", 2)
    assert delete == DeleteFile("old.txt", 5)
    assert isinstance(update, UpdateFile) and (update.path, update.move_to, update.lineno) == ("src/a.py",
                                                                                            "src/b.py", 6)
    h1, h2 = update.hunks
    assert h1.scopes == ("class A:", "def f(self):") and not h1.end_of_file and h1.lineno == 8
    assert (h1.old, h1.new) == (["ctx", "old"], ["ctx", "new"])
    assert h2.scopes == () and h2.end_of_file and (h2.old, h2.new) == (["x"], ["y"])


def test_parse_tolerates_whitespace_crlf_and_a_missing_first_header() -> None:
    text = "\n\n  " + patch("*** Update File: a", " ctx", "-x", "+y").replace("\n", "\r\n") + "  \n\n"
    (op,) = parse_patch(text).ops
    assert isinstance(op, UpdateFile) and op.hunks[0].old == ["ctx", "x"]
    assert (op.lineno, op.hunks[0].lineno) == (4, 5)  # counted in the text as given


def test_blank_line_in_hunk_is_empty_context_and_trailing_blanks_are_dropped() -> None:
    (op,) = parse_patch(patch("*** Update File: a", "@@", " a", "", "-b", "+c", "", "")).ops
    assert isinstance(op, UpdateFile) and op.hunks[0].old == ["a", "", "b"]


@pytest.mark.parametrize(("text", "line", "expect"), [
    ("", 1, "empty"),
    ("   \n\n", 1, "empty"),
    ("hello\n*** End Patch", 1, "Begin Patch"),
    ("*** Begin Patch", 1, "End Patch"),
    ("*** Begin Patch\n*** Add File: a\n+x", 3, "End Patch"),
    ("*** Begin Patch\n*** End Patch", 2, "no file operations"),
    ("*** Begin Patch\n\n*** End Patch", 3, "no file operations"),
    (patch("*** Frobnicate File: a"), 2, "expected a file header"),
    (patch("some text"), 2, "expected a file header"),
    (patch("*** Add File: a"), 3, "at least one '+'"),
    (patch("*** Add File: a", "no plus"), 3, "at least one '+'"),
    (patch("*** Add File: a", "+x", "", "+y"), 5, "must start with '+'"),
    (patch("*** Update File: a"), 3, "at least one hunk"),
    (patch("*** Update File: a", "*** Move to: b"), 4, "at least one hunk"),
    (patch("*** Update File: a", "@@"), 3, "has no lines"),
    (patch("*** Update File: a", "@@", " only", " context"), 3, "only context lines"),
    (patch("*** Update File: a", "@@ def f", "*** End of File"), 3, "has no lines"),
    (patch("*** Update File: a", "@@", "-x", "junk"), 5, "expected a hunk line"),
    (patch("*** Update File: a", "@@", "-x", "*** End of File", "-y"), 6, "expected '@@'"),
    (patch("*** Delete File: a", "-x"), 3, "expected a file header"),
    ("*** Begin Patch\n*** End Patch\n*** Add File: a\n+x\n*** End Patch", 2, "must be the last line"),
    (patch("*** Add File: "), 2, "expected a file path"),
    (patch("*** Add File: /etc/passwd", "+x"), 2, "absolute"),
    (patch("*** Update File: ~/x", "@@", "-a"), 2, "absolute"),
    (patch("*** Delete File: C:\\x"), 2, "absolute"),
    (patch("*** Delete File: ../x"), 2, "leaves the workspace"),
    (patch("*** Delete File: a/../../x"), 2, "leaves the workspace"),
    (patch("*** Update File: a", "*** Move to: ../b", "@@", "-x"), 3, "leaves the workspace"),
    (patch("*** Update File: a", "*** Move to: /b", "@@", "-x"), 3, "absolute"),
    (patch("*** Delete File: ."), 2, "directory"),
    (patch("*** Delete File: src/"), 2, "directory"),
])
def test_grammar_errors_name_the_line(text: str, line: int, expect: str) -> None:
    with pytest.raises(PatchError) as err:
        parse_patch(text)
    msg = str(err.value)
    assert msg.startswith(f"line {line}:"), msg
    assert expect in msg


def test_error_line_numbers_count_from_the_original_text() -> None:
    text = "\n\napply_patch <<'EOF'\n*** Begin Patch\n*** Update File: a\n@@\n-x\nbogus\n*** End Patch\nEOF\n"
    with pytest.raises(PatchError, match=r"^line 8:"):
        parse_patch(text)


def test_blank_separators_and_unified_diff_ranges() -> None:
    op, delete = parse_patch(patch("*** Update File: a", "*** Move to: b", "", "@@ -1,3 +1,3 @@ def f():", "-x",
                                   "+y", "*** End of File", "", "@@ -10,2 +10,2 @@", "-z", "+w", "",
                                   "*** Delete File: c")).ops
    assert delete == DeleteFile("c", 14)
    assert isinstance(op, UpdateFile) and [h.scopes for h in op.hunks] == [("def f():",), ()]
    assert [h.old for h in op.hunks] == [["x"], ["z"]]


def test_unclosed_heredoc_is_explained() -> None:
    with pytest.raises(PatchError, match=r"^line 1: could not unwrap"):
        parse_patch("apply_patch <<'EOF'\n*** Begin Patch\n*** Add File: a\n+x\n*** End Patch\n")


def test_paths_are_normalised() -> None:
    (op,) = parse_patch(patch("*** Add File: ./src//a/../b.py", "+x")).ops
    assert op.path == "src/b.py"


def test_move_onto_itself_is_an_update() -> None:
    (op,) = parse_patch(patch("*** Update File: a", "*** Move to: ./a", "@@", "-x", "+y")).ops
    assert isinstance(op, UpdateFile) and op.move_to is None


# ---------------------------------------------------------------------------------------------- matching


SRC = "def f():\n    return 1\n\n\ndef g():\n    x = 1\n    return x\n"


def test_exact_match() -> None:
    out = apply({"a.py": SRC}, patch("*** Update File: a.py", "@@", " def g():", "-    x = 1", "+    x = 2"))
    assert out["a.py"] == SRC.replace("x = 1", "x = 2")


def test_trailing_whitespace_ignored() -> None:
    files = {"a.py": "a  \nb\t\nc\n"}
    out = apply(files, patch("*** Update File: a.py", "@@", " a", "-b", "+B"))
    assert out["a.py"] == "a  \nB\nc\n"  # the context line keeps its own trailing spaces


def test_surrounding_whitespace_ignored() -> None:
    files = {"a.py": "if x:\n        y = 1\n    z = 2\n"}
    out = apply(files, patch("*** Update File: a.py", "@@", " if x:", "-    y = 1", "+    y = 3"))
    assert out["a.py"] == "if x:\n    y = 3\n    z = 2\n"


def test_unicode_punctuation_normalized() -> None:
    files = {"t.md": "It\u2019s a \u201cquote\u201d \u2014 ok\u00a0here\nnext\n"}
    out = apply(files, patch("*** Update File: t.md", "@@", "-It's a \"quote\" - ok here", "+plain", " next"))
    assert out["t.md"] == "plain\nnext\n"


def test_exact_match_preferred_over_loose_one() -> None:
    files = {"a": "x = 1  \nx = 1\n"}
    out = apply(files, patch("*** Update File: a", "@@", "-x = 1", "+x = 2"))
    assert out["a"] == "x = 1  \nx = 2\n"


def test_scope_header_locates_the_hunk() -> None:
    files = {"a.py": "def f():\n    return 0\n\ndef g():\n    return 0\n"}
    out = apply(files, patch("*** Update File: a.py", "@@ def g():", "-    return 0", "+    return 7"))
    assert out["a.py"] == "def f():\n    return 0\n\ndef g():\n    return 7\n"


def test_stacked_scope_headers() -> None:
    src = ("class A:\n    def run(self):\n        return 0\n"
           "class B:\n    def other(self):\n        return 0\n    def run(self):\n        return 0\n")
    out = apply({"m.py": src}, patch("*** Update File: m.py", "@@ class B:", "@@     def run(self):",
                                     "-        return 0", "+        return 2"))
    assert out["m.py"] == src[:src.rindex("return 0")] + "return 2\n"


def test_scope_header_not_found() -> None:
    msg = error_of(patch("*** Update File: a.py", "@@ def nope():", "-x", "+y"), {"a.py": SRC})
    assert "a.py: hunk 1 of 1 (patch line 3)" in msg and "'@@ def nope():'" in msg and "not found" in msg


def test_scope_header_of_a_later_hunk_may_repeat_an_earlier_scope() -> None:
    src = "def f():\n    a = 1\n    b = 2\n    c = 3\n    d = 4\n"
    out = apply({"a.py": src}, patch("*** Update File: a.py", "@@ def f():", "-    a = 1", "+    a = 10",
                                     "@@ def f():", "-    d = 4", "+    d = 40"))
    assert out["a.py"] == src.replace("a = 1", "a = 10").replace("d = 4", "d = 40")


def test_end_of_file_anchor_prefers_the_end() -> None:
    files = {"a": "x\nend\nx\nend\n"}
    out = apply(files, patch("*** Update File: a", "@@", " x", "-end", "+END", "*** End of File"))
    assert out["a"] == "x\nend\nx\nEND\n"
    out = apply(files, patch("*** Update File: a", "@@", " x", "-end", "+END"))
    assert out["a"] == "x\nEND\nx\nend\n"


def test_end_of_file_anchor_falls_back_to_search() -> None:
    out = apply({"a": "x\ny\nz\n"}, patch("*** Update File: a", "@@", "-x", "+X", "*** End of File"))
    assert out["a"] == "X\ny\nz\n"


def test_pure_insertion_at_end_and_after_scope() -> None:
    out = apply({"a": "one\ntwo"}, patch("*** Update File: a", "@@", "+three", "*** End of File"))
    assert out["a"] == "one\ntwo\nthree"  # still no final newline
    out = apply({"a.py": "def f():\n    pass\n"}, patch("*** Update File: a.py", "@@ def f():", "+    '''doc'''"))
    assert out["a.py"] == "def f():\n    '''doc'''\n    pass\n"
    out = apply({"e": ""}, patch("*** Update File: e", "@@", "+first"))
    assert out["e"] == "first\n"


def test_multiple_hunks_in_order() -> None:
    src = "".join(f"line {i}\n" for i in range(1, 21))
    out = apply({"a": src}, patch("*** Update File: a",
                                  "@@", " line 2", "-line 3", "+LINE 3", " line 4",
                                  "@@", " line 9", "-line 10", "+LINE 10",
                                  "@@", "-line 20", "+LINE 20", "*** End of File"))
    assert out["a"] == src.replace("line 3\n", "LINE 3\n").replace("line 10\n", "LINE 10\n").replace(
        "line 20\n", "LINE 20\n")


def test_repeated_context_is_found_after_the_previous_hunk() -> None:
    src = "x = 0\nx = 0\nx = 0\n"
    out = apply({"a": src}, patch("*** Update File: a", "@@", "-x = 0", "+x = 1", "@@", "-x = 0", "+x = 2"))
    assert out["a"] == "x = 1\nx = 2\nx = 0\n"


def test_overlapping_hunks_are_an_error() -> None:
    src = "a\nb\nc\nd\ne\n"
    msg = error_of(patch("*** Update File: f", "@@", " a", "-b", "+B", " c",
                         "@@", " b", "-c", "+C", " d"), {"f": src})
    assert "hunk 2 of 2" in msg and "overlaps hunk 1" in msg and "merge" in msg


def test_out_of_order_hunks_are_an_error() -> None:
    msg = error_of(patch("*** Update File: f", "@@", "-d", "+D", "@@", "-b", "+B"), {"f": "a\nb\nc\nd\n"})
    assert "hunk 2 of 2" in msg and "file order" in msg and "line 2" in msg


def test_context_not_found_names_file_hunk_and_lines() -> None:
    msg = error_of(patch("*** Update File: a.py", "@@", " def g():", "-    x = 1", "+    x = 2",
                         "@@", " def g():", "-    y = 5", "+    y = 6"), {"a.py": SRC})
    assert "a.py: hunk 2 of 2 (patch line 7)" in msg
    assert "    |    y = 5" in msg and "at or after file line" in msg
    assert "closest: file line 5" in msg  # `def g():` matches there


def test_crlf_is_preserved() -> None:
    files = {"w.txt": "a\r\nb\r\nc\r\n"}
    out = apply(files, patch("*** Update File: w.txt", "@@", " a", "-b", "+B", "+B2"))
    assert out["w.txt"] == "a\r\nB\r\nB2\r\nc\r\n"


def test_mixed_line_endings_keep_each_line() -> None:
    out = apply({"m": "a\r\nb\nc\r\nd\r\n"}, patch("*** Update File: m", "@@", " c", "-d", "+D"))
    assert out["m"] == "a\r\nb\nc\r\nD\r\n"


def test_missing_final_newline_is_preserved() -> None:
    out = apply({"n": "a\nb"}, patch("*** Update File: n", "@@", " a", "-b", "+B"))
    assert out["n"] == "a\nB"
    out = apply({"n": "a\nb"}, patch("*** Update File: n", "@@", "-a", "+A"))
    assert out["n"] == "A\nb"
    out = apply({"n": "a\nb\n"}, patch("*** Update File: n", "@@", " a", "-b"))
    assert out["n"] == "a\n"


# ---------------------------------------------------------------------------------------------- whole patches


def test_add_delete_update_move() -> None:
    files = {"old.txt": "bye\n", "src/a.py": "x = 1\ny = 2\n", "keep": "k\n"}
    plan = plan_patch_text(patch(
        "*** Add File: docs/new.md", "+# Title", "+",
        "*** Delete File: old.txt",
        "*** Update File: src/a.py", "*** Move to: src/b.py", "@@", " x = 1", "-y = 2", "+y = 3",
    ), files.get)
    assert plan.edits == [
        {"path": "docs/new.md", "content": "# Title\n\n"},
        {"path": "old.txt", "delete": True},
        {"path": "src/a.py", "delete": True},
        {"path": "src/b.py", "content": "x = 1\ny = 3\n"},
    ]
    assert plan.changes == [
        FileChange("docs/new.md", "add", None, 2, 0),
        FileChange("old.txt", "delete", None, 0, 1),
        FileChange("src/a.py", "move", "src/b.py", 1, 1),
    ]
    assert plan.summary() == ("A docs/new.md (+2)\nD old.txt (-1)\nR src/a.py -> src/b.py (+1 -1)")
    diff = plan.diff()
    assert "--- /dev/null\n+++ b/docs/new.md\n" in diff and "+# Title\n" in diff
    assert "--- a/old.txt\n+++ /dev/null\n" in diff and "-bye\n" in diff
    assert "--- a/src/a.py\n+++ b/src/b.py\n" in diff and "-y = 2\n+y = 3\n" in diff


def test_update_summary_and_diff() -> None:
    plan = plan_patch_text(patch("*** Update File: a", "@@", "-x", "+y", "+z"), {"a": "x\nw"}.get)
    assert plan.summary() == "M a (+2 -1)"
    assert plan.diff().endswith("+z\n w\n\\ No newline at end of file\n")


def test_add_overwrites_an_existing_file_and_says_so() -> None:
    plan = plan_patch_text(patch("*** Add File: a", "+new"), {"a": "old\n"}.get)
    assert plan.edits == [{"path": "a", "content": "new\n"}]
    assert plan.changes == [FileChange("a", "add", None, 1, 1, overwrote=True)]
    assert "replaced an existing file" in plan.summary()


def test_move_onto_an_existing_file_overwrites_it() -> None:
    plan = plan_patch_text(patch("*** Update File: a", "*** Move to: b", "@@", "-x", "+y"),
                           {"a": "x\n", "b": "other\n"}.get)
    assert plan.edits == [{"path": "a", "delete": True}, {"path": "b", "content": "y\n"}]
    assert plan.changes[0].overwrote and "R a -> b" in plan.summary()


def test_missing_files() -> None:
    msg = error_of(patch("*** Update File: nope.py", "@@", "-x", "+y"))
    assert msg.startswith("line 2:") and "nope.py" in msg and "no such file" in msg and "Add File" in msg
    msg = error_of(patch("*** Delete File: nope.py"))
    assert msg.startswith("line 2:") and "cannot delete nope.py" in msg


def test_later_operations_see_earlier_ones() -> None:
    out = apply({}, patch("*** Add File: a", "+one", "*** Update File: a", "@@", "-one", "+two"))
    assert out == {"a": "two\n"}
    plan = plan_patch_text(patch("*** Add File: t", "+x", "*** Delete File: t"), {}.get)
    assert plan.edits == [] and [c.kind for c in plan.changes] == ["add", "delete"]
    out = apply({"a": "1\n"}, patch("*** Update File: a", "*** Move to: b", "@@", "-1", "+2",
                                    "*** Update File: b", "@@", "-2", "+3"))
    assert out == {"b": "3\n"}
    msg = error_of(patch("*** Delete File: a", "*** Update File: a", "@@", "-1", "+2"), {"a": "1\n"})
    assert "cannot update a: no such file" in msg


def test_failure_in_second_of_three_files_plans_nothing() -> None:
    files = {"one.py": "a = 1\n", "two.py": "b = 2\n", "three.py": "c = 3\n"}
    reads: list[str] = []

    def read(path: str) -> str | None:
        reads.append(path)
        return files.get(path)

    with pytest.raises(PatchError) as err:
        plan_patch(parse_patch(patch(
            "*** Update File: one.py", "@@", "-a = 1", "+a = 10",
            "*** Update File: two.py", "@@", "-b = 999", "+b = 20",
            "*** Update File: three.py", "@@", "-c = 3", "+c = 30",
        )), read)
    assert "two.py: hunk 1 of 1" in str(err.value) and "b = 999" in str(err.value)
    assert files == {"one.py": "a = 1\n", "two.py": "b = 2\n", "three.py": "c = 3\n"}
    assert reads == ["one.py", "two.py"]  # stopped there; no plan, so no edits at all


def test_unreadable_file_is_a_patch_error() -> None:
    def read(path: str) -> str | None:
        raise IsADirectoryError(21, "Is a directory", path)

    with pytest.raises(PatchError, match=r"^d: cannot read it"):
        plan_patch_text(patch("*** Delete File: d"), read)


def test_unchanged_result_makes_no_edit() -> None:
    plan = plan_patch_text(patch("*** Update File: a", "@@", "-x", "+x"), {"a": "x\n"}.get)
    assert plan.edits == [] and plan.changes == [FileChange("a", "update", None, 0, 0)]
    assert plan.summary() == "M a (no line changes)"


# ---------------------------------------------------------------------------------------------- shell invocations

BODY = patch("*** Add File: hello.txt", "+hi")


@pytest.mark.parametrize("argv", [
    ["apply_patch", BODY],
    ["applypatch", BODY],
    ["/usr/local/bin/apply_patch", BODY],
    ["bash", "-lc", f"apply_patch <<'EOF'\n{BODY}EOF\n"],
    ["bash", "-lc", f"apply_patch <<'EOF'\n{BODY}EOF"],
    ["bash", "-c", f'apply_patch <<"PATCH"\n{BODY}PATCH\n'],
    ["sh", "-c", f"apply_patch <<EOF\n{BODY}EOF\n"],
    ["zsh", "-lc", f"applypatch << 'EOF'\n{BODY}EOF\n"],
    ["bash", "-lc", f"apply_patch <<-'EOF'\n{BODY}\tEOF\n"],
    ["bash", "-lc", f"apply_patch '{BODY}'"],
    ["bash", "-lc", f'apply_patch "{BODY}"'],
])
def test_extract_patch_from_command(argv: list[str]) -> None:
    found = extract_patch_from_command(argv)
    assert found is not None and found.strip() == BODY.strip()
    (op,) = parse_patch(found).ops
    assert op == AddFile("hello.txt", "hi\n", 2)


@pytest.mark.parametrize(("script", "cd"), [
    (f"cd sub && apply_patch <<'EOF'\n{BODY}EOF\n", "sub"),
    (f"cd 'my dir' && apply_patch <<EOF\n{BODY}EOF\n", "my dir"),
    (f"  cd a/b&&apply_patch <<'EOF'\n{BODY}EOF", "a/b"),
    (f"apply_patch <<'EOF'\n{BODY}EOF\n", None),
])
def test_extract_reports_the_cd_directory(script: str, cd: str | None) -> None:
    found = parse_patch_invocation(["bash", "-lc", script])
    assert found is not None and found.cd == cd and found.patch.strip() == BODY.strip()
    assert extract_patch_from_command(["bash", "-lc", script]) == found.patch


@pytest.mark.parametrize("argv", [
    [],
    ["apply_patch"],
    ["apply_patch", BODY, "extra"],
    ["cat", BODY],
    ["bash", "-lc", "ls"],
    ["bash", "-lc", f"apply_patch <<'EOF'\n{BODY}EOF\nrm -rf /\n"],  # more after the heredoc
    ["bash", "-lc", f"apply_patch <<'EOF'\n{BODY}"],  # unterminated heredoc
    ["bash", "-lc", f"apply_patch <<'EOF'\n{BODY}EOF\n", "x"],
    ["bash", "-lc", f"rm -rf / && apply_patch <<'EOF'\n{BODY}EOF\n"],
    ["bash", "-lc", f"cd $HOME && apply_patch <<'EOF'\n{BODY}EOF\n"],
    ["bash", "-lc", f"apply_patch '{BODY}' && ls"],
    ["bash", "-lc", f"not_apply_patch <<'EOF'\n{BODY}EOF\n"],
    ["python3", "-c", f"apply_patch <<'EOF'\n{BODY}EOF\n"],
])
def test_extract_ignores_other_commands(argv: list[str]) -> None:
    assert extract_patch_from_command(argv) is None


def test_parse_patch_accepts_a_wrapped_patch() -> None:
    for text, line in ((f"apply_patch <<'EOF'\n{BODY}EOF\n", 3), (f"  apply_patch \"{BODY}\"  ", 2),
                       (f"\ncd x && apply_patch <<EOF\n{BODY}EOF", 4)):
        assert parse_patch(text).ops == (AddFile("hello.txt", "hi\n", line),), text


def test_every_grammar_error_is_line_numbered() -> None:
    """A sweep: every single-line corruption of a valid patch that fails parsing names a line."""
    lines = patch("*** Update File: a", "*** Move to: b", "@@ def f", " ctx", "-x", "+y", "*** End of File",
                  "*** Add File: c", "+z", "*** Delete File: d").splitlines()
    for i in range(len(lines)):
        for junk in ("", "???", "*** Bogus", "@@", "+", "*** End Patch", "*** Begin Patch"):
            broken = "\n".join([*lines[:i], junk, *lines[i + 1:]])
            try:
                parse_patch(broken)
            except PatchError as exc:
                assert re.match(r"^line \d+: ", str(exc)), (broken, str(exc))

"""Command safety: is a command known-safe (read-only), dangerous, or unknown? And what the approval policy does.

Pure and conservative. "safe" is earned only by the allowlist of REFERENCE
section 5; anything the rules do not understand is "unknown" (the approval
policy decides), never "safe". Shell scripts (`bash -lc "..."`) are read by a
small tokenizer that accepts only plain words joined by `&&`, `||`, `;`, `|`:
a redirection, expansion, glob or subshell can turn a harmless-looking
command into a write, so it makes the script not known-safe. A looser second
reading of such scripts still finds dangerous parts (`x=$(rm -rf /)`), so
hiding `rm -rf` behind a `$` never lowers its class.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from collections.abc import Iterable
from typing import Literal

Level = Literal["safe", "dangerous", "unknown"]
ApprovalPolicy = Literal["untrusted", "on-request", "on-failure", "never"]
Phase = Literal["before", "after_denial", "escalation"]
Decision = Literal["run", "ask", "reject"]

_RANK: dict[str, int] = {"safe": 0, "unknown": 1, "dangerous": 2}
MAX_DEPTH = 4  # nested shells / wrappers looked into


@dataclasses.dataclass(frozen=True)
class Safety:
    """The class of a command and why (shown to the user in approval prompts)."""

    level: Level
    reason: str

    @property
    def is_safe(self) -> bool:
        return self.level == "safe"

    @property
    def is_dangerous(self) -> bool:
        return self.level == "dangerous"


def _safe(reason: str) -> Safety:
    return Safety("safe", reason)


def _unknown(reason: str) -> Safety:
    return Safety("unknown", reason)


def _danger(reason: str) -> Safety:
    return Safety("dangerous", reason)


def _strictest(results: Iterable[Safety]) -> Safety:
    """The strictest result: any dangerous wins, then any unknown; safe only if all are."""
    best: Safety | None = None
    for r in results:
        if best is None or _RANK[r.level] > _RANK[best.level]:
            best = r
    return best or _unknown("empty command")


# ---------------------------------------------------------------------------------------------- argv rules

ALWAYS_SAFE = frozenset({
    "cat", "cd", "cut", "echo", "expr", "false", "grep", "head", "id", "ls", "nl", "paste", "pwd", "rev", "seq",
    "stat", "tail", "tr", "true", "uname", "uniq", "wc", "which", "whoami", "numfmt", "tac",
})
# Only these directories make `/path/to/name` count as `name` for the safe list: `./ls` or `/tmp/x/ls` is
# someone's program, not ls. For danger every path counts (stricter is fine there).
SYSTEM_BIN_DIRS = frozenset({"/bin", "/usr/bin", "/usr/local/bin", "/sbin", "/usr/sbin", "/opt/homebrew/bin"})
SHELLS = frozenset({"bash", "sh", "zsh", "dash"})
FIND_UNSAFE = frozenset({"-exec", "-execdir", "-ok", "-okdir", "-delete", "-fls", "-fprint", "-fprint0", "-fprintf"})
FIND_EXEC = frozenset({"-exec", "-execdir", "-ok", "-okdir"})
GIT_READ_SUBCOMMANDS = frozenset({"status", "log", "diff", "show"})
GIT_GLOBAL_UNSAFE = ("-c", "--config-env", "--exec-path", "--git-dir", "--namespace", "--super-prefix", "--work-tree")
GIT_GLOBAL_WITH_VALUE = frozenset({"-C", "-c", "--git-dir", "--work-tree", "--namespace", "--config-env",
                                   "--super-prefix"})
GIT_GLOBAL_HARMLESS = frozenset({"--no-pager", "-P", "--no-optional-locks", "--literal-pathspecs",
                                 "--glob-pathspecs", "--noglob-pathspecs", "--icase-pathspecs",
                                 "--no-replace-objects", "--no-lazy-fetch"})
GIT_SUB_UNSAFE_PREFIX = ("--output", "--exec", "--paginate")
GIT_SUB_UNSAFE_EXACT = frozenset({"--ext-diff", "--textconv"})
GIT_BRANCH_READ = frozenset({"--list", "-l", "--show-current", "-a", "--all", "-r", "--remotes", "-v", "-vv",
                             "--verbose"})
WRAPPERS = frozenset({"env", "nice", "nohup", "time", "timeout", "xargs", "command", "exec", "stdbuf", "ionice",
                      "chroot", "setsid", "unbuffer", "watch", "strace", "ltrace", "flock"})
PRIVILEGE = frozenset({"sudo", "doas", "pkexec", "su"})
POWER = frozenset({"shutdown", "reboot", "halt", "poweroff"})
INTERPRETERS = SHELLS | frozenset({"ksh", "fish", "python", "python2", "python3", "perl", "ruby", "node"})
_SED_PRINT = re.compile(r"^\d+(,\d+)?p$")


def _name(word: str) -> str:
    return posixpath.basename(word) if "/" in word else word


def _short_flags(args: list[str]) -> Iterable[str]:
    """Short option clusters (`-rf` → `rf`) before `--`."""
    for a in args:
        if a == "--":
            return
        if a.startswith("-") and not a.startswith("--") and len(a) > 1:
            yield a[1:]


def _long_flags(args: list[str]) -> Iterable[str]:
    for a in args:
        if a == "--":
            return
        if a.startswith("--"):
            yield a


def _has_short(args: list[str], letters: str) -> bool:
    return any(ch in cluster for cluster in _short_flags(args) for ch in letters)


def _is_root(path: str) -> bool:
    return path in ("/", "/*") or (path.startswith("/") and posixpath.normpath(path) in ("/", "//"))


def _split_git(args: list[str]) -> tuple[list[str], str | None, list[str]]:
    """(global options, subcommand, subcommand args) of `git ARGS`."""
    i = 0
    while i < len(args):
        a = args[i]
        if not a.startswith("-"):
            return args[:i], a, args[i + 1:]
        i += 2 if a in GIT_GLOBAL_WITH_VALUE else 1
    return args, None, []


def _dangerous(argv: list[str], depth: int) -> Safety | None:
    """The reason `argv` is dangerous, else None."""
    name, args = _name(argv[0]), argv[1:]
    if name in PRIVILEGE:
        return _danger(f"{name} runs a command with elevated privileges")
    if name == "rm" and (_has_short(args, "rfR") or any(a in ("--force", "--recursive") for a in _long_flags(args))):
        return _danger("rm with -f/-r deletes without asking")
    if name == "git":
        _, sub, rest = _split_git(args)
        if sub == "push" and (_has_short(rest, "f") or any(a.startswith("--force") for a in _long_flags(rest))
                              or any(a.startswith("+") and len(a) > 1 for a in rest)):
            return _danger("git push --force rewrites remote history")
        if sub == "reset" and "--hard" in rest:
            return _danger("git reset --hard discards uncommitted work")
        if sub == "clean" and (_has_short(rest, "f") or "--force" in rest):
            return _danger("git clean -f deletes untracked files")
    if name == "dd" and any(a.startswith("of=") for a in args):
        return _danger("dd of= overwrites a file or device")
    if name.startswith("mkfs") or name == "mke2fs":
        return _danger(f"{name} formats a filesystem")
    if name in ("chmod", "chown", "chgrp") and (_has_short(args, "R") or "--recursive" in args) \
            and any(_is_root(a) for a in args if not a.startswith("-")):
        return _danger(f"{name} -R on /")
    if name in POWER or (name == "init" and args[:1] in (["0"], ["6"])) \
            or (name == "systemctl" and any(a in ("poweroff", "reboot", "halt", "kexec") for a in args)):
        return _danger(f"{name} shuts down or reboots the machine")
    if depth >= MAX_DEPTH:
        return None
    if name in WRAPPERS:
        # Look through `env X=1`, `timeout 5`, `xargs -0`, ...: any suffix that is itself dangerous.
        for k in range(1, len(argv)):
            if not argv[k].startswith("-") and "=" not in argv[k]:
                inner = _dangerous(argv[k:], depth + 1)
                if inner is not None:
                    return inner
    if name == "find":
        for k, a in enumerate(args):
            if a in FIND_EXEC and k + 1 < len(args):
                inner = _dangerous(args[k + 1:], depth + 1)
                if inner is not None:
                    return inner
    if name in SHELLS:
        script = _shell_script(args, strict=False)
        if script is not None:
            found = _classify_script(script, depth + 1)
            if found.level == "dangerous":
                return found
    return None


def _shell_script(args: list[str], strict: bool) -> str | None:
    """The `-c` script of a shell's args: strictly `-c|-lc SCRIPT`, or loosely any option cluster with `c`."""
    if strict:
        return args[1] if len(args) == 2 and args[0] in ("-c", "-lc") else None
    for k, a in enumerate(args):
        if a.startswith("-") and not a.startswith("--") and "c" in a and k + 1 < len(args):
            return args[k + 1]
        if not a.startswith("-"):
            return None
    return None


UNIQ_VALUE_OPTS = frozenset({"-f", "-s", "-w", "--skip-fields", "--skip-chars", "--check-chars"})


def _positionals(args: list[str], value_opts: frozenset[str]) -> list[str]:
    """Operands of a command line, skipping options and the separate values of `value_opts`."""
    out: list[str] = []
    k = 0
    while k < len(args):
        a = args[k]
        if a == "--":
            return out + args[k + 1:]
        if a.startswith("-") and a != "-":
            k += 2 if a in value_opts else 1
            continue
        out.append(a)
        k += 1
    return out


def _known_safe(argv: list[str]) -> Safety:
    """"safe" when `argv` fits the allowlist, else "unknown" saying which rule it missed."""
    word = argv[0]
    name, args = _name(word), argv[1:]
    if "/" in word and posixpath.dirname(posixpath.normpath(word)) not in SYSTEM_BIN_DIRS:
        return _unknown(f"{word} is not a system program")
    if name == "uniq" and len(_positionals(args, UNIQ_VALUE_OPTS)) > 1:
        return _unknown("uniq INPUT OUTPUT writes the output file")
    if name in ALWAYS_SAFE:
        return _safe(f"{name} only reads")
    if name == "base64":
        if any(a.startswith("--output") for a in _long_flags(args)) or _has_short(args, "o"):
            return _unknown("base64 -o/--output writes a file")
        return _safe("base64 without -o writes only to stdout")
    if name == "find":
        bad = sorted({a for a in args if a in FIND_UNSAFE})
        if bad:
            return _unknown(f"find {bad[0]} runs a command, deletes or writes files")
        return _safe("find without -exec/-delete/-fprint only lists")
    if name == "rg":
        opts = ("--pre", "--hostname-bin", "--search-zip")
        if any(a == b or a.startswith(b + "=") for a in _long_flags(args) for b in opts) or _has_short(args, "z"):
            return _unknown("rg --pre/--hostname-bin/--search-zip runs other programs")
        return _safe("rg without --pre/--search-zip runs no other program")
    if name == "git":
        return _git_safe(args)
    if name == "sed":
        if len(args) == 3 and args[0] == "-n" and _SED_PRINT.match(args[1]) and not args[2].startswith("-"):
            return _safe("sed -n Np prints lines")
        return _unknown("only `sed -n N[,M]p FILE` is known-safe")
    return _unknown(f"{name} is not on the known-safe list")


def _git_safe(args: list[str]) -> Safety:
    globals_, sub, rest = _split_git(args)
    i = 0
    while i < len(globals_):
        g = globals_[i]
        if g == "-C":
            i += 2
            continue
        if any(g == u or g.startswith(u + "=") for u in GIT_GLOBAL_UNSAFE):
            return _unknown(f"git {g.split('=')[0]} can point git at other config, programs or repositories")
        if g not in GIT_GLOBAL_HARMLESS:
            return _unknown(f"git global option {g} is not known-safe")
        i += 1
    if sub in GIT_READ_SUBCOMMANDS:
        for a in rest:
            if a == "--":
                break
            if a in GIT_SUB_UNSAFE_EXACT or a.startswith(GIT_SUB_UNSAFE_PREFIX):
                return _unknown(f"git {sub} {a.split('=')[0]} writes files or runs other programs")
        return _safe(f"git {sub} only reads")
    if sub == "branch":
        listing = "--list" in rest or "-l" in rest
        for a in rest:
            if a in GIT_BRANCH_READ or a.startswith("--format="):
                continue
            if not a.startswith("-") and listing:
                continue  # a pattern for --list
            return _unknown(f"git branch {a} may change branches")
        return _safe("git branch only lists")
    return _unknown(f"git {sub or ''} is not known-safe".replace("  ", " "))


def _classify_argv(argv: list[str], depth: int) -> Safety:
    if not argv or not argv[0]:
        return _unknown("empty command")
    danger = _dangerous(argv, depth)
    if danger is not None:
        return danger
    name = _name(argv[0])
    if name in SHELLS and depth < MAX_DEPTH:
        script = _shell_script(argv[1:], strict=True)
        if script is not None:
            return _classify_script(script, depth + 1)
    return _known_safe(argv)


# ---------------------------------------------------------------------------------------------- shell scripts

SHELL_KEYWORDS = frozenset({"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "for", "case", "esac",
                            "function", "select", "time", "coproc", "in", "!", "{", "}", "[[", "]]"})
_WORD_CHARS = re.compile(r"[A-Za-z0-9_\-./,:=+@%]")


class _NotPlain(Exception):
    """The script uses something beyond plain words and `&& || ; |`."""


@dataclasses.dataclass
class _Segment:
    words: list[str]
    op: str | None = None  # the operator before this segment
    heredoc: str | None = None  # lax reading only: a here-document fed to it


def _strict_words(script: str) -> list[_Segment]:
    """Plain words joined by `&&`, `||`, `;`, `|`, or _NotPlain saying what else was found."""
    segments: list[_Segment] = [_Segment([])]
    word: list[str] | None = None
    i, n = 0, len(script)

    def flush() -> None:
        nonlocal word
        if word is not None:
            segments[-1].words.append("".join(word))
            word = None

    while i < n:
        c = script[i]
        if c in " \t":
            flush()
            i += 1
        elif c == "'":
            end = script.find("'", i + 1)
            if end < 0:
                raise _NotPlain("unterminated single quote")
            word = (word or []) + [script[i + 1:end]]
            i = end + 1
        elif c == '"':
            end = script.find('"', i + 1)
            if end < 0:
                raise _NotPlain("unterminated double quote")
            inner = script[i + 1:end]
            for bad, what in (("$", "an expansion ($)"), ("`", "a command substitution (`)"),
                              ("\\", "an escape (\\)")):
                if bad in inner:
                    raise _NotPlain(f"{what} inside double quotes")
            word = (word or []) + [inner]
            i = end + 1
        elif script.startswith(("&&", "||"), i) or c in ";|":
            op = script[i:i + 2] if script.startswith(("&&", "||"), i) else c
            if script.startswith(("|&", ";;", ";&"), i):
                raise _NotPlain(f"the operator {script[i:i + 2]!r}")
            flush()
            if not segments[-1].words:
                raise _NotPlain(f"{op!r} with no command before it")
            segments.append(_Segment([], op))
            i += len(op)
        elif _WORD_CHARS.match(c) or ord(c) > 127:
            if c == "=" and word is None:
                raise _NotPlain("a word starting with '=' (zsh expands it to a program path)")
            word = (word or []) + [c]
            i += 1
        else:
            raise _NotPlain(_describe(script, i))
    flush()
    if not segments[-1].words:
        if segments[-1].op == ";" and len(segments) > 1:
            segments.pop()  # a trailing `;` is fine
        else:
            raise _NotPlain("an operator with no command after it" if len(segments) > 1 else "an empty script")
    for seg in segments:
        if seg.words[0] in SHELL_KEYWORDS:
            raise _NotPlain(f"the shell keyword {seg.words[0]!r}")
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*\+?=", seg.words[0]):
            raise _NotPlain(f"an assignment ({seg.words[0].split('=')[0]}=...)")
    return segments


def _describe(script: str, i: int) -> str:
    c = script[i]
    if c in "<>" or (c.isdigit() and script[i + 1:i + 2] in "<>"):
        return "a here-document" if script.startswith("<<", i) else "a redirection"
    return {
        "$": "an expansion ($)", "`": "a command substitution (`)", "(": "a subshell or substitution",
        ")": "a subshell or substitution", "{": "a group or brace expansion", "}": "a group or brace expansion",
        "*": "a glob (*)", "?": "a glob (?)", "[": "a glob ([)", "]": "a glob (])", "&": "a background job (&)",
        "\n": "a newline between commands", "#": "a comment", "\\": "an escape (\\)", "!": "a negation (!)",
        "~": "a tilde expansion (~)", "^": "the character '^' (a pipe in old shells)",
    }.get(c, f"the character {c!r}")


def _lax_segments(script: str) -> list[_Segment]:
    """A forgiving split into simple commands, looking inside substitutions, groups and control flow.

    Only used to find dangerous parts of scripts that are already not
    known-safe, so it never raises: an odd script just yields odd words.
    """
    segments: list[_Segment] = [_Segment([])]
    word: list[str] | None = None
    pending_heredocs: list[tuple[str, bool, _Segment]] = []
    skip_next_word = False
    i, n = 0, len(script)

    def flush() -> None:
        nonlocal word, skip_next_word
        if word is not None:
            text = "".join(word)
            word = None
            if skip_next_word:
                skip_next_word = False
                if pending_heredocs and pending_heredocs[-1][0] == "":
                    _, dash, seg = pending_heredocs.pop()
                    pending_heredocs.append((text.replace("'", "").replace('"', ""), dash, seg))
                return
            segments[-1].words.append(text)

    def new_segment(op: str | None) -> None:
        flush()
        segments.append(_Segment([], op))

    def substitution(start: int, close: str) -> int:
        """Scan a `$( )` or backtick body as its own script; returns the index after it."""
        depth, k = 1, start
        while k < n:
            if close == ")" and script[k] == "(":
                depth += 1
            elif script[k] == close:
                depth -= 1
                if depth == 0:
                    break
            k += 1
        for seg in _lax_segments(script[start:k]):
            segments.insert(len(segments) - 1, seg)
        return k + 1

    while i < n:
        c = script[i]
        if c == "\n" and pending_heredocs:
            flush()
            i += 1
            for delim, dash, seg in pending_heredocs:
                body: list[str] = []
                while i < n:
                    end = script.find("\n", i)
                    line = script[i:] if end < 0 else script[i:end]
                    i = n if end < 0 else end + 1
                    if (line.lstrip("\t") if dash else line) == delim:
                        break
                    body.append(line)
                seg.heredoc = "\n".join(body)
            pending_heredocs = []
            new_segment("\n")
        elif c in " \t":
            flush()
            i += 1
        elif c == "\\" and i + 1 < n:
            word = (word or []) + [script[i + 1]]
            i += 2
        elif c == "'":
            end = script.find("'", i + 1)
            end = n if end < 0 else end
            word = (word or []) + [script[i + 1:end]]
            i = end + 1
        elif c == '"':
            k, part = i + 1, []
            while k < n and script[k] != '"':
                if script[k] == "\\" and k + 1 < n:
                    part.append(script[k + 1])
                    k += 2
                elif script.startswith("$(", k):
                    k = substitution(k + 2, ")")
                elif script[k] == "`":
                    k = substitution(k + 1, "`")
                else:
                    part.append(script[k])
                    k += 1
            word = (word or []) + ["".join(part)]
            i = k + 1
        elif script.startswith("$(", i) or script.startswith("<(", i) or script.startswith(">(", i):
            i = substitution(i + 2, ")")
            word = (word or []) + ["$SUBST"]
        elif c == "`":
            i = substitution(i + 1, "`")
            word = (word or []) + ["$SUBST"]
        elif c == "#" and word is None:
            end = script.find("\n", i)
            i = n if end < 0 else end
        elif script.startswith("<<", i):
            flush()
            dash = script.startswith("<<-", i)
            i += 3 if dash else 2
            if script.startswith("<", i):  # here-string <<<
                i += 1
            else:
                pending_heredocs.append(("", dash, segments[-1]))
            skip_next_word = True
        elif c in "<>":
            if word is not None and "".join(word).isdigit():
                word = None  # the fd number of `2>`
            flush()
            i += 1
            while i < n and script[i] in ">&|":
                i += 1
            skip_next_word = True
        elif script.startswith(("&&", "||"), i):
            new_segment(script[i:i + 2])
            i += 2
        elif c in ";&|\n(){}":
            new_segment("|" if c == "|" else ";")
            i += 1
        else:
            word = (word or []) + [c]
            i += 1
    flush()
    out = []
    for seg in segments:
        words = seg.words
        while words and (words[0] in SHELL_KEYWORDS
                         or re.match(r"^[A-Za-z_][A-Za-z0-9_]*\+?=", words[0])):
            words = words[1:]
        if words or seg.heredoc:
            out.append(_Segment(words, seg.op, seg.heredoc))
    return out


def _pipe_to_shell(segments: list[_Segment]) -> Safety | None:
    """`curl ... | sh`: a download piped into an interpreter in the same pipeline."""
    downloading = False
    for seg in segments:
        if seg.op != "|":
            downloading = False
        words = seg.words
        while words and _name(words[0]) in PRIVILEGE | WRAPPERS:
            words = [w for w in words[1:] if not w.startswith("-")] if words[0] != "env" else \
                [w for w in words[1:] if "=" not in w and not w.startswith("-")]
        if not words:
            continue
        name = _name(words[0])
        if downloading and re.sub(r"[\d.]+$", "", name) in INTERPRETERS:
            return _danger(f"a download piped into {name} runs unreviewed code")
        if name in ("curl", "wget"):
            downloading = True
    return None


def _classify_script(script: str, depth: int) -> Safety:
    script = script.strip()
    if not script:
        return _unknown("empty script")
    try:
        segments = _strict_words(script)
    except _NotPlain as exc:
        lax = _lax_segments(script)
        found = _pipe_to_shell(lax)
        if found is None:
            dangers = [r for r in (_segment_danger(seg, depth) for seg in lax) if r is not None]
            found = dangers[0] if dangers else None
        if found is not None:
            return found
        return _unknown(f"the script is not plain commands: it has {exc}")
    piped = _pipe_to_shell(segments)
    if piped is not None:
        return piped
    results = [_classify_argv(seg.words, depth) for seg in segments]
    worst = _strictest(results)
    if worst.level == "safe":
        return _safe("every command of the script only reads")
    if len(results) > 1 and worst.level == "unknown":
        return _unknown(f"part of the script is not known-safe: {worst.reason}")
    return worst


def _segment_danger(seg: _Segment, depth: int) -> Safety | None:
    if seg.words:
        found = _dangerous(seg.words, depth)
        if found is not None:
            return found
    if seg.heredoc and seg.words and _name(seg.words[0]) in SHELLS and depth < MAX_DEPTH:
        inner = _classify_script(seg.heredoc, depth + 1)
        if inner.level == "dangerous":
            return inner
    return None


def classify(argv: list[str]) -> Safety:
    """Classify a command: "safe" (known read-only), "dangerous" (destructive), or "unknown"."""
    return _classify_argv(list(argv), 0)


# ---------------------------------------------------------------------------------------------- approvals

POLICIES: tuple[str, ...] = ("untrusted", "on-request", "on-failure", "never")
PHASES: tuple[str, ...] = ("before", "after_denial", "escalation")


def needs_approval(policy: ApprovalPolicy, safety: Safety, phase: Phase, *, full_access: bool = False) -> Decision:
    """What to do with a command: "run" it, "ask" the user, or "reject" it (REFERENCE section 5's table).

    - before: untrusted asks unless known-safe; the others run it sandboxed.
    - after_denial (the sandbox blocked it): untrusted/on-failure ask to retry
      unsandboxed; on-request/never reject (the denial goes back to the model).
    - escalation (the model asks to run unsandboxed): only on-request asks. Under
      full access there is nothing to escalate to, so it is judged like "before".
    - dangerous commands always prompt, except under `never`, where they are
      forbidden unless the sandbox is full access (the user chose no guard rails).
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown approval policy {policy!r}; expected one of {', '.join(POLICIES)}")
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; expected one of {', '.join(PHASES)}")
    if full_access and phase == "escalation":
        phase = "before"
    if phase == "after_denial":
        return "ask" if policy in ("untrusted", "on-failure") else "reject"
    if phase == "escalation":
        return "ask" if policy == "on-request" else "reject"
    if safety.level == "dangerous":
        if policy == "never":
            return "run" if full_access else "reject"
        return "ask"
    if policy == "untrusted":
        return "run" if safety.level == "safe" else "ask"
    return "run"

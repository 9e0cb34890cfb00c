"""A small SBPL (Seatbelt profile language) reader for tests: s-expressions, strings, `#"regex"` literals.

Not Apple's interpreter: it checks what can go wrong in text we generate
(balanced parentheses, terminated strings, known operations and filters,
every `(param "NAME")` supplied) so a Linux CI catches a broken profile
before a Mac ever sees it.
"""

from __future__ import annotations

from dataclasses import dataclass


class SbplError(ValueError):
    pass


@dataclass(frozen=True)
class Sym:
    name: str


@dataclass(frozen=True)
class Str:
    value: str


@dataclass(frozen=True)
class Regex:
    value: str


Form = Sym | Str | Regex | int | list


# Operations and filters the generated profiles may use (from Apple's sandbox operation list).
OPERATIONS = {
    "default", "process-exec", "process-exec*", "process-fork", "process-info*", "signal", "user-preference-read",
    "mach-lookup", "mach-host*", "file-read*", "file-read-data", "file-read-metadata", "file-write*",
    "file-write-data", "file-write-unlink", "file-write-create", "file-ioctl", "sysctl-read", "sysctl-write",
    "iokit-open", "ipc-posix-sem", "ipc-posix-shm", "ipc-posix-shm-read*", "ipc-posix-shm-write-create",
    "ipc-posix-shm-write-data", "ipc-posix-shm-write-unlink", "system-socket", "pseudo-tty", "network*",
    "network-outbound", "network-inbound", "network-bind",
}
FILTERS = {
    "target", "global-name", "path", "literal", "subpath", "regex", "vnode-type", "sysctl-name",
    "sysctl-name-prefix", "sysctl-name-regex", "iokit-registry-entry-class", "ipc-posix-name-regex",
    "socket-domain", "extension", "require-all", "require-any", "require-not", "remote", "local", "param",
    "string-append", "with",
}


def tokenize(text: str) -> list[object]:
    tokens: list[object] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
        elif c == ";":
            while i < n and text[i] != "\n":
                i += 1
        elif c in "()":
            tokens.append(c)
            i += 1
        elif c == '"':
            value, i = _string(text, i + 1)
            tokens.append(Str(value))
        elif text.startswith('#"', i):
            end = text.find('"', i + 2)
            if end < 0:
                raise SbplError(f"unterminated regex literal at {i}")
            tokens.append(Regex(text[i + 2:end]))
            i = end + 1
        else:
            start = i
            while i < n and text[i] not in ' \t\r\n();"':
                i += 1
            atom = text[start:i]
            tokens.append(int(atom) if atom.isdigit() else Sym(atom))
    return tokens


def _string(text: str, i: int) -> tuple[str, int]:
    out: list[str] = []
    while i < len(text):
        c = text[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\\":
            if i + 1 >= len(text):
                break
            nxt = text[i + 1]
            out.append({"n": "\n", "t": "\t", "\\": "\\", '"': '"'}.get(nxt, nxt))
            i += 2
            continue
        if c == "\n":
            raise SbplError("newline inside a string literal")
        out.append(c)
        i += 1
    raise SbplError("unterminated string literal")


def parse(text: str) -> list[Form]:
    """Top-level forms; raises SbplError when the text is not well-formed."""
    stack: list[list[Form]] = [[]]
    for tok in tokenize(text):
        if tok == "(":
            stack.append([])
        elif tok == ")":
            if len(stack) == 1:
                raise SbplError("unbalanced ')'")
            done = stack.pop()
            if not done:
                raise SbplError("empty form ()")
            stack[-1].append(done)
        else:
            stack[-1].append(tok)  # type: ignore[arg-type]
    if len(stack) != 1:
        raise SbplError(f"{len(stack) - 1} unclosed '('")
    for form in stack[0]:
        if not isinstance(form, list):
            raise SbplError(f"stray atom at top level: {form!r}")
    return stack[0]


def walk(form: Form):  # type: ignore[no-untyped-def]
    yield form
    if isinstance(form, list):
        for child in form:
            yield from walk(child)


def params_referenced(forms: list[Form]) -> set[str]:
    names: set[str] = set()
    for top in forms:
        for f in walk(top):
            if isinstance(f, list) and f and f[0] == Sym("param"):
                if len(f) != 2 or not isinstance(f[1], Str):
                    raise SbplError(f"(param ...) must take one string literal: {f!r}")
                names.add(f[1].value)
    return names


def check(text: str, params: dict[str, str]) -> list[Form]:
    """Parse, check the vocabulary, and check every referenced parameter is supplied (and none unused)."""
    forms = parse(text)
    if forms[0] != [Sym("version"), 1]:
        raise SbplError("the profile must start with (version 1)")
    for form in forms[1:]:
        head = form[0]
        if head not in (Sym("allow"), Sym("deny")):
            raise SbplError(f"unexpected top-level form {form!r}")
        ops = [f for f in form[1:] if isinstance(f, Sym)]
        if not ops:
            raise SbplError(f"rule without an operation: {form!r}")
        for op in ops:
            if op.name not in OPERATIONS:
                raise SbplError(f"unknown operation {op.name}")
        for f in form[1:]:
            if isinstance(f, list):
                for sub in walk(f):
                    if isinstance(sub, list) and isinstance(sub[0], Sym) and sub[0].name not in FILTERS \
                            and sub[0].name not in ("ip", "unix-socket"):
                        raise SbplError(f"unknown filter {sub[0].name}")
    used = params_referenced(forms)
    missing = used - set(params)
    if missing:
        raise SbplError(f"parameters referenced but not supplied: {sorted(missing)}")
    unused = set(params) - used
    if unused:
        raise SbplError(f"parameters supplied but never referenced: {sorted(unused)}")
    return forms


def strings(forms: list[Form]) -> list[str]:
    """Every string literal in the profile (to check no user path was spliced in)."""
    return [f.value for top in forms for f in walk(top) if isinstance(f, Str)]

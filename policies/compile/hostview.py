"""The read-only view of the host that a network-off sandbox gets: overlays, so no host socket is connectable.

connect() finds a pathname Unix socket by the inode its path resolves to,
and overlayfs hands out inodes of its own: through a read-only overlay a
socket file is still listed and stat-able, but connect() gets ECONNREFUSED.
That holds for every socket below the overlay whatever its name, its number
of hard links, or when it was bound, where binding /dev/null over the
sockets found at launch cannot see hard links, renames or later binds.

So when the network is off, every host filesystem the sandbox sees read-only
is shown through an overlay of its own (overlayfs does not cross mounts), in
mount order, parents first. Kept as plain read-only binds:
- the kernel's trees /proc, /sys and /dev (the backends treat them as
  before: a new /proc, bwrap's minimal /dev, /sys bound read-only);
- filesystems that cannot hold a bound socket: read-only superblocks, and
  types without socket inodes (vfat, iso9660, squashfs, ...);
- file mounts (/etc/resolv.conf in containers); a socket bind-mounted onto
  a file (the classic /var/run/docker.sock in a container) is left out;
- a mount the host could not overlay (`plain_mounts`, found by the backend's
  probe: stack depth, an unsupported filesystem); `HostView.plain` lists them.

In a user namespace (bwrap always; Landlock for callers that are not root)
overlayfs refuses a lower layer that has mounts below it ("locked" mounts
inherited from the host could be peeked under). There the view is carved:
a directory holding a mount becomes a skeleton (an empty dir, or a fresh
tmpfs when it is the root of a mount) with each entry added back: other
dirs as overlays, symlinks recreated, regular files bound, the mounts
themselves recursively; sockets, fifos and device nodes left out. Without
a user namespace each mount is one overlay (`carve=False`).

Pure: the host is read only through the `scan` and `stat` callables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

# Trees the backends show as before (not overlaid); everything mounted below them comes along.
KERNEL_TREES: tuple[str, ...] = ("/proc", "/sys", "/dev")

# Filesystems shown with a plain read-only bind: kernel interfaces, and types that have no socket inodes.
PLAIN_FS = frozenset({
    "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "mqueue", "debugfs", "tracefs", "securityfs",
    "pstore", "bpf", "configfs", "fusectl", "hugetlbfs", "binfmt_misc", "autofs", "efivarfs", "nsfs",
    "selinuxfs", "rpc_pipefs", "vfat", "msdos", "exfat", "ntfs", "ntfs3", "iso9660", "udf", "squashfs", "erofs",
    "cramfs", "romfs",
})

# How many entries a dir to carve may have before it is shown with a plain bind instead (each one
# is a mount the backend makes on every spawn).
MAX_CARVED_ITEMS = 200


@dataclass(frozen=True)
class HostMount:
    """One line of /proc/self/mountinfo."""

    mount_id: int
    parent_id: int
    mountpoint: str
    fstype: str = ""
    options: tuple[str, ...] = ()  # per-mount: ro, nosuid, nodev, noexec, ...
    super_ro: bool = False  # the filesystem itself is read-only: nothing can be bound on it


@dataclass(frozen=True)
class Entry:
    """A directory entry, as `scan` reports it."""

    name: str
    kind: str  # "dir", "symlink", "file" (regular) or "other" (socket, fifo, device)
    target: str = ""  # a symlink's target


@dataclass(frozen=True)
class Overlay:
    """A read-only overlay of the host dir `path` on itself (its own filesystem only)."""

    path: str
    mount_id: int
    flags: tuple[str, ...] = ()  # nosuid / nodev / noexec of the host mount


@dataclass(frozen=True)
class Skeleton:
    """An empty dir that entries are added back to. `fresh`: a new tmpfs (its parent is not a skeleton)."""

    path: str
    mode: int = 0o755
    fresh: bool = False


@dataclass(frozen=True)
class Symlink:
    path: str
    target: str


@dataclass(frozen=True)
class PlainBind:
    """A recursive read-only bind of the host path onto itself."""

    path: str
    is_dir: bool = True
    why: str = ""


ViewItem = Overlay | Skeleton | Symlink | PlainBind


@dataclass(frozen=True)
class HostView:
    items: tuple[ViewItem, ...]
    carved: bool = False
    plain: tuple[str, ...] = ()  # mounts that could hold a socket but are shown through a plain bind

    def holder(self, path: str) -> ViewItem | None:
        """The item that shows `path`: the deepest one at or above it (None: not in the view)."""
        best: ViewItem | None = None
        for item in self.items:
            if _under(path, item.path) and (best is None or len(item.path) >= len(best.path)):
                best = item
        return best

    def hides_sockets(self, path: str) -> bool:
        """True when no host socket at `path` is connectable through the view (overlaid or left out)."""
        return not isinstance(self.holder(path), PlainBind)

    def describe(self) -> list[str]:
        return [_describe(item) for item in self.items] + [
            f"note: {p} is bound plainly (could not be overlaid): host sockets there stay reachable"
            for p in self.plain]


def _describe(item: ViewItem) -> str:
    if isinstance(item, Overlay):
        return f"read-only overlay of {item.path}"
    if isinstance(item, Skeleton):
        return f"{'tmpfs' if item.fresh else 'dir'} {item.path} (mode {item.mode:04o}), entries added back"
    if isinstance(item, Symlink):
        return f"symlink {item.path} -> {item.target}"
    return f"read-only bind {item.path}{f'  # {item.why}' if item.why else ''}"


def _under(path: str, root: str) -> bool:
    return path == root or root == "/" or path.startswith(root + "/")


def _join(base: str, name: str) -> str:
    return base + name if base.endswith("/") else f"{base}/{name}"


class _Tree:
    """The mount tree as the sandbox would see it: stacked and shadowed mounts resolved."""

    def __init__(self, mounts: Sequence[HostMount]) -> None:
        usable = [m for m in mounts if m.mountpoint.startswith("/") and not m.mountpoint.endswith("//deleted")]
        self.ids = {m.mount_id for m in usable}
        self.kids: dict[int, list[HostMount]] = {}
        for m in usable:
            if m.parent_id != m.mount_id and m.parent_id in self.ids:
                self.kids.setdefault(m.parent_id, []).append(m)
        roots = [m for m in usable if m.mountpoint == "/" and m.parent_id not in self.ids]
        self.root = self.top(roots[-1]) if roots else None

    def top(self, m: HostMount) -> HostMount:
        """The mount that is on top at m's mountpoint (mounts stacked on it are its children there)."""
        while True:
            over = [c for c in self.kids.get(m.mount_id, ()) if c.mountpoint == m.mountpoint]
            if not over:
                return m
            m = over[-1]

    def children(self, m: HostMount) -> list[HostMount]:
        """The visible mounts directly below m, by path (a later mount on an ancestor hides earlier ones)."""
        kids = [c for c in self.kids.get(m.mount_id, ()) if c.mountpoint != m.mountpoint]
        out = []
        for i, c in enumerate(kids):
            if not any(_under(c.mountpoint, d.mountpoint) for d in kids[i + 1:]):
                out.append(self.top(c))
        return sorted(out, key=lambda c: c.mountpoint)

    def points(self, m: HostMount) -> list[str]:
        """Every mountpoint on m, visible or not: each one stops an overlay of a dir above it (user ns)."""
        return [c.mountpoint for c in self.kids.get(m.mount_id, ())]


def host_view(
    mounts: Sequence[HostMount],
    *,
    carve: bool,
    scan: Callable[[str], Sequence[Entry] | None],
    stat: Callable[[str], tuple[str, int]],
    skip: Iterable[str] = (),
    plain_mounts: Iterable[int] = (),
    max_carved: int = MAX_CARVED_ITEMS,
) -> HostView | None:
    """The view items for `mounts`, parents first; None when there is no root mount to start from.

    carve: lower layers may not have mounts below them (user namespace).
    scan(dir): the entries of a host dir, None when it cannot be listed.
    stat(path): (kind, permission bits) of a host path, kind as in `Entry`
    or "missing" (follows a mount, not a final symlink).
    skip: paths the backend covers with its own mounts (fresh tmpfs,
    writable binds): nothing is shown at or below them, but a dir is left
    for them when their parent is a skeleton.
    plain_mounts: mount ids shown through a plain bind (the overlay failed).
    max_carved: a dir to carve with more entries than this (or one that
    cannot be listed) is shown through a plain bind instead.
    """
    tree = _Tree(mounts)
    if tree.root is None:
        return None
    skips = list(dict.fromkeys(skip))
    plain_ids = set(plain_mounts)
    items: list[ViewItem] = []
    plain: list[str] = []

    def skipped(path: str) -> bool:
        return any(_under(path, s) for s in skips)

    def flags(m: HostMount) -> tuple[str, ...]:
        return tuple(f for f in ("nosuid", "nodev", "noexec") if f in m.options)

    def plain_bind(m: HostMount, path: str, why: str, out: list[ViewItem]) -> None:
        out.append(PlainBind(path, why=why))
        for c in tree.children(m):
            mount(c, out)

    def mount(m: HostMount, out: list[ViewItem]) -> None:
        path = m.mountpoint
        if skipped(path):
            return
        if any(_under(path, k) for k in KERNEL_TREES):
            if path in KERNEL_TREES:
                out.append(PlainBind(path, why="kernel filesystem"))
            return  # below them: comes along with the recursive bind
        kind, _ = stat(path)
        if kind == "missing":
            return
        if kind != "dir":
            if kind != "other" or m.fstype == "nsfs":
                out.append(PlainBind(path, is_dir=False, why="file mount"))
            return  # a socket (or fifo, device) mounted on a file: left out
        if m.fstype in PLAIN_FS or m.super_ro:
            plain_bind(m, path, m.fstype if m.fstype in PLAIN_FS else "read-only filesystem", out)
            return
        if m.mount_id in plain_ids:
            plain.append(path)
            plain_bind(m, path, "overlay failed", out)
            return
        if not carve:
            out.append(Overlay(path, m.mount_id, flags(m)))
            for c in tree.children(m):
                mount(c, out)
            return
        stops = tree.points(m)
        if not any(_under(s, path) for s in stops):
            out.append(Overlay(path, m.mount_id, flags(m)))
            return
        carve_dir(m, path, stops, fresh=path != "/", out=out)

    def carve_dir(m: HostMount, directory: str, stops: list[str], *, fresh: bool, out: list[ViewItem]) -> None:
        entries = scan(directory)
        if entries is None or len(entries) > max_carved:
            # Recursive and plain: the mounts below come along, and are overlaid again on top.
            plain.append(directory)
            out.append(PlainBind(directory, why="cannot list it" if entries is None else "too many entries"))
            for c in tree.children(m):
                if _under(c.mountpoint, directory):
                    mount(c, out)
            return
        _, mode = stat(directory)
        out.append(Skeleton(directory, mode, fresh))
        visible = {c.mountpoint: c for c in tree.children(m)}
        for e in sorted(entries, key=lambda e: e.name):
            path = _join(directory, e.name)
            if path in skips:
                if e.kind == "dir":
                    out.append(Skeleton(path, stat(path)[1]))  # a mountpoint for the backend's own mount
            elif path in visible:
                mount(visible[path], out)
            elif path in KERNEL_TREES:
                if e.kind == "dir":
                    out.append(PlainBind(path, why="kernel filesystem"))
            elif e.kind == "dir":
                if path in stops:
                    continue  # a mountpoint hidden under another mount: nothing of it shows
                if any(_under(s, path) for s in stops):
                    carve_dir(m, path, stops, fresh=False, out=out)
                else:
                    out.append(Overlay(path, m.mount_id, flags(m)))
            elif e.kind == "symlink":
                out.append(Symlink(path, e.target))
            elif e.kind == "file":
                out.append(PlainBind(path, is_dir=False, why="file in a carved dir"))
            # sockets, fifos, device nodes: left out

    mount(tree.root, items)
    return HostView(items=tuple(items), carved=carve, plain=tuple(plain))


def parse_mountinfo(text: str) -> list[HostMount]:
    """HostMounts from the text of /proc/<pid>/mountinfo."""
    out = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
        except ValueError:
            continue
        if len(fields) < sep + 3 or not fields[0].isdigit() or not fields[1].isdigit():
            continue
        out.append(HostMount(
            mount_id=int(fields[0]), parent_id=int(fields[1]), mountpoint=unescape_field(fields[4]),
            fstype=fields[sep + 1], options=tuple(fields[5].split(",")),
            super_ro="ro" in fields[sep + 3].split(",") if len(fields) > sep + 3 else False))
    return out


def unescape_field(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        code = field[i + 1:i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)

"""The overlay view of the host (pure: a made-up mount table and directory tree)."""

from __future__ import annotations

from policies.compile.hostview import (
    Entry,
    HostMount,
    HostView,
    Overlay,
    PlainBind,
    Skeleton,
    Symlink,
    host_view,
    parse_mountinfo,
)

MOUNTINFO = (
    "20 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
    "21 20 0:21 / /proc rw,nosuid,nodev,noexec - proc proc rw\n"
    "22 20 0:22 / /sys rw,nosuid - sysfs sysfs rw\n"
    "23 22 0:23 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
    "24 20 0:6 / /dev rw,nosuid - devtmpfs devtmpfs rw\n"
    "25 24 0:24 / /dev/pts rw - devpts devpts rw\n"
    "26 20 0:25 / /run rw,nosuid,nodev - tmpfs tmpfs rw,mode=755\n"
    "27 26 0:26 / /run/user/1000 rw,nosuid,nodev - tmpfs tmpfs rw\n"
    "28 20 8:1 / /boot/efi rw - vfat /dev/sda1 rw\n"
    "29 20 7:0 / /snap/core/1 ro - squashfs /dev/loop0 ro\n"
    "30 20 254:0 /etc/resolv.conf /etc/resolv.conf rw - ext4 /dev/vda rw\n"
    "31 20 254:0 /srv/sock /var/run/docker.sock rw - ext4 /dev/vda rw\n"
    "32 20 0:30 / /mnt/data\\040disk rw,noexec - xfs /dev/sdb rw\n"
)

# The host's tree: dirs map to their entries, other paths to their kind.
TREE: dict[str, object] = {
    "/": {"bin": "usr/bin", "boot": "dir", "dev": "dir", "etc": "dir", "home": "dir", "mnt": "dir",
          "proc": "dir", "run": "dir", "snap": "dir", "srv": "dir", "sys": "dir", "tmp": "dir", "usr": "dir",
          "var": "dir", "docker.sock": "other", "notes.txt": "file"},
    "/boot": {"efi": "dir", "vmlinuz": "file"},
    "/etc": {"resolv.conf": "file", "passwd": "file", "ssl": "dir"},
    "/mnt": {"data disk": "dir", "old": "dir"},
    "/run": {"user": "dir", "docker.sock": "other", "lock": "dir"},
    "/run/user": {"1000": "dir", "1001": "dir"},
    "/snap": {"core": "dir"},
    "/snap/core": {"1": "dir", "2": "dir"},
    "/var": {"run": "dir", "lib": "dir"},
    "/var/run": {"docker.sock": "other"},
    "/srv": {"sock": "other"},
}
KINDS = {"/etc/resolv.conf": "file", "/var/run/docker.sock": "other", "/srv/sock": "other"}


def scan(path: str) -> list[Entry] | None:
    entries = TREE.get(path)
    if not isinstance(entries, dict):
        return None
    return [Entry(name, "symlink", kind) if "/" in kind else Entry(name, kind) for name, kind in entries.items()]


def stat(path: str) -> tuple[str, int]:
    if path in KINDS:
        return KINDS[path], 0o644
    return "dir", 0o1777 if path == "/tmp" else 0o755


MOUNTS = parse_mountinfo(MOUNTINFO)


def kinds(view: HostView) -> list[tuple[str, str]]:
    return [(type(i).__name__, i.path) for i in view.items]


def test_parse_mountinfo() -> None:
    by_point = {m.mountpoint: m for m in MOUNTS}
    assert by_point["/"] == HostMount(20, 1, "/", "ext4", ("rw", "relatime"), False)
    assert by_point["/snap/core/1"].super_ro and not by_point["/run"].super_ro
    assert by_point["/mnt/data disk"].fstype == "xfs" and "noexec" in by_point["/mnt/data disk"].options


def test_direct_view_overlays_each_mount_parents_first() -> None:
    view = host_view(MOUNTS, carve=False, scan=scan, stat=stat)
    assert view is not None and not view.carved and view.plain == ()
    assert kinds(view) == [
        ("Overlay", "/"), ("PlainBind", "/boot/efi"), ("PlainBind", "/dev"), ("PlainBind", "/etc/resolv.conf"),
        ("Overlay", "/mnt/data disk"), ("PlainBind", "/proc"), ("Overlay", "/run"), ("Overlay", "/run/user/1000"),
        ("PlainBind", "/snap/core/1"), ("PlainBind", "/sys"),
    ]  # /sys/fs/cgroup and /dev/pts come with their kernel tree; docker.sock on a file mount is left out
    items = {i.path: i for i in view.items}
    assert items["/run"] == Overlay("/run", 26, ("nosuid", "nodev"))
    assert items["/mnt/data disk"] == Overlay("/mnt/data disk", 32, ("noexec",))
    assert items["/boot/efi"].why == "vfat" and items["/snap/core/1"].why == "squashfs"
    ro = parse_mountinfo("20 1 254:0 / / rw - ext4 /dev/vda rw\n50 20 8:2 / /media/cd ro - ext4 /dev/sr0 ro\n")
    assert host_view(ro, carve=False, scan=scan, stat=stat).items[1] == PlainBind("/media/cd",
                                                                                  why="read-only filesystem")


def test_carved_view_rebuilds_dirs_that_hold_mounts() -> None:
    view = host_view(MOUNTS, carve=True, scan=scan, stat=stat)
    assert view is not None and view.carved
    items = {i.path: i for i in view.items}
    assert items["/"] == Skeleton("/", 0o755, fresh=False)
    assert items["/bin"] == Symlink("/bin", "usr/bin")
    assert items["/notes.txt"] == PlainBind("/notes.txt", is_dir=False, why="file in a carved dir")
    assert "/docker.sock" not in items  # a socket in a carved dir is left out
    # No mount below: one overlay for the whole dir.
    assert isinstance(items["/usr"], Overlay) and isinstance(items["/home"], Overlay)
    # /etc holds a file mount: carved, with its other entries added back.
    assert items["/etc"] == Skeleton("/etc", 0o755)
    assert isinstance(items["/etc/ssl"], Overlay) and isinstance(items["/etc/passwd"], PlainBind)
    assert items["/etc/resolv.conf"] == PlainBind("/etc/resolv.conf", is_dir=False, why="file mount")
    # /run is a mount with a mount below: a fresh tmpfs, entries back, the user's tmpfs overlaid.
    assert items["/run"] == Skeleton("/run", 0o755, fresh=True)
    assert items["/run/user"] == Skeleton("/run/user", 0o755)
    assert isinstance(items["/run/user/1000"], Overlay) and isinstance(items["/run/user/1001"], Overlay)
    assert isinstance(items["/run/lock"], Overlay) and "/run/docker.sock" not in items
    assert items["/var/run"] == Skeleton("/var/run", 0o755) and "/var/run/docker.sock" not in items
    assert isinstance(items["/mnt/old"], Overlay) and isinstance(items["/mnt/data disk"], Overlay)
    assert items["/sys"] == PlainBind("/sys", why="kernel filesystem")
    # Parents always come before what is mounted below them.
    paths = [i.path for i in view.items]
    for i, p in enumerate(paths):
        assert not any(p.startswith(q + "/") for q in paths[i + 1:] if q != "/"), p


def test_skipped_paths_leave_a_mountpoint_in_a_skeleton_only() -> None:
    view = host_view(MOUNTS, carve=True, scan=scan, stat=stat, skip=("/tmp", "/proc", "/dev", "/run/user"))
    assert view is not None
    items = {i.path: i for i in view.items}
    assert items["/tmp"] == Skeleton("/tmp", 0o1777) and items["/run/user"] == Skeleton("/run/user", 0o755)
    assert not any(p.startswith(("/run/user/", "/dev/", "/proc/")) for p in items)
    assert items["/proc"] == Skeleton("/proc", 0o755)
    direct = host_view(MOUNTS, carve=False, scan=scan, stat=stat, skip=("/run",))
    assert direct is not None and not any(i.path.startswith("/run") for i in direct.items)


def test_mounts_overlayfs_refused_are_plain_and_reported() -> None:
    view = host_view(MOUNTS, carve=True, scan=scan, stat=stat, plain_mounts=(20,))
    assert view is not None and view.plain == ("/",)
    assert view.items[0] == PlainBind("/", why="overlay failed")
    assert isinstance(view.holder("/run/user/1000/x"), Overlay)  # other mounts are still overlaid on top
    assert view.hides_sockets("/run/x.sock") and not view.hides_sockets("/srv/app.sock")


def test_dirs_too_big_or_unlistable_to_carve_are_plain() -> None:
    view = host_view(MOUNTS, carve=True, scan=scan, stat=stat, max_carved=3)
    assert view is not None and view.plain == ("/",)
    assert view.items[0] == PlainBind("/", why="too many entries")
    assert Skeleton("/run", 0o755, fresh=True) in view.items  # small enough: still carved, on top
    blind = host_view(MOUNTS, carve=True, scan=lambda p: None if p == "/run/user" else scan(p), stat=stat)
    assert blind is not None and blind.plain == ("/run/user",)
    items = {i.path: i for i in blind.items}
    assert items["/run/user"] == PlainBind("/run/user", why="cannot list it")
    assert isinstance(items["/run/user/1000"], Overlay)  # on top of the plain bind


def test_stacked_and_hidden_mounts() -> None:
    mounts = parse_mountinfo(
        "20 1 254:0 / / rw - ext4 /dev/vda rw\n"
        "40 20 0:40 / /data rw - tmpfs tmpfs rw\n"
        "41 40 0:41 / /data/inner rw - tmpfs tmpfs rw\n"
        "42 40 0:42 / /data rw - xfs /dev/sdc rw\n"  # stacked on /data: hides 40 and 41
        "43 20 0:43 / /a/b rw - tmpfs tmpfs rw\n"
        "44 20 0:44 / /a rw - tmpfs tmpfs rw\n"  # mounted over /a later: /a/b is hidden
        "45 20 0:45 / /gone//deleted rw - tmpfs tmpfs rw\n"
    )
    view = host_view(mounts, carve=False, scan=scan, stat=stat)
    assert view is not None
    assert [(type(i).__name__, i.path, getattr(i, "mount_id", None)) for i in view.items] == [
        ("Overlay", "/", 20), ("Overlay", "/a", 44), ("Overlay", "/data", 42)]


def test_no_root_mount_no_view() -> None:
    assert host_view(parse_mountinfo("40 30 0:40 / /data rw - tmpfs tmpfs rw\n"), carve=False, scan=scan,
                     stat=stat) is None

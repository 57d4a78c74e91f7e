"""The cache daemon at boot: what a cached client's initramfs runs to make `/` a cache mount.

The initramfs's /init (``rootfs/netboot/boot/initramfs.py``) mounts the NFS root from DHCP
option 17 at ``/nfs`` and then starts, from the Python runtime it carries::

    python3 -m rootfs.cache.boot --source /nfs --mountpoint /root --device DEV [--quota BYTES]

1. The cache device. ``LABEL=rootfs-cache`` (the default) means the block device whose ext2/3/4
   filesystem carries that label; nothing is ever formatted then. An explicit device (``/dev/vda``)
   is used when it carries the label, formatted (``mke2fs -L rootfs-cache``) when it is empty
   (its first MiB is all zeros), and left alone when it holds anything else: the console says
   what was found and the client boots uncached, from NFS. A disk with data on it is never
   touched, whatever the inventory says.
2. The cache filesystem is mounted at ``/cache`` and the root served from ``/nfs`` through the
   cache at ``/root`` (`rootfs.cache.mount`), with ``--prefetch``: what the previous boot read is
   fetched in the background. The quota defaults to 70% of the cache filesystem (CernVM-FS's
   advice for its cache partition: room for the filesystem's own overhead and for fragmentation).
   ``/var`` (or ``rootfs.cache_state=`` on the kernel command line, comma-separated) is where the
   client keeps what it writes: it is read from NFS, not from the manifest, so a file the client
   wrote there is seen again after a reboot.
3. /init waits for ``/root`` to be a FUSE mount and ``switch_root``s into it. This process stays:
   it was started with ``argv[0]`` ``@rootfs-cache``, which systemd's shutdown spares (a root
   storage daemon, see systemd's "Storage daemons" documentation), and its runtime lives on a tmpfs
   that switch_root does not empty.

Exit status: 0 once unmounted; `UNUSABLE` (3) when the device cannot be used (nothing was mounted,
/init boots from NFS); 1 on any other failure before the mount (likewise).

Log lines go to the console (warnings and the state of the cache) and all of them to the kernel
log (``/dev/kmsg``), which is where journald on the client picks them up (``journalctl -k``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rootfs.errors import RootfsError
from rootfs.store.layout import CACHE_REPORT

LABEL = "rootfs-cache"
UNUSABLE = 3
HEAD = 1 << 20  # bytes read from a device to decide what it holds
QUOTA_SHARE = 0.7
CACHE_MOUNT = Path("/cache")
# Where a client keeps what it writes (logs, spools, package state, its boot counter...): read
# from NFS, not from the manifest, so it is there again after a reboot.
HOST_STATE = ("/var",)
_EXT_MAGIC = b"\x53\xef"  # s_magic, little-endian 0xEF53, at 1024 + 56
_EXT_LABEL = slice(1024 + 120, 1024 + 136)  # s_volume_name

log = logging.getLogger("rootfs-cache")


class DeviceUnusable(RootfsError):
    """The cache device is missing or holds something that is not a rootfs cache."""


@dataclass(frozen=True)
class Probe:
    """What a device holds, judged from its first bytes (`probe`)."""

    state: str  # "ours", "empty" or "foreign"
    what: str = ""  # for "foreign": what was recognised, for the console


# Signatures of what a disk may hold, for the console message (offset, bytes, name).
_SIGNATURES = (
    (0, b"LUKS\xba\xbe", "a LUKS encrypted volume"),
    (0, b"XFSB", "an XFS filesystem"),
    (0x10040, b"_BHRfS_M", "a btrfs filesystem"),
    (512, b"EFI PART", "a GPT partition table"),
    (4086, b"SWAPSPACE2", "a swap area"),
    (0x8001, b"CD001", "an ISO 9660 image"),
    (3, b"NTFS    ", "an NTFS filesystem"),
    (82, b"FAT32   ", "a FAT32 filesystem"),
    (54, b"FAT1", "a FAT filesystem"),
)


def ext_label(head: bytes) -> str | None:
    """The label of the ext2/3/4 filesystem starting *head*; None if it is not one."""
    if head[1080:1082] != _EXT_MAGIC:
        return None
    return head[_EXT_LABEL].split(b"\0", 1)[0].decode("utf-8", "replace")


def probe(head: bytes) -> Probe:
    """Classify a device from its first bytes (at least 1 MiB where the device has them)."""
    label = ext_label(head)
    if label is not None:
        if label == LABEL:
            return Probe("ours")
        return Probe("foreign", f"an ext2/3/4 filesystem labelled {label!r}")
    if not any(head):
        return Probe("empty")
    for offset, magic, name in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return Probe("foreign", name)
    if head[510:512] == b"\x55\xaa":
        return Probe("foreign", "an MBR partition table or boot sector")
    return Probe("foreign", "data of an unknown kind")


def _read_head(device: str) -> bytes:
    with open(device, "rb") as f:
        return f.read(HEAD)


def _block_devices(sys_block: Path = Path("/sys/class/block")) -> Iterator[str]:
    try:
        names = sorted(os.listdir(sys_block))
    except FileNotFoundError:
        return
    for name in names:
        if not name.startswith(("loop", "ram", "zram")):
            yield f"/dev/{name}"


def find_device(spec: str) -> tuple[str, Probe]:
    """The device *spec* names and what it holds; DeviceUnusable says why not."""
    if spec.startswith("LABEL="):
        wanted = spec.removeprefix("LABEL=")
        for device in _block_devices():
            try:
                head = _read_head(device)
            except OSError:
                continue
            if ext_label(head) == wanted:
                return device, Probe("ours")
        raise DeviceUnusable(
            f"no block device carries the label {wanted}; give the host a cache_device to"
            f" format (an empty disk), or label one (mke2fs -L {wanted})"
        )
    try:
        found = probe(_read_head(spec))
    except FileNotFoundError:
        raise DeviceUnusable(f"cache device {spec} does not exist") from None
    except OSError as exc:
        raise DeviceUnusable(f"cache device {spec} cannot be read: {exc.strerror}") from None
    if found.state == "foreign":
        raise DeviceUnusable(
            f"cache device {spec} holds {found.what}, not a rootfs cache; it is left as it is."
            f" Wipe it (or name another device) to use it as the cache"
        )
    return spec, found


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise DeviceUnusable(f"{' '.join(argv)}: {detail[-1] if detail else proc.returncode}")


def prepare_device(spec: str, mountpoint: Path = CACHE_MOUNT) -> Path:
    """Find, if need be format, and mount the cache device; the cache directory on it."""
    device, found = find_device(spec)
    if found.state == "empty":
        log.warning("formatting the empty device %s as the rootfs cache", device)
        _run(["mke2fs", "-q", "-F", "-L", LABEL, device])
    mountpoint.mkdir(parents=True, exist_ok=True)
    _run(["mount", "-t", "ext4", "-o", "noatime", device, str(mountpoint)])
    log.info("cache on %s (%s)", device, "new" if found.state == "empty" else "kept")
    return mountpoint / "rootfs"


def default_quota(cache_dir: Path) -> int:
    """70% of the cache filesystem's size."""
    st = os.statvfs(cache_dir)
    return int(st.f_blocks * st.f_frsize * QUOTA_SHARE)


class _KmsgHandler(logging.Handler):
    """Log records into the kernel log, where journald on the client finds them."""

    def __init__(self, path: str = "/dev/kmsg") -> None:
        super().__init__()
        self._fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)

    def emit(self, record: logging.LogRecord) -> None:
        # syslog priorities: 3 err, 4 warning, 6 info
        n = record.levelno
        level = 6 if n < logging.WARNING else 4 if n < logging.ERROR else 3
        text = f"<{level}>rootfs-cache: {self.format(record)}"[:1000]
        with contextlib.suppress(OSError):  # a full or missing kmsg must not take the root down
            os.write(self._fd, text.encode())


def _configure_logging() -> None:
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    console.setFormatter(logging.Formatter("rootfs-cache: %(message)s"))
    handlers: list[logging.Handler] = [console]
    with contextlib.suppress(OSError):  # no /dev/kmsg: the console alone
        kmsg = _KmsgHandler()
        kmsg.setFormatter(logging.Formatter("%(message)s"))
        handlers.append(kmsg)
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True)


def _become_storage_daemon(argv: list[str]) -> None:
    """Start again with ``argv[0]`` ``@rootfs-cache``, unless that is done already.

    systemd's shutdown kills every process left except those whose argv[0] starts with '@':
    root storage daemons, which must serve `/` until it is unmounted. What counts is the first
    word of /proc/self/cmdline, so the runtime's own loader is exec'd with that word.
    """
    with open("/proc/self/cmdline", "rb") as f:
        if f.read().startswith(b"@"):
            return
    # The runtime's layout (rootfs.netboot.boot.runtime: LOADER, PYTHON), which this layer may
    # not import: PYTHONHOME is <runtime>/usr.
    runtime = Path(sys.prefix).parent
    loader = runtime / "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    python = runtime / "usr/bin/python3.11"
    if not (loader.exists() and python.exists()):
        log.warning("not started from the client runtime: systemd's shutdown will not spare it")
        return
    library_path = os.environ.get("LD_LIBRARY_PATH", "")
    os.execv(
        loader,
        ["@rootfs-cache", "--argv0", "@rootfs-cache", "--library-path", library_path,
         str(python), "-m", "rootfs.cache.boot", *argv],
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """The daemon: device, then the mount (blocks until unmounted)."""
    if argv is None:
        argv = sys.argv[1:]
        _become_storage_daemon(argv)
    parser = argparse.ArgumentParser(prog="rootfs-cache", description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="the mounted NFS root")
    parser.add_argument("--mountpoint", type=Path, required=True, help="where / is served")
    parser.add_argument("--device", default=f"LABEL={LABEL}", help="cache device")
    parser.add_argument("--quota", type=int, default=None, help="bytes (default: 70%% of it)")
    parser.add_argument("--cache-mount", type=Path, default=CACHE_MOUNT, help="where it is mounted")
    parser.add_argument(
        "--host-state",
        default=",".join(HOST_STATE),
        help="comma-separated subtrees the client writes its state in, read from NFS",
    )
    args = parser.parse_args(argv)
    _configure_logging()
    from rootfs.cache.mount import MountConfig, mount  # after logging: pyfuse3 warns on import

    try:
        cache_dir = prepare_device(args.device, args.cache_mount)
    except DeviceUnusable as exc:
        log.error("%s; booting uncached, from NFS", exc)
        return UNUSABLE
    quota = args.quota if args.quota is not None else default_quota(cache_dir.parent)
    config = MountConfig(
        source=args.source,
        mountpoint=args.mountpoint,
        cache_dir=cache_dir,
        quota=quota,
        prefetch=True,
        host_state=tuple(p for p in args.host_state.split(",") if p.startswith("/") and p != "/"),
        report=args.source / CACHE_REPORT,
    )
    cache_dir.mkdir(exist_ok=True)
    log.warning("serving %s through the cache (quota %d MiB)", args.source, quota >> 20)
    try:
        mount(config)
    except RootfsError as exc:
        log.error("%s; booting uncached, from NFS", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

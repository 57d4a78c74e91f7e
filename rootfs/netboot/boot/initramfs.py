"""A kernel and a small initramfs for NFS-root clients, from Debian's own packages.

Why our own initramfs: Debian's kernel builds NFS, sunrpc and most NIC drivers as modules (and has
no in-kernel IP autoconfiguration), so the kernel alone cannot mount an NFS root. initramfs-tools
can, but it needs a Debian root with the kernel installed and takes minutes under emulation; this
one is busybox-static plus the handful of modules a diskless client needs (a few MB, built in
seconds) and does exactly what rootfs's DHCP server tells it:

1. load the NIC (virtio_net, e1000, ...) and NFS modules, in dependency order;
2. run busybox `udhcpc` on the boot interface (BOOTIF= from iPXE/pxelinux, else the first NIC) and
   take the root from DHCP option 17, `<server>:<path>[,<options>]` (the server defaults to the
   DHCP server when the path has no `a.b.c.d:` prefix, as the kernel's nfsroot does);
3. mount it over NFS (`nolock` is added unless the options say `lock`: no statd runs this early)
   and `switch_root` to `init=` from the kernel command line (default /sbin/init), with the lease
   in the environment (ROOTFS_IP, ROOTFS_HOSTNAME, ROOTFS_ROOT, ROOTFS_SERVER).

The kernel comes from a `linux-image-*` .deb (fetched with `apt-get download`, never installed on
this machine). Both steps are cached under a cache directory keyed by the digests of their inputs
(the .deb, busybox, the module list and the init script), so a rebuild with nothing changed is a
file lookup, and a changed input makes a new entry instead of reusing a stale one.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rootfs.durable import atomic_write_bytes
from rootfs.errors import UserError
from rootfs.netboot.boot.runtime import build_runtime, fetch_debs

FORMAT = "1"  # bump when the layout of the initramfs changes: it is part of every cache key
DEFAULT_PACKAGE = "linux-image-amd64"
BUSYBOX = Path("/bin/busybox")
# Modules an NFS-root client needs; their dependencies are added from each module's modinfo.
# nfsv3 and nfsv4 are loaded by name by nfs.ko (request_module), so they are listed themselves.
DEFAULT_MODULES = (
    "virtio_pci",
    "virtio_net",
    "e1000",
    "e1000e",
    "nfs",
    "nfsv3",
    # A cached client (rootfs.cache.boot): its disk, the cache filesystem, FUSE for the root.
    "virtio_blk",
    "ahci",
    "ext4",
    "crc32c_generic",  # ext4 asks the crypto API for crc32c at mount; nothing loads it by name
    "fuse",
)
_DEB_NAME = re.compile(r"[a-z0-9][a-z0-9.+-]*")


@dataclass(frozen=True)
class Kernel:
    """A kernel unpacked from a .deb: its image and the modules the initramfs carries."""

    version: str
    vmlinuz: Path
    modules: Path  # directory: <name>.ko files plus `order` (load order, one name a line)
    key: str  # digest of the .deb and the module list


@dataclass(frozen=True)
class BootImages:
    """What `prepare` produced: the kernel and initramfs, cached, and where they were installed."""

    kernel: Kernel
    initrd: Path
    installed: tuple[Path, ...]


# -- the kernel package ----------------------------------------------------------------------


def resolve_package(name: str) -> str:
    """A metapackage (linux-image-amd64) names its current kernel package in its Depends; a real
    package name is returned as is. Uses apt's local lists only (no network)."""
    if not _DEB_NAME.fullmatch(name):
        raise UserError(f"{name!r} is not a Debian package name")
    out = _run(["apt-cache", "depends", "--important", name], what=f"apt-cache depends {name}")
    for line in out.splitlines():
        kind, _, dep = line.strip().partition(":")
        dep = dep.strip()
        if kind in ("Depends", "PreDepends") and dep.startswith("linux-image-"):
            return dep
    return name


def fetch_deb(package: str, cache: Path) -> Path:
    """The .deb of `package` in `cache/debs`, downloaded with `apt-get download` when absent.

    A .deb already cached for that exact package name is reused: kernel package names carry the
    ABI version, so the same name means the same kernel, and reruns work offline.
    """
    return fetch_debs([resolve_package(package)], cache)[0]


def unpack_kernel(deb: Path, cache: Path, modules: Sequence[str] = DEFAULT_MODULES) -> Kernel:
    """The kernel image and `modules` (with their dependencies) from `deb`, cached by digest."""
    key = _digest([_file_digest(deb), FORMAT, *modules])
    target = cache / f"kernel-{key}"
    if (target / "modules" / "order").exists():
        return _kernel_at(target, key)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".unpack-") as tmp:
        work = Path(tmp)
        tree = work / "tree"
        tree.mkdir()
        _extract(deb, tree)
        images = sorted((tree / "boot").glob("vmlinuz-*"))
        if not images:
            raise UserError(f"{deb}: no boot/vmlinuz-* inside; is it a linux-image package?")
        version = images[-1].name.removeprefix("vmlinuz-")
        root = tree / "lib" / "modules" / version
        available = {p.name.removesuffix(".ko"): p for p in root.rglob("*.ko")}
        order = load_order(modules, {n: module_depends(p) for n, p in available.items()})
        out = work / "out"
        (out / "modules").mkdir(parents=True)
        shutil.copy2(images[-1], out / "vmlinuz")
        for name in order:
            shutil.copy2(available[name], out / "modules" / f"{name}.ko")
        (out / "modules" / "order").write_text("".join(f"{n}\n" for n in order))
        (out / "version").write_text(version + "\n")
        os.replace(out, target)
    return _kernel_at(target, key)


def _kernel_at(target: Path, key: str) -> Kernel:
    return Kernel(
        version=(target / "version").read_text().strip(),
        vmlinuz=target / "vmlinuz",
        modules=target / "modules",
        key=key,
    )


def _extract(deb: Path, into: Path) -> None:
    """Only the kernel image and the .ko files: the rest of the package (firmware lists, System.map,
    docs) is not needed, and skipping it saves most of the disk space."""
    fsys = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert fsys.stdout is not None
    try:
        with tarfile.open(fileobj=fsys.stdout, mode="r|") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                wanted = name.startswith("boot/vmlinuz-") or name.endswith(".ko")
                if wanted and member.isfile():
                    member.name = name
                    tar.extract(member, into, filter="data")
    finally:
        fsys.stdout.close()
        if fsys.wait() != 0:
            raise UserError(f"dpkg-deb --fsys-tarfile {deb} failed (exit {fsys.returncode})")


def module_depends(path: Path) -> tuple[str, ...]:
    """The `depends=` field of a module's .modinfo section (what depmod reads to make
    modules.dep, which a kernel .deb does not ship: depmod runs at install time)."""
    data = path.read_bytes()
    start = data.find(b"\0depends=")
    if start < 0:
        return ()
    start += len(b"\0depends=")
    value = data[start : data.index(b"\0", start)].decode()
    return tuple(d for d in value.split(",") if d)


def load_order(wanted: Iterable[str], depends: dict[str, tuple[str, ...]]) -> list[str]:
    """`wanted` and everything they depend on, each after its dependencies. Module names use
    `_` and `-` interchangeably (the kernel treats them alike); a wanted module missing from this
    kernel is skipped (e1000e on a kernel without it), a missing dependency is an error."""
    by_norm = {n.replace("-", "_"): n for n in depends}
    order: list[str] = []
    seen: set[str] = set()

    def visit(norm: str, chain: tuple[str, ...]) -> None:
        if norm in seen:
            return
        if norm in chain:
            raise UserError(f"module dependency cycle: {' -> '.join((*chain, norm))}")
        name = by_norm.get(norm)
        if name is None:
            raise UserError(f"module {chain[-1]} needs {norm}, which this kernel does not have")
        for dep in depends[name]:
            visit(dep.replace("-", "_"), (*chain, norm))
        seen.add(norm)
        order.append(name)

    for module in wanted:
        norm = module.replace("-", "_")
        if norm in by_norm:
            visit(norm, ())
    return order


# -- the initramfs ---------------------------------------------------------------------------

INIT = r"""#!/bin/busybox sh
# rootfs initramfs /init: NIC + NFS modules, DHCP, option 17 -> NFS root, switch_root.
# Generated by rootfs/netboot/boot/initramfs.py; see its docstring for why each step is here.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say() { echo "rootfs-initramfs: $*"; }
# A shell on the console to look around; where nobody types (a test) it ends at EOF, the kernel
# panics and panic=N on the command line reboots (QEMU -no-reboot: exits).
fail() { say "FAILED: $*"; say "a shell follows; 'rootfs trace HOST' shows the server"; exec sh; }

for m in $(cat /lib/modules/order); do insmod "/lib/modules/$m.ko" 2>/dev/null; done

bootif= ; init=/sbin/init
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        BOOTIF=01-*) bootif=$(echo "${arg#BOOTIF=01-}" | tr - : | tr A-F a-f) ;;
        init=*) init=${arg#init=} ;;
    esac
done

iface= ; tries=0
while [ -z "$iface" ] && [ $tries -lt 50 ]; do
    for dev in /sys/class/net/*; do
        name=${dev##*/}
        [ "$name" = lo ] && continue
        if [ -z "$bootif" ] || [ "$(cat "$dev/address")" = "$bootif" ]; then iface=$name; break; fi
    done
    [ -n "$iface" ] || { sleep 0.2; tries=$((tries + 1)); }
done
[ -n "$iface" ] || fail "no network interface${bootif:+ with MAC $bootif}"
say "DHCP on $iface${bootif:+ ($bootif)}"
ip link set lo up
ip link set "$iface" up
udhcpc -i "$iface" -f -q -n -t 10 -T 2 -O rootpath -O hostname -s /etc/udhcpc.script \
    || fail "no DHCP lease on $iface"
. /run/lease
[ -n "$rootpath" ] || fail "the DHCP server sent no root path (option 17)"

cache= ; quota= ; state=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        rootfs.cache=*) cache=${arg#rootfs.cache=} ;;
        rootfs.cache_quota=*) quota=${arg#rootfs.cache_quota=} ;;
        rootfs.cache_state=*) state=${arg#rootfs.cache_state=} ;;
    esac
done
root=/root
if [ -n "$cache" ]; then
    if [ -d /opt/rootfs-cache ]; then
        root=/nfs  # the NFS root stays private: / will be the cache mount of it
    else
        say "rootfs.cache=$cache but this initramfs carries no cache runtime: booting uncached"
        cache=
    fi
fi

path=${rootpath%%,*}
opts=
case "$rootpath" in *,*) opts=${rootpath#*,} ;; esac
case "$path" in
    [0-9]*.[0-9]*.[0-9]*.[0-9]*:*) server=${path%%:*}; path=${path#*:} ;;
    *) server=${serverid:-$siaddr} ;;
esac
case ",$opts," in *,lock,*|*,nolock,*) ;; *) opts=${opts:+$opts,}nolock ;; esac
say "ip=$ip hostname=${hostname:-} root=$server:$path ($opts)"
mkdir -p /root "$root"
n=0
until mount -t nfs -o "$opts,addr=$server" "$server:$path" "$root"; do
    n=$((n + 1)); [ $n -ge 10 ] && fail "cannot mount $server:$path"
    sleep 2
done
if [ -n "$cache" ]; then
    # The daemon's runtime moves to a tmpfs of its own: switch_root empties the initramfs, and
    # the daemon must outlive it. argv[0] "@rootfs-cache" makes systemd's shutdown spare it.
    rt=/run/rootfs-cache
    mkdir -p $rt && mount -t tmpfs -o mode=0755 rootfs-cache-runtime $rt
    mv /opt/rootfs-cache/* $rt/
    say "cache on $cache${quota:+, quota $quota bytes}"
    LD_LIBRARY_PATH=$rt/lib/x86_64-linux-gnu:$rt/usr/lib/x86_64-linux-gnu \
    PYTHONHOME=$rt/usr PYTHONPATH=$rt/usr/lib/python3/dist-packages PYTHONDONTWRITEBYTECODE=1 \
        $rt/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --argv0 @rootfs-cache $rt/usr/bin/python3.11 \
        -m rootfs.cache.boot --source /nfs --mountpoint /root --device "$cache" \
        ${quota:+--quota "$quota"} ${state:+--host-state "$state"} </dev/null >/dev/console 2>&1 &
    daemon=$!
    n=0
    until grep -q " /root fuse" /proc/mounts; do
        kill -0 $daemon 2>/dev/null || break
        n=$((n + 1)); [ $n -ge 1200 ] && break
        sleep 0.1
    done
    if grep -q " /root fuse" /proc/mounts; then
        root=/root
        say "root served through the cache"
    else
        kill $daemon 2>/dev/null
        say "the cache did not start (see above): booting uncached, from NFS"
    fi
fi
[ -x "$root$init" ] || [ -L "$root$init" ] || fail "$init not found in $server:$path"
export ROOTFS_IP="$ip" ROOTFS_HOSTNAME="${hostname:-}"
export ROOTFS_ROOT="$server:$path" ROOTFS_SERVER="$server"
say "switching to $init"
umount /sys /proc
exec switch_root "$root" "$init"
"""

UDHCPC_SCRIPT = r"""#!/bin/busybox sh
# udhcpc hook: configure the interface and save the lease for /init (udhcpc passes option 17 as
# $rootpath, the server as $serverid and next-server as $siaddr).
case "$1" in
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        for r in $router; do ip route add default via "$r" dev "$interface" 2>/dev/null; break; done
        {
            echo "ip='$ip'"; echo "rootpath='$rootpath'"; echo "hostname='$hostname'"
            echo "serverid='$serverid'"; echo "siaddr='$siaddr'"
        } > /run/lease
        ;;
esac
exit 0
"""


def build_initramfs(
    kernel: Kernel,
    cache: Path,
    *,
    busybox: Path = BUSYBOX,
    init: str = INIT,
    runtime: Path | None = None,
) -> Path:
    """A gzip'd newc cpio (what the kernel unpacks) with busybox, the modules and /init; cached
    as `cache/initramfs-<digest of its inputs>.img`. With *runtime* (`runtime.build_runtime`)
    it also carries the cache daemon under /opt/rootfs-cache, for cached clients."""
    if not busybox.is_file():
        raise UserError(f"{busybox} not found; apt-get install busybox-static")
    if b"ld-linux" in busybox.read_bytes()[:65536]:
        raise UserError(f"{busybox} is dynamically linked; install busybox-static")
    parts = [FORMAT, kernel.key, _file_digest(busybox), init, UDHCPC_SCRIPT]
    key = _digest([*parts, runtime.name] if runtime is not None else parts)
    target = cache / f"initramfs-{key}.img"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    cpio = Cpio()
    for d in ("bin", "dev", "etc", "lib", "lib/modules", "proc", "sys", "run", "root", "tmp"):
        cpio.directory(d)
    cpio.node("dev/console", 0o600, major=5, minor=1)
    cpio.node("dev/kmsg", 0o600, major=1, minor=11)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    cpio.symlink("bin/sh", "busybox")
    cpio.file("init", init.encode(), 0o755)
    cpio.file("etc/udhcpc.script", UDHCPC_SCRIPT.encode(), 0o755)
    names = (kernel.modules / "order").read_text().split()
    cpio.file("lib/modules/order", "".join(f"{n}\n" for n in names).encode(), 0o644)
    for name in names:
        cpio.file(f"lib/modules/{name}.ko", (kernel.modules / f"{name}.ko").read_bytes(), 0o644)
    if runtime is not None:
        cpio.tree(runtime, "opt/rootfs-cache")
    # mtime 0 in the gzip header too: the same inputs give the same bytes.
    atomic_write_bytes(target, gzip.compress(cpio.finish(), compresslevel=6, mtime=0))
    return target


class Cpio:
    """The "newc" cpio format (the kernel's initramfs format, Documentation/driver-api/
    early-userspace/buffer-format.rst): a 110-byte ASCII header per entry, name and data each
    padded to 4 bytes, ended by TRAILER!!!. Written here so building needs no cpio binary and
    every timestamp and owner is fixed (reproducible images)."""

    def __init__(self) -> None:
        self._out = io.BytesIO()
        self._ino = 1

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        raw = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(raw), 0)
        self._ino += 1
        self._out.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        self._out.write(raw + b"\0" * (-(110 + len(raw)) % 4))
        self._out.write(data + b"\0" * (-len(data) % 4))

    def directory(self, name: str, mode: int = 0o755) -> None:
        self._entry(name, 0o040000 | mode)

    def file(self, name: str, data: bytes, mode: int) -> None:
        self._entry(name, 0o100000 | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def node(self, name: str, mode: int, *, major: int, minor: int) -> None:
        self._entry(name, 0o020000 | mode, rdev=(major, minor))

    def tree(self, top: Path, prefix: str) -> None:
        """Everything under *top* (directories, files with their modes, symlinks) at *prefix*.
        The kernel's unpacker creates no missing parents: each level of *prefix* gets an entry."""
        parts = prefix.split("/")
        for depth in range(1, len(parts) + 1):
            self.directory("/".join(parts[:depth]))
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            rel = os.path.relpath(dirpath, top)
            base = prefix if rel == "." else f"{prefix}/{rel}"
            for name in [*dirnames, *sorted(filenames)]:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                if os.path.islink(path):
                    self.symlink(f"{base}/{name}", os.readlink(path))
                elif name in dirnames:
                    self.directory(f"{base}/{name}", st.st_mode & 0o7777)
                else:
                    with open(path, "rb") as f:
                        self.file(f"{base}/{name}", f.read(), st.st_mode & 0o7777)

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self._out.getvalue()


# -- all together ----------------------------------------------------------------------------


def prepare(
    boot_dir: Path,
    cache: Path,
    *,
    package: str = DEFAULT_PACKAGE,
    deb: Path | None = None,
    kernel_name: str = "vmlinuz",
    initrd_name: str = "initrd.img",
    modules: Sequence[str] = DEFAULT_MODULES,
    cached_initrd_name: str | None = None,
) -> BootImages:
    """Fetch (or take) the kernel .deb, build the initramfs, and install both into the TFTP boot
    directory under the names [boot] kernel/initrd use. Installing replaces atomically and only
    when the content differs, so a client mid-transfer never reads half a file."""
    cache.mkdir(parents=True, exist_ok=True)
    kernel = unpack_kernel(deb or fetch_deb(package, cache), cache, modules)
    initrd = build_initramfs(kernel, cache)
    images = [(kernel.vmlinuz, kernel_name), (initrd, initrd_name)]
    if cached_initrd_name is not None:
        cached = build_initramfs(kernel, cache, runtime=build_runtime(cache))
        images.append((cached, cached_initrd_name))
    installed = []
    for source, name in images:
        dest = boot_dir / name
        if not dest.exists() or _file_digest(dest) != _file_digest(source):
            dest.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(dest, source.read_bytes())
        installed.append(dest)
    return BootImages(kernel=kernel, initrd=initrd, installed=tuple(installed))


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _digest(parts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:20]


def _run(argv: list[str], *, what: str, cwd: Path | None = None) -> str:
    exe = shutil.which(argv[0])
    if exe is None:
        raise UserError(f"{argv[0]} not found: {what} needs apt (a Debian system)")
    proc = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, cwd=cwd, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise UserError(f"{what} failed: {detail[-1] if detail else proc.returncode}")
    return proc.stdout


def iter_modules(kernel: Kernel) -> Iterator[str]:
    """The module names the initramfs loads, in order (for `rootfs boot initramfs` to print)."""
    yield from (kernel.modules / "order").read_text().split()

"""The Python runtime a cached client's initramfs carries, to run the cache daemon before `/`.

A cached client serves its own root through rootfs's FUSE cache (`rootfs.cache.boot`), so the
daemon must run before there is a root to run it from. The choice: carry Debian's own Python and
the daemon's dependencies in the initramfs, unpacked from the same Debian release's packages
(``apt-get download``, never installed on the server), plus this project's ``rootfs`` package.
The alternative, running the daemon from the NFS root before the switch, would tie every base to
Python, pyfuse3 and trio at compatible versions, and the daemon would page its own code in over
the NFS it must survive losing. Carried in RAM, it keeps serving cached files when the server is
gone.

The tree is pruned (tests, IDLE, tkinter, docs, locales), compiled to sourceless ``.pyc``
(``unchecked-hash``: the initramfs has no meaningful mtimes) and cached under the boot cache by
the digests of its inputs, like the kernel.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import rootfs
from rootfs.errors import UserError

FORMAT = "1"  # bump when the layout of the runtime changes: part of its cache key
PACKAGES = (
    "libc6",
    "zlib1g",
    "libexpat1",
    "libffi8",
    "libssl3",
    "libbz2-1.0",
    "liblzma5",
    "libuuid1",
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "libfuse3-3",
    "libxxhash0",
    "python3-pyfuse3",
    "python3-xxhash",
    "python3-trio",
    "python3-attr",
    "python3-sniffio",
    "python3-outcome",
    "python3-sortedcontainers",
    "python3-idna",
    "python3-async-generator",
    "python3-exceptiongroup",
)
PYTHON = "usr/bin/python3.11"
LOADER = "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"  # the file (lib64/ links to it)
LIBRARY_PATH = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu")
STDLIB = "usr/lib/python3.11"
SITE = "usr/lib/python3/dist-packages"
# Never imported by the daemon: removed to keep the image (and its TFTP transfer) small.
PRUNE = (
    "usr/share",
    "usr/lib/python3.11/test",
    "usr/lib/python3.11/idlelib",
    "usr/lib/python3.11/tkinter",
    "usr/lib/python3.11/lib2to3",
    "usr/lib/python3.11/ensurepip",
    "usr/lib/python3.11/pydoc_data",
    "usr/lib/python3.11/turtledemo",
    "usr/lib/python3.11/distutils",
    "usr/lib/python3.11/config-3.11-x86_64-linux-gnu",
    "usr/lib/x86_64-linux-gnu/gconv",
    "usr/libexec",
    "sbin",
    "etc",
    "var",
)


def fetch_debs(names: Iterable[str], cache: Path) -> list[Path]:
    """The .deb of each package in `cache/debs`, downloading those not there in one apt call.

    A .deb already cached under a package's name is reused (kernel package names carry the ABI
    version, so the same name means the same kernel), so reruns work offline."""
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    wanted = list(names)
    missing = [n for n in wanted if not sorted(debs.glob(f"{n}_*.deb"))]
    if missing:
        with tempfile.TemporaryDirectory(dir=debs, prefix=".download-") as tmp:
            os.chmod(tmp, 0o755)  # apt downloads as _apt
            proc = subprocess.run(
                ["apt-get", "download", "-q", *missing],
                cwd=tmp,
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                detail = (proc.stderr or proc.stdout).strip().splitlines()
                raise UserError(
                    f"apt-get download {' '.join(missing)} failed:"
                    f" {detail[-1] if detail else proc.returncode}"
                )
            for got in Path(tmp).glob("*.deb"):
                os.replace(got, debs / got.name)
    found = []
    for name in wanted:
        matches = sorted(debs.glob(f"{name}_*.deb"))
        if not matches:
            raise UserError(f"apt-get download {name} produced no .deb")
        found.append(matches[-1])
    return found


def _package_sources() -> list[Path]:
    root = Path(rootfs.__file__).parent
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def build_runtime(cache: Path, *, packages: Iterable[str] = PACKAGES) -> Path:
    """The runtime tree (``usr/``, ``lib/``, ``lib64/``), cached as `cache/runtime-<key>`."""
    debs = fetch_debs(packages, cache)
    sources = _package_sources()
    package_root = Path(rootfs.__file__).parent
    h = hashlib.sha256(FORMAT.encode())
    for path in [*debs, *sources]:
        h.update(str(path.relative_to(package_root) if path in sources else path.name).encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    target = cache / f"runtime-{h.hexdigest()[:20]}"
    if (target / PYTHON).exists():
        return target
    with tempfile.TemporaryDirectory(dir=cache, prefix=".runtime-") as tmp:
        tree = Path(tmp) / "tree"
        tree.mkdir()
        for deb in debs:
            proc = subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], capture_output=True)
            if proc.returncode != 0:
                raise UserError(f"dpkg-deb -x {deb} failed: {proc.stderr.decode().strip()}")
        for rel in PRUNE:
            shutil.rmtree(tree / rel, ignore_errors=True)
        for binary in (tree / "usr/bin").iterdir():
            if binary.name != "python3.11":
                binary.unlink()
        _relative_links(tree)
        ours = tree / SITE / "rootfs"
        for source in sources:
            dest = ours / source.relative_to(package_root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
        _compile(tree)
        os.replace(tree, target)
    return target


def _relative_links(tree: Path) -> None:
    """Make absolute symlinks (``lib64/ld-linux-x86-64.so.2 -> /lib/...``) relative: the tree
    runs from wherever the initramfs puts it, where an absolute target would miss. Links into
    what was pruned go."""
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in [*dirnames, *filenames]:
            link = Path(dirpath) / name
            if link.is_symlink() and (target := os.readlink(link)).startswith("/"):
                link.unlink()
                link.symlink_to(os.path.relpath(tree / target.lstrip("/"), link.parent))
            if link.is_symlink() and not link.exists():  # into a pruned part (etc/)
                link.unlink()


def python_argv(runtime: Path, argv0: str = "python3") -> list[str]:
    """How to start the runtime's Python from where it is (its own loader and libraries)."""
    return [
        str(runtime / LOADER),
        "--argv0",
        argv0,
        "--library-path",
        ":".join(str(runtime / p) for p in LIBRARY_PATH),
        str(runtime / PYTHON),
    ]


def python_env(runtime: Path) -> dict[str, str]:
    """The environment that runtime's Python needs to find its library and packages."""
    return {
        "PYTHONHOME": str(runtime / "usr"),
        "PYTHONPATH": str(runtime / SITE),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LD_LIBRARY_PATH": ":".join(str(runtime / p) for p in LIBRARY_PATH),
    }


def _compile(tree: Path) -> None:
    """Byte-compile everything with the runtime's own Python (its magic number is what will
    load them), keep only the ``.pyc`` beside where each ``.py`` was, drop the sources."""
    dirs = [str(tree / STDLIB), str(tree / SITE)]
    proc = subprocess.run(
        [*python_argv(tree), "-m", "compileall", "-q", "-b", "-j", "0",
         "--invalidation-mode", "unchecked-hash", *dirs],
        env={**python_env(tree), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    failed = [line for line in proc.stdout.splitlines() if "Error" in line]
    if proc.returncode != 0 and not failed:
        raise UserError(f"compiling the client's Python runtime failed: {proc.stderr.strip()}")
    for top in dirs:
        for dirpath, dirnames, filenames in os.walk(top):
            if "__pycache__" in dirnames:
                shutil.rmtree(os.path.join(dirpath, "__pycache__"))
                dirnames.remove("__pycache__")
            for name in filenames:
                if name.endswith(".py") and os.path.exists(os.path.join(dirpath, name + "c")):
                    os.unlink(os.path.join(dirpath, name))

"""Putting exports into effect: write the managed file, make the NFS server take it, and compare
what the server really exports with what it should (the I/O half of `rootfs.exports`).

rootfs owns exactly one file per backend (`kernel_file` or `ganesha_file`, plus, when it runs
ganesha itself, a server config, log and pid file under `<state>/ganesha/`). It never edits
/etc/exports or ganesha.conf: the administrator includes the managed file once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rootfs.config.site import Site
from rootfs.durable import atomic_write_bytes
from rootfs.errors import UserError
from rootfs.exports import ganesha, kernel
from rootfs.exports.model import ExportSet, desired_exports

EXPORTFS = "exportfs"
GANESHA = "ganesha.nfsd"
START_TIMEOUT = 60.0  # seconds for a started ganesha.nfsd to write its pid (loaded CI machines)


@dataclass(frozen=True)
class GaneshaFiles:
    """Where a rootfs-managed ganesha.nfsd keeps its config, log, pid and recovery state."""

    config: Path
    log: Path
    pid: Path
    recovery: Path

    @classmethod
    def for_site(cls, site: Site) -> GaneshaFiles:
        base = site.config.state_dir / "ganesha"
        return cls(base / "ganesha.conf", base / "ganesha.log", base / "ganesha.pid", base / "v4")


@dataclass(frozen=True)
class Rendered:
    """The managed file for one backend: where it goes and what it holds."""

    backend: str
    path: Path
    text: str
    exports: ExportSet


@dataclass(frozen=True)
class ApplyResult:
    """What `apply` did, for the CLI to print."""

    path: Path
    changed: bool
    action: str  # "exportfs -ra", "reloaded ganesha.nfsd (pid N)", "started ganesha.nfsd ..."
    warnings: tuple[str, ...]


def managed_file(site: Site, backend: str) -> Path:
    """The backend's managed file; relative paths in site.toml are relative to the site."""
    cfg = site.config.exports
    return site.root / (cfg.kernel_file if backend == "kernel" else cfg.ganesha_file)


def render(site: Site, backend: str | None = None) -> Rendered:
    """The managed file the inventory implies; ganesha ids are kept from the file on disk."""
    backend = backend or site.config.exports.backend
    exports = _existing(desired_exports(site))
    path = managed_file(site, backend)
    if backend == "kernel":
        text = kernel.render_kernel(exports.exports)
    else:
        previous = ganesha.parse_export_ids(_read(path) or "")
        text = ganesha.render_ganesha(exports.exports, previous)
    return Rendered(backend=backend, path=path, text=text, exports=exports)


def apply(site: Site, *, run_in: Sequence[str] = ()) -> ApplyResult:
    """Write the managed file (atomically, only if it changed) and make the server load it.

    `run_in` prefixes the command that starts a managed ganesha.nfsd (for example
    `ip netns exec NS`), so it can serve from a network namespace.
    """
    rendered = render(site)
    changed = _write(rendered.path, rendered.text)
    if rendered.backend == "kernel":
        action = _exportfs_reload(rendered.path)
    elif site.config.exports.manage_ganesha:
        action = _start_or_reload_managed(site, rendered.path, run_in)
    else:
        action = _reload_ganesha(rendered.path, Path(site.config.exports.ganesha_pid_file))
    return ApplyResult(rendered.path, changed, action, rendered.exports.warnings)


def apply_if_auto(site: Site) -> ApplyResult | None:
    """`apply` when site.toml says `[exports] auto = true`: what `host add/remove` and `build`
    call, so the exports follow the inventory without a separate step."""
    return apply(site) if site.config.exports.auto else None


def check(site: Site) -> list[str]:
    """Differences between what should be exported and what is; empty when in step."""
    rendered = render(site)
    drift: list[str] = []
    on_disk = _read(rendered.path)
    if on_disk is None:
        drift.append(f"file: {rendered.path} does not exist; run 'rootfs exports apply'")
    elif on_disk != rendered.text:
        drift.append(
            f"file: {rendered.path} differs from the inventory; run 'rootfs exports apply'"
        )
    if rendered.backend == "kernel":
        output = _run_exportfs(["-v"], rendered.path)
        try:
            live = kernel.parse_exportfs_v(output)
        except ValueError as exc:  # an exportfs whose output format we do not know
            raise UserError(f"exports check: {exc}; compare by hand with 'exportfs -v'") from exc
        drift += kernel.compare_kernel(
            rendered.exports.exports, live, export_root=str(site.config.export_root)
        )
    else:
        cfg = site.config.exports
        pid_file = GaneshaFiles.for_site(site).pid if cfg.manage_ganesha else cfg.ganesha_pid_file
        pid = ganesha_pid(Path(pid_file))
        if pid is None:
            drift.append(f"server: ganesha.nfsd is not running (no live pid in {pid_file})")
    return drift


def ganesha_pid(pid_file: Path) -> int | None:
    """The pid of the ganesha.nfsd named by `pid_file`, if that process is alive and is ganesha
    (a stale pid file may name a recycled pid)."""
    text = _read(pid_file)
    if not text or not text.strip().isdigit():
        return None
    pid = int(text.strip())
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    return pid if GANESHA.startswith(comm) else None  # comm is cut at 15 characters


def _existing(exports: ExportSet) -> ExportSet:
    """Leave out trees not built yet: both servers refuse to export a missing directory, and
    an inventory entry made with --no-build must not break everybody else's exports."""
    kept = tuple(e for e in exports.exports if Path(e.path).is_dir())
    skipped = tuple(
        f"not exported: {e.path} ({e.what}) does not exist yet; run 'rootfs build'"
        for e in exports.exports
        if e not in kept
    )
    return ExportSet(exports=kept, warnings=exports.warnings + skipped)


# -- backends ----------------------------------------------------------------------------------


def _exportfs_reload(path: Path) -> str:
    _run_exportfs(["-ra"], path)
    return "exportfs -ra"


def _run_exportfs(args: list[str], path: Path) -> str:
    exe = shutil.which(EXPORTFS) or shutil.which(EXPORTFS, path="/usr/sbin:/sbin")
    if exe is None:
        raise UserError(
            f"{path}: exportfs not found, so the kernel NFS server cannot load the exports;"
            ' install nfs-kernel-server, or set backend = "ganesha" in site.toml [exports]'
        )
    proc = subprocess.run([exe, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        detail = lines[-1] if lines else f"exit status {proc.returncode}"
        raise UserError(
            f"{path}: 'exportfs {' '.join(args)}' failed: {detail}; is nfs-kernel-server running?"
        )
    return proc.stdout


def _reload_ganesha(path: Path, pid_file: Path) -> str:
    pid = ganesha_pid(pid_file)
    if pid is None:
        raise UserError(
            f"{path} written, but ganesha.nfsd is not running (no live pid in {pid_file}); start"
            f" it (systemctl start nfs-ganesha) with '%include \"{path}\"' in its ganesha.conf"
        )
    os.kill(pid, signal.SIGHUP)  # ganesha(8): SIGHUP re-reads every EXPORT block
    return f"reloaded ganesha.nfsd (pid {pid})"


def _start_or_reload_managed(site: Site, exports_file: Path, run_in: Sequence[str]) -> str:
    files = GaneshaFiles.for_site(site)
    files.recovery.mkdir(parents=True, exist_ok=True)
    server = ganesha.render_ganesha_server(
        bind=site.config.server_address, exports_file=exports_file, recovery_dir=files.recovery
    )
    _write(files.config, server)
    if ganesha_pid(files.pid) is not None:
        return _reload_ganesha(exports_file, files.pid)
    exe = shutil.which(GANESHA)
    if exe is None:
        raise UserError(
            f"{exports_file} written, but {GANESHA} is not installed; apt-get install"
            " nfs-ganesha nfs-ganesha-vfs (and rpcbind for NFSv3)"
        )
    with contextlib.suppress(FileNotFoundError):
        files.pid.unlink()  # stale: its process is gone (checked above)
    argv = [*run_in, exe, "-f", str(files.config), "-L", str(files.log), "-p", str(files.pid)]
    # It daemonizes; no pipes, or a daemon that kept them open would make us wait for its exit.
    proc = subprocess.run(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + START_TIMEOUT
    while (pid := ganesha_pid(files.pid)) is None:
        if time.monotonic() > deadline or proc.returncode != 0:
            tail = (_read(files.log) or "").strip().splitlines()[-3:]
            raise UserError(
                f"{GANESHA} did not start (exit {proc.returncode}); see {files.log}: "
                + " | ".join(tail)
            )
        time.sleep(0.1)
    return f"started {GANESHA} (pid {pid}, config {files.config})"


# -- files -------------------------------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read: {e}; fix the file or its permissions") from None


def _write(path: Path, text: str) -> bool:
    """Replace `path` with `text` if it differs; True when it was written. The directory must
    exist for system paths (its absence means the NFS server is not installed)."""
    if _read(path) == text:
        return False
    if not path.parent.is_dir():
        raise UserError(
            f"{path}: directory {path.parent} does not exist; install the NFS server that reads"
            " it, or set the file's path in site.toml [exports]"
        )
    try:
        atomic_write_bytes(path, text.encode(), mode=0o644)
    except OSError as e:
        raise UserError(f"{path}: cannot write: {e}; run as root or change the path") from None
    return True

"""What the inventory says must be exported, checked for least privilege (pure: no os, no trio).

Every host tree goes read-write to that host's address and nobody else, with root not squashed (a
root filesystem holds root-owned files the client must write), `sync` (a client's fsync must mean
the data is on disk: the tree is its only disk) and no subtree checking (it breaks renames across
directories and buys nothing when the export is a whole tree). Shared trees go read-only with root
squashed. A writable export to more than one address is refused unless the site says
`allow_wide_rw = true`, and then it is reported as a warning every time.

Both backends render from the same `Export` values, so they cannot disagree about who gets what.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import PurePosixPath

from rootfs.config.exports import Client, SharedExport
from rootfs.config.site import HostName, Site
from rootfs.errors import UserError


@dataclass(frozen=True)
class Export:
    """One exported directory and the clients allowed to mount it."""

    path: PurePosixPath
    clients: tuple[Client, ...]
    rw: bool
    root_squash: bool
    host: HostName | None  # the host owning the tree; None for a shared export
    what: str  # for messages: "host pc1" or "exports.shared[0]"

    @property
    def pseudo(self) -> str:
        """The NFSv4 pseudo path: the real path, so v3 and v4 clients mount the same string
        (the root path DHCP hands out works for both)."""
        return str(self.path)

    @property
    def fsid(self) -> str:
        """A stable UUID for the kernel's `fsid=`, derived from the path.

        Explicit because a tree may live on a filesystem without a UUID or block device (tmpfs,
        overlayfs, FUSE), where nfsd refuses an export without one; derived from the path so it
        never changes between renders (clients keep valid file handles) and never collides
        with an administrator's small-integer fsids.
        """
        digest = hashlib.sha256(b"rootfs-export:" + str(self.path).encode()).digest()
        return str(uuid.UUID(bytes=digest[:16]))


@dataclass(frozen=True)
class ExportSet:
    """The exports a site implies, plus warnings the user must see (allowed wide rw)."""

    exports: tuple[Export, ...]
    warnings: tuple[str, ...]


def is_wide(client: Client) -> bool:
    """True when `client` can match more than one machine."""
    return not isinstance(client, IPv4Address) and not (
        isinstance(client, IPv4Network) and client.num_addresses == 1
    )


def client_text(client: Client) -> str:
    """A client as both exports(5) and ganesha write it."""
    if isinstance(client, IPv4Network) and client.num_addresses == 1:
        return str(client.network_address)
    return str(client)


def desired_exports(site: Site) -> ExportSet:
    """Every host tree and every `[[exports.shared]]` tree, validated; a UserError naming the
    host or TOML key when a path cannot be written safely or an export would be too wide."""
    cfg = site.config.exports
    export_root = PurePosixPath(site.config.export_root)
    exports: list[Export] = []
    for host in site.hosts:
        path = PurePosixPath(site.host_root(host))
        check_path(path, f"host {host.name}: site.toml paths.export_root")
        exports.append(
            Export(
                path=path,
                clients=(host.ip,),
                rw=True,
                root_squash=False,
                host=host.name,
                what=f"host {host.name}",
            )
        )
    host_paths = {e.path for e in exports}
    warnings: list[str] = []
    seen: dict[PurePosixPath, str] = {}
    for shared in cfg.shared:
        export = _shared_export(site, shared, export_root)
        where = f"site.toml: {shared.key}"
        if (other := seen.setdefault(export.path, shared.key)) != shared.key:
            raise UserError(
                f"{where}.path: {export.path} is already exported by {other}; merge them"
            )
        for host_path in host_paths:
            if export.path == host_path or export.path in host_path.parents:
                raise UserError(
                    f"{where}.path: {export.path} contains the host tree {host_path}, which"
                    " must be exported to its own host only; export a directory beside it"
                )
            if host_path in export.path.parents:
                raise UserError(
                    f"{where}.path: {export.path} is inside the host tree {host_path}; shared"
                    " trees must live outside host trees"
                )
        if export.path == export_root or export.path in export_root.parents:
            raise UserError(
                f"{where}.path: {export.path} contains the export root {export_root}, so every"
                " host's tree would be exported with it; export a directory beside the trees"
            )
        wide = [client_text(c) for c in export.clients if is_wide(c)]
        if export.rw and wide:
            if not cfg.allow_wide_rw:
                raise UserError(
                    f"{where}: read-write export of {export.path} to {', '.join(wide)} refused:"
                    " any machine there could change it; set rw = false, list single"
                    " addresses, or set allow_wide_rw = true in [exports] if you mean it"
                )
            warnings.append(
                f"warning: {export.path} is exported read-write to {', '.join(wide)}"
                " (allow_wide_rw = true in site.toml [exports])"
            )
        exports.append(export)
    return ExportSet(exports=tuple(exports), warnings=tuple(warnings))


def check_path(path: PurePosixPath, what: str) -> None:
    """Refuse paths that no exports file or ganesha config can carry on one line, or that are
    not absolute. Spaces and quotes are fine: the renderers quote them."""
    text = str(path)
    if not path.is_absolute():
        raise UserError(f"{what}: export path {text!r} is not absolute; use an absolute path")
    if ".." in path.parts:
        raise UserError(f"{what}: export path {text!r} contains '..'; write it without '..'")
    bad = next((c for c in text if ord(c) < 0x20 or ord(c) == 0x7F), None)
    if bad is not None:
        raise UserError(
            f"{what}: export path {text!r} contains the control character {bad!r}, which NFS"
            " export files cannot carry; rename the directory"
        )


def _shared_export(site: Site, shared: SharedExport, export_root: PurePosixPath) -> Export:
    where = f"site.toml: {shared.key}"
    path = export_root / shared.path  # an absolute shared.path replaces the root
    check_path(path, f"{where}.path")
    clients = shared.clients
    if clients is None:
        clients = tuple(s.network for s in site.config.subnets)
        if not clients:
            raise UserError(
                f'{where}.clients: missing and site.toml has no [[subnet]]; add clients = ["..."]'
            )
    return Export(
        path=path,
        clients=clients,
        rw=shared.rw,
        root_squash=True,
        host=None,
        what=shared.key,
    )

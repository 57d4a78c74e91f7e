"""The nfs-ganesha backend: a file of EXPORT blocks, and the server config rootfs uses when it
runs ganesha.nfsd itself (pure). Block syntax per ganesha-export-config(8).

Export_Id matters more than it looks: ganesha treats a changed id as "remove the old export, add a
new one" on reload, and refuses to change an id's Path. So ids are kept from the previous managed
file, a new host gets the low 16 bits of its address when free (readable, and stable without any
state), and anything else takes the first free id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address
from pathlib import PurePath

from rootfs.errors import UserError
from rootfs.exports.model import Export, client_text

HEADER = (
    "# Managed by rootfs ('rootfs exports apply'); edits here are overwritten.\n"
    "# EXPORT blocks per ganesha-export-config(8); include this file from ganesha.conf.\n"
)
MAX_EXPORT_ID = 65535  # ganesha-export-config(8): "between 0 and 65535"; 0 is the pseudo root
_ID_AND_PATH = re.compile(r'Export_Id = (\d+);\s*Path = ("(?:\\.|[^"\\])*");')
# The only characters ganesha's lexer accepts in an %include file name (conf_lex.l INCLPATH).
_INCLUDE_PATH = re.compile(r"/?[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")


def quote(text: str) -> str:
    """A ganesha double-quoted string: backslash escapes for `\\` and `"`."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unquote(token: str) -> str:
    """Inverse of `quote` for the strings rootfs wrote."""
    return re.sub(r"\\(.)", r"\1", token[1:-1])


def parse_export_ids(text: str) -> dict[str, int]:
    """Export_Id by Path from a managed file rootfs wrote earlier (other text is ignored)."""
    return {unquote(m[2]): int(m[1]) for m in _ID_AND_PATH.finditer(text)}


def assign_export_ids(exports: Iterable[Export], previous: Mapping[str, int]) -> dict[str, int]:
    """A unique, stable Export_Id for every export path (see the module docstring)."""
    paths = [(str(e.path), e) for e in exports]
    ids: dict[str, int] = {}
    used: set[int] = set()

    def take(path: str, candidate: int | None) -> None:
        if candidate is None or not 0 < candidate <= MAX_EXPORT_ID:
            return
        if path not in ids and candidate not in used:
            ids[path] = candidate
            used.add(candidate)

    for path, _ in paths:
        take(path, previous.get(path))
    for path, export in paths:
        if export.host is not None:
            ip = next(c for c in export.clients if isinstance(c, IPv4Address))
            take(path, int(ip) & 0xFFFF)
    free = (i for i in range(1, MAX_EXPORT_ID + 1) if i not in used)
    for path, _ in paths:
        if path not in ids:
            try:
                take(path, next(free))
            except StopIteration:
                raise UserError(
                    f"more than {MAX_EXPORT_ID} exports; ganesha cannot number them"
                ) from None
    return ids


def render_ganesha(exports: Iterable[Export], previous_ids: Mapping[str, int]) -> str:
    """The managed file of EXPORT blocks, one per export, in inventory order."""
    exports = tuple(exports)
    ids = assign_export_ids(exports, previous_ids)
    blocks = [HEADER]
    for export in exports:
        clients = ", ".join(client_text(c) for c in export.clients)
        squash = "root_squash" if export.root_squash else "no_root_squash"
        blocks.append(
            f"\n# {export.what}\n"
            "EXPORT {\n"
            f"\tExport_Id = {ids[str(export.path)]};\n"
            f"\tPath = {quote(str(export.path))};\n"
            f"\tPseudo = {quote(export.pseudo)};\n"
            "\tProtocols = 3, 4;\n"
            "\tSecType = sys;\n"
            # Nobody outside the CLIENT list gets anything, whatever EXPORT_DEFAULTS says.
            "\tAccess_Type = None;\n"
            "\tSquash = root_squash;\n"
            # rootfs rewrites these trees behind ganesha's back (build, base update: rename over
            # the old file). With the default 60 s, its cache keeps serving a replaced file's old
            # inode, so a client booting right after `rootfs base update` got the old base (found
            # by the end-to-end boot test). 0: revalidate attributes, hence dirents, every time.
            "\tAttr_Expiration_Time = 0;\n"
            "\tFSAL {\n"
            "\t\tName = VFS;\n"
            "\t}\n"
            "\tCLIENT {\n"
            f"\t\tClients = {clients};\n"
            f"\t\tAccess_Type = {'RW' if export.rw else 'RO'};\n"
            f"\t\tSquash = {squash};\n"
            "\t}\n"
            "}\n"
        )
    return "".join(blocks)


def render_ganesha_server(
    *, bind: IPv4Address, exports_file: PurePath, recovery_dir: PurePath
) -> str:
    """The whole ganesha.conf for a daemon rootfs starts itself (`manage_ganesha = true`).

    NFSv3 and v4 only, bound to the server address. NLM and RQUOTA are off: NLM needs
    rpc.statd, and diskless roots mount v3 with `nolock` or use v4's own locking. Graceless,
    because a 90-second grace period after every start would block v4 opens while clients boot.
    """
    include = str(exports_file)
    if not _INCLUDE_PATH.fullmatch(include):
        raise UserError(
            f"site.toml: exports.ganesha_file: ganesha cannot %include {include!r}; use a path of"
            " letters, digits, '.', '_', '-' and '/' only"
        )
    return (
        "# Managed by rootfs: the ganesha.nfsd it starts itself (manage_ganesha = true).\n"
        "NFS_CORE_PARAM {\n"
        f"\tBind_addr = {bind};\n"
        "\tProtocols = 3, 4;\n"
        "\tEnable_NLM = false;\n"
        "\tEnable_RQUOTA = false;\n"
        "}\n"
        "NFSv4 {\n"
        f"\tRecoveryRoot = {quote(str(recovery_dir))};\n"
        "\tGraceless = true;\n"
        "}\n"
        f'%include "{include}"\n'
    )

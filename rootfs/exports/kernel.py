"""The kernel nfsd backend: an exports(5) file, and reading back `exportfs -v` (pure).

exports(5) syntax, as nfs-utils parses it: one export per line, `path client(options) ...`; a
path with spaces is quoted with double quotes; any character may also be written as a backslash
and three octal digits, which is how a literal backslash or double quote survives the tokenizer
(a `"` only toggles quoting, and `\\ooo` is always decoded).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from rootfs.exports.model import Export, client_text

HEADER = (
    "# Managed by rootfs ('rootfs exports apply'); edits here are overwritten.\n"
    "# One line per export, exports(5) syntax; change site.toml [exports] or the inventory.\n"
)


def quote_path(path: str) -> str:
    """`path` as an exports(5) token: octal escapes for `\\` and `"`, double quotes around it
    when it holds a space. Control characters were refused earlier (`check_path`)."""
    escaped = path.replace("\\", "\\134").replace('"', "\\042")
    return f'"{escaped}"' if " " in escaped else escaped


def export_options(export: Export) -> tuple[str, ...]:
    """The option list of one export, in a fixed order so renders are byte-stable."""
    return (
        "rw" if export.rw else "ro",
        "sync",
        "no_subtree_check",
        "root_squash" if export.root_squash else "no_root_squash",
        f"fsid={export.fsid}",
    )


def render_kernel(exports: Iterable[Export]) -> str:
    """The managed exports file: a header, then one line per export."""
    lines = [HEADER]
    for export in exports:
        options = ",".join(export_options(export))
        clients = " ".join(f"{client_text(c)}({options})" for c in export.clients)
        lines.append(f"{quote_path(str(export.path))} {clients}\n")
    return "".join(lines)


# -- exportfs -v -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveExport:
    """One (path, client) pair the kernel exports right now, as `exportfs -v` shows it."""

    path: str
    client: str
    options: frozenset[str]


_CLIENT = re.compile(r"(?P<client>[^\s(]+)\((?P<options>[^)]*)\)\s*")


def parse_exportfs_v(text: str) -> list[LiveExport]:
    """Parse `exportfs -v` output.

    nfs-utils prints each export as `printf("%-14s\\t%s(opts)")`, or, when the path is longer
    than 14 characters, the path alone on a line and `\\t\\t<client>(opts)` on the next. Paths are
    printed raw (unquoted); anonymous clients print as `<world>`, which we map back to `*`.
    Lines that fit neither shape raise ValueError naming the line.
    """
    result: list[LiveExport] = []
    pending: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith("\t\t") and pending is not None:
            path, rest = pending, line[2:]
            pending = None
        elif "\t" in line:
            path, rest = line.split("\t", 1)
            path = path.rstrip(" ")
        else:
            pending = line
            continue
        m = _CLIENT.fullmatch(rest)
        if m is None:
            raise ValueError(f"exportfs -v line {number}: cannot read {line!r}")
        client = "*" if m["client"] == "<world>" else m["client"]
        options = frozenset(o for o in m["options"].split(",") if o)
        result.append(LiveExport(path=path, client=client, options=options))
    if pending is not None:
        raise ValueError(f"exportfs -v: path {pending!r} has no client line")
    return result


def compare_kernel(
    exports: Iterable[Export], live: Iterable[LiveExport], *, export_root: str
) -> list[str]:
    """Drift between what should be exported and what the kernel exports, one line each.

    Paths rootfs manages and everything under the export root (a removed host's tree that is
    still exported) are compared; the administrator's other exports are not ours to judge.
    Options are compared by meaning (rw/ro, root squashing, sync, subtree checking,
    fsid), since nfs-utils versions print different defaults in different orders.
    """
    wanted: dict[tuple[str, str], Export] = {}
    for export in exports:
        for client in export.clients:
            wanted[(str(export.path), _norm_client(client_text(client)))] = export
    managed_paths = {path for path, _ in wanted}
    drift: list[str] = []
    seen: set[tuple[str, str]] = set()
    for item in live:
        key = (item.path, _norm_client(item.client))
        under_root = item.path == export_root or item.path.startswith(export_root.rstrip("/") + "/")
        if item.path not in managed_paths and not under_root:
            continue
        wanted_export = wanted.get(key)
        if wanted_export is None:
            drift.append(f"unexpected: {item.path} is exported to {item.client}")
            continue
        export = wanted_export
        seen.add(key)
        want = set(export_options(export)) - {"sync"}
        have = set(item.options)
        missing = sorted(o for o in want if o not in have)
        if "async" in have:
            missing.append("sync (exported async)")
        if missing:
            drift.append(
                f"options: {item.path} to {item.client} lacks {', '.join(missing)}"
                f" (has {','.join(sorted(have))})"
            )
    for key, export in wanted.items():
        if key not in seen:
            drift.append(f"missing: {key[0]} to {key[1]} ({export.what})")
    return drift


def _norm_client(text: str) -> str:
    """Compare clients by value: 10.0.0.0/255.255.255.0 and 10.0.0.0/24 are the same."""
    try:
        if "/" in text:
            net = IPv4Network(text)
            return str(net.network_address) if net.num_addresses == 1 else str(net)
        return str(IPv4Address(text))
    except ValueError:
        return text

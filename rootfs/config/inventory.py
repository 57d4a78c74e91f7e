"""Edits to hostcfg/hosts.toml that keep the administrator's comments and ordering, and the
skeleton of a new site.

hosts.toml is a hand-maintained file under version control, so `rootfs host add/set/remove` must
change only the host in question. Every edit is validated as a whole file, by the loader itself
(`parse_hosts`), before it replaces the old one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from types import MappingProxyType

import tomlkit
from tomlkit.container import Container
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import AoT, Comment, InlineTable, Item, Table, Whitespace
from tomlkit.toml_document import TOMLDocument

from rootfs.config.site import HOSTS_TOML, SITE_TOML, Host, Site, parse_hosts
from rootfs.durable import atomic_write_bytes
from rootfs.errors import ConfigError, RootfsError, UserError

_NO_VARS: Mapping[str, str] = MappingProxyType({})


def add_host(
    site: Site,
    *,
    name: str,
    mac: str,
    ip: str | IPv4Address,
    base: str | None = None,
    overlays: Sequence[str] | None = None,
    mode: str | None = None,
    vars: Mapping[str, str] = _NO_VARS,
    cached: bool = False,
    cache_device: str | None = None,
    cache_quota: str | int | None = None,
) -> Host:
    """Append a `[hosts.NAME]` table holding only the keys given, so site defaults keep applying.

    `cached = true` is written only for a cached host; `cache_quota` as given ("4G" stays "4G").

    The whole resulting file is validated (duplicates, subnet, overlays) before anything is written.
    """
    doc = _load_doc(site)
    hosts = doc.get("hosts")
    if hosts is None:
        hosts = tomlkit.table(is_super_table=True)
        doc.add("hosts", hosts)
    if name in hosts:
        raise UserError(
            f"{HOSTS_TOML}: host {name!r} already exists; remove it first ('rootfs host remove')"
        )
    table = tomlkit.table()
    table["mac"] = mac.lower().replace("-", ":")  # the canonical form, as hosts are shown
    table["ip"] = str(ip)
    if base is not None:
        table["base"] = base
    if overlays is not None:
        table["overlays"] = list(overlays)
    if mode is not None:
        table["mode"] = mode
    if cached:
        table["cached"] = True
    if cache_device is not None:
        table["cache_device"] = cache_device
    if cache_quota is not None:
        table["cache_quota"] = cache_quota
    if vars:
        table["vars"] = dict(vars)
    hosts.append(name, table)
    _write_validated(site, doc.as_string())
    return _reload(site).host(name)


SETTABLE_KEYS = ("cached", "cache_device", "cache_quota", "base", "mode", "overlays")
"""What `rootfs host set` changes. Not mac or ip: a new address is a new tree; remove and add."""
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def parse_assignments(items: Iterable[str]) -> dict[str, object | None]:
    """`KEY=VALUE` words (as `rootfs host set` takes them) -> TOML values; None removes the key.

    Per key: cached is true/false (or yes/no, on/off, 1/0); overlays is a comma list; the others
    are strings, written as given. The values themselves are checked by the loader (`edit_host`).
    """
    changes: dict[str, object | None] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"{item!r}: expected KEY=VALUE, e.g. cached=true (KEY= removes KEY)")
        if key not in SETTABLE_KEYS:
            raise UserError(
                f"{key!r} cannot be set; use one of {', '.join(SETTABLE_KEYS)}"
                " (to change mac or ip, remove the host and add it again)"
            )
        if key in changes:
            raise UserError(f"{key} is given twice; give each key once")
        changes[key] = _assignment(key, value.strip()) if value.strip() else None
    return changes


def _assignment(key: str, value: str) -> object:
    if key == "cached":
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise UserError(f"cached={value}: expected true or false")
    if key == "overlays":
        names = [n.strip() for n in value.split(",")]
        if not all(names):
            raise UserError(
                f"overlays={value}: an empty name; list overlays separated by commas, in order,"
                " e.g. overlays=diskless,lab"
            )
        return names
    return value


@dataclass(frozen=True)
class HostEdit:
    """A validated change to one host, not yet written (`write_edit` does that)."""

    before: Host
    after: Host
    site: Site  # the site as it loads once the edit is written
    text: str  # the new hosts.toml
    changed: bool  # False: the file would stay as it is


def edit_host(site: Site, name: str, changes: Mapping[str, object | None]) -> HostEdit:
    """Set (or, for None, remove) keys of host `name`'s table, keeping comments and order.

    The result is loaded exactly as every command loads hosts.toml, so a value that would not load
    is refused here with the loader's own message, and nothing is written.
    """
    doc = _load_doc(site)
    text = doc.as_string()
    hosts_before = parse_hosts(text, site_root=site.root, config=site.config)
    before = Site(root=site.root, config=site.config, hosts=hosts_before).host(name)
    hosts = doc["hosts"]
    assert isinstance(hosts, Table | InlineTable)  # the file validated and names the host
    table = hosts[name]
    assert isinstance(table, Table | InlineTable)
    for key, value in changes.items():
        if value is None:
            if key in table:
                del table[key]
        else:
            _set_key(table, key, value)
    new_text = doc.as_string()
    hosts_after = parse_hosts(new_text, site_root=site.root, config=site.config)
    if [h for h in hosts_after if h.name != name] != [h for h in hosts_before if h.name != name]:
        raise RootfsError(f"{HOSTS_TOML}: changing {name} would change other hosts; not written")
    after = Site(root=site.root, config=site.config, hosts=hosts_after)
    return HostEdit(before, after.host(name), after, new_text, new_text != text)


def write_edit(site: Site, edit: HostEdit) -> Host:
    """Write what `edit_host` prepared (validated again) and read it back."""
    _write_validated(site, edit.text)
    return _reload(site).host(edit.after.name)


def remove_host(site: Site, name: str) -> Host:
    """Remove a host's table (with its vars) and the comment block directly above its header.

    Other comments stay: ones after the removed host's keys (e.g. above the next host, or at the
    end of the file) take its place rather than going with it.
    """
    doc = _load_doc(site)
    before = parse_hosts(doc.as_string(), site_root=site.root, config=site.config)
    removed = Site(root=site.root, config=site.config, hosts=before).host(name)
    hosts = doc["hosts"]
    assert isinstance(hosts, Table)  # the file validated and names the host
    siblings = [(k.key, v) for k, v in hosts.value.body if k is not None]
    index = [key for key, _ in siblings].index(name)
    tail = _tail(siblings[index][1])
    trailing = _pop_trailing_trivia(tail) if tail else []
    # Where the header stood: after the previous host's last line, else among the trivia of
    # its parent, the explicit [hosts] table or (when [hosts] is implicit) the document.
    previous = _tail(siblings[index - 1][1]) if index > 0 else None
    if previous is not None:
        body, pos = previous.body, len(previous.body)
    else:
        parent, key = (doc, "hosts") if hosts.is_super_table() else (hosts.value, name)
        body = parent.body
        pos = next(i for i, (k, _) in enumerate(body) if k is not None and k.key == key)
    # Delete through tomlkit's mapping before touching positions in the bodies by hand.
    del hosts[name]
    if len(siblings) == 1 and hosts.is_super_table():
        del doc["hosts"]  # an explicit, now empty [hosts] stays: it may carry comments
    while pos > 0 and isinstance(body[pos - 1][1], Comment):
        pos -= 1
        del body[pos]  # the comment block directly above the header describes the host
    if pos > 0 and isinstance(body[pos - 1][1], Whitespace):
        while trailing and isinstance(trailing[0], Whitespace):
            trailing.pop(0)  # no pile-up of blank lines where the host was
    body[pos:pos] = [(None, item) for item in trailing]
    text = doc.as_string().rstrip("\n")
    text = f"{text}\n" if text.strip() else ""  # one newline at the end, none in an empty file
    expected = tuple(h for h in before if h.name != name)
    if parse_hosts(text, site_root=site.root, config=site.config) != expected:
        raise RootfsError(f"{HOSTS_TOML}: removing {name} would change other hosts; not written")
    _write_validated(site, text)
    _reload(site)
    return removed


def init_site(target: Path) -> None:
    """Create a site skeleton at `target`: a fully commented site.toml, an example hosts.toml and
    the overlays/ directory (with the default overlay), refusing to overwrite an existing site."""
    for rel in (SITE_TOML, HOSTS_TOML):
        if (target / rel).exists():
            raise UserError(f"{target / rel} already exists; init a new site in an empty directory")
    (target / "hostcfg").mkdir(parents=True, exist_ok=True)
    (target / "overlays" / "diskless").mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target / SITE_TOML, SITE_TEMPLATE.encode())
    atomic_write_bytes(target / HOSTS_TOML, HOSTS_TEMPLATE.encode())


# -- tomlkit plumbing -------------------------------------------------------------------------


def _load_doc(site: Site) -> TOMLDocument:
    """The current file (not `site`'s snapshot), so edits made since loading are kept."""
    try:
        return tomlkit.parse(site.hosts_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return tomlkit.document()
    except (OSError, UnicodeDecodeError, TOMLKitError) as e:
        raise ConfigError(f"{HOSTS_TOML}: cannot read: {e}; fix the file and retry") from None


def _write_validated(site: Site, text: str) -> None:
    parse_hosts(text, site_root=site.root, config=site.config)  # raises before anything changes
    site.hosts_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(site.hosts_file, text.encode())


def _reload(site: Site) -> Site:
    """Read back what was written: the file on disk is what every later command will see."""
    text = site.hosts_file.read_text(encoding="utf-8")
    hosts = parse_hosts(text, site_root=site.root, config=site.config)
    return Site(root=site.root, config=site.config, hosts=hosts)


def _set_key(table: Table | InlineTable, key: str, value: object) -> None:
    """Set `key` in a host's table: in place if it is there (its comment kept), else right after
    the table's last key, above its subtables and the blank lines and comments that follow it
    (those belong to whatever comes next; tomlkit alone would append below them)."""
    if key in table or isinstance(table, InlineTable):
        table[key] = value
        return
    container = table.value
    body = container.body
    ends = [i for i, (k, v) in enumerate(body) if k is not None and not isinstance(v, Table | AoT)]
    if not ends:
        table[key] = value
        return
    # Only tomlkit's public Container API: lift off what follows the last key, add the key,
    # put the rest back in its order (tomlkit has no public "insert after").
    # append() may open a blank line above a table it adds back; each item's own indent is kept.
    moved = [(k, v, _indents(v)) for k, v in body[ends[-1] + 1 :]]
    for k, _, _ in reversed(moved):
        if k is None:
            body.pop()
        else:
            container.remove(k)
    container.append(key, value)
    for k, v, indents in moved:
        container.append(k, v)
        for item, indent in zip(_headers(v), indents, strict=True):
            item.trivia.indent = indent


def _headers(item: Item) -> list[Item]:
    """The items whose indent renders above a table header: the table, or each table of an AoT."""
    if isinstance(item, AoT):
        return list(item.body)
    return [item] if isinstance(item, Table) else []


def _indents(item: Item) -> list[str]:
    return [header.trivia.indent for header in _headers(item)]


def _tail(item: Item) -> Container | None:
    """The container holding the last lines of a table: its last subtable's, if it has one."""
    if not isinstance(item, Table):
        return None  # an inline table owns no lines around it
    container = item.value
    while container.body and isinstance(container.body[-1][1], Table):
        container = container.body[-1][1].value
    return container


def _pop_trailing_trivia(container: Container) -> list[Item]:
    """Remove and return the blank lines and comments after a table's last key."""
    trivia: list[Item] = []
    while container.body and isinstance(container.body[-1][1], Whitespace | Comment):
        trivia.insert(0, container.body.pop()[1])
    return trivia


SITE_TEMPLATE = """\
# rootfs site configuration. Every setting is optional; the value shown is the default.
# Remove the leading '#' of a setting to change it. Relative paths are relative to this directory.

#[server]
# The IPv4 address clients reach this server at for NFS and TFTP (DHCP next-server, root path).
#address = "10.0.0.1"

#[paths]
# Object store, base generations and per-host apply state.
#state_dir = "/var/lib/rootfs"
# Host root trees live in <export_root>/<ip>/ and are exported over NFS; boot files in boot/.
#export_root = "/tftpboot"

#[defaults]
# Applied to every host in hostcfg/hosts.toml that does not set its own value.
# The base (imported with 'rootfs base import') a host's tree is built from.
#base = "debian"
# Overlay directories under overlays/, layered over the base in this order.
#overlays = ["diskless"]
# How files reach a host tree: copy, reflink (copy-on-write clone), hardlink (to the object
# store: fastest, but only for clients that never write shared files), or auto (reflink if the
# filesystem supports it, else copy).
#mode = "auto"
# NFS mount options clients use for their root.
#nfs_options = "vers=3,tcp"

# One [[subnet]] per network clients live on. When any is given, every host's IP must be in one.
#[[subnet]]
# The network, with its prefix length (required).
#network = "10.0.0.0/24"
# Default route handed out by DHCP (optional).
#gateway = "10.0.0.1"
# DNS servers handed out by DHCP (optional).
#dns = ["10.0.0.1"]
# DNS search domain handed out by DHCP (optional).
#domain = "lab.example"

#[http]
# `rootfs serve` also serves the boot directory and the per-host configs over HTTP (the same
# files TFTP serves, by the same names). enabled, address and port are read when it starts.
#enabled = true
#address = "0.0.0.0"
#port = 80
# Open connections at most; one more is answered 503 (Service Unavailable) and closed.
#max_connections = 1024
# Seconds a client may take to send a request's line and headers (against slow "slowloris"
# clients), may keep an idle connection open between requests, and may stop reading a response.
#header_timeout = 10.0
#idle_timeout = 30.0
#send_timeout = 30.0
# Bytes of request line and headers at most; more is answered 431.
#max_header_bytes = 16384
# Event loops (threads) serving HTTP on the same socket; 0: one per CPU core, at most 4.
#loops = 0
"""

HOSTS_TEMPLATE = """\
# The inventory: one [hosts.NAME] table per client. NAME is its host name (lowercase letters,
# digits, hyphens). 'rootfs host add' and 'rootfs host remove' edit this file and keep comments.

# An example; remove the leading '#' to use it:
#[hosts.pc1]
#mac = "52:54:00:12:34:56"     # the NIC the client boots from
#ip = "10.0.0.11"              # its fixed address; its root is <export_root>/10.0.0.11
#base = "debian"               # optional, else [defaults] base in site.toml
#overlays = ["diskless"]       # optional, else [defaults] overlays
#mode = "copy"                 # optional, else [defaults] mode
#cached = false                # true: root served through a cache on the client's own disk
#cache_device = "LABEL=rootfs-cache"  # or an empty disk the client may format, like "/dev/vda"
#cache_quota = "4G"            # optional, else 70% of the cache filesystem
#[hosts.pc1.vars]              # optional, strings for overlay templates ({{ role }})
#role = "lab"
"""

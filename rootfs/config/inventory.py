"""Edits to hostcfg/hosts.toml that keep the administrator's comments and ordering, and the
skeleton of a new site.

hosts.toml is a hand-maintained file under version control, so `rootfs host add/remove` must change
only the host in question. Every edit is validated as a whole file before it replaces the old one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address
from pathlib import Path
from types import MappingProxyType

import tomlkit
from tomlkit.container import Container
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import Comment, Item, Table, Whitespace
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
) -> Host:
    """Append a `[hosts.NAME]` table holding only the keys given, so site defaults keep applying.

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
    if vars:
        table["vars"] = dict(vars)
    hosts.append(name, table)
    _write_validated(site, doc.as_string())
    return _reload(site).host(name)


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
#[hosts.pc1.vars]              # optional, strings for overlay templates ({{ role }})
#role = "lab"
"""

"""Round-trip edits of hostcfg/hosts.toml, the site skeleton, and atomic writes."""

from __future__ import annotations

import re
import stat
import tomllib
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from rootfs.config.inventory import HOSTS_TEMPLATE, SITE_TEMPLATE, add_host, init_site, remove_host
from rootfs.config.site import Host, HostName, Site, load_site
from rootfs.durable import atomic_write_bytes
from rootfs.errors import ConfigError, UserError

INVENTORY = """\
# Lab inventory. Keep sorted by room.

# Teacher desk
[hosts.pc1]   # front
mac = "52:54:00:00:00:01"  # onboard NIC
ip = "10.0.0.11"

# pc2 is the projector box
[hosts.pc2]
mac = "52:54:00:00:00:02"
ip = "10.0.0.12"
[hosts.pc2.vars]
role = "projector"

# pc3: back row
[hosts.pc3]
mac = "52:54:00:00:00:03"
ip = "10.0.0.13"

# end of inventory
"""

PC1 = """\
# Teacher desk
[hosts.pc1]   # front
mac = "52:54:00:00:00:01"  # onboard NIC
ip = "10.0.0.11"
"""
PC2 = """\
# pc2 is the projector box
[hosts.pc2]
mac = "52:54:00:00:00:02"
ip = "10.0.0.12"
[hosts.pc2.vars]
role = "projector"
"""
PC3 = """\
# pc3: back row
[hosts.pc3]
mac = "52:54:00:00:00:03"
ip = "10.0.0.13"
"""
HEAD = "# Lab inventory. Keep sorted by room.\n\n"
TAIL = "\n# end of inventory\n"


def make_site(root: Path, hosts_toml: str | None = INVENTORY) -> Site:
    (root / "overlays" / "diskless").mkdir(parents=True)
    (root / "overlays" / "lab").mkdir()
    (root / "site.toml").write_text('[[subnet]]\nnetwork = "10.0.0.0/24"\n')
    if hosts_toml is not None:
        (root / "hostcfg").mkdir()
        (root / "hostcfg" / "hosts.toml").write_text(hosts_toml)
    return load_site(root, environ={})


def hosts_text(site: Site) -> str:
    return site.hosts_file.read_text()


def test_inventory_fixture_is_the_sum_of_its_parts() -> None:
    assert INVENTORY == HEAD + PC1 + "\n" + PC2 + "\n" + PC3 + TAIL


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("pc1", HEAD + PC2 + "\n" + PC3 + TAIL),
        ("pc2", HEAD + PC1 + "\n" + PC3 + TAIL),
        ("pc3", HEAD + PC1 + "\n" + PC2 + TAIL),
    ],
)
def test_remove_host_keeps_other_comments_and_order(
    tmp_path: Path, name: str, expected: str
) -> None:
    site = make_site(tmp_path)
    removed = remove_host(site, name)
    assert removed == site.host(name)
    assert hosts_text(site) == expected
    assert [h.name for h in load_site(tmp_path, environ={}).hosts] == [
        h.name for h in site.hosts if h.name != name
    ]


def test_remove_every_host_leaves_the_comments(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    for name in ("pc2", "pc3", "pc1"):
        remove_host(load_site(tmp_path, environ={}), name)
    assert hosts_text(site) == HEAD + "# end of inventory\n"
    assert load_site(tmp_path, environ={}).hosts == ()


def test_remove_unknown_host_changes_nothing(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    with pytest.raises(UserError, match=r"unknown host 'pc9' \(known: pc1, pc2, pc3\)"):
        remove_host(site, "pc9")
    assert hosts_text(site) == INVENTORY


def test_add_host_appends_only_given_keys(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    host = add_host(site, name="pc4", mac="52-54-00-00-00-0A", ip=IPv4Address("10.0.0.14"))
    assert host == Host(
        name=HostName("pc4"),
        mac="52:54:00:00:00:0a",
        ip=IPv4Address("10.0.0.14"),
        base="debian",
        overlays=("diskless",),
        mode="auto",
        vars=(),
    )
    assert (
        hosts_text(site)
        == INVENTORY + '\n[hosts.pc4]\nmac = "52:54:00:00:00:0a"\nip = "10.0.0.14"\n'
    )


def test_add_host_with_every_key(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    host = add_host(
        site,
        name="pc5",
        mac="52:54:00:00:00:05",
        ip="10.0.0.15",
        base="deb13",
        overlays=["diskless", "lab"],
        mode="copy",
        vars={"role": "lab", "seat": "5"},
    )
    assert (host.base, host.overlays, host.mode) == ("deb13", ("diskless", "lab"), "copy")
    assert host.vars == (("role", "lab"), ("seat", "5"))
    assert hosts_text(site) == INVENTORY + (
        "\n[hosts.pc5]\n"
        'mac = "52:54:00:00:00:05"\nip = "10.0.0.15"\nbase = "deb13"\n'
        'overlays = ["diskless", "lab"]\nmode = "copy"\n'
        '\n[hosts.pc5.vars]\nrole = "lab"\nseat = "5"\n'
    )
    assert load_site(tmp_path, environ={}).hosts[-1] == host


def test_add_then_remove_restores_the_file(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    add_host(site, name="pc4", mac="52:54:00:00:00:04", ip="10.0.0.14", vars={"a": "b"})
    remove_host(load_site(tmp_path, environ={}), "pc4")
    assert hosts_text(site) == INVENTORY


def test_add_host_creates_missing_file(tmp_path: Path) -> None:
    site = make_site(tmp_path, hosts_toml=None)
    add_host(site, name="pc1", mac="52:54:00:00:00:01", ip="10.0.0.11")
    assert hosts_text(site) == '[hosts.pc1]\nmac = "52:54:00:00:00:01"\nip = "10.0.0.11"\n'


ADD_ERRORS = [
    ({"name": "pc2"}, UserError, "hostcfg/hosts.toml: host 'pc2' already exists; remove it"),
    ({"name": "PC4"}, ConfigError, "hostcfg/hosts.toml: hosts.PC4: 'PC4' is not a valid host"),
    ({"mac": "52:54:00:00:00:03"}, ConfigError, "hosts.pc4.mac: '52:54:00:00:00:03' is already"),
    ({"mac": "nope"}, ConfigError, "hostcfg/hosts.toml: hosts.pc4.mac: 'nope' is not a MAC"),
    ({"ip": "10.0.0.13"}, ConfigError, "hosts.pc4.ip: 10.0.0.13 is already used by host pc3"),
    ({"ip": "10.0.0.300"}, ConfigError, "hosts.pc4.ip: '10.0.0.300' is not an IPv4 address"),
    ({"ip": "10.1.0.1"}, ConfigError, "hosts.pc4.ip: 10.1.0.1 is outside every subnet"),
    ({"overlays": ["gone"]}, ConfigError, "hosts.pc4.overlays: host pc4 uses overlay 'gone'"),
    ({"mode": "fast"}, ConfigError, "hostcfg/hosts.toml: hosts.pc4.mode: 'fast' is not a mode"),
    ({"vars": {"ip": "x"}}, ConfigError, "hosts.pc4.vars.ip: 'ip' is a reserved template field"),
]


@pytest.mark.parametrize(("change", "error", "message"), ADD_ERRORS)
def test_add_host_validates_before_writing(
    tmp_path: Path, change: dict[str, object], error: type[Exception], message: str
) -> None:
    site = make_site(tmp_path)
    args: dict[str, object] = {"name": "pc4", "mac": "52:54:00:00:00:04", "ip": "10.0.0.14"}
    with pytest.raises(error) as info:
        add_host(site, **(args | change))  # type: ignore[arg-type]
    assert message in str(info.value)
    assert hosts_text(site) == INVENTORY
    assert [p.name for p in site.hosts_file.parent.iterdir()] == ["hosts.toml"]  # no temp files


def test_init_site_loads_with_defaults(tmp_path: Path) -> None:
    init_site(tmp_path / "site")
    site = load_site(tmp_path / "site", environ={})
    assert site.config == load_site(tmp_path / "empty", environ={}).config
    assert site.hosts == ()
    assert site.overlays_dir.is_dir()
    host = add_host(site, name="pc1", mac="52:54:00:12:34:56", ip="10.0.0.11")
    assert host.overlays == ("diskless",)  # the default overlay exists out of the box
    assert hosts_text(site).startswith(HOSTS_TEMPLATE)


def uncomment(text: str) -> str:
    """Enable every commented-out setting (`#key = ...`, `#[table]`) of a template."""
    return re.sub(r"^#(?=[\[A-Za-z])", "", text, flags=re.MULTILINE)


def test_init_site_documents_every_key_with_its_default(tmp_path: Path) -> None:
    """The template's values, once uncommented, are exactly the defaults (plus a subnet)."""
    init_site(tmp_path)
    (tmp_path / "site.toml").write_text(uncomment(SITE_TEMPLATE))
    (tmp_path / "hostcfg" / "hosts.toml").write_text(uncomment(HOSTS_TEMPLATE))
    site = load_site(tmp_path, environ={})
    defaults = load_site(tmp_path / "empty", environ={}).config
    assert site.config.subnets[0].network.with_prefixlen == "10.0.0.0/24"
    assert site.config.__class__(**(vars(site.config) | {"subnets": ()})) == defaults
    assert [h.name for h in site.hosts] == ["pc1"]
    keys = set(tomllib.loads(uncomment(SITE_TEMPLATE)))
    assert keys == {"server", "paths", "defaults", "subnet"}


@pytest.mark.parametrize("existing", ["site.toml", "hostcfg/hosts.toml"])
def test_init_site_refuses_existing_site(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / existing).write_text("# mine\n")
    with pytest.raises(UserError, match=f"{existing} already exists"):
        init_site(tmp_path)
    assert (tmp_path / existing).read_text() == "# mine\n"


def test_atomic_write_replaces_content_and_sets_mode(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    atomic_write_bytes(target, b"new", mode=0o600)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_atomic_write_failure_leaves_old_file(tmp_path: Path) -> None:
    target = tmp_path / "d"
    target.mkdir()  # renaming a file over a directory fails
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (  # an explicit [hosts] table stays, with the comments not about the host
            '[hosts]\n# about pc1\n[hosts.pc1]\nmac = "52:54:00:00:00:01"\nip = "10.0.0.1"\n'
            "\n# end\n",
            "[hosts]\n\n# end\n",
        ),
        (  # inline tables carry their own comment block
            '[hosts]\n# about pc1\npc1 = {mac = "52:54:00:00:00:01", ip = "10.0.0.1"}\n'
            '# about pc2\npc2 = {mac = "52:54:00:00:00:02", ip = "10.0.0.2"}\n',
            '[hosts]\n# about pc2\npc2 = {mac = "52:54:00:00:00:02", ip = "10.0.0.2"}\n',
        ),
    ],
)
def test_remove_host_from_other_table_styles(tmp_path: Path, before: str, after: str) -> None:
    site = make_site(tmp_path, hosts_toml=before)
    remove_host(site, "pc1")
    assert hosts_text(site) == after

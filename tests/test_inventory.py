"""Round-trip edits of hostcfg/hosts.toml, the site skeleton, and atomic writes."""

from __future__ import annotations

import re
import stat
import tomllib
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from conftest import HOSTS, Run

from rootfs.config.inventory import (
    HOSTS_TEMPLATE,
    SITE_TEMPLATE,
    add_host,
    edit_host,
    init_site,
    parse_assignments,
    remove_host,
    write_edit,
)
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
    assert keys == {"server", "paths", "defaults", "subnet", "http"}


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


# -- cached hosts: host add --cached, host set ----------------------------------------------------


def test_add_cached_host(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    host = add_host(
        site,
        name="pc4",
        mac="52:54:00:00:00:04",
        ip="10.0.0.14",
        cached=True,
        cache_device="/dev/vdb",
        cache_quota="4G",
    )
    assert (host.cached, host.cache_device, host.cache_quota) == (True, "/dev/vdb", 4 << 30)
    assert hosts_text(site) == INVENTORY + (
        '\n[hosts.pc4]\nmac = "52:54:00:00:00:04"\nip = "10.0.0.14"\n'
        'cached = true\ncache_device = "/dev/vdb"\ncache_quota = "4G"\n'
    )
    assert load_site(tmp_path, environ={}).host("pc4") == host
    remove_host(load_site(tmp_path, environ={}), "pc4")
    assert hosts_text(site) == INVENTORY


def test_add_uncached_host_writes_no_cache_keys(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    host = add_host(site, name="pc4", mac="52:54:00:00:00:04", ip="10.0.0.14", cached=False)
    assert (host.cached, host.cache_device, host.cache_quota) == (False, "LABEL=rootfs-cache", None)
    assert "cache" not in hosts_text(site)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"cached": True, "cache_device": "sda"},
            "hostcfg/hosts.toml: hosts.pc4.cache_device: 'sda' is not a cache device; use",
        ),
        (
            {"cached": True, "cache_quota": "0"},
            "hostcfg/hosts.toml: hosts.pc4.cache_quota: '0' is not a positive size; give",
        ),
    ],
)
def test_add_cached_host_validates_before_writing(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    site = make_site(tmp_path)
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        add_host(site, name="pc4", mac="52:54:00:00:00:04", ip="10.0.0.14", **change)  # type: ignore[arg-type]
    assert hosts_text(site) == INVENTORY


@pytest.mark.parametrize(
    ("items", "changes"),
    [
        (["cached=true"], {"cached": True}),
        (["cached=YES", "cache_quota=4G"], {"cached": True, "cache_quota": "4G"}),
        (["cached=off"], {"cached": False}),
        (["cached=0"], {"cached": False}),
        (["cached="], {"cached": None}),
        (["cache_device=/dev/vdb"], {"cache_device": "/dev/vdb"}),
        (["cache_device=LABEL=mine"], {"cache_device": "LABEL=mine"}),  # split at the first =
        (["cache_quota= "], {"cache_quota": None}),
        (["overlays=diskless, lab"], {"overlays": ["diskless", "lab"]}),
        (["overlays=lab"], {"overlays": ["lab"]}),
        (["overlays="], {"overlays": None}),
        (["base=deb13", "mode=copy"], {"base": "deb13", "mode": "copy"}),
        (["mode=fast"], {"mode": "fast"}),  # the loader judges values (edit_host)
    ],
)
def test_parse_assignments(items: list[str], changes: dict[str, object]) -> None:
    assert parse_assignments(items) == changes


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["cached"], "'cached': expected KEY=VALUE, e.g. cached=true (KEY= removes KEY)"),
        (["=true"], "'=true': expected KEY=VALUE, e.g. cached=true (KEY= removes KEY)"),
        (
            ["ip=10.0.0.99"],
            "'ip' cannot be set; use one of cached, cache_device, cache_quota, base, mode,"
            " overlays (to change mac or ip, remove the host and add it again)",
        ),
        (
            ["cache-device=/dev/vdb"],
            "'cache-device' cannot be set; use one of cached, cache_device, cache_quota, base,"
            " mode, overlays (to change mac or ip, remove the host and add it again)",
        ),
        (["cached=maybe"], "cached=maybe: expected true or false"),
        (["mode=copy", "mode=auto"], "mode is given twice; give each key once"),
        (
            ["overlays=diskless,,lab"],
            "overlays=diskless,,lab: an empty name; list overlays separated by commas, in"
            " order, e.g. overlays=diskless,lab",
        ),
    ],
)
def test_parse_assignments_rejects(items: list[str], message: str) -> None:
    with pytest.raises(UserError) as info:
        parse_assignments(items)
    assert info.value.message == message


EDITS = [
    (  # a new key goes right after the table's last key, above the comments that follow it
        "pc1",
        {"cached": True, "cache_quota": "4G"},
        INVENTORY.replace(
            'ip = "10.0.0.11"\n', 'ip = "10.0.0.11"\ncached = true\ncache_quota = "4G"\n'
        ),
    ),
    (  # ... and above the host's subtables
        "pc2",
        {"cached": True, "overlays": ["diskless", "lab"]},
        INVENTORY.replace(
            'ip = "10.0.0.12"\n',
            'ip = "10.0.0.12"\ncached = true\noverlays = ["diskless", "lab"]\n',
        ),
    ),
    (
        "pc3",
        {"cache_device": "/dev/vdb", "base": "deb13", "mode": "copy"},
        INVENTORY.replace(
            'ip = "10.0.0.13"\n',
            'ip = "10.0.0.13"\ncache_device = "/dev/vdb"\nbase = "deb13"\nmode = "copy"\n',
        ),
    ),
    ("pc1", {"cached": None, "mode": None}, INVENTORY),  # removing an absent key: no change
]


@pytest.mark.parametrize(("name", "changes", "expected"), EDITS)
def test_edit_host_keeps_comments_and_order(
    tmp_path: Path, name: str, changes: dict[str, object], expected: str
) -> None:
    site = make_site(tmp_path)
    edit = edit_host(site, name, changes)
    assert (edit.text, edit.changed) == (expected, expected != INVENTORY)
    assert hosts_text(site) == INVENTORY  # nothing written yet
    assert write_edit(site, edit) == edit.after
    assert hosts_text(site) == expected
    reloaded = load_site(tmp_path, environ={})
    assert reloaded.host(name) == edit.after
    assert [h for h in reloaded.hosts if h.name != name] == [
        h for h in site.hosts if h.name != name
    ]
    # Removing the keys again gives back the file as it was.
    write_edit(reloaded, edit_host(reloaded, name, dict.fromkeys(changes)))
    assert hosts_text(site) == INVENTORY


def test_edit_host_changes_values_in_place(tmp_path: Path) -> None:
    before = INVENTORY.replace('ip = "10.0.0.13"\n', 'ip = "10.0.0.13"\ncached = true  # ssd\n')
    site = make_site(tmp_path, hosts_toml=before)
    edit = edit_host(site, "pc3", {"cached": False})
    assert edit.text == before.replace("cached = true  # ssd", "cached = false  # ssd")
    assert (edit.before.cached, edit.after.cached) == (True, False)


def test_edit_inline_host_table(tmp_path: Path) -> None:
    inline = '[hosts]\npc1 = {mac = "52:54:00:00:00:01", ip = "10.0.0.1"}  # desk\n'
    site = make_site(tmp_path, hosts_toml=inline)
    edit = edit_host(site, "pc1", {"cached": True, "cache_quota": "2G"})
    assert edit.text == (
        '[hosts]\npc1 = {mac = "52:54:00:00:00:01", ip = "10.0.0.1", cached = true,'
        ' cache_quota = "2G"}  # desk\n'
    )


H = "hostcfg/hosts.toml: hosts.pc1"
EDIT_ERRORS = [
    (
        {"cache_device": "/dev/vd b"},
        f"{H}.cache_device: '/dev/vd b' contains whitespace or a comma, which would split the"
        " kernel command line; name the device without them",
    ),
    (
        {"cache_device": "sda"},
        f"{H}.cache_device: 'sda' is not a cache device; use LABEL=rootfs-cache (a filesystem"
        " with that label) or a whole device like /dev/vda (formatted by the client only if"
        " empty)",
    ),
    (
        {"cache_quota": "lots"},
        f"{H}.cache_quota: 'lots' is not a size; write a number of bytes, or one with K, M, G or"
        " T (powers of 1024), like 4G, 500M or 1.5G",
    ),
    ({"mode": "fast"}, f"{H}.mode: 'fast' is not a mode; use one of auto, copy, reflink, hardlink"),
    (
        {"base": "a/b"},
        f"{H}.base: 'a/b' is not a plain directory name; use letters, digits, . _ + -",
    ),
    (
        {"overlays": ["diskless", "gone"]},
        f"{H}.overlays: host pc1 uses overlay 'gone' but overlays/gone/ is missing; create the"
        " directory or drop the overlay",
    ),
    ({"cached": "yes"}, f"{H}.cached: expected true or false, got a string"),
]


@pytest.mark.parametrize(("changes", "message"), EDIT_ERRORS)
def test_edit_host_refuses_what_would_not_load(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    site = make_site(tmp_path)
    with pytest.raises(ConfigError) as info:
        edit_host(site, "pc1", changes)
    assert str(info.value) == message
    assert hosts_text(site) == INVENTORY


def test_edit_unknown_host(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    with pytest.raises(UserError, match=r"^unknown host 'pc9' \(known: pc1, pc2, pc3\)"):
        edit_host(site, "pc9", {"cached": True})
    assert hosts_text(site) == INVENTORY


# -- through the CLI: the conftest site (hosts pc1, pc2 on 10.9.0.0/24, base zoo, overlay lab) ---

PC3_ADD = ("host", "add", "pc3", "--mac", "52:54:00:00:00:03", "--ip", "10.9.0.13")


def test_cli_host_add_cached_round_trip(run: Run, site: Path, imported: Path) -> None:
    out = run(*PC3_ADD, "--cached", "--cache-device", "/dev/vdb", "--cache-quota", "4G").stdout
    assert out.startswith(
        "added pc3: 52:54:00:00:00:03 10.9.0.13 (base zoo, overlays lab,"
        " cached on /dev/vdb, quota 4.0 GiB)\n"
    )
    assert (site / "hostcfg/hosts.toml").read_text() == HOSTS + (
        '\n[hosts.pc3]\nmac = "52:54:00:00:00:03"\nip = "10.9.0.13"\n'
        'cached = true\ncache_device = "/dev/vdb"\ncache_quota = "4G"\n'
    )
    show = run("host", "show", "pc3").stdout
    assert (
        "mode:       auto\ncached:     yes\n"
        "cache dev:  /dev/vdb (formatted by the client if empty, else left alone)\n"
        "quota:      4.0 GiB (4294967296 bytes)\n"
    ) in show
    assert "cached:     no\n" in run("host", "show", "pc1").stdout
    rows = run("host", "list").stdout.splitlines()
    assert rows[0].split() == ["HOST", "MAC", "IP", "BASE", "CACHE", "OVERLAYS"]
    assert [row.split()[4] for row in rows[1:]] == ["-", "-", "yes"]
    status = run("status").stdout.splitlines()
    assert status[1].split()[:7] == ["HOST", "IP", "BASE@GEN", "OVERLAYS", "MODE", "CACHE", "LAST"]
    assert [row.split()[5] for row in status[2:5]] == ["-", "-", "yes"]
    # Below the table, what each cached host last reported: pc3 has not booted yet.
    assert status[5:] == [
        "",
        "cached hosts, as their cache daemons last reported:",
        "  pc3          no report yet (a client writes one a few seconds after it boots cached)",
    ]
    run("host", "remove", "pc3", "--purge")
    assert (site / "hostcfg/hosts.toml").read_text() == HOSTS


def test_cli_host_add_cache_options_need_cached(run: Run, site: Path, imported: Path) -> None:
    proc = run(*PC3_ADD, "--cache-quota", "4G", check=False)
    assert (proc.returncode, proc.stderr) == (
        2,
        "rootfs: error: --cache-device and --cache-quota are for cached hosts; add --cached"
        " (or set them later: 'rootfs host set NAME cached=true ...')\n",
    )
    assert (site / "hostcfg/hosts.toml").read_text() == HOSTS


def test_cli_host_set_changes_keys_and_rebuilds(
    run: Run, site: Path, imported: Path, tmp_path: Path
) -> None:
    tree = tmp_path / "export/10.9.0.11"
    out = run("host", "set", "pc1", "cached=true", "cache_quota=2G", "--no-build").stdout
    assert (
        out == "pc1: cached false -> true\npc1: cache_quota default -> 2.0 GiB (2147483648 bytes)\n"
    )
    assert not tree.exists()  # --no-build
    expected = HOSTS.replace(
        'ip = "10.9.0.11"\n', 'ip = "10.9.0.11"\ncached = true\ncache_quota = "2G"\n'
    )
    assert (site / "hostcfg/hosts.toml").read_text() == expected
    assert (
        "rootfs.cache=LABEL=rootfs-cache rootfs.cache_quota=2147483648"
        in run("boot", "show", "pc1").stdout
    )
    out = run("host", "set", "pc1", "cache_device=/dev/vdb", "mode=copy").stdout
    assert out.startswith(
        "pc1: cache_device LABEL=rootfs-cache (default) -> /dev/vdb\n"
        "pc1: mode auto (site default) -> copy\npc1: 40 added; "
    )
    assert (tree / "etc/hostname").read_text() == "pc1\n"  # built
    assert run("host", "set", "pc1", "mode=copy").stdout == "pc1: nothing to change\n"
    out = run("host", "set", "pc1", "cached=", "cache_device=", "cache_quota=", "mode=").stdout
    assert out.splitlines()[:4] == [
        "pc1: cached true -> false",
        "pc1: cache_device /dev/vdb -> LABEL=rootfs-cache (default)",
        "pc1: cache_quota 2.0 GiB (2147483648 bytes) -> default",
        "pc1: mode copy -> auto (site default)",
    ]
    assert (site / "hostcfg/hosts.toml").read_text() == HOSTS


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["cache_device=/dev/vd b"],
            "hostcfg/hosts.toml: hosts.pc1.cache_device: '/dev/vd b' contains whitespace or a"
            " comma, which would split the kernel command line; name the device without them",
        ),
        (
            ["cached=true", "cache_quota=0"],
            "hostcfg/hosts.toml: hosts.pc1.cache_quota: '0' is not a positive size; give at least"
            " one byte, like 4G",
        ),
        (
            ["overlays=lab,nope"],
            "hostcfg/hosts.toml: hosts.pc1.overlays: host pc1 uses overlay 'nope' but"
            " overlays/nope/ is missing; create the directory or drop the overlay",
        ),
        (
            ["base=nope"],
            "unknown base 'nope' (imported: zoo); import it with 'rootfs base import nope SOURCE'",
        ),
        (["cached=maybe"], "cached=maybe: expected true or false"),
        (
            ["pc1=1"],
            "'pc1' cannot be set; use one of cached, cache_device, cache_quota, base,"
            " mode, overlays (to change mac or ip, remove the host and add it again)",
        ),
    ],
)
def test_cli_host_set_refuses_bad_values_and_writes_nothing(
    run: Run, site: Path, imported: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    proc = run("host", "set", "pc1", *args, check=False)
    assert (proc.returncode, proc.stderr) == (2, f"rootfs: error: {message}\n")
    assert (site / "hostcfg/hosts.toml").read_text() == HOSTS
    assert not (tmp_path / "export/10.9.0.11").exists()


def test_cli_host_set_with_a_template_error_writes_nothing(
    run: Run, site: Path, imported: Path
) -> None:
    (site / "overlays/lab/etc/broken.j2").write_text("{{ nosuchvar }}\n")
    proc = run("host", "set", "pc1", "cached=true", check=False)
    assert proc.returncode == 2 and "broken.j2" in proc.stderr
    assert (site / "hostcfg/hosts.toml").read_text() == HOSTS
    run("host", "set", "pc1", "cached=true", "--no-build")  # the tree is not composed then
    assert "cached = true" in (site / "hostcfg/hosts.toml").read_text()

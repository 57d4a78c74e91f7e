"""Loading and validating site.toml and hostcfg/hosts.toml."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from rootfs.config.site import (
    DEFAULT_SITE_DIR,
    Host,
    HostName,
    Subnet,
    find_site_dir,
    load_site,
)
from rootfs.config.tomlconf import parse_size
from rootfs.errors import ConfigError, UserError

SUBNET = '[[subnet]]\nnetwork = "10.0.0.0/24"\n'
PC1 = '[hosts.pc1]\nmac = "52:54:00:12:34:56"\nip = "10.0.0.11"\n'


def make_site(
    root: Path,
    *,
    site_toml: str | None = None,
    hosts_toml: str | None = None,
    overlays: tuple[str, ...] = ("diskless",),
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if site_toml is not None:
        (root / "site.toml").write_text(site_toml)
    if hosts_toml is not None:
        (root / "hostcfg").mkdir(exist_ok=True)
        (root / "hostcfg" / "hosts.toml").write_text(hosts_toml)
    for name in overlays:
        (root / "overlays" / name).mkdir(parents=True, exist_ok=True)
    return root


def test_no_files_means_defaults_and_no_hosts(tmp_path: Path) -> None:
    site = load_site(tmp_path, environ={})
    assert site.hosts == ()
    c = site.config
    assert c.server_address == IPv4Address("10.0.0.1")
    assert (c.state_dir, c.export_root) == (Path("/var/lib/rootfs"), Path("/tftpboot"))
    assert (c.default_base, c.default_overlays, c.default_mode) == ("debian", ("diskless",), "auto")
    assert (c.nfs_options, c.subnets) == ("vers=3,tcp", ())
    assert site.site_toml == tmp_path / "site.toml"
    assert site.hosts_file == tmp_path / "hostcfg" / "hosts.toml"
    assert site.overlays_dir == tmp_path / "overlays"


def test_full_site_toml(tmp_path: Path) -> None:
    make_site(
        tmp_path,
        site_toml="""
[server]
address = "192.168.7.1"
[paths]
state_dir = "state"
export_root = "/srv/roots"
[defaults]
base = "alma-9"
overlays = ["common", "lab"]
mode = "hardlink"
nfs_options = "vers=4.2"
[[subnet]]
network = "192.168.7.0/24"
gateway = "192.168.7.254"
dns = ["192.168.7.1", "9.9.9.9"]
domain = "lab.example"
[[subnet]]
network = "192.168.8.0/25"
""",
    )
    c = load_site(tmp_path, environ={}).config
    assert c.server_address == IPv4Address("192.168.7.1")
    assert c.state_dir == tmp_path / "state"  # relative to the site dir, not the cwd
    assert c.export_root == Path("/srv/roots")
    assert (c.default_base, c.default_overlays, c.default_mode) == (
        "alma-9",
        ("common", "lab"),
        "hardlink",
    )
    assert c.nfs_options == "vers=4.2"
    assert c.subnets == (
        Subnet(
            network=IPv4Network("192.168.7.0/24"),
            gateway=IPv4Address("192.168.7.254"),
            dns=(IPv4Address("192.168.7.1"), IPv4Address("9.9.9.9")),
            domain="lab.example",
        ),
        Subnet(network=IPv4Network("192.168.8.0/25"), gateway=None, dns=(), domain=None),
    )


def test_environment_overrides_paths(tmp_path: Path) -> None:
    make_site(tmp_path, site_toml='[paths]\nstate_dir = "/a"\nexport_root = "/b"\n')
    environ = {"ROOTFS_STATE_DIR": "/tmp/x/state", "ROOTFS_EXPORT_ROOT": "/tmp/x/export"}
    c = load_site(tmp_path, environ=environ).config
    assert (c.state_dir, c.export_root) == (Path("/tmp/x/state"), Path("/tmp/x/export"))
    c = load_site(tmp_path, environ={"ROOTFS_STATE_DIR": ""}).config
    assert (c.state_dir, c.export_root) == (Path("/a"), Path("/b"))


def test_hosts_with_defaults_applied_in_file_order(tmp_path: Path) -> None:
    make_site(
        tmp_path,
        site_toml='[defaults]\nbase = "deb12"\nmode = "copy"\n' + SUBNET,
        overlays=("diskless", "lab"),
        hosts_toml="""
[hosts.zeta]
mac = "52-54-00-AB-CD-EF"
ip = "10.0.0.20"
[hosts.alpha]
mac = "52:54:00:12:34:56"
ip = "10.0.0.11"
base = "deb13"
overlays = ["lab", "diskless"]
mode = "reflink"
[hosts.alpha.vars]
role = "lab"
seats = 24
kiosk = true
""",
    )
    site = load_site(tmp_path, environ={})
    assert site.hosts == (
        Host(
            name=HostName("zeta"),
            mac="52:54:00:ab:cd:ef",
            ip=IPv4Address("10.0.0.20"),
            base="deb12",
            overlays=("diskless",),
            mode="copy",
            vars=(),
        ),
        Host(
            name=HostName("alpha"),
            mac="52:54:00:12:34:56",
            ip=IPv4Address("10.0.0.11"),
            base="deb13",
            overlays=("lab", "diskless"),
            mode="reflink",
            vars=(("role", "lab"), ("seats", "24"), ("kiosk", "true")),
        ),
    )
    assert site.host("alpha").ip == IPv4Address("10.0.0.11")


def test_unknown_host_lists_known_ones(tmp_path: Path) -> None:
    make_site(tmp_path, hosts_toml=PC1)
    with pytest.raises(UserError, match=r"unknown host 'pc9' \(known: pc1\); see 'rootfs host"):
        load_site(tmp_path, environ={}).host("pc9")


def test_template_context_with_subnet(tmp_path: Path) -> None:
    make_site(
        tmp_path,
        site_toml='[server]\naddress = "10.0.0.1"\n'
        '[[subnet]]\nnetwork = "10.0.0.0/24"\ngateway = "10.0.0.254"\ndns = ["10.0.0.1"]\n'
        'domain = "lab.example"\n',
        hosts_toml=PC1 + '[hosts.pc1.vars]\nrole = "lab"\n',
    )
    site = load_site(tmp_path, environ={"ROOTFS_EXPORT_ROOT": "/srv/tftp"})
    host = site.host("pc1")
    assert site.host_root(host) == Path("/srv/tftp/10.0.0.11")
    assert site.root_path(host) == "10.0.0.1:/srv/tftp/10.0.0.11"
    assert site.template_context(host) == {
        "name": "pc1",
        "ip": "10.0.0.11",
        "mac": "52:54:00:12:34:56",
        "server": "10.0.0.1",
        "netmask": "255.255.255.0",
        "prefixlen": 24,
        "network": "10.0.0.0",
        "broadcast": "10.0.0.255",
        "gateway": "10.0.0.254",
        "dns": ["10.0.0.1"],
        "domain": "lab.example",
        "root_path": "10.0.0.1:/srv/tftp/10.0.0.11",
        "nfs_options": "vers=3,tcp",
        "vars": {"role": "lab"},
        "role": "lab",
    }


def test_template_context_without_subnet(tmp_path: Path) -> None:
    make_site(tmp_path, hosts_toml=PC1)
    site = load_site(tmp_path, environ={})
    context = site.template_context(site.host("pc1"))
    for key in ("netmask", "prefixlen", "network", "broadcast", "gateway", "domain"):
        assert context[key] is None
    assert context["dns"] == []
    assert context["vars"] == {}


def test_find_site_dir_precedence(tmp_path: Path) -> None:
    cwd = make_site(tmp_path / "work", site_toml="")
    env = {"ROOTFS_SITE": "/from/env"}
    assert find_site_dir(cli_site=Path("cli"), environ=env, cwd=cwd) == cwd / "cli"
    assert find_site_dir(cli_site=Path("/cli"), environ=env, cwd=cwd) == Path("/cli")
    assert find_site_dir(cli_site=None, environ=env, cwd=cwd) == Path("/from/env")
    assert find_site_dir(cli_site=None, environ={}, cwd=cwd) == cwd
    only_hostcfg = tmp_path / "other"
    (only_hostcfg / "hostcfg").mkdir(parents=True)
    assert find_site_dir(cli_site=None, environ={}, cwd=only_hostcfg) == only_hostcfg
    assert find_site_dir(cli_site=None, environ={}, cwd=tmp_path) == DEFAULT_SITE_DIR
    assert Path("/etc/rootfs") == DEFAULT_SITE_DIR


SITE_ERRORS = [
    ("[server\n", "site.toml: line 1, column 8: "),
    ("[foo]\n", "site.toml: foo: unknown key; remove it"),
    ('[server]\nadress = "10.0.0.1"\n', "site.toml: server.adress: unknown key; remove it"),
    ("server = 1\n", "site.toml: server: expected a table, got an integer"),
    (
        '[server]\naddress = "10.0.0.300"\n',
        "site.toml: server.address: '10.0.0.300' is not an IPv4",
    ),
    ("[server]\naddress = 10\n", "site.toml: server.address: expected a string, got an integer"),
    ("[paths]\nstate_dir = []\n", "site.toml: paths.state_dir: expected a string, got an array"),
    ('[defaults]\nmode = "fast"\n', "site.toml: defaults.mode: 'fast' is not a mode; use one of"),
    ('[defaults]\noverlays = "x"\n', "site.toml: defaults.overlays: expected an array of names"),
    ('[defaults]\noverlays = ["../x"]\n', "site.toml: defaults.overlays: '../x' is not a plain"),
    ('[defaults]\nbase = ""\n', "site.toml: defaults.base: '' is not a plain directory name"),
    ("[[subnet]]\n", "site.toml: subnet[0].network: missing; add network = "),
    ('subnet = {network = "10.0.0.0/24"}\n', "site.toml: subnet: expected an array of tables"),
    (
        '[[subnet]]\nnetwork = "10.0.0.1/24"\n',
        "site.toml: subnet[0].network: '10.0.0.1/24' has host bits set; did you mean 10.0.0.0/24?",
    ),
    ('[[subnet]]\nnetwork = "10.0.0/24"\n', "site.toml: subnet[0].network: '10.0.0/24' is not an"),
    (SUBNET + 'gateway = "10.0.1.1"\n', "site.toml: subnet[0].gateway: 10.0.1.1 is outside"),
    (SUBNET + 'dns = ["x"]\n', "site.toml: subnet[0].dns: 'x' is not an IPv4 address"),
    (SUBNET + "domain = 3\n", "site.toml: subnet[0].domain: expected a string"),
    (SUBNET + "vlan = 3\n", "site.toml: subnet[0].vlan: unknown key"),
    (
        SUBNET + '[[subnet]]\nnetwork = "10.0.0.128/25"\n',
        "site.toml: subnet[1].network: 10.0.0.128/25 overlaps 10.0.0.0/24",
    ),
]


@pytest.mark.parametrize(("site_toml", "message"), SITE_ERRORS)
def test_site_toml_errors(tmp_path: Path, site_toml: str, message: str) -> None:
    make_site(tmp_path, site_toml=site_toml)
    with pytest.raises(ConfigError) as info:
        load_site(tmp_path, environ={})
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value) and "; " in str(info.value)


def host(body: str, name: str = "pc1") -> str:
    return f"[hosts.{name}]\n{body}"


MAC = 'mac = "52:54:00:12:34:56"\n'
IP = 'ip = "10.0.0.11"\n'
HOSTS_ERRORS = [
    ("[hosts.pc1\n", "hostcfg/hosts.toml: line 1, column 11: "),
    (PC1 + PC1, "hostcfg/hosts.toml: line 4, column 11: Cannot declare ('hosts', 'pc1') twice"),
    ("[host.pc1]\n", "hostcfg/hosts.toml: host: unknown key; remove it (expected: hosts)"),
    ("hosts = 1\n", "hostcfg/hosts.toml: hosts: expected a table"),
    ("[hosts]\npc1 = 1\n", "hostcfg/hosts.toml: hosts.pc1: expected a table"),
    (host(MAC + IP, "PC1"), "hostcfg/hosts.toml: hosts.PC1: 'PC1' is not a valid host name"),
    (host(MAC + IP, "-pc"), "hostcfg/hosts.toml: hosts.-pc: '-pc' is not a valid host name"),
    (host(MAC + IP, "pc-"), "hostcfg/hosts.toml: hosts.pc-: 'pc-' is not a valid host name"),
    (host(MAC + IP, "pc_1"), "hostcfg/hosts.toml: hosts.pc_1: 'pc_1' is not a valid host name"),
    (host(MAC + IP, '"a.b"'), "hostcfg/hosts.toml: hosts.\"a.b\": 'a.b' is not a valid host"),
    (host(MAC + IP, "a" * 64), f"hostcfg/hosts.toml: hosts.{'a' * 64}: "),
    (host(IP), "hostcfg/hosts.toml: hosts.pc1.mac: missing; add mac = "),
    (host(MAC), "hostcfg/hosts.toml: hosts.pc1.ip: missing; add ip = "),
    (host(MAC + IP + "macaddr = 1\n"), "hostcfg/hosts.toml: hosts.pc1.macaddr: unknown key"),
    (host('mac = "52:54:00:12:34"\n' + IP), "hosts.toml: hosts.pc1.mac: '52:54:00:12:34' is not"),
    (host('mac = "52:54-00:12:34:56"\n' + IP), "hosts.pc1.mac: '52:54-00:12:34:56' is not a MAC"),
    (host('mac = "5254.0012.3456"\n' + IP), "hosts.pc1.mac: '5254.0012.3456' is not a MAC"),
    (host('mac = "01:00:5e:00:00:01"\n' + IP), "hosts.pc1.mac: '01:00:5e:00:00:01' is a multicast"),
    (
        host('mac = "FF-FF-FF-FF-FF-FF"\n' + IP),
        "hosts.pc1.mac: 'FF-FF-FF-FF-FF-FF' is the broadcast",
    ),
    (
        host('mac = "00:00:00:00:00:00"\n' + IP),
        "hosts.pc1.mac: '00:00:00:00:00:00' is not a usable",
    ),
    (host(MAC + 'ip = "10.0.0.300"\n'), "hostcfg/hosts.toml: hosts.pc1.ip: '10.0.0.300' is not an"),
    (host(MAC + 'ip = "fe80::1"\n'), "hostcfg/hosts.toml: hosts.pc1.ip: 'fe80::1' is not an IPv4"),
    (host(MAC + 'ip = "224.0.0.1"\n'), "hosts.pc1.ip: 224.0.0.1 is not a unicast host address"),
    (host(MAC + 'ip = "0.0.0.0"\n'), "hosts.pc1.ip: 0.0.0.0 is not a unicast host address"),
    (host(MAC + IP + 'base = "a/b"\n'), "hosts.pc1.base: 'a/b' is not a plain directory name"),
    (host(MAC + IP + 'mode = "move"\n'), "hosts.pc1.mode: 'move' is not a mode; use one of auto,"),
    (host(MAC + IP + 'overlays = "lab"\n'), "hosts.pc1.overlays: expected an array of names"),
    (
        host(MAC + IP + 'overlays = ["diskless", "nosuch"]\n'),
        "hostcfg/hosts.toml: hosts.pc1.overlays: host pc1 uses overlay 'nosuch' but "
        "overlays/nosuch/ is missing; create the directory or drop the overlay",
    ),
    (host(MAC + IP + "vars = 1\n"), "hostcfg/hosts.toml: hosts.pc1.vars: expected a table"),
    (PC1 + '[hosts.pc1.vars]\n"my-var" = "x"\n', "hosts.pc1.vars.my-var: 'my-var' is not an"),
    (PC1 + "[hosts.pc1.vars]\nip = 1\n", "hosts.pc1.vars.ip: 'ip' is a reserved template field"),
    (PC1 + "[hosts.pc1.vars]\nvars = 1\n", "hosts.pc1.vars.vars: 'vars' is a reserved template"),
    (
        PC1 + "[hosts.pc1.vars]\nx = 1.5\n",
        "hosts.pc1.vars.x: expected a string, integer or boolean",
    ),
    (
        PC1 + "[hosts.pc1.vars]\nx = [1]\n",
        "hosts.pc1.vars.x: expected a string, integer or boolean",
    ),
    (
        PC1 + host('mac = "52-54-00-12-34-56"\nip = "10.0.0.12"\n', "pc2"),
        "hostcfg/hosts.toml: hosts.pc2.mac: '52:54:00:12:34:56' is already used by host pc1; give",
    ),
    (
        PC1 + host('mac = "52:54:00:12:34:57"\n' + IP, "pc2"),
        "hostcfg/hosts.toml: hosts.pc2.ip: 10.0.0.11 is already used by host pc1; give",
    ),
]


@pytest.mark.parametrize(("hosts_toml", "message"), HOSTS_ERRORS)
def test_hosts_toml_errors(tmp_path: Path, hosts_toml: str, message: str) -> None:
    make_site(tmp_path, hosts_toml=hosts_toml)
    with pytest.raises(ConfigError) as info:
        load_site(tmp_path, environ={})
    assert message in str(info.value)
    assert str(info.value).startswith("hostcfg/hosts.toml: ")
    assert "\n" not in str(info.value) and "; " in str(info.value)


SUBNET_ERRORS = [
    (
        'ip = "10.0.1.5"\n',
        "hosts.pc1.ip: 10.0.1.5 is outside every subnet (10.0.0.0/24, 10.9.0.0/31)",
    ),
    ('ip = "10.0.0.0"\n', "hosts.pc1.ip: 10.0.0.0 is the network address of 10.0.0.0/24; pick a"),
    ('ip = "10.0.0.255"\n', "hosts.pc1.ip: 10.0.0.255 is the broadcast address of 10.0.0.0/24"),
]


@pytest.mark.parametrize(("ip_line", "message"), SUBNET_ERRORS)
def test_ip_checked_against_subnets(tmp_path: Path, ip_line: str, message: str) -> None:
    subnets = SUBNET + '[[subnet]]\nnetwork = "10.9.0.0/31"\n'
    make_site(tmp_path, site_toml=subnets, hosts_toml=host(MAC + ip_line))
    with pytest.raises(ConfigError, match=r"^hostcfg/hosts\.toml: ") as info:
        load_site(tmp_path, environ={})
    assert message in str(info.value)


def test_ip_accepted_in_subnet_and_anywhere_without_subnets(tmp_path: Path) -> None:
    # A /31 point-to-point link has no network or broadcast address (RFC 3021).
    make_site(
        tmp_path / "a",
        site_toml='[[subnet]]\nnetwork = "10.9.0.0/31"\n',
        hosts_toml=host(MAC + 'ip = "10.9.0.0"\n'),
    )
    assert load_site(tmp_path / "a", environ={}).hosts[0].ip == IPv4Address("10.9.0.0")
    make_site(tmp_path / "b", hosts_toml=host(MAC + 'ip = "192.168.50.0"\n'))
    assert load_site(tmp_path / "b", environ={}).hosts[0].ip == IPv4Address("192.168.50.0")


def test_missing_default_overlay_names_host_and_overlay(tmp_path: Path) -> None:
    make_site(tmp_path, hosts_toml=PC1, overlays=())
    with pytest.raises(ConfigError) as info:
        load_site(tmp_path, environ={})
    assert str(info.value).startswith(
        "hostcfg/hosts.toml: hosts.pc1.overlays: host pc1 uses overlay 'diskless' but "
        "overlays/diskless/ is missing"
    )


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    make_site(tmp_path)
    (tmp_path / "site.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match=r"site\.toml: cannot read"):
        load_site(tmp_path, environ={})


# -- cached hosts: cached, cache_device, cache_quota ---------------------------------------------

CACHE_KEYS = [
    ("", (False, "LABEL=rootfs-cache", None)),
    ("cached = false\n", (False, "LABEL=rootfs-cache", None)),
    ("cached = true\n", (True, "LABEL=rootfs-cache", None)),
    ('cached = true\ncache_device = "LABEL=scratch_1.a"\n', (True, "LABEL=scratch_1.a", None)),
    ('cached = true\ncache_device = "/dev/vda"\n', (True, "/dev/vda", None)),
    (
        'cache_device = "/dev/disk/by-path/pci-0000:00:1f.2-ata-1"\n',
        (False, "/dev/disk/by-path/pci-0000:00:1f.2-ata-1", None),
    ),
    ('cached = true\ncache_quota = "4G"\n', (True, "LABEL=rootfs-cache", 4 << 30)),
    ('cache_quota = "1.5GiB"\n', (False, "LABEL=rootfs-cache", 3 << 29)),
    ("cache_quota = 4096\n", (False, "LABEL=rootfs-cache", 4096)),
]


@pytest.mark.parametrize(("body", "expected"), CACHE_KEYS)
def test_cache_keys(tmp_path: Path, body: str, expected: tuple[bool, str, int | None]) -> None:
    make_site(tmp_path, hosts_toml=PC1 + body)
    h = load_site(tmp_path, environ={}).hosts[0]
    assert (h.cached, h.cache_device, h.cache_quota) == expected
    assert (h.cache is not None) == h.cached
    if h.cache is not None:
        assert (h.cache.device, h.cache.quota) == expected[1:]


F = "hostcfg/hosts.toml: hosts.pc1"
NOT_A_DEVICE = (
    "is not a cache device; use LABEL=rootfs-cache (a filesystem with that label) or a whole"
    " device like /dev/vda (formatted by the client only if empty)"
)
SPLITS = "contains whitespace or a comma, which would split the kernel command line; name the"
BAD_LABEL = "is not a filesystem label; use 1-16 letters, digits and . _ + - : @ (clients look for"
BAD_PATH = (
    "is not a device path; write /dev/NAME (letters, digits and . _ + - : @ = between the"
    " slashes), like /dev/vda or /dev/disk/by-id/..."
)
NOT_A_SIZE = (
    "is not a size; write a number of bytes, or one with K, M, G or T (powers of 1024),"
    " like 4G, 500M or 1.5G"
)
CACHE_ERRORS = [
    ('cached = "yes"\n', f"{F}.cached: expected true or false, got a string"),
    ("cached = 1\n", f"{F}.cached: expected true or false, got an integer"),
    ('cache_device = "sda"\n', f"{F}.cache_device: 'sda' {NOT_A_DEVICE}"),
    ('cache_device = "label=x"\n', f"{F}.cache_device: 'label=x' {NOT_A_DEVICE}"),
    ('cache_device = "dev/vda"\n', f"{F}.cache_device: 'dev/vda' {NOT_A_DEVICE}"),
    ('cache_device = "/dev/vd a"\n', f"{F}.cache_device: '/dev/vd a' {SPLITS} device without them"),
    (
        'cache_device = "/dev/vda,x"\n',
        f"{F}.cache_device: '/dev/vda,x' {SPLITS} device without them",
    ),
    (
        'cache_device = "LABEL=a\\tb"\n',
        f"{F}.cache_device: 'LABEL=a\\tb' {SPLITS} device without them",
    ),
    ('cache_device = "LABEL="\n', f"{F}.cache_device: 'LABEL=' {BAD_LABEL} LABEL=rootfs-cache)"),
    (
        'cache_device = "LABEL=seventeen-chars-x"\n',
        f"{F}.cache_device: 'LABEL=seventeen-chars-x' {BAD_LABEL} LABEL=rootfs-cache)",
    ),
    (
        'cache_device = "LABEL=$x"\n',
        f"{F}.cache_device: 'LABEL=$x' {BAD_LABEL} LABEL=rootfs-cache)",
    ),
    ('cache_device = "/dev/"\n', f"{F}.cache_device: '/dev/' {BAD_PATH}"),
    ('cache_device = "/dev//vda"\n', f"{F}.cache_device: '/dev//vda' {BAD_PATH}"),
    ('cache_device = "/dev/../etc/passwd"\n', f"{F}.cache_device: '/dev/../etc/passwd' {BAD_PATH}"),
    ('cache_device = "/dev/vda;reboot"\n', f"{F}.cache_device: '/dev/vda;reboot' {BAD_PATH}"),
    ("cache_device = 1\n", f"{F}.cache_device: expected a string, got an integer; quote it"),
    ('cache_quota = "lots"\n', f"{F}.cache_quota: 'lots' {NOT_A_SIZE}"),
    ('cache_quota = "4 G B"\n', f"{F}.cache_quota: '4 G B' {NOT_A_SIZE}"),
    (
        'cache_quota = "0"\n',
        f"{F}.cache_quota: '0' is not a positive size; give at least one byte, like 4G",
    ),
    (
        'cache_quota = "-1G"\n',
        f"{F}.cache_quota: '-1G' is not a positive size; give at least one byte, like 4G",
    ),
    (
        "cache_quota = 0\n",
        f'{F}.cache_quota: 0 is not a positive size; give at least one byte, like "4G"',
    ),
    ("cache_quota = true\n", f'{F}.cache_quota: expected a size like "4G", got a boolean'),
    ("cache_quota = 1.5\n", f'{F}.cache_quota: expected a size like "4G", got a float'),
    (
        'cache_size = "4G"\n',
        f"{F}.cache_size: unknown key; remove it (expected: base, boot, cache_device,"
        " cache_quota, cached, dhcp, ip, mac, mode, overlays, vars)",
    ),
    (
        'cached = true\n[hosts.pc1.boot]\ninitrd = ""\n',
        f'{F}.boot.initrd: "" boots a cached host without an initramfs, and only the initramfs'
        " can start its cache; remove the key (cached hosts boot [boot] initrd_cached) or name"
        " an initrd",
    ),
]


@pytest.mark.parametrize(("body", "message"), CACHE_ERRORS)
def test_cache_key_errors(tmp_path: Path, body: str, message: str) -> None:
    make_site(tmp_path, hosts_toml=PC1 + body)
    with pytest.raises(ConfigError) as info:
        load_site(tmp_path, environ={})
    assert str(info.value) == message


def test_an_uncached_host_may_boot_without_an_initrd(tmp_path: Path) -> None:
    make_site(tmp_path, hosts_toml=PC1 + 'cached = false\n[hosts.pc1.boot]\ninitrd = ""\n')
    assert load_site(tmp_path, environ={}).hosts[0].boot.initrd == ""


SIZES = [
    ("4096", 4096),
    ("4096B", 4096),
    ("2G", 2 << 30),
    ("2g", 2 << 30),
    ("2GB", 2 << 30),
    ("2GiB", 2 << 30),
    (" 2 G ", 2 << 30),
    ("500M", 500 << 20),
    ("1.5G", 3 << 29),
    ("64KiB", 64 << 10),
    ("1T", 1 << 40),
    (".5K", 512),
    ("1.0001", 1),  # a fraction of a byte is dropped
    ("+1K", 1024),
]


@pytest.mark.parametrize(("text", "expected"), SIZES)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", f"'' {NOT_A_SIZE}"),
        ("G", f"'G' {NOT_A_SIZE}"),
        ("lots", f"'lots' {NOT_A_SIZE}"),
        ("1e3", f"'1e3' {NOT_A_SIZE}"),
        ("inf", f"'inf' {NOT_A_SIZE}"),
        ("1_000", f"'1_000' {NOT_A_SIZE}"),
        ("4iB", f"'4iB' {NOT_A_SIZE}"),
        ("4P", f"'4P' {NOT_A_SIZE}"),
        ("\u0664G", f"'\u0664G' {NOT_A_SIZE}"),  # a digit, but not an ASCII one
        ("0", "'0' is not a positive size; give at least one byte, like 4G"),
        ("-1G", "'-1G' is not a positive size; give at least one byte, like 4G"),
        ("0.4", "'0.4' is not a positive size; give at least one byte, like 4G"),
    ],
)
def test_parse_size_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_size(text)
    assert str(info.value) == message

"""Exports rendering and checking without a server: golden exports(5) files written by hand from
the man page, ganesha EXPORT blocks, least-privilege refusals, and `exportfs -v` parsing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rootfs.config.site import Site, load_site
from rootfs.errors import ConfigError, UserError
from rootfs.exports.ganesha import parse_export_ids, render_ganesha, render_ganesha_server
from rootfs.exports.kernel import compare_kernel, parse_exportfs_v, render_kernel
from rootfs.exports.model import desired_exports

GOLDEN = Path(__file__).parent / "golden" / "exports"
HOSTS = """
[hosts.pc1]
mac = "52:54:00:12:34:11"
ip = "10.0.0.11"

[hosts.pc2]
mac = "52:54:00:12:34:12"
ip = "10.0.0.12"
"""


def make_site(
    tmp_path: Path, exports: str, *, export_root: str = "/tftpboot", hosts: str = HOSTS
) -> Site:
    """A site in tmp_path with one 10.0.0.0/24 subnet, no overlays, and the given [exports]."""
    (tmp_path / "hostcfg").mkdir(exist_ok=True)
    (tmp_path / "site.toml").write_text(
        f'[paths]\nexport_root = "{export_root}"\n[defaults]\noverlays = []\n'
        '[[subnet]]\nnetwork = "10.0.0.0/24"\n' + exports
    )
    (tmp_path / "hostcfg/hosts.toml").write_text(hosts)
    return load_site(tmp_path, environ={})


PLAIN = """
[exports]
[[exports.shared]]
path = "boot"
[[exports.shared]]
path = "/srv/usr"
clients = ["10.0.0.11", "10.0.0.0/25"]
"""


def test_kernel_file_matches_hand_written_golden(tmp_path: Path) -> None:
    site = make_site(tmp_path, PLAIN)
    text = render_kernel(desired_exports(site).exports)
    assert text == (GOLDEN / "plain.exports").read_text()


def test_kernel_quotes_spaces_and_escapes_quote_and_backslash(tmp_path: Path) -> None:
    exports = "[exports]\n[[exports.shared]]\npath = 'a\"b\\c'\n"
    hosts = '[hosts.pc1]\nmac = "52:54:00:12:34:11"\nip = "10.0.0.11"\n'
    site = make_site(tmp_path, exports, export_root="/srv/nfs roots", hosts=hosts)
    text = render_kernel(desired_exports(site).exports)
    assert text == (GOLDEN / "quoted.exports").read_text()


@pytest.mark.parametrize("bad", ["new\\nline", "tab\\there", "bell\\u0007"])
def test_control_characters_in_paths_are_refused(tmp_path: Path, bad: str) -> None:
    site = make_site(tmp_path, f'[exports]\n[[exports.shared]]\npath = "{bad}"\n')
    with pytest.raises(UserError, match=r"exports\.shared\[0\]\.path: .*control character"):
        desired_exports(site)


def test_control_characters_in_export_root_name_the_host(tmp_path: Path) -> None:
    site = make_site(tmp_path, "", export_root="/tft\\npboot")
    with pytest.raises(UserError, match=r"host pc1: .*control character"):
        desired_exports(site)


def test_host_trees_go_rw_to_their_own_ip_only(tmp_path: Path) -> None:
    site = make_site(tmp_path, "")
    exports = desired_exports(site).exports
    assert [(str(e.path), [str(c) for c in e.clients], e.rw, e.root_squash) for e in exports] == [
        ("/tftpboot/10.0.0.11", ["10.0.0.11"], True, False),
        ("/tftpboot/10.0.0.12", ["10.0.0.12"], True, False),
    ]


@pytest.mark.parametrize("clients", ['["10.0.0.0/24"]', '["*"]', '["10.0.0.11", "10.0.0.0/30"]'])
def test_wide_read_write_is_refused(tmp_path: Path, clients: str) -> None:
    site = make_site(
        tmp_path,
        f'[exports]\n[[exports.shared]]\npath = "scratch"\nclients = {clients}\nrw = true\n',
    )
    with pytest.raises(UserError, match=r"exports\.shared\[0\]: read-write export .* refused"):
        desired_exports(site)


def test_wide_read_write_with_allow_wide_rw_warns(tmp_path: Path) -> None:
    site = make_site(
        tmp_path,
        '[exports]\nallow_wide_rw = true\n[[exports.shared]]\npath = "scratch"\n'
        'clients = ["*"]\nrw = true\n',
    )
    result = desired_exports(site)
    assert result.warnings == (
        "warning: /tftpboot/scratch is exported read-write to * "
        "(allow_wide_rw = true in site.toml [exports])",
    )
    assert "/tftpboot/scratch *(rw,sync,no_subtree_check,root_squash," in render_kernel(
        result.exports
    )


def test_read_write_to_one_address_is_not_wide(tmp_path: Path) -> None:
    site = make_site(
        tmp_path,
        '[exports]\n[[exports.shared]]\npath = "/srv/home"\n'
        'clients = ["10.0.0.11/32"]\nrw = true\n',
    )
    assert desired_exports(site).warnings == ()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/", "contains the host tree"),
        ("/tftpboot", "contains the host tree"),
        ("10.0.0.11", "contains the host tree"),
        ("10.0.0.11/usr", "inside the host tree"),
        ("../etc", "contains '..'"),
    ],
)
def test_shared_exports_never_expose_host_trees(tmp_path: Path, path: str, message: str) -> None:
    site = make_site(tmp_path, f'[exports]\n[[exports.shared]]\npath = "{path}"\n')
    with pytest.raises(UserError, match=message):
        desired_exports(site)


def test_shared_export_root_parent_without_hosts_is_refused(tmp_path: Path) -> None:
    site = make_site(tmp_path, '[exports]\n[[exports.shared]]\npath = "/"\n', hosts="")
    with pytest.raises(UserError, match="contains the export root"):
        desired_exports(site)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('backend = "nfsd"', r"exports\.backend: 'nfsd' is not a backend"),
        ("colour = 1", r"exports\.colour: unknown key"),
        ("auto = 1", r"exports\.auto: expected true or false"),
        ('[[exports.shared]]\npath = "x"\nclients = ["pc7.lab"]', r"exports\.shared\[0\]\.clients"),
        ('[[exports.shared]]\nclients = ["*"]', r"exports\.shared\[0\]\.path: missing"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_site(tmp_path, f"[exports]\n{table}\n")


def test_config_defaults(tmp_path: Path) -> None:
    cfg = make_site(tmp_path, "").config.exports
    assert (cfg.backend, cfg.auto, cfg.allow_wide_rw, cfg.manage_ganesha) == (
        "kernel",
        False,
        False,
        False,
    )
    assert str(cfg.kernel_file) == "/etc/exports.d/rootfs.exports"


# -- ganesha ---------------------------------------------------------------------------------


def _blocks(text: str) -> list[str]:
    return re.findall(r"^EXPORT \{\n.*?^\}\n", text, re.M | re.S)


def test_ganesha_block_per_export_with_pseudo_and_client_acl(tmp_path: Path) -> None:
    site = make_site(tmp_path, PLAIN)
    text = render_ganesha(desired_exports(site).exports, {})
    blocks = _blocks(text)
    assert len(blocks) == 4
    assert blocks[0] == (
        "EXPORT {\n"
        "\tExport_Id = 11;\n"
        '\tPath = "/tftpboot/10.0.0.11";\n'
        '\tPseudo = "/tftpboot/10.0.0.11";\n'
        "\tProtocols = 3, 4;\n"
        "\tSecType = sys;\n"
        "\tAccess_Type = None;\n"
        "\tSquash = root_squash;\n"
        "\tAttr_Expiration_Time = 0;\n"
        "\tFSAL {\n\t\tName = VFS;\n\t}\n"
        "\tCLIENT {\n"
        "\t\tClients = 10.0.0.11;\n"
        "\t\tAccess_Type = RW;\n"
        "\t\tSquash = no_root_squash;\n"
        "\t}\n"
        "}\n"
    )
    assert "\t\tClients = 10.0.0.11, 10.0.0.0/25;\n\t\tAccess_Type = RO;\n" in blocks[3]
    assert "\t\tSquash = root_squash;\n" in blocks[3]
    assert parse_export_ids(text) == {
        "/tftpboot/10.0.0.11": 11,
        "/tftpboot/10.0.0.12": 12,
        "/tftpboot/boot": 1,
        "/srv/usr": 2,
    }


def test_ganesha_ids_stay_put_when_hosts_come_and_go(tmp_path: Path) -> None:
    site = make_site(tmp_path, PLAIN)
    first = parse_export_ids(render_ganesha(desired_exports(site).exports, {}))
    hosts = HOSTS + '[hosts.pc3]\nmac = "52:54:00:12:34:13"\nip = "10.0.1.1"\n'
    (tmp_path / "site.toml").write_text(
        (tmp_path / "site.toml").read_text().replace("10.0.0.0/24", "10.0.0.0/23")
    )
    (tmp_path / "hostcfg/hosts.toml").write_text(hosts.replace("[hosts.pc1]", "[hosts.pc0]"))
    site = load_site(tmp_path, environ={})
    second = parse_export_ids(render_ganesha(desired_exports(site).exports, first))
    assert {p: second[p] for p in first} == first
    assert second["/tftpboot/10.0.1.1"] == 257  # its low 16 bits: 1 * 256 + 1


def test_ganesha_ids_collide_on_low_bits_and_stay_unique(tmp_path: Path) -> None:
    hosts = HOSTS + '[hosts.pc3]\nmac = "52:54:00:12:34:13"\nip = "10.1.0.11"\n'
    (tmp_path / "hostcfg").mkdir()
    (tmp_path / "site.toml").write_text("[defaults]\noverlays = []\n")
    (tmp_path / "hostcfg/hosts.toml").write_text(hosts)
    ids = parse_export_ids(
        render_ganesha(desired_exports(load_site(tmp_path, environ={})).exports, {})
    )
    assert len(set(ids.values())) == 3
    assert ids["/tftpboot/10.0.0.11"] == 11


def test_ganesha_quotes_paths(tmp_path: Path) -> None:
    site = make_site(
        tmp_path, "[exports]\n[[exports.shared]]\npath = 'a\"b\\c'\n", export_root="/srv/nfs roots"
    )
    text = render_ganesha(desired_exports(site).exports, {})
    assert '\tPath = "/srv/nfs roots/a\\"b\\\\c";\n' in text
    assert parse_export_ids(text)['/srv/nfs roots/a"b\\c'] == 1


def test_ganesha_server_config_refuses_unincludable_path() -> None:
    from ipaddress import IPv4Address
    from pathlib import PurePosixPath

    with pytest.raises(UserError, match="cannot %include"):
        render_ganesha_server(
            bind=IPv4Address("10.0.0.1"),
            exports_file=PurePosixPath("/etc/my ganesha/x.conf"),
            recovery_dir=PurePosixPath("/var/lib/rootfs/ganesha/v4"),
        )


# -- exportfs -v ---------------------------------------------------------------------------

# Written by hand in the shape nfs-utils 2.6's exportfs.c dump() prints: "%-14s\t" for short
# paths, the path alone then "\t\t" for long ones, options in its order, <world> for "*".
EXPORTFS_V = (
    "/tftpboot/10.0.0.11\n"
    "\t\t10.0.0.11(sync,wdelay,hide,no_subtree_check,"
    "fsid=23356c50-47a3-782c-0930-c909332d4b92,sec=sys,rw,secure,no_root_squash,no_all_squash)\n"
    "/tftpboot/10.0.0.12\n"
    "\t\t10.0.0.12(sync,wdelay,hide,no_subtree_check,"
    "fsid=c35a0671-48cb-a0f8-7e9e-9054447cb7b7,sec=sys,rw,secure,root_squash,no_all_squash)\n"
    "/tftpboot/10.0.0.99\n"
    "\t\t<world>(sync,wdelay,hide,no_subtree_check,sec=sys,ro,secure,root_squash,no_all_squash)\n"
    "/srv/usr      \t10.0.0.11(sync,wdelay,hide,no_subtree_check,"
    "fsid=b92f7b6c-e647-4095-cbe4-6481a17bee1f,sec=sys,ro,secure,root_squash,no_all_squash)\n"
    "/home         \t10.9.9.9(sync,wdelay,hide,no_subtree_check,sec=sys,rw,secure,root_squash)\n"
)


def test_parse_exportfs_v_both_line_shapes() -> None:
    live = parse_exportfs_v(EXPORTFS_V)
    assert [(e.path, e.client) for e in live] == [
        ("/tftpboot/10.0.0.11", "10.0.0.11"),
        ("/tftpboot/10.0.0.12", "10.0.0.12"),
        ("/tftpboot/10.0.0.99", "*"),
        ("/srv/usr", "10.0.0.11"),
        ("/home", "10.9.9.9"),
    ]
    assert "no_root_squash" in live[0].options and "rw" in live[0].options


def test_parse_exportfs_v_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="line 2"):
        parse_exportfs_v("/x\n\t\tnot a client line\n")


def test_compare_reports_missing_unexpected_and_wrong_options(tmp_path: Path) -> None:
    site = make_site(tmp_path, PLAIN)
    drift = compare_kernel(
        desired_exports(site).exports, parse_exportfs_v(EXPORTFS_V), export_root="/tftpboot"
    )
    assert drift == [
        "options: /tftpboot/10.0.0.12 to 10.0.0.12 lacks no_root_squash (has fsid=c35a0671-"
        "48cb-a0f8-7e9e-9054447cb7b7,hide,no_all_squash,no_subtree_check,root_squash,rw,"
        "sec=sys,secure,sync,wdelay)",
        "unexpected: /tftpboot/10.0.0.99 is exported to *",
        "missing: /tftpboot/boot to 10.0.0.0/24 (exports.shared[0])",
        "missing: /srv/usr to 10.0.0.0/25 (exports.shared[1])",
    ]


def test_compare_in_step_is_empty(tmp_path: Path) -> None:
    site = make_site(tmp_path, "")
    live = parse_exportfs_v(
        EXPORTFS_V.replace(
            ",root_squash,no_all_squash)\n/tftpboot/10.0.0.99",
            ",no_root_squash,no_all_squash)\n/tftpboot/10.0.0.99",
        )
    )
    live = [e for e in live if e.path != "/tftpboot/10.0.0.99"]
    assert compare_kernel(desired_exports(site).exports, live, export_root="/tftpboot") == []

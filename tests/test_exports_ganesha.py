"""The ganesha backend against the real thing: rootfs writes the exports and starts ganesha.nfsd
in a network namespace, and `nfs-cat` (libnfs) reads host files over NFSv3 and NFSv4 from
client namespaces holding the hosts' own addresses, and is refused from the others."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nfs_lab import SERVER_IP, WAIT, Lab, nfs_cat, open_lab, wait_listening

from rootfs.config.site import Site, load_site
from rootfs.exports.apply import GaneshaFiles, apply, check, ganesha_pid
from rootfs.exports.ganesha import parse_export_ids

PC1, PC2, STRANGER = "192.168.231.11", "192.168.231.12", "192.168.231.13"
TOOLS = ("ganesha.nfsd", "rpcbind", "nfs-cat", "ip", "nsenter", "unshare")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or any(shutil.which(t) is None for t in TOOLS),
        reason="needs root and nfs-ganesha, rpcbind, libnfs-utils (make install)",
    ),
]


def _hosts(*entries: tuple[str, str, str]) -> str:
    return "".join(f'[hosts.{n}]\nmac = "{m}"\nip = "{ip}"\n' for n, m, ip in entries)


PC1_ENTRY = ("pc1", "52:54:00:12:34:11", PC1)
PC2_ENTRY = ("pc2", "52:54:00:12:34:12", PC2)


def _tree(root: Path, ip: str, hostname: str) -> None:
    etc = root / ip / "etc"
    etc.mkdir(parents=True)
    (etc / "hostname").write_text(f"{hostname}\n")
    (etc / "shadow").write_text("root:*:19000::::::\n")
    os.chmod(etc / "shadow", 0o600)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    """Two hosts and a shared boot directory; the export root has a space in its name, so the
    real server proves the quoting."""
    export_root = tmp_path / "export root"
    _tree(export_root, PC1, "pc1")
    _tree(export_root, PC2, "pc2")
    boot = export_root / "boot"
    boot.mkdir()
    (boot / "pxelinux.cfg").write_text("DEFAULT linux\n")
    (boot / "root-only").write_text("secret\n")
    os.chmod(boot / "root-only", 0o600)
    (tmp_path / "ganesha").mkdir()
    (tmp_path / "hostcfg").mkdir()
    (tmp_path / "site.toml").write_text(
        f'[server]\naddress = "{SERVER_IP}"\n'
        f'[paths]\nexport_root = "{export_root}"\nstate_dir = "{tmp_path / "state"}"\n'
        "[defaults]\noverlays = []\n"
        '[[subnet]]\nnetwork = "192.168.231.0/24"\n'
        '[exports]\nbackend = "ganesha"\nmanage_ganesha = true\n'
        f'ganesha_file = "{tmp_path / "ganesha" / "rootfs-exports.conf"}"\n'
        '[[exports.shared]]\npath = "boot"\n'
    )
    (tmp_path / "hostcfg/hosts.toml").write_text(_hosts(PC1_ENTRY, PC2_ENTRY))
    return load_site(tmp_path, environ={})


@pytest.fixture
def lab() -> Iterator[Lab]:
    with open_lab([PC1, PC2, STRANGER]) as lab:
        rpcbind = lab.spawn(["rpcbind", "-f"])  # NFSv3 clients find MOUNT and NFS through it
        wait_listening(lab, 111, what="rpcbind")
        assert rpcbind.poll() is None
        yield lab


def _url(site: Site, rel: str, version: int) -> str:
    path = f"{site.config.export_root}/{rel}"  # libnfs takes the path raw, no %-decoding
    return f"nfs://{SERVER_IP}{path}?version={version}"


def _read(lab: Lab, client: str, url: str, *, expect_ok: bool) -> str:
    """nfs-cat output, retried until it succeeds (or fails, if expect_ok is False): ganesha
    answers a little after it listens, and a reload is asynchronous."""
    deadline = time.monotonic() + WAIT
    while True:
        result = nfs_cat(lab, client, url)
        if (result.returncode == 0) == expect_ok:
            return result.stdout if expect_ok else result.stderr
        if time.monotonic() > deadline:
            raise AssertionError(
                f"nfs-cat {url} from {client}: rc {result.returncode}, expected "
                f"{'success' if expect_ok else 'refusal'}\n{result.stdout}{result.stderr}"
            )
        time.sleep(0.5)


def test_hosts_read_their_own_root_over_v3_and_v4_and_nobody_else(site: Site, lab: Lab) -> None:
    result = apply(site, run_in=lab.in_server)
    assert result.action.startswith("started ganesha.nfsd")
    files = GaneshaFiles.for_site(site)
    log = files.log.read_text() if files.log.exists() else ""
    wait_listening(lab, 2049, what="ganesha.nfsd", log=log)

    for version in (3, 4):
        assert (
            _read(lab, PC1, _url(site, f"{PC1}/etc/hostname", version), expect_ok=True) == "pc1\n"
        )
        assert (
            _read(lab, PC2, _url(site, f"{PC2}/etc/hostname", version), expect_ok=True) == "pc2\n"
        )
        # no_root_squash: the host's root reads its root-only files.
        assert _read(lab, PC1, _url(site, f"{PC1}/etc/shadow", version), expect_ok=True)
        # Another machine, even one in the same subnet and inventory, is refused.
        for client in (PC2, STRANGER):
            err = _read(lab, client, _url(site, f"{PC1}/etc/hostname", version), expect_ok=False)
            assert "MNT3ERR_ACCES" in err or "NFS4ERR" in err, err
        # The shared tree: readable by every client of the subnet, root squashed.
        boot = _url(site, "boot/pxelinux.cfg", version)
        assert _read(lab, STRANGER, boot, expect_ok=True) == "DEFAULT linux\n"
        err = _read(lab, PC1, _url(site, "boot/root-only", version), expect_ok=False)
        assert "ACCESS" in err, err

    assert check(site) == []


def test_reload_follows_the_inventory_and_keeps_export_ids(site: Site, lab: Lab) -> None:
    apply(site, run_in=lab.in_server)
    wait_listening(lab, 2049, what="ganesha.nfsd")
    pc2_url = _url(site, f"{PC2}/etc/hostname", 4)
    assert _read(lab, PC2, pc2_url, expect_ok=True) == "pc2\n"
    ganesha_file = Path(site.config.exports.ganesha_file)
    ids_before = parse_export_ids(ganesha_file.read_text())
    pid = ganesha_pid(GaneshaFiles.for_site(site).pid)

    # pc2 leaves the inventory: its export goes away on reload, without a restart.
    (site.hosts_file).write_text(_hosts(PC1_ENTRY))
    site = load_site(site.root, environ={})
    result = apply(site, run_in=lab.in_server)
    assert result.changed and result.action == f"reloaded ganesha.nfsd (pid {pid})"
    _read(lab, PC2, pc2_url, expect_ok=False)
    _read(lab, PC2, _url(site, f"{PC2}/etc/hostname", 3), expect_ok=False)
    assert _read(lab, PC1, _url(site, f"{PC1}/etc/hostname", 3), expect_ok=True) == "pc1\n"
    ids_after = parse_export_ids(ganesha_file.read_text())
    assert {p: i for p, i in ids_before.items() if p in ids_after} == ids_after

    # A second apply with nothing changed rewrites nothing.
    assert not apply(site, run_in=lab.in_server).changed

    # Drift: someone edits the managed file.
    ganesha_file.write_text("# emptied by hand\n")
    assert check(site) == [
        f"file: {ganesha_file} differs from the inventory; run 'rootfs exports apply'"
    ]

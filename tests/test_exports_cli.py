"""`rootfs exports show/apply/check` and the `auto` hook, through the CLI, with the kernel backend
pointed at a temporary file (this machine runs no kernel nfsd)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from rootfs.cli import cli
from rootfs.errors import UserError

HOSTS = '[hosts.pc1]\nmac = "52:54:00:12:34:11"\nip = "10.0.0.11"\n'


@pytest.fixture
def site_dir(tmp_path: Path) -> Path:
    root = tmp_path / "tftpboot"
    (root / "10.0.0.11").mkdir(parents=True)
    (tmp_path / "hostcfg").mkdir()
    (tmp_path / "hostcfg/hosts.toml").write_text(HOSTS)
    (tmp_path / "site.toml").write_text(
        f'[paths]\nexport_root = "{root}"\nstate_dir = "{tmp_path / "state"}"\n'
        "[defaults]\noverlays = []\n"
        f'[exports]\nkernel_file = "{tmp_path / "rootfs.exports"}"\n'
    )
    return tmp_path


def run(site_dir: Path, *args: str) -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(cli, ["--site", str(site_dir), *args])
    return result.exit_code, result.output, result.exception


def test_show_prints_the_file_for_either_backend(site_dir: Path) -> None:
    code, out, _ = run(site_dir, "exports", "show")
    assert code == 0
    assert (
        f"\n{site_dir}/tftpboot/10.0.0.11 10.0.0.11(rw,sync,no_subtree_check,no_root_squash," in out
    )
    code, out, _ = run(site_dir, "exports", "show", "--backend", "ganesha")
    assert code == 0 and "\t\tClients = 10.0.0.11;\n" in out


def test_show_skips_trees_not_built_yet(site_dir: Path) -> None:
    (site_dir / "tftpboot/10.0.0.11").rmdir()
    code, out, _ = run(site_dir, "exports", "show")
    assert code == 0 and "10.0.0.11(" not in out
    assert "not exported: " in out and "run 'rootfs build'" in out


@pytest.mark.skipif(shutil.which("exportfs") is not None, reason="a real exportfs would run")
def test_apply_without_exportfs_writes_the_file_and_says_what_to_do(site_dir: Path) -> None:
    code, _, exc = run(site_dir, "exports", "apply")
    assert isinstance(exc, UserError) and code == 1
    assert "exportfs not found" in exc.message and "nfs-kernel-server" in exc.message
    text = (site_dir / "rootfs.exports").read_text()
    assert "10.0.0.11(rw,sync,no_subtree_check,no_root_squash," in text
    assert not list(site_dir.glob(".rootfs.exports.*"))  # no temp file left behind


@pytest.mark.skipif(shutil.which("exportfs") is not None, reason="a real exportfs would run")
def test_check_without_exportfs_is_a_clear_error(site_dir: Path) -> None:
    _, _, exc = run(site_dir, "exports", "check")
    assert isinstance(exc, UserError) and "exportfs not found" in exc.message


def test_ganesha_apply_without_a_running_daemon_says_how_to_start_it(site_dir: Path) -> None:
    site_toml = site_dir / "site.toml"
    site_toml.write_text(
        site_toml.read_text()
        + f'backend = "ganesha"\nganesha_file = "{site_dir / "g.conf"}"\n'
        + f'ganesha_pid_file = "{site_dir / "none.pid"}"\n'
    )
    _, _, exc = run(site_dir, "exports", "apply")
    assert isinstance(exc, UserError)
    assert "ganesha.nfsd is not running" in exc.message and "%include" in exc.message
    assert "Export_Id = 11;" in (site_dir / "g.conf").read_text()


def test_wide_rw_refusal_is_one_line_naming_the_key(site_dir: Path) -> None:
    site_toml = site_dir / "site.toml"
    site_toml.write_text(
        site_toml.read_text() + '[[exports.shared]]\npath = "x"\nclients = ["*"]\nrw = true\n'
    )
    _, _, exc = run(site_dir, "exports", "show")
    assert isinstance(exc, UserError)
    assert exc.message.startswith("site.toml: exports.shared[0]: read-write export")
    assert "\n" not in exc.message


def test_auto_applies_only_when_asked(site_dir: Path) -> None:
    from rootfs.config.site import load_site
    from rootfs.exports.apply import apply_if_auto

    assert apply_if_auto(load_site(site_dir, environ={})) is None
    assert not (site_dir / "rootfs.exports").exists()
    site_toml = site_dir / "site.toml"
    site_toml.write_text(
        site_toml.read_text()
        + f'auto = true\nbackend = "ganesha"\nganesha_file = "{site_dir / "g.conf"}"\n'
        + f'ganesha_pid_file = "{site_dir / "none.pid"}"\n'
    )
    with pytest.raises(UserError, match=r"ganesha\.nfsd is not running"):
        apply_if_auto(load_site(site_dir, environ={}))
    assert (site_dir / "g.conf").exists()

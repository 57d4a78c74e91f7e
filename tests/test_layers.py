"""The layering contract in pyproject.toml (`lint-imports`, run by `make lint`) holds, and fails
when a module imports across a boundary it forbids: each case plants one wrong import in a copy
of the package and expects the named contract to break."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NETBOOT = "netboot layers, DHCP, TFTP and HTTP apart"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter not installed")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with the repository's contracts over the package found under *root*."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache", str(REPO / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_package_keeps_every_contract() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "planted", "contract"),
    [
        # The tree model may not reach up into the engine that writes trees.
        ("tree/plan.py", "import rootfs.engine.apply", "Layers point down"),
        # The store may not know the build engine (gc once imported a constant from build).
        ("store/gc.py", "from rootfs.engine import build", "Layers point down"),
        # The configuration loader may not pull in a protocol core.
        ("config/site.py", "import rootfs.netboot.tftp.transfer", "Layers point down"),
        # Front ends are independent of each other.
        ("cache/stats.py", "import rootfs.exports.model", "Layers point down"),
        # DHCP and TFTP know nothing of each other.
        ("netboot/tftp/server.py", "import rootfs.netboot.dhcp.packet", NETBOOT),
        ("netboot/http/server.py", "import rootfs.netboot.tftp.server", NETBOOT),
        ("netboot/tftp/server.py", "import rootfs.netboot.http.plan", NETBOOT),
        # A sans-IO codec does no I/O, not even through the standard library.
        ("netboot/dhcp/packet.py", "import socket", "Pure cores do no I/O"),
        ("tree/compose.py", "import os", "Pure cores do no I/O"),
        ("netboot/http/plan.py", "import trio", "Pure cores do no I/O"),
        # The shared name check is pure; reaching the disk through it would make HTTP's core impure.
        ("netboot/boot/paths.py", "import rootfs.netboot.boot.bootdir", "Pure cores do no I/O"),
    ],
)
def test_a_wrong_import_breaks_its_contract(
    tmp_path: Path, module: str, planted: str, contract: str
) -> None:
    copy = tmp_path / "rootfs"
    shutil.copytree(REPO / "rootfs", copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / module
    target.write_text(target.read_text() + f"\n{planted}  # planted by the test\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{contract} BROKEN" in result.stdout, result.stdout

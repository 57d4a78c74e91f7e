"""Compose rules: layer order, deletions, directories, symlinked parents, attrs, hardlinks."""

from __future__ import annotations

import pytest

from rootfs.errors import UserError
from rootfs.tree.compose import AttrOverride, Layer, compose
from rootfs.tree.manifest import DIR, FILE, SYMLINK, Entry, Manifest


def d(path: str, mode: int = 0o755, uid: int = 0) -> Entry:
    return Entry(path, DIR, mode, uid, 0, 1, 0)


def f(path: str, digest: str = "a" * 32, mode: int = 0o644, link: str = "") -> Entry:
    return Entry(path, FILE, mode, 0, 0, 1, 10, digest, link)


BASE = Manifest.from_entries(
    [
        d("/"),
        d("/etc"),
        f("/etc/hostname"),
        f("/etc/machine-id"),
        d("/etc/ssh"),
        f("/etc/ssh/ssh_host_rsa_key", mode=0o600),
        f("/etc/ssh/sshd_config"),
        Entry("/lib", SYMLINK, 0o777, 0, 0, 1, 7, "usr/lib"),
        d("/usr"),
        d("/usr/lib"),
        d("/var", mode=0o700, uid=5),
        d("/var/log"),
        f("/var/log/x"),
        f("/usr/bin-a", "b" * 32, link="/usr/bin-a"),
        f("/usr/bin-b", "b" * 32, link="/usr/bin-a"),
    ]
)


def paths(m: Manifest) -> list[str]:
    return list(m.entries)


CASES = [
    (
        "later layer wins",
        [
            Layer("one", [f("/etc/hostname", "1" * 32)]),
            Layer("two", [f("/etc/hostname", "2" * 32)]),
        ],
        lambda m: m.entries["/etc/hostname"].data == "2" * 32,
    ),
    (
        "deletion glob takes matches",
        [Layer("o", [], deletions=["/etc/ssh/ssh_host_*"])],
        lambda m: "/etc/ssh/ssh_host_rsa_key" not in m and "/etc/ssh/sshd_config" in m,
    ),
    (
        "deleting a directory takes its subtree",
        [Layer("o", [], deletions=["/var"])],
        lambda m: not any(p.startswith("/var") for p in m.entries),
    ),
    (
        "an overlay directory keeps the base directory's metadata",
        [Layer("o", [d("/var", mode=0o755, uid=0), f("/var/new")])],
        lambda m: (
            m.entries["/var"].mode == 0o700 and m.entries["/var"].uid == 5 and "/var/new" in m
        ),
    ),
    (
        "a file over a directory replaces the subtree",
        [Layer("o", [f("/var")])],
        lambda m: m.entries["/var"].kind == FILE and "/var/log/x" not in m,
    ),
    (
        "deletion then replacement in one layer",
        [Layer("o", [f("/etc/machine-id", "e" * 32)], deletions=["/etc/machine-id"])],
        lambda m: m.entries["/etc/machine-id"].data == "e" * 32,
    ),
    (
        "attrs override mode and owner",
        [Layer("o", [], attrs={"/etc/hostname": AttrOverride(mode=0o600, gid=42)})],
        lambda m: (m.entries["/etc/hostname"].mode, m.entries["/etc/hostname"].gid) == (0o600, 42),
    ),
    (
        "replacing a hardlink member dissolves the group of one",
        [Layer("o", [f("/usr/bin-b", "c" * 32)])],
        lambda m: m.entries["/usr/bin-a"].link == "" and m.entries["/usr/bin-b"].link == "",
    ),
    (
        "deleting a group's leader renames the group",
        [Layer("o", [f("/usr/bin-c", "b" * 32, link="/usr/bin-a")], deletions=["/usr/bin-a"])],
        lambda m: m.entries["/usr/bin-b"].link == "/usr/bin-b" == m.entries["/usr/bin-c"].link,
    ),
]


@pytest.mark.parametrize(("name", "layers", "check"), CASES, ids=[c[0] for c in CASES])
def test_compose_rules(name: str, layers: list[Layer], check: object) -> None:
    assert check(compose(BASE, layers))  # type: ignore[operator]


def test_parents_always_precede_children() -> None:
    result = compose(BASE, [Layer("o", [d("/opt"), d("/opt/a"), f("/opt/a/b")])])
    assert paths(result) == sorted(paths(result))


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (Layer("o", [d("/lib"), f("/lib/x")]), "/lib is a symlink to 'usr/lib'"),
        (Layer("o", [f("/nope/x")]), "/nope/x: its parent directory is missing"),
        (Layer("o", [f("/.rootfs")]), "reserved"),
        (Layer("o", [], attrs={"/missing": AttrOverride(mode=0o600)}), 'attrs."/missing"'),
        (Layer("o", [], deletions=["/"]), "cannot delete '/'"),
    ],
)
def test_mistakes_are_named(layer: Layer, message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        compose(BASE, [layer])
    assert "overlay 'o'" in str(info.value)

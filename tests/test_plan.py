"""Plan ordering: removals deepest first, puts parents first, directory metadata last."""

from __future__ import annotations

from rootfs.tree.manifest import DIR, FILE, SYMLINK, Entry, Manifest
from rootfs.tree.plan import Action, make_plan


def d(path: str, mtime: int = 1) -> Entry:
    return Entry(path, DIR, 0o755, 0, 0, mtime, 0)


def f(path: str, digest: str = "a" * 32, link: str = "", mode: int = 0o644) -> Entry:
    return Entry(path, FILE, mode, 0, 0, 1, 1, digest, link)


def ops(old: list[Entry], new: list[Entry]) -> list[tuple[str, str]]:
    plan = make_plan(Manifest.from_entries(old), Manifest.from_entries(new))
    return [(op.action.value, op.path) for op in plan.ops]


def test_nothing_to_do() -> None:
    tree = [d("/"), f("/a")]
    assert ops(tree, tree) == []


def test_directory_becomes_file() -> None:
    old = [d("/"), d("/x"), f("/x/y")]
    new = [d("/"), f("/x")]
    assert ops(old, new) == [
        ("remove", "/x/y"),
        ("remove", "/x"),
        ("put", "/x"),
        ("dir-meta", "/"),
    ]


def test_file_becomes_directory_with_children() -> None:
    old = [d("/"), f("/x")]
    new = [d("/"), d("/x"), f("/x/y")]
    assert ops(old, new) == [
        ("remove", "/x"),
        ("put", "/x"),
        ("put", "/x/y"),
        ("dir-meta", "/x"),
        ("dir-meta", "/"),
    ]


def test_file_replaced_in_place_needs_no_removal() -> None:
    assert ops([d("/"), f("/a")], [d("/"), f("/a", "b" * 32)]) == [
        ("put", "/a"),
        ("dir-meta", "/"),
    ]


def test_metadata_only() -> None:
    assert ops([d("/"), f("/a")], [d("/"), f("/a", mode=0o600)]) == [("meta", "/a")]
    assert ops([d("/", 1)], [d("/", 2)]) == [("dir-meta", "/")]


def test_symlink_becomes_file() -> None:
    old = [d("/"), Entry("/s", SYMLINK, 0o777, 0, 0, 1, 1, "t")]
    assert ops(old, [d("/"), f("/s")]) == [("put", "/s"), ("dir-meta", "/")]


def test_hardlink_members_follow_their_leader() -> None:
    new = [d("/"), f("/a", link="/a"), f("/b", link="/a")]
    assert ops([d("/")], new) == [("put", "/a"), ("link", "/b"), ("dir-meta", "/")]


def test_rewritten_leader_relinks_unchanged_members() -> None:
    old = [d("/"), f("/a", link="/a"), f("/b", link="/a")]
    new = [d("/"), f("/a", link="/a", mode=0o600), f("/b", link="/a", mode=0o600)]
    # Metadata changes on a shared inode: both members set it, nothing is rewritten.
    assert [a for a, _ in ops(old, new)] == ["meta", "meta"]
    plan = make_plan(Manifest.from_entries(old), Manifest.from_entries(new))
    assert {op.action for op in plan.ops} == {Action.META}


def test_counts() -> None:
    plan = make_plan(
        Manifest.from_entries([d("/"), f("/a"), f("/b")]),
        Manifest.from_entries([d("/"), f("/a", "b" * 32), f("/c")]),
    )
    assert plan.counts() == {"added": 1, "removed": 1, "modified": 1, "metadata": 0}

"""The cache's pure parts and its object directory, without a mount: inode numbering, sizes,
LRU eviction, index recovery and offline verification."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import xxhash

from rootfs.cache.objects import ObjectCache, charge, parse_size, verify_cache
from rootfs.cache.tree import ROOT_INO, Tree
from rootfs.tree.manifest import Entry, Manifest


def manifest(*entries: Entry) -> Manifest:
    return Manifest.from_entries([Entry("/", "d", 0o755, 0, 0, 0, 0), *entries])


def test_hardlink_groups_share_one_inode_and_count_their_links() -> None:
    tree = Tree(
        manifest(
            Entry("/a", "f", 0o644, 0, 0, 0, 1, "d1", "/a"),
            Entry("/b", "f", 0o644, 0, 0, 0, 1, "d1", "/a"),
            Entry("/c", "f", 0o644, 0, 0, 0, 1, "d1"),
            Entry("/d", "d", 0o755, 0, 0, 0, 0),
            Entry("/d/e", "d", 0o755, 0, 0, 0, 0),
        )
    )
    assert tree.ino["/a"] == tree.ino["/b"] != tree.ino["/c"]
    assert tree.ino["/"] == ROOT_INO
    assert (tree.links("/a"), tree.links("/c")) == (2, 1)
    assert (tree.links("/"), tree.links("/d"), tree.links("/d/e")) == (3, 3, 2)
    assert tree.children["/"] == ["/a", "/b", "/c", "/d"]
    assert tree.group_of("/b") == ["/a", "/b"]


def test_inode_numbers_survive_a_new_manifest_unless_the_type_changes() -> None:
    old = Tree(manifest(Entry("/x", "f", 0o644, 0, 0, 0, 1, "d1"), Entry("/y", "f", 0, 0, 0, 0, 0)))
    new = Tree(
        manifest(
            Entry("/new", "f", 0o644, 0, 0, 0, 1, "d9"),
            Entry("/x", "f", 0o600, 0, 0, 5, 2, "d2"),
            Entry("/y", "d", 0o755, 0, 0, 0, 0),
        )
    )
    assert new.ino["/x"] == old.ino["/x"]  # content changed: same inode, pages invalidated
    assert new.ino["/y"] != old.ino["/y"]  # file became a directory: a new inode


@pytest.mark.parametrize(
    ("text", "size"),
    [("4096", 4096), ("2G", 2 << 30), ("500M", 500 << 20), ("1.5G", 3 << 29), ("64KiB", 64 << 10)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "-1G", "0", "lots"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def put(cache: ObjectCache, data: bytes) -> str:
    digest = xxhash.xxh3_128_hexdigest(data)
    path = Path(cache.object_path(digest))
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    cache.admitted(digest, len(data))
    return digest


def test_eviction_is_lru_to_the_low_water_mark_and_spares_pinned(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path, quota=10 * 4096)
    cache.open()
    digests = [put(cache, bytes([i]) * 4000) for i in range(10)]
    cache.touch(digests[0])  # now the most recently used
    cache.pin(digests[1])  # open: never evicted
    assert not cache.over_quota()
    assert not cache.room_for(1)
    victims = cache.choose_victims(4096)
    cache.unlink_objects(victims)
    assert victims == digests[2:6]
    assert cache.used == 6 * 4096 <= 0.7 * cache.quota - charge(4096)  # type: ignore[operator]
    assert all(not os.path.exists(cache.object_path(d)) for d in victims)
    assert cache.counters.evictions == 4


def test_reserved_fetches_count_against_the_quota(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path, quota=10 * 4096)
    cache.open()
    digests = [put(cache, bytes([i]) * 4000) for i in range(6)]
    assert cache.room_for(4 * 4096)
    cache.reserve(3 * 4096)  # a fetch in flight: its temp file is charged already
    assert not cache.room_for(2 * 4096) and cache.room_for(4096)
    assert not cache.has_room(1)  # read-ahead stays under the low water mark
    for digest in digests:
        cache.pin(digest)  # everything open: nothing to evict
    assert cache.choose_victims(2 * 4096) == []
    cache.unreserve(3 * 4096)
    assert cache.room_for(4 * 4096)


def test_a_cache_over_a_lowered_quota_is_trimmed_when_opened(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path, quota=None)
    cache.open()
    for i in range(10):
        put(cache, bytes([i]) * 4000)
    cache.close()
    smaller = ObjectCache(tmp_path, quota=5 * 4096)
    smaller.open()
    assert smaller.used <= 0.7 * 5 * 4096
    assert len(list((tmp_path / "objects").glob("*/*"))) == len(smaller)
    assert json.loads((tmp_path / "stats.json").read_text())["quota"] == 5 * 4096


def test_index_survives_a_clean_close_and_is_rebuilt_after_a_crash(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path, quota=None)
    cache.open()
    first, second = put(cache, b"one"), put(cache, b"two")
    cache.touch(first)
    cache.close()

    reopened = ObjectCache(tmp_path, quota=None)
    reopened.open()
    assert not reopened.index_rebuilt
    assert list(reopened._lru) == [second, first]  # LRU order kept
    assert not (tmp_path / "index.clean").exists()  # a crash from here means rebuild
    put(reopened, b"three")
    (tmp_path / "tmp" / "partial").write_bytes(b"x")

    crashed = ObjectCache(tmp_path, quota=None)  # no close(): as after kill -9
    crashed.open()
    assert crashed.index_rebuilt
    assert len(crashed) == 3 and crashed.used == 3 * 4096
    assert os.listdir(tmp_path / "tmp") == []


def test_verify_removes_only_bad_objects(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path, quota=None)
    cache.open()
    good, bad = put(cache, b"good"), put(cache, b"bad!")
    cache.close()
    Path(cache.object_path(bad)).write_bytes(b"bad?")
    report = verify_cache(tmp_path)
    assert report.bad == (bad,)
    assert report.objects == 2
    assert os.path.exists(cache.object_path(good)) and not os.path.exists(cache.object_path(bad))
    assert not (tmp_path / "index.clean").exists()

"""The manifest format: round trips, escaping, errors, speed, diff classification."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rootfs.errors import ManifestFormatError
from rootfs.tree import manifest as manifest_module
from rootfs.tree.manifest import (
    CHAR,
    DIR,
    FILE,
    SYMLINK,
    Entry,
    Manifest,
    diff,
    escape,
    parse,
    serialize,
    unescape,
)

ROOT = Entry("/", DIR, 0o755, 0, 0, 0, 0)

# Any str a path can hold after os.fsdecode: valid text plus surrogate-escaped bytes.
path_text = st.text(
    st.one_of(
        st.characters(exclude_categories=["Cs"], exclude_characters="/\x00"),
        st.integers(0xDC80, 0xDCFF).map(chr),
    ),
    min_size=1,
    max_size=20,
)
xattrs = st.lists(
    st.tuples(path_text, st.binary(max_size=24)), max_size=3, unique_by=lambda kv: kv[0]
).map(lambda items: tuple(sorted(items)))


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    kind = draw(st.sampled_from([FILE, DIR, SYMLINK, CHAR, "b", "p"]))
    data = {
        FILE: draw(st.text("0123456789abcdef", min_size=32, max_size=32)),
        SYMLINK: draw(path_text),
        CHAR: f"{draw(st.integers(0, 4095))}:{draw(st.integers(0, 2**20))}",
        "b": "7:0",
    }.get(kind, "")
    return Entry(
        "/" + draw(path_text),
        kind,
        draw(st.integers(0, 0o7777)),
        draw(st.integers(0, 2**32 - 1)),
        draw(st.integers(0, 2**32 - 1)),
        draw(st.integers(-(2**62), 2**62)),
        draw(st.integers(0, 2**40)),
        data,
        draw(st.one_of(st.just(""), path_text.map(lambda p: "/" + p))),
        draw(xattrs),
    )


def fresh_parse(data: bytes) -> Manifest:
    """parse() as a new process does it: serialize() leaves every line it formats in the
    parse memo, which would otherwise hand the very same entries back unparsed."""
    manifest_module._ENTRIES.clear()
    return parse(data, source="m")


@given(st.lists(entries(), max_size=20))
def test_round_trip(items: list[Entry]) -> None:
    manifest = Manifest.from_entries([ROOT, *items])
    assert fresh_parse(serialize(manifest)) == manifest


def test_formatted_lines_are_parsed_to_the_same_entries() -> None:
    ping = Entry("/usr/bin/ping", FILE, 0o755, 0, 0, 5, 90464, "ab" * 16)
    data = serialize(Manifest.from_entries([ROOT, ping]))
    assert parse(data, source="m").entries["/usr/bin/ping"] is ping  # shared, not re-made
    assert fresh_parse(data).entries["/usr/bin/ping"] == ping


@given(path_text)
def test_escape_round_trip_and_field_safety(text: str) -> None:
    escaped = escape(text)
    assert unescape(escaped) == text
    assert "\t" not in escaped and "\n" not in escaped
    escaped.encode("utf-8")  # always writable as UTF-8


def test_known_line() -> None:
    ping = Entry(
        "/usr/bin/ping",
        FILE,
        0o755,
        0,
        0,
        5,
        90464,
        "ab" * 16,
        "",
        (("security.capability", b"\x01\x00\x00\x02"),),
    )
    text = serialize(Manifest.from_entries([ROOT, ping])).decode()
    assert text.splitlines()[2] == (
        "/usr/bin/ping\tf\t0755\t0\t0\t5\t90464\t" + "ab" * 16 + "\t-\tsecurity.capability=01000002"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"nonsense\n", "line 1: expected header"),
        (b"rootfs-manifest 1\n/\td\t0755\t0\t0\t0\n", "line 2: expected 10"),
        (b"rootfs-manifest 1\n/\tz\t0755\t0\t0\t0\t0\t-\t-\t-\n", "unknown entry type"),
        (b"rootfs-manifest 1\n/\td\t07x5\t0\t0\t0\t0\t-\t-\t-\n", "line 2"),
        (
            b"rootfs-manifest 1\n/b\td\t0755\t0\t0\t0\t0\t-\t-\t-\n"
            b"/a\td\t0755\t0\t0\t0\t0\t-\t-\t-\n",
            "line 3: path '/a' is out of order",
        ),
        (b"rootfs-manifest 1\netc\td\t0755\t0\t0\t0\t0\t-\t-\t-\n", "not absolute"),
    ],
)
def test_malformed_files_name_the_line(data: bytes, message: str) -> None:
    with pytest.raises(ManifestFormatError, match=message):
        parse(data, source="gen.manifest")


def test_lines_seen_before_give_the_same_entries_and_are_still_checked() -> None:
    """parse memoises line -> Entry across manifests; the order checks must still apply."""
    a = Entry("/a", DIR, 0o755, 0, 0, 0, 0)
    b = Entry("/b", FILE, 0o644, 0, 0, 5, 3, "ab" * 16)
    data = serialize(Manifest.from_entries([ROOT, a, b]))
    first, second = parse(data, source="one"), parse(data, source="two")
    assert second.entries["/b"] is first.entries["/b"]
    assert second == first
    header, root, line_a, line_b, _ = data.split(b"\n")
    swapped = b"\n".join([header, root, line_b, line_a, b""])
    with pytest.raises(ManifestFormatError, match="line 4: path '/a' is out of order"):
        parse(swapped, source="gen.manifest")
    with pytest.raises(ManifestFormatError, match="line 4: path '/b' is out of order"):
        parse(b"\n".join([header, root, line_b, line_b, b""]), source="gen.manifest")


def test_loads_100k_entries_in_under_a_second() -> None:
    items = [
        Entry(
            f"/usr/share/doc/p{i // 10:05d}/f{i:06d}",
            FILE,
            0o644,
            0,
            0,
            1_700_000_000 * 10**9,
            1234,
            "0123456789abcdef" * 2,
        )
        for i in range(100_000)
    ]
    data = serialize(Manifest.from_entries([ROOT, *items]))
    best = min(_timed(lambda: parse(data, source="big")) for _ in range(3))
    assert best < 1.0, f"parsing 100k entries took {best:.2f}s"


def _timed(func: object) -> float:
    start = time.perf_counter()
    func()  # type: ignore[operator]
    return time.perf_counter() - start


def test_diff_classifies_each_kind_of_change() -> None:
    f = Entry("/f", FILE, 0o644, 0, 0, 1, 3, "a" * 32)
    old = Manifest.from_entries(
        [
            ROOT,
            f,
            Entry("/gone", FILE, 0o644, 0, 0, 1, 0, "b" * 32),
            Entry("/m", FILE, 0o644, 0, 0, 1, 3, "c" * 32),
        ]
    )
    new = Manifest.from_entries(
        [
            ROOT,
            f._replace(data="d" * 32),
            Entry("/new", SYMLINK, 0o777, 0, 0, 1, 1, "f"),
            Entry("/m", FILE, 0o600, 0, 0, 1, 3, "c" * 32),
        ]
    )
    assert [(c.path, c.kind) for c in diff(old, new)] == [
        ("/f", "modified"),
        ("/gone", "removed"),
        ("/m", "metadata"),
        ("/new", "added"),
    ]


def test_directory_mtime_can_be_ignored() -> None:
    old = Manifest.from_entries([ROOT])
    new = Manifest.from_entries([ROOT._replace(mtime_ns=99)])
    assert [c.kind for c in diff(old, new)] == ["metadata"]
    assert diff(old, new, ignore_dir_mtime=True) == []

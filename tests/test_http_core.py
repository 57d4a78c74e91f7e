"""The HTTP core without sockets: request targets, byte ranges (RFC 9110 §14), validators and
preconditions (§13), and the response plan, by examples and by hypothesis against small models."""

from __future__ import annotations

import calendar
import email.utils
import itertools
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rootfs.netboot.boot.paths import PathRefused
from rootfs.netboot.http.conditional import (
    Validators,
    format_http_date,
    if_range_holds,
    parse_etags_untrusted,
    parse_http_date_untrusted,
    preconditions,
)
from rootfs.netboot.http.plan import (
    Representation,
    collect_fields,
    error_plan,
    method_plan,
    plan_response,
)
from rootfs.netboot.http.ranges import ByteRange, resolve_untrusted
from rootfs.netboot.http.target import BadTarget, target_name_untrusted

NOW = 1_750_000_000.0
MTIME = 1_700_000_000.25
ETAG = b'"abc-1"'
LM = format_http_date(MTIME)


# -- request targets ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "name"),
    [
        (b"/vmlinuz", b"vmlinuz"),
        (b"/grub/x86_64-efi/normal.mod", b"grub/x86_64-efi/normal.mod"),
        (b"//grub//./normal.mod", b"grub/normal.mod"),
        (b"/boot.ipxe?mac=52:54:00:12:34:56", b"boot.ipxe"),
        (b"/a%20b", b"a b"),
        (b"/caf%C3%A9", "café".encode()),
        (b"http://10.0.0.1/vmlinuz", b"vmlinuz"),  # absolute-form, RFC 9112 §3.2.2
        (b"HTTP://10.0.0.1:8080/grub/grub.cfg", b"grub/grub.cfg"),
        (b"/etc/passwd", b"etc/passwd"),  # relative to the boot directory, never "/"
    ],
)
def test_targets_to_names(target: bytes, name: bytes) -> None:
    clean = target_name_untrusted(target)
    assert clean.relative == name
    assert not clean.absolute  # so a missing name is "not found" (404), not "access"


@pytest.mark.parametrize(
    "target",
    [
        b"/../secret",
        b"/%2e%2e/secret",
        b"/%2E%2E/secret",
        b"/grub/%2e%2e/%2e%2e/secret",
        b"/..%2fsecret",
        b"/%2e%2e%2fsecret",
        b"/.%2e/secret",
        b"/..\\secret",
        b"/%5c..%5csecret",
        b"/grub\\..\\..\\secret",
        b"/pxelinux.0%00.txt",
        b"/%00",
        b"/%0a",
        b"/a%7fb",
        b"/",
        b"/.",
        b"/C:%5cWindows",
        b"/grub%5cx86_64-efi%5cnormal.mod",  # a backslash is no separator in HTTP
    ],
)
def test_targets_refused(target: bytes) -> None:
    with pytest.raises(PathRefused) as e:
        target_name_untrusted(target)
    assert e.value.kind == "access"


@pytest.mark.parametrize(
    ("target", "status"),
    [
        (b"/%zz", 400),
        (b"/%4", 400),
        (b"/%", 400),
        (b"*", 400),
        (b"vmlinuz", 400),
        (b"10.0.0.1:80", 400),
        (b"/a#frag", 400),
        (b"/" + b"a" * 5000, 414),
    ],
)
def test_targets_malformed(target: bytes, status: int) -> None:
    with pytest.raises(BadTarget) as e:
        target_name_untrusted(target)
    assert e.value.status == status


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_any_target_is_a_safe_name_or_refused(target: bytes) -> None:
    try:
        clean = target_name_untrusted(target)
    except (BadTarget, PathRefused):
        return
    parts = clean.relative.split(b"/")
    assert all(p not in (b"", b".", b"..") for p in parts)
    assert not any(b < 0x20 or b == 0x7F or b == 0x5C for b in clean.relative)


@given(
    st.lists(
        st.binary(min_size=1, max_size=20).filter(lambda p: p not in (b".", b"..")),
        min_size=1,
        max_size=5,
    )
)
def test_percent_encoded_names_round_trip(parts: list[bytes]) -> None:
    if any(b"/" in p or b"\\" in p or any(c < 0x20 or c == 0x7F for c in p) for p in parts):
        return
    target = b"/" + b"/".join(urllib.parse.quote_from_bytes(p, safe=b"").encode() for p in parts)
    assert target_name_untrusted(target).relative == b"/".join(parts)


# -- byte ranges ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "size", "expected"),
    [
        (b"bytes=0-499", 1000, (ByteRange(0, 499),)),
        (b"bytes=500-", 1000, (ByteRange(500, 999),)),
        (b"bytes=-200", 1000, (ByteRange(800, 999),)),
        (b"bytes=-2000", 1000, (ByteRange(0, 999),)),  # suffix longer than the file: all
        (b"bytes=900-5000", 1000, (ByteRange(900, 999),)),  # last-pos clamped
        (b"BYTES = 1-1", 1000, (ByteRange(1, 1),)),
        (b"bytes=0-0,-1", 1000, (ByteRange(0, 0), ByteRange(999, 999))),
        (b"bytes=0-10, 5-20", 1000, (ByteRange(0, 20),)),  # overlapping: coalesced
        (b"bytes=0-9,10-19", 1000, (ByteRange(0, 19),)),  # adjacent: coalesced
        (b"bytes=, 3-4 ,", 1000, (ByteRange(3, 4),)),  # empty list elements
        (b"bytes=1000-", 1000, ()),  # past the end: 416
        (b"bytes=1000-2000, 5000-", 1000, ()),
        (b"bytes=-0", 1000, ()),
        (b"bytes=99999999999999999999999-", 1000, ()),
        (b"bytes=0-99999999999999999999999", 10, (ByteRange(0, 9),)),
        (b"bytes=5-4", 1000, None),  # invalid int-range: the Range is ignored
        (b"bytes=a-b", 1000, None),
        (b"bytes=1", 1000, None),
        (b"bytes=-", 1000, None),
        (b"bytes=+1-2", 1000, None),
        (b"bytes= ", 1000, None),
        (b"items=0-1", 1000, None),  # another unit
        (b"0-1", 1000, None),
        (b"bytes=0-1", 0, None),  # an empty file: no range to serve
    ],
)
def test_ranges(value: bytes, size: int, expected: tuple[ByteRange, ...] | None) -> None:
    assert resolve_untrusted(value, size) == expected


def _model(specs: list[tuple[int | None, int | None]], size: int) -> set[int] | None:
    """The set of byte offsets a range-set selects (None: the Range is invalid)."""
    chosen: set[int] = set()
    for first, last in specs:
        if first is None:
            assert last is not None
            chosen |= set(range(max(0, size - last), size))
        else:
            if last is not None and last < first:
                return None
            chosen |= set(range(first, min(size, (last if last is not None else size) + 1)))
    return chosen


@given(
    st.integers(1, 300),
    st.lists(
        st.tuples(st.none() | st.integers(0, 400), st.none() | st.integers(0, 400)).filter(
            lambda t: t != (None, None)
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_ranges_select_what_the_model_selects(
    size: int, specs: list[tuple[int | None, int | None]]
) -> None:
    def spec(first: int | None, last: int | None) -> bytes:
        if first is None:
            return b"-%d" % (last or 0)
        return b"%d-%s" % (first, b"" if last is None else b"%d" % last)

    text = b"bytes=" + b",".join(spec(first, last) for first, last in specs)
    got = resolve_untrusted(text, size)
    expected = _model(specs, size)
    if expected is None:
        assert got is None
        return
    assert got is not None
    covered = [i for r in got for i in range(r.first, r.last + 1)]
    assert len(covered) == len(set(covered)), "ranges overlap after coalescing"
    assert set(covered) == expected
    assert all(0 <= r.first <= r.last < size for r in got)
    assert all(a.last + 1 < b.first for a, b in itertools.pairwise(got))


@given(st.binary(max_size=200), st.integers(0, 10**6))
def test_any_range_value_resolves_or_is_ignored(value: bytes, size: int) -> None:
    got = resolve_untrusted(value, size)
    assert got is None or all(0 <= r.first <= r.last < size for r in got)


# -- dates and entity-tags ------------------------------------------------------------------


def test_http_dates_in_all_three_forms() -> None:
    t = calendar.timegm((1994, 11, 6, 8, 49, 37))
    assert format_http_date(t) == b"Sun, 06 Nov 1994 08:49:37 GMT"
    for text in (
        b"Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        b"Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850
        b"Sun Nov  6 08:49:37 1994",  # ANSI C asctime()
    ):
        assert parse_http_date_untrusted(text, NOW) == t, text
    # RFC 9110 §5.6.7: a two-digit year more than 50 years ahead is in the past century.
    # NOW is in 2025: 2080 would be 55 years ahead, 2070 only 45.
    assert parse_http_date_untrusted(b"Tuesday, 01-Jan-80 00:00:00 GMT", NOW) == 315532800
    assert parse_http_date_untrusted(b"Wednesday, 01-Jan-70 00:00:00 GMT", NOW) == 3155760000


@pytest.mark.parametrize(
    "text",
    [b"", b"yesterday", b"Sun, 31 Feb 1994 08:49:37 GMT", b"Sun, 06 Nov 1994 25:49:37 GMT",
     b"Sun, 06 Foo 1994 08:49:37 GMT", b"Sun, 06 Nov 1994 08:49:37 CET", b"1", LM + b", " + LM],
)  # fmt: skip
def test_bad_http_dates(text: bytes) -> None:
    assert parse_http_date_untrusted(text, NOW) is None


@given(st.integers(0, 2**33))
def test_http_date_round_trip(t: int) -> None:
    formatted = format_http_date(t)
    assert formatted == email.utils.formatdate(t, usegmt=True).encode()
    assert parse_http_date_untrusted(formatted, NOW) == t


def test_entity_tag_lists() -> None:
    assert parse_etags_untrusted(b"*") == "*"
    assert parse_etags_untrusted(b'"a", W/"b",,"c"') == [
        (False, b'"a"'), (True, b'"b"'), (False, b'"c"'),
    ]  # fmt: skip
    assert parse_etags_untrusted(b"a") is None
    assert parse_etags_untrusted(b'"a" "b"') is None


# -- preconditions (RFC 9110 §13.2.2) -------------------------------------------------------

V = Validators(ETAG, MTIME)


@pytest.mark.parametrize(
    ("fields", "outcome"),
    [
        ({}, "proceed"),
        ({b"if-none-match": ETAG}, "not-modified"),
        ({b"if-none-match": b'W/"abc-1"'}, "not-modified"),  # weak comparison
        ({b"if-none-match": b'"other", "abc-1"'}, "not-modified"),
        ({b"if-none-match": b"*"}, "not-modified"),
        ({b"if-none-match": b'"other"'}, "proceed"),
        ({b"if-none-match": b"garbage"}, "proceed"),
        ({b"if-modified-since": LM}, "not-modified"),
        ({b"if-modified-since": format_http_date(MTIME + 100)}, "not-modified"),
        ({b"if-modified-since": format_http_date(MTIME - 1)}, "proceed"),
        ({b"if-modified-since": b"garbage"}, "proceed"),
        # If-None-Match decides alone when present (§13.1.3).
        ({b"if-none-match": b'"other"', b"if-modified-since": LM}, "proceed"),
        ({b"if-match": ETAG}, "proceed"),
        ({b"if-match": b"*"}, "proceed"),
        ({b"if-match": b'W/"abc-1"'}, "failed"),  # strong comparison
        ({b"if-match": b'"other"'}, "failed"),
        ({b"if-unmodified-since": LM}, "proceed"),
        ({b"if-unmodified-since": format_http_date(MTIME - 10)}, "failed"),
        ({b"if-match": ETAG, b"if-unmodified-since": format_http_date(0)}, "proceed"),
        ({b"if-match": ETAG, b"if-none-match": ETAG}, "not-modified"),
    ],
)
def test_preconditions(fields: dict[bytes, bytes], outcome: str) -> None:
    assert preconditions(fields, V, NOW) == outcome


def test_preconditions_without_a_date_ignore_dates() -> None:
    generated = Validators(b'"g-1"')
    assert preconditions({b"if-modified-since": LM}, generated, NOW) == "proceed"
    assert preconditions({b"if-unmodified-since": format_http_date(0)}, generated, NOW) == (
        "proceed"
    )


def test_if_range() -> None:
    assert if_range_holds(ETAG, V, NOW)
    assert not if_range_holds(b'W/"abc-1"', V, NOW)  # weak tags never match (§13.1.5)
    assert not if_range_holds(b'"other"', V, NOW)
    assert if_range_holds(LM, V, NOW)
    assert not if_range_holds(format_http_date(MTIME + 5), V, NOW)  # must be exact
    assert not if_range_holds(LM, V, MTIME + 0.5)  # modified within the second: weak date
    assert not if_range_holds(b"garbage", V, NOW)


# -- the plan -------------------------------------------------------------------------------

REP = Representation(1000, V)


def headers(plan_headers: tuple[tuple[bytes, bytes], ...]) -> dict[bytes, bytes]:
    return {k.lower(): v for k, v in plan_headers}


def test_plan_full_get_and_head() -> None:
    get = plan_response(b"GET", {}, REP, NOW)
    h = headers(get.headers)
    assert (get.status, get.first, get.length) == (200, 0, 1000)
    assert h[b"content-length"] == b"1000" and h[b"etag"] == ETAG
    assert h[b"last-modified"] == LM and h[b"accept-ranges"] == b"bytes"
    head = plan_response(b"HEAD", {b"range": b"bytes=0-1"}, REP, NOW)
    assert (head.status, head.length, head.headers) == (200, 0, get.headers)  # §9.3.2, §14.2


def test_plan_ranges() -> None:
    p = plan_response(b"GET", {b"range": b"bytes=-100"}, REP, NOW)
    assert (p.status, p.first, p.length) == (206, 900, 100)
    assert headers(p.headers)[b"content-range"] == b"bytes 900-999/1000"
    assert headers(p.headers)[b"content-length"] == b"100"
    p = plan_response(b"GET", {b"range": b"bytes=1000-"}, REP, NOW)
    assert (p.status, p.length) == (416, 0)
    assert headers(p.headers)[b"content-range"] == b"bytes */1000"
    p = plan_response(b"GET", {b"range": b"bytes=0-1,10-11"}, REP, NOW)
    assert (p.status, p.length, p.note) == (200, 1000, "multiple ranges")
    p = plan_response(b"GET", {b"range": b"bytes=0-1", b"if-range": b'"old"'}, REP, NOW)
    assert (p.status, p.length) == (200, 1000)
    p = plan_response(b"GET", {b"range": b"bytes=0-1", b"if-range": ETAG}, REP, NOW)
    assert (p.status, p.length) == (206, 2)


def test_plan_conditionals() -> None:
    p = plan_response(b"GET", {b"if-none-match": ETAG, b"range": b"bytes=0-1"}, REP, NOW)
    assert (p.status, p.length) == (304, 0)
    assert headers(p.headers) == {b"etag": ETAG, b"last-modified": LM}
    p = plan_response(b"GET", {b"if-match": b'"x"'}, REP, NOW)
    assert (p.status, p.length) == (412, 0)


def test_plan_generated_config() -> None:
    rep = Representation(10, Validators(b'"g-1"'), generated=True)
    h = headers(plan_response(b"GET", {}, rep, NOW).headers)
    assert h[b"cache-control"] == b"no-cache" and b"last-modified" not in h


def test_methods() -> None:
    assert method_plan(b"GET") is None and method_plan(b"HEAD") is None
    post = method_plan(b"POST")
    assert (
        post is not None
        and post.status == 405
        and headers(post.headers)[b"allow"] == (b"GET, HEAD")
    )
    brew = method_plan(b"BREW")
    assert brew is not None and brew.status == 501
    lower = method_plan(b"get")  # methods are case-sensitive (RFC 9110 §9.1)
    assert lower is not None and lower.status == 501


def test_error_plans_carry_their_framing() -> None:
    p = error_plan(404, "file not found")
    assert headers(p.headers)[b"content-length"] == b"%d" % len(p.inline)
    assert p.inline == b"404 Not Found\n" and not p.close
    assert headers(error_plan(503, "busy", close=True).headers)[b"connection"] == b"close"


def test_repeated_fields_are_joined() -> None:
    fields = collect_fields([(b"Range", b"bytes=0-1"), (b"range", b"bytes=2-3")])
    assert fields == {b"range": b"bytes=0-1, bytes=2-3"}
    assert resolve_untrusted(fields[b"range"], 10) is None  # two Range fields: ignored


@given(
    st.sampled_from([b"GET", b"HEAD"]),
    st.integers(0, 5000),
    st.dictionaries(
        st.sampled_from([b"range", b"if-none-match", b"if-modified-since", b"if-range",
                         b"if-match", b"if-unmodified-since"]),
        st.one_of(
            st.binary(max_size=40),
            st.sampled_from([ETAG, b'W/"abc-1"', b"*", LM, b"bytes=0-10", b"bytes=-5",
                             b"bytes=4000-", format_http_date(0)]),
        ),
    ),
)  # fmt: skip
def test_every_plan_is_well_framed(method: bytes, size: int, fields: dict[bytes, bytes]) -> None:
    p = plan_response(method, fields, Representation(size, V), NOW)
    h = headers(p.headers)
    assert p.status in (200, 206, 304, 412, 416)
    assert p.first >= 0 and p.first + p.length <= max(size, 0)
    if method == b"HEAD":
        assert p.length == 0 and p.status in (200, 304, 412)
    if p.status == 206:
        assert int(h[b"content-length"]) == p.length > 0
        assert h[b"content-range"] == b"bytes %d-%d/%d" % (p.first, p.first + p.length - 1, size)
    if p.status == 200:
        assert int(h[b"content-length"]) == size
        assert p.length == (size if method == b"GET" else 0)
    if p.status == 304:
        assert p.length == 0 and not p.inline

"""Validators and preconditions (RFC 9110 §8.8, §13): entity-tags, HTTP dates, and the order in
which If-Match, If-Unmodified-Since, If-None-Match, If-Modified-Since and If-Range are evaluated
(§13.2.2). Pure: the time comes in as an argument.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

_MONTH_NAMES = (b"jan", b"feb", b"mar", b"apr", b"may", b"jun",
                b"jul", b"aug", b"sep", b"oct", b"nov", b"dec")  # fmt: skip
_MONTHS = {m: i for i, m in enumerate(_MONTH_NAMES, start=1)}
_DAYS = (b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun")
# §5.6.7: IMF-fixdate, then the two obsolete forms every recipient must still accept.
_IMF_FIXDATE = re.compile(rb"[A-Za-z]{3}, (\d\d) ([A-Za-z]{3}) (\d{4}) (\d\d):(\d\d):(\d\d) GMT")
_RFC850 = re.compile(rb"[A-Za-z]{6,9}, (\d\d)-([A-Za-z]{3})-(\d\d) (\d\d):(\d\d):(\d\d) GMT")
_ASCTIME = re.compile(rb"[A-Za-z]{3} ([A-Za-z]{3}) ([ \d]\d) (\d\d):(\d\d):(\d\d) (\d{4})")
# §8.8.3: entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE, etagc = %x21 / %x23-7E / obs-text
_ETAG = re.compile(rb'[ \t]*(W/)?("[\x21\x23-\x7e\x80-\xff]*")[ \t]*(?:,|$)')

Outcome = Literal["proceed", "not-modified", "failed"]


def format_http_date(timestamp: float) -> bytes:
    """IMF-fixdate, the one form a sender may generate (§5.6.7)."""
    t = datetime.fromtimestamp(int(timestamp), UTC)
    month = _MONTH_NAMES[t.month - 1].capitalize()
    return b"%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        _DAYS[t.weekday()], t.day, month, t.year, t.hour, t.minute, t.second,
    )  # fmt: skip


def parse_http_date_untrusted(value: bytes, now: float) -> int | None:
    """Seconds since the epoch, or None for anything that is not one HTTP-date (§5.6.7).

    A two-digit rfc850 year more than 50 years ahead of `now` is taken from the past century.
    """
    value = value.strip(b" \t")
    try:
        if m := _IMF_FIXDATE.fullmatch(value):
            day, month, year, hh, mm, ss = m.groups()
            return _timestamp(int(year), month, int(day), hh, mm, ss)
        if m := _RFC850.fullmatch(value):
            day, month, yy, hh, mm, ss = m.groups()
            this_year = datetime.fromtimestamp(now, UTC).year
            year = this_year - this_year % 100 + int(yy)
            if year > this_year + 50:
                year -= 100
            return _timestamp(year, month, int(day), hh, mm, ss)
        if m := _ASCTIME.fullmatch(value):
            month, day, hh, mm, ss, year = m.groups()
            return _timestamp(int(year), month, int(day.strip()), hh, mm, ss)
    except (ValueError, OverflowError):  # 31 Feb, 25:00, year 0 ...
        return None
    return None


def _timestamp(year: int, month: bytes, day: int, hh: bytes, mm: bytes, ss: bytes) -> int | None:
    number = _MONTHS.get(month.lower())
    if number is None:
        return None
    second = min(int(ss), 59)  # a leap second (60) is allowed on the wire
    t = datetime(year, number, day, int(hh), int(mm), second, tzinfo=UTC)
    return int(t.timestamp())


def parse_etags_untrusted(value: bytes) -> list[tuple[bool, bytes]] | Literal["*"] | None:
    """An If-Match / If-None-Match list: "*", or (weak, opaque-tag) pairs; None if malformed."""
    value = value.strip(b" \t")
    if value == b"*":
        return "*"
    tags: list[tuple[bool, bytes]] = []
    pos = 0
    while pos < len(value):
        if value[pos : pos + 1] in (b",", b" ", b"\t"):  # empty list elements (§5.6.1)
            pos += 1
            continue
        m = _ETAG.match(value, pos)
        if m is None:
            return None
        tags.append((m[1] is not None, m[2]))
        pos = m.end()
    return tags


@dataclass(frozen=True)
class Validators:
    """What a representation can be compared by: a strong entity-tag, its quotes included, and
    its modification time (None for generated configs, which have none)."""

    etag: bytes
    mtime: float | None = None

    @property
    def last_modified(self) -> int | None:
        """Last-Modified in whole seconds, as the wire carries it."""
        return None if self.mtime is None else int(self.mtime)

    def strong_date(self, now: float) -> bool:
        """§8.8.2.2: Last-Modified is strong only if the file is older than a second at `now`
        (a change within the same second would keep the same date)."""
        return self.mtime is not None and now - self.mtime >= 1


def _strong_match(tags: list[tuple[bool, bytes]] | Literal["*"] | None, etag: bytes) -> bool:
    if tags == "*":
        return True
    return any(not weak and tag == etag for weak, tag in tags or ())


def _weak_match(tags: list[tuple[bool, bytes]] | Literal["*"] | None, etag: bytes) -> bool:
    if tags == "*":
        return True
    return any(tag == etag for _weak, tag in tags or ())


def preconditions(fields: dict[bytes, bytes], validators: Validators, now: float) -> Outcome:
    """§13.2.2 steps 1-4 for a GET or HEAD of an existing representation.

    "failed" is 412, "not-modified" is 304, "proceed" serves it (If-Range is step 5, see
    `if_range_holds`). A malformed entity-tag list matches nothing, so at worst a client gets
    the whole body again, or a 412 when it asked for a precondition it cannot prove.
    """
    lm = validators.last_modified
    if (if_match := fields.get(b"if-match")) is not None:
        if not _strong_match(parse_etags_untrusted(if_match), validators.etag):
            return "failed"
    elif (ius := fields.get(b"if-unmodified-since")) is not None and lm is not None:
        date = parse_http_date_untrusted(ius, now)
        if date is not None and lm > date:
            return "failed"
    if (inm := fields.get(b"if-none-match")) is not None:
        if _weak_match(parse_etags_untrusted(inm), validators.etag):
            return "not-modified"
    elif (ims := fields.get(b"if-modified-since")) is not None and lm is not None:
        date = parse_http_date_untrusted(ims, now)
        if date is not None and lm <= date:
            return "not-modified"
    return "proceed"


def if_range_holds(value: bytes, validators: Validators, now: float) -> bool:
    """§13.1.5: whether a Range may be honoured. An entity-tag must match strongly (a weak one
    never does); a date must equal Last-Modified exactly, and Last-Modified must be strong."""
    value = value.strip(b" \t")
    if value.startswith((b'"', b"W/")):
        tags = parse_etags_untrusted(value)
        return isinstance(tags, list) and len(tags) == 1 and _strong_match(tags, validators.etag)
    date = parse_http_date_untrusted(value, now)
    return date is not None and date == validators.last_modified and validators.strong_date(now)

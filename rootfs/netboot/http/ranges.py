"""Byte ranges (RFC 9110 §14): a Range field value, resolved against a representation's size. Pure.

    Range: bytes=0-499        the first 500 bytes        (int-range)
    Range: bytes=9500-        from byte 9500 to the end  (int-range without last-pos)
    Range: bytes=-500         the last 500 bytes         (suffix-range)

`resolve_untrusted` returns None when the Range is to be ignored and the whole representation
sent (another unit, a syntax error, an invalid int-range with last < first: §14.2 lets a server
ignore Range, and ignoring is always a correct answer); an empty tuple when no range is
satisfiable (416, §15.5.17); else the satisfiable ranges, clamped to the size, sorted, with
overlapping and adjacent ones coalesced (§14.2 allows coalescing).

Several disjoint ranges are then answered with the whole representation (200), not
multipart/byteranges: boot clients (iPXE, UEFI HTTP boot, curl -C, wget -c) ask for one range
at a time, and a multipart body would be a second body format for no client. A zero-length
representation has no satisfiable byte range but for a suffix-range, and that one is empty, so
Range is ignored for it too.
"""

from __future__ import annotations

from dataclasses import dataclass

_OWS = b" \t"
_HUGE = 1 << 63  # stands for any position with more digits than a file size can have
_MAX_DIGITS = 18  # Python refuses int() of very long strings; no file is this big anyway


@dataclass(frozen=True)
class ByteRange:
    """Bytes first..last of a representation, both inclusive (as in Content-Range)."""

    first: int
    last: int

    @property
    def length(self) -> int:
        return self.last - self.first + 1

    def content_range(self, size: int) -> bytes:
        """The Content-Range field value of a 206 carrying this range (§14.4)."""
        return b"bytes %d-%d/%d" % (self.first, self.last, size)


def resolve_untrusted(value: bytes, size: int) -> tuple[ByteRange, ...] | None:
    """The ranges a Range field value selects from `size` bytes; see the module docstring."""
    unit, eq, range_set = value.partition(b"=")
    if not eq or unit.strip(_OWS).lower() != b"bytes" or size <= 0:
        return None
    selected: list[ByteRange] = []
    specs = 0
    for element in range_set.split(b","):
        spec = element.strip(_OWS)
        if not spec:  # §5.6.1: empty list elements are allowed and ignored
            continue
        specs += 1
        first_text, dash, last_text = spec.partition(b"-")
        if not dash:
            return None
        if not first_text:  # suffix-range: the last N bytes
            suffix = _number(last_text)
            if suffix is None:
                return None
            if suffix > 0:
                selected.append(ByteRange(max(0, size - suffix), size - 1))
            continue
        first = _number(first_text)
        last = _number(last_text) if last_text else _HUGE
        if first is None or last is None or last < first:
            return None
        if first < size:
            selected.append(ByteRange(first, min(last, size - 1)))
    if not specs:
        return None
    return _coalesce(selected)


def _number(text: bytes) -> int | None:
    if not text or not text.isdigit():  # bytes.isdigit: ASCII digits only, no sign, no space
        return None
    if len(text.lstrip(b"0")) > _MAX_DIGITS:
        return _HUGE
    return int(text)


def _coalesce(ranges: list[ByteRange]) -> tuple[ByteRange, ...]:
    merged: list[ByteRange] = []
    for r in sorted(ranges, key=lambda r: r.first):
        if merged and r.first <= merged[-1].last + 1:
            merged[-1] = ByteRange(merged[-1].first, max(merged[-1].last, r.last))
        else:
            merged.append(r)
    return tuple(merged)

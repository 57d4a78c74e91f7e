"""What to answer to a GET or HEAD: status, header fields and which bytes of the body. Pure.

The server hands in the request's method and fields, what the name resolved to (a file's size,
entity-tag and mtime, or a generated config's bytes) and the time; `plan_response` returns a
`Plan` the server writes out. Order of evaluation (RFC 9110 §13.2.2): preconditions (412, 304),
then If-Range, then Range (206, 416), else 200. Errors are `error_plan`.

Entity-tags are strong: a file's names its inode, size and mtime (so a file replaced by rename
or rewritten in place changes it); a generated config's is a hash of its bytes, since it is the
same bytes for the same host until the inventory changes. Generated configs carry
`Cache-Control: no-cache` and no Last-Modified: they are per client and follow site reloads.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus

from rootfs.netboot.http.conditional import (
    Validators,
    format_http_date,
    if_range_holds,
    preconditions,
)
from rootfs.netboot.http.ranges import resolve_untrusted

SERVED_METHODS = (b"GET", b"HEAD")
ALLOW = b"GET, HEAD"
# Methods RFC 9110 §9.3 (and PATCH, RFC 5789) defines: known, so 405 with Allow (§15.5.6);
# anything else is 501 (§9.1: a method the server does not recognize).
KNOWN_METHODS = frozenset({b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH"})
_TEXT_SUFFIXES = (b".cfg", b".ipxe", b".txt", b".conf", b".lst", b".sh", b".cmdline")
TEXT = b"text/plain; charset=utf-8"
BINARY = b"application/octet-stream"
Headers = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class Representation:
    """What a request resolved to, as far as the answer's header fields are concerned."""

    size: int
    validators: Validators
    content_type: bytes = BINARY
    generated: bool = False  # a per-client config: not to be cached without revalidation


@dataclass(frozen=True)
class Plan:
    """An answer: status, header fields (framing included), and the body: `inline` bytes for an
    error, or `length` bytes of the representation from `first` (0 for HEAD, 304, 416 ...)."""

    status: int
    headers: Headers
    first: int = 0
    length: int = 0
    inline: bytes = b""
    note: str = ""  # for the log and trace: "range 0-99", "not modified", ...
    close: bool = False  # end the connection after this answer

    @property
    def reason(self) -> bytes:
        return reason_phrase(self.status)


def reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def collect_fields(headers: Iterable[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """Field name (lowercase) -> value; repeated fields joined with ", " (RFC 9110 §5.3), which
    makes a repeated Range or If-Modified-Since malformed, as it should be."""
    fields: dict[bytes, bytes] = {}
    for name, value in headers:
        key = name.lower()
        fields[key] = fields[key] + b", " + value if key in fields else value
    return fields


def content_type(name: bytes) -> bytes:
    """Boot scripts and configs as text (so a browser or curl shows them), the rest as bytes."""
    return TEXT if name.lower().endswith(_TEXT_SUFFIXES) else BINARY


def method_plan(method: bytes) -> Plan | None:
    """None for a method this server serves; else its 405 (known method) or 501."""
    if method in SERVED_METHODS:
        return None
    if method in KNOWN_METHODS:
        return error_plan(405, f"method {method.decode('ascii', 'replace')} not allowed")
    return error_plan(501, f"method {method.decode('ascii', 'replace')[:32]} not implemented")


def error_plan(status: int, note: str, *, close: bool = False, size: int | None = None) -> Plan:
    """An error answer with a one-line text body (§15.5: the body should explain the error)."""
    body = b"%d %s\n" % (status, reason_phrase(status))
    headers: list[tuple[bytes, bytes]] = [
        (b"Content-Type", TEXT),
        (b"Content-Length", b"%d" % len(body)),
    ]
    if status == 405:
        headers.append((b"Allow", ALLOW))
    if status == 416 and size is not None:
        headers.append((b"Content-Range", b"bytes */%d" % size))  # §15.5.17
    if status == 503:
        headers.append((b"Retry-After", b"1"))
    if close:
        headers.append((b"Connection", b"close"))
    return Plan(status, tuple(headers), inline=body, note=note, close=close)


def plan_response(
    method: bytes, fields: dict[bytes, bytes], rep: Representation, now: float
) -> Plan:
    """The answer to a GET or HEAD of `rep` (see the module docstring)."""
    v = rep.validators
    validators: list[tuple[bytes, bytes]] = [(b"ETag", v.etag)]
    if v.last_modified is not None:
        validators.append((b"Last-Modified", format_http_date(v.last_modified)))
    if rep.generated:
        validators.append((b"Cache-Control", b"no-cache"))
    outcome = preconditions(fields, v, now)
    if outcome == "failed":
        return error_plan(412, "precondition failed")
    if outcome == "not-modified":
        # §15.4.5: a 304 carries the validators a 200 would have; no content fields, no body.
        return Plan(304, tuple(validators), note="not modified")
    common = [(b"Content-Type", rep.content_type), (b"Accept-Ranges", b"bytes"), *validators]
    whole = Plan(
        200,
        (*common, (b"Content-Length", b"%d" % rep.size)),
        length=rep.size if method == b"GET" else 0,
    )
    # §14.2: Range is defined for GET only; HEAD and every other method ignore it.
    range_value = fields.get(b"range")
    if method != b"GET" or range_value is None:
        return whole
    if_range = fields.get(b"if-range")
    if if_range is not None and not if_range_holds(if_range, v, now):
        return Plan(whole.status, whole.headers, length=whole.length, note="if-range: changed")
    ranges = resolve_untrusted(range_value, rep.size)
    if ranges is None:
        return whole
    if not ranges:
        shown = range_value.decode("latin-1")[:64]
        return error_plan(416, f"range {shown} not satisfiable", size=rep.size)
    if len(ranges) > 1:  # see ranges.py: several disjoint ranges get the whole body
        return Plan(whole.status, whole.headers, length=whole.length, note="multiple ranges")
    (r,) = ranges
    return Plan(
        206,
        (*common, (b"Content-Range", r.content_range(rep.size)),
         (b"Content-Length", b"%d" % r.length)),
        first=r.first,
        length=r.length,
        note=f"range {r.first}-{r.last}/{rep.size}",
    )  # fmt: skip

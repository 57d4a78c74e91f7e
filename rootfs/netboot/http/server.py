"""The HTTP server: sockets, deadlines and sendfile around h11 and the pure planner (`plan.py`).

One trio task per connection. h11 parses requests and frames responses (sans-IO); file bodies
go out with `os.sendfile` on the non-blocking socket, waiting with `trio.lowlevel.wait_writable`
whenever the socket buffer is full, so the bytes never pass through Python. Names resolve
exactly as for TFTP (`boot.bootdir.lookup`, keyed by the client's source address), so a
client gets the same `boot.ipxe` over either protocol.

What one client can hold is bounded (the [http] limits, read per connection so a reload
applies to new ones):

- a connection slot: past `max_connections` a new connection gets a canned 503 and is closed;
- `header_timeout` from a connection's start, or from the first byte of a later request, to the
  end of the request head (a slowloris client dribbling header bytes is cut off at the deadline,
  not kept alive by each byte); `idle_timeout` between requests on a kept-alive connection;
- `send_timeout` without any byte taken by a client that stopped reading;
- `max_header_bytes` of request head (431), 64 KiB of ignored request body (413).

Nothing a client sends can end the server: protocol errors get their 4xx and the connection is
closed, socket errors end that connection only, and a bug in one exchange is logged and ends
that connection.

One log line per request: successful GETs and HEADs at DEBUG (a boot storm would flood the
journal otherwise), refusals at WARNING (403: probes) or INFO. Every request also goes into the
boot trace, so `rootfs trace HOST` shows HTTP steps beside DHCP and TFTP.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import resource
import socket
import threading
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import cast

import h11
import trio

from rootfs.config.http import HttpConfig
from rootfs.config.site import Host, Site
from rootfs.errors import UserError
from rootfs.netboot.boot.bootdir import OpenFile, lookup
from rootfs.netboot.boot.paths import ACCESS, PathRefused
from rootfs.netboot.http.conditional import Validators, format_http_date
from rootfs.netboot.http.plan import (
    TEXT,
    Plan,
    Representation,
    collect_fields,
    content_type,
    error_plan,
    method_plan,
    plan_response,
)
from rootfs.netboot.http.target import BadTarget, target_name_untrusted
from rootfs.netboot.trace import TraceLog
from rootfs.store.state import State

log = logging.getLogger("rootfs.http")

SERVER = b"rootfs"
RECV_SIZE = 65536
MAX_BODY = 64 << 10  # request body bytes a GET may carry (read and ignored); more is 413
LINGER = 1.0  # seconds to read what a client still sends after our last answer, before closing
LINGER_BYTES = 256 << 10  # ... and at most this much; see _linger
REJECTERS = 64  # connections past the cap being answered 503 at once; more are closed unanswered
ACCEPT_BURST = 64  # connections accepted per wake-up before other tasks get a turn
# Bytes per sendfile call before the other connections get a turn (nginx's sendfile_max_chunk):
# one call filling a whole socket buffer left the rest waiting, 25% slower with 32 clients.
SENDFILE_CHUNK = 2 << 20
FD_RESERVE = 1024  # descriptors kept for TFTP, DHCP, the trace and the site files
BUSY_LOG_INTERVAL = 10.0  # seconds between "too many connections" lines
_ACCEPT_RETRY = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_ACCEPT_IGNORE = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR}


class _Timeout(Exception):
    """A deadline passed with no progress; `partial` says a request had begun arriving."""

    def __init__(self, what: str, partial: bool = False) -> None:
        super().__init__(what)
        self.partial = partial


class _Length:
    """Stands for a file body in h11's framing, which only takes its len() (h11 "sendfile")."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length


@dataclass
class _Exchange:
    """One request, as the log line and the trace report it."""

    peer: tuple[str, int]
    host: Host | None
    started: float
    method: str = "-"
    target: str = "-"
    status: int = 0
    sent: int = 0  # body bytes the client took
    size: int | None = None  # the representation's size
    origin: str = ""  # "file", "generated ipxe", ...
    note: str = ""
    outcome: str = "done"  # or "client-abort", "timeout", "file-shrank"


class HttpService:
    """Serves the boot directory and the generated per-host configs over HTTP until cancelled.

    `reload(site)` swaps the inventory and the limits for new connections and requests;
    responses in flight keep the file or config they started with. Address and port are read
    once.
    """

    def __init__(
        self,
        site: Site,
        state: State | None,
        trace: TraceLog,
        *,
        port: int | None = None,
        address: str | None = None,
    ) -> None:
        self._site = site
        self._hosts = _hosts_by_ip(site)
        self._state = state
        self._trace = trace
        self._port = site.config.http.port if port is None else port
        self._address = str(site.config.http.address) if address is None else address
        # Shared by the event loops (see `run`): changed under the lock, so the connection cap
        # holds across them. Log rate limits use the monotonic clock: each trio run has its own.
        self._lock = threading.Lock()
        self._open = 0
        self._rejecting = 0
        self._busy_logged = -BUSY_LOG_INTERVAL
        self._busy_count = 0
        self._fd_logged = -BUSY_LOG_INTERVAL
        self._counters: list[dict[str, int]] = []  # one per loop's thread, summed by `stats`
        self._local = threading.local()
        self.port: int | None = None  # the bound port, once run() has started

    def reload(self, site: Site) -> None:
        """Use `site` for every connection and request from now on."""
        self._site = site
        self._hosts = _hosts_by_ip(site)

    @property
    def connections(self) -> int:
        """Connections open now (for tests and status lines)."""
        return self._open

    @property
    def stats(self) -> dict[str, int]:
        """What every loop counted: connections, requests, bytes, rejected, timeouts."""
        total = dict.fromkeys(("connections", "requests", "bytes", "rejected", "timeouts"), 0)
        with self._lock:
            for counters in self._counters:
                for key, n in counters.items():
                    total[key] += n
        return total

    def _count(self, key: str, n: int) -> None:
        """Add to this thread's counter: no lock per sendfile chunk."""
        counters: dict[str, int] | None = getattr(self._local, "counters", None)
        if counters is None:
            counters = self._local.counters = {}
            with self._lock:
                self._counters.append(counters)
        counters[key] = counters.get(key, 0) + n

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled; `task_status.started` gets the bound port."""
        config = self._site.config.http
        _raise_fd_limit(2 * config.max_connections + FD_RESERVE)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with listener:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.setblocking(False)
            try:
                listener.bind((self._address, self._port))
            except OSError as e:
                raise UserError(
                    f"http: cannot listen on {self._address}:{self._port}: {e.strerror}; set"
                    " [http] port or address in site.toml, or enabled = false (or --no-http)"
                ) from None
            listener.listen(min(65535, max(128, config.max_connections)))
            self.port = listener.getsockname()[1]
            log.info("http listening on %s:%d", self._address, self.port)
            loops = config.loops or min(4, os.cpu_count() or 1)
            extra = [_Loop(self, listener) for _ in range(loops - 1)]
            try:
                for loop in extra:
                    loop.start()
                async with trio.open_nursery() as nursery:
                    task_status.started(self.port)
                    await self._accept(listener, nursery)
            finally:
                with trio.CancelScope(shield=True):  # the loops use the listener: stop them first
                    for loop in extra:
                        await trio.to_thread.run_sync(loop.stop)
                trio.lowlevel.notify_closing(listener)

    async def serve_extra(self, listener: socket.socket, loop: _Loop) -> None:
        """The body of an extra loop (its own thread and trio run): accept and serve until
        `loop.stop`."""
        with trio.CancelScope() as scope:
            loop.running(trio.lowlevel.current_trio_token(), scope)
            async with trio.open_nursery() as nursery:
                await self._accept(listener, nursery)

    # -- connections ------------------------------------------------------------------------

    async def _accept(self, listener: socket.socket, nursery: trio.Nursery) -> None:
        while True:
            for _ in range(ACCEPT_BURST):
                try:
                    sock, peer = listener.accept()
                except BlockingIOError:
                    break
                except OSError as e:
                    if e.errno in _ACCEPT_IGNORE:
                        continue
                    if e.errno in _ACCEPT_RETRY:  # out of descriptors: the backlog waits
                        if time.monotonic() - self._fd_logged >= BUSY_LOG_INTERVAL:
                            log.error("http cannot accept: %s; retrying", e.strerror)
                            self._fd_logged = time.monotonic()
                        await trio.sleep(0.1)
                        break
                    raise
                sock.setblocking(False)
                with self._lock:
                    full = self._open >= self._site.config.http.max_connections
                    if not full:
                        self._open += 1
                if full:
                    self._busy(sock, peer, nursery)
                    continue
                self._count("connections", 1)
                nursery.start_soon(self._connection, sock, peer)
            else:
                await trio.lowlevel.checkpoint()
                continue
            await trio.lowlevel.wait_readable(listener)

    def _busy(self, sock: socket.socket, peer: tuple[str, int], nursery: trio.Nursery) -> None:
        """Past the connection cap: a 503 and close (RFC 9110 §15.6.4), unless too many are
        being answered already, then just close."""
        self._count("rejected", 1)
        self._busy_count += 1
        now = time.monotonic()
        if now - self._busy_logged >= BUSY_LOG_INTERVAL:
            log.warning(
                "http refused %d connection(s) (latest %s:%d): %d open, [http] max_connections"
                " = %d",
                self._busy_count, *peer, self._open, self._site.config.http.max_connections,
            )  # fmt: skip
            self._busy_logged, self._busy_count = now, 0
        with self._lock:
            answer = self._rejecting < REJECTERS
            if answer:
                self._rejecting += 1
        if not answer:
            sock.close()
            return
        nursery.start_soon(self._reject, sock, peer)

    async def _reject(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        try:
            with contextlib.suppress(OSError):
                sock.send(_closing_answer(error_plan(503, "too many connections", close=True)))
            host = self._hosts.get(IPv4Address(peer[0]))
            if host is not None:
                rec = _Exchange(peer, host, trio.current_time(), status=503)
                rec.note = "too many connections"
                self._record(rec)
            await _linger(sock)
        finally:
            with self._lock:
                self._rejecting -= 1
            _close(sock)

    async def _connection(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        config = self._site.config.http
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=config.max_header_bytes)
        ending = "abort"
        try:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            first = True
            while True:
                ending = await self._exchange(conn, sock, peer, first)
                if ending != "keep":
                    break
                conn.start_next_cycle()
                first = False
            if ending == "close":
                await _linger(sock)
        except OSError as e:  # the peer reset the connection between requests, and the like
            log.debug("http %s:%d: %s", *peer, e)
        except Exception:  # a bug in one exchange must not stop the server
            log.exception("http internal error on a connection from %s:%d", *peer)
        finally:
            with self._lock:
                self._open -= 1
            _close(sock)

    # -- one request ------------------------------------------------------------------------

    async def _exchange(
        self, conn: h11.Connection, sock: socket.socket, peer: tuple[str, int], first: bool
    ) -> str:
        """Read one request and answer it. Returns "keep" (read the next request), "close"
        (answered; close gracefully) or "abort" (close now)."""
        config = self._site.config.http
        host = self._hosts.get(IPv4Address(peer[0]))
        rec = _Exchange(peer, host, trio.current_time())
        try:
            request, deadline = await self._read_head(conn, sock, config, first)
            if request is None:
                return "abort"
            rec.method = request.method.decode("ascii", "replace")
            rec.target = request.target.decode("ascii", "replace")[:256]
            if _head_size(request) > config.max_header_bytes:
                return await self._refuse(sock, rec, error_plan(431, "request head too large",
                                                                close=True))  # fmt: skip
            early = self._check_body(request)
            if early is not None:
                return await self._refuse(sock, rec, early)
            await self._drain_body(conn, sock, deadline)
        except _Timeout as e:
            if not e.partial:  # nothing of a request arrived (an idle connection): just close
                return "abort"
            self._count("timeouts", 1)
            return await self._refuse(sock, rec, error_plan(408, str(e), close=True))
        except h11.RemoteProtocolError as e:
            if conn.trailing_data[1]:  # the client left mid-request: nobody to answer
                log.debug("http %s:%d closed mid-request: %s", *peer, e)
                return "abort"
            status = e.error_status_hint if e.error_status_hint >= 400 else 400
            return await self._refuse(sock, rec, error_plan(status, str(e), close=True))
        except _BodyTooLarge:
            return await self._refuse(sock, rec, error_plan(413, "request body too large",
                                                            close=True))  # fmt: skip

        self._count("requests", 1)
        plan, body = self._decide(request, rec)
        try:
            await self._respond(conn, sock, request.method, plan, body, rec, config)
        except _Timeout as e:
            self._count("timeouts", 1)
            conn.send_failed()
            rec.outcome, rec.note = "timeout", str(e)
            return "abort"
        except OSError as e:
            conn.send_failed()
            rec.outcome = "client-abort"
            rec.note = e.strerror or str(e)
            return "abort"
        except _Shrank:
            conn.send_failed()
            rec.outcome, rec.note = "file-shrank", "the file shrank while being sent"
            return "abort"
        finally:
            if isinstance(body, OpenFile):
                body.close()
            self._report(rec)
        if plan.close:
            return "close"
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            return "keep"
        return "close"

    async def _read_head(
        self, conn: h11.Connection, sock: socket.socket, config: HttpConfig, first: bool
    ) -> tuple[h11.Request | None, float]:
        """The next request's head, and the deadline that bounds the rest of its reading.

        A new connection has `header_timeout` from its start for its first request; a kept-alive
        one waits up to `idle_timeout` for a byte, then has `header_timeout` from that byte.
        """
        now = trio.current_time()
        head_deadline: float | None = now + config.header_timeout if first else None
        if head_deadline is None and conn.trailing_data[0]:  # part of a pipelined request
            head_deadline = now + config.header_timeout
        idle_deadline = now + config.idle_timeout
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Request):
                return event, head_deadline or trio.current_time() + config.header_timeout
            if event is h11.NEED_DATA:
                partial = bool(conn.trailing_data[0])
                deadline = head_deadline if head_deadline is not None else idle_deadline
                what = "request head not complete" if partial else "idle"
                data = await _receive(sock, deadline, _Timeout(what, partial))
                if data and head_deadline is None:
                    head_deadline = trio.current_time() + config.header_timeout
                conn.receive_data(data)
                continue
            return None, 0.0  # ConnectionClosed, or PAUSED (never after start_next_cycle)

    def _check_body(self, request: h11.Request) -> Plan | None:
        """413 before reading a body declared too large (RFC 9110 §15.5.14)."""
        for name, value in request.headers:
            if name == b"content-length" and (len(value) > 18 or int(value) > MAX_BODY):
                return error_plan(413, f"request body of {value.decode()[:20]} bytes", close=True)
        return None

    async def _drain_body(self, conn: h11.Connection, sock: socket.socket, deadline: float) -> None:
        """Read and drop a request's body (GET and HEAD bodies mean nothing, §9.3.1), so the
        connection can carry the next request."""
        received = 0
        if conn.they_are_waiting_for_100_continue:
            await _send_all(sock, conn.send(h11.InformationalResponse(status_code=100, headers=[])),
                            self._site.config.http.send_timeout)  # fmt: skip
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Data):
                received += len(event.data)
                if received > MAX_BODY:
                    raise _BodyTooLarge
                continue
            if event is h11.NEED_DATA:
                conn.receive_data(await _receive(sock, deadline, _Timeout("request body", True)))
                continue
            return  # EndOfMessage (or ConnectionClosed, seen on the next read)

    async def _refuse(self, sock: socket.socket, rec: _Exchange, plan: Plan) -> str:
        """A closing error answer written directly: h11 may be in its ERROR state by now."""
        rec.status, rec.note = plan.status, plan.note
        try:
            await _send_all(sock, _closing_answer(plan), self._site.config.http.send_timeout)
        except (OSError, _Timeout):
            rec.outcome = "client-abort"
            return "abort"
        finally:
            self._report(rec)
        return "close"

    def _decide(self, request: h11.Request, rec: _Exchange) -> tuple[Plan, OpenFile | bytes]:
        """The answer's plan and its body source (an open file, or bytes) for a parsed request."""
        refused = method_plan(request.method)
        if refused is not None:
            return refused, b""
        try:
            name = target_name_untrusted(request.target)
            found = lookup(self._site, name, IPv4Address(rec.peer[0]))
        except BadTarget as e:
            return error_plan(e.status, e.reason), b""
        except PathRefused as e:
            return error_plan(403 if e.kind == ACCESS else 404, e.reason), b""
        except OSError as e:  # the disk failed us: this request fails, not the server
            return error_plan(500, f"cannot read: {e.strerror or e}"), b""
        now = time.time()
        fields = collect_fields(request.headers)
        if isinstance(found, OpenFile):
            etag = b'"%x-%x-%x"' % (found.inode, found.size, found.mtime_ns)
            rep = Representation(
                found.size, Validators(etag, found.mtime_ns / 1e9), content_type(name.relative)
            )
            rec.origin = "file"
            body: OpenFile | bytes = found
        else:
            digest = hash_bytes(found.content)
            rep = Representation(len(found.content), Validators(digest), TEXT, generated=True)
            rec.origin = f"generated {found.kind}"
            body = found.content
            if found.host is not None:
                rec.host = found.host
        rec.size = rep.size
        try:
            return plan_response(request.method, fields, rep, now), body
        except Exception:
            if isinstance(body, OpenFile):
                body.close()
            raise

    async def _respond(
        self,
        conn: h11.Connection,
        sock: socket.socket,
        method: bytes,
        plan: Plan,
        body: OpenFile | bytes,
        rec: _Exchange,
        config: HttpConfig,
    ) -> None:
        rec.status, rec.note = plan.status, plan.note or rec.note
        headers = [*plan.headers, (b"Date", format_http_date(time.time())), (b"Server", SERVER)]
        head = conn.send(h11.Response(status_code=plan.status, headers=headers,
                                      reason=plan.reason))  # fmt: skip
        timeout = config.send_timeout
        if method == b"HEAD" or (not plan.length and not plan.inline):
            await _send_all(sock, head + conn.send(h11.EndOfMessage()), timeout)
            return
        if plan.inline or isinstance(body, bytes):
            data = plan.inline
            if not data and isinstance(body, bytes):
                data = body[plan.first : plan.first + plan.length]
            out = head + conn.send(h11.Data(data=data)) + conn.send(h11.EndOfMessage())
            await _send_all(sock, out, timeout)
            rec.sent = len(data)
            self._count("bytes", len(data))
            return
        # The file: h11 counts its length for the framing; the bytes go by sendfile(2).
        conn.send_with_data_passthrough(h11.Data(data=cast(bytes, _Length(plan.length))))
        assert isinstance(body, OpenFile)
        # Corked (nginx's tcp_nopush): the head and the file go out in full segments, the head
        # sharing the first; uncorking at the end flushes the last partial one.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        try:
            await _send_all(sock, head, timeout)
            await self._sendfile(sock, body.fd, plan.first, plan.length, timeout, rec)
        finally:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
        conn.send(h11.EndOfMessage())

    async def _sendfile(
        self, sock: socket.socket, fd: int, offset: int, count: int, timeout: float, rec: _Exchange
    ) -> None:
        out = sock.fileno()
        end = offset + count
        while offset < end:
            want = min(end - offset, SENDFILE_CHUNK)
            try:
                n = os.sendfile(out, fd, offset, want)
            except BlockingIOError:
                await _writable(sock, timeout)
                continue
            if n == 0:  # end of file before Content-Length: the framing cannot be kept
                raise _Shrank
            offset += n
            rec.sent += n
            self._count("bytes", n)
            if n < want:  # the socket buffer is full: wait instead of a sendfile that fails
                await _writable(sock, timeout)
            else:
                await trio.lowlevel.checkpoint()

    # -- reporting --------------------------------------------------------------------------

    def _report(self, rec: _Exchange) -> None:
        """The request's log line and trace event."""
        duration = trio.current_time() - rec.started
        ok = rec.status < 400 and rec.outcome == "done"
        if ok and rec.method in ("GET", "HEAD"):
            level = logging.DEBUG
        elif rec.status == 403:
            level = logging.WARNING
        else:
            level = logging.INFO
        if log.isEnabledFor(level):
            size = "" if rec.size is None else f"/{rec.size}"
            outcome = "" if rec.outcome == "done" else f" {rec.outcome}"
            note = f" ({rec.note})" if rec.note else ""
            log.log(
                level,
                "http %s:%d %s %s %d %d%s bytes in %.3fs host=%s%s%s",
                *rec.peer, rec.method, rec.target, rec.status, rec.sent, size, duration,
                rec.host.name if rec.host else "-", outcome, note,
            )  # fmt: skip
        self._record(rec, duration)

    def _record(self, rec: _Exchange, duration: float = 0.0) -> None:
        """Append to the boot trace; a full or broken state disk must not stop serving."""
        detail: dict[str, object] = {
            "method": rec.method,
            "path": rec.target,
            "status": rec.status,
            "bytes": rec.sent,
        }
        if rec.size is not None:
            detail["size"] = rec.size
        if rec.origin and rec.origin != "file":
            detail["origin"] = rec.origin
        if rec.outcome != "done":
            detail["outcome"] = rec.outcome
        detail["duration"] = round(duration, 6)
        if rec.note:
            detail["reason"] = rec.note
        try:
            self._trace.record(
                "http",
                "request",
                mac=rec.host.mac if rec.host else None,
                ip=rec.peer[0],
                host=rec.host.name if rec.host else None,
                **detail,
            )
        except OSError as e:
            log.error("http cannot write the boot trace: %s", e)


class _BodyTooLarge(Exception):
    pass


class _Shrank(Exception):
    pass


def hash_bytes(content: bytes) -> bytes:
    """A strong entity-tag for generated bytes (RFC 9110 §8.8.3): the same bytes, the same tag."""
    return b'"g-%s"' % hashlib.blake2b(content, digest_size=12).hexdigest().encode()


def _head_size(request: h11.Request) -> int:
    """About the bytes of a request head: h11 checks only heads that arrive in pieces."""
    fields = sum(len(n) + len(v) + 4 for n, v in request.headers.raw_items())
    return len(request.method) + len(request.target) + 12 + fields


def _closing_answer(plan: Plan) -> bytes:
    """An error answer with `Connection: close`, written without h11."""
    lines = [b"HTTP/1.1 %d %s" % (plan.status, plan.reason)]
    lines += [b"%s: %s" % (name, value) for name, value in plan.headers]
    lines += [b"Date: " + format_http_date(time.time()), b"Server: " + SERVER]
    return b"\r\n".join(lines) + b"\r\n\r\n" + plan.inline


async def _receive(sock: socket.socket, deadline: float, timeout: _Timeout) -> bytes:
    """Bytes from the client, b"" at its end of stream (or reset); `timeout` at `deadline`."""
    while True:
        try:
            return sock.recv(RECV_SIZE)
        except BlockingIOError:
            pass
        except (ConnectionResetError, ConnectionAbortedError):
            return b""
        with trio.move_on_at(deadline) as scope:
            await trio.lowlevel.wait_readable(sock)
        if scope.cancelled_caught:
            raise timeout


async def _writable(sock: socket.socket, timeout: float) -> None:
    """Wait until the socket takes bytes; `send_timeout` without that is a stalled client."""
    with trio.move_on_after(timeout) as scope:
        await trio.lowlevel.wait_writable(sock)
    if scope.cancelled_caught:
        raise _Timeout(f"client took nothing for {timeout:g}s")


async def _send_all(sock: socket.socket, data: bytes, timeout: float) -> None:
    """Write all of `data`, waiting (up to `timeout` each time) while the socket is full."""
    view = memoryview(data)
    while view:
        try:
            n = sock.send(view)
        except BlockingIOError:
            await _writable(sock, timeout)
            continue
        view = view[n:]
    await trio.lowlevel.checkpoint()


async def _linger(sock: socket.socket) -> None:
    """Close gracefully: end our side, then read what the client still sends for up to
    LINGER seconds. Closing with unread bytes makes the kernel send RST, which can destroy an
    error answer the client has not read yet."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
    deadline = trio.current_time() + LINGER
    taken = 0
    with contextlib.suppress(OSError, _Timeout):
        while taken < LINGER_BYTES:
            data = await _receive(sock, deadline, _Timeout("linger"))
            if not data:
                break
            taken += len(data)


def _close(sock: socket.socket) -> None:
    trio.lowlevel.notify_closing(sock)
    sock.close()


def _hosts_by_ip(site: Site) -> dict[IPv4Address, Host]:
    return {h.ip: h for h in site.hosts}


def _raise_fd_limit(wanted: int) -> None:
    """Let the process hold a descriptor per connection and per file being sent (nginx's
    worker_rlimit_nofile): the soft limit up to `wanted`, within the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        log.warning(
            "http: %d file descriptors allowed (hard limit), fewer than [http] max_connections"
            " needs (%d); connections past that wait in the listen queue", target, wanted,
        )  # fmt: skip


class _Loop:
    """One more event loop serving HTTP, in its own thread, on the service's listening socket.

    A single loop spends most of a boot storm in the kernel (sendfile and TCP), on one core,
    while DHCP waits on the same thread; nginx runs a worker per core. Each extra loop accepts
    from the same non-blocking socket (a connection goes to whichever loop's accept takes it;
    the others get EAGAIN) and serves its connections itself; sendfile releases the GIL, so the
    copying runs on every core.
    """

    def __init__(self, service: HttpService, listener: socket.socket) -> None:
        self._service = service
        self._listener = listener
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._thread = threading.Thread(target=self._main, name="rootfs-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def running(self, token: trio.lowlevel.TrioToken, scope: trio.CancelScope) -> None:
        self._token, self._scope = token, scope
        self._ready.set()

    def stop(self) -> None:
        """Cancel the loop (its connections close) and wait for its thread. Blocking."""
        if self._thread.ident is None:  # never started (start() failed for it or an earlier one)
            return
        self._ready.wait()
        if self._token is not None and self._scope is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._scope.cancel)
        self._thread.join()

    def _main(self) -> None:
        try:
            trio.run(self._service.serve_extra, self._listener, self)
        except BaseException:  # a dead loop must say why, not vanish
            log.exception("http: an extra event loop stopped")
        finally:
            self._ready.set()

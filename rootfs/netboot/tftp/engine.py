"""The transfer engine: one thread and one epoll set drive every TFTP transfer in flight.

Why not a trio task per transfer: a lockstep transfer is one round trip per block, and each
trio wake-up costs about three times what tftp-hpa spends on a whole block. Here a block costs
one `epoll_wait` result, one `recvfrom`, the state machine and one `sendto`, and a single
`epoll_wait` serves every transfer that is ready, so many concurrent transfers share wake-ups
instead of multiplying them. The state machine (`transfer.py`) is the same sans-IO one; this
module only moves its packets and keeps its clock.

The server (trio) hands over a bound socket and a machine with `submit`; from then on only the
engine thread touches them. When a transfer ends the engine closes its socket and passes the
`Job` to the `finished` callback through `notify` (the server's trio token), so everything else
— logging, the boot trace, the table of active transfers — stays on the trio thread.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rootfs.netboot.tftp.packet import OPCODE_ACK, MalformedPacket, Packet, decode_untrusted
from rootfs.netboot.tftp.transfer import ReadTransfer, stray_reply

log = logging.getLogger("rootfs.tftp")

TRANSFER_RECV_SIZE = 1024  # a client sends a transfer only ACKs and ERRORs; the rest is junk
SEND_BUFFER = 4 << 20  # room for a whole window of large blocks (capped by net.core.wmem_max)
_READ = select.EPOLLIN
_READ_WRITE = select.EPOLLIN | select.EPOLLOUT

Peer = tuple[str, int]


@dataclass(eq=False)
class Job:
    """One transfer in the engine: its socket (its TID), its machine and its client."""

    sock: socket.socket
    machine: ReadTransfer
    peer: Peer
    finished: Callable[[Job], None]  # called on the trio thread once the transfer has ended
    started: float = field(default_factory=time.monotonic)
    duration: float = 0.0
    outcome: str = "interrupted"  # the machine's outcome, or why the engine ended it
    deadline: float = 0.0
    pending: collections.deque[bytes] = field(default_factory=collections.deque)


class TransferEngine:
    """Runs transfers on a private thread until `stop()`; `submit` and `cancel` are thread-safe."""

    def __init__(self, notify: Callable[[Callable[[], None]], None]) -> None:
        self._notify = notify  # runs a callback on the server's thread (TrioToken.run_sync_soon)
        self._epoll = select.epoll()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._wake, _READ)
        self._commands: collections.deque[tuple[str, Job | None]] = collections.deque()
        self._jobs: dict[int, Job] = {}  # by socket fd
        self._next_scan = float("inf")  # the earliest deadline any job may have
        self._thread = threading.Thread(target=self._run, name="tftp-transfers", daemon=True)
        self._leftover: list[Job] = []

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        """False once the thread has ended: after `stop()`, or because of a bug (logged)."""
        return self._thread.is_alive()

    def submit(self, job: Job) -> None:
        """Start serving `job` (its socket bound and non-blocking, its machine not started)."""
        self._command("submit", job)

    def cancel(self, job: Job) -> None:
        """End `job` as superseded (its client asked again from the same port)."""
        self._command("cancel", job)

    def stop(self) -> list[Job]:
        """End the thread; return the jobs still in flight (sockets closed, outcome "interrupted")
        so the caller can report them, since `notify` may no longer run."""
        self._command("stop", None)
        self._thread.join()
        os.close(self._wake)
        self._epoll.close()
        return self._leftover

    def _command(self, what: str, job: Job | None) -> None:
        self._commands.append((what, job))
        os.eventfd_write(self._wake, 1)

    # -- the engine thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException:
            log.critical("tftp transfer engine stopped by an internal error", exc_info=True)
            raise

    def _loop(self) -> None:
        poll, jobs = self._epoll.poll, self._jobs
        while True:
            wait = max(0.0, self._next_scan - time.monotonic()) if jobs else -1.0
            for fd, events in poll(min(wait, 3600.0) if wait >= 0 else -1):
                job = jobs.get(fd)
                if job is None:
                    if fd == self._wake and not self._take_commands():
                        self._leftover = list(jobs.values())
                        for left in self._leftover:
                            self._close(left)
                        return
                    continue
                try:
                    if events == _READ:  # the per-block path
                        self._receive(job)
                    else:
                        if events & select.EPOLLOUT:
                            self._flush(job)
                        if events & (select.EPOLLIN | select.EPOLLERR):
                            self._receive(job)
                except OSError as e:
                    self._end(job, f"failed: {e.strerror or e}")
                except Exception:
                    # A bug must cost one transfer, never the server and every other boot.
                    log.exception("tftp internal error serving %s:%d", *job.peer)
                    self._end(job, "internal-error")
            if jobs and time.monotonic() >= self._next_scan:
                self._scan_deadlines()

    def _take_commands(self) -> bool:
        """Apply queued commands; False when told to stop."""
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._wake)
        while self._commands:
            what, job = self._commands.popleft()
            if what == "stop":
                return False
            assert job is not None
            if what == "submit":
                self._begin(job)
            elif self._jobs.get(job.sock.fileno()) is job:
                self._end(job, "superseded")
        return True

    def _begin(self, job: Job) -> None:
        fd = job.sock.fileno()
        self._jobs[fd] = job
        try:
            job.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            self._epoll.register(fd, _READ)
            self._send(job, job.machine.start())
        except OSError as e:
            self._end(job, f"failed: {e.strerror or e}")
            return
        if job.machine.finished:  # refused at once (an unsupported mode)
            self._end(job, job.machine.outcome.value if job.machine.outcome else "failed")

    def _receive(self, job: Job) -> None:
        """Handle one datagram; epoll is level-triggered, so a second one wakes us again."""
        try:
            data, source = job.sock.recvfrom(TRANSFER_RECV_SIZE)
        except (BlockingIOError, ConnectionRefusedError):
            return  # gone already, or ICMP port unreachable from an earlier send: timeouts decide
        machine = job.machine
        if source == job.peer and len(data) == 4 and data[0] == 0 and data[1] == OPCODE_ACK:
            out = machine.ack((data[2] << 8) | data[3])  # the per-block path: no packet object
        else:
            out = self._unusual(job, data, source)
        if out:
            self._send(job, out)
        if machine.finished:
            self._end(job, machine.outcome.value if machine.outcome else "failed")

    def _unusual(self, job: Job, data: bytes, source: Peer) -> list[Packet]:
        """Anything but a well-formed ACK from the client: decode it, answer strangers."""
        try:
            packet = decode_untrusted(data)
        except MalformedPacket:
            return []  # junk never advances or resets a transfer
        if source != job.peer:
            if (reply := stray_reply(packet)) is not None:
                _send_best_effort(job.sock, reply.encode(), (source[0], source[1]))
            return []
        return job.machine.receive(packet)

    def _send(self, job: Job, packets: list[Packet]) -> None:
        """Send in order, queueing behind a full socket buffer; restart the progress timer."""
        if job.pending:
            job.pending.extend(packet.encode() for packet in packets)
        else:
            sendto, peer = job.sock.sendto, job.peer
            for i, packet in enumerate(packets):
                try:
                    sendto(packet.encode(), peer)
                except OSError:  # rare: a full buffer or a stale ICMP error
                    self._send_carefully(job, packets[i:])
                    break
        job.deadline = deadline = time.monotonic() + job.machine.wait
        if deadline < self._next_scan:
            self._next_scan = deadline

    def _send_carefully(self, job: Job, packets: list[Packet]) -> None:
        sock, peer, pending = job.sock, job.peer, job.pending
        for packet in packets:
            data = packet.encode()
            if pending:
                pending.append(data)
                continue
            try:
                sock.sendto(data, peer)
            except BlockingIOError:
                pending.append(data)
                self._epoll.modify(sock.fileno(), _READ_WRITE)
            except ConnectionRefusedError:  # a stale ICMP error reported on this send: once more
                _send_best_effort(sock, data, peer)

    def _flush(self, job: Job) -> None:
        pending = job.pending
        while pending:
            try:
                job.sock.sendto(pending[0], job.peer)
            except BlockingIOError:
                return
            except ConnectionRefusedError:
                pass  # stale ICMP error; the datagram is lost like any other, timeouts recover
            pending.popleft()
        self._epoll.modify(job.sock.fileno(), _READ)

    def _scan_deadlines(self) -> None:
        """Time out every job past its deadline; find the next deadline."""
        now = time.monotonic()
        earliest = float("inf")
        for job in list(self._jobs.values()):
            if now >= job.deadline:
                try:
                    job.pending.clear()  # a timeout resends the window from the start anyway
                    self._send(job, job.machine.timeout())
                except OSError as e:
                    self._end(job, f"failed: {e.strerror or e}")
                    continue
                if job.machine.finished:
                    self._end(job, job.machine.outcome.value if job.machine.outcome else "failed")
                    continue
            earliest = min(earliest, job.deadline)
        self._next_scan = earliest

    def _end(self, job: Job, outcome: str) -> None:
        if self._jobs.get(job.sock.fileno()) is not job:
            return
        job.outcome = outcome
        self._close(job)
        try:
            self._notify(lambda: job.finished(job))
        except RuntimeError:  # the server's loop has ended (trio.RunFinishedError)
            log.debug("tftp transfer to %s:%d ended after the server stopped", *job.peer)

    def _close(self, job: Job) -> None:
        fd = job.sock.fileno()
        del self._jobs[fd]
        with contextlib.suppress(OSError, ValueError):  # never registered: its setup failed
            self._epoll.unregister(fd)
        job.sock.close()
        job.duration = time.monotonic() - job.started


def _send_best_effort(sock: socket.socket, data: bytes, dest: Peer) -> None:
    try:
        sock.sendto(data, dest)
    except OSError as e:
        if e.errno not in (errno.EAGAIN, errno.ECONNREFUSED):
            log.debug("tftp cannot send to %s:%d: %s", *dest, e)

"""Forked workers (rootfs/engine/forked.py): every result arrives, errors come back, nothing
outlives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from rootfs.engine import forked
from rootfs.errors import UserError


def test_every_item_is_done_once_across_the_workers() -> None:
    got: dict[int, tuple[int, int]] = {}

    def work(indices: Sequence[int], send: forked.Outbox[tuple[int, int]]) -> None:
        for i in indices:
            send(i, (i * i, os.getpid()))

    forked.run(10, work, jobs=3, on_result=lambda i, r: got.__setitem__(i, r))
    assert sorted(got) == list(range(10))
    assert all(square == i * i for i, (square, _) in got.items())
    pids = {pid for _, pid in got.values()}
    assert len(pids) == 3 and os.getpid() not in pids  # really three other processes


def test_a_user_error_comes_back_with_its_message_after_the_others_finish() -> None:
    got: list[int] = []

    def work(indices: Sequence[int], send: forked.Outbox[int]) -> None:
        for i in indices:
            if i == 1:
                raise UserError("host pc2: disk full; free space and run again", 3)
            send(i, i)

    with pytest.raises(UserError) as caught:
        forked.run(4, work, jobs=2, on_result=lambda i, r: got.append(r))
    assert str(caught.value) == "host pc2: disk full; free space and run again"
    assert caught.value.exit_code == 3
    assert sorted(got) == [0, 2]  # the other worker finished its share; item 3 came after 1


def test_a_bug_comes_back_with_the_workers_traceback() -> None:
    def work(indices: Sequence[int], send: forked.Outbox[int]) -> None:
        raise ValueError("unexpected")

    with pytest.raises(RuntimeError, match="ValueError: unexpected"):
        forked.run(2, work, jobs=2, on_result=lambda i, r: None)


def test_a_worker_killed_by_a_signal_is_reported() -> None:
    def work(indices: Sequence[int], send: forked.Outbox[int]) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(forked.WorkerFailed, match="killed by SIGKILL"):
        forked.run(2, work, jobs=2, on_result=lambda i, r: None)


def test_large_results_pass_through_the_pipe_whole() -> None:
    got: dict[int, bytes] = {}

    def work(indices: Sequence[int], send: forked.Outbox[bytes]) -> None:
        for i in indices:
            send(i, bytes([i]) * (1 << 20))  # far beyond a pipe's 64 KiB

    forked.run(4, work, jobs=2, on_result=lambda i, r: got.__setitem__(i, r))
    assert {i: (len(r), r[0]) for i, r in got.items()} == {i: (1 << 20, i) for i in range(4)}


def test_progress_lines_arrive_before_their_items_result() -> None:
    events: list[tuple[str, int, object]] = []

    def work(indices: Sequence[int], outbox: forked.Outbox[int]) -> None:
        for i in indices:
            outbox.progress(i, f"item {i}: half")
            outbox(i, i)

    forked.run(
        4,
        work,
        jobs=2,
        on_result=lambda i, r: events.append(("result", i, r)),
        on_progress=lambda i, text: events.append(("progress", i, text)),
    )
    for i in range(4):
        assert events.index(("progress", i, f"item {i}: half")) < events.index(("result", i, i))


SCRIPT = """
import os, sys, time
from rootfs.engine import forked
def work(indices, send):
    with open(sys.argv[1], "a") as f:
        f.write(f"{os.getpid()}\\n")
    time.sleep(60)
forked.run(2, work, jobs=2, on_result=lambda i, r: None)
"""


def test_workers_die_with_their_parent(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    parent = subprocess.Popen([sys.executable, "-c", SCRIPT, str(pids_file)])
    try:
        deadline = time.monotonic() + 30
        while len(pids_file.read_text().split() if pids_file.exists() else []) < 2:
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.02)
        workers = [int(p) for p in pids_file.read_text().split()]
        parent.send_signal(signal.SIGKILL)  # what `kill -9` of a rootfs command does
        parent.wait()
        deadline = time.monotonic() + 5
        while any(Path(f"/proc/{pid}").exists() for pid in workers):
            assert time.monotonic() < deadline, f"workers {workers} outlived their parent"
            time.sleep(0.02)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()

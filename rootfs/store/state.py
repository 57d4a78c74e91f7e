"""The state directory: base generations, what was applied to each host, the lock.

Layout under ``<state>``::

    lock                         held (flock) by the command writing state
    store/                       see store.py
    bases/<name>/<gen>.manifest  generation manifests, immutable once written
    bases/<name>/<gen>.json      when, from where, digest, entry and byte counts
    bases/<name>/current         the current generation's number
    hosts/<name>/applied.manifest  the manifest last applied to the host's tree
    hosts/<name>/record.json     base, generation, overlays, mode, time of that apply
    hosts/<name>/journal         an apply in flight (a redo log): its operations, the tree
                                 they lead to and what to record; removed when it completes
    hosts/<name>/holds.json      paths whose host-local version the host keeps

Every file is replaced atomically (temp + fsync + rename), so readers see old or
new, never half.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import marshal
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rootfs.durable import atomic_write_bytes
from rootfs.errors import UserError
from rootfs.store.objects import Store
from rootfs.tree.conflicts import Hold
from rootfs.tree.manifest import (
    Entry,
    Manifest,
    diff,
    format_entry,
    manifest_digest,
    parse,
    parse_entry,
    remember_bytes,
    serialize,
)
from rootfs.tree.plan import Action, Op

BASE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
JOURNAL_HEADER = "rootfs-journal 3"


@dataclass(frozen=True)
class Generation:
    """One imported generation of a base."""

    base: str
    number: int
    digest: str
    created: float
    source: str
    entries: int
    bytes: int
    changes: dict[str, int] = field(default_factory=dict)  # against the previous generation


@dataclass(frozen=True)
class HostRecord:
    """What was last applied to a host's tree, and how."""

    host: str
    ip: str
    base: str
    generation: int
    overlays: list[str]
    mode: str
    manifest_digest: str
    built_at: float
    inputs: str = ""  # digest of everything the tree was composed from (see Builder.inputs_digest)


def load_manifest(path: Path, *, written_digest: str | None = None) -> Manifest:
    """Read a manifest file, through a marshal cache beside it.

    Parsing text costs about 5 us an entry; the cache loads several times faster.
    It is keyed by the digest of the manifest's bytes, so it can never be stale,
    and a missing or damaged cache only costs a parse. When the bytes have
    *written_digest*, the digest of what `serialize` wrote, they are kept for splicing
    the manifests composed from this one (see `manifest.remember_bytes`).
    """
    data = path.read_bytes()
    digest = manifest_digest(data)
    cache = path.with_name(path.name + ".cache")
    manifest = None
    try:
        cached_digest, rows = marshal.loads(cache.read_bytes())
        if cached_digest == digest:
            make = Entry._make
            manifest = Manifest({row[0]: make(row) for row in rows})
    except (OSError, ValueError, EOFError, TypeError):
        pass
    if manifest is None:
        manifest = parse(data, source=str(path))
        write_manifest_cache(path, digest, manifest)
    if digest == written_digest:
        remember_bytes(manifest, data)
    return manifest


def write_manifest_cache(path: Path, digest: str, manifest: Manifest) -> None:
    """Store the parsed form of the manifest file at *path* (whose bytes hash to *digest*)."""
    with contextlib.suppress(OSError):  # a read-only state directory works, only slower
        atomic_write_bytes(
            path.with_name(path.name + ".cache"),
            marshal.dumps((digest, [tuple(e) for e in manifest])),
            durable=False,
        )


class State:
    """Access to everything under the state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = Store(root / "store")
        # Generations this process wrote or read: `base update` imports one and then composes
        # every host from it, which need not parse it back from disk. Never modified. Keyed
        # by digest too: a number freed by GC may be given to a new generation later.
        self._generations: dict[tuple[str, int, str], Manifest] = {}

    # ---------------------------------------------------------------- lock

    @contextmanager
    def lock(self, command: str) -> Iterator[None]:
        """Hold the state lock; fail at once, naming the holder, if another command has it."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
                raise UserError(
                    f"another rootfs command holds the lock on {self.root}: {holder};"
                    " wait for it to finish"
                ) from None
            since = time.strftime("%Y-%m-%d %H:%M:%S")
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"rootfs {command} since {since}, pid {os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)

    # ---------------------------------------------------------------- bases

    def base_dir(self, base: str) -> Path:
        if not BASE_NAME.match(base):
            raise UserError(
                f"'{base}' is not a valid base name; use letters, digits, '.', '_' and '-'"
            )
        return self.root / "bases" / base

    def bases(self) -> list[str]:
        directory = self.root / "bases"
        if not directory.is_dir():
            return []
        return sorted(p.name for p in directory.iterdir() if (p / "current").exists())

    def current_generation(self, base: str) -> Generation | None:
        current = self.base_dir(base) / "current"
        try:
            number = int(current.read_text().strip())
        except FileNotFoundError:
            return None
        return self.generation(base, number)

    def require_current(self, base: str) -> Generation:
        gen = self.current_generation(base)
        if gen is None:
            known = ", ".join(self.bases()) or "none yet"
            raise UserError(
                f"unknown base '{base}' (imported: {known});"
                f" import it with 'rootfs base import {base} SOURCE'"
            )
        return gen

    def generation(self, base: str, number: int) -> Generation:
        path = self.base_dir(base) / f"{number}.json"
        try:
            return Generation(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise UserError(f"base '{base}' has no generation {number}") from None

    def generations(self, base: str) -> list[Generation]:
        directory = self.base_dir(base)
        numbers = sorted(int(p.stem) for p in directory.glob("*.json") if p.stem.isdigit())
        return [self.generation(base, n) for n in numbers]

    def load_generation(self, gen: Generation) -> Manifest:
        key = (gen.base, gen.number, gen.digest)
        manifest = self._generations.get(key)
        if manifest is None:
            path = self.base_dir(gen.base) / f"{gen.number}.manifest"
            manifest = load_manifest(path, written_digest=gen.digest)
            self._generations[key] = manifest
        return manifest

    def add_generation(
        self, base: str, manifest: Manifest, *, source: str, previous: Manifest | None = None
    ) -> Generation:
        """Record *manifest* as the next generation of *base* and make it current.

        The manifest is written before ``current`` moves, so a crash leaves the
        previous generation current.
        """
        directory = self.base_dir(base)
        directory.mkdir(parents=True, exist_ok=True)
        latest = max((g.number for g in self.generations(base)), default=0)
        data = serialize(manifest)
        gen = Generation(
            base=base,
            number=latest + 1,
            digest=manifest_digest(data),
            created=time.time(),
            source=source,
            entries=len(manifest),
            bytes=manifest.total_file_bytes(),
            changes=change_summary(previous, manifest) if previous is not None else {},
        )
        atomic_write_bytes(directory / f"{gen.number}.manifest", data)
        atomic_write_bytes(directory / f"{gen.number}.json", json.dumps(asdict(gen)).encode())
        atomic_write_bytes(directory / "current", f"{gen.number}\n".encode())
        self._generations[(base, gen.number, gen.digest)] = manifest
        remember_bytes(manifest, data)
        return gen

    def set_current(self, base: str, number: int) -> Generation:
        """Make generation *number* of *base* the current one (rollback)."""
        gen = self.generation(base, number)
        atomic_write_bytes(self.base_dir(base) / "current", f"{number}\n".encode())
        return gen

    def delete_generation(self, gen: Generation) -> None:
        """Forget a generation (never the current one; GC decides which)."""
        directory = self.base_dir(gen.base)
        self._generations.pop((gen.base, gen.number, gen.digest), None)
        for suffix in (".manifest.cache", ".manifest", ".json"):
            (directory / f"{gen.number}{suffix}").unlink(missing_ok=True)

    # ---------------------------------------------------------------- hosts

    def host_dir(self, host: str) -> Path:
        return self.root / "hosts" / host

    def applied_manifest(self, host: str) -> Manifest | None:
        """What the last apply left in the host's tree.

        Parsed without a marshal cache: a host's manifest shares almost every line with the
        other hosts' and the base's, which `parse` then finds in its memo. Writing a cache
        per host cost more than that parse.
        """
        path = self.host_dir(host) / "applied.manifest"
        try:
            return parse(path.read_bytes(), source=str(path))
        except FileNotFoundError:
            return None

    def host_record(self, host: str) -> HostRecord | None:
        try:
            raw = json.loads((self.host_dir(host) / "record.json").read_text())
        except FileNotFoundError:
            return None
        return HostRecord(**raw)

    def record_applied(
        self, record: HostRecord, manifest_bytes: bytes, *, durable: bool = True
    ) -> None:
        """Store what was applied; the manifest first, so the record never points ahead."""
        directory = self.host_dir(record.host)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(directory / "applied.manifest", manifest_bytes, durable=durable)
        (directory / "applied.manifest.cache").unlink(missing_ok=True)  # from older versions
        atomic_write_bytes(
            directory / "record.json", json.dumps(asdict(record)).encode(), durable=durable
        )

    def update_record(self, record: HostRecord) -> None:
        """Rewrite a host's record alone (its tree and manifest unchanged)."""
        atomic_write_bytes(
            self.host_dir(record.host) / "record.json", json.dumps(asdict(record)).encode()
        )

    def forget_host(self, host: str) -> None:
        directory = self.host_dir(host)
        for name in (
            "journal",
            "holds.json",
            "record.json",
            "applied.manifest",
            "applied.manifest.cache",
        ):
            (directory / name).unlink(missing_ok=True)
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()

    # -------------------------------------------------------------- journal

    def write_journal(self, host: str, journal: Journal) -> None:
        """Record an apply before it starts: the exact operations and everything they lead to.

        The journal is a redo log: after a crash the same operations are run
        again (each is idempotent) and the outcome recorded, so the result is the
        one an uninterrupted run would have had, host-local decisions included.
        One file, written durably: the single fsync an apply needs before it
        touches the tree.
        """
        directory = self.host_dir(host)
        directory.mkdir(parents=True, exist_ok=True)
        lines = [
            JOURNAL_HEADER,
            f"mode\t{journal.mode}",
            f"attic\t{journal.attic or ''}",
            f"record\t{json.dumps(asdict(journal.record))}",
            f"holds\t{_holds_json(journal.holds).decode()}",
        ]
        lines.extend(
            f"op\t{op.action.value}\t{int(op.path in journal.preserve)}\t{format_entry(op.entry)}"
            for op in journal.ops
        )
        lines.append("target")
        head = "\n".join(lines).encode("utf-8", "surrogateescape") + b"\n"
        atomic_write_bytes(directory / "journal", head + journal.target)

    def read_journal(self, host: str) -> Journal | None:
        """The interrupted apply of *host*, or None when the last apply completed."""
        path = self.host_dir(host) / "journal"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            head, sep, target = data.partition(b"\ntarget\n")
            if not sep:
                raise ValueError("no target manifest")
            lines = head.decode("utf-8", "surrogateescape").split("\n")
            if lines[0] != JOURNAL_HEADER:
                raise ValueError("bad header")
            fields = dict(line.split("\t", 1) for line in lines[1:5])
            ops, preserve = [], set()
            for line in lines[5:]:
                _, action, flag, entry_line = line.split("\t", 3)
                entry = parse_entry(entry_line)
                ops.append(Op(Action(action), entry.path, entry))
                if flag == "1":
                    preserve.add(entry.path)
            journal = Journal(
                mode=fields["mode"],
                ops=tuple(ops),
                target=target,
                holds=_holds_from_json(fields["holds"].encode()),
                record=HostRecord(**json.loads(fields["record"])),
                preserve=frozenset(preserve),
                attic=fields["attic"] or None,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(
                f"{path}: unreadable journal ({exc}); remove it and run 'rootfs build --repair'"
            ) from None
        return journal

    def clear_journal(self, host: str) -> None:
        (self.host_dir(host) / "journal").unlink(missing_ok=True)

    # ---------------------------------------------------------------- holds

    def holds(self, host: str) -> dict[str, Hold]:
        """Paths whose host version the host keeps (open conflicts and host wins)."""
        try:
            return _holds_from_json((self.host_dir(host) / "holds.json").read_bytes())
        except FileNotFoundError:
            return {}

    def save_holds(self, host: str, holds: Mapping[str, Hold], *, durable: bool = True) -> None:
        directory = self.host_dir(host)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(directory / "holds.json", _holds_json(holds), durable=durable)


def _holds_json(holds: Mapping[str, Hold]) -> bytes:
    raw = [
        {"path": h.path, "base": format_entry(h.base) if h.base else None, "open": h.open}
        for h in sorted(holds.values(), key=lambda h: h.path)
    ]
    return json.dumps(raw, separators=(",", ":")).encode()  # one line: it goes in the journal


def _holds_from_json(data: bytes) -> dict[str, Hold]:
    return {
        item["path"]: Hold(
            item["path"], parse_entry(item["base"]) if item["base"] else None, item["open"]
        )
        for item in json.loads(data)
    }


@dataclass(frozen=True)
class Journal:
    """An apply in flight: its operations and what to record when they are done."""

    mode: str
    ops: tuple[Op, ...]
    target: bytes  # the manifest the tree holds afterwards
    holds: Mapping[str, Hold]
    record: HostRecord
    preserve: frozenset[str] = frozenset()
    attic: str | None = None


def change_summary(old: Manifest, new: Manifest) -> dict[str, int]:
    """Counts of added/removed/modified/metadata paths and the bytes of new content."""
    summary = {"added": 0, "removed": 0, "modified": 0, "metadata": 0, "bytes": 0}
    for change in diff(old, new):
        summary[change.kind] += 1
        if change.new is not None and change.kind in ("added", "modified"):
            summary["bytes"] += change.new.size if change.new.kind == "f" else 0
    return summary

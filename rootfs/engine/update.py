"""Base generations: import the next one, compare two, roll back to an earlier one.

Importing never changes what hosts see: objects are stored and the generation
recorded before ``current`` moves, and a failure (unreadable file, bad tarball,
disk full) leaves the previous generation current and the store's temporary
files removed. Applying a generation to hosts is the build's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rootfs.engine.progress import Progress
from rootfs.errors import UserError
from rootfs.store.state import Generation, State
from rootfs.tree.manifest import Change, diff


@dataclass(frozen=True)
class Imported:
    """What an import did."""

    generation: Generation  # the current generation afterwards
    new: bool  # False when the source equals the current generation
    files: int
    bytes: int
    new_objects: int
    new_bytes: int
    notes: tuple[str, ...]


def import_generation(
    state: State,
    base: str,
    source: Path,
    *,
    require_existing: bool = False,
    checksum: bool = False,
    progress: Progress | None = None,
) -> Imported:
    """Scan *source* into the store and record it as the next generation of *base*.

    Files whose path, size and mtime match the current generation are not read
    again unless *checksum* asks for it.
    """
    from rootfs.engine.scan import scan_source  # deferred: tar and compression modules load slowly

    state.base_dir(base)  # validates the name before any work
    previous = state.current_generation(base)
    if require_existing and previous is None:
        raise UserError(
            f"base '{base}' does not exist yet; create it with 'rootfs base import {base} SOURCE'"
        )
    state.store.clean_tmp()  # what an import killed earlier left behind
    old = state.load_generation(previous) if previous is not None else None
    with state.store.batch() as batch:
        result = scan_source(source, batch, progress=progress, reference=None if checksum else old)
    if previous is not None and old == result.manifest:
        gen, new = previous, False
    else:
        gen = state.add_generation(
            base, result.manifest, source=str(source.resolve()), previous=old
        )
        new = True
    return Imported(
        gen, new, result.files, result.bytes, result.new_objects, result.new_bytes, result.notes
    )


def generation_diff(state: State, base: str, old: int, new: int) -> list[Change]:
    """Path-level changes from generation *old* to *new* of *base*."""
    return diff(
        state.load_generation(state.generation(base, old)),
        state.load_generation(state.generation(base, new)),
    )


def rollback_target(state: State, base: str, number: int | None) -> Generation:
    """The generation a rollback goes to: *number*, or the one before the current."""
    current = state.require_current(base)
    if number is not None:
        if number == current.number:
            raise UserError(f"generation {number} of base '{base}' is already current")
        return state.generation(base, number)
    earlier = [g for g in state.generations(base) if g.number < current.number]
    if not earlier:
        raise UserError(
            f"base '{base}' has no generation before {current.number} to roll back to"
            " (see 'rootfs base log')"
        )
    return earlier[-1]

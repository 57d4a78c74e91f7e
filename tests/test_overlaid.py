"""Host trees held as their base plus changes (`Overlaid`): composing, comparing and writing
them gives exactly what the plain whole-tree way gives, checked against a reference
implementation of the compose rules on generated trees and layers."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rootfs.errors import UserError
from rootfs.tree.compose import RESERVED, AttrOverride, Layer, compose
from rootfs.tree.manifest import (
    DIR,
    FILE,
    SYMLINK,
    Entry,
    Manifest,
    Overlaid,
    diff,
    parent_of,
    serialize,
)

# ------------------------------------------------------------------ the reference: whole trees


def _subtree(paths: list[str], top: str) -> list[str]:
    prefix = top.rstrip("/") + "/"
    return [p for p in paths if p == top or p.startswith(prefix)]


def reference_compose(base: Manifest, layers: Sequence[Layer]) -> Manifest:
    """The compose rules on a plain dict of the whole tree, as rootfs first did it."""
    tree = dict(base.entries)
    if "/" not in tree:
        raise UserError("the base has no root directory entry; re-import it")
    for layer in layers:
        for pattern in layer.deletions:
            if any(c in pattern for c in "*?["):
                match = re.compile(fnmatch.translate(pattern)).match
                matched = [p for p in tree if match(p)]
            else:
                matched = [pattern] if pattern in tree else []
            for top in matched:
                if top == "/":
                    raise UserError(
                        f"overlay '{layer.name}': overlay.toml: delete: cannot delete '/'"
                    )
                for path in _subtree(list(tree), top):
                    tree.pop(path, None)
        for entry in sorted(layer.entries, key=lambda e: e.path):
            path = entry.path
            if path == RESERVED or path.startswith(RESERVED + "/"):
                raise UserError(
                    f"overlay '{layer.name}': {path} is reserved for rootfs's own use; rename it"
                )
            existing = tree.get(path)
            if existing is not None and existing.kind == SYMLINK and entry.kind == DIR:
                raise UserError(
                    f"overlay '{layer.name}': {path} is a symlink to {existing.target!r} in the"
                    " tree below it; put the overlay's files under the link's target instead"
                )
            if existing is not None and existing.kind == DIR:
                if entry.kind == DIR:
                    continue
                for child in _subtree(list(tree), path):
                    del tree[child]
            parent = tree.get(parent_of(path))
            if path != "/" and (parent is None or parent.kind != DIR):
                raise UserError(
                    f"overlay '{layer.name}': {path}: its parent directory is missing or not a"
                    " directory in the tree below"
                )
            tree[path] = entry
        for path, attrs in layer.attrs.items():
            found = tree.get(path)
            if found is None:
                raise UserError(
                    f"overlay '{layer.name}': overlay.toml: attrs.\"{path}\": no such path in"
                    " the composed tree; fix the path or remove the table"
                )
            tree[path] = found._replace(
                mode=found.mode if attrs.mode is None else attrs.mode,
                uid=found.uid if attrs.uid is None else attrs.uid,
                gid=found.gid if attrs.gid is None else attrs.gid,
            )
    tree.pop(RESERVED, None)
    groups: dict[tuple[object, ...], list[str]] = {}
    for path, entry in tree.items():
        if entry.link:
            key = (entry.link, entry.data, entry.mode, entry.uid, entry.gid, entry.mtime_ns)
            groups.setdefault((*key, entry.xattrs), []).append(path)
    for members in groups.values():
        leader = min(members) if len(members) > 1 else ""
        for path in members:
            if tree[path].link != leader:
                tree[path] = tree[path]._replace(link=leader)
    return Manifest({path: tree[path] for path in sorted(tree)})


# ------------------------------------------------------------------ generated trees and layers

NAMES = ["a", "b", "a-b", "a.b", "c", ".rootfs", "ssh_host_1", "ssh_host_2"]
PATHS = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map(lambda p: "/" + "/".join(p))


@st.composite
def entries(draw: st.DrawFn, path: str) -> Entry:
    kind = draw(st.sampled_from([FILE, FILE, DIR, DIR, SYMLINK]))
    mode = draw(st.sampled_from([0o644, 0o755]))
    if kind == FILE:
        data = draw(st.sampled_from(["1" * 32, "2" * 32]))
        return Entry(path, FILE, mode, 0, 0, draw(st.integers(1, 2)), 3, data)
    if kind == SYMLINK:
        return Entry(path, SYMLINK, 0o777, 0, 0, 1, 1, "a")
    return Entry(path, DIR, mode, 0, 0, draw(st.integers(1, 2)), 0)


@st.composite
def bases(draw: st.DrawFn) -> Manifest:
    tree: dict[str, Entry] = {"/": Entry("/", DIR, 0o755, 0, 0, 1, 0)}
    for _ in range(draw(st.integers(0, 14))):  # each entry under a directory already there
        parent = draw(st.sampled_from(sorted(p for p, e in tree.items() if e.kind == DIR)))
        path = (parent if parent != "/" else "") + "/" + draw(st.sampled_from(NAMES))
        if path not in tree:
            tree[path] = draw(entries(path))
    files = sorted(p for p, e in tree.items() if e.kind == FILE)
    # Hardlink groups: some consistent, some not (the compose rules must mend those).
    groups = (
        st.lists(st.sets(st.sampled_from(files), min_size=1), max_size=3) if files else st.just([])
    )
    for members in draw(groups):
        link = draw(st.sampled_from(sorted(members)))
        for path in members:
            tree[path] = tree[path]._replace(link=link)
    return Manifest.from_entries(tree.values())


@st.composite
def layers(draw: st.DrawFn) -> list[Layer]:
    result = []
    for n in range(draw(st.integers(0, 3))):
        paths = draw(st.sets(PATHS, max_size=4))
        layer_entries = [draw(entries(p)) for p in sorted(paths)]
        patterns = st.one_of(
            PATHS, PATHS.map(lambda p: p + "*"), st.sampled_from(["/*/ssh_host_*", "*b", "/"])
        )
        attrs = {p: AttrOverride(mode=0o600) for p in draw(st.sets(PATHS, max_size=2))}
        deletions = draw(st.lists(patterns, max_size=2))
        result.append(Layer(f"layer{n}", layer_entries, deletions, attrs))
    return result


@st.composite
def changed(draw: st.DrawFn, base: Manifest) -> Manifest:
    """A next generation: some entries changed, added or removed."""
    tree = dict(base.entries)
    for path in draw(st.sets(st.sampled_from(sorted(tree)), max_size=3)):
        if path != "/" and tree[path].kind != DIR:
            del tree[path]
    for path in draw(st.sets(PATHS, max_size=3)):
        parent, existing = tree.get(parent_of(path)), tree.get(path)
        if parent is not None and parent.kind == DIR and (existing is None or existing.kind != DIR):
            tree[path] = draw(entries(path))
    return Manifest.from_entries(tree.values())


def outcome(base: Manifest, chosen: Sequence[Layer], how: object) -> Manifest | str:
    try:
        return how(base, chosen)  # type: ignore[operator, no-any-return]
    except UserError as exc:
        return f"UserError: {exc}"


# ------------------------------------------------------------------ the properties


@settings(max_examples=400)
@given(st.data())
def test_compose_matches_the_whole_tree_rules(data: st.DataObject) -> None:
    base, chosen = data.draw(bases()), data.draw(layers())
    got, want = outcome(base, chosen, compose), outcome(base, chosen, reference_compose)
    if isinstance(want, str) or isinstance(got, str):
        assert got == want
        return
    assert isinstance(got.entries, Overlaid)
    assert list(got.entries.items()) == list(want.entries.items())  # the same, in order
    assert len(got) == len(want)
    assert serialize(got) == serialize(want)


@settings(max_examples=300)
@given(st.data())
def test_diff_of_two_composed_trees_matches_the_whole_tree_diff(data: st.DataObject) -> None:
    old_base = data.draw(bases())
    new_base = data.draw(changed(old_base))
    chosen = data.draw(layers())
    try:
        old, new = compose(old_base, chosen), compose(new_base, chosen)
    except UserError:
        return
    plain_old, plain_new = Manifest(dict(old.entries)), Manifest(dict(new.entries))
    assert diff(old, new) == diff(plain_old, plain_new)
    assert diff(new, old, ignore_dir_mtime=True) == diff(
        plain_new, plain_old, ignore_dir_mtime=True
    )


def test_a_host_tree_shares_its_base_and_holds_only_its_changes() -> None:
    root = Entry("/", DIR, 0o755, 0, 0, 1, 0)
    etc = root._replace(path="/etc")
    base = Manifest.from_entries(
        [
            root,
            etc,
            *(Entry(f"/etc/f{i:04d}", FILE, 0o644, 0, 0, 1, 1, "1" * 32) for i in range(5000)),
        ]
    )
    hostname = Entry("/etc/hostname", FILE, 0o644, 0, 0, 2, 4, "2" * 32)
    host = compose(base, [Layer("site", [hostname], ["/etc/f0001"])])
    assert isinstance(host.entries, Overlaid)
    assert host.entries.changes == {"/etc/hostname": hostname, "/etc/f0001": None}
    assert host.get("/etc/f0002") is base.get("/etc/f0002")
    assert len(host) == len(base)
    assert "/etc/f0001" not in host and "/etc/hostname" in host
    with pytest.raises(TypeError):
        Overlaid(host, {})  # one level only: a base is a plain manifest

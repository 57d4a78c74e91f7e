"""Overlays: file trees layered over a base, with Jinja2 templates rendered per host.

An overlay is a directory ``overlays/<name>/`` whose tree is laid over ``/``.
Files ending in ``.j2`` are templates: rendered with the host's fields and vars
(see ``Site.template_context``) and installed without the suffix. Files are
owned by root and keep their permission bits and mtime. An optional
``overlay.toml`` at the overlay's top declares::

    delete = ["/etc/machine-id", "/etc/ssh/ssh_host_*"]   # fnmatch globs
    [attrs."/etc/shadow"]
    mode = "0640"
    uid = 0
    gid = 42
"""

from __future__ import annotations

import os
import stat
import tomllib
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rootfs.errors import ConfigError, UserError
from rootfs.store.fsmeta import kind_of
from rootfs.store.objects import Batch
from rootfs.tree.compose import AttrOverride, Layer
from rootfs.tree.manifest import DIR, FILE, SYMLINK, Entry

TEMPLATE_SUFFIX = ".j2"
CONFIG_NAME = "overlay.toml"


@dataclass(frozen=True)
class OverlayItem:
    """One path of an overlay tree, before rendering."""

    entry: Entry  # for files: metadata only; data is filled in when rendered/ingested
    source: str  # the file in the overlay directory
    template: bool


@dataclass(frozen=True)
class Overlay:
    """An overlay as loaded from disk."""

    name: str
    root: Path
    items: tuple[OverlayItem, ...]
    deletions: tuple[str, ...]
    attrs: Mapping[str, AttrOverride]


def _config_error(path: Path, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{path}: {key}: {problem}")


def _parse_mode(path: Path, key: str, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    elif isinstance(value, str):
        try:
            mode = int(value, 8)
        except ValueError:
            raise _config_error(path, key, f'{value!r} is not an octal mode like "0644"') from None
    else:
        raise _config_error(path, key, 'must be an octal string like "0644"')
    if not 0 <= mode <= 0o7777:
        raise _config_error(path, key, f"{value!r} is out of range (0000-7777)")
    return mode


def _parse_id(path: Path, key: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**32:
        raise _config_error(path, key, "must be a numeric id (0 to 4294967295)")
    return value


def _load_config(path: Path) -> tuple[tuple[str, ...], dict[str, AttrOverride]]:
    if not path.exists():
        return (), {}
    try:
        doc: dict[str, Any] = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    unknown = set(doc) - {"delete", "attrs"}
    if unknown:
        raise _config_error(path, sorted(unknown)[0], "unknown key; allowed: delete, attrs")
    deletions = doc.get("delete", [])
    if not isinstance(deletions, list) or not all(isinstance(d, str) for d in deletions):
        raise _config_error(path, "delete", "must be a list of absolute paths or globs")
    for pattern in deletions:
        if not pattern.startswith("/"):
            raise _config_error(path, "delete", f"{pattern!r} is not an absolute path")
    attrs: dict[str, AttrOverride] = {}
    raw_attrs = doc.get("attrs", {})
    if not isinstance(raw_attrs, dict):
        raise _config_error(path, "attrs", "must be a table of paths")
    for target, table in raw_attrs.items():
        key = f'attrs."{target}"'
        if not target.startswith("/") or not isinstance(table, dict):
            raise _config_error(path, key, "must be an absolute path with a table of mode/uid/gid")
        extra = set(table) - {"mode", "uid", "gid"}
        if extra:
            raise _config_error(
                path, f"{key}.{sorted(extra)[0]}", "unknown key; allowed: mode, uid, gid"
            )
        attrs[target.rstrip("/") or "/"] = AttrOverride(
            mode=_parse_mode(path, f"{key}.mode", table["mode"]) if "mode" in table else None,
            uid=_parse_id(path, f"{key}.uid", table["uid"]) if "uid" in table else None,
            gid=_parse_id(path, f"{key}.gid", table["gid"]) if "gid" in table else None,
        )
    return tuple(deletions), attrs


def load_overlay(overlays_dir: Path, name: str) -> Overlay:
    """Read overlay *name*'s tree and overlay.toml."""
    root = overlays_dir / name
    if not root.is_dir():
        raise UserError(f"unknown overlay '{name}': no directory {root}")
    deletions, attrs = _load_config(root / CONFIG_NAME)
    items: list[OverlayItem] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for fname in sorted(dirnames + filenames):
            source = os.path.join(dirpath, fname)
            if rel_dir == "." and fname == CONFIG_NAME:
                continue
            st = os.lstat(source)
            kind = kind_of(st)
            if kind not in (FILE, DIR, SYMLINK):
                raise UserError(
                    f"overlay '{name}': {source}: only files, directories and symlinks may be in"
                    " an overlay; declare devices in the base"
                )
            rel = f"/{fname}" if rel_dir == "." else f"/{rel_dir}/{fname}"
            template = kind == FILE and fname.endswith(TEMPLATE_SUFFIX)
            if template:
                rel = rel[: -len(TEMPLATE_SUFFIX)]
            data = os.readlink(source) if kind == SYMLINK else ""
            size = (
                len(os.fsencode(data)) if kind == SYMLINK else (st.st_size if kind == FILE else 0)
            )
            entry = Entry(rel, kind, stat.S_IMODE(st.st_mode), 0, 0, st.st_mtime_ns, size, data)
            items.append(OverlayItem(entry, source, template))
    return Overlay(name, root, tuple(items), deletions, attrs)


def _template_line(exc: BaseException, filename: str) -> int | None:
    import jinja2

    if isinstance(exc, jinja2.TemplateSyntaxError):
        return exc.lineno
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename == filename:
            return frame.lineno
    return None


class TemplateRenderer:
    """Renders overlay templates, compiling each once per run.

    Compiled templates are also kept on disk in *cache_dir* (Jinja's bytecode
    cache, keyed by the template's source), so later runs skip compilation.
    """

    def __init__(self, cache_dir: Path | None = None) -> None:
        self._cache_dir = cache_dir
        self._env: Any = None

    def _environment(self) -> Any:
        if self._env is None:
            import jinja2  # deferred: most commands (and up-to-date builds) render nothing

            cache = None
            if self._cache_dir is not None:
                self._cache_dir.mkdir(parents=True, exist_ok=True)
                cache = jinja2.FileSystemBytecodeCache(str(self._cache_dir))
            self._env = jinja2.Environment(
                loader=jinja2.FileSystemLoader("/"),
                bytecode_cache=cache,
                undefined=jinja2.StrictUndefined,
                keep_trailing_newline=True,
                autoescape=False,
                auto_reload=False,
            )
        return self._env

    def render(self, source: str, context: Mapping[str, object], *, overlay: str) -> bytes:
        """Render the template file *source*; errors name the file and line."""
        env = self._environment()
        import jinja2

        try:
            template = env.get_template(os.path.abspath(source).lstrip("/"))
            return str(template.render(dict(context))).encode()
        except (jinja2.TemplateError, TypeError, ValueError, UnicodeDecodeError) as exc:
            line = _template_line(exc, os.path.abspath(source))
            where = f"{source}:{line}" if line else source
            message = exc.message if isinstance(exc, jinja2.TemplateError) else str(exc)
            raise UserError(f"overlay '{overlay}': template {where}: {message}") from None


class LayerRenderer:
    """Renders overlays for hosts, storing each distinct content once.

    Plain overlay files are hashed once per run, whatever the number of hosts.
    """

    def __init__(self, batch: Batch, *, template_cache: Path | None = None) -> None:
        self._batch = batch
        self._plain: dict[str, str] = {}
        self._templates = TemplateRenderer(template_cache)

    def render(self, overlay: Overlay, context: Mapping[str, object]) -> Layer:
        entries = []
        for item in overlay.items:
            entry = item.entry
            if entry.kind == FILE:
                if item.template:
                    data = self._templates.render(item.source, context, overlay=overlay.name)
                    stored = self._batch.add_bytes(data, entry)
                    entry = entry._replace(data=stored.digest, size=stored.size)
                else:
                    digest = self._plain.get(item.source)
                    if digest is None:
                        digest = self._batch.add_file(item.source, entry).digest
                        self._plain[item.source] = digest
                    entry = entry._replace(data=digest)
            entries.append(entry)
        return Layer(overlay.name, tuple(entries), overlay.deletions, overlay.attrs)

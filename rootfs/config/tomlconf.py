"""Reading TOML configuration strictly: every key read once, unknown keys are errors.

Shared by site.toml, hosts.toml and the per-subsystem tables ([exports], [dhcp],
[tftp], ...). A :class:`ConfigTable` names the file and dotted key in every
error; value parsers raise :class:`Invalid` with "<problem>; <fix>".
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from ipaddress import AddressValueError, IPv4Address, IPv4Network, NetmaskValueError
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from rootfs.errors import ConfigError, RootfsError

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_T = TypeVar("_T")
# A size: an optional sign (so "-1G" is told it is not positive), a decimal number, then an
# optional binary unit written K, KB or KiB (any case), or B alone.
_SIZE = re.compile(
    r"\s*([+-]?)(\d+(?:\.\d*)?|\.\d+)\s*(?:([KMGT])(?:I?B)?|B)?\s*", re.IGNORECASE | re.ASCII
)
SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class Invalid(RootfsError):
    """A value is wrong; `ConfigTable` prefixes file and key. `subkey` points inside the value."""

    def __init__(self, message: str, subkey: str | None = None) -> None:
        super().__init__(message)
        self.subkey = subkey


@dataclass
class ConfigTable:
    """Reads one TOML table. Each key is named once, where it is read; on leaving the `with`
    block any key nobody read is an error, so unknown keys can never be silently ignored."""

    file: str
    key: str  # dotted key of this table; "" for the document
    raw: Mapping[str, object]
    _read: set[str] = field(default_factory=set)

    def __enter__(self) -> ConfigTable:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        unknown = [k for k in self.raw if k not in self._read]
        if exc_type is None and unknown:
            expected = ", ".join(sorted(self._read)) or "nothing"
            raise self.error(unknown[0], f"unknown key; remove it (expected: {expected})")

    def error(self, key: str | tuple[str, ...], message: str) -> ConfigError:
        """A ConfigError in the house format: `<file>: <dotted key>: <problem>; <fix>`."""
        keys = (key,) if isinstance(key, str) else key
        dotted = ".".join(p if _BARE_KEY.fullmatch(p) else f'"{p}"' for p in keys)
        return ConfigError(f"{self.file}: {self.key}{'.' if self.key else ''}{dotted}: {message}")

    def get(self, key: str, parse: Callable[[object], _T], default: _T) -> _T:
        """The parsed value at `key`, or `default` when it is absent."""
        self._read.add(key)
        return self._parse(key, parse) if key in self.raw else default

    def require(self, key: str, parse: Callable[[object], _T], example: str) -> _T:
        """The parsed value at `key`; an error showing `example` when it is absent."""
        self._read.add(key)
        if key not in self.raw:
            raise self.error(key, f"missing; add {key} = {example}")
        return self._parse(key, parse)

    def _parse(self, key: str, parse: Callable[[object], _T]) -> _T:
        try:
            return parse(self.raw[key])
        except Invalid as e:
            raise self.error((key, e.subkey) if e.subkey else key, str(e)) from None

    def table(self, key: str) -> ConfigTable:
        value: dict[str, object] = self.get(key, table_value, {})
        return ConfigTable(self.file, self._child(key), value)

    def tables(self, key: str) -> Iterator[ConfigTable]:
        """An array of tables (`[[key]]`), each item keyed `key[i]` in errors."""
        items: list[dict[str, object]] = self.get(key, array_of_tables, [])
        for i, item in enumerate(items):
            yield ConfigTable(self.file, f"{self._child(key)}[{i}]", item)

    def _child(self, key: str) -> str:
        quoted = key if _BARE_KEY.fullmatch(key) else f'"{key}"'
        return f"{self.key}.{quoted}" if self.key else quoted


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}; fix the file or its permissions") from None


def load_toml(text: str, file: str) -> dict[str, object]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.fullmatch(r"(.*) \(at (.*)\)", str(e))
        where, what = (m[2], m[1]) if m else ("syntax", str(e))
        raise ConfigError(f"{file}: {where}: {what}; fix the TOML syntax there") from None


def kind_name(value: object) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a float"}
    names |= {list: "an array", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def string(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected a string, got {kind_name(value)}; quote it")
    return value


def table_value(value: object) -> dict[str, object]:
    if not isinstance(value, dict):
        raise Invalid(f"expected a table, got {kind_name(value)}; write it as a [table]")
    return value


def array_of_tables(value: object) -> list[dict[str, object]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise Invalid(f"expected an array of tables, got {kind_name(value)}; write [[...]] tables")
    return value


def path_value(value: object) -> Path:
    return Path(string(value))


def ipv4(value: object) -> IPv4Address:
    text = string(value)
    try:
        return IPv4Address(text)
    except AddressValueError:
        raise Invalid(f"{text!r} is not an IPv4 address; write four dotted numbers") from None


def ipv4_list(value: object) -> tuple[IPv4Address, ...]:
    if not isinstance(value, list):
        raise Invalid(f'expected an array of addresses, got {kind_name(value)}; use ["10.0.0.1"]')
    return tuple(ipv4(v) for v in value)


def network_value(value: object) -> IPv4Network:
    text = string(value)
    try:
        return IPv4Network(text)
    except (AddressValueError, NetmaskValueError):
        raise Invalid(f"{text!r} is not an IPv4 network; write it like 10.0.0.0/24") from None
    except ValueError:  # host bits set
        fixed = IPv4Network(text, strict=False)
        raise Invalid(f"{text!r} has host bits set; did you mean {fixed}?") from None


def integer(low: int, high: int) -> Callable[[object], int]:
    """A parser for an integer in [low, high]."""

    def parse(value: object) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise Invalid(f"expected an integer, got {kind_name(value)}")
        if not low <= value <= high:
            raise Invalid(f"{value} is out of range; use {low} to {high}")
        return value

    return parse


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {kind_name(value)}")
    return value


def string_list(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise Invalid(f'expected an array of strings, got {kind_name(value)}; use ["a", "b"]')
    return tuple(string(v) for v in value)


def parse_size(text: str) -> int:
    """Bytes in a size such as ``4G``, ``500M``, ``1.5G``, ``64KiB`` or ``4096``.

    Units are binary (K = 1024) whichever way they are written (``G``, ``GB``, ``GiB``, any case);
    a fraction of a byte is dropped. The one size syntax of rootfs: hosts.toml's ``cache_quota``
    and ``rootfs cache mount --quota``. ValueError("<problem>; <fix>") for anything else.
    """
    m = _SIZE.fullmatch(text)
    if m is None:
        raise ValueError(
            f"{text!r} is not a size; write a number of bytes, or one with K, M, G or T"
            " (powers of 1024), like 4G, 500M or 1.5G"
        )
    sign, number, unit = m[1], m[2], (m[3] or "").upper()
    count = int(Fraction(number) * SIZE_UNITS[unit])
    if sign == "-" or count <= 0:
        raise ValueError(f"{text!r} is not a positive size; give at least one byte, like 4G")
    return count


def size(value: object) -> int:
    """A positive size in bytes: a string `parse_size` reads ("4G"), or an integer of bytes."""
    if isinstance(value, str):
        try:
            return parse_size(value)
        except ValueError as e:
            raise Invalid(str(e)) from None
    if not isinstance(value, int) or isinstance(value, bool):
        raise Invalid(f'expected a size like "4G", got {kind_name(value)}')
    if value <= 0:
        raise Invalid(f'{value} is not a positive size; give at least one byte, like "4G"')
    return value

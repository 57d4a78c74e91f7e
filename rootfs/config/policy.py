"""The [update] table of site.toml: what a base update may overwrite, and what it keeps.

``base_wins`` and ``host_wins`` are fnmatch globs on absolute paths. A path a host
changed since the last apply is kept by default, with the new base version
written beside it as ``<path>.rootfs-new`` (dpkg's conffile rule); a
``base_wins`` path is overwritten (the old inode stays in the attic), and a
``host_wins`` path is kept without a conflict.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Literal

from rootfs.config.tomlconf import ConfigTable, integer, string_list

Decision = Literal["base", "host", "ask"]


@dataclass(frozen=True)
class UpdateConfig:
    """Settings of the [update] table."""

    keep_generations: int = 3
    attic_max_age_days: int = 7
    base_wins: tuple[str, ...] = ()
    host_wins: tuple[str, ...] = ()

    def decide(self, path: str) -> Decision:
        """Who wins at *path* when both the base and the host changed it (host_wins first)."""
        if any(fnmatch.fnmatchcase(path, glob) for glob in self.host_wins):
            return "host"
        if any(fnmatch.fnmatchcase(path, glob) for glob in self.base_wins):
            return "base"
        return "ask"


def parse_update_config(table: ConfigTable) -> UpdateConfig:
    """Read [update]; unknown keys are an error."""
    return UpdateConfig(
        keep_generations=table.get("keep_generations", integer(1, 1000), 3),
        attic_max_age_days=table.get("attic_max_age_days", integer(0, 3650), 7),
        base_wins=table.get("base_wins", string_list, ()),
        host_wins=table.get("host_wins", string_list, ()),
    )

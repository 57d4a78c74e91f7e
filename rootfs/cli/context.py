"""What every command needs: the site and the state directory, loaded on first use."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from rootfs.config.site import Site, find_site_dir, load_site
from rootfs.store.state import State


@dataclass
class Context:
    """Lazily loaded site and state, so `rootfs init` and `--help` need neither."""

    cli_site: Path | None
    _site: Site | None = field(default=None, init=False)
    _state: State | None = field(default=None, init=False)

    @property
    def site_dir(self) -> Path:
        return find_site_dir(cli_site=self.cli_site, environ=os.environ, cwd=Path.cwd())

    @property
    def site(self) -> Site:
        if self._site is None:
            self._site = load_site(self.site_dir, environ=os.environ)
        return self._site

    def reload(self) -> Site:
        self._site = self._state = None
        return self.site

    @property
    def state(self) -> State:
        """One State per command: it remembers the generations it wrote or read."""
        if self._state is None:
            self._state = State(self.site.config.state_dir)
        return self._state

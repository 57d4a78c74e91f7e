"""Options shared by several commands."""

from __future__ import annotations

import click

jobs_option = click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    default=None,
    help="Hosts applied at once, each batch by its own process (default: one per CPU, at most 8).",
)

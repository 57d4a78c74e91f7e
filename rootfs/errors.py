"""The error hierarchy: everything rootfs raises on purpose derives from RootfsError."""

from __future__ import annotations


class RootfsError(Exception):
    """Base of every error rootfs raises deliberately."""


class UserError(RootfsError):
    """An error the CLI prints as one line, without a traceback, then exits.

    The message names the file, host or field at fault and says what to do.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class ConfigError(UserError):
    """A site.toml, hosts.toml or overlay.toml value is missing, malformed or inconsistent."""


class ManifestFormatError(RootfsError):
    """A manifest file does not follow the documented format."""

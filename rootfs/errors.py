"""The error hierarchy: everything rootfs raises on purpose derives from RootfsError.

Two families, because they meet different readers:

- **ProtocolError**: bytes a peer sent (a DHCP or TFTP packet, later an HTTP request) break its
  protocol. Raised only by the ``*_untrusted`` parsers and request checks; the server that called
  them logs it, answers if the protocol says to, and goes on serving. One never reaches the CLI
  (like h11's RemoteProtocolError).
- **UserError**: a command cannot do what it was asked, and the administrator can fix that: a bad
  argument, a site file at fault (**ConfigError**, which names the file and TOML key), a state that
  forbids it. The CLI prints the message on one line without a traceback and exits with
  ``exit_code``.

Besides these, **ManifestFormatError** says a manifest read from disk is damaged (the CLI says how
to rebuild it), and a few errors are internal signals caught by their own layer (a source that
stopped answering, a worker that died) that still derive from RootfsError, so the CLI's last
resort prints them on one line too.
"""

from __future__ import annotations


class RootfsError(Exception):
    """Base of every error rootfs raises deliberately."""


class ProtocolError(RootfsError):
    """Untrusted bytes from the network are not a message this server can act on."""


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

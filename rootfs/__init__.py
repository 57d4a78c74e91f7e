"""rootfs: diskless root filesystem manager.

Builds per-host NFS root trees under ``<export root>/<client-ip>`` from a shared,
content-addressed base plus layered, templated overlays.
"""

__version__ = "0.1.0"

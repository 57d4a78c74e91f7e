"""Allow ``python -m rootfs``."""

from rootfs.cli import main

main()

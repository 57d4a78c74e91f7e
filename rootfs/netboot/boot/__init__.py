"""Per-host boot configurations (pxelinux, iPXE, GRUB) generated from the inventory."""

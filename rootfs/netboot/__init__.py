"""The network boot front end: DHCP and TFTP (sans-IO cores under trio servers), the per-host boot
files they serve, the boot trace, and `rootfs serve`, which runs them from one inventory."""

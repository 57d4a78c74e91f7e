"""DHCP for network boot: a sans-IO codec and lease logic; server.py owns the sockets."""

"""TFTP for network boot: a sans-IO codec and transfer state machine; server.py owns sockets."""

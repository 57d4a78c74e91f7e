"""TFTP for network boot: a sans-IO codec and transfer state machine; server.py takes requests
on the listening socket and engine.py runs the transfers, each on a socket of its own (its TID)."""

"""Client root cache: a pyfuse3 filesystem over a local, hash-validated object cache."""

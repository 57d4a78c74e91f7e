"""NFS exports for every host tree: rendering them (pure) and applying them (kernel, ganesha)."""

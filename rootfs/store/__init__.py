"""What rootfs keeps on disk: the content-addressed object store, the state directory (base
generations, the manifest applied to each host, journals, locks), the layout of the export root,
and garbage collection of what nothing refers to any more."""

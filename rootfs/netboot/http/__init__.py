"""HTTP front end of `rootfs serve`: a pure request core and a trio server around h11."""

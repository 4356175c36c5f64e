//! Packaging: the systemd unit, tmpfiles.d, the default config and the .deb.

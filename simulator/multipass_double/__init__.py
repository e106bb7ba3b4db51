"""A test double of the Multipass 1.16.3 CLI whose instances are booted systemd-nspawn containers."""

MULTIPASS_VERSION = "1.16.3"

#!/bin/sh
# Host tools for `cargo xtask qemu-image` / `cargo xtask qemu-test` (Debian bookworm host, run as root).
#
# qemu-utils is pinned to bookworm on purpose: some machines come with a qemu-utils 10.x backport
# whose Breaks: qemu-system-common (<< 1:8.0) would make apt silently remove qemu-img when
# bookworm's qemu-system-x86 (7.2) is installed. --allow-downgrades keeps qemu-img.
set -eu
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" -ne 0 ]; then
    echo "install-host-deps.sh: must run as root (apt-get install)" >&2
    exit 1
fi
apt-get update
apt-get install -y --no-install-recommends --allow-downgrades \
    qemu-system-x86 qemu-utils/bookworm \
    mmdebstrap e2fsprogs openssl socat mender-artifact
# journalctl reads the guest's persistent journal from the powered-off disk (systemd on the host).
command -v journalctl >/dev/null || apt-get install -y --no-install-recommends systemd
for tool in journalctl qemu-system-x86_64 qemu-img mmdebstrap mkfs.ext4 debugfs socat openssl mender-artifact; do
    command -v "$tool" >/dev/null || { echo "install-host-deps.sh: $tool missing after install" >&2; exit 1; }
done
echo "install-host-deps.sh: host tools ready"

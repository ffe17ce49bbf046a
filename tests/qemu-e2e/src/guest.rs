//! What the guest looks like to the scenarios: the two servers' addresses, the device type and
//! artifact name baked into the image, and the paths of the files the migration touches.

pub(crate) const OLD_IP: &str = "10.0.2.100";
pub(crate) const NEW_IP: &str = "10.0.2.101";
pub(crate) const DEVICE_TYPE: &str = "qemux86-64";
pub(crate) const BASE_ARTIFACT: &str = "debian-bookworm-qemu-base";
pub(crate) const MAIN_CONF: &str = "/etc/mender/mender.conf";
/// `/var/lib/mender` is a symlink to `/data/mender`, which debugfs does not follow.
pub(crate) const FALLBACK_CONF: &str = "/data/mender/mender.conf";
pub(crate) const SERVER_CERT: &str = "/etc/mender/server.crt";
/// Where a signature-checking device keeps the public key (`ArtifactVerifyKey`).
pub(crate) const VERIFY_KEY: &str = "/etc/mender/artifact-verify-key.pem";
/// The 3.4 client's reason for refusing an unsigned artifact when `ArtifactVerifyKey` is set.
pub(crate) const UNSIGNED_REFUSAL: &str = "expecting signed artifact, but no signature file found";

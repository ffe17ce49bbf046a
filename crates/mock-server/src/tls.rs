//! HTTPS material: a self-signed CA (kept in the state dir when there is one, so a restarted
//! mock stays trusted) and a fresh server certificate with the SANs devices will use.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The generated CA (PEM) and the rustls configuration serving the server certificate.
pub(crate) struct TlsMaterial {
    pub(crate) ca_pem: String,
    pub(crate) server_config: Arc<rustls::ServerConfig>,
}

/// Loads the CA from `ca_dir` (`ca.pem` + `ca.key`) or creates and stores it there, then
/// issues a server certificate for `sans` (IP addresses or DNS names).
///
/// Each CA gets its own subject (server name + a fingerprint of its key) and server
/// certificates carry the authority key identifier: a device trusting several mock CAs in one
/// `ServerCertificate` bundle (old + new during a migration) must find the right issuer, and
/// OpenSSL, which the 3.4 client uses, picks issuers by subject.
pub(crate) fn prepare(
    ca_dir: &Path,
    server_name: &str,
    sans: &[String],
) -> anyhow::Result<TlsMaterial> {
    let cert_path = ca_dir.join("ca.pem");
    let key_path = ca_dir.join("ca.key");
    let (ca_key, ca_cert, ca_pem) = if cert_path.exists() && key_path.exists() {
        let key_pem = std::fs::read_to_string(&key_path)
            .with_context(|| format!("{}: cannot read CA key", key_path.display()))?;
        let ca_pem = std::fs::read_to_string(&cert_path)
            .with_context(|| format!("{}: cannot read CA certificate", cert_path.display()))?;
        let key = KeyPair::from_pem(&key_pem)
            .with_context(|| format!("{}: invalid CA key", key_path.display()))?;
        let params = CertificateParams::from_ca_cert_pem(&ca_pem)
            .with_context(|| format!("{}: invalid CA certificate", cert_path.display()))?;
        // Same key and subject as the stored CA, so what it signs verifies against ca.pem.
        let cert = params
            .self_signed(&key)
            .context("re-creating CA certificate for signing")?;
        (key, cert, ca_pem)
    } else {
        let key = KeyPair::generate().context("generating CA key")?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let fingerprint: String = ring_digest(&key.public_key_der())[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        params.distinguished_name.push(
            DnType::CommonName,
            format!("mock-mender-server {server_name} test CA {fingerprint}"),
        );
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).context("self-signing CA")?;
        let ca_pem = cert.pem();
        write_atomically(&key_path, key.serialize_pem().as_bytes())?;
        write_atomically(&cert_path, ca_pem.as_bytes())?;
        (key, cert, ca_pem)
    };

    let server_key = KeyPair::generate().context("generating server key")?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, sans.first().map_or("localhost", |s| s));
    let mut san_list = Vec::new();
    for san in sans {
        let entry = match san.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                san.clone()
                    .try_into()
                    .with_context(|| format!("{san:?} is neither an IP address nor a DNS name"))?,
            ),
        };
        if !san_list.contains(&entry) {
            san_list.push(entry);
        }
    }
    params.subject_alt_names = san_list;
    params.use_authority_key_identifier_extension = true;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let server_cert = params
        .signed_by(&server_key, &ca_cert, &ca_key)
        .context("signing server certificate")?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(
            vec![server_cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        )
        .context("TLS server configuration")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        ca_pem,
        server_config: Arc::new(config),
    })
}

fn ring_digest(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).to_vec()
}

pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("{}: cannot create temp file", dir.display()))?;
    tmp.write_all(bytes)
        .with_context(|| format!("{}: write failed", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("{}: rename failed", path.display()))?;
    Ok(())
}

//! Signing and verification keys for `manifest.sig` (RSA PKCS#1 v1.5 and ECDSA P-256, SHA-256).

use crate::ArtifactError;
use base64::Engine as _;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use pkcs8::der::Decode as _;
use rsa::pkcs1::{DecodeRsaPrivateKey as _, DecodeRsaPublicKey as _};
use rsa::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
use rsa::signature::SignatureEncoding as _;

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_ED25519: &str = "1.3.101.112";

/// Result of checking `manifest.sig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureStatus {
    /// The artifact has no `manifest.sig`.
    Unsigned,
    /// The artifact is signed but no key was given, so nothing was checked.
    Unverified,
    /// The signature verifies with the given key.
    Valid,
    /// The signature does not verify with the given key.
    Invalid,
}

/// A private key that signs the manifest.
#[derive(Clone)]
pub enum SigningKey {
    Rsa(Box<rsa::RsaPrivateKey>),
    EcdsaP256(p256::ecdsa::SigningKey),
}

/// A public key that verifies `manifest.sig`.
#[derive(Clone, Debug)]
pub enum VerifyKey {
    Rsa(Box<rsa::RsaPublicKey>),
    EcdsaP256(p256::ecdsa::VerifyingKey),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SigningKey::Rsa(_) => f.write_str("SigningKey::Rsa(..)"),
            SigningKey::EcdsaP256(_) => f.write_str("SigningKey::EcdsaP256(..)"),
        }
    }
}

/// Splits a PEM text into its label and DER body.
fn pem_block(pem: &[u8]) -> Result<(String, Vec<u8>), ArtifactError> {
    let text = std::str::from_utf8(pem)
        .map_err(|_| ArtifactError::InvalidKey("key file is not PEM text".into()))?;
    if text.contains("Proc-Type: 4,ENCRYPTED") || text.contains("BEGIN ENCRYPTED PRIVATE KEY") {
        return Err(ArtifactError::EncryptedKey);
    }
    let start = text
        .find("-----BEGIN ")
        .ok_or_else(|| ArtifactError::InvalidKey("no '-----BEGIN' PEM block found".into()))?;
    let (label, der) = pkcs8::der::pem::decode_vec(&text.as_bytes()[start..])
        .map_err(|e| ArtifactError::InvalidKey(format!("invalid PEM: {e}")))?;
    Ok((label.to_string(), der))
}

/// Only P-256 is accepted for ECDSA (the curve `mender-artifact` signs and verifies with).
fn require_p256(curve: Option<pkcs8::ObjectIdentifier>) -> Result<(), ArtifactError> {
    let curve = curve.map(|o| o.to_string()).unwrap_or_default();
    if curve == OID_P256 {
        Ok(())
    } else {
        Err(ArtifactError::UnsupportedKeyType(curve_name(&curve)))
    }
}

/// Parses a PKCS#8 or SPKI key by its `algorithm`: RSA with `rsa`, EC (P-256 only) with `ec`;
/// any other algorithm or curve is an unsupported key type.
fn by_algorithm<T>(
    algorithm: &spki::AlgorithmIdentifierRef<'_>,
    rsa: impl FnOnce() -> Result<T, ArtifactError>,
    ec: impl FnOnce() -> Result<T, ArtifactError>,
) -> Result<T, ArtifactError> {
    match algorithm.oid.to_string().as_str() {
        OID_RSA => rsa(),
        OID_EC => {
            require_p256(algorithm.parameters_oid().ok())?;
            ec()
        }
        other => Err(ArtifactError::UnsupportedKeyType(algorithm_name(other))),
    }
}

fn curve_name(oid: &str) -> String {
    match oid {
        "1.3.132.0.34" => "ECDSA P-384".into(),
        "1.3.132.0.35" => "ECDSA P-521".into(),
        "1.3.132.0.10" => "ECDSA secp256k1".into(),
        other => format!("ECDSA on curve {other}"),
    }
}

fn algorithm_name(oid: &str) -> String {
    match oid {
        OID_ED25519 => "Ed25519".into(),
        "1.3.101.113" => "Ed448".into(),
        "1.2.840.10040.4.1" => "DSA".into(),
        other => format!("algorithm {other}"),
    }
}

/// The error for key bytes that do not parse as `what` (e.g. "PKCS#8 RSA key").
fn bad<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> ArtifactError {
    move |e| ArtifactError::InvalidKey(format!("bad {what}: {e}"))
}

impl SigningKey {
    /// Parses a PEM private key: PKCS#1 (`RSA PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) or
    /// PKCS#8 (`PRIVATE KEY`). Encrypted keys and curves other than P-256 are rejected.
    pub fn from_pem(pem: &[u8]) -> Result<Self, ArtifactError> {
        let (label, der) = pem_block(pem)?;
        match label.as_str() {
            "RSA PRIVATE KEY" => rsa::RsaPrivateKey::from_pkcs1_der(&der)
                .map(|k| SigningKey::Rsa(Box::new(k)))
                .map_err(bad("PKCS#1 RSA key")),
            "EC PRIVATE KEY" => {
                let ec = sec1::EcPrivateKey::from_der(&der).map_err(bad("SEC1 EC key"))?;
                let curve = ec
                    .parameters
                    .and_then(|p| p.named_curve())
                    .map(|o| o.to_string());
                match curve.as_deref() {
                    Some(OID_P256) | None => p256::SecretKey::from_sec1_der(&der)
                        .map(|k| SigningKey::EcdsaP256(k.into()))
                        .map_err(bad("SEC1 P-256 key")),
                    Some(other) => Err(ArtifactError::UnsupportedKeyType(curve_name(other))),
                }
            }
            "PRIVATE KEY" => {
                let info = pkcs8::PrivateKeyInfo::from_der(&der).map_err(bad("PKCS#8 key"))?;
                by_algorithm(
                    &info.algorithm,
                    || {
                        rsa::RsaPrivateKey::from_pkcs8_der(&der)
                            .map(|k| SigningKey::Rsa(Box::new(k)))
                            .map_err(bad("PKCS#8 RSA key"))
                    },
                    || {
                        p256::SecretKey::from_pkcs8_der(&der)
                            .map(|k| SigningKey::EcdsaP256(k.into()))
                            .map_err(bad("PKCS#8 P-256 key"))
                    },
                )
            }
            "OPENSSH PRIVATE KEY" => Err(ArtifactError::InvalidKey(
                "OpenSSH key format is not supported; convert it to PEM \
                 (e.g. `ssh-keygen -p -m PEM -f key`)"
                    .into(),
            )),
            "PUBLIC KEY" | "RSA PUBLIC KEY" => Err(ArtifactError::InvalidKey(
                "this is a public key; signing needs the private key".into(),
            )),
            other => Err(ArtifactError::InvalidKey(format!(
                "unexpected PEM block '{other}'; expected an RSA or EC private key"
            ))),
        }
    }

    /// The matching public key.
    pub fn verify_key(&self) -> VerifyKey {
        match self {
            SigningKey::Rsa(k) => VerifyKey::Rsa(Box::new(k.to_public_key())),
            SigningKey::EcdsaP256(k) => VerifyKey::EcdsaP256(*k.verifying_key()),
        }
    }

    /// Returns the base64 `manifest.sig` text for the raw manifest bytes.
    pub fn sign_manifest(&self, manifest: &[u8]) -> Result<String, ArtifactError> {
        let raw: Vec<u8> = match self {
            SigningKey::Rsa(k) => {
                let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new((**k).clone());
                signer
                    .try_sign(manifest)
                    .map_err(|e| ArtifactError::Signing(e.to_string()))?
                    .to_vec()
            }
            SigningKey::EcdsaP256(k) => {
                // Raw r||s (64 bytes): mender-artifact 3.9 rejects DER signatures.
                let sig: p256::ecdsa::Signature = k.sign(manifest);
                sig.to_bytes().to_vec()
            }
        };
        Ok(base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

impl VerifyKey {
    /// Parses a PEM public key: SPKI (`PUBLIC KEY`) or PKCS#1 (`RSA PUBLIC KEY`). A private key
    /// PEM is accepted too and its public half is used.
    pub fn from_pem(pem: &[u8]) -> Result<Self, ArtifactError> {
        let (label, der) = pem_block(pem)?;
        match label.as_str() {
            "PUBLIC KEY" => {
                let info = spki::SubjectPublicKeyInfoRef::from_der(&der)
                    .map_err(bad("SPKI public key"))?;
                by_algorithm(
                    &info.algorithm,
                    || {
                        rsa::RsaPublicKey::from_public_key_der(&der)
                            .map(|k| VerifyKey::Rsa(Box::new(k)))
                            .map_err(bad("RSA public key"))
                    },
                    || {
                        p256::PublicKey::from_public_key_der(&der)
                            .map(|k| VerifyKey::EcdsaP256(k.into()))
                            .map_err(bad("P-256 public key"))
                    },
                )
            }
            "RSA PUBLIC KEY" => rsa::RsaPublicKey::from_pkcs1_der(&der)
                .map(|k| VerifyKey::Rsa(Box::new(k)))
                .map_err(bad("PKCS#1 RSA public key")),
            "RSA PRIVATE KEY" | "EC PRIVATE KEY" | "PRIVATE KEY" => {
                Ok(SigningKey::from_pem(pem)?.verify_key())
            }
            other => Err(ArtifactError::InvalidKey(format!(
                "unexpected PEM block '{other}'; expected a public key"
            ))),
        }
    }

    /// Checks the base64 `manifest.sig` text against the raw manifest bytes.
    pub fn verify_manifest(&self, manifest: &[u8], signature_b64: &[u8]) -> bool {
        let text: Vec<u8> = signature_b64
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(text) else {
            return false;
        };
        match self {
            VerifyKey::Rsa(k) => {
                let verifier = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new((**k).clone());
                match rsa::pkcs1v15::Signature::try_from(raw.as_slice()) {
                    Ok(sig) => verifier.verify(manifest, &sig).is_ok(),
                    Err(_) => false,
                }
            }
            VerifyKey::EcdsaP256(k) => {
                let sig = if raw.len() == 64 {
                    p256::ecdsa::Signature::from_slice(&raw)
                } else {
                    p256::ecdsa::Signature::from_der(&raw)
                };
                match sig {
                    Ok(sig) => {
                        let sig = sig.normalize_s().unwrap_or(sig);
                        k.verify(manifest, &sig).is_ok()
                    }
                    Err(_) => false,
                }
            }
        }
    }
}

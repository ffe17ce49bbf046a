//! Device public keys: parsing, normalisation and verification of `X-MEN-Signature`.

use base64::Engine as _;
use spki::der::{Decode, Encode};
use spki::{DecodePublicKey, ObjectIdentifier};

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// A device public key the mock can verify auth requests with.
#[derive(Clone)]
pub(crate) enum DeviceKey {
    Rsa(rsa::RsaPublicKey),
    EcdsaP256(p256::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// Why a key or signature was refused; the text goes into the JSON error body.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyError {
    #[error("pubkey is not a PEM encoded SubjectPublicKeyInfo: {0}")]
    NotSpki(String),
    #[error("unsupported public key algorithm {0} (supported: RSA, ECDSA P-256, Ed25519)")]
    Unsupported(String),
    #[error("invalid {0} public key: {1}")]
    Invalid(&'static str, String),
    #[error("X-MEN-Signature is not valid base64")]
    SignatureEncoding,
    #[error("signature verification failed")]
    BadSignature,
}

/// Parses an SPKI PEM public key; returns the key and its normalised PEM form
/// (parsed and re-encoded, LF line endings), which is how auth sets are matched.
pub(crate) fn parse_public_key(pem: &str) -> Result<(DeviceKey, String), KeyError> {
    let (label, der) = spki::der::pem::decode_vec(pem.trim().as_bytes())
        .map_err(|e| KeyError::NotSpki(e.to_string()))?;
    if label != "PUBLIC KEY" {
        return Err(KeyError::NotSpki(format!(
            "PEM label is {label:?}, expected \"PUBLIC KEY\""
        )));
    }
    let info = spki::SubjectPublicKeyInfoOwned::from_der(&der)
        .map_err(|e| KeyError::NotSpki(e.to_string()))?;
    let canonical_der = info
        .to_der()
        .map_err(|e| KeyError::NotSpki(e.to_string()))?;
    let key = match info.algorithm.oid {
        OID_RSA => DeviceKey::Rsa(
            rsa::RsaPublicKey::from_public_key_der(&canonical_der)
                .map_err(|e| KeyError::Invalid("RSA", e.to_string()))?,
        ),
        OID_EC => DeviceKey::EcdsaP256(
            p256::ecdsa::VerifyingKey::from_public_key_der(&canonical_der)
                .map_err(|e| KeyError::Invalid("ECDSA P-256", e.to_string()))?,
        ),
        OID_ED25519 => DeviceKey::Ed25519(
            ed25519_dalek::VerifyingKey::from_public_key_der(&canonical_der)
                .map_err(|e| KeyError::Invalid("Ed25519", e.to_string()))?,
        ),
        other => return Err(KeyError::Unsupported(other.to_string())),
    };
    let normalized =
        spki::der::pem::encode_string("PUBLIC KEY", spki::der::pem::LineEnding::LF, &canonical_der)
            .map_err(|e| KeyError::NotSpki(e.to_string()))?;
    Ok((key, normalized))
}

/// Verifies a base64 `X-MEN-Signature` over the exact request body bytes.
pub(crate) fn verify_signature(
    key: &DeviceKey,
    body: &[u8],
    signature_b64: &str,
) -> Result<(), KeyError> {
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signature_b64.trim())
        .map_err(|_| KeyError::SignatureEncoding)?;
    let ok = match key {
        DeviceKey::Rsa(key) => {
            use rsa::signature::Verifier as _;
            let verifier = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key.clone());
            rsa::pkcs1v15::Signature::try_from(signature.as_slice())
                .map(|sig| verifier.verify(body, &sig).is_ok())
                .unwrap_or(false)
        }
        DeviceKey::EcdsaP256(key) => {
            use p256::ecdsa::signature::Verifier as _;
            p256::ecdsa::Signature::from_der(&signature)
                .map(|sig| key.verify(body, &sig).is_ok())
                .unwrap_or(false)
        }
        DeviceKey::Ed25519(key) => ed25519_dalek::Signature::from_slice(&signature)
            .map(|sig| key.verify_strict(body, &sig).is_ok())
            .unwrap_or(false),
    };
    if ok {
        Ok(())
    } else {
        Err(KeyError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage_and_private_keys() {
        assert!(matches!(
            parse_public_key("hello"),
            Err(KeyError::NotSpki(_))
        ));
        let private = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIPuUvd6kL2lxZmSLmXzGJwqUXHYs7jbG1kbIy3cLVvNl\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            parse_public_key(private),
            Err(KeyError::NotSpki(_))
        ));
    }

    #[test]
    fn ed25519_roundtrip_and_normalisation() {
        use ed25519_dalek::pkcs8::EncodePublicKey as _;
        use ed25519_dalek::Signer as _;
        let signing = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let pem = signing
            .verifying_key()
            .to_public_key_pem(spki::der::pem::LineEnding::CRLF)
            .unwrap();
        let (key, normalized) = parse_public_key(&pem).unwrap();
        assert!(!normalized.contains('\r'));
        assert_eq!(parse_public_key(&normalized).unwrap().1, normalized);
        let body = b"{\"id_data\":\"{}\"}\n";
        let sig = base64::engine::general_purpose::STANDARD.encode(signing.sign(body).to_bytes());
        verify_signature(&key, body, &sig).unwrap();
        assert!(matches!(
            verify_signature(&key, b"other", &sig),
            Err(KeyError::BadSignature)
        ));
        assert!(matches!(
            verify_signature(&key, body, "***"),
            Err(KeyError::SignatureEncoding)
        ));
    }

    #[test]
    fn ecdsa_p256_der_signature() {
        use p256::ecdsa::signature::Signer as _;
        use p256::pkcs8::EncodePublicKey as _;
        let signing = p256::ecdsa::SigningKey::from_slice(&[3u8; 32]).unwrap();
        let pem = signing
            .verifying_key()
            .to_public_key_pem(spki::der::pem::LineEnding::LF)
            .unwrap();
        let (key, _) = parse_public_key(&pem).unwrap();
        let body = b"payload\n";
        let sig: p256::ecdsa::Signature = signing.sign(body);
        let b64 = base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes());
        verify_signature(&key, body, &b64).unwrap();
        let raw = base64::engine::general_purpose::STANDARD.encode(sig.to_bytes());
        assert!(verify_signature(&key, body, &raw).is_err());
    }
}

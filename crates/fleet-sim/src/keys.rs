//! Device keys: generation and `X-MEN-Signature` signing, as the clients do it (Ed25519 by
//! default because 10,000 RSA-3072 keys take minutes to generate; P-256 and RSA optional).

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Which key type the simulated devices generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum KeyKind {
    /// What mender-auth 4.x/5.x generates; fast.
    #[default]
    Ed25519,
    /// ECDSA P-256, signature DER `SEQUENCE{r,s}` over SHA-256.
    P256,
    /// RSA 2048, PKCS#1 v1.5 with SHA-256 (3.4 generates RSA 3072; 2048 keeps keygen bearable).
    Rsa2048,
}

/// A device's private key and its SPKI PEM public key (LF line endings, trailing newline).
pub(crate) struct DeviceKey {
    signer: Signer,
    pub(crate) public_pem: String,
}

enum Signer {
    Ed25519(ed25519_dalek::SigningKey),
    P256(p256::ecdsa::SigningKey),
    Rsa(Box<rsa::pkcs1v15::SigningKey<sha2::Sha256>>),
}

impl DeviceKey {
    /// Generates a key from the OS random source.
    pub(crate) fn generate(kind: KeyKind) -> DeviceKey {
        use ed25519_dalek::pkcs8::EncodePublicKey as _;
        let lf = spki_line_ending();
        let mut rng = rand::rngs::OsRng;
        match kind {
            KeyKind::Ed25519 => {
                let key = ed25519_dalek::SigningKey::generate(&mut rng);
                let public_pem = key
                    .verifying_key()
                    .to_public_key_pem(lf)
                    .expect("an Ed25519 key encodes");
                DeviceKey {
                    signer: Signer::Ed25519(key),
                    public_pem,
                }
            }
            KeyKind::P256 => {
                use p256::pkcs8::EncodePublicKey as _;
                let key = p256::ecdsa::SigningKey::random(&mut rng);
                let public_pem = key
                    .verifying_key()
                    .to_public_key_pem(lf)
                    .expect("a P-256 key encodes");
                DeviceKey {
                    signer: Signer::P256(key),
                    public_pem,
                }
            }
            KeyKind::Rsa2048 => {
                use rsa::pkcs8::EncodePublicKey as _;
                let private = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("RSA keygen works");
                let public_pem = private
                    .to_public_key()
                    .to_public_key_pem(lf)
                    .expect("an RSA key encodes");
                DeviceKey {
                    signer: Signer::Rsa(Box::new(rsa::pkcs1v15::SigningKey::new(private))),
                    public_pem,
                }
            }
        }
    }

    /// Base64 signature over the exact body bytes, as `X-MEN-Signature` carries it.
    pub(crate) fn sign_b64(&self, body: &[u8]) -> String {
        let raw: Vec<u8> = match &self.signer {
            Signer::Ed25519(key) => {
                use ed25519_dalek::Signer as _;
                key.sign(body).to_bytes().to_vec()
            }
            Signer::P256(key) => {
                use p256::ecdsa::signature::Signer as _;
                let sig: p256::ecdsa::Signature = key.sign(body);
                sig.to_der().as_bytes().to_vec()
            }
            Signer::Rsa(key) => {
                use rsa::signature::{SignatureEncoding as _, Signer as _};
                key.sign(body).to_vec()
            }
        };
        base64::engine::general_purpose::STANDARD.encode(raw)
    }
}

fn spki_line_ending() -> ed25519_dalek::pkcs8::spki::der::pem::LineEnding {
    ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF
}

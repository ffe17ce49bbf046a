//! Key loading: PKCS#1 / SEC1 / PKCS#8 private keys and SPKI / PKCS#1 public keys load;
//! unsupported key types and encrypted keys fail with errors that say what to do.

mod common;

use common::*;
use menderartifact::*;
use test_support::{gen_key, KeyKind};

#[test]
fn supported_key_formats_sign_and_verify() {
    let Some(openssl) = openssl() else { return };
    let dir = tempfile::tempdir().unwrap();
    for kind in [
        KeyKind::Rsa2048Pkcs1,
        KeyKind::Rsa3072Pkcs8,
        KeyKind::P256Sec1,
        KeyKind::P256Pkcs8,
    ] {
        let (key, public) = gen_key(&openssl, dir.path(), kind);
        let sk = SigningKey::from_pem(&std::fs::read(&key).unwrap()).unwrap();
        let vk = VerifyKey::from_pem(&std::fs::read(&public).unwrap()).unwrap();
        let sig = sk.sign_manifest(b"manifest bytes\n").unwrap();
        assert!(
            vk.verify_manifest(b"manifest bytes\n", sig.as_bytes()),
            "{kind:?}"
        );
        assert!(
            !vk.verify_manifest(b"manifest bytez\n", sig.as_bytes()),
            "{kind:?}"
        );
        // The private key PEM also works as a verification key.
        let vk2 = VerifyKey::from_pem(&std::fs::read(&key).unwrap()).unwrap();
        assert!(vk2.verify_manifest(b"manifest bytes\n", sig.as_bytes()));
        // Signatures verify with openssl too (ECDSA after r||s -> DER is not needed for RSA).
        if matches!(kind, KeyKind::Rsa2048Pkcs1 | KeyKind::Rsa3072Pkcs8) {
            use base64::Engine as _;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(&sig)
                .unwrap();
            let m = dir.path().join("m.txt");
            let s = dir.path().join("m.sig");
            std::fs::write(&m, b"manifest bytes\n").unwrap();
            std::fs::write(&s, raw).unwrap();
            openssl_run(
                &openssl,
                &[
                    "dgst",
                    "-sha256",
                    "-verify",
                    public.to_str().unwrap(),
                    "-signature",
                    s.to_str().unwrap(),
                    m.to_str().unwrap(),
                ],
            );
        }
    }
    // PKCS#1 `RSA PUBLIC KEY`.
    let (key, _) = gen_key(&openssl, dir.path(), KeyKind::Rsa2048Pkcs1);
    let p1 = dir.path().join("p1.pem");
    openssl_run(
        &openssl,
        &[
            "rsa",
            "-in",
            key.to_str().unwrap(),
            "-RSAPublicKey_out",
            "-out",
            p1.to_str().unwrap(),
        ],
    );
    let pem = std::fs::read_to_string(&p1).unwrap();
    assert!(pem.contains("BEGIN RSA PUBLIC KEY"));
    let vk = VerifyKey::from_pem(pem.as_bytes()).unwrap();
    let sk = SigningKey::from_pem(&std::fs::read(&key).unwrap()).unwrap();
    assert!(vk.verify_manifest(b"x", sk.sign_manifest(b"x").unwrap().as_bytes()));
}

#[test]
fn unsupported_and_encrypted_keys_are_rejected_clearly() {
    let Some(openssl) = openssl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let [p384_sec1, p384_pk8, ed] =
        [KeyKind::P384Sec1, KeyKind::P384Pkcs8, KeyKind::Ed25519].map(|kind| {
            let (private, public) = gen_key(&openssl, dir.path(), kind);
            let path = |p: std::path::PathBuf| p.to_str().unwrap().to_string();
            (path(private), path(public))
        });
    for (file, needle) in [
        (&p384_sec1.0, "P-384"),
        (&p384_pk8.0, "P-384"),
        (&ed.0, "Ed25519"),
    ] {
        let err = SigningKey::from_pem(&std::fs::read(file).unwrap()).unwrap_err();
        assert!(
            matches!(err, ArtifactError::UnsupportedKeyType(_)),
            "{file}: {err}"
        );
        assert!(err.to_string().contains(needle), "{file}: {err}");
        assert!(
            err.to_string().contains("P-256"),
            "{file}: error should say what is supported: {err}"
        );
    }
    for (file, needle) in [(&p384_pk8.1, "P-384"), (&ed.1, "Ed25519")] {
        let err = VerifyKey::from_pem(&std::fs::read(file).unwrap()).unwrap_err();
        assert!(err.to_string().contains(needle), "{file}: {err}");
    }

    // Encrypted PKCS#8 and encrypted traditional PEM.
    openssl_run(
        &openssl,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-aes256",
            "-pass",
            "pass:secret",
            "-out",
            &p("enc8.pem"),
        ],
    );
    openssl_run(
        &openssl,
        &[
            "genrsa",
            "-traditional",
            "-aes256",
            "-passout",
            "pass:secret",
            "-out",
            &p("enc1.pem"),
            "2048",
        ],
    );
    for file in ["enc8.pem", "enc1.pem"] {
        let err = SigningKey::from_pem(&std::fs::read(p(file)).unwrap()).unwrap_err();
        assert!(matches!(err, ArtifactError::EncryptedKey), "{file}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains("encrypted") && msg.contains("openssl pkey"),
            "{msg}"
        );
    }

    // Public key where a private key is needed, and garbage.
    let err = SigningKey::from_pem(&std::fs::read(&p384_pk8.1).unwrap()).unwrap_err();
    assert!(err.to_string().contains("public key"), "{err}");
    let err = SigningKey::from_pem(b"not a key").unwrap_err();
    assert!(matches!(err, ArtifactError::InvalidKey(_)), "{err}");
}

#[test]
fn generated_keys_in_process() {
    // Keys made with the crates themselves (no openssl), PKCS#8 and SEC1 round trip.
    use p256::pkcs8::EncodePrivateKey as _;
    let sk = p256::SecretKey::random(&mut rand_core::OsRng);
    let sec1 = sk.to_sec1_pem(Default::default()).unwrap();
    let pk8 = sk.to_pkcs8_pem(Default::default()).unwrap();
    for pem in [sec1.as_bytes(), pk8.as_bytes()] {
        let s = SigningKey::from_pem(pem).unwrap();
        let sig = s.sign_manifest(b"abc").unwrap();
        assert_eq!(sig.len(), 88, "raw r||s is 64 bytes");
        assert!(s.verify_key().verify_manifest(b"abc", sig.as_bytes()));
    }
    // A key given for an unsigned artifact: strict read fails, report says Unsigned.
    let spec = ArtifactSpec::new(
        "n",
        vec!["d".into()],
        Payload::Module {
            type_name: "t".into(),
            files: vec![PayloadFile::from_bytes("f", b"x".to_vec(), 0o644)],
            meta_data: None,
        },
    );
    let mut art = Vec::new();
    write_artifact(spec, &mut art).unwrap();
    let vk = SigningKey::from_pem(sec1.as_bytes()).unwrap().verify_key();
    assert!(matches!(
        read_verified(art.as_slice(), Some(&vk)),
        Err(ArtifactError::SignatureMissing)
    ));
    assert_eq!(
        read_report(art.as_slice(), Some(&vk)).unwrap().signature,
        SignatureStatus::Unsigned
    );
    assert_eq!(
        read_verified(art.as_slice(), None).unwrap().signature,
        SignatureStatus::Unsigned
    );
}

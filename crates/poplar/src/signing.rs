//! Signing Apple configuration profiles: a CMS SignedData (RFC 5652) that carries the profile
//! itself, signed with SHA-256 by the key of `[autoconfig] profile_key` and carrying the chain of
//! `profile_cert`, so iOS and macOS show the profile as verified (when the chain leads to a root
//! they trust) instead of "Unsigned". P-256 ECDSA and RSA keys, PKCS#8 or their own PEM forms.

use anyhow::{Context, Result, bail};
use cms::builder::{SignedDataBuilder, SignerInfoBuilder};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::signed_data::{EncapsulatedContentInfo, SignerIdentifier};
use der::asn1::OctetString;
use der::{Any, Encode};
use spki::AlgorithmIdentifierOwned;
use std::path::Path;
use x509_cert::Certificate;

/// The key that signs, and the certificates that go with the signature (signer first).
pub(crate) struct ProfileSigner {
    chain: Vec<Certificate>,
    key: Key,
}

enum Key {
    P256(p256::ecdsa::SigningKey),
    Rsa(Box<rsa::pkcs1v15::SigningKey<sha2::Sha256>>),
}

impl ProfileSigner {
    /// Reads the certificate chain and the key (PEM files), and checks they belong together.
    pub(crate) fn load(cert: &Path, key_file: &Path) -> Result<Self> {
        let pem = std::fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?;
        let chain = Certificate::load_pem_chain(&pem)
            .map_err(|e| anyhow::anyhow!("{}: not PEM certificates: {e}", cert.display()))?;
        let Some(first) = chain.first() else {
            bail!("{} holds no certificate", cert.display());
        };
        let text = std::fs::read_to_string(key_file)
            .with_context(|| format!("cannot read {}", key_file.display()))?;
        let key = parse_key(&text)
            .with_context(|| format!("{}: not a P-256 or RSA private key", key_file.display()))?;
        let certified = first
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .context("cannot encode the certificate's public key")?;
        let held = match &key {
            Key::P256(k) => spki::EncodePublicKey::to_public_key_der(k.verifying_key()),
            Key::Rsa(k) => {
                let public = rsa::RsaPublicKey::from(k.as_ref().as_ref());
                spki::EncodePublicKey::to_public_key_der(&public)
            }
        }
        .context("cannot encode the key's public half")?;
        if held.as_bytes() != certified.as_slice() {
            bail!(
                "{} is not the key of the first certificate in {}",
                key_file.display(),
                cert.display()
            );
        }
        Ok(Self { chain, key })
    }

    /// `content` wrapped in a DER SignedData.
    pub(crate) fn sign(&self, content: &[u8]) -> Result<Vec<u8>> {
        let signer = &self.chain[0];
        let econtent = Any::encode_from(&OctetString::new(content)?)?;
        let eci = EncapsulatedContentInfo {
            econtent_type: const_oid::db::rfc5911::ID_DATA,
            econtent: Some(econtent),
        };
        let digest = AlgorithmIdentifierOwned {
            oid: const_oid::db::rfc5912::ID_SHA_256,
            parameters: None,
        };
        let sid = || {
            SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: signer.tbs_certificate.issuer.clone(),
                serial_number: signer.tbs_certificate.serial_number.clone(),
            })
        };
        let mut builder = SignedDataBuilder::new(&eci);
        builder
            .add_digest_algorithm(digest.clone())
            .map_err(cms_error)?;
        for cert in &self.chain {
            builder
                .add_certificate(CertificateChoices::Certificate(cert.clone()))
                .map_err(cms_error)?;
        }
        match &self.key {
            Key::P256(k) => {
                let info =
                    SignerInfoBuilder::new(k, sid(), digest, &eci, None).map_err(cms_error)?;
                builder
                    .add_signer_info::<_, p256::ecdsa::DerSignature>(info)
                    .map_err(cms_error)?;
            }
            Key::Rsa(k) => {
                let info = SignerInfoBuilder::new(k.as_ref(), sid(), digest, &eci, None)
                    .map_err(cms_error)?;
                builder
                    .add_signer_info::<_, rsa::pkcs1v15::Signature>(info)
                    .map_err(cms_error)?;
            }
        }
        Ok(builder.build().map_err(cms_error)?.to_der()?)
    }
}

/// The CMS builder's error has no `std::error::Error`; its Debug form says what failed.
fn cms_error(e: cms::builder::Error) -> anyhow::Error {
    anyhow::anyhow!("cannot build the profile's signature: {e:?}")
}

fn parse_key(text: &str) -> Result<Key> {
    use p256::pkcs8::DecodePrivateKey as _;
    use rsa::pkcs1::DecodeRsaPrivateKey as _;
    if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_pem(text) {
        return Ok(Key::P256(k));
    }
    if let Ok(k) = p256::SecretKey::from_sec1_pem(text) {
        return Ok(Key::P256(k.into()));
    }
    let rsa = rsa::RsaPrivateKey::from_pkcs8_pem(text)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(text))
        .context("neither PKCS#8 nor SEC1 P-256 nor PKCS#1 RSA")?;
    Ok(Key::Rsa(Box::new(rsa::pkcs1v15::SigningKey::new(rsa))))
}

//! TLS with rustls (ring provider): loading PEM files, generating the first-start self-signed
//! certificate, the acceptors new handshakes take (replaced on SIGHUP by [`TlsReloader`]).
//!
//! Only TLS 1.2 and 1.3 with rustls' default cipher suites are offered (AEAD only, forward
//! secrecy only); the configuration can raise the floor to 1.3.

use crate::Config;
use crate::config::TlsVersion;
use crate::error::ServerError;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use tokio_rustls::TlsAcceptor;

/// The CAs whose client certificates are accepted (for SASL EXTERNAL).
pub fn client_roots(path: &Path) -> Result<rustls::RootCertStore, ServerError> {
    load_roots(path, "tls.client_ca")
}

/// CA certificates from a PEM file; `setting` names where the path came from, for errors.
pub fn load_roots(path: &Path, setting: &str) -> Result<rustls::RootCertStore, ServerError> {
    let bad =
        |e: &dyn std::fmt::Display| ServerError::Tls(format!("{setting} {}: {e}", path.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(bad(&"no CA certificate in the file"));
    }
    Ok(roots)
}

/// The server's TLS settings and the facts channel binding needs.
#[derive(Debug, Clone)]
pub struct Tls {
    /// The rustls configuration.
    pub config: Arc<ServerConfig>,
    /// `tls-server-end-point` data: the hash of the server certificate (RFC 5929).
    pub end_point: Vec<u8>,
}

/// Builds the rustls server configuration from a PEM chain and key, optionally asking for
/// client certificates from the CAs in `client_ca`.
pub fn server_config(
    cert: &Path,
    key: &Path,
    min_version: TlsVersion,
    client_ca: Option<&Path>,
) -> Result<Tls, ServerError> {
    let tls_err = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        ServerError::Tls(format!("{what} {}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls_err("cannot read the certificate", cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err("invalid PEM in the certificate", cert, &e))?;
    if certs.is_empty() {
        return Err(tls_err(
            "no certificate found in",
            cert,
            &"the file has no CERTIFICATE block",
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| tls_err("cannot read the private key", key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let end_point = end_point_data(&certs[0]);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(client_roots(ca)?),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| ServerError::Tls(format!("tls.client_ca: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(certs, key_der).map_err(|e| {
        ServerError::Tls(format!(
            "certificate {} and key {} do not work together: {e}",
            cert.display(),
            key.display()
        ))
    })?;
    Ok(Tls {
        config: Arc::new(config),
        end_point,
    })
}

fn end_point_data(cert: &CertificateDer<'_>) -> Vec<u8> {
    use pop3_auth::cert::EndPointHash;
    use ring::digest;
    let algorithm = match pop3_auth::cert::end_point_hash(cert) {
        EndPointHash::Sha256 => &digest::SHA256,
        EndPointHash::Sha384 => &digest::SHA384,
        EndPointHash::Sha512 => &digest::SHA512,
    };
    digest::digest(algorithm, cert).as_ref().to_vec()
}

/// Channel binding data of an established TLS connection: `tls-exporter` only on TLS 1.3
/// (RFC 9266 forbids it on 1.2 without extended master secret), `tls-server-end-point` always.
pub fn channel_binding(
    conn: &rustls::ServerConnection,
    end_point: &[u8],
) -> pop3_auth::sasl::ChannelBinding {
    let tls_exporter = (conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3))
        .then(|| {
            conn.export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None)
                .ok()
        })
        .flatten()
        .map(|out| out.to_vec());
    pop3_auth::sasl::ChannelBinding {
        tls_exporter,
        tls_server_end_point: Some(end_point.to_vec()),
    }
}

/// Creates a self-signed certificate for `names` at `cert`/`key` unless both files exist.
/// Returns whether one was generated.
pub fn ensure_self_signed(cert: &Path, key: &Path, names: &[String]) -> Result<bool, ServerError> {
    if cert.exists() && key.exists() {
        return Ok(false);
    }
    let io = |path: &Path, e: std::io::Error| ServerError::Io {
        path: path.to_owned(),
        source: e,
    };
    for dir in [cert.parent(), key.parent()].into_iter().flatten() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io(dir, e))?;
        // Root writes here before it gives up privileges: not through a link planted by the
        // service user.
        pop3_store::maildir::untrusted::check_real_dir(dir).map_err(|e| io(dir, e))?;
    }
    let generate = || -> Result<(String, String), rcgen::Error> {
        let mut params = rcgen::CertificateParams::new(names.to_vec())?;
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(
            rcgen::DnType::CommonName,
            names.first().map_or("localhost", String::as_str),
        );
        dn.push(rcgen::DnType::OrganizationName, "Poplar self-signed");
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let (cert_pem, key_pem) =
        generate().map_err(|e| ServerError::Tls(format!("cannot generate a certificate: {e}")))?;
    // Each file is written under a temporary name and renamed, so a crash never leaves a
    // half-written key that would make every later start fail.
    let write = |path: &Path, data: &str, mode: u32| -> Result<(), ServerError> {
        let tmp = path.with_extension("pem.tmp");
        pop3_store::maildir::untrusted::replace_file(path, &tmp, data.as_bytes(), mode)
            .map_err(|e| io(path, e))
    };
    write(key, &key_pem, 0o600)?;
    write(cert, &cert_pem, 0o644)?;
    Ok(true)
}

/// The TLS acceptors and the certificate hash for channel binding.
#[derive(Clone)]
pub(crate) struct TlsSetup {
    /// For listeners that do not ask for client certificates.
    pub(crate) acceptor: TlsAcceptor,
    /// For listeners that ask for (optional) client certificates, when `tls.client_ca` is set.
    pub(crate) with_client_certs: Option<TlsAcceptor>,
    /// `tls-server-end-point` data.
    pub(crate) end_point: Vec<u8>,
}

/// Loads the certificate and key (generating the self-signed default if configured so) and
/// builds the acceptors; `None` when TLS is disabled.
pub(crate) fn load_tls(config: &Config) -> Result<Option<TlsSetup>, ServerError> {
    if !config.tls.enabled {
        return Ok(None);
    }
    let (cert, key, generated) = config.tls_files();
    if generated {
        let names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        if ensure_self_signed(&cert, &key, &names)? {
            tracing::warn!(
                cert = %cert.display(),
                "generated a self-signed TLS certificate for localhost; clients will not \
                 trust it. Set tls.cert and tls.key for production"
            );
        }
    }
    let plain = server_config(&cert, &key, config.tls.min_version, None)?;
    let with_client_certs = match &config.tls.client_ca {
        Some(ca) => Some(TlsAcceptor::from(
            server_config(&cert, &key, config.tls.min_version, Some(ca))?.config,
        )),
        None => None,
    };
    Ok(Some(TlsSetup {
        acceptor: TlsAcceptor::from(plain.config),
        with_client_certs,
        end_point: plain.end_point,
    }))
}

/// The TLS material in use, replaceable while the server runs.
pub(crate) type TlsSlot = Arc<RwLock<Arc<TlsSetup>>>;

/// Reloads the certificate and key (on SIGHUP): new handshakes use the new ones, sessions
/// already running keep theirs.
pub struct TlsReloader {
    pub(crate) config: Config,
    pub(crate) slot: TlsSlot,
}

impl TlsReloader {
    /// Reads the files again. On an error the previous certificate stays in use.
    pub fn reload(&self) -> Result<(), ServerError> {
        if let Some(setup) = load_tls(&self.config)? {
            *self.slot.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(setup);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificate_loads_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (
            dir.path().join("tls/cert.pem"),
            dir.path().join("tls/key.pem"),
        );
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        assert!(ensure_self_signed(&cert, &key, &names).unwrap());
        let pem = fs::read(&cert).unwrap();
        assert!(!ensure_self_signed(&cert, &key, &names).unwrap());
        assert_eq!(
            fs::read(&cert).unwrap(),
            pem,
            "an existing certificate is never replaced"
        );
        server_config(&cert, &key, TlsVersion::V1_2, None).unwrap();
        server_config(&cert, &key, TlsVersion::V1_3, Some(&cert)).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn mismatched_or_missing_files_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let a = (dir.path().join("a/cert.pem"), dir.path().join("a/key.pem"));
        let b = (dir.path().join("b/cert.pem"), dir.path().join("b/key.pem"));
        ensure_self_signed(&a.0, &a.1, &["localhost".into()]).unwrap();
        ensure_self_signed(&b.0, &b.1, &["localhost".into()]).unwrap();
        let e = server_config(&a.0, &b.1, TlsVersion::V1_2, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("do not work together"), "{e}");
        let e = server_config(&dir.path().join("none.pem"), &a.1, TlsVersion::V1_2, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read the certificate"), "{e}");
    }
}

//! TLS server configuration with rustls (ring provider, the one crypto provider of the whole
//! workspace). Certificates come from PEM files; when none is configured, a development
//! certificate is generated once and kept, so clients that pinned it keep working across
//! restarts.

use std::{
    io::BufReader,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::ServerConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no private key in {0}")]
    NoKey(PathBuf),
    #[error("no certificate in {0}")]
    NoCert(PathBuf),
    #[error("invalid certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot generate a development certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Where a certificate and its key are.
#[derive(Debug, Clone)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process-wide default rustls crypto provider. Call it once at process start.
///
/// Our own TLS configurations name their provider, but the S3 client (reqwest, built with
/// rustls and no provider of its own, to keep aws-lc-rs out of the build) asks rustls for the
/// process default and panics when there is none. Calling this again, or after another part
/// installed a provider, does nothing: the first provider installed stays.
pub fn install_crypto_provider() {
    // The error only says that a default is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Loads a PEM certificate chain and key into a server configuration.
pub fn server_config(paths: &CertPaths) -> Result<Arc<ServerConfig>, TlsError> {
    let read = |p: &Path| std::fs::File::open(p).map_err(|source| TlsError::Read { path: p.into(), source });
    let certs = rustls_pemfile::certs(&mut BufReader::new(read(&paths.cert)?))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read { path: paths.cert.clone(), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert(paths.cert.clone()));
    }
    let key = rustls_pemfile::private_key(&mut BufReader::new(read(&paths.key)?))
        .map_err(|source| TlsError::Read { path: paths.key.clone(), source })?
        .ok_or_else(|| TlsError::NoKey(paths.key.clone()))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// Returns the development certificate in `dir` (`dev-cert.pem`, `dev-key.pem`), generating a
/// self-signed one for `hostnames` the first time.
pub fn dev_certificate(dir: &Path, hostnames: &[String]) -> Result<CertPaths, TlsError> {
    let paths = CertPaths { cert: dir.join("dev-cert.pem"), key: dir.join("dev-key.pem") };
    if paths.cert.exists() && paths.key.exists() {
        return Ok(paths);
    }
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write { path: dir.into(), source })?;
    let generated = rcgen::generate_simple_self_signed(hostnames.to_vec())?;
    let write = |p: &Path, s: String| std::fs::write(p, s).map_err(|source| TlsError::Write { path: p.into(), source });
    write(&paths.cert, generated.cert.pem())?;
    write(&paths.key, generated.signing_key.serialize_pem())?;
    restrict(&paths.key);
    Ok(paths)
}

#[cfg(unix)]
fn restrict(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!(path = %path.display(), error = %e, "cannot restrict key permissions");
    }
}

#[cfg(not(unix))]
fn restrict(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dev_certificate(dir.path(), &["localhost".into()]).unwrap();
        let first = std::fs::read(&p.cert).unwrap();
        let again = dev_certificate(dir.path(), &["localhost".into()]).unwrap();
        assert_eq!(first, std::fs::read(&again.cert).unwrap(), "the certificate must survive restarts");
        server_config(&p).unwrap();
    }

    #[test]
    fn installing_the_provider_twice_is_harmless() {
        install_crypto_provider();
        install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }

    #[test]
    fn reports_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = CertPaths { cert: dir.path().join("nope.pem"), key: dir.path().join("nope.key") };
        assert!(matches!(server_config(&p), Err(TlsError::Read { .. })));
    }
}

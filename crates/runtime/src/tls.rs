//! TLS server configuration with rustls (ring provider, the one crypto provider of the whole
//! workspace). Certificates come from PEM files; when none is configured, a development
//! certificate is generated once and kept, so clients that pinned it keep working across
//! restarts.
//!
//! The front-ends serve a [`ReloadingCert`]: one `ServerConfig` for the life of the process,
//! whose certificate resolver answers the newest certificate and key found in the files. A
//! background task ([`ReloadingCert::watch`]) reads the files every few seconds, so a renewal
//! (cert-manager updating the Secret, the kubelet swapping the mounted files) reaches the next
//! connection without a restart. A pair that does not load (half written, key and certificate
//! from different renewals, not PEM) is refused and the previous one kept.

use std::{
    io::BufReader,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use crate::metrics::{CertificateLabels, Metrics, ResultLabels};

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
    #[error("certificate {path} does not match its key {key}: {source}")]
    Mismatch {
        path: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
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

/// The certificate chain and key in PEM files already read (`cert`, `key`); `paths` names
/// them in errors.
fn parse_pem(
    paths: &CertPaths,
    cert: &[u8],
    key: &[u8],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let certs = rustls_pemfile::certs(&mut BufReader::new(cert))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read { path: paths.cert.clone(), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert(paths.cert.clone()));
    }
    let key = rustls_pemfile::private_key(&mut BufReader::new(key))
        .map_err(|source| TlsError::Read { path: paths.key.clone(), source })?
        .ok_or_else(|| TlsError::NoKey(paths.key.clone()))?;
    Ok((certs, key))
}

/// Reads both files of a pair, through symbolic links (a mounted Secret's files are links into
/// the directory the kubelet swaps).
fn read_pair(paths: &CertPaths) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |p: &Path| std::fs::read(p).map_err(|source| TlsError::Read { path: p.into(), source });
    Ok((read(&paths.cert)?, read(&paths.key)?))
}

/// Loads a PEM certificate chain and key into a server configuration.
pub fn server_config(paths: &CertPaths) -> Result<Arc<ServerConfig>, TlsError> {
    let (cert, key) = read_pair(paths)?;
    let (certs, key) = parse_pem(paths, &cert, &key)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// A certificate and key read from files and read again when the files change; the
/// certificate resolver of the front-ends' TLS configuration.
///
/// Each poll reads both files and compares their bytes with the pair tried last: content
/// rather than modification times, because a swap of the kubelet's `..data` link or a rename
/// within the same second can leave times and sizes as they were. A changed pair is loaded only
/// when both files parse and the key belongs to the certificate; otherwise the previous pair
/// keeps serving, a warning is logged and `tern_tls_certificate_reloads_total{result="error"}`
/// counts it. The failed pair is retried as soon as either file changes again.
#[derive(Debug)]
pub struct ReloadingCert {
    paths: CertPaths,
    /// The `certificate` label of the expiry gauge: the certificate file's path.
    label: String,
    current: RwLock<Arc<CertifiedKey>>,
    /// The bytes of the pair tried last, loaded or refused.
    tried: Mutex<Option<(Vec<u8>, Vec<u8>)>>,
}

impl ReloadingCert {
    /// Loads the pair in `paths`; unlike a reload, a pair that does not load is an error.
    pub fn load(paths: &CertPaths) -> Result<Arc<Self>, TlsError> {
        let (cert, key) = read_pair(paths)?;
        let certified = certified_key(paths, &cert, &key)?;
        let this = Self {
            paths: paths.clone(),
            label: paths.cert.display().to_string(),
            current: RwLock::new(Arc::new(certified)),
            tried: Mutex::new(Some((cert, key))),
        };
        this.record_expiry();
        // Both results show from the start, so an alert on errors has a series to watch.
        for result in ["ok", "error"] {
            let _ = Metrics::global().tls_certificate_reloads.get_or_create(&ResultLabels { result });
        }
        Ok(Arc::new(this))
    }

    /// A server configuration (ring, safe default protocol versions, no client certificates)
    /// that answers every handshake with the current pair. Built once: acceptors keep it while
    /// the pair behind it changes.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        Ok(Arc::new(config))
    }

    /// The certificate chain served now (the end-entity certificate first).
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the files and loads them if they changed since the last try. `Ok(true)` when a
    /// new pair is now served, `Ok(false)` when nothing changed; an error leaves the previous
    /// pair in place.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let result = self.try_reload();
        match &result {
            Ok(true) => {
                tracing::info!(cert = %self.paths.cert.display(), "reloaded the TLS certificate");
                self.count("ok");
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "keeping the previous TLS certificate");
                self.count("error");
            }
        }
        result
    }

    fn try_reload(&self) -> Result<bool, TlsError> {
        let read = read_pair(&self.paths);
        let mut tried = self.tried.lock().unwrap_or_else(|e| e.into_inner());
        let (cert, key) = match read {
            Ok(pair) => pair,
            Err(e) => {
                // A file missing for a moment (during a swap) is retried in full next time.
                *tried = None;
                return Err(e);
            }
        };
        if tried.as_ref().is_some_and(|(c, k)| *c == cert && *k == key) {
            return Ok(false);
        }
        let loaded = certified_key(&self.paths, &cert, &key);
        *tried = Some((cert, key));
        drop(tried);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded?);
        self.record_expiry();
        Ok(true)
    }

    fn count(&self, result: &'static str) {
        Metrics::global().tls_certificate_reloads.get_or_create(&ResultLabels { result }).inc();
    }

    /// Sets `tern_tls_certificate_expiry_timestamp_seconds` from the current certificate.
    fn record_expiry(&self) {
        let current = self.current();
        let Some(end_entity) = current.cert.first() else { return };
        match not_after(end_entity) {
            Some(at) => {
                let labels = CertificateLabels { certificate: self.label.clone() };
                Metrics::global().tls_certificate_expiry.get_or_create(&labels).set(at);
            }
            None => tracing::warn!(cert = %self.paths.cert.display(), "cannot read the certificate's expiry"),
        }
    }

    /// Polls the files every `every` until `stop` completes.
    pub async fn watch(self: Arc<Self>, every: Duration, stop: impl Future<Output = ()>) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate, and the files were just loaded.
        tick.tick().await;
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    // Reading files blocks: a slow volume must not hold up a runtime thread.
                    let this = self.clone();
                    let _ = tokio::task::spawn_blocking(move || this.reload()).await;
                }
                () = &mut stop => return,
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Parses a pair and checks that the key belongs to the certificate.
fn certified_key(paths: &CertPaths, cert: &[u8], key: &[u8]) -> Result<CertifiedKey, TlsError> {
    let (certs, key) = parse_pem(paths, cert, key)?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|source| TlsError::Mismatch {
        path: paths.cert.clone(),
        key: paths.key.clone(),
        source,
    })
}

/// The notAfter of a DER certificate in Unix seconds, read with a few lines of DER rather than
/// a whole X.509 parser: Certificate is a SEQUENCE whose first element, TBSCertificate, holds
/// an optional `[0]` version, the serial number, the signature algorithm, the issuer and then
/// Validity, a SEQUENCE of notBefore and notAfter.
pub fn not_after(cert: &[u8]) -> Option<i64> {
    let (tag, certificate, _) = der(cert)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, tbs, _) = der(certificate)?;
    if tag != 0x30 {
        return None;
    }
    let mut rest = tbs;
    let (tag, _, after) = der(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    // The serial number, the signature algorithm and the issuer.
    for _ in 0..3 {
        rest = der(rest)?.2;
    }
    let (tag, validity, _) = der(rest)?;
    if tag != 0x30 {
        return None;
    }
    let (_, _, after) = der(validity)?;
    let (tag, time, _) = der(after)?;
    parse_time(tag, time)
}

/// One DER element at the start of `input`: its tag, its content and what follows it.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize), &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, tag 0x17) or GeneralizedTime (`YYYYMMDDHHMMSSZ`, tag 0x18) as
/// Unix seconds. RFC 5280 allows only these forms in certificates.
fn parse_time(tag: u8, time: &[u8]) -> Option<i64> {
    let digits = std::str::from_utf8(time).ok()?.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |s: &str| s.parse::<i64>().ok();
    let (year, rest) = match (tag, digits.len()) {
        (0x17, 12) => {
            // RFC 5280 section 4.1.2.5.1: two-digit years 50 to 99 are 19xx, others 20xx.
            let yy = num(&digits[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (0x18, 14) => (num(&digits[..4])?, &digits[4..]),
        _ => return None,
    };
    let field = |i: usize| num(&rest[i..i + 2]);
    let (month, day, hour, minute, second) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
    fn reads_the_expiry_of_certificates() {
        for (year, month, day) in [(2031, 2, 3), (2049, 12, 31), (2050, 1, 1), (1999, 3, 1)] {
            let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
            params.not_after = rcgen::date_time_ymd(year, month, day);
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            let expected = days_from_civil(year.into(), month.into(), day.into()) * 86_400;
            assert_eq!(not_after(cert.der()), Some(expected), "{year}-{month}-{day}");
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(parse_time(0x17, b"491231235959Z"), Some(days_from_civil(2049, 12, 31) * 86_400 + 86_399));
        assert_eq!(not_after(b"\x30\x03\x02\x01"), None, "truncated input is refused, not read past");
    }

    #[test]
    fn a_reload_keeps_the_old_pair_when_the_new_one_does_not_load() {
        let dir = tempfile::tempdir().unwrap();
        let paths = dev_certificate(dir.path(), &["localhost".into()]).unwrap();
        let reloading = ReloadingCert::load(&paths).unwrap();
        let first = reloading.current().cert[0].clone();
        assert!(!reloading.reload().unwrap(), "unchanged files are not loaded again");
        // A certificate with the old key: the pair does not match.
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(&paths.cert, other.cert.pem()).unwrap();
        assert!(matches!(reloading.reload(), Err(TlsError::Mismatch { .. })));
        assert_eq!(reloading.current().cert[0], first);
        // The same broken pair is not tried again until a file changes.
        assert!(!reloading.reload().unwrap());
        std::fs::write(&paths.key, other.signing_key.serialize_pem()).unwrap();
        assert!(reloading.reload().unwrap());
        assert_eq!(reloading.current().cert[0], *other.cert.der());
        std::fs::write(&paths.cert, "not PEM").unwrap();
        assert!(matches!(reloading.reload(), Err(TlsError::NoCert(_))));
        assert_eq!(reloading.current().cert[0], *other.cert.der());
    }

    #[test]
    fn reports_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = CertPaths { cert: dir.path().join("nope.pem"), key: dir.path().join("nope.key") };
        assert!(matches!(server_config(&p), Err(TlsError::Read { .. })));
    }
}

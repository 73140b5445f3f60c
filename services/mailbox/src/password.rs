//! Password hashing with argon2id. Plain passwords exist only inside [`secrecy::SecretString`]
//! so they never reach a log line by accident.

use argon2::{Argon2, PasswordHash};
use password_hash::{SaltString, rand_core::OsRng};
use secrecy::{ExposeSecret, SecretString};

use crate::error::{MailboxError, Result};

thread_local! {
    /// argon2's working memory (about 19 MiB with the default parameters), kept for the life of
    /// the hashing thread. Allocating it for every check and freeing it again leaves the
    /// allocator holding the freed memory per thread, so a process that checked a few passwords
    /// on a few threads grew by hundreds of MiB; one buffer per thread keeps it at one copy.
    static BLOCKS: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs argon2 with the thread's reusable working memory.
fn argon2_into(argon: &Argon2<'_>, params: &argon2::Params, pwd: &[u8], salt: &[u8], out: &mut [u8]) -> Result<()> {
    BLOCKS
        .with(|blocks| {
            let mut blocks = blocks.borrow_mut();
            if blocks.len() != params.block_count() {
                blocks.clear();
                blocks.resize(params.block_count(), argon2::Block::default());
                blocks.shrink_to_fit();
            }
            argon.hash_password_into_with_memory(pwd, salt, out, &mut blocks[..])
        })
        .map_err(|e| MailboxError::invalid("password", e.to_string()))
}

/// Hashes a plain password into a PHC string (`$argon2id$v=19$...`).
pub fn hash(plain: &SecretString) -> Result<String> {
    if plain.expose_secret().is_empty() {
        return Err(MailboxError::invalid("password", "must not be empty"));
    }
    let salt = SaltString::generate(&mut OsRng);
    let argon = Argon2::default();
    let params = argon.params().clone();
    let mut salt_bytes = [0u8; 64];
    let salt_raw = salt.decode_b64(&mut salt_bytes).map_err(|e| MailboxError::invalid("password", e.to_string()))?;
    let mut out = vec![0u8; params.output_len().unwrap_or(32)];
    argon2_into(&argon, &params, plain.expose_secret().as_bytes(), salt_raw, &mut out)?;
    let output = password_hash::Output::new(&out).map_err(|e| MailboxError::invalid("password", e.to_string()))?;
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(argon2::Version::V0x13.into()),
        params: (&params)
            .try_into()
            .map_err(|e: password_hash::Error| MailboxError::invalid("password", e.to_string()))?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Accepts a PHC hash given by an administrator (for example from a Kubernetes Secret) after
/// checking that it parses and uses an algorithm we verify.
pub fn check_hash(phc: &str) -> Result<String> {
    if is_bcrypt(phc) {
        // The cost and salt must parse, or no password would ever match.
        phc.parse::<bcrypt::HashParts>().map_err(|e| MailboxError::invalid("password hash", e.to_string()))?;
        return Ok(phc.to_string());
    }
    let parsed = PasswordHash::new(phc).map_err(|e| MailboxError::invalid("password hash", e.to_string()))?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(MailboxError::invalid("password hash", "only argon2 and bcrypt hashes are accepted"));
    }
    Ok(phc.to_string())
}

/// A bcrypt hash (`$2a$`, `$2b$`, `$2x$`, `$2y$`), as htpasswd and many user databases store.
fn is_bcrypt(hash: &str) -> bool {
    ["$2a$", "$2b$", "$2x$", "$2y$"].iter().any(|p| hash.starts_with(p))
}

/// Verifies a password against a stored PHC string (argon2) or bcrypt hash; the comparison is
/// constant-time.
pub fn verify(plain: &SecretString, phc: &str) -> bool {
    if is_bcrypt(phc) {
        return bcrypt::verify(plain.expose_secret(), phc).unwrap_or(false);
    }
    let check = || -> Option<bool> {
        let parsed = PasswordHash::new(phc).ok()?;
        let algorithm = argon2::Algorithm::try_from(parsed.algorithm).ok()?;
        let version = match parsed.version {
            Some(v) => argon2::Version::try_from(v).ok()?,
            None => argon2::Version::default(),
        };
        let params = argon2::Params::try_from(&parsed).ok()?;
        let expected = parsed.hash?;
        let mut salt_bytes = [0u8; 64];
        let salt = parsed.salt?.decode_b64(&mut salt_bytes).ok()?;
        let argon = Argon2::new(algorithm, version, params.clone());
        let mut out = vec![0u8; expected.len()];
        argon2_into(&argon, &params, plain.expose_secret().as_bytes(), salt, &mut out).ok()?;
        // Output's equality is constant-time.
        Some(password_hash::Output::new(&out).ok()? == expected)
    };
    check().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_hashes_are_accepted_and_verified() {
        let made = bcrypt::hash("secret", 4).unwrap();
        assert!(made.starts_with("$2b$04$"), "{made}");
        assert_eq!(check_hash(&made).unwrap(), made);
        assert!(verify(&SecretString::from("secret"), &made));
        assert!(!verify(&SecretString::from("Secret"), &made));
        // Apache's htpasswd writes $2y$, the same algorithm under another name.
        let apache = made.replacen("$2b$", "$2y$", 1);
        assert_eq!(check_hash(&apache).unwrap(), apache);
        assert!(verify(&SecretString::from("secret"), &apache));
        assert!(check_hash("$2y$04$short").is_err());
    }

    #[test]
    fn hash_and_verify() {
        let pw = SecretString::from("correct horse");
        let h = hash(&pw).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify(&pw, &h));
        assert!(!verify(&SecretString::from("wrong"), &h));
        // Hashes made by the argon2 crate's own hasher verify too (administrators paste those).
        let salt = SaltString::generate(&mut OsRng);
        let theirs = argon2::PasswordHasher::hash_password(&Argon2::default(), b"pasted", &salt).unwrap().to_string();
        assert!(verify(&SecretString::from("pasted"), &theirs));
        assert!(!verify(&SecretString::from("Pasted"), &theirs));
        assert_eq!(check_hash(&h).unwrap(), h);
        assert!(check_hash("plain").is_err());
        assert!(hash(&SecretString::from("")).is_err());
    }
}

/// Password checks for a busy server: argon2 runs on a small fixed pool of threads (each check
/// takes about 19 MiB and tens of milliseconds, so running them on any number of threads
/// at once would let a burst of logins take hundreds of MiB), and a successful check is
/// remembered for a few minutes under a keyed hash, so a mail client that logs in every
/// minute (POP3 polling, IMAP reconnects) costs one argon2 run, not one per login, as with
/// Dovecot's auth cache.
#[derive(Debug, Clone)]
pub struct Checker {
    jobs: std::sync::mpsc::SyncSender<Job>,
    cache: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<[u8; 32], std::time::Instant>>>,
    /// A random key per process, so the cache holds nothing an attacker could test guesses
    /// against without the key.
    key: [u8; 32],
    ttl: std::time::Duration,
}

type Job = Box<dyn FnOnce() + Send>;

/// Most entries the cache keeps before it is cleared.
const CACHE_MAX: usize = 50_000;

impl Checker {
    pub fn new(threads: usize, ttl: std::time::Duration) -> Self {
        let (jobs, rx) = std::sync::mpsc::sync_channel::<Job>(1024);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("tern-argon2-{i}")).spawn(move || {
                loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        let mut key = [0u8; 32];
        password_hash::rand_core::RngCore::fill_bytes(&mut OsRng, &mut key);
        Self { jobs, cache: Default::default(), key, ttl }
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        let jobs = self.jobs.clone();
        // The queue is bounded; waiting for a place must not block the async runtime.
        tokio::task::spawn_blocking(move || jobs.send(job)).await.ok()?.ok()?;
        rx.await.ok()
    }

    fn cache_key(&self, plain: &SecretString, phc: &str) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(phc.as_bytes());
        h.update([0]);
        h.update(plain.expose_secret().as_bytes());
        h.finalize().into()
    }

    /// Verifies a password against a stored hash.
    pub async fn verify(&self, plain: &SecretString, phc: &str) -> bool {
        let key = self.cache_key(plain, phc);
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.get(&key).is_some_and(|until| *until > std::time::Instant::now()) {
                return true;
            }
        }
        let (plain2, phc2) = (plain.clone(), phc.to_string());
        let ok = self.run(move || verify(&plain2, &phc2)).await.unwrap_or(false);
        if ok {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(key, std::time::Instant::now() + self.ttl);
        }
        ok
    }

    /// Hashes a new password.
    pub async fn hash(&self, plain: &SecretString) -> Result<String> {
        let plain = plain.clone();
        self.run(move || hash(&plain)).await.unwrap_or_else(|| Err(MailboxError::Commit("hashing pool stopped".into())))
    }
}

#[cfg(test)]
mod checker_tests {
    use super::*;

    #[tokio::test]
    async fn caches_only_successes_and_follows_password_changes() {
        let c = Checker::new(1, std::time::Duration::from_secs(60));
        let pw = SecretString::from("s3cret");
        let h = c.hash(&pw).await.unwrap();
        assert!(c.verify(&pw, &h).await);
        assert!(c.verify(&pw, &h).await, "cached");
        assert!(!c.verify(&SecretString::from("wrong"), &h).await);
        // A new hash (password changed) is never answered from the old entry.
        let other = c.hash(&SecretString::from("new")).await.unwrap();
        assert!(!c.verify(&pw, &other).await);
    }
}

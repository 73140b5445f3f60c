//! Password hashing with argon2id. Plain passwords exist only inside [`secrecy::SecretString`]
//! so they never reach a log line by accident.

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use password_hash::{SaltString, rand_core::OsRng};
use secrecy::{ExposeSecret, SecretString};

use crate::error::{MailboxError, Result};

/// Hashes a plain password into a PHC string (`$argon2id$v=19$...`).
pub fn hash(plain: &SecretString) -> Result<String> {
    if plain.expose_secret().is_empty() {
        return Err(MailboxError::invalid("password", "must not be empty"));
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(plain.expose_secret().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| MailboxError::invalid("password", e.to_string()))
}

/// Accepts a PHC hash given by an administrator (for example from a Kubernetes Secret) after
/// checking that it parses and uses an algorithm we verify.
pub fn check_hash(phc: &str) -> Result<String> {
    let parsed = PasswordHash::new(phc).map_err(|e| MailboxError::invalid("password hash", e.to_string()))?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(MailboxError::invalid("password hash", "only argon2 hashes are accepted"));
    }
    Ok(phc.to_string())
}

/// Verifies a password against a stored PHC string in constant time.
pub fn verify(plain: &SecretString, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default().verify_password(plain.expose_secret().as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let pw = SecretString::from("correct horse");
        let h = hash(&pw).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify(&pw, &h));
        assert!(!verify(&SecretString::from("wrong"), &h));
        assert_eq!(check_hash(&h).unwrap(), h);
        assert!(check_hash("plain").is_err());
        assert!(hash(&SecretString::from("")).is_err());
    }
}

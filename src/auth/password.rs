//! Password hashing: argon2id with OWASP's parameters (19 MiB, 2 passes,
//! 1 lane), run on the blocking pool so a burst of logins never stalls the
//! async executor.

use std::sync::LazyLock;

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use secrecy::{ExposeSecret, SecretString};

fn argon2() -> Argon2<'static> {
    // OWASP Password Storage Cheat Sheet: m=19456 KiB, t=2, p=1.
    let params = Params::new(19_456, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A hash of a password nobody has, verified against when an account does
/// not exist so that the answer takes as long as for one that does.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    hash_blocking("not a real password, only for equal timing").unwrap_or_default()
});

fn hash_blocking(password: &str) -> Result<String, argon2::password_hash::Error> {
    Ok(argon2().hash_password(password.as_bytes())?.to_string())
}

/// At most this many hashes run at once (each takes 19 MiB and a core for
/// tens of milliseconds); the rest wait their turn.
static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// Hashes a password (PHC string format).
pub async fn hash(password: SecretString) -> anyhow::Result<String> {
    let _permit = HASHING.acquire().await?;
    tokio::task::spawn_blocking(move || hash_blocking(password.expose_secret()))
        .await?
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
}

/// Checks a password against a stored hash; `None` burns the same time
/// against a dummy hash and answers false.
pub async fn verify(password: SecretString, stored: Option<String>) -> anyhow::Result<bool> {
    let _permit = HASHING.acquire().await?;
    tokio::task::spawn_blocking(move || {
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| DUMMY_HASH.clone());
        let Ok(parsed) = PasswordHash::new(&stored) else {
            return false;
        };
        let matches = argon2()
            .verify_password(password.expose_secret().as_bytes(), &parsed)
            .is_ok();
        known && matches
    })
    .await
    .map_err(Into::into)
}

/// Rules for a new password.
pub fn check_strength(password: &str) -> Result<(), &'static str> {
    let length = password.chars().count();
    if length < 10 {
        return Err("must be at least 10 characters");
    }
    if length > 256 {
        return Err("must be at most 256 characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let stored = hash(SecretString::from("correct horse battery"))
            .await
            .unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(
            verify(
                SecretString::from("correct horse battery"),
                Some(stored.clone())
            )
            .await
            .unwrap()
        );
        assert!(
            !verify(SecretString::from("wrong horse battery"), Some(stored))
                .await
                .unwrap()
        );
        assert!(!verify(SecretString::from("anything"), None).await.unwrap());
    }
}

//! AES-256-GCM sealing of everything the engine stores: credentials, queued jobs, results.
//!
//! Keys are never used directly from configuration: a [`SealKey`] is derived with HKDF-SHA256
//! from a root secret and a purpose label (and, for credentials, the session's own secret), so
//! a key for one purpose or one session opens nothing else. Each seal uses a fresh random
//! 96-bit nonce stored in front of the ciphertext; the 16-byte tag makes tampering detectable.

use aes_gcm::aead::{Aead, Generate, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use bytes::Bytes;
use hkdf::Hkdf;
use sha2::Sha256;

use crate::EngineError;

const NONCE_LEN: usize = 12;

/// Fill a buffer from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The OS RNG failing means the machine cannot do cryptography at all; nothing sane to do.
    getrandom::fill(&mut buf).expect("operating system random number generator failed");
    buf
}

/// A random identifier as lowercase hex (`bytes` random bytes → `2 * bytes` characters).
pub fn random_id<const N: usize>() -> String {
    hex::encode(random_bytes::<N>())
}

/// A 256-bit key bound to one purpose; cheap to clone.
#[derive(Clone)]
pub struct SealKey {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    /// Derive a key from `root` (the server secret), an optional `salt` (a session secret)
    /// and a `purpose` label such as `"jobs"` or `"credentials"`.
    pub fn derive(root: &[u8], salt: Option<&[u8]>, purpose: &str) -> Self {
        let hk = Hkdf::<Sha256>::new(salt, root);
        let mut okm = [0u8; 32];
        hk.expand(purpose.as_bytes(), &mut okm)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let cipher = Aes256Gcm::new(&okm.into());
        okm.fill(0);
        SealKey { cipher }
    }

    /// Encrypt and authenticate `plain`; `aad` binds the blob to its context (a job id, a
    /// session id) so a sealed blob cannot be replayed elsewhere.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Bytes {
        let nonce = Nonce::generate();
        let ct = self
            .cipher
            .encrypt(&nonce, aes_gcm::aead::Payload { msg: plain, aad })
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(nonce.as_slice());
        out.extend_from_slice(&ct);
        Bytes::from(out)
    }

    /// Verify and decrypt a blob made by [`SealKey::seal`] with the same key and `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, EngineError> {
        if sealed.len() < NONCE_LEN {
            return Err(EngineError::Unseal);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(nonce).map_err(|_| EngineError::Unseal)?;
        self.cipher
            .decrypt(&nonce, aes_gcm::aead::Payload { msg: ct, aad })
            .map_err(|_| EngineError::Unseal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper_detection() {
        let key = SealKey::derive(b"root secret", Some(b"session"), "credentials");
        let sealed = key.seal(b"aad", b"hunter2");
        assert!(
            !sealed.windows(7).any(|w| w == b"hunter2"),
            "plaintext leaked"
        );
        assert_eq!(key.open(b"aad", &sealed).unwrap(), b"hunter2");

        let mut bad = sealed.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(key.open(b"aad", &bad).is_err(), "tampered blob opened");
        assert!(key.open(b"other aad", &sealed).is_err(), "aad not bound");
        assert!(key.open(b"aad", &sealed[..5]).is_err(), "short blob opened");
    }

    #[test]
    fn keys_are_separated_by_salt_and_purpose() {
        let a = SealKey::derive(b"root", Some(b"session-a"), "credentials");
        let b = SealKey::derive(b"root", Some(b"session-b"), "credentials");
        let jobs = SealKey::derive(b"root", None, "jobs");
        let sealed = a.seal(b"", b"secret");
        assert!(b.open(b"", &sealed).is_err());
        assert!(jobs.open(b"", &sealed).is_err());
        assert_eq!(a.open(b"", &sealed).unwrap(), b"secret");
    }

    #[test]
    fn nonces_differ() {
        let key = SealKey::derive(b"root", None, "jobs");
        assert_ne!(key.seal(b"", b"x"), key.seal(b"", b"x"));
    }
}

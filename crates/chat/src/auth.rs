//! Passwords (Argon2id, hashed off the async threads) and tokens (JWT: HS256 by default,
//! RS256/EdDSA with PEM keys as an option).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use http::StatusCode;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::JwtKeys;
use crate::error::ChatError;

/// What a token says: the user id (`sub`, a decimal string as JWT requires) and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default)]
    pub username: String,
    pub exp: u64,
    #[serde(default)]
    pub iat: u64,
}

impl Claims {
    pub fn user_id(&self) -> Option<i64> {
        self.sub.parse().ok()
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Expired,
    Invalid,
}

pub struct Auth {
    algorithm: Algorithm,
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid JWT key: {0}")]
pub struct KeyError(String);

impl Auth {
    pub fn new(keys: &JwtKeys, ttl: Duration) -> Result<Self, KeyError> {
        let bad = |e: jsonwebtoken::errors::Error| KeyError(e.to_string());
        let (algorithm, encoding, decoding) = match keys {
            JwtKeys::Hs256(secret) => {
                if secret.len() < 32 {
                    return Err(KeyError("an HS256 secret needs at least 32 bytes".into()));
                }
                (
                    Algorithm::HS256,
                    Some(EncodingKey::from_secret(secret)),
                    DecodingKey::from_secret(secret),
                )
            }
            JwtKeys::Asymmetric {
                algorithm,
                public_pem,
                private_pem,
            } => match algorithm {
                Algorithm::RS256 => (
                    *algorithm,
                    private_pem
                        .as_deref()
                        .map(EncodingKey::from_rsa_pem)
                        .transpose()
                        .map_err(bad)?,
                    DecodingKey::from_rsa_pem(public_pem).map_err(bad)?,
                ),
                Algorithm::EdDSA => (
                    *algorithm,
                    private_pem
                        .as_deref()
                        .map(EncodingKey::from_ed_pem)
                        .transpose()
                        .map_err(bad)?,
                    DecodingKey::from_ed_pem(public_pem).map_err(bad)?,
                ),
                other => return Err(KeyError(format!("unsupported algorithm {other:?}"))),
            },
        };
        let mut validation = Validation::new(algorithm);
        // Expiry is exact: a session whose token ran out is closed at that moment.
        validation.leeway = 0;
        Ok(Auth {
            algorithm,
            encoding,
            decoding,
            validation,
            ttl,
        })
    }

    /// Sign a token for the user.
    pub fn issue(&self, user_id: i64, username: &str) -> Result<String, ChatError> {
        let Some(key) = &self.encoding else {
            return Err(ChatError::new(
                StatusCode::NOT_IMPLEMENTED,
                "This server verifies tokens but does not issue them",
            ));
        };
        let now = unix_now();
        let claims = Claims {
            sub: user_id.to_string(),
            username: username.to_owned(),
            iat: now,
            exp: now + self.ttl.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, key).map_err(|e| {
            tracing::error!(error = %e, "cannot sign token");
            ChatError::internal()
        })
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) if data.claims.user_id().is_some() => Ok(data.claims),
            Ok(_) => Err(TokenError::Invalid),
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) => {
                Err(TokenError::Expired)
            }
            Err(_) => Err(TokenError::Invalid),
        }
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Argon2id PHC string of `password` (slow on purpose: runs on the blocking pool).
pub async fn hash_password(password: String) -> Result<String, ChatError> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
    })
    .await
    .map_err(|_| ChatError::internal())?
    .map_err(|e| {
        tracing::error!(error = %e, "cannot hash password");
        ChatError::internal()
    })
}

/// A valid hash of a random password, computed once: checked against for unknown
/// usernames so a login for one costs as much as for a real account.
pub async fn decoy_hash() -> String {
    static DECOY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    DECOY
        .get_or_init(|| async {
            let mut random = [0u8; 16];
            let _ = getrandom::fill(&mut random);
            hash_password(hex::encode(random)).await.unwrap_or_default()
        })
        .await
        .clone()
}

/// Whether `password` matches the stored PHC string (a malformed hash never matches).
pub async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_round_trip() {
        let hash = hash_password("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse".into(), hash.clone()).await);
        assert!(!verify_password("wrong".into(), hash).await);
        assert!(!verify_password("x".into(), "not a hash".into()).await);
    }

    #[test]
    fn tokens_round_trip_and_expire() {
        let auth = Auth::new(&JwtKeys::Hs256(vec![7; 32]), Duration::from_secs(60)).unwrap();
        let token = auth.issue(42, "alice").unwrap();
        let claims = auth.verify(&token).unwrap();
        assert_eq!(
            (claims.user_id(), claims.username.as_str()),
            (Some(42), "alice")
        );
        assert_eq!(auth.verify("garbage"), Err(TokenError::Invalid));
        let other = Auth::new(&JwtKeys::Hs256(vec![8; 32]), Duration::from_secs(60)).unwrap();
        assert_eq!(
            other.verify(&token),
            Err(TokenError::Invalid),
            "another key"
        );
        let expired = Auth::new(&JwtKeys::Hs256(vec![7; 32]), Duration::ZERO).unwrap();
        let token = expired.issue(42, "alice").unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(auth.verify(&token), Err(TokenError::Expired));
        assert!(Auth::new(&JwtKeys::Hs256(vec![1; 8]), Duration::ZERO).is_err());
    }
}

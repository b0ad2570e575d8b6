//! Credentials handling. A `credentials` event is sealed with the session's key and stored
//! under `<platform>:<actor id>`; a message whose platform keeps connections (or whose verb
//! needs credentials) gets the session's stored credentials attached for its job. The
//! credentials never travel in the activity itself.

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;

use super::{Kind, Rejection, Request, Stage, StageContext};

pub struct Credentials;

/// The store key for a platform and actor (Sockethub's `buildCredentialsKey`).
pub fn store_key(platform: &str, actor: &str) -> String {
    format!("{platform}:{actor}")
}

#[async_trait]
impl Stage for Credentials {
    fn name(&self) -> &'static str {
        "credentials"
    }

    async fn run(&self, req: &mut Request, cx: &StageContext<'_>) -> Result<(), Rejection> {
        let Some(platform) = req.platform else {
            return Err(Rejection("unable to resolve platform from @context".into()));
        };
        let key = store_key(platform, req.actor_id());
        match req.kind {
            Kind::Credentials => {
                let object = req.activity.get("object").cloned().unwrap_or(Value::Null);
                let plain = serde_json::to_vec(&object)?;
                let sealed = cx.session_key().seal(key.as_bytes(), &plain);
                cx.store
                    .put(cx.session_id, &key, sealed, cx.credentials_ttl)
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, "credential store failed");
                        Rejection("failed to store credentials".into())
                    })?;
                Ok(())
            }
            Kind::Message => {
                let Some(manifest) = cx.validator.manifest(platform) else {
                    return Ok(());
                };
                let required = manifest.require_credentials.contains(&req.verb());
                if !(manifest.persist || required) {
                    return Ok(());
                }
                let stored: Option<Bytes> =
                    cx.store.get(cx.session_id, &key).await.map_err(|e| {
                        tracing::error!(error = %e, "credential store failed");
                        Rejection(format!("credentials not found for {key}"))
                    })?;
                match stored {
                    Some(sealed) => {
                        let plain = cx
                            .session_key()
                            .open(key.as_bytes(), &sealed)
                            .map_err(|_| Rejection(format!("invalid credentials for {key}")))?;
                        req.credentials = Some(serde_json::from_slice(&plain)?);
                        Ok(())
                    }
                    None if required => Err(Rejection(format!("credentials not found for {key}"))),
                    None => Ok(()),
                }
            }
        }
    }
}

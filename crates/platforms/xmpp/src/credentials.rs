//! The credentials object (`userAddress`, `password`, `resource`, and the optional
//! `server`, `port`, `directTls` overrides) turned into what a login needs.

use serde_json::Value;
use switchboard_platform::PlatformError;
use tokio_xmpp::jid::{BareJid, Jid};

/// The standard client port (STARTTLS) and the XEP-0368 direct TLS port.
const STARTTLS_PORT: u16 = 5222;
const DIRECT_TLS_PORT: u16 = 5223;

#[derive(Clone)]
pub struct Credentials {
    /// The full JID asked for (`userAddress/resource`), or the bare one without a resource.
    pub jid: Jid,
    pub password: String,
    /// Host to connect to: `server`, else the JID's domain (no SRV lookup).
    pub host: String,
    pub port: u16,
    /// TLS from the first byte instead of STARTTLS.
    pub direct_tls: bool,
}

impl std::fmt::Debug for Credentials {
    // Never print the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("jid", &self.jid)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("direct_tls", &self.direct_tls)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn from_object(object: &Value) -> Result<Credentials, PlatformError> {
        let text = |k: &str| object.get(k).and_then(Value::as_str).unwrap_or("");
        let address = text("userAddress");
        let bare = BareJid::new(address)
            .map_err(|e| PlatformError::new(format!("invalid userAddress {address:?}: {e}")))?;
        if bare.node().is_none() {
            return Err(PlatformError::new(format!(
                "invalid userAddress {address:?}: expected user@domain"
            )));
        }
        let jid = match text("resource") {
            "" => Jid::from(bare.clone()),
            r => Jid::from(
                bare.with_resource_str(r)
                    .map_err(|e| PlatformError::new(format!("invalid resource {r:?}: {e}")))?,
            ),
        };
        let direct_tls = object.get("directTls").and_then(Value::as_bool);
        let port = object.get("port").and_then(Value::as_u64);
        let direct_tls = direct_tls.unwrap_or(port == Some(u64::from(DIRECT_TLS_PORT)));
        let port = match port {
            Some(p) => {
                u16::try_from(p).map_err(|_| PlatformError::new(format!("invalid port {p}")))?
            }
            None if direct_tls => DIRECT_TLS_PORT,
            None => STARTTLS_PORT,
        };
        let host = match text("server") {
            "" => bare.domain().as_str().to_owned(),
            s => s.to_owned(),
        };
        Ok(Credentials {
            jid,
            password: text("password").to_owned(),
            host,
            port,
            direct_tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_overrides() {
        let c = Credentials::from_object(&json!({
            "type": "credentials", "userAddress": "alice@localhost", "password": "pw",
            "resource": "phone"
        }))
        .unwrap();
        assert_eq!(c.jid.to_string(), "alice@localhost/phone");
        assert_eq!(
            (c.host.as_str(), c.port, c.direct_tls),
            ("localhost", 5222, false)
        );
        assert!(!format!("{c:?}").contains("pw"));

        let c = Credentials::from_object(&json!({
            "userAddress": "alice@example.org", "password": "pw", "resource": "",
            "server": "127.0.0.1", "port": 5223
        }))
        .unwrap();
        assert_eq!(c.jid.to_string(), "alice@example.org");
        assert_eq!(
            (c.host.as_str(), c.port, c.direct_tls),
            ("127.0.0.1", 5223, true)
        );
    }

    #[test]
    fn bad_addresses_are_clear_errors() {
        for bad in ["", "localhost", "a@b@c", "@localhost"] {
            let e = Credentials::from_object(&json!({"userAddress": bad, "password": "x"}))
                .unwrap_err();
            assert!(e.0.starts_with("invalid userAddress"), "{bad}: {e}");
        }
    }
}

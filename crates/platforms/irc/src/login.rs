//! A login: the credentials object Sockethub clients send for IRC, checked and completed
//! with Sockethub's defaults (TLS on, port 6697 with TLS and 6667 without).
//!
//! `password` (or `token`) goes to the server as `PASS`, unless `saslMechanism` asks for
//! SASL: `PLAIN` with the password (or token) for the `username` (default: the nick), or
//! `OAUTHBEARER` with the token.

use serde_json::Value;
use switchboard_platform::PlatformError;

use crate::names::{check_nick, single_line};

#[derive(Clone)]
pub enum Sasl {
    Plain { user: String, password: String },
    OAuthBearer { token: String },
}

impl Sasl {
    pub fn mechanism(&self) -> &'static str {
        match self {
            Sasl::Plain { .. } => "PLAIN",
            Sasl::OAuthBearer { .. } => "OAUTHBEARER",
        }
    }

    /// The client's first (and only) SASL message, before base64.
    pub fn payload(&self) -> Vec<u8> {
        match self {
            Sasl::Plain { user, password } => format!("{user}\0{user}\0{password}").into_bytes(),
            Sasl::OAuthBearer { token } => {
                format!("n,,\x01auth=Bearer {token}\x01\x01").into_bytes()
            }
        }
    }
}

#[derive(Clone)]
pub struct Login {
    pub nick: String,
    pub username: String,
    pub realname: String,
    /// The server as the client named it: also the `@server` part of every id.
    pub server: String,
    pub port: u16,
    pub secure: bool,
    /// Sent as `PASS` (when not using SASL).
    pub password: Option<String>,
    pub sasl: Option<Sasl>,
}

fn text<'a>(creds: &'a Value, key: &str) -> Result<Option<&'a str>, PlatformError> {
    match creds.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            single_line(key, s)?;
            Ok(Some(s.as_str()).filter(|s| !s.is_empty()))
        }
        Some(_) => Err(PlatformError::new(format!(
            "credentials {key} must be a string"
        ))),
    }
}

impl Login {
    /// The login described by credentials object `creds`, for the activity's `actor`.
    pub fn from_credentials(creds: &Value, actor: &Value) -> Result<Login, PlatformError> {
        let nick = text(creds, "nick")?
            .ok_or_else(|| PlatformError::new("credentials must name a nick"))?;
        check_nick(nick)?;
        let server = text(creds, "server")?
            .ok_or_else(|| PlatformError::new("credentials must name a server"))?;
        if server.contains([' ', '@', '/']) {
            return Err(PlatformError::new(format!(
                "invalid server name {server:?}"
            )));
        }
        let secure = creds.get("secure").and_then(Value::as_bool).unwrap_or(true);
        let port = match creds.get("port") {
            None | Some(Value::Null) => {
                if secure {
                    6697
                } else {
                    6667
                }
            }
            Some(p) => p
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|&p| p > 0)
                .ok_or_else(|| PlatformError::new(format!("invalid port {p}")))?,
        };
        let username = text(creds, "username")?.unwrap_or(nick);
        if username.contains([' ', '@']) {
            return Err(PlatformError::new(format!("invalid username {username:?}")));
        }
        let realname = match actor.get("name").and_then(Value::as_str) {
            Some(name) if !name.is_empty() => {
                single_line("actor name", name)?;
                name
            }
            _ => nick,
        };
        let password = text(creds, "password")?;
        let token = text(creds, "token")?;
        let secret = password.or(token);
        let mechanism = text(creds, "saslMechanism")?.or_else(|| {
            creds
                .get("sasl")
                .and_then(Value::as_bool)
                .filter(|&on| on)
                .map(|_| "PLAIN")
        });
        let sasl = match mechanism {
            None => None,
            Some("PLAIN") => Some(Sasl::Plain {
                user: username.to_owned(),
                password: secret
                    .ok_or_else(|| PlatformError::new("SASL PLAIN needs a password or token"))?
                    .to_owned(),
            }),
            Some("OAUTHBEARER") => Some(Sasl::OAuthBearer {
                token: token
                    .ok_or_else(|| PlatformError::new("SASL OAUTHBEARER needs a token"))?
                    .to_owned(),
            }),
            Some(other) => {
                return Err(PlatformError::new(format!(
                    "unsupported saslMechanism {other:?} (PLAIN or OAUTHBEARER)"
                )));
            }
        };
        Ok(Login {
            nick: nick.to_owned(),
            username: username.to_owned(),
            realname: realname.to_owned(),
            server: server.to_owned(),
            port,
            secure,
            password: if sasl.is_some() {
                None
            } else {
                secret.map(str::to_owned)
            },
            sasl,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_follow_sockethub() {
        let l = Login::from_credentials(&json!({"nick": "ann", "server": "irc.x"}), &json!({}))
            .unwrap();
        assert!(l.secure);
        assert_eq!(l.port, 6697);
        assert_eq!((l.username.as_str(), l.realname.as_str()), ("ann", "ann"));
        let l = Login::from_credentials(
            &json!({"nick": "ann", "server": "irc.x", "secure": false, "password": "pw"}),
            &json!({"name": "Ann Example"}),
        )
        .unwrap();
        assert_eq!((l.port, l.password.as_deref()), (6667, Some("pw")));
        assert_eq!(l.realname, "Ann Example");
    }

    #[test]
    fn sasl_mechanisms() {
        let l = Login::from_credentials(
            &json!({"nick": "ann", "server": "s", "password": "pw", "saslMechanism": "PLAIN"}),
            &json!({}),
        )
        .unwrap();
        assert!(l.password.is_none());
        assert_eq!(l.sasl.unwrap().payload(), b"ann\0ann\0pw");
        let e = Login::from_credentials(
            &json!({"nick": "ann", "server": "s", "password": "pw", "saslMechanism": "OAUTHBEARER"}),
            &json!({}),
        );
        assert!(e.is_err());
    }

    #[test]
    fn injection_in_credentials_is_refused() {
        for creds in [
            json!({"nick": "ann\r\nQUIT", "server": "s"}),
            json!({"nick": "ann", "server": "s", "password": "pw\r\nQUIT"}),
            json!({"nick": "ann", "server": "s", "username": "a b"}),
            json!({"nick": "ann", "server": "s", "port": 70000}),
        ] {
            assert!(
                Login::from_credentials(&creds, &json!({})).is_err(),
                "{creds}"
            );
        }
    }
}

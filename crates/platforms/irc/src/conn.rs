//! Opening a connection: TCP (and TLS when the login is secure), then registration —
//! IRCv3 capability negotiation, SASL, `PASS`/`NICK`/`USER` — until the server welcomes
//! us (001) or says why not.

use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt;
use irc_proto::command::CapSubCommand;
use irc_proto::{Command, Message};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

use crate::lines::LineCodec;
use crate::login::Login;

/// Capabilities requested when the server offers them (`sasl` only when the login uses it).
const WANTED: &[&str] = &[
    "echo-message",
    "labeled-response",
    "batch",
    "server-time",
    "message-tags",
];
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REGISTER_TIMEOUT: Duration = Duration::from_secs(20);

pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

pub type Reader = FramedRead<ReadHalf<Box<dyn Io>>, LineCodec>;
pub type Writer = WriteHalf<Box<dyn Io>>;

/// A registered connection.
pub struct Link {
    pub reader: Reader,
    pub writer: Writer,
    /// The nick the server welcomed us with.
    pub nick: String,
    /// Capabilities the server acknowledged.
    pub caps: Vec<String>,
}

impl Link {
    pub fn has(&self, cap: &str) -> bool {
        self.caps.iter().any(|c| c == cap)
    }
}

/// A numeric reply's code, for known and unknown numerics alike.
pub fn numeric(msg: &Message) -> Option<(u16, &[String])> {
    match &msg.command {
        Command::Response(r, args) => Some((*r as u16, args)),
        Command::Raw(cmd, args) if cmd.len() == 3 => cmd.parse().ok().map(|c| (c, &args[..])),
        _ => None,
    }
}

/// The human text of a numeric (its last parameter).
pub fn reason(args: &[String]) -> &str {
    args.last().map_or("", String::as_str)
}

/// Write one line (CRLF added by the serialiser).
pub async fn send(w: &mut Writer, msg: &Message) -> std::io::Result<()> {
    w.write_all(msg.to_string().as_bytes()).await
}

fn raw(cmd: &str, args: &[&str]) -> Message {
    Message::from(Command::Raw(
        cmd.to_owned(),
        args.iter().map(|a| (*a).to_owned()).collect(),
    ))
}

/// Connect and register `login`. The error is what the client sees.
pub async fn open(login: &Login, accept_invalid_certs: bool) -> Result<Link, String> {
    let addr = (login.server.as_str(), login.port);
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(format!(
                "cannot connect to {}:{}: {e}",
                login.server, login.port
            ));
        }
        Err(_) => {
            return Err(format!(
                "cannot connect to {}:{}: timed out",
                login.server, login.port
            ));
        }
    };
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = if login.secure {
        let config =
            switchboard_platform::tls::client_config(accept_invalid_certs).map_err(|e| e.0)?;
        let tls = tokio::time::timeout(
            CONNECT_TIMEOUT,
            switchboard_platform::tls::connect(config, &login.server, tcp),
        )
        .await
        .map_err(|_| format!("TLS handshake with {} timed out", login.server))?
        .map_err(|e| e.0)?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (r, writer) = tokio::io::split(io);
    let mut link = Link {
        reader: FramedRead::with_capacity(r, LineCodec::default(), 2048),
        writer,
        nick: login.nick.clone(),
        caps: Vec::new(),
    };
    match tokio::time::timeout(REGISTER_TIMEOUT, register(&mut link, login)).await {
        Ok(Ok(())) => Ok(link),
        Ok(Err(e)) => {
            let _ = send(&mut link.writer, &Message::from(Command::QUIT(None))).await;
            Err(e)
        }
        Err(_) => Err(format!(
            "{} did not complete registration within {} s",
            login.server,
            REGISTER_TIMEOUT.as_secs()
        )),
    }
}

async fn register(link: &mut Link, login: &Login) -> Result<(), String> {
    let io = |e: std::io::Error| format!("connection to {} failed: {e}", login.server);
    let w = &mut link.writer;
    send(w, &raw("CAP", &["LS", "302"])).await.map_err(io)?;
    if let Some(pass) = &login.password {
        send(w, &Message::from(Command::PASS(pass.clone())))
            .await
            .map_err(io)?;
    }
    send(w, &Message::from(Command::NICK(login.nick.clone())))
        .await
        .map_err(io)?;
    send(
        w,
        &Message::from(Command::USER(
            login.username.clone(),
            "0".into(),
            login.realname.clone(),
        )),
    )
    .await
    .map_err(io)?;

    // Offered capabilities and their values (`sasl=PLAIN,EXTERNAL`).
    let mut offered: Vec<(String, String)> = Vec::new();
    let mut negotiating = true;
    while let Some(line) = link.reader.next().await {
        let line = line.map_err(io)?;
        let Ok(msg) = line.parse::<Message>() else {
            tracing::debug!(%line, "unparsable line during registration");
            continue;
        };
        let w = &mut link.writer;
        match &msg.command {
            Command::PING(token, _) => {
                send(w, &Message::from(Command::PONG(token.clone(), None)))
                    .await
                    .map_err(io)?;
            }
            Command::ERROR(text) => return Err(format!("{}: {text}", login.server)),
            Command::CAP(_, CapSubCommand::LS, a, b) => {
                let more = b.is_some();
                let list = b.as_ref().or(a.as_ref()).map_or("", String::as_str);
                offered.extend(list.split(' ').filter(|s| !s.is_empty()).map(|c| {
                    let (name, value) = c.split_once('=').unwrap_or((c, ""));
                    (name.to_owned(), value.to_owned())
                }));
                if more {
                    continue;
                }
                let offers = |c: &str| offered.iter().any(|(o, _)| o == c);
                if let Some(sasl) = &login.sasl {
                    let Some((_, mechs)) = offered.iter().find(|(o, _)| o == "sasl") else {
                        return Err(format!(
                            "{} does not offer SASL authentication",
                            login.server
                        ));
                    };
                    // CAP 302 servers list their mechanisms; an empty list means unknown.
                    if !mechs.is_empty() && !mechs.split(',').any(|m| m == sasl.mechanism()) {
                        return Err(format!(
                            "{} does not offer SASL {} (it offers {mechs})",
                            login.server,
                            sasl.mechanism()
                        ));
                    }
                }
                let mut req: Vec<&str> = WANTED.iter().copied().filter(|c| offers(c)).collect();
                if login.sasl.is_some() {
                    req.push("sasl");
                }
                if req.is_empty() {
                    negotiating = false;
                    send(w, &raw("CAP", &["END"])).await.map_err(io)?;
                } else {
                    send(w, &raw("CAP", &["REQ", &req.join(" ")]))
                        .await
                        .map_err(io)?;
                }
            }
            Command::CAP(_, CapSubCommand::ACK, a, b) => {
                let list = b.as_ref().or(a.as_ref()).map_or("", String::as_str);
                link.caps
                    .extend(list.split(' ').filter(|s| !s.is_empty()).map(str::to_owned));
                let sasl_acked = link.caps.iter().any(|c| c == "sasl");
                let w = &mut link.writer;
                if let Some(sasl) = login.sasl.as_ref().filter(|_| sasl_acked) {
                    send(
                        w,
                        &Message::from(Command::AUTHENTICATE(sasl.mechanism().into())),
                    )
                    .await
                    .map_err(io)?;
                } else if login.sasl.is_some() {
                    return Err(format!("{} refused the sasl capability", login.server));
                } else {
                    negotiating = false;
                    send(w, &raw("CAP", &["END"])).await.map_err(io)?;
                }
            }
            Command::CAP(_, CapSubCommand::NAK, _, _) => {
                if login.sasl.is_some() {
                    return Err(format!("{} refused the sasl capability", login.server));
                }
                negotiating = false;
                send(w, &raw("CAP", &["END"])).await.map_err(io)?;
            }
            Command::AUTHENTICATE(data) if data == "+" => {
                let Some(sasl) = &login.sasl else { continue };
                let encoded = base64::engine::general_purpose::STANDARD.encode(sasl.payload());
                // AUTHENTICATE carries at most 400 bytes; a final exact chunk is closed by "+".
                let chunks: Vec<&str> = encoded
                    .as_bytes()
                    .chunks(400)
                    .map(|c| std::str::from_utf8(c).unwrap_or_default())
                    .collect();
                for chunk in &chunks {
                    send(
                        w,
                        &Message::from(Command::AUTHENTICATE((*chunk).to_owned())),
                    )
                    .await
                    .map_err(io)?;
                }
                if encoded.len() % 400 == 0 {
                    send(w, &Message::from(Command::AUTHENTICATE("+".into())))
                        .await
                        .map_err(io)?;
                }
            }
            _ => match numeric(&msg) {
                Some((1, args)) => {
                    if let Some(nick) = args.first() {
                        link.nick = nick.clone();
                    }
                    if negotiating {
                        tracing::debug!("welcomed before capability negotiation ended");
                    }
                    return Ok(());
                }
                // RPL_SASLSUCCESS
                Some((903, _)) => {
                    negotiating = false;
                    send(w, &raw("CAP", &["END"])).await.map_err(io)?;
                }
                // ERR_NICKLOCKED, ERR_SASLFAIL, ERR_SASLTOOLONG, ERR_SASLABORTED, RPL_SASLMECHS
                Some((902 | 904 | 905 | 906 | 908, args)) => {
                    return Err(format!("SASL authentication failed: {}", reason(args)));
                }
                Some((code @ (431..=437 | 464 | 465), args)) => {
                    let nick = args.get(1).map_or(login.nick.as_str(), String::as_str);
                    return Err(if code == 464 || code == 465 {
                        format!("{}: {}", login.server, reason(args))
                    } else {
                        format!("{nick}: {}", reason(args))
                    });
                }
                _ => {}
            },
        }
    }
    Err(format!(
        "{} closed the connection during registration",
        login.server
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numerics_known_and_unknown() {
        let m: Message = ":s 482 me #c :You're not channel operator".parse().unwrap();
        assert_eq!(
            numeric(&m).map(|(c, a)| (c, reason(a))),
            Some((482, "You're not channel operator"))
        );
        let m: Message = ":s 999 me x :odd".parse().unwrap();
        assert_eq!(numeric(&m).map(|(c, _)| c), Some(999));
        assert_eq!(irc_proto::Response::ERR_NICKNAMEINUSE as u16, 433);
    }
}

//! The connection task: one per login, owning the socket. It sends what jobs ask for
//! (through flood control), answers each job only once the server has accepted or refused
//! it, turns incoming lines into activities for the sessions, keeps the connection alive,
//! and reconnects with backoff after a drop, rejoining the channels and telling the
//! sessions.
//!
//! ## How an ack is decided
//! The worker runs one job at a time, so at most one request is pending. Its lines go out,
//! and then the server is asked for a definite end of its response:
//! - with IRCv3 `labeled-response`, the request's last line carries a `label` tag and the
//!   response ends with the labeled reply, the labeled `BATCH`, or `ACK`;
//! - otherwise a `PING :sb<n>` follows the request. The server handles one client's lines
//!   in order, so every reply to the request (its echo, or its error numeric) precedes
//!   that PONG: the PONG closes the response window; it is not itself the ack.
//!
//! Within that window an error numeric (4xx/5xx, or an IRCv3 `FAIL`) makes the job fail
//! with the server's reason; JOIN, PART and NICK succeed only if the server echoed them;
//! TOPIC, PRIVMSG and NOTICE succeed when the server answered without an error (and with
//! `echo-message`, the echo is the proof of delivery). No answer within
//! [`ANSWER_TIMEOUT`] fails the job.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use futures_util::StreamExt;
use irc_proto::message::Tag;
use irc_proto::{Command, Message, Prefix};
use serde_json::json;
use switchboard_platform::WorkerContext;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::conn::{self, Link, numeric, reason};
use crate::flood::Bucket;
use crate::incoming;
use crate::lines::{UNKNOWN_MASK, message_lines, text_budget};
use crate::login::Login;
use crate::names::{fold, irc_eq, person, room, service};

/// How long the server has to answer a request.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);
/// Silence after which we PING the server, and after which (plus a grace) the connection
/// is taken for dead.
const IDLE_PING: Duration = Duration::from_secs(60);
const IDLE_DEAD: Duration = Duration::from_secs(90);
/// Reconnect attempts after a drop before the instance gives up (fatal).
const RECONNECT_ATTEMPTS: u32 = 8;

/// What a message sends as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Say {
    Privmsg,
    Action,
    Notice,
}

/// One thing a job asks of the connection.
#[derive(Debug, Clone)]
pub enum Op {
    Join(String),
    Part(String),
    Nick(String),
    Topic(String, String),
    Say {
        target: String,
        how: Say,
        text: String,
    },
    Names(String),
}

/// A successful op's result: members for NAMES, nothing else otherwise.
pub type Outcome = Result<Vec<String>, String>;

pub enum Cmd {
    Op(Op, oneshot::Sender<Outcome>),
    Quit(oneshot::Sender<()>),
}

/// The handle a platform keeps; dropping it ends the connection.
pub struct Client {
    pub server: String,
    cmds: mpsc::Sender<Cmd>,
}

impl Client {
    /// Start the connection task on an open link.
    pub fn start(link: Link, login: Login, accept_invalid_certs: bool, ctx: WorkerContext) -> Self {
        let (cmds, rx) = mpsc::channel(16);
        let server = login.server.clone();
        let state = State::new(login, accept_invalid_certs, ctx);
        tokio::spawn(state.run(link, rx));
        Client { server, cmds }
    }

    /// Whether the connection task is still there (it ends on disconnect or a fatal drop).
    pub fn is_alive(&self) -> bool {
        !self.cmds.is_closed()
    }

    /// Run `op` and wait for the server's verdict.
    pub async fn run(&self, op: Op) -> Outcome {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(Cmd::Op(op, tx)).await.is_err() {
            return Err("not connected to the irc server".into());
        }
        match tokio::time::timeout(ANSWER_TIMEOUT + Duration::from_secs(5), rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err("connection to the irc server closed".into()),
            Err(_) => Err("the irc server did not answer".into()),
        }
    }

    /// Say goodbye and close.
    pub async fn quit(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(Cmd::Quit(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
    }
}

/// The request waiting for its answer.
struct Pending {
    op: Op,
    label: Option<String>,
    token: Option<String>,
    batch: Option<String>,
    /// The server echoed the op (JOIN, PART, NICK, TOPIC, or the message with echo-message).
    echoed: bool,
    error: Option<String>,
    members: Vec<String>,
    reply: oneshot::Sender<Outcome>,
    deadline: Instant,
}

impl Pending {
    fn outcome(self) -> (oneshot::Sender<Outcome>, Outcome) {
        let outcome = match (self.error, &self.op) {
            (Some(e), _) => Err(e),
            (None, Op::Join(_) | Op::Part(_) | Op::Nick(_)) if !self.echoed => Err(format!(
                "the irc server did not confirm the {}",
                match self.op {
                    Op::Join(_) => "join",
                    Op::Part(_) => "leave",
                    _ => "nick change",
                }
            )),
            (None, _) => Ok(self.members),
        };
        (self.reply, outcome)
    }
}

/// Why a link's loop ended.
enum Ended {
    Quit,
    Lost(String),
}

/// A line waiting for the writer, and whether it spends a flood-control token.
struct Queued {
    line: String,
    costs: bool,
}

/// Everything that outlives one link: who we are, where we are, what we joined.
struct State {
    login: Login,
    accept_invalid_certs: bool,
    ctx: WorkerContext,
    me: String,
    /// Our `user@host` length as relayed by the server (learned from our own JOIN).
    mask_len: usize,
    /// Joined channels, by folded name → name as joined.
    channels: BTreeMap<String, String>,
    // Per link:
    caps_echo: bool,
    caps_labels: bool,
    pending: Option<Pending>,
    /// NAMES replies being collected for channels nobody asked about (after a join).
    names: HashMap<String, Vec<String>>,
    queue: VecDeque<Queued>,
    bucket: Bucket,
    serial: u64,
    last_rx: Instant,
    pinged: bool,
}

fn line(cmd: Command) -> String {
    Message::from(cmd).to_string()
}

impl State {
    fn new(login: Login, accept_invalid_certs: bool, ctx: WorkerContext) -> Self {
        State {
            me: login.nick.clone(),
            login,
            accept_invalid_certs,
            ctx,
            mask_len: UNKNOWN_MASK,
            channels: BTreeMap::new(),
            caps_echo: false,
            caps_labels: false,
            pending: None,
            names: HashMap::new(),
            queue: VecDeque::new(),
            bucket: Bucket::new(),
            serial: 0,
            last_rx: Instant::now(),
            pinged: false,
        }
    }

    fn server(&self) -> &str {
        &self.login.server
    }

    async fn run(mut self, mut link: Link, mut cmds: mpsc::Receiver<Cmd>) {
        loop {
            self.me = link.nick.clone();
            self.caps_echo = link.has("echo-message");
            self.caps_labels = link.has("labeled-response") && link.has("batch");
            tracing::info!(server = %self.login.server, nick = %self.me, caps = ?link.caps, "irc connection registered");
            let reason = match self.drive(&mut link, &mut cmds).await {
                Ended::Quit => return,
                Ended::Lost(reason) => reason,
            };
            tracing::warn!(server = %self.login.server, %reason, "irc connection lost");
            self.reset_link(&format!("connection to the irc server lost: {reason}"));
            let lost = json!({
                "type": "disconnect",
                "actor": service(self.server()),
                "target": person(&self.me, self.server()),
                "object": {"type": "message", "content": format!("connection to the irc server lost ({reason}); reconnecting")},
            });
            self.ctx.emit(lost).await;
            match self.reconnect(&mut cmds).await {
                Some(l) => link = l,
                None => return,
            }
            let rejoin: Vec<String> = self.channels.values().cloned().collect();
            for channel in &rejoin {
                self.enqueue(line(Command::JOIN(channel.clone(), None, None)), true);
            }
            let back = json!({
                "type": "connect",
                "actor": service(self.server()),
                "target": person(&link.nick, self.server()),
                "object": {"type": "message", "content": if rejoin.is_empty() {
                    "reconnected to the irc server".to_owned()
                } else {
                    format!("reconnected to the irc server; rejoining {}", rejoin.join(", "))
                }},
            });
            self.ctx.emit(back).await;
        }
    }

    /// Forget per-link state; a pending request fails with `why`.
    fn reset_link(&mut self, why: &str) {
        if let Some(p) = self.pending.take() {
            let _ = p.reply.send(Err(why.to_owned()));
        }
        self.names.clear();
        self.queue.clear();
        self.pinged = false;
    }

    /// Try to get a new link, with exponential backoff; jobs arriving meanwhile fail at
    /// once. `None`: gave up (the sessions are told, fatally) or were asked to quit.
    async fn reconnect(&mut self, cmds: &mut mpsc::Receiver<Cmd>) -> Option<Link> {
        let mut login = self.login.clone();
        login.nick = self.me.clone();
        let mut last = String::new();
        for attempt in 0..RECONNECT_ATTEMPTS {
            let delay = Duration::from_millis(250 << attempt.min(6));
            let wake = tokio::time::sleep(delay);
            tokio::pin!(wake);
            loop {
                tokio::select! {
                    _ = &mut wake => break,
                    cmd = cmds.recv() => match cmd {
                        Some(Cmd::Op(_, reply)) => {
                            let _ = reply.send(Err("not connected: the connection to the irc server was lost; reconnecting".into()));
                        }
                        Some(Cmd::Quit(done)) => {
                            let _ = done.send(());
                            return None;
                        }
                        None => return None,
                    }
                }
            }
            match conn::open(&login, self.accept_invalid_certs).await {
                Ok(link) => return Some(link),
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "irc reconnect failed");
                    last = e;
                }
            }
        }
        self.ctx
            .fatal(format!(
                "connection to the irc server lost and {RECONNECT_ATTEMPTS} reconnect attempts failed: {last}"
            ))
            .await;
        None
    }

    fn enqueue(&mut self, line: String, costs: bool) {
        self.queue.push_back(Queued { line, costs });
    }

    /// Write queued lines the flood budget allows; the time to try again if some wait.
    async fn flush(&mut self, link: &mut Link) -> std::io::Result<Option<Instant>> {
        let mut out = String::new();
        let mut wait = None;
        while let Some(q) = self.queue.front() {
            if q.costs
                && let Err(at) = self.bucket.take()
            {
                wait = Some(at);
                break;
            }
            if let Some(q) = self.queue.pop_front() {
                out.push_str(&q.line);
            }
        }
        if !out.is_empty() {
            link.writer.write_all(out.as_bytes()).await?;
        }
        Ok(wait)
    }

    async fn drive(&mut self, link: &mut Link, cmds: &mut mpsc::Receiver<Cmd>) -> Ended {
        self.last_rx = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut send_at: Option<Instant> = None;
        loop {
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                biased;
                line = link.reader.next() => match line {
                    Some(Ok(line)) => {
                        self.last_rx = Instant::now();
                        self.pinged = false;
                        if let Err(reason) = self.on_line(&line).await {
                            return Ended::Lost(reason);
                        }
                    }
                    Some(Err(e)) => return Ended::Lost(e.to_string()),
                    None => return Ended::Lost("the server closed the connection".into()),
                },
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Op(op, reply)) => self.start(op, reply),
                    Some(Cmd::Quit(done)) => {
                        let _ = self.flush(link).await;
                        let _ = link.writer.write_all(line(Command::QUIT(Some("bye".into()))).as_bytes()).await;
                        let _ = link.writer.shutdown().await;
                        self.reset_link("disconnected");
                        let _ = done.send(());
                        return Ended::Quit;
                    }
                    None => {
                        let _ = link.writer.write_all(line(Command::QUIT(None)).as_bytes()).await;
                        return Ended::Quit;
                    }
                },
                _ = tokio::time::sleep_until(send_at.unwrap_or(far)), if send_at.is_some() => {}
                _ = tick.tick() => {
                    if let Some(p) = &self.pending && Instant::now() > p.deadline {
                        let p = self.pending.take();
                        if let Some(p) = p {
                            let _ = p.reply.send(Err(format!("the irc server did not answer within {} s", ANSWER_TIMEOUT.as_secs())));
                        }
                    }
                    let idle = self.last_rx.elapsed();
                    if idle > IDLE_DEAD {
                        return Ended::Lost(format!("no reply from the server for {} s", idle.as_secs()));
                    }
                    if idle > IDLE_PING && !self.pinged {
                        self.pinged = true;
                        self.enqueue(line(Command::PING("keepalive".into(), None)), false);
                    }
                }
            }
            match self.flush(link).await {
                Ok(at) => send_at = at,
                Err(e) => return Ended::Lost(e.to_string()),
            }
        }
    }

    /// Put a request's lines on the queue and make it the pending one.
    fn start(&mut self, op: Op, reply: oneshot::Sender<Outcome>) {
        if self.pending.is_some() {
            let _ = reply.send(Err(
                "another request is still waiting for the irc server".into()
            ));
            return;
        }
        let lines = match self.lines(&op) {
            Ok(lines) => lines,
            Err(e) => {
                let _ = reply.send(e);
                return;
            }
        };
        self.serial += 1;
        let tag = format!("sb{}", self.serial);
        let count = lines.len();
        for (i, cmd) in lines.into_iter().enumerate() {
            let mut msg = Message::from(cmd);
            if self.caps_labels && i + 1 == count {
                msg.tags = Some(vec![Tag("label".into(), Some(tag.clone()))]);
            }
            self.enqueue(msg.to_string(), true);
        }
        let token = if self.caps_labels {
            None
        } else {
            self.enqueue(line(Command::PING(tag.clone(), None)), false);
            Some(tag.clone())
        };
        self.pending = Some(Pending {
            op,
            label: self.caps_labels.then_some(tag),
            token,
            batch: None,
            echoed: false,
            error: None,
            members: Vec::new(),
            reply,
            deadline: Instant::now() + ANSWER_TIMEOUT,
        });
    }

    /// The IRC commands for `op`, or its immediate outcome.
    fn lines(&self, op: &Op) -> Result<Vec<Command>, Outcome> {
        Ok(match op {
            Op::Join(c) => {
                if self.channels.contains_key(&fold(c)) {
                    return Err(Ok(Vec::new()));
                }
                vec![Command::JOIN(c.clone(), None, None)]
            }
            Op::Part(c) => vec![Command::PART(c.clone(), None)],
            Op::Nick(n) => vec![Command::NICK(n.clone())],
            Op::Topic(c, t) => vec![Command::TOPIC(c.clone(), Some(t.clone()))],
            Op::Names(c) => vec![Command::NAMES(Some(c.clone()), None)],
            Op::Say { target, how, text } => {
                let (command, wrap) = match how {
                    Say::Privmsg => ("PRIVMSG", 0),
                    Say::Action => ("PRIVMSG", "\u{1}ACTION \u{1}".len()),
                    Say::Notice => ("NOTICE", 0),
                };
                let budget = text_budget(command, target, &self.me, self.mask_len, wrap);
                let pieces = message_lines(text, budget);
                if pieces.is_empty() {
                    return Err(Err("cannot send an empty message".into()));
                }
                pieces
                    .into_iter()
                    .map(|piece| {
                        let t = target.clone();
                        match how {
                            Say::Privmsg => Command::PRIVMSG(t, piece.to_owned()),
                            Say::Action => Command::PRIVMSG(t, format!("\u{1}ACTION {piece}\u{1}")),
                            Say::Notice => Command::NOTICE(t, piece.to_owned()),
                        }
                    })
                    .collect()
            }
        })
    }

    fn is_me(&self, msg: &Message) -> bool {
        incoming::source_nick(msg).is_some_and(|n| irc_eq(n, &self.me))
    }

    /// Handle one line from the server. `Err` ends the link.
    async fn on_line(&mut self, text: &str) -> Result<(), String> {
        let msg = match text.parse::<Message>() {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(line = %text, error = %e, "unparsable irc line");
                return Ok(());
            }
        };
        let mut complete = false;
        // Whether this line is the server's answer to the pending request (not shown).
        let mut answered = false;
        match &msg.command {
            Command::PING(token, _) => {
                // Answered ahead of everything queued: a slow queue must not time us out.
                self.queue.push_front(Queued {
                    line: line(Command::PONG(token.clone(), None)),
                    costs: false,
                });
                return Ok(());
            }
            Command::ERROR(text) => return Err(format!("server error: {text}")),
            Command::PONG(a, b) => {
                let got = b.as_deref().unwrap_or(a);
                if let Some(p) = &self.pending
                    && p.token.as_deref() == Some(got)
                {
                    complete = true;
                }
                answered = true;
            }
            _ => {}
        }

        let label = incoming::tag(&msg, "label");
        let in_batch = incoming::tag(&msg, "batch");
        if let Some(p) = self.pending.as_mut() {
            let ours = match (&p.label, label) {
                (Some(mine), Some(l)) => mine == l,
                _ => false,
            } || (p.batch.is_some() && in_batch == p.batch.as_deref());
            let foreign_label = label.is_some() && !ours;
            match &msg.command {
                Command::BATCH(r, _, _) if ours && r.starts_with('+') => {
                    p.batch = Some(r[1..].to_owned());
                    return Ok(());
                }
                Command::BATCH(r, _, _)
                    if r.starts_with('-') && p.batch.as_deref() == Some(&r[1..]) =>
                {
                    complete = true;
                }
                Command::Raw(cmd, _) if ours && cmd == "ACK" => complete = true,
                Command::Raw(cmd, args) if cmd == "FAIL" && !foreign_label => {
                    p.error.get_or_insert_with(|| reason(args).to_owned());
                    answered = true;
                }
                _ => {}
            }
            if let Some((code, args)) = numeric(&msg)
                && (400..600).contains(&code)
                && !foreign_label
            {
                let about = args.get(1).map_or("", String::as_str);
                p.error
                    .get_or_insert_with(|| format!("{} ({about}, {code})", reason(args)));
                answered = true;
            }
            if ours && p.batch.is_none() && !matches!(msg.command, Command::BATCH(..)) {
                // A labeled response of one line is complete in itself.
                complete = true;
            }
        }

        // Our own lines echoed back, and state they change.
        let from_me = self.is_me(&msg);
        let server = self.login.server.clone();
        match &msg.command {
            Command::JOIN(c, _, _) if from_me => {
                if let Some(Prefix::Nickname(_, user, host)) = &msg.prefix
                    && !host.is_empty()
                {
                    self.mask_len = user.len() + 1 + host.len();
                }
                self.channels.insert(fold(c), c.clone());
                answered |= self.confirm(|op| matches!(op, Op::Join(x) if irc_eq(x, c)));
            }
            Command::PART(c, _) if from_me => {
                self.channels.remove(&fold(c));
                answered |= self.confirm(|op| matches!(op, Op::Part(x) if irc_eq(x, c)));
            }
            Command::KICK(c, nick, _) if irc_eq(nick, &self.me) => {
                self.channels.remove(&fold(c));
            }
            Command::NICK(new) if from_me => {
                let confirmed = self.confirm(|op| matches!(op, Op::Nick(x) if irc_eq(x, new)));
                answered |= confirmed;
                self.me = new.clone();
            }
            Command::TOPIC(c, _) if from_me => {
                answered |= self.confirm(|op| matches!(op, Op::Topic(x, _) if irc_eq(x, c)));
            }
            Command::PRIVMSG(..) | Command::NOTICE(..) if from_me => {
                // echo-message: our own message back. Sessions already have it (the job's
                // reply); it only proves delivery.
                self.confirm(|op| matches!(op, Op::Say { .. }));
                answered = true;
            }
            _ => {}
        }

        // NAMES: for the pending query, or shown after a join.
        match numeric(&msg) {
            Some((353, args)) if args.len() >= 3 => {
                let channel = &args[args.len() - 2];
                let asked = matches!(&self.pending, Some(p) if matches!(&p.op, Op::Names(c) if irc_eq(c, channel)));
                let members = incoming::names(args).map(str::to_owned);
                if asked {
                    if let Some(p) = self.pending.as_mut() {
                        p.members.extend(members);
                    }
                } else {
                    self.names.entry(fold(channel)).or_default().extend(members);
                }
                answered = true;
            }
            Some((366, args)) if args.len() >= 2 => {
                if let Some(members) = self.names.remove(&fold(&args[1])) {
                    let a = json!({
                        "type": "query",
                        "actor": room(&args[1], &server),
                        "target": person(&self.me, &server),
                        "object": {"type": "attendance", "members": members},
                    });
                    self.ctx.emit(incoming::stamp(&msg, a)).await;
                }
                answered = true;
            }
            _ => {}
        }

        if complete && let Some(p) = self.pending.take() {
            let (reply, outcome) = p.outcome();
            let _ = reply.send(outcome);
        }

        if !answered {
            if let Some(a) = incoming::activity(&msg, &server, &self.me) {
                self.ctx.emit(a).await;
            }
            for a in incoming::roles(&msg, &server) {
                self.ctx.emit(a).await;
            }
        }
        Ok(())
    }

    /// Mark the pending op echoed if `matches` it; whether it did.
    fn confirm(&mut self, matches: impl Fn(&Op) -> bool) -> bool {
        match self.pending.as_mut() {
            Some(p) if matches(&p.op) => {
                p.echoed = true;
                true
            }
            _ => false,
        }
    }
}

//! Real IRC servers for the irc tests, started on free 127.0.0.1 ports in a temp dir and
//! killed (by the PIDs started here, never by name) when the guard drops: ngircd for the
//! core flows and TLS, InspIRCd (IRCv3: server-time, echo-message, labeled-response)
//! linked to atheme-services for SASL. Plus a raw-socket IRC observer client.
//! (Ported from the project's reference peers recipe.)
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchboard_testpeers::{
    TempDir, chown_tree, command_as, free_port, kill, require, self_signed, service_user, wait_port,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// How long a server may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The certificate's names.
const CERT_NAMES: &[&str] = &["localhost"];

/// Who runs the servers that drop privileges (InspIRCd, atheme) when the tests run as root.
const SERVICE_USER: &str = "nobody";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Ngircd,
    Inspircd,
}

/// A running IRC server (and atheme, for SASL).
pub struct Ircd {
    pub kind: Kind,
    pub port: u16,
    pub tls_port: u16,
    link_port: u16,
    password: Option<String>,
    /// ngircd's PingTimeout (= PongTimeout): how soon it PINGs an idle client and drops it
    /// for not answering.
    ping_timeout: u32,
    sasl: bool,
    server: Option<Child>,
    services: Option<Child>,
    dir: TempDir,
}

impl Ircd {
    /// ngircd, optionally with a server password every client must send.
    pub fn ngircd(password: Option<&str>) -> Self {
        Self::start(Kind::Ngircd, password, false)
    }

    /// ngircd that PINGs clients idle for `secs` and drops them `secs` later without a PONG.
    pub fn ngircd_pinging(secs: u32) -> Self {
        let mut ircd = Self::start_stopped(Kind::Ngircd, None, false);
        ircd.ping_timeout = secs;
        ircd.spawn();
        ircd
    }

    /// InspIRCd with the IRCv3 modules; `sasl` links atheme-services and registers the
    /// accounts alice:alicepw and bob:bobpw.
    pub fn inspircd(sasl: bool) -> Self {
        Self::start(Kind::Inspircd, None, sasl)
    }

    fn start(kind: Kind, password: Option<&str>, sasl: bool) -> Self {
        let mut ircd = Self::start_stopped(kind, password, sasl);
        ircd.spawn();
        ircd
    }

    fn start_stopped(kind: Kind, password: Option<&str>, sasl: bool) -> Self {
        let dir = TempDir::new(match kind {
            Kind::Ngircd => "ngircd",
            Kind::Inspircd => "inspircd",
        });
        self_signed(dir.path(), CERT_NAMES);
        Ircd {
            kind,
            port: free_port(),
            tls_port: free_port(),
            link_port: free_port(),
            password: password.map(str::to_owned),
            ping_timeout: 120,
            sasl,
            server: None,
            services: None,
            dir,
        }
    }

    /// (Re)start the server process on the same ports.
    fn spawn(&mut self) {
        let d = self.dir.path().to_path_buf();
        let mut child = match self.kind {
            Kind::Ngircd => {
                let password = self
                    .password
                    .as_ref()
                    .map(|p| format!("\tPassword = {p}\n"))
                    .unwrap_or_default();
                let conf = format!(
                    "[Global]\n\tName = irc.test.local\n\tInfo = test ircd\n\tAdminInfo1 = CI\n\tAdminInfo2 = CI\n\tAdminEMail = ci@localhost\n\tListen = 127.0.0.1\n\tPorts = {port}\n\tMotdPhrase = test server\n{password}[Limits]\n\tMaxConnectionsIP = 0\n\tMaxJoins = 0\n\tPingTimeout = {ping}\n\tPongTimeout = {ping}\n[Options]\n\tPAM = no\n\tIdent = no\n\tDNS = no\n[SSL]\n\tCertFile = {d}/cert.pem\n\tKeyFile = {d}/key.pem\n\tPorts = {tls}\n",
                    port = self.port,
                    tls = self.tls_port,
                    ping = self.ping_timeout,
                    d = d.display(),
                );
                std::fs::write(d.join("ngircd.conf"), conf).unwrap();
                Command::new(require("ngircd"))
                    .arg("-n")
                    .arg("-f")
                    .arg(d.join("ngircd.conf"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            }
            Kind::Inspircd => {
                let mut conf = format!(
                    r#"<config format="xml">
<server name="irc.test.local" description="test ircd" network="TestNet">
<admin name="CI" nick="ci" email="ci@localhost">
<bind address="127.0.0.1" port="{port}" type="clients">
<connect allow="*" timeout="60" pingfreq="120" localmax="1000" globalmax="1000" maxconnwarn="off" useident="no" limit="5000" hardsendq="1048576" softsendq="65536" recvq="65536" threshold="1000" commandrate="100000" fakelag="off" resolvehostnames="no">
<pid file="{d}/inspircd.pid">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" target="{d}/inspircd.log">
<dns timeout="1">
<module name="cap">
<module name="ircv3">
<module name="ircv3_servertime">
<module name="ircv3_ctctags">
<module name="ircv3_msgid">
<module name="ircv3_echomessage">
<module name="ircv3_batch">
<module name="ircv3_labeledresponse">
"#,
                    port = self.port,
                    d = d.display(),
                );
                if self.sasl {
                    conf.push_str(&format!(
                        r#"<bind address="127.0.0.1" port="{link}" type="servers">
<module name="spanningtree">
<module name="services_account">
<module name="sasl">
<sasl target="services.test.local" requiressl="no">
<link name="services.test.local" ipaddr="127.0.0.1" port="{link}" allowmask="127.0.0.0/8" sendpass="linkpw" recvpass="linkpw" timeout="10">
<uline server="services.test.local" silent="yes">
"#,
                        link = self.link_port
                    ));
                    std::fs::write(d.join("atheme.conf"), atheme_conf(self.link_port)).unwrap();
                    std::fs::create_dir_all(d.join("atheme")).unwrap();
                }
                std::fs::write(d.join("inspircd.conf"), conf).unwrap();
                let owner = service_user(SERVICE_USER);
                chown_tree(&d, owner);
                command_as(&require("inspircd"), owner)
                    .arg("--nofork")
                    .arg(format!("--config={}", d.join("inspircd.conf").display()))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            }
        };
        wait_port(self.port, &mut child, "ircd", START_TIMEOUT);
        self.server = Some(child);
        if self.sasl && self.services.is_none() {
            self.start_services();
        }
    }

    fn start_services(&mut self) {
        let d = self.dir.path();
        let out = d.join("atheme.stdout");
        let log = std::fs::File::create(&out).unwrap();
        let mut child = command_as(&require("atheme-services"), service_user(SERVICE_USER))
            .arg("-n")
            .arg("-c")
            .arg(d.join("atheme.conf"))
            .arg("-D")
            .arg(d.join("atheme"))
            .arg("-l")
            .arg(d.join("atheme.log"))
            .arg("-p")
            .arg(d.join("atheme.pid"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if text.contains("finished synching with uplink") {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("atheme-services exited ({status}): {text}");
            }
            if Instant::now() > deadline {
                kill(&mut child);
                panic!("atheme did not link: {text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.services = Some(child);
    }

    /// Kill the server process (a drop, as clients see it).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.server.take() {
            kill(&mut c);
        }
    }

    /// Start it again on the same ports.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Ircd {
    fn drop(&mut self) {
        if let Some(mut c) = self.services.take() {
            kill(&mut c);
        }
        self.kill();
    }
}

fn atheme_conf(link_port: u16) -> String {
    format!(
        r##"loadmodule "modules/protocol/inspircd";
loadmodule "modules/backend/opensex";
loadmodule "modules/crypto/pbkdf2v2";
loadmodule "modules/nickserv/main";
loadmodule "modules/nickserv/register";
loadmodule "modules/nickserv/identify";
loadmodule "modules/saslserv/main";
loadmodule "modules/saslserv/plain";
serverinfo {{
	name = "services.test.local"; desc = "CI services"; numeric = "00A"; recontime = 2;
	netname = "TestNet"; hidehostsuffix = "users.test"; adminname = "CI"; adminemail = "ci@localhost";
	registeremail = "noreply@localhost"; mta = "/bin/true"; loglevel = {{ error; info; admin; network; }};
	maxlogins = 5; maxusers = 100; mdlimit = 30; emaillimit = 10; emailtime = 300; auth = none; casemapping = rfc1459;
}};
uplink "irc.test.local" {{ host = "127.0.0.1"; password = "linkpw"; port = {link_port}; }};
nickserv {{ nick = "NickServ"; user = "NickServ"; host = "services.test.local"; real = "Nickname Services"; spam; maxnicks = 5; expire = 30; }};
saslserv {{ nick = "SaslServ"; user = "SaslServ"; host = "services.test.local"; real = "SASL Authentication Agent"; }};
general {{
	helpchan = "#help"; helpurl = "http://localhost"; permissive_mode; maxmiss = 100; commit_interval = 5;
	default_clone_allowed = 1000; default_clone_warn = 1000; uplink_sendq_limit = 1048576; language = "en";
	flood_msgs = 100; flood_time = 10; ratelimit_uses = 100; ratelimit_period = 1;
}};
database {{ }};
"##
    )
}

/// A raw-socket IRC client: what another user on the network sees and does.
pub struct Observer {
    pub nick: String,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Every line received, for assertions about what did *not* happen.
    pub seen: Vec<String>,
}

impl Observer {
    pub async fn connect(port: u16, nick: &str, password: Option<&str>) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (r, w) = stream.into_split();
        let mut o = Observer {
            nick: nick.to_owned(),
            reader: BufReader::new(r),
            writer: w,
            seen: Vec::new(),
        };
        if let Some(p) = password {
            o.send(&format!("PASS {p}")).await;
        }
        o.send(&format!("NICK {nick}")).await;
        o.send(&format!("USER {nick} 0 * :observer")).await;
        o.expect(|l| l.contains(" 001 ")).await;
        o
    }

    pub async fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
    }

    /// The next line matching `pred` (answering PINGs meanwhile); panics after 10 s.
    pub async fn expect(&mut self, pred: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout_at(deadline, self.reader.read_line(&mut line))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{}: expected line not seen in 10 s; saw {:#?}",
                        self.nick,
                        &self.seen[self.seen.len().saturating_sub(15)..]
                    )
                })
                .unwrap();
            assert!(n > 0, "{}: server closed the connection", self.nick);
            let line = line.trim_end_matches(['\r', '\n']).to_owned();
            if let Some(token) = line.strip_prefix("PING ") {
                self.send(&format!("PONG {token}")).await;
            }
            self.seen.push(line.clone());
            if pred(&line) {
                return line;
            }
        }
    }

    /// Ask for IRCv3 capabilities after registration.
    pub async fn caps(&mut self, caps: &str) {
        self.send(&format!("CAP REQ :{caps}")).await;
        self.expect(|l| l.contains(" CAP ") && l.contains(" ACK "))
            .await;
    }

    /// Register `password` for our nick with NickServ (atheme).
    pub async fn register_account(&mut self, password: &str) {
        self.send(&format!(
            "PRIVMSG NickServ :REGISTER {password} {}@example.com",
            self.nick
        ))
        .await;
        let l = self
            .expect(|l| l.contains("NOTICE") && l.starts_with(":NickServ"))
            .await;
        assert!(l.contains("registered"), "NickServ: {l}");
    }

    pub async fn join(&mut self, channel: &str) {
        self.send(&format!("JOIN {channel}")).await;
        let ch = channel.to_owned();
        self.expect(move |l| l.contains(" 366 ") && l.contains(&ch))
            .await;
    }
}

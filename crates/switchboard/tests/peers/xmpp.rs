//! XMPP servers for the tests: prosody (and ejabberd) started as processes on free
//! 127.0.0.1 ports with a temp-dir configuration and a fresh self-signed certificate,
//! users registered through the server's own admin tool. Dropping the peer kills the
//! processes this harness started (by PID) and removes the directory.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use switchboard_testpeers::free_port;
use switchboard_testpeers::{
    Owner, TempDir, chown_tree, command_as, kill, require, self_signed, service_user,
};

/// How long a server may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The certificate's names: the domain and its MUC service.
const CERT_NAMES: &[&str] = &["localhost", "conference.localhost"];

fn wait_port(port: u16, child: &mut Child, name: &str) {
    switchboard_testpeers::wait_port(port, child, name, START_TIMEOUT);
}

/// A prosody server for `localhost` with MUC on `conference.localhost`. New rooms stay
/// locked until configured (prosody's default), as on real servers.
pub struct Prosody {
    dir: TempDir,
    /// STARTTLS port.
    pub port: u16,
    /// Direct TLS port (XEP-0368).
    pub tls_port: u16,
    child: Option<Child>,
    owner: Option<Owner>,
}

impl Prosody {
    pub fn start(users: &[(&str, &str)]) -> Prosody {
        Prosody::start_with(users, r#"authentication = "internal_hashed""#)
    }

    /// With `settings` (global prosody options, e.g. the authentication backend and the
    /// SASL mechanisms to disable).
    pub fn start_with(users: &[(&str, &str)], settings: &str) -> Prosody {
        let temp = TempDir::new("prosody");
        let dir = temp.path();
        self_signed(dir, CERT_NAMES);
        let (port, tls_port) = (free_port(), free_port());
        let d = dir.display();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(
            dir.join("prosody.cfg.lua"),
            format!(
                r#"pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
log = {{ info = "{d}/prosody.log"; error = "{d}/prosody.err" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
c2s_direct_tls_ports = {{ {tls_port} }}
c2s_direct_tls_ssl = {{ certificate = "{d}/cert.pem"; key = "{d}/key.pem" }}
http_ports = {{}}
https_ports = {{}}
s2s_ports = {{}}
admins = {{}}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "disco"; "ping" }}
modules_disabled = {{ "s2s" }}
c2s_require_encryption = true
{settings}
storage = "internal"
ssl = {{ certificate = "{d}/cert.pem"; key = "{d}/key.pem" }}
VirtualHost "localhost"
Component "conference.localhost" "muc"
    restrict_room_creation = false
"#
            ),
        )
        .unwrap();
        let owner = service_user("prosody");
        chown_tree(dir, owner);
        let mut p = Prosody {
            dir: temp,
            port,
            tls_port,
            child: None,
            owner,
        };
        p.run();
        for (user, password) in users {
            let status = command_as(&require("prosodyctl"), p.owner)
                .arg("--config")
                .arg(p.config())
                .args(["register", user, "localhost", password])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("prosodyctl");
            assert!(status.success(), "prosodyctl register {user} failed");
        }
        p
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("prosody.cfg.lua")
    }

    fn run(&mut self) {
        let mut child = command_as(&require("prosody"), self.owner)
            .arg("--config")
            .arg(self.config())
            .arg("-F")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prosody");
        wait_port(self.port, &mut child, "prosody");
        self.child = Some(child);
    }

    /// Kill the server (SIGKILL, the PID this harness started): every client connection drops.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
    }

    /// Start it again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        // Before the TempDir field drops, so the server is gone when its dir is removed.
        self.kill();
    }
}

/// An ejabberd server for `localhost` with MUC on `conference.localhost`, STARTTLS on a
/// free port, its Erlang distribution on another (no epmd).
pub struct Ejabberd {
    dir: TempDir,
    pub port: u16,
    ctl: Vec<String>,
    child: Option<Child>,
    /// The server's own PID (ejabberdctl re-executes itself as the ejabberd user).
    pid: Option<i32>,
}

impl Ejabberd {
    pub fn start(users: &[(&str, &str)]) -> Ejabberd {
        let temp = TempDir::new("ejabberd");
        let dir = temp.path();
        self_signed(dir, CERT_NAMES);
        let (port, dist_port) = (free_port(), free_port());
        let d = dir.display();
        for sub in ["logs", "db"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let mut pem = std::fs::read(dir.join("cert.pem")).unwrap();
        pem.extend(std::fs::read(dir.join("key.pem")).unwrap());
        std::fs::write(dir.join("server.pem"), pem).unwrap();
        std::fs::write(
            dir.join("inetrc"),
            "{lookup,[\"file\",\"native\"]}.\n{host,{127,0,0,1}, [\"localhost\"]}.\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("ejabberdctl.cfg"),
            format!(
                "ERL_DIST_PORT={dist_port}\nINET_DIST_INTERFACE=127.0.0.1\n\
                 EJABBERD_PID_PATH={d}/ejabberd.pid\nERL_OPTIONS=\"-env ERL_CRASH_DUMP_BYTES 0\"\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("ejabberd.yml"),
            format!(
                r#"hosts:
  - localhost
loglevel: warning
log_rotate_count: 0
certfiles:
  - {d}/server.pem
listen:
  -
    port: {port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    max_stanza_size: 262144
    access: c2s
    starttls_required: true
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
auth_method: internal
auth_password_format: scram
default_db: mnesia
modules:
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
  mod_muc:
    host: conference.localhost
    access: all
    access_create: all
    access_persistent: all
    access_admin: none
    default_room_options:
      persistent: false
      mam: false
"#
            ),
        )
        .unwrap();
        let owner = service_user("ejabberd");
        chown_tree(dir, owner);
        let ctl = vec![
            "--config-dir".into(),
            d.to_string(),
            "--config".into(),
            format!("{d}/ejabberd.yml"),
            "--logs".into(),
            format!("{d}/logs"),
            "--spool".into(),
            format!("{d}/db"),
            "--node".into(),
            format!("sbtest{port}@localhost"),
        ];
        let mut child = Command::new(require("ejabberdctl"))
            .args(&ctl)
            .arg("foreground")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ejabberdctl");
        wait_port(port, &mut child, "ejabberd");
        let pid_file = dir.join("ejabberd.pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break Some(pid);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let e = Ejabberd {
            dir: temp,
            port,
            ctl,
            child: Some(child),
            pid,
        };
        assert!(e.pid.is_some(), "ejabberd wrote no pid file");
        for (user, password) in users {
            let status = Command::new(require("ejabberdctl"))
                .args(&e.ctl)
                .args(["register", user, "localhost", password])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("ejabberdctl register");
            assert!(status.success(), "ejabberdctl register {user} failed");
        }
        e
    }
}

impl Drop for Ejabberd {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
        // The TempDir field removes the directory after this.
    }
}

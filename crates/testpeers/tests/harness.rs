//! The harness pieces against the real system: ports, dirs, processes, openssl.

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use switchboard_testpeers::{
    TempDir, chown_tree, command_as, free_port, kill, require, self_signed, service_user, wait_port,
};

#[test]
fn a_free_port_can_be_bound() {
    let port = free_port();
    assert_ne!(port, 0);
    TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
}

#[test]
fn temp_dirs_are_distinct_and_removed_on_drop() {
    let a = TempDir::new("t");
    let b = TempDir::new("t");
    assert_ne!(a.path(), b.path());
    assert!(a.path().is_dir());
    std::fs::write(a.path().join("f"), "x").unwrap();
    let path = a.path().to_path_buf();
    drop(a);
    assert!(!path.exists());
}

#[test]
fn require_finds_installed_binaries() {
    assert!(require("openssl").is_file());
}

#[test]
#[should_panic(expected = "no-such-peer-binary is not installed: install it")]
fn require_fails_with_an_install_hint() {
    require("no-such-peer-binary");
}

#[test]
fn self_signed_writes_a_certificate_and_key() {
    let dir = TempDir::new("cert");
    self_signed(dir.path(), &["localhost", "conference.localhost"]);
    let out = Command::new(require("openssl"))
        .args(["x509", "-noout", "-text", "-in"])
        .arg(dir.path().join("cert.pem"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("DNS:conference.localhost"), "{text}");
    assert!(text.contains("IP Address:127.0.0.1"), "{text}");
    assert!(dir.path().join("key.pem").is_file());
}

#[test]
fn wait_port_returns_once_the_child_listens() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut child = Command::new(require("sleep")).arg("30").spawn().unwrap();
    wait_port(port, &mut child, "sleep", Duration::from_secs(5));
    kill(&mut child);
    assert!(child.try_wait().unwrap().is_some(), "killed and reaped");
}

#[test]
#[should_panic(expected = "true exited before listening")]
fn wait_port_fails_when_the_child_exits() {
    let mut child = Command::new(require("true")).spawn().unwrap();
    wait_port(free_port(), &mut child, "true", Duration::from_secs(5));
}

#[test]
#[should_panic(expected = "not listening on 127.0.0.1")]
fn wait_port_gives_up_after_the_timeout() {
    let mut child = Command::new(require("sleep")).arg("30").spawn().unwrap();
    wait_port(free_port(), &mut child, "sleep", Duration::from_millis(200));
}

#[test]
fn command_as_runs_as_the_service_user_when_root() {
    // `nobody` exists on every Debian system; as non-root this runs as ourselves.
    let owner = service_user("nobody");
    let dir = TempDir::new("owned");
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/f"), "x").unwrap();
    chown_tree(dir.path(), owner);
    let out = Command::new("id").arg("-u").output().unwrap();
    let me: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let expected = owner.map_or(me, |(uid, _)| uid);
    let out = command_as(&require("id"), owner)
        .arg("-u")
        .output()
        .unwrap();
    let uid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(uid, expected);
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir.path().join("sub/f")).unwrap();
    assert_eq!(meta.uid(), expected);
}

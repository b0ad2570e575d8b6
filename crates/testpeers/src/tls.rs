//! Certificates for peers' TLS ports.

use std::path::Path;
use std::process::{Command, Stdio};

/// Write `cert.pem` and `key.pem` (RSA 2048, valid two days) into `dir` with openssl,
/// for `dns_names` and 127.0.0.1. Clients under test accept it via their
/// accept-invalid-certs setting.
pub fn self_signed(dir: &Path, dns_names: &[&str]) {
    let mut san: Vec<String> = dns_names.iter().map(|n| format!("DNS:{n}")).collect();
    san.push("IP:127.0.0.1".into());
    let status = Command::new(crate::require("openssl"))
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost"])
        .arg("-addext")
        .arg(format!("subjectAltName={}", san.join(",")))
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success(), "openssl could not make a certificate");
}

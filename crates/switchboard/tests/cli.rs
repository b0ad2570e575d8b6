//! The binary's command line: configuration precedence and refusals, as a user sees them.

use std::process::Command;

fn switchboard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
}

#[test]
fn config_check_applies_file_then_environment_then_flags() {
    let dir = std::env::temp_dir().join(format!("sb-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("switchboard.toml");
    std::fs::write(
        &file,
        "port = 4000\nrate_limit_max = 7\nmax_instances = 9\n",
    )
    .unwrap();

    let out = switchboard()
        .args(["config", "check", "--config"])
        .arg(&file)
        .args(["--max-instances", "11"])
        .env("SWITCHBOARD_RATE_LIMIT_MAX", "8")
        .env("SWITCHBOARD_MAX_INSTANCES", "10")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("port = 4000"), "file value kept: {text}");
    assert!(
        text.contains("rate_limit_max = 8"),
        "environment beats file: {text}"
    );
    assert!(
        text.contains("max_instances = 11"),
        "flag beats environment: {text}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_secret_is_never_printed() {
    let secret = "ab".repeat(32);
    let out = switchboard()
        .args(["config", "check", "--secret", &secret])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains(&secret), "{text}");
    assert!(text.contains("secret = \"(set)\""), "{text}");
}

#[test]
fn bad_configuration_is_refused_with_a_reason() {
    let out = switchboard()
        .args(["config", "check"])
        .env("SWITCHBOARD_PORT", "not-a-port")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not-a-port"));

    let out = switchboard()
        .args([
            "config",
            "check",
            "--config",
            "/nonexistent/switchboard.toml",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}

#[test]
fn an_unknown_platform_worker_fails_cleanly() {
    let out = switchboard().args(["platform", "nope"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown platform \"nope\""));
}

#[test]
fn the_worker_binary_refuses_bad_arguments_and_unknown_platforms() {
    let worker = || Command::new(env!("CARGO_BIN_EXE_switchboard-worker"));
    let out = worker().args(["platform", "nope"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown platform \"nope\" (available: dummy, "),
        "{err}"
    );

    for args in [
        &[][..],
        &["dummy"],
        &["serve"],
        &["platform", "dummy", "extra"],
    ] {
        let out = worker().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("usage: switchboard-worker platform <name>") && err.contains("irc, xmpp"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn the_xmpp_worker_binary_runs_only_xmpp() {
    let worker = || Command::new(env!("CARGO_BIN_EXE_switchboard-worker-xmpp"));
    let out = worker().args(["platform", "irc"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown platform \"irc\" (available: xmpp)"),
        "{err}"
    );

    let out = worker().args(["xmpp"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("usage: switchboard-worker-xmpp platform <name>") && err.contains("xmpp"),
        "{err}"
    );
}

#[test]
fn serve_on_an_unreachable_redis_or_without_a_secret_refuses_to_start() {
    // A loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}/");
    let out = switchboard()
        .args(["serve", "--port", "0", "--redis-url", &url])
        .args(["--secret", &"cd".repeat(32)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot use Redis at {url}")), "{err}");

    // A Redis Cluster none of whose seeds answer: refused the same way, naming them all.
    let seeds = format!("{url},redis://127.0.0.1:{port}/1");
    let out = switchboard()
        .args([
            "serve",
            "--port",
            "0",
            "--redis-cluster",
            "--redis-url",
            &seeds,
        ])
        .args(["--secret", &"cd".repeat(32)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot use Redis at {seeds}")),
        "{err}"
    );

    let out = switchboard()
        .args(["serve", "--port", "0", "--redis-url", &url])
        .env_remove("SWITCHBOARD_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("redis_url needs a shared secret"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

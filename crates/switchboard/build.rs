//! Link settings for the `switchboard` binaries.
//!
//! Every process of ours is a position-independent executable, whose table of relative
//! relocations the loader reads at start: about 1 MB for `switchboard`, 0.5 MB for
//! `switchboard-worker`, counted in the RSS of every worker process (one per IRC or XMPP
//! login). Packed relative relocations (DT_RELR, binutils ≥ 2.38 and glibc ≥ 2.36, so
//! Debian 12 and later) shrink that table to a few KB; the code is unchanged.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

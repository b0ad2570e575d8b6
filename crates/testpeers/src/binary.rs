//! Finding a peer's binary: a missing one fails the test with what to install.

use std::path::{Path, PathBuf};

/// Where the apt packages put the peers' binaries.
const DIRS: [&str; 4] = ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"];

/// The path of `binary`. Panics with an install hint when it is not installed: a test
/// needing a peer must fail, not skip silently.
pub fn require(binary: &str) -> PathBuf {
    DIRS.iter()
        .map(|dir| Path::new(dir).join(binary))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "{binary} is not installed: install it (scripts/test.sh apt-installs the test peers)"
            )
        })
}

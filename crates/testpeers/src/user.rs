//! Running peers as an unprivileged system user when the tests run as root: most
//! servers (postgres, prosody, inspircd …) refuse to run as root.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

/// A system user's (uid, gid).
pub type Owner = (u32, u32);

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `name`'s (uid, gid) when running as root, `None` otherwise. Panics if the user
/// (created by the peer's package) is missing.
pub fn service_user(name: &str) -> Option<Owner> {
    if !is_root() {
        return None;
    }
    // getpwnam returns a static buffer: tests starting servers on several threads must
    // not look users up concurrently.
    static LOOKUP: Mutex<()> = Mutex::new(());
    let _guard = LOOKUP.lock().unwrap_or_else(|e| e.into_inner());
    let cname = std::ffi::CString::new(name).expect("a user name without NUL");
    // SAFETY: a NUL-terminated name; the result is read under the lock, before any other
    // lookup.
    let pw = unsafe { libc::getpwnam(cname.as_ptr()) };
    assert!(
        !pw.is_null(),
        "running as root, the test peer needs the unprivileged system user '{name}' \
         (created by its package; scripts/test.sh installs them)"
    );
    // SAFETY: checked non-null above.
    Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

/// Give `dir` and everything in it to `owner` (no-op for `None`), so a server that runs
/// as that user can write there.
pub fn chown_tree(dir: &Path, owner: Option<Owner>) {
    let Some((uid, gid)) = owner else { return };
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid)).expect("chown the peer's dir");
    if dir.is_symlink() || !dir.is_dir() {
        return;
    }
    for entry in std::fs::read_dir(dir).expect("read the peer's dir") {
        chown_tree(&entry.expect("read the peer's dir").path(), owner);
    }
}

/// A command running `program` as `owner` (through setpriv, which execs it, so the
/// child's PID is the program's), or as ourselves for `None`.
pub fn command_as(program: &Path, owner: Option<Owner>) -> Command {
    match owner {
        Some((uid, gid)) => {
            let mut c = Command::new(crate::require("setpriv"));
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg("--")
                .arg(program);
            c
        }
        None => Command::new(program),
    }
}

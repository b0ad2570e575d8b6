//! A thin SQLite VFS over the default one that turns a transaction's many small WAL
//! writes into a few large ones. Only the message writer's connection uses it.
//!
//! Why: SQLite appends each dirty page to the WAL as two writes, a 24-byte frame header
//! and the page, so a batch of a few hundred messages (each dirtying index pages of its
//! own) costs a thousand and more `pwrite` calls; under chat load the kernel's share of
//! those (syscall entry, ext4 write-begin/end per call, page-cache lookups) was about half
//! of the writer thread's time. Buffering the contiguous appends and writing them at once
//! keeps the bytes but drops the calls to one per 64 KiB (a typical commit: one to four).
//!
//! Why it is safe: nothing is reordered. Only contiguous appends to a WAL file are held
//! back, and every other call on a file of this VFS (a read, a sync, a lock, a write
//! elsewhere, the shared-memory barrier that precedes publishing a commit to readers,
//! close) first writes out what is held. The frame that commits a transaction (its header
//! carries the database size) is written out together with its page before `xWrite`
//! returns, so a failed write is reported to SQLite by the call that made it, and the
//! transaction rolls back as it would have. A crash before that point loses only frames
//! of a transaction that never committed, as a crash in the middle of SQLite's own writes
//! would. Buffers are per thread (the writer's connection lives on one thread).

use std::cell::RefCell;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;
use std::sync::OnceLock;

use rusqlite::ffi;

/// The VFS name to open a connection with.
pub(crate) const NAME: &CStr = c"switchboard-wal-batch";

/// Written out at the latest once this much is held (a batch's WAL is usually smaller).
const LIMIT: usize = 4 << 20;

/// Most bytes handed to the default VFS in one write.
const CHUNK: usize = 64 << 10;

/// Register the VFS (once per process); `false` if SQLite has no default VFS to wrap.
pub(crate) fn register() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        // SAFETY: SQLite is initialised by sqlite3_vfs_find; the default VFS lives for the
        // whole process, and the wrapper is leaked so it does too.
        unsafe {
            let real = ffi::sqlite3_vfs_find(ptr::null());
            if real.is_null() {
                return false;
            }
            let mut vfs = *real;
            vfs.zName = NAME.as_ptr();
            vfs.pAppData = real.cast();
            vfs.pNext = ptr::null_mut();
            vfs.szOsFile = (std::mem::size_of::<File>() + (*real).szOsFile as usize) as c_int;
            vfs.xOpen = Some(open);
            let vfs = Box::leak(Box::new(vfs));
            ffi::sqlite3_vfs_register(vfs, 0) == ffi::SQLITE_OK
        }
    })
}

/// Our file: SQLite's header (pointing at [`METHODS`]), then the default VFS's file.
#[repr(C)]
struct File {
    base: ffi::sqlite3_file,
    wal: bool,
    real: *mut ffi::sqlite3_file,
}

/// Contiguous WAL appends not yet written.
struct Held {
    file: *mut ffi::sqlite3_file,
    start: i64,
    bytes: Vec<u8>,
    /// The last append was the header of a commit frame: its page completes the commit.
    commit: bool,
}

thread_local! {
    static HELD: RefCell<Held> = const {
        RefCell::new(Held { file: ptr::null_mut(), start: 0, bytes: Vec::new(), commit: false })
    };
}

impl Held {
    fn write_out(&mut self) -> c_int {
        self.commit = false;
        let mut rc = ffi::SQLITE_OK;
        let mut at = self.start;
        // The default VFS writes at most 128 KiB - 1 per call (it masks larger sizes).
        for chunk in self.bytes.chunks(CHUNK) {
            // SAFETY: `file` is an open file of the default VFS: it is only closed through
            // our xClose, which writes out first.
            rc = unsafe {
                match (*(*self.file).pMethods).xWrite {
                    Some(write) => {
                        write(self.file, chunk.as_ptr().cast(), chunk.len() as c_int, at)
                    }
                    None => ffi::SQLITE_IOERR_WRITE,
                }
            };
            if rc != ffi::SQLITE_OK {
                break;
            }
            at += chunk.len() as i64;
        }
        self.bytes.clear();
        rc
    }
}

/// Write out whatever this thread holds.
fn write_out() -> c_int {
    HELD.with(|h| h.borrow_mut().write_out())
}

unsafe fn real(file: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    // SAFETY: every file of this VFS is a `File` (SQLite allocates szOsFile bytes).
    unsafe { (*file.cast::<File>()).real }
}

unsafe fn methods(file: *mut ffi::sqlite3_file) -> &'static ffi::sqlite3_io_methods {
    // SAFETY: an open file's methods are static in the default VFS.
    unsafe { &*(*file).pMethods }
}

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite hands us szOsFile bytes at `file`; the default VFS's file goes right
    // after ours (File's size is a multiple of 8, as SQLite's allocations are aligned).
    unsafe {
        let real_vfs = (*vfs).pAppData.cast::<ffi::sqlite3_vfs>();
        let ours = file.cast::<File>();
        let inner = file.cast::<u8>().add(std::mem::size_of::<File>()).cast();
        ptr::write(
            ours,
            File {
                base: ffi::sqlite3_file {
                    pMethods: ptr::null(),
                },
                wal: flags & ffi::SQLITE_OPEN_WAL != 0,
                real: inner,
            },
        );
        let Some(real_open) = (*real_vfs).xOpen else {
            return ffi::SQLITE_CANTOPEN;
        };
        let rc = real_open(real_vfs, name, inner, flags, out_flags);
        // SQLite calls xClose whenever pMethods is set, even after a failed open.
        if !(*inner).pMethods.is_null() {
            (*ours).base.pMethods = &METHODS;
        }
        rc
    }
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite passes one of our open files and `amount` readable bytes.
    unsafe {
        let inner = real(file);
        if !(*file.cast::<File>()).wal || amount <= 0 {
            let rc = write_out();
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            return match methods(inner).xWrite {
                Some(w) => w(inner, data, amount, offset),
                None => ffi::SQLITE_IOERR_WRITE,
            };
        }
        let data = std::slice::from_raw_parts(data.cast::<u8>(), amount as usize);
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            let follows = h.file == inner && h.start + h.bytes.len() as i64 == offset;
            if !h.bytes.is_empty() && !follows {
                let rc = h.write_out();
                if rc != ffi::SQLITE_OK {
                    return rc;
                }
            }
            if h.bytes.is_empty() {
                h.file = inner;
                h.start = offset;
            }
            h.bytes.extend_from_slice(data);
            let completes_commit = h.commit;
            // A frame header is the only 24-byte write; bytes 4..8 are the database size
            // after the commit on a commit frame, zero otherwise.
            h.commit = data.len() == 24 && data[4..8] != [0; 4];
            if completes_commit || h.bytes.len() >= LIMIT {
                h.write_out()
            } else {
                ffi::SQLITE_OK
            }
        })
    }
}

/// The other methods: write out what is held, then do what the default VFS does.
macro_rules! forward {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*), $missing:expr) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            let rc = write_out();
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            // SAFETY: SQLite passes one of our open files.
            unsafe {
                let inner = real(file);
                match methods(inner).$method {
                    Some(f) => f(inner $(, $arg)*),
                    None => $missing,
                }
            }
        }
    };
}

forward!(read, xRead, (buf: *mut c_void, amount: c_int, offset: i64), ffi::SQLITE_IOERR_READ);
forward!(truncate, xTruncate, (size: i64), ffi::SQLITE_IOERR_TRUNCATE);
forward!(sync, xSync, (flags: c_int), ffi::SQLITE_IOERR_FSYNC);
forward!(file_size, xFileSize, (size: *mut i64), ffi::SQLITE_IOERR_FSTAT);
forward!(lock, xLock, (level: c_int), ffi::SQLITE_IOERR_LOCK);
forward!(unlock, xUnlock, (level: c_int), ffi::SQLITE_IOERR_UNLOCK);
forward!(check_reserved, xCheckReservedLock, (out: *mut c_int), ffi::SQLITE_IOERR_CHECKRESERVEDLOCK);
forward!(file_control, xFileControl, (op: c_int, arg: *mut c_void), ffi::SQLITE_NOTFOUND);
forward!(sector_size, xSectorSize, (), 4096);
forward!(device_characteristics, xDeviceCharacteristics, (), 0);
forward!(shm_map, xShmMap, (page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void), ffi::SQLITE_IOERR_SHMMAP);
forward!(shm_lock, xShmLock, (offset: c_int, n: c_int, flags: c_int), ffi::SQLITE_IOERR_SHMLOCK);
forward!(shm_unmap, xShmUnmap, (delete: c_int), ffi::SQLITE_OK);
// No memory map: SQLite reads the page with xRead instead.
forward!(fetch, xFetch, (offset: i64, amount: c_int, out: *mut *mut c_void), {
    *out = ptr::null_mut();
    ffi::SQLITE_OK
});
forward!(unfetch, xUnfetch, (offset: i64, page: *mut c_void), ffi::SQLITE_OK);

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    let held = write_out();
    // SAFETY: SQLite passes one of our open files, once.
    let rc = unsafe {
        let inner = real(file);
        match methods(inner).xClose {
            Some(f) => f(inner),
            None => ffi::SQLITE_OK,
        }
    };
    if held != ffi::SQLITE_OK { held } else { rc }
}

/// Called between writing the two copies of the WAL index header, i.e. before readers can
/// see a commit. Commits are written out by their last `xWrite` already; this is the
/// backstop, and it has no way to report an error.
unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    let rc = write_out();
    if rc != ffi::SQLITE_OK {
        tracing::error!(code = rc, "cannot write held WAL frames");
    }
    // SAFETY: SQLite passes one of our open files.
    unsafe {
        let inner = real(file);
        if let Some(f) = methods(inner).xShmBarrier {
            f(inner);
        }
    }
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, OpenFlags};

    fn open(path: &std::path::Path, batched: bool) -> Connection {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
        let conn = if batched {
            assert!(super::register());
            Connection::open_with_flags_and_vfs(path, flags, super::NAME).unwrap()
        } else {
            Connection::open_with_flags(path, flags).unwrap()
        };
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
        conn
    }

    /// What the batched connection commits, another connection (default VFS) reads intact,
    /// through the paths that write the log out of order: a tiny page cache spills frames
    /// mid-transaction and rewrites them, a rollback discards written frames, checkpoints
    /// rewind the log.
    #[test]
    fn commits_read_back_intact_from_another_connection() {
        let dir = std::env::temp_dir().join(format!("sb-wal-batch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("batch.db");
        let writer = open(&path, true);
        writer.pragma_update(None, "cache_size", 4).unwrap();
        writer
            .execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT UNIQUE, v BLOB)")
            .unwrap();
        let reader = open(&path, false);
        let mut expected = 0;
        for round in 0..30 {
            let tx = writer.unchecked_transaction().unwrap();
            for i in 0..200 {
                tx.execute(
                    "INSERT INTO t (k, v) VALUES (?, zeroblob(300))",
                    [format!("{round}-{i}")],
                )
                .unwrap();
            }
            if round % 3 == 2 {
                tx.rollback().unwrap();
            } else {
                tx.commit().unwrap();
                expected += 200;
            }
            let count: i64 = reader
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap();
            assert_eq!(count, expected, "round {round}");
            if round % 10 == 9 {
                writer
                    .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                    .unwrap();
            }
        }
        let check: String = reader
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        drop(writer);
        drop(reader);
        let again = open(&path, false);
        let count: i64 = again
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, expected);
        drop(again);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

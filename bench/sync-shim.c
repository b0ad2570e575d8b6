/* What the disk costs a benchmark run: an LD_PRELOAD shim that changes what `fsync` and
 * `fdatasync` do in the process it is loaded into (BENCHMARKS.md, native chat, session 14).
 *
 *   cc -shared -fPIC -O2 -o /tmp/sync-shim.so bench/sync-shim.c -ldl
 *   SYNC_SHIM=off LD_PRELOAD=/tmp/sync-shim.so target/release/switchboard serve ...
 *
 * SYNC_SHIM=off        a sync does nothing (the pages stay dirty in the page cache)
 * SYNC_SHIM=writeback  a sync writes the file's dirty pages back and waits for them, but
 *                      does not flush the device's cache (sync_file_range)
 * SYNC_SHIM_THREAD=X   only in threads whose name starts with X (e.g. sqlite-writer)
 * SYNC_SHIM_CALL=C     only calls to C: fsync (SQLite's) or fdatasync (Rust's sync_data)
 * Unset SYNC_SHIM, or another thread: the real call. An experiment, not a product: a
 * database synced this way does not survive a power cut. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

/* For a call to `call`: 0, the real call; 1, nothing; 2, write back without a flush. */
static int mode(const char *call) {
    const char *m = getenv("SYNC_SHIM");
    const char *only = getenv("SYNC_SHIM_THREAD");
    const char *calls = getenv("SYNC_SHIM_CALL");
    if (!m) return 0;
    if (calls && strcmp(calls, call) != 0) return 0;
    if (only) {
        char name[17] = {0};
        prctl(PR_GET_NAME, name, 0, 0, 0);
        if (strncmp(name, only, strlen(only)) != 0) return 0;
    }
    if (!strcmp(m, "off")) return 1;
    if (!strcmp(m, "writeback")) return 2;
    return 0;
}

static int shimmed(int fd, int how) {
    if (how == 1) return 0;
    return sync_file_range(fd, 0, 0,
        SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
}

int fsync(int fd) {
    static int (*real)(int);
    int how = mode("fsync");
    if (how) return shimmed(fd, how);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    int how = mode("fdatasync");
    if (how) return shimmed(fd, how);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real(fd);
}

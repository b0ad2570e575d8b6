#!/usr/bin/env python3
"""Where a SQLite write-ahead log's frames go: frames per table or index.

Usage: bench/wal-frames.py DB WAL

DB and WAL are copies of a database file and its `-wal` taken together (e.g. of a running
server's `switchboard.db` and `switchboard.db-wal`). Every frame of the log's current
generation (its salts match the header's) is one page written by one commit; the page's
owner (table, index) comes from SQLite's `dbstat` table read through the `sqlite3` command
(Debian's is built with it) on a scratch copy of both files. Pages the copy does not know
(freed since, or past its end) are counted as "?". Prints frames per owner, in total and
per commit: which B-trees a workload's commits rewrite (BENCHMARKS.md, native chat,
session 11).
"""

import collections
import os
import shutil
import struct
import subprocess
import sys
import tempfile


def owners(db, wal):
    """Page number -> owning table or index, from a scratch copy of DB with WAL."""
    with tempfile.TemporaryDirectory() as scratch:
        copy = os.path.join(scratch, "copy.db")
        shutil.copyfile(db, copy)
        shutil.copyfile(wal, copy + "-wal")
        out = subprocess.run(
            ["sqlite3", copy, "SELECT pageno, name FROM dbstat"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    return {int(p): n for p, n in (line.split("|", 1) for line in out.splitlines())}


def frames(wal):
    """(page number, is a commit) of each frame of the log's current generation."""
    with open(wal, "rb") as f:
        data = f.read()
    if len(data) < 32:
        return
    page_size, salts = struct.unpack(">I", data[8:12])[0], data[16:24]
    at = 32
    while at + 24 + page_size <= len(data) and data[at + 8 : at + 16] == salts:
        page, commit = struct.unpack(">II", data[at : at + 8])
        yield page, commit != 0
        at += 24 + page_size


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[2])
    db, wal = sys.argv[1:]
    names = owners(db, wal)
    count = collections.Counter()
    commits = 0
    for page, commit in frames(wal):
        count[names.get(page, "?")] += 1
        commits += commit
    total = sum(count.values())
    print(f"{total} frames, {commits} commits, {total / max(commits, 1):.2f} frames per commit")
    for name, n in count.most_common():
        print(f"{name:32} {n:8} {100 * n / max(total, 1):5.1f} % {n / max(commits, 1):6.2f} per commit")


if __name__ == "__main__":
    main()

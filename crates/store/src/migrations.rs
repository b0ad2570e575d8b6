//! Schema migrations compiled into the binary (`include_str!`, no `sqlx::migrate!` macro:
//! the `macros` feature would double sqlx's build), run by [`sqlx::migrate::Migrator`],
//! which records each applied version and its checksum in `_sqlx_migrations`.

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// One migration: version, description, SQL. Lists are oldest first; append, never edit a
/// released migration (its checksum is recorded in every database it ran on).
pub(crate) type Step = (i64, &'static str, &'static str);

pub(crate) const SQLITE: &[Step] = &[
    (1, "chat", include_str!("../migrations/0001_chat.sql")),
    (
        2,
        "client msg ids",
        include_str!("../migrations/0002_client_msg_ids.sql"),
    ),
    (3, "backlog", include_str!("../migrations/0003_backlog.sql")),
    (
        4,
        "message ids",
        include_str!("../migrations/0004_message_ids.sql"),
    ),
    (5, "history", include_str!("../migrations/0005_history.sql")),
    (6, "redo", include_str!("../migrations/0006_redo.sql")),
];

pub(crate) const POSTGRES: &[Step] = &[
    (
        1,
        "chat",
        include_str!("../migrations/postgres/0001_chat.sql"),
    ),
    (
        2,
        "unread",
        include_str!("../migrations/postgres/0002_unread.sql"),
    ),
];

pub(crate) fn migrator(steps: &[Step]) -> Migrator {
    let migrations = steps
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*description),
                MigrationType::Simple,
                sqlx::AssertSqlSafe(*sql).into_sql_str(),
                // In a transaction: a failed migration leaves nothing half-applied
                // (PostgreSQL has transactional DDL; SQLite too).
                false,
            )
        })
        .collect();
    Migrator::with_migrations(migrations)
}

/// An in-memory SQLite database with every migration applied and users 1, 2 and 3, for
/// the writer's unit tests.
#[cfg(test)]
pub(crate) fn migrated_in_memory() -> rusqlite::Connection {
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    for (_, _, sql) in SQLITE {
        conn.execute_batch(sql).unwrap();
    }
    conn.execute_batch(
        "INSERT INTO users (id, username, password_hash, created_at) \
         VALUES (1, 'a', 'h', 0), (2, 'b', 'h', 0), (3, 'c', 'h', 0)",
    )
    .unwrap();
    conn
}

//! Rows to model types, and the error and pattern helpers, shared by the SQL backends:
//! both schemas use the same column names and types (64-bit integers, text).

use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::{Account, Message, Room, Status, Timestamp, User};

/// A message row's columns, for `concat!` so every statement stays a `&'static str`.
macro_rules! message_columns {
    () => {
        "id, sender_id, receiver_id, room_id, content, message_type, client_msg_id, status, \
         created_at, delivered_at, read_at"
    };
}
pub(crate) use message_columns;

pub(crate) fn user_from<'r, R: Row>(row: &'r R) -> Result<User, sqlx::Error>
where
    &'static str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        created_at: Timestamp(row.try_get("created_at")?),
        last_seen: row.try_get::<Option<i64>, _>("last_seen")?.map(Timestamp),
    })
}

pub(crate) fn account_from<'r, R: Row>(row: &'r R) -> Result<Account, sqlx::Error>
where
    &'static str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(Account {
        user: user_from(row)?,
        email: row.try_get("email")?,
        password_hash: row.try_get("password_hash")?,
    })
}

pub(crate) fn room_from<'r, R: Row>(row: &'r R) -> Result<Room, sqlx::Error>
where
    &'static str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(Room {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        created_by: row.try_get("created_by")?,
        created_at: Timestamp(row.try_get("created_at")?),
    })
}

pub(crate) fn message_from<'r, R: Row>(row: &'r R) -> Result<Message, sqlx::Error>
where
    &'static str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(Message {
        id: row.try_get("id")?,
        sender_id: row.try_get("sender_id")?,
        receiver_id: row.try_get("receiver_id")?,
        room_id: row.try_get("room_id")?,
        content: row.try_get("content")?,
        message_type: row.try_get("message_type")?,
        client_msg_id: row.try_get("client_msg_id")?,
        status: Status::parse(&row.try_get::<String, _>("status")?),
        created_at: Timestamp(row.try_get("created_at")?),
        delivered_at: row
            .try_get::<Option<i64>, _>("delivered_at")?
            .map(Timestamp),
        read_at: row.try_get::<Option<i64>, _>("read_at")?.map(Timestamp),
    })
}

/// A message row of the writer's own connection (rusqlite), selected with
/// [`message_columns`] in that order.
pub(crate) fn message_from_rusqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        id: row.get(0)?,
        sender_id: row.get(1)?,
        receiver_id: row.get(2)?,
        room_id: row.get(3)?,
        content: row.get(4)?,
        message_type: row.get(5)?,
        client_msg_id: row.get(6)?,
        status: Status::parse(&row.get::<_, String>(7)?),
        created_at: Timestamp(row.get(8)?),
        delivered_at: row.get::<_, Option<i64>>(9)?.map(Timestamp),
        read_at: row.get::<_, Option<i64>>(10)?.map(Timestamp),
    })
}

/// The `id` column of every row (`RETURNING id`), ascending.
pub(crate) fn sorted_ids<'r, R: Row>(rows: &'r [R]) -> Result<Vec<i64>, sqlx::Error>
where
    &'static str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let mut ids = rows
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<Result<Vec<i64>, _>>()?;
    ids.sort_unstable();
    Ok(ids)
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

pub(crate) fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}

/// A `LIKE … ESCAPE '\'` pattern matching names that contain `search`: `%` and `_` in a
/// search are literal.
pub(crate) fn like_pattern(search: &str) -> String {
    let mut p = String::with_capacity(search.len() + 2);
    p.push('%');
    for c in search.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_are_literal() {
        assert_eq!(like_pattern("a_b%"), "%a\\_b\\%%");
    }
}

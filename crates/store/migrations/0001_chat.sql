-- Accounts, rooms, memberships and messages of the native chat.
-- Times are milliseconds since the Unix epoch; ids are 64-bit integers.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT NOT NULL COLLATE NOCASE UNIQUE,
    email         TEXT,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_seen     INTEGER
);

CREATE TABLE rooms (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL,
    created_by INTEGER NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL
);

CREATE TABLE room_members (
    room_id      INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_id      INTEGER NOT NULL REFERENCES users(id),
    joined_at    INTEGER NOT NULL,
    -- The newest room message this member has read (0: none).
    last_read_id INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;
CREATE INDEX room_members_by_user ON room_members(user_id);

CREATE TABLE messages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    sender_id     INTEGER NOT NULL REFERENCES users(id),
    receiver_id   INTEGER REFERENCES users(id),
    room_id       INTEGER REFERENCES rooms(id) ON DELETE CASCADE,
    content       TEXT NOT NULL,
    message_type  TEXT NOT NULL DEFAULT 'text',
    client_msg_id TEXT,
    -- Direct messages: sent -> delivered -> read. Room messages stay 'sent'; their
    -- readers are tracked per member (room_members.last_read_id).
    status        TEXT NOT NULL DEFAULT 'sent',
    created_at    INTEGER NOT NULL,
    delivered_at  INTEGER,
    read_at       INTEGER,
    CHECK ((receiver_id IS NULL) <> (room_id IS NULL))
);
-- Idempotent sends: one message per (sender, clientMsgId).
CREATE UNIQUE INDEX messages_client_msg ON messages(sender_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;
CREATE INDEX messages_direct ON messages(receiver_id, sender_id, id) WHERE receiver_id IS NOT NULL;
CREATE INDEX messages_pending ON messages(receiver_id, id) WHERE status = 'sent' AND receiver_id IS NOT NULL;
CREATE INDEX messages_room ON messages(room_id, id) WHERE room_id IS NOT NULL;

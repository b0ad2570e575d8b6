-- Message ids without AUTOINCREMENT: a new message's id is one above the largest stored id
-- (SQLite's rowid), as before, and the ids of one commit still follow each other.
--
-- With AUTOINCREMENT every commit that inserts also rewrote `sqlite_sequence` (the largest
-- id handed out, kept in a table of its own): a log page per commit, 15 % of the log's
-- frames at 10k messages/s, for a guarantee nothing here used (BENCHMARKS.md, session 14).
-- What AUTOINCREMENT added: an id is never handed out again, even after the newest message
-- is deleted. No path deletes messages but a room's removal, which nothing does yet; a path
-- that deletes them must keep its own floor under new ids.
--
-- SQLite cannot drop AUTOINCREMENT in place: the table is rebuilt, its indexes and the
-- triggers on it created again (they go with the old table). Every message keeps its id.

CREATE TABLE messages_rebuilt (
    id            INTEGER PRIMARY KEY,
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

INSERT INTO messages_rebuilt (id, sender_id, receiver_id, room_id, content, message_type,
                              client_msg_id, status, created_at, delivered_at, read_at)
    SELECT id, sender_id, receiver_id, room_id, content, message_type,
           client_msg_id, status, created_at, delivered_at, read_at
    FROM messages ORDER BY id;

DROP TABLE messages;
ALTER TABLE messages_rebuilt RENAME TO messages;

CREATE INDEX messages_direct ON messages(receiver_id, sender_id, id) WHERE receiver_id IS NOT NULL;
CREATE INDEX messages_room ON messages(room_id, id) WHERE room_id IS NOT NULL;

-- As in migration 0002.
CREATE TRIGGER messages_deleted_client_msg_id AFTER DELETE ON messages
WHEN OLD.client_msg_id IS NOT NULL
BEGIN
    DELETE FROM client_msg_ids
    WHERE sender_id = OLD.sender_id AND client_msg_id = OLD.client_msg_id AND id = OLD.id;
END;

-- As in migration 0003.
CREATE TRIGGER messages_left_backlog AFTER UPDATE OF status ON messages
WHEN OLD.status = 'sent' AND NEW.status <> 'sent' AND OLD.receiver_id IS NOT NULL
BEGIN
    DELETE FROM backlog WHERE receiver_id = OLD.receiver_id AND id = OLD.id;
END;

CREATE TRIGGER messages_deleted_backlog AFTER DELETE ON messages
WHEN OLD.status = 'sent' AND OLD.receiver_id IS NOT NULL
BEGIN
    DELETE FROM backlog WHERE receiver_id = OLD.receiver_id AND id = OLD.id;
END;

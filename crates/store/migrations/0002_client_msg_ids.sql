-- Idempotent sends: the (sender, clientMsgId) of every message, written by the message
-- writer a slice per commit in key order instead of as an index entry per message.
--
-- As a unique index on `messages`, every message put an entry on a leaf of its sender's,
-- and every commit appended that leaf to the log: about 1.2 log pages per message at
-- 10k messages/s (BENCHMARKS.md, session 11). The writer now keeps a second's worth of
-- keys in memory, sorted, and writes them here a few dozen per commit in one sweep over
-- the keys per second, so a leaf takes a sender's second of keys at once
-- (`client_ids`, crate switchboard-store).

CREATE TABLE client_msg_ids (
    sender_id     INTEGER NOT NULL,
    client_msg_id TEXT NOT NULL,
    id            INTEGER NOT NULL,
    PRIMARY KEY (sender_id, client_msg_id)
) WITHOUT ROWID;

-- Every message with a smaller id has its key in `client_msg_ids`: on start the writer
-- writes the keys of the messages from here on (those still in memory when it stopped).
CREATE TABLE client_msg_ids_written (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    below INTEGER NOT NULL
);

-- No path deletes messages yet; a room's removal would, through its cascade.
CREATE TRIGGER messages_deleted_client_msg_id AFTER DELETE ON messages
WHEN OLD.client_msg_id IS NOT NULL
BEGIN
    DELETE FROM client_msg_ids
    WHERE sender_id = OLD.sender_id AND client_msg_id = OLD.client_msg_id AND id = OLD.id;
END;

INSERT INTO client_msg_ids (sender_id, client_msg_id, id)
    SELECT sender_id, client_msg_id, id FROM messages
    WHERE client_msg_id IS NOT NULL ORDER BY sender_id, client_msg_id;
INSERT INTO client_msg_ids_written (id, below)
    VALUES (1, (SELECT COALESCE(MAX(id), 0) + 1 FROM messages));

DROP INDEX messages_client_msg;

-- Direct-message history: the (receiver, sender, id) of every direct message, written by
-- the message writer a slice per commit in key order instead of as an index entry per
-- message (`history`, crate switchboard-store).
--
-- As the index `messages_direct`, every direct message put an entry on a leaf of its
-- conversation's, and every commit appended that leaf to the log: a random leaf per
-- message, 45 % of the log's frames at 10k messages/s once the other per-message indexes
-- were gone (BENCHMARKS.md, sessions 14 and 15). The writer now keeps a second's worth of
-- keys in memory and writes them here in one sweep over the keys per second, so a leaf
-- takes a conversation's second of keys at once. History is read from this table below
-- `history_written.below` and from `messages` from there on.

CREATE TABLE history (
    receiver_id INTEGER NOT NULL,
    sender_id   INTEGER NOT NULL,
    id          INTEGER NOT NULL,
    PRIMARY KEY (receiver_id, sender_id, id)
) WITHOUT ROWID;

-- Every direct message with a smaller id has its key in `history`: on start the writer
-- writes the keys of the messages from here on (those still in memory when it stopped).
CREATE TABLE history_written (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    below INTEGER NOT NULL
);

-- No path deletes messages yet; a room's removal would (room messages have no key here).
CREATE TRIGGER messages_deleted_history AFTER DELETE ON messages
WHEN OLD.receiver_id IS NOT NULL
BEGIN
    DELETE FROM history
    WHERE receiver_id = OLD.receiver_id AND sender_id = OLD.sender_id AND id = OLD.id;
END;

INSERT INTO history (receiver_id, sender_id, id)
    SELECT receiver_id, sender_id, id FROM messages
    WHERE receiver_id IS NOT NULL ORDER BY receiver_id, sender_id, id;
INSERT INTO history_written (id, below)
    VALUES (1, (SELECT COALESCE(MAX(id), 0) + 1 FROM messages));

DROP INDEX messages_direct;

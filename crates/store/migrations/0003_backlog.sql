-- The offline backlog: direct messages still `sent` (not yet written to a connection of
-- their receiver), by receiver, kept by the message writer instead of an index on
-- `messages`.
--
-- As the partial index `messages_pending`, every direct message put an entry on a leaf of
-- its receiver's and the delivered mark took it off again milliseconds later: a random
-- leaf rewritten twice for almost every message, a tenth of the log's frames at 10k
-- messages/s (BENCHMARKS.md, session 12). The writer now keeps the keys of new direct
-- messages in memory and writes here only those still undelivered a second later, a
-- slice per commit in key order (`backlog`, crate switchboard-store).

CREATE TABLE backlog (
    receiver_id INTEGER NOT NULL,
    id          INTEGER NOT NULL,
    PRIMARY KEY (receiver_id, id)
) WITHOUT ROWID;

-- Every direct message with a smaller id that is still `sent` has its key in `backlog`:
-- on start the writer loads the keys of the `sent` messages from here on into memory.
CREATE TABLE backlog_written (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    below INTEGER NOT NULL
);

-- A message leaves the backlog when it stops being `sent`, whichever connection marks it
-- (the writer's delivered marks, a pooled connection's read marks).
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

INSERT INTO backlog (receiver_id, id)
    SELECT receiver_id, id FROM messages
    WHERE status = 'sent' AND receiver_id IS NOT NULL ORDER BY receiver_id, id;
INSERT INTO backlog_written (id, below)
    VALUES (1, (SELECT COALESCE(MAX(id), 0) + 1 FROM messages));

DROP INDEX messages_pending;

-- A read mark (`mark_read`) takes every unread message of one conversation direction.
-- Without this index it walked `messages_direct` over every message ever sent in the
-- direction: a cost that grew with the history. The partial index holds only unread
-- direct messages, so a mark costs the messages it marks. (SQLite needs no index for
-- this: its one writer commits ids in order, so its read marks stop at the newest read
-- message instead; see `MARK_READ` in sqlite.rs. PostgreSQL's concurrent writers can
-- commit ids out of order, so that shortcut would skip a late commit's message.)
-- On a large existing table the build holds off writes while it runs: CONCURRENTLY cannot
-- run inside the migration's transaction.
CREATE INDEX messages_unread ON messages(receiver_id, sender_id)
    WHERE status <> 'read' AND receiver_id IS NOT NULL;

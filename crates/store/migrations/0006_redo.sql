-- The message writer's last committed group (`redo`, crate switchboard-store).
--
-- The writer keeps one transaction open for a few milliseconds across its batches and
-- answers each batch before that transaction commits, writing the batch to the redo log
-- `<database>-redo` first. The group's number goes here in the group's own transaction,
-- so after a crash the records of group `seq + 1` in the redo log are the answered
-- writes that did not commit, and are run again.

CREATE TABLE redo_group (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);

INSERT INTO redo_group (id, seq) VALUES (1, 0);

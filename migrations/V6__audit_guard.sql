-- The audit log is append-only: the database itself refuses edits and deletions, and a fork of
-- the hash chain (two entries after the same one) cannot be written.
CREATE UNIQUE INDEX audit_chain ON audit_event (prev_hash);
CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_event
BEGIN
    SELECT RAISE(ABORT, 'the audit log cannot be changed');
END;
CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON audit_event
BEGIN
    SELECT RAISE(ABORT, 'the audit log cannot be changed');
END;

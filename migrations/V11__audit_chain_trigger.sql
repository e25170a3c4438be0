-- The chain guard of V6 without its index: a new entry must be the last one and follow the entry
-- before it, and no entry may take the place of another (INSERT OR REPLACE deletes without the
-- delete trigger). Unlike the unique index on prev_hash, this also refuses an entry that follows
-- no entry at all; an entry copying another's hash is left to `carepost audit verify`, which
-- recomputes every hash. It costs lookups at the end of the table, where the entry was just
-- written, instead of an index entry on a random page for every entry (the hashes are random),
-- which every write transaction paid for (measured in the benchmark; see the README).
CREATE TRIGGER audit_event_in_place BEFORE INSERT ON audit_event
WHEN EXISTS (SELECT 1 FROM audit_event WHERE id = NEW.id)
BEGIN
    SELECT RAISE(ABORT, 'the audit log only grows at its end, from its last entry');
END;
CREATE TRIGGER audit_event_chained AFTER INSERT ON audit_event
WHEN NEW.prev_hash IS NOT coalesce(
         (SELECT hash FROM audit_event WHERE id < NEW.id ORDER BY id DESC LIMIT 1), '')
  OR EXISTS (SELECT 1 FROM audit_event WHERE id > NEW.id)
BEGIN
    SELECT RAISE(ABORT, 'the audit log only grows at its end, from its last entry');
END;
DROP INDEX audit_chain;

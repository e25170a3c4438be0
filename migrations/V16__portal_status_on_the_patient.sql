-- Patient search and the patient list show each listed patient's portal status, and whether
-- anyone can read messages for them. Kept on the patient row by triggers, instead of four
-- index lookups per listed patient on every page (a fifth of the search's statement, measured
-- in the benchmark; see the README):
--   self_access    'active' when an account holds the patient's own access, else 'revoked'
--                  when one held it, else '';
--   invited_until  when the last of the patient's pending own invitations expires (0: none),
--                  compared with the time of the page, since invitations expire unattended;
--   reachable      1 when any account (the patient's own or a caregiver's) has active access.
ALTER TABLE patient ADD COLUMN self_access TEXT NOT NULL DEFAULT '';
ALTER TABLE patient ADD COLUMN invited_until INTEGER NOT NULL DEFAULT 0;
ALTER TABLE patient ADD COLUMN reachable INTEGER NOT NULL DEFAULT 0;

-- The three as worked out from a patient's access and invitation rows (a handful each): the one
-- place the rule is written, for the fill below and for every trigger after it.
CREATE VIEW patient_portal AS
SELECT p.id AS patient_id,
       CASE
           WHEN EXISTS (SELECT 1 FROM portal_access a
                         WHERE a.patient_id = p.id AND a.role = 'self' AND a.status = 'active')
               THEN 'active'
           WHEN EXISTS (SELECT 1 FROM portal_access a
                         WHERE a.patient_id = p.id AND a.role = 'self' AND a.status = 'revoked')
               THEN 'revoked'
           ELSE '' END AS self_access,
       coalesce((SELECT max(i.expires_at) FROM invitation i
                  WHERE i.patient_id = p.id AND i.role = 'self' AND i.status = 'pending'), 0)
           AS invited_until,
       EXISTS (SELECT 1 FROM portal_access a WHERE a.patient_id = p.id AND a.status = 'active')
           AS reachable
  FROM patient p;

UPDATE patient SET (self_access, invited_until, reachable) =
    (SELECT self_access, invited_until, reachable FROM patient_portal WHERE patient_id = patient.id);

-- Any change of a patient's portal access or invitations: the patient the row was and is for
-- is worked out again. An update that changes none of the columns the rule reads (access
-- granted again as it was, a wrong PIN that leaves an invitation pending) writes nothing.
CREATE TRIGGER portal_access_added AFTER INSERT ON portal_access
BEGIN
    UPDATE patient SET (self_access, invited_until, reachable) =
        (SELECT self_access, invited_until, reachable FROM patient_portal WHERE patient_id = patient.id)
     WHERE id = NEW.patient_id;
END;

CREATE TRIGGER portal_access_changed AFTER UPDATE OF patient_id, role, status ON portal_access
WHEN OLD.patient_id IS NOT NEW.patient_id OR OLD.role IS NOT NEW.role
  OR OLD.status IS NOT NEW.status
BEGIN
    UPDATE patient SET (self_access, invited_until, reachable) =
        (SELECT self_access, invited_until, reachable FROM patient_portal WHERE patient_id = patient.id)
     WHERE id IN (OLD.patient_id, NEW.patient_id);
END;

CREATE TRIGGER portal_access_removed AFTER DELETE ON portal_access
BEGIN
    UPDATE patient SET (self_access, invited_until, reachable) =
        (SELECT self_access, invited_until, reachable FROM patient_portal WHERE patient_id = patient.id)
     WHERE id = OLD.patient_id;
END;

CREATE TRIGGER invitation_added AFTER INSERT ON invitation
BEGIN
    UPDATE patient SET (self_access, invited_until, reachable) =
        (SELECT self_access, invited_until, reachable FROM patient_portal WHERE patient_id = patient.id)
     WHERE id = NEW.patient_id;
END;

CREATE TRIGGER invitation_changed AFTER UPDATE OF patient_id, role, status, expires_at ON invitation
WHEN OLD.patient_id IS NOT NEW.patient_id OR OLD.role IS NOT NEW.role
  OR OLD.status IS NOT NEW.status OR OLD.expires_at IS NOT NEW.expires_at
BEGIN
    UPDATE patient SET (self_access, invited_until, reachable) =
        (SELECT self_access, invited_until, reachable FROM patient_portal WHERE patient_id = patient.id)
     WHERE id IN (OLD.patient_id, NEW.patient_id);
END;

CREATE TRIGGER invitation_removed AFTER DELETE ON invitation
BEGIN
    UPDATE patient SET (self_access, invited_until, reachable) =
        (SELECT self_access, invited_until, reachable FROM patient_portal WHERE patient_id = patient.id)
     WHERE id = OLD.patient_id;
END;

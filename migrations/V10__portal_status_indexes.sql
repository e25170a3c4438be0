-- Patient search and the patient list show each listed patient's portal status, which takes up
-- to four checks of portal_access and invitation per patient. With the checked columns in the
-- index, each check is one index lookup instead of an index lookup and a row lookup (measured
-- in the benchmark; see the README).
CREATE INDEX portal_access_status ON portal_access (patient_id, role, status);
DROP INDEX portal_access_by_patient;
CREATE INDEX invitation_status ON invitation (patient_id, role, status, expires_at);
DROP INDEX invitation_by_status;
-- Its first column is the new index's first column.
DROP INDEX invitation_by_patient;

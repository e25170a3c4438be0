-- When this staff member was last reminded of this unread thread; cleared by new activity from
-- the patient, so each unread episode is reminded of once.
ALTER TABLE thread_staff ADD COLUMN reminded_at INTEGER;

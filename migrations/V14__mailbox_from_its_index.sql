-- A patient's mailbox page is read from its index alone: the index holds every column the page
-- shows or needs for the staff name and the unread marker, so no thread row is read (26 lookups
-- a page). A visible message already rewrites the thread's entry (its time is in the key).
DROP INDEX thread_by_patient;
CREATE INDEX thread_by_patient ON thread (patient_id, last_visible_at DESC, id DESC, subject,
    visible_count, first_staff_id, last_staff_message_id);

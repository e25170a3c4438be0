-- Fewer lookups per row in the two busiest lists (measured in the benchmark; see the README).

-- The patient's mailbox names the staff member a thread was first addressed to. Kept on the
-- thread when that first row is added, instead of being looked up through thread_staff for
-- every row of every mailbox page.
ALTER TABLE thread ADD COLUMN first_staff_id INTEGER REFERENCES staff (id);
UPDATE thread SET first_staff_id =
    (SELECT staff_id FROM thread_staff WHERE thread_id = thread.id ORDER BY rowid LIMIT 1);
CREATE TRIGGER thread_first_staff AFTER INSERT ON thread_staff
BEGIN
    UPDATE thread SET first_staff_id = NEW.staff_id
     WHERE id = NEW.thread_id AND first_staff_id IS NULL;
END;

-- The practice inbox shows each row's unread marker: with it in the list's index, a page is
-- read from the index alone.
DROP INDEX thread_staff_box;
CREATE INDEX thread_staff_box
    ON thread_staff (staff_id, archived, last_activity_at DESC, thread_id DESC, unread);

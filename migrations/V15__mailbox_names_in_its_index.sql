-- A patient's mailbox names the staff member each thread is with. Kept on the thread as it is
-- shown ("Name, Degree"), in the mailbox's index, instead of a staff lookup and two joins of
-- text for every row of every mailbox page (a third of the page's statement, measured in the
-- benchmark; see the README). Empty until a staff member is on the thread: the page then says
-- "The practice".
ALTER TABLE thread ADD COLUMN with_name TEXT NOT NULL DEFAULT '';

UPDATE thread SET with_name = coalesce(
    (SELECT s.name || CASE WHEN s.degree = '' THEN '' ELSE ', ' || s.degree END
       FROM staff s WHERE s.id = thread.first_staff_id), '')
 WHERE first_staff_id IS NOT NULL;

-- The thread's first staff member, and their name as shown, when that first row is added.
DROP TRIGGER thread_first_staff;
CREATE TRIGGER thread_first_staff AFTER INSERT ON thread_staff
BEGIN
    UPDATE thread SET first_staff_id = NEW.staff_id,
                      with_name = coalesce(
                          (SELECT s.name || CASE WHEN s.degree = '' THEN '' ELSE ', ' || s.degree END
                             FROM staff s WHERE s.id = NEW.staff_id), '')
     WHERE id = NEW.thread_id AND first_staff_id IS NULL;
END;

-- A member renamed (or given another degree): every thread they are named on follows. Rare, so
-- the threads are found by reading them all rather than by another index kept on every send.
CREATE TRIGGER staff_named_on_threads AFTER UPDATE OF name, degree ON staff
WHEN NEW.name IS NOT OLD.name OR NEW.degree IS NOT OLD.degree
BEGIN
    UPDATE thread SET with_name = NEW.name || CASE WHEN NEW.degree = '' THEN '' ELSE ', ' || NEW.degree END
     WHERE first_staff_id = NEW.id;
END;

DROP INDEX thread_by_patient;
CREATE INDEX thread_by_patient ON thread (patient_id, last_visible_at DESC, id DESC, subject,
    visible_count, with_name, last_staff_message_id);

-- The practice inbox lists each thread with its patient's name and date of birth, its subject
-- and its number of messages. Kept on each staff member's row of the thread, and in the two
-- indexes the lists are read from, a page of a box is one index range: before, every row also
-- took a thread lookup and a patient lookup, and at 1,000,000 messages those rows lay on pages
-- that every connection copied into its own cache (measured in the benchmark; see the README).
-- The triggers keep the copies: set when a row is added, changed with the thread or the patient.
ALTER TABLE thread_staff ADD COLUMN subject TEXT NOT NULL DEFAULT '';
ALTER TABLE thread_staff ADD COLUMN visible_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE thread_staff ADD COLUMN patient_name TEXT NOT NULL DEFAULT '';
ALTER TABLE thread_staff ADD COLUMN patient_born TEXT NOT NULL DEFAULT '';

DROP INDEX thread_staff_box;
DROP INDEX thread_staff_sent;

UPDATE thread_staff SET (subject, visible_count, patient_name, patient_born) =
    (SELECT t.subject, t.visible_count, p.first_name || ' ' || p.last_name, p.date_of_birth
       FROM thread t JOIN patient p ON p.id = t.patient_id
      WHERE t.id = thread_staff.thread_id);

CREATE INDEX thread_staff_box ON thread_staff
    (staff_id, archived, last_activity_at DESC, thread_id DESC,
     unread, visible_count, subject, patient_name, patient_born);
CREATE INDEX thread_staff_sent ON thread_staff
    (staff_id, has_sent, last_activity_at DESC, thread_id DESC,
     unread, visible_count, subject, patient_name, patient_born);

CREATE TRIGGER thread_staff_listed AFTER INSERT ON thread_staff
BEGIN
    UPDATE thread_staff SET (subject, visible_count, patient_name, patient_born) =
        (SELECT t.subject, t.visible_count, p.first_name || ' ' || p.last_name, p.date_of_birth
           FROM thread t JOIN patient p ON p.id = t.patient_id
          WHERE t.id = NEW.thread_id)
     WHERE thread_id = NEW.thread_id AND staff_id = NEW.staff_id;
END;

CREATE TRIGGER thread_listed AFTER UPDATE OF subject, visible_count ON thread
WHEN NEW.subject IS NOT OLD.subject OR NEW.visible_count IS NOT OLD.visible_count
BEGIN
    UPDATE thread_staff SET subject = NEW.subject, visible_count = NEW.visible_count
     WHERE thread_id = NEW.id;
END;

CREATE TRIGGER patient_listed AFTER UPDATE OF first_name, last_name, date_of_birth ON patient
WHEN NEW.first_name IS NOT OLD.first_name OR NEW.last_name IS NOT OLD.last_name
  OR NEW.date_of_birth IS NOT OLD.date_of_birth
BEGIN
    UPDATE thread_staff SET patient_name = NEW.first_name || ' ' || NEW.last_name,
                            patient_born = NEW.date_of_birth
     WHERE thread_id IN (SELECT id FROM thread WHERE patient_id = NEW.id);
END;

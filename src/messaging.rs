//! The rules of messaging (PRODUCT.md, rules 1-8), with no HTTP in them. Sender identity always
//! comes from the caller passed in, never from a form; every lookup takes the caller.

use crate::attachments::{Received, Store};
use crate::audit::{self, Actor};
use crate::db::accounts::{self, Staff};
use crate::db::attachments::{self, Attachment, NewAttachment};
use crate::db::messages::{self, NewMessage, Sender, ShownMessage, Thread};
use crate::db::practice::Practice;
use crate::db::{patients, Pool};
use crate::error::{AppError, FieldErrors};
use crate::outbox;
use rusqlite::Connection;

/// Shown, word for word, in the Messages section (rule 7).
pub const DISCLAIMER: &str = "Messages are only for non-urgent issues. Call your doctor's office if you need an immediate response. Dial 911 for life-threatening situations.";

pub const SUBJECT_MAX: usize = 200;
pub const BODY_MAX: usize = 20_000;
pub const LINK_MAX: usize = 2_000;

/// What a person typed: a subject (new threads only), a body, an optional hyperlink.
pub struct Draft<'a> {
    pub subject: Option<&'a str>,
    pub body: &'a str,
    pub link: &'a str,
    /// The one file, already received and checked (see `attachments::Store::receive`).
    pub file: Option<(&'a Store, &'a Received)>,
}

impl Draft<'_> {
    /// Puts the file into the store before the message that references it is written, so a
    /// reference only ever points at a complete file.
    fn keep_file(&self) -> Result<(), AppError> {
        if let Some((store, file)) = self.file {
            store
                .keep(file)
                .map_err(|e| AppError::internal("storing an attachment", e))?;
        }
        Ok(())
    }

    /// What the send writes, owned: the write runs on the writer thread.
    fn letter(&self) -> Letter {
        Letter {
            body: self.body.to_owned(),
            link_url: self.link.trim().to_owned(),
            file: self.file.map(|(_, f)| StoredFile {
                sha256: f.sha256.clone(),
                size: f.size,
                media_type: f.media_type,
                file_name: f.file_name.clone(),
            }),
        }
    }

    fn check(&self) -> FieldErrors {
        let mut errors = FieldErrors::default();
        if let Some(subject) = self.subject {
            if subject.trim().is_empty() {
                errors.add("subject", "Enter a subject.");
            } else if subject.chars().count() > SUBJECT_MAX {
                errors.add(
                    "subject",
                    format!(
                        "Use at most {SUBJECT_MAX} characters for the subject (this one has {}).",
                        subject.chars().count()
                    ),
                );
            }
        }
        let body_chars = self.body.chars().count();
        if self.body.trim().is_empty() {
            errors.add("body", "Write your message.");
        } else if body_chars > BODY_MAX {
            errors.add("body", format!("A message can be at most {BODY_MAX} characters; this one has {body_chars}. Shorten it or send it in two parts."));
        }
        if let Some(problem) = link_problem(self.link) {
            errors.add("link", problem);
        }
        errors
    }
}

/// A checked draft as the database receives it. A send's transaction runs on the writer
/// thread (`Pool::write_together`), together with the other sends and thread views waiting at
/// that moment: one commit, one flush and one copy of each shared page (the thread's, the
/// audit log's newest) for all of them, instead of one each.
struct Letter {
    body: String,
    link_url: String,
    file: Option<StoredFile>,
}

/// An attachment already kept in the store (`Draft::keep_file`).
struct StoredFile {
    sha256: String,
    size: u64,
    media_type: &'static str,
    file_name: String,
}

impl Letter {
    /// Writes the message, and its attachment row, inside the transaction it is given (the
    /// writer thread's, within the send's savepoint).
    #[allow(clippy::too_many_arguments)]
    fn insert(
        &self,
        tx: &Connection,
        thread_id: i64,
        sender: Sender,
        key: Option<&str>,
        actor: &Actor,
        patient_id: i64,
        now: i64,
    ) -> rusqlite::Result<i64> {
        let message = messages::insert_message(
            tx,
            &NewMessage {
                thread_id,
                sender,
                body: &self.body,
                link_url: &self.link_url,
                internal: false,
                idempotency_key: key,
            },
            now,
        )?;
        if let Some(file) = &self.file {
            let id = attachments::insert(
                tx,
                &NewAttachment {
                    message_id: message,
                    sha256: &file.sha256,
                    size: file.size,
                    media_type: file.media_type,
                    file_name: &file.file_name,
                },
                now,
            )?;
            audit::record(
                tx,
                actor,
                "attachment.upload",
                Some(patient_id),
                &format!("attachment {id} message {message}"),
                now,
            )?;
        }
        Ok(message)
    }
}

/// A hyperlink must be a plain http or https address; empty is fine.
pub fn link_problem(link: &str) -> Option<&'static str> {
    let link = link.trim();
    if link.is_empty() {
        return None;
    }
    let rest = link
        .strip_prefix("https://")
        .or_else(|| link.strip_prefix("http://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
    let valid = link.chars().count() <= LINK_MAX
        && !link
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '<' || c == '>')
        && host.is_some_and(|h| !h.is_empty() && !h.contains('@'));
    (!valid).then_some("Enter a web address that starts with http:// or https://, for example https://example.org/page.")
}

pub enum Sent {
    /// The thread now holds the message (or held it already: a repeated submit).
    Thread(i64),
    Invalid(FieldErrors),
}

/// The portal caller: an account acting for one patient, as themselves or as a caregiver.
#[derive(Clone, Copy, Debug)]
pub struct PortalCaller {
    pub account_id: i64,
    pub patient_id: i64,
    pub caregiver: bool,
}

impl PortalCaller {
    fn sender(&self) -> Sender {
        Sender::Portal {
            account_id: self.account_id,
            caregiver: self.caregiver,
        }
    }
}

/// Files a message into the chart in the sender's transaction.
fn chart_message(
    tx: &Connection,
    patient_id: i64,
    message_id: i64,
    subject: &str,
    staff_id: Option<i64>,
    now: i64,
) -> rusqlite::Result<()> {
    messages::file_to_chart(
        tx,
        patient_id,
        message_id,
        &format!("Message: {subject}"),
        staff_id,
        now,
    )?;
    Ok(())
}

/// Keeps the draft's file in the store, then writes the send on the writer thread
/// (`Pool::write_together`): `write` gets the transaction, the draft as written and the
/// idempotency key, and returns the thread, unless this sender already sent a message with this
/// key (checked again in the write: two clicks at once send one message).
fn write_send(
    pool: &Pool,
    draft: &Draft,
    key: Option<String>,
    sender: Sender,
    write: impl FnOnce(&Connection, &Letter, Option<&str>) -> rusqlite::Result<i64> + Send + 'static,
) -> Result<Sent, AppError> {
    draft.keep_file()?;
    let letter = draft.letter();
    let thread = pool.write_together(move |tx| {
        if let Some(existing) = already_sent(tx, key.as_deref(), sender)? {
            return Ok(existing);
        }
        write(tx, &letter, key.as_deref())
    })?;
    Ok(Sent::Thread(thread))
}

/// The audit entry of a sent message, in the send's transaction.
fn audit_send(
    tx: &Connection,
    actor: &Actor,
    patient_id: i64,
    thread_id: i64,
    message_id: i64,
    now: i64,
) -> rusqlite::Result<()> {
    audit::record(
        tx,
        actor,
        "message.send",
        Some(patient_id),
        &format!("thread {thread_id} message {message_id}"),
        now,
    )
}

/// The thread a message with this idempotency key already went to, if this sender sent it.
fn already_sent(
    conn: &Connection,
    key: Option<&str>,
    sender: Sender,
) -> rusqlite::Result<Option<i64>> {
    match key {
        Some(key) => messages::thread_of_key(conn, key, sender),
        None => Ok(None),
    }
}

fn clean_key(key: &str) -> Option<String> {
    let key = key.trim();
    (key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit())).then(|| key.to_owned())
}

/// A patient (or caregiver) starts a thread with a practice member of level 3 or higher.
#[allow(clippy::too_many_arguments)]
pub fn patient_starts(
    pool: &Pool,
    practice: &Practice,
    caller: PortalCaller,
    recipient: &str,
    draft: &Draft,
    key: &str,
    client: &str,
    now: i64,
) -> Result<Sent, AppError> {
    let key = clean_key(key);
    let recipient = {
        let conn = pool.get();
        if let Some(thread) = already_sent(&conn, key.as_deref(), caller.sender())? {
            return Ok(Sent::Thread(thread));
        }
        let id = recipient.trim().parse::<i64>().ok();
        accounts::message_recipients(&conn)?
            .into_iter()
            .find(|s| Some(s.id) == id)
    };
    // "To" comes first on the form, so its problem comes first in the summary.
    let mut errors = FieldErrors::default();
    if recipient.is_none() {
        errors.add(
            "recipient",
            "Choose who should receive your message from the list.",
        );
    }
    for (field, message) in draft.check().iter() {
        errors.add(field, message);
    }
    let (Some(recipient), true) = (recipient, errors.is_empty()) else {
        return Ok(Sent::Invalid(errors));
    };
    let subject = draft.subject.unwrap_or("").trim().to_owned();
    let actor = Actor::portal(caller.account_id, client);
    let auto_chart = practice.auto_chart;
    write_send(pool, draft, key, caller.sender(), move |tx, letter, key| {
        let thread = messages::insert_thread(tx, caller.patient_id, &subject, "portal", now)?;
        let message = letter.insert(
            tx,
            thread,
            caller.sender(),
            key,
            &actor,
            caller.patient_id,
            now,
        )?;
        messages::address_to_staff(tx, thread, recipient.id, true, false, now)?;
        if auto_chart {
            chart_message(tx, caller.patient_id, message, &subject, None, now)?;
        }
        audit_send(tx, &actor, caller.patient_id, thread, message, now)?;
        Ok(thread)
    })
}

/// A patient (or caregiver) replies in one of the patient's threads.
#[allow(clippy::too_many_arguments)]
pub fn patient_replies(
    pool: &Pool,
    practice: &Practice,
    caller: PortalCaller,
    thread_id: i64,
    draft: &Draft,
    key: &str,
    client: &str,
    now: i64,
) -> Result<Sent, AppError> {
    let key = clean_key(key);
    let thread = {
        let conn = pool.get();
        let thread = messages::thread_for_patient(&conn, caller.patient_id, thread_id)?
            .ok_or(AppError::NotFound)?;
        if let Some(existing) = already_sent(&conn, key.as_deref(), caller.sender())? {
            return Ok(Sent::Thread(existing));
        }
        thread
    };
    let errors = draft.check();
    if !errors.is_empty() {
        return Ok(Sent::Invalid(errors));
    }
    let actor = Actor::portal(caller.account_id, client);
    let auto_chart = practice.auto_chart;
    write_send(pool, draft, key, caller.sender(), move |tx, letter, key| {
        let message = letter.insert(
            tx,
            thread.id,
            caller.sender(),
            key,
            &actor,
            thread.patient_id,
            now,
        )?;
        messages::patient_wrote(tx, thread.id, now)?;
        if auto_chart {
            chart_message(tx, thread.patient_id, message, &thread.subject, None, now)?;
        }
        audit_send(tx, &actor, thread.patient_id, thread.id, message, now)?;
        Ok(thread.id)
    })
}

/// A staff member starts a thread with an enrolled patient: exactly one notification email to
/// each address with active access to the patient (rule 8), in the same transaction.
#[allow(clippy::too_many_arguments)]
pub fn staff_starts(
    pool: &Pool,
    practice: &Practice,
    staff: &Staff,
    patient_id: i64,
    draft: &Draft,
    chart: bool,
    key: &str,
    base_url: &str,
    client: &str,
    now: i64,
) -> Result<Sent, AppError> {
    let key = clean_key(key);
    let sender = Sender::Staff(staff.id);
    let patient = {
        let conn = pool.get();
        let patient = patients::get(&conn, patient_id, now)?.ok_or(AppError::NotFound)?;
        if let Some(thread) = already_sent(&conn, key.as_deref(), sender)? {
            return Ok(Sent::Thread(thread));
        }
        patient
    };
    let mut errors = draft.check();
    if !practice.messaging_enabled {
        errors.add("patient", "Patient messaging is switched off in the practice settings, so the patient could not read a message.");
    } else if !patient.reachable {
        errors.add("patient", "Nobody has portal access to this patient's record, so nobody could read a message. Invite the patient or a caregiver first.");
    }
    if !errors.is_empty() {
        return Ok(Sent::Invalid(errors));
    }
    let subject = draft.subject.unwrap_or("").trim().to_owned();
    let actor = Actor::staff(staff.id, client);
    let (staff_id, practice_name, base_url) =
        (staff.id, practice.name.clone(), base_url.to_owned());
    write_send(pool, draft, key, sender, move |tx, letter, key| {
        let thread = messages::insert_thread(tx, patient.id, &subject, "staff", now)?;
        let message = letter.insert(tx, thread, sender, key, &actor, patient.id, now)?;
        messages::address_to_staff(tx, thread, staff_id, false, true, now)?;
        for email in accounts::portal_emails_of_patient(tx, patient.id)? {
            outbox::queue_new_message_notice(tx, &practice_name, &email, &base_url, now)?;
        }
        if chart {
            chart_message(tx, patient.id, message, &subject, Some(staff_id), now)?;
        }
        audit_send(tx, &actor, patient.id, thread, message, now)?;
        Ok(thread)
    })
}

/// A staff member replies in a thread: no email (rule 8).
#[allow(clippy::too_many_arguments)]
pub fn staff_replies(
    pool: &Pool,
    staff: &Staff,
    thread_id: i64,
    draft: &Draft,
    chart: bool,
    key: &str,
    client: &str,
    now: i64,
) -> Result<Sent, AppError> {
    let key = clean_key(key);
    let sender = Sender::Staff(staff.id);
    let thread = {
        let conn = pool.get();
        let thread = messages::thread_for_staff(&conn, staff.id, staff.access_level, thread_id)?
            .ok_or(AppError::NotFound)?;
        if let Some(existing) = already_sent(&conn, key.as_deref(), sender)? {
            return Ok(Sent::Thread(existing));
        }
        thread
    };
    let errors = draft.check();
    if !errors.is_empty() {
        return Ok(Sent::Invalid(errors));
    }
    let actor = Actor::staff(staff.id, client);
    let staff_id = staff.id;
    write_send(pool, draft, key, sender, move |tx, letter, key| {
        let message = letter.insert(tx, thread.id, sender, key, &actor, thread.patient_id, now)?;
        messages::staff_wrote(tx, thread.id, now)?;
        messages::address_to_staff(tx, thread.id, staff_id, false, true, now)?;
        if chart {
            chart_message(
                tx,
                thread.patient_id,
                message,
                &thread.subject,
                Some(staff_id),
                now,
            )?;
        }
        audit_send(tx, &actor, thread.patient_id, thread.id, message, now)?;
        Ok(thread.id)
    })
}

/// Opens a thread for a staff member: the whole thread with internal notes; it becomes read
/// for them. The read is audited.
pub fn staff_reads(
    pool: &Pool,
    staff: &Staff,
    thread_id: i64,
    client: &str,
    now: i64,
) -> Result<(Thread, Vec<ShownMessage>), AppError> {
    let thread = messages::thread_for_staff(&pool.get(), staff.id, staff.access_level, thread_id)?
        .ok_or(AppError::NotFound)?;
    let staff_id = staff.id;
    read_thread(
        pool,
        thread,
        Actor::staff(staff.id, client),
        true,
        now,
        move |tx, id| messages::mark_read_staff(tx, id, staff_id).map(|_| ()),
    )
}

/// Opens a thread for a portal caller: messages the patient may see, oldest first; it becomes
/// read for this account.
pub fn patient_reads(
    pool: &Pool,
    caller: PortalCaller,
    thread_id: i64,
    client: &str,
    now: i64,
) -> Result<(Thread, Vec<ShownMessage>), AppError> {
    let thread = portal_thread(pool, caller, thread_id)?;
    read_thread(
        pool,
        thread,
        Actor::portal(caller.account_id, client),
        false,
        now,
        portal_read_marker(caller),
    )
}

/// A thread of the caller's patient; not found for any other.
fn portal_thread(pool: &Pool, caller: PortalCaller, thread_id: i64) -> Result<Thread, AppError> {
    messages::thread_for_patient(&pool.get(), caller.patient_id, thread_id)?
        .ok_or(AppError::NotFound)
}

/// Marks a thread read for the portal caller's account (see `write_view`).
fn portal_read_marker(
    caller: PortalCaller,
) -> impl FnOnce(&Connection, i64) -> rusqlite::Result<()> + Send + 'static {
    move |tx, id| messages::mark_read_portal(tx, id, caller.account_id).map(|_| ())
}

/// The write of `patient_reads` alone, without reading the messages, for a thread the caller
/// may open (else not found, as there): for the benchmark, which sets what this write costs
/// beside the static file's cost (a thread page's least cost). No route calls it.
#[doc(hidden)]
pub fn patient_view_written(
    pool: &Pool,
    caller: PortalCaller,
    thread_id: i64,
    client: &str,
    now: i64,
) -> Result<(), AppError> {
    let patient_id = portal_thread(pool, caller, thread_id)?.patient_id;
    let actor = Actor::portal(caller.account_id, client);
    let mark_read = portal_read_marker(caller);
    pool.write_together(move |tx| write_view(tx, &actor, thread_id, patient_id, now, mark_read))?;
    Ok(())
}

/// Marks a thread the caller may open as read for them, audits the read, and returns its
/// messages (internal notes only for staff), in one transaction, durable before it returns.
///
/// That transaction is the writer thread's, shared with other requests' reads of threads
/// (`Pool::write_together`): one transaction per request cost more than the rest of the page
/// under concurrent load. The messages are read there too, on the writer's connection, whose
/// page cache its own commits leave warm (every commit empties the other connections' caches).
fn read_thread(
    pool: &Pool,
    thread: Thread,
    actor: Actor,
    with_internal: bool,
    now: i64,
    mark_read: impl FnOnce(&Connection, i64) -> rusqlite::Result<()> + Send + 'static,
) -> Result<(Thread, Vec<ShownMessage>), AppError> {
    let (id, patient_id) = (thread.id, thread.patient_id);
    let shown = pool.write_together(move |tx| {
        write_view(tx, &actor, id, patient_id, now, mark_read)?;
        messages::messages(tx, id, with_internal)
    })?;
    Ok((thread, shown))
}

/// What a view of a thread writes: the viewer's read marker and the audit entry of the read.
fn write_view(
    tx: &Connection,
    actor: &Actor,
    thread_id: i64,
    patient_id: i64,
    now: i64,
    mark_read: impl FnOnce(&Connection, i64) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    mark_read(tx, thread_id)?;
    audit::record(
        tx,
        actor,
        "thread.view",
        Some(patient_id),
        &format!("thread {thread_id}"),
        now,
    )
}

/// Runs one change of a staff member's view of a thread they may open, audited.
fn staff_change(
    conn: &mut Connection,
    staff: &Staff,
    thread_id: i64,
    action: &str,
    client: &str,
    now: i64,
    change: impl FnOnce(&Connection, &Thread) -> rusqlite::Result<()>,
) -> Result<(), AppError> {
    let thread = messages::thread_for_staff(conn, staff.id, staff.access_level, thread_id)?
        .ok_or(AppError::NotFound)?;
    let tx = crate::db::begin_write(&*conn)?;
    change(&tx, &thread)?;
    audit::record(
        &tx,
        &Actor::staff(staff.id, client),
        action,
        Some(thread.patient_id),
        &format!("thread {}", thread.id),
        now,
    )?;
    tx.commit()?;
    Ok(())
}

pub fn mark_unread(
    conn: &mut Connection,
    staff: &Staff,
    thread_id: i64,
    client: &str,
    now: i64,
) -> Result<(), AppError> {
    staff_change(
        conn,
        staff,
        thread_id,
        "thread.mark_unread",
        client,
        now,
        |tx, t| messages::address_to_staff(tx, t.id, staff.id, true, false, now),
    )
}

/// Archives (or unarchives) a thread for this staff member, or for everyone on it when the
/// practice says so. Archiving hides; nothing is erased.
pub fn archive(
    conn: &mut Connection,
    practice: &Practice,
    staff: &Staff,
    thread_id: i64,
    archived: bool,
    client: &str,
    now: i64,
) -> Result<(), AppError> {
    let action = if archived {
        "thread.archive"
    } else {
        "thread.unarchive"
    };
    staff_change(conn, staff, thread_id, action, client, now, |tx, t| {
        if messages::staff_state(tx, t.id, staff.id)?.is_none() {
            messages::address_to_staff(tx, t.id, staff.id, false, false, now)?;
        }
        messages::set_archived(tx, t.id, staff.id, archived, practice.archive_for_everyone)?;
        Ok(())
    })
}

/// Forwards a thread to a colleague with an internal note the patient never sees; `move_it`
/// also takes it out of the forwarder's inbox.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    conn: &mut Connection,
    staff: &Staff,
    thread_id: i64,
    to: &str,
    note: &str,
    move_it: bool,
    client: &str,
    now: i64,
) -> Result<Result<(), FieldErrors>, AppError> {
    let mut errors = FieldErrors::default();
    let colleague = to
        .trim()
        .parse::<i64>()
        .ok()
        .and_then(|id| accounts::active_staff(conn, id).ok().flatten())
        .filter(|c| c.id != staff.id);
    if colleague.is_none() {
        errors.add("to", "Choose a colleague from the list.");
    }
    if note.chars().count() > BODY_MAX {
        errors.add("note", format!("Use at most {BODY_MAX} characters."));
    }
    let Some(colleague) = colleague.filter(|_| errors.is_empty()) else {
        return Ok(Err(errors));
    };
    let text = if note.trim().is_empty() {
        format!("Forwarded to {}.", colleague.name)
    } else {
        format!("Forwarded to {}: {}", colleague.name, note.trim())
    };
    staff_change(
        conn,
        staff,
        thread_id,
        "thread.forward",
        client,
        now,
        |tx, t| {
            messages::insert_message(
                tx,
                &NewMessage {
                    thread_id: t.id,
                    sender: Sender::Staff(staff.id),
                    body: &text,
                    link_url: "",
                    internal: true,
                    idempotency_key: None,
                },
                now,
            )?;
            messages::address_to_staff(tx, t.id, colleague.id, true, false, now)?;
            if messages::staff_state(tx, t.id, staff.id)?.is_none() {
                messages::address_to_staff(tx, t.id, staff.id, false, false, now)?;
            }
            if move_it {
                messages::set_archived(tx, t.id, staff.id, true, false)?;
            }
            Ok(())
        },
    )?;
    Ok(Ok(()))
}

/// Files every message of the thread the patient can see into the chart; returns how many
/// were new to the chart.
pub fn add_to_chart(
    conn: &mut Connection,
    staff: &Staff,
    thread_id: i64,
    client: &str,
    now: i64,
) -> Result<usize, AppError> {
    let mut filed = 0;
    staff_change(
        conn,
        staff,
        thread_id,
        "chart.file",
        client,
        now,
        |tx, t| {
            for m in messages::messages(tx, t.id, false)? {
                if messages::file_to_chart(
                    tx,
                    t.patient_id,
                    m.id,
                    &format!("Message: {}", t.subject),
                    Some(staff.id),
                    now,
                )? {
                    filed += 1;
                }
            }
            Ok(())
        },
    )?;
    Ok(filed)
}

/// An attachment of one of the patient's threads, for download by a portal caller; audited.
pub fn attachment_for_patient(
    conn: &Connection,
    caller: PortalCaller,
    thread_id: i64,
    attachment_id: i64,
    client: &str,
    now: i64,
) -> Result<Attachment, AppError> {
    let thread = messages::thread_for_patient(conn, caller.patient_id, thread_id)?
        .ok_or(AppError::NotFound)?;
    let found =
        attachments::in_thread(conn, thread.id, attachment_id, false)?.ok_or(AppError::NotFound)?;
    audit::record(
        conn,
        &Actor::portal(caller.account_id, client),
        "attachment.download",
        Some(thread.patient_id),
        &format!("attachment {}", found.id),
        now,
    )?;
    Ok(found)
}

/// Categories of a document filed into the chart.
pub const CHART_CATEGORIES: &[&str] = &["Lab result", "Imaging", "Letter", "Other"];

/// A thread this staff member may open, and one of its attachments.
fn staff_attachment(
    conn: &Connection,
    staff: &Staff,
    thread_id: i64,
    attachment_id: i64,
) -> Result<(Thread, Attachment), AppError> {
    let thread = messages::thread_for_staff(conn, staff.id, staff.access_level, thread_id)?
        .ok_or(AppError::NotFound)?;
    let found =
        attachments::in_thread(conn, thread.id, attachment_id, true)?.ok_or(AppError::NotFound)?;
    Ok((thread, found))
}

/// An attachment of a thread this staff member may open, for download; audited.
pub fn attachment_for_staff(
    conn: &Connection,
    staff: &Staff,
    thread_id: i64,
    attachment_id: i64,
    client: &str,
    now: i64,
) -> Result<Attachment, AppError> {
    let (thread, found) = staff_attachment(conn, staff, thread_id, attachment_id)?;
    audit::record(
        conn,
        &Actor::staff(staff.id, client),
        "attachment.download",
        Some(thread.patient_id),
        &format!("attachment {}", found.id),
        now,
    )?;
    Ok(found)
}

/// Files an attachment into the patient's chart under a category, without copying its bytes.
#[allow(clippy::too_many_arguments)]
pub fn file_attachment(
    conn: &mut Connection,
    staff: &Staff,
    thread_id: i64,
    attachment_id: i64,
    category: &str,
    client: &str,
    now: i64,
) -> Result<(), AppError> {
    let category = CHART_CATEGORIES
        .iter()
        .find(|c| **c == category)
        .ok_or_else(|| AppError::BadRequest("Choose a category from the list.".into()))?;
    let (thread, found) = staff_attachment(conn, staff, thread_id, attachment_id)?;
    let tx = crate::db::begin_write(&*conn)?;
    attachments::file_to_chart(&tx, thread.patient_id, &found, category, staff.id, now)?;
    audit::record(
        &tx,
        &Actor::staff(staff.id, client),
        "chart.file",
        Some(thread.patient_id),
        &format!("attachment {} as {category}", found.id),
        now,
    )?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links() {
        assert_eq!(link_problem(""), None);
        assert_eq!(link_problem("https://example.org/a?b=c"), None);
        assert_eq!(link_problem("http://example.org"), None);
        for bad in [
            "javascript:alert(1)",
            "ftp://x.org",
            "https://",
            "https:// x",
            "data:text/html,x",
            "//x.org",
            "https://a@b.org",
            "https://x.org/\"onmouseover",
        ] {
            assert!(link_problem(bad).is_some(), "{bad}");
        }
    }
    /// Sixteen patients reply at once, and one of them clicks another form twice, while another
    /// writer holds the write turn: their sends queue for the writer thread and commit together,
    /// in at most two transactions for all (one for a send taken before the rest were queued);
    /// each is written whole, with its audit entry, and answered with its thread; the two clicks
    /// of one form, in one transaction, send one message.
    #[test]
    fn sends_made_at_once_share_at_most_two_transactions_and_each_is_written_whole() {
        use crate::db::accounts::NewStaff;
        use crate::db::{begin_write, practice, test_folder, DataDir};
        use std::sync::Arc;

        let path = test_folder("sends-together");
        let data = DataDir::open(&path).unwrap();
        let setup = data.connect().unwrap();
        let now = 1_800_000_000;
        practice::insert(&setup, "Practice", true, false, now).unwrap();
        let practice = practice::get(&setup).unwrap().unwrap();
        let doctor = accounts::insert_staff(
            &setup,
            &NewStaff {
                email: "doc@example.org",
                name: "Dr Doc",
                degree: "MD",
                access_level: 4,
                is_admin: false,
                password_hash: "x",
            },
            now,
        )
        .unwrap();
        let pool = Arc::new(Pool::new(&data, 4, 8).unwrap());
        let callers: Vec<(PortalCaller, i64)> = (0..16)
            .map(|i| {
                let patient = patients::insert(
                    &setup,
                    &patients::PatientFields {
                        first_name: "Pat",
                        last_name: &format!("Number{i}"),
                        date_of_birth: "1980-01-01",
                        email: &format!("p{i}@example.org"),
                        phone: "",
                    },
                    now,
                )
                .unwrap();
                let account = accounts::insert_portal_account(
                    &setup,
                    &format!("p{i}@example.org"),
                    "Pat",
                    "x",
                    now,
                )
                .unwrap();
                accounts::grant_access(&setup, account, patient, "self", "", now).unwrap();
                let caller = PortalCaller {
                    account_id: account,
                    patient_id: patient,
                    caregiver: false,
                };
                let draft = Draft {
                    subject: Some("Refill"),
                    body: "First",
                    link: "",
                    file: None,
                };
                let key = format!("{i:064x}");
                let sent = patient_starts(
                    &pool,
                    &practice,
                    caller,
                    &doctor.to_string(),
                    &draft,
                    &key,
                    "test",
                    now,
                )
                .unwrap();
                let Sent::Thread(thread) = sent else {
                    panic!("the first message was refused")
                };
                (caller, thread)
            })
            .collect();

        let holder = data.connect().unwrap();
        let turn = begin_write(&holder).unwrap();
        let (_, submitted_before) = pool.writer_counts();
        let sending: Vec<_> = callers
            .iter()
            .enumerate()
            .map(|(i, &(caller, thread))| {
                let (pool, practice) = (Arc::clone(&pool), practice.clone());
                std::thread::spawn(move || {
                    let body = format!("Reply {i}");
                    let draft = Draft {
                        subject: None,
                        body: &body,
                        link: "",
                        file: None,
                    };
                    let key = format!("{:064x}", 100 + i);
                    patient_replies(&pool, &practice, caller, thread, &draft, &key, "test", now)
                })
            })
            .collect();
        let twice: Vec<_> = (0..2)
            .map(|_| {
                let (pool, practice) = (Arc::clone(&pool), practice.clone());
                let (caller, thread) = callers[0];
                std::thread::spawn(move || {
                    let draft = Draft {
                        subject: None,
                        body: "Clicked twice",
                        link: "",
                        file: None,
                    };
                    let key = "e".repeat(64);
                    patient_replies(&pool, &practice, caller, thread, &draft, &key, "test", now)
                })
            })
            .collect();
        let waited = std::time::Instant::now();
        while pool.writer_counts().1 < submitted_before + 18 {
            assert!(
                waited.elapsed() < std::time::Duration::from_secs(20),
                "the sends did not queue for the writer thread"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let (batches_before, _) = pool.writer_counts();
        drop(turn);
        for (sender, &(_, thread)) in sending.into_iter().zip(&callers) {
            match sender.join().unwrap().unwrap() {
                Sent::Thread(id) => assert_eq!(id, thread),
                Sent::Invalid(_) => panic!("a reply was refused"),
            }
        }
        for click in twice {
            match click.join().unwrap().unwrap() {
                Sent::Thread(id) => assert_eq!(id, callers[0].1, "both clicks land on the thread"),
                Sent::Invalid(_) => panic!("a click was refused"),
            }
        }
        let used = pool.writer_counts().0 - batches_before;
        assert!(
            used <= 2,
            "18 sends queued together took {used} transactions"
        );

        let reader = data.connect().unwrap();
        for (i, &(_, thread)) in callers.iter().enumerate() {
            let bodies: Vec<String> = messages::messages(&reader, thread, false)
                .unwrap()
                .into_iter()
                .map(|m| m.body)
                .collect();
            let mut expected = vec!["First".to_owned(), format!("Reply {i}")];
            if i == 0 {
                expected.push("Clicked twice".to_owned());
            }
            let mut bodies = bodies;
            bodies.sort();
            expected.sort();
            assert_eq!(bodies, expected);
        }
        let audited: i64 = reader
            .query_row(
                "SELECT count(*) FROM audit_event WHERE action = 'message.send'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            audited, 33,
            "every send audited, the twice-clicked one once"
        );

        // The benchmark's view write: only for a thread the caller may open, audited as a view.
        let (caller, own) = callers[0];
        let views = |reader: &Connection| -> i64 {
            reader
                .query_row(
                    "SELECT count(*) FROM audit_event
                      WHERE action = 'thread.view' AND actor_id = ?1 AND object = ?2",
                    rusqlite::params![caller.account_id, format!("thread {own}")],
                    |r| r.get(0),
                )
                .unwrap()
        };
        assert!(matches!(
            patient_view_written(&pool, caller, callers[1].1, "test", now),
            Err(AppError::NotFound)
        ));
        assert_eq!(views(&reader), 0);
        patient_view_written(&pool, caller, own, "test", now).unwrap();
        assert_eq!(views(&reader), 1);
        pool.stop_threads();
        let _ = std::fs::remove_dir_all(path);
    }
}

//! Threads, messages, and each reader's state. Every lookup takes the caller: a thread that is
//! not theirs is simply not found.

use rusqlite::{params, Connection, OptionalExtension, Row};

#[derive(Clone, Debug)]
pub struct Thread {
    pub id: i64,
    pub patient_id: i64,
    pub subject: String,
    pub visible_count: i64,
    pub last_visible_at: i64,
    /// The practice member the thread was first addressed to, as shown ("Jamie Kim, NP"),
    /// never a colleague it was forwarded to later; empty before anyone is on it. Kept by
    /// triggers (`thread.with_name`); see `with`.
    pub with_name: String,
}

impl Thread {
    /// Who the patient's side names as the practice side of the thread.
    pub fn with(&self) -> &str {
        if self.with_name.is_empty() {
            "The practice"
        } else {
            &self.with_name
        }
    }
}

/// A thread's columns (see `thread_from_row`), as a literal so that each statement naming them
/// is one `concat!`: written at compile time, not formatted on every request.
macro_rules! thread_columns {
    () => {
        "t.id, t.patient_id, t.subject, t.visible_count, t.last_visible_at, t.with_name"
    };
}

fn thread_from_row(r: &Row) -> rusqlite::Result<Thread> {
    Ok(Thread {
        id: r.get(0)?,
        patient_id: r.get(1)?,
        subject: r.get(2)?,
        visible_count: r.get(3)?,
        last_visible_at: r.get(4)?,
        with_name: r.get(5)?,
    })
}

pub fn insert_thread(
    conn: &Connection,
    patient_id: i64,
    subject: &str,
    started_by: &str,
    now: i64,
) -> rusqlite::Result<i64> {
    crate::db::cached_exec(
        conn,
        "INSERT INTO thread (patient_id, subject, started_by, created_at, last_visible_at)
         VALUES (?1, ?2, ?3, ?4, ?4)",
        params![patient_id, subject, started_by, now],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Who sent a message.
#[derive(Clone, Copy, Debug)]
pub enum Sender {
    Staff(i64),
    /// A portal account, as the patient ('self') or as a caregiver.
    Portal {
        account_id: i64,
        caregiver: bool,
    },
}

pub struct NewMessage<'a> {
    pub thread_id: i64,
    pub sender: Sender,
    pub body: &'a str,
    pub link_url: &'a str,
    pub internal: bool,
    pub idempotency_key: Option<&'a str>,
}

/// Appends a message and keeps the thread's counters in step.
pub fn insert_message(conn: &Connection, m: &NewMessage, now: i64) -> rusqlite::Result<i64> {
    let (kind, staff, account, role) = match m.sender {
        Sender::Staff(id) => ("staff", Some(id), None, ""),
        Sender::Portal {
            account_id,
            caregiver,
        } => (
            "portal",
            None,
            Some(account_id),
            if caregiver { "caregiver" } else { "self" },
        ),
    };
    crate::db::cached_exec(
        conn,
        "INSERT INTO message (thread_id, sender_kind, sender_staff_id, sender_account_id,
                              sender_role, body, link_url, internal, idempotency_key, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            m.thread_id,
            kind,
            staff,
            account,
            role,
            m.body,
            m.link_url,
            m.internal,
            m.idempotency_key,
            now
        ],
    )?;
    let id = conn.last_insert_rowid();
    if !m.internal {
        crate::db::cached_exec(
            conn,
            "UPDATE thread SET visible_count = visible_count + 1, last_visible_at = ?2,
                    last_staff_message_id = CASE WHEN ?3 THEN ?4 ELSE last_staff_message_id END
              WHERE id = ?1",
            params![m.thread_id, now, kind == "staff", id],
        )?;
    }
    Ok(id)
}

/// The thread a message with this idempotency key went to, if this sender already sent it.
pub fn thread_of_key(
    conn: &Connection,
    key: &str,
    sender: Sender,
) -> rusqlite::Result<Option<i64>> {
    let (staff, account) = match sender {
        Sender::Staff(id) => (Some(id), None),
        Sender::Portal { account_id, .. } => (None, Some(account_id)),
    };
    crate::db::cached_row(
        conn,
        "SELECT thread_id FROM message WHERE idempotency_key = ?1
            AND sender_staff_id IS ?2 AND sender_account_id IS ?3",
        params![key, staff, account],
        |r| r.get(0),
    )
    .optional()
}

// ---- the portal's side ----

/// A thread of this patient, or nothing.
pub fn thread_for_patient(
    conn: &Connection,
    patient_id: i64,
    thread_id: i64,
) -> rusqlite::Result<Option<Thread>> {
    crate::db::cached_row(
        conn,
        concat!(
            "SELECT ",
            thread_columns!(),
            " FROM thread t WHERE t.id = ?1 AND t.patient_id = ?2"
        ),
        params![thread_id, patient_id],
        thread_from_row,
    )
    .optional()
}

/// One line of a portal mailbox: the thread (with whom it is, see `Thread::with`), and whether
/// the practice wrote since this account last read it.
pub struct MailboxRow {
    pub thread: Thread,
    pub unread: bool,
}

pub(crate) const MAILBOX_SQL: &str = concat!(
    "SELECT ",
    thread_columns!(),
    ",
            t.last_staff_message_id > coalesce((SELECT r.last_read_message_id FROM thread_portal_read r
                                                WHERE r.thread_id = t.id AND r.account_id = ?2), 0)
       FROM thread t
      WHERE t.patient_id = ?1
      ORDER BY t.last_visible_at DESC, t.id DESC
      LIMIT ?3 OFFSET ?4"
);

/// The patient's threads, newest activity first, one page at a time (plus whether more follow).
pub fn mailbox(
    conn: &Connection,
    patient_id: i64,
    account_id: i64,
    page: u32,
    per_page: u32,
) -> rusqlite::Result<(Vec<MailboxRow>, bool)> {
    let mut stmt = conn.prepare_cached(MAILBOX_SQL)?;
    let offset = i64::from(page.saturating_sub(1)) * i64::from(per_page);
    let rows = stmt.query_map(
        params![patient_id, account_id, i64::from(per_page) + 1, offset],
        |r| {
            Ok(MailboxRow {
                thread: thread_from_row(r)?,
                unread: r.get(6)?,
            })
        },
    )?;
    let mut rows: Vec<MailboxRow> = rows.collect::<rusqlite::Result<_>>()?;
    let more = rows.len() > per_page as usize;
    rows.truncate(per_page as usize);
    Ok((rows, more))
}

/// Marks a thread read for a portal account up to the practice's newest message: a change only
/// when there is something new, so a thread opened again writes no page (rows changed: 0 or 1).
pub fn mark_read_portal(
    conn: &Connection,
    thread_id: i64,
    account_id: i64,
) -> rusqlite::Result<usize> {
    crate::db::cached_exec(conn,
        "INSERT INTO thread_portal_read (thread_id, account_id, last_read_message_id)
         SELECT id, ?2, last_staff_message_id FROM thread WHERE id = ?1
         ON CONFLICT (thread_id, account_id) DO UPDATE SET last_read_message_id = excluded.last_read_message_id
          WHERE last_read_message_id <> excluded.last_read_message_id",
        params![thread_id, account_id],
    )
}

/// A message as shown: who sent it, in words, and what.
#[derive(Clone, Debug)]
pub struct ShownMessage {
    pub id: i64,
    pub from_practice: bool,
    pub sender_name: String,
    pub sender_degree: String,
    pub caregiver: bool,
    pub body: String,
    pub link_url: String,
    pub internal: bool,
    pub created_at: i64,
    pub charted: bool,
    pub attachment: Option<ShownAttachment>,
}

/// The file a message carries, as listed under it.
#[derive(Clone, Debug)]
pub struct ShownAttachment {
    pub id: i64,
    pub file_name: String,
    pub size: u64,
    pub charted: bool,
}

/// The thread's messages, oldest first; internal notes only when `with_internal`.
pub fn messages(
    conn: &Connection,
    thread_id: i64,
    with_internal: bool,
) -> rusqlite::Result<Vec<ShownMessage>> {
    let mut stmt = conn.prepare_cached(
        "SELECT m.id, m.sender_kind = 'staff', coalesce(s.name, a.name), coalesce(s.degree, ''),
                m.sender_role = 'caregiver', m.body, m.link_url, m.internal, m.created_at,
                EXISTS (SELECT 1 FROM chart_document d WHERE d.message_id = m.id),
                f.id, f.file_name, f.size,
                EXISTS (SELECT 1 FROM chart_document d WHERE d.attachment_id = f.id)
           FROM message m
           LEFT JOIN staff s ON s.id = m.sender_staff_id
           LEFT JOIN portal_account a ON a.id = m.sender_account_id
           LEFT JOIN attachment f ON f.message_id = m.id
          WHERE m.thread_id = ?1 AND (?2 OR m.internal = 0)
          ORDER BY m.id",
    )?;
    let rows = stmt.query_map(params![thread_id, with_internal], |r| {
        Ok(ShownMessage {
            id: r.get(0)?,
            from_practice: r.get(1)?,
            sender_name: r.get(2)?,
            sender_degree: r.get(3)?,
            caregiver: r.get(4)?,
            body: r.get(5)?,
            link_url: r.get(6)?,
            internal: r.get(7)?,
            created_at: r.get(8)?,
            charted: r.get(9)?,
            attachment: match r.get::<_, Option<i64>>(10)? {
                Some(id) => Some(ShownAttachment {
                    id,
                    file_name: r.get(11)?,
                    size: r.get::<_, i64>(12)? as u64,
                    charted: r.get(13)?,
                }),
                None => None,
            },
        })
    })?;
    rows.collect()
}

// ---- the practice's side ----

/// Adds (or refreshes) a staff member's view of a thread.
pub fn address_to_staff(
    conn: &Connection,
    thread_id: i64,
    staff_id: i64,
    unread: bool,
    sent: bool,
    now: i64,
) -> rusqlite::Result<()> {
    crate::db::cached_exec(conn,
        "INSERT INTO thread_staff (thread_id, staff_id, unread, archived, has_sent, last_activity_at)
         VALUES (?1, ?2, ?3, 0, ?4, ?5)
         ON CONFLICT (thread_id, staff_id) DO UPDATE SET
             unread = excluded.unread OR (unread AND NOT ?4),
             reminded_at = CASE WHEN excluded.unread THEN NULL ELSE reminded_at END,
             archived = 0,
             has_sent = has_sent OR excluded.has_sent,
             last_activity_at = excluded.last_activity_at",
        params![thread_id, staff_id, unread, sent, now],
    )?;
    Ok(())
}

/// New activity from the patient: every staff member on the thread sees it unread, unarchived.
pub fn patient_wrote(conn: &Connection, thread_id: i64, now: i64) -> rusqlite::Result<()> {
    crate::db::cached_exec(conn,
        "UPDATE thread_staff SET unread = 1, archived = 0, last_activity_at = ?2, reminded_at = NULL
          WHERE thread_id = ?1",
        params![thread_id, now],
    )?;
    Ok(())
}

/// Staff activity: the others on the thread see it move up, without it becoming unread.
pub fn staff_wrote(conn: &Connection, thread_id: i64, now: i64) -> rusqlite::Result<()> {
    crate::db::cached_exec(
        conn,
        "UPDATE thread_staff SET last_activity_at = ?2 WHERE thread_id = ?1",
        params![thread_id, now],
    )?;
    Ok(())
}

/// A thread this staff member may open: one on their list, or any when their access level
/// lets them see every patient's messages (level 2 and up).
pub fn thread_for_staff(
    conn: &Connection,
    staff_id: i64,
    level: u8,
    thread_id: i64,
) -> rusqlite::Result<Option<Thread>> {
    crate::db::cached_row(conn,
        concat!(
            "SELECT ", thread_columns!(), " FROM thread t
              WHERE t.id = ?1
                AND (?3 >= 2 OR EXISTS (SELECT 1 FROM thread_staff ts WHERE ts.thread_id = t.id AND ts.staff_id = ?2))"
        ),
        params![thread_id, staff_id, level],
        thread_from_row,
    )
    .optional()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaffBox {
    Inbox,
    Archived,
    Sent,
}

pub struct InboxRow {
    pub thread_id: i64,
    pub subject: String,
    pub visible_count: i64,
    pub patient_name: String,
    pub patient_dob: String,
    pub unread: bool,
    pub last_activity_at: i64,
}

/// A box's rows come from its index alone: each staff member's row of a thread carries what the
/// list shows of the thread and its patient (kept by the triggers of migration V12).
pub(crate) fn staff_box_sql(which: StaffBox) -> &'static str {
    static SQL: std::sync::OnceLock<[String; 3]> = std::sync::OnceLock::new();
    let [inbox, archived, sent] = SQL.get_or_init(|| {
        ["archived = 0", "archived = 1", "has_sent = 1"].map(|filter| {
            format!(
                "SELECT thread_id, subject, visible_count, patient_name, patient_born, unread,
                        last_activity_at
                   FROM thread_staff
                  WHERE staff_id = ?1 AND {filter}
                  ORDER BY last_activity_at DESC, thread_id DESC
                  LIMIT ?2 OFFSET ?3"
            )
        })
    });
    match which {
        StaffBox::Inbox => inbox,
        StaffBox::Archived => archived,
        StaffBox::Sent => sent,
    }
}

/// One page of a staff member's box, newest activity first.
pub fn staff_box(
    conn: &Connection,
    staff_id: i64,
    which: StaffBox,
    page: u32,
    per_page: u32,
) -> rusqlite::Result<(Vec<InboxRow>, bool)> {
    let mut stmt = conn.prepare_cached(staff_box_sql(which))?;
    let offset = i64::from(page.saturating_sub(1)) * i64::from(per_page);
    let rows = stmt.query_map(params![staff_id, i64::from(per_page) + 1, offset], |r| {
        Ok(InboxRow {
            thread_id: r.get(0)?,
            subject: r.get(1)?,
            visible_count: r.get(2)?,
            patient_name: r.get(3)?,
            patient_dob: r.get(4)?,
            unread: r.get(5)?,
            last_activity_at: r.get(6)?,
        })
    })?;
    let mut rows: Vec<InboxRow> = rows.collect::<rusqlite::Result<_>>()?;
    let more = rows.len() > per_page as usize;
    rows.truncate(per_page as usize);
    Ok((rows, more))
}

/// A staff member's unread count, shown on every practice page: kept on their staff row by
/// triggers on `thread_staff` (migration V13), so it is read, not counted.
pub(crate) const UNREAD_COUNT_SQL: &str = "SELECT unread_threads FROM staff WHERE id = ?1";

pub fn unread_count(conn: &Connection, staff_id: i64) -> rusqlite::Result<i64> {
    crate::db::cached_row(conn, UNREAD_COUNT_SQL, [staff_id], |r| r.get(0))
}

/// This staff member's state of a thread (unread, archived), if it is on their list.
pub fn staff_state(
    conn: &Connection,
    thread_id: i64,
    staff_id: i64,
) -> rusqlite::Result<Option<(bool, bool)>> {
    crate::db::cached_row(
        conn,
        "SELECT unread, archived FROM thread_staff WHERE thread_id = ?1 AND staff_id = ?2",
        params![thread_id, staff_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

/// Marks a thread read for a staff member who has it on their list: a change only when it was
/// unread, so a thread opened again writes no page (SQLite rewrites the index entries of a row
/// set to the value it already has). Rows changed: 0 or 1.
pub fn mark_read_staff(
    conn: &Connection,
    thread_id: i64,
    staff_id: i64,
) -> rusqlite::Result<usize> {
    crate::db::cached_exec(
        conn,
        "UPDATE thread_staff SET unread = 0 WHERE thread_id = ?1 AND staff_id = ?2 AND unread = 1",
        params![thread_id, staff_id],
    )
}

/// Archives or unarchives for one staff member, or (`everyone`) for all on the thread.
pub fn set_archived(
    conn: &Connection,
    thread_id: i64,
    staff_id: i64,
    archived: bool,
    everyone: bool,
) -> rusqlite::Result<usize> {
    crate::db::cached_exec(
        conn,
        "UPDATE thread_staff SET archived = ?3 WHERE thread_id = ?1 AND (?4 OR staff_id = ?2)",
        params![thread_id, staff_id, archived, everyone],
    )
}

/// Every thread with one patient, for the patient page, newest first.
pub fn threads_of_patient(conn: &Connection, patient_id: i64) -> rusqlite::Result<Vec<Thread>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        thread_columns!(),
        " FROM thread t WHERE t.patient_id = ?1
          ORDER BY t.last_visible_at DESC, t.id DESC LIMIT 200"
    ))?;
    let rows = stmt.query_map([patient_id], thread_from_row)?;
    rows.collect()
}

/// The staff a thread is with (addressed, shared, or who wrote), each with whether they archived
/// it.
pub fn staff_on_thread(
    conn: &Connection,
    thread_id: i64,
) -> rusqlite::Result<Vec<(i64, String, bool)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT s.id, s.name, ts.archived FROM thread_staff ts JOIN staff s ON s.id = ts.staff_id
          WHERE ts.thread_id = ?1 ORDER BY ts.rowid",
    )?;
    let rows = stmt.query_map([thread_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    rows.collect()
}

/// Files a message into the patient's chart; false when it was filed already.
pub fn file_to_chart(
    conn: &Connection,
    patient_id: i64,
    message_id: i64,
    title: &str,
    staff_id: Option<i64>,
    now: i64,
) -> rusqlite::Result<bool> {
    Ok(crate::db::cached_exec(
        conn,
        "INSERT INTO chart_document (patient_id, message_id, category, title, filed_by, filed_at)
         VALUES (?1, ?2, 'message', ?3, ?4, ?5)
         ON CONFLICT (message_id) DO NOTHING",
        params![patient_id, message_id, title, staff_id, now],
    )? == 1)
}

pub struct ChartDocument {
    pub title: String,
    pub category: String,
    pub filed_by: String,
    pub filed_at: i64,
    pub thread_id: Option<i64>,
}

pub fn chart_documents(conn: &Connection, patient_id: i64) -> rusqlite::Result<Vec<ChartDocument>> {
    let mut stmt = conn.prepare_cached(
        "SELECT d.title, d.category, coalesce(s.name, 'Automatically'), d.filed_at, m.thread_id
           FROM chart_document d
           LEFT JOIN staff s ON s.id = d.filed_by
           LEFT JOIN message m ON m.id = d.message_id
          WHERE d.patient_id = ?1 ORDER BY d.filed_at DESC, d.id DESC LIMIT 500",
    )?;
    let rows = stmt.query_map([patient_id], |r| {
        Ok(ChartDocument {
            title: r.get(0)?,
            category: r.get(1)?,
            filed_by: r.get(2)?,
            filed_at: r.get(3)?,
            thread_id: r.get(4)?,
        })
    })?;
    rows.collect()
}

/// Unread, unarchived threads of active staff not yet reminded of, quiet since before `before`:
/// (staff id, staff email, thread id, last activity).
pub fn unreminded_unread(
    conn: &Connection,
    before: i64,
) -> rusqlite::Result<Vec<(i64, String, i64, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT ts.staff_id, s.email, ts.thread_id, ts.last_activity_at
           FROM thread_staff ts JOIN staff s ON s.id = ts.staff_id
          WHERE ts.unread = 1 AND ts.archived = 0 AND ts.reminded_at IS NULL
            AND ts.last_activity_at < ?1 AND s.active = 1
          ORDER BY ts.staff_id",
    )?;
    let rows = stmt.query_map([before], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })?;
    rows.collect()
}

pub fn mark_reminded(
    conn: &Connection,
    staff_id: i64,
    thread_id: i64,
    now: i64,
) -> rusqlite::Result<()> {
    crate::db::cached_exec(
        conn,
        "UPDATE thread_staff SET reminded_at = ?3 WHERE staff_id = ?1 AND thread_id = ?2",
        params![staff_id, thread_id, now],
    )?;
    Ok(())
}

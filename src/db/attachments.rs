//! Attachment rows: the hash, size, type and cleaned name of the one file a message may carry.

use rusqlite::{params, Connection, OptionalExtension};

pub struct NewAttachment<'a> {
    pub message_id: i64,
    pub sha256: &'a str,
    pub size: u64,
    pub media_type: &'a str,
    pub file_name: &'a str,
}

pub fn insert(conn: &Connection, a: &NewAttachment, now: i64) -> rusqlite::Result<i64> {
    crate::db::cached_exec(
        conn,
        "INSERT INTO attachment (message_id, sha256, size, media_type, file_name, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            a.message_id,
            a.sha256,
            a.size as i64,
            a.media_type,
            a.file_name,
            now
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

#[derive(Clone, Debug)]
pub struct Attachment {
    pub id: i64,
    pub sha256: String,
    pub size: u64,
    pub media_type: String,
    pub file_name: String,
}

/// An attachment of a message in this thread; `with_internal` false hides attachments of
/// internal notes (there are none today, but the patient must never reach one).
pub fn in_thread(
    conn: &Connection,
    thread_id: i64,
    attachment_id: i64,
    with_internal: bool,
) -> rusqlite::Result<Option<Attachment>> {
    crate::db::cached_row(
        conn,
        "SELECT a.id, a.sha256, a.size, a.media_type, a.file_name
           FROM attachment a JOIN message m ON m.id = a.message_id
          WHERE a.id = ?1 AND m.thread_id = ?2 AND (?3 OR m.internal = 0)",
        params![attachment_id, thread_id, with_internal],
        |r| {
            Ok(Attachment {
                id: r.get(0)?,
                sha256: r.get(1)?,
                size: r.get::<_, i64>(2)? as u64,
                media_type: r.get(3)?,
                file_name: r.get(4)?,
            })
        },
    )
    .optional()
}

/// Every reference: (attachment id, hash, size), for `carepost verify`.
pub fn all_references(conn: &Connection) -> rusqlite::Result<Vec<(i64, String, u64)>> {
    let mut stmt = conn.prepare("SELECT id, sha256, size FROM attachment ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
    })?;
    rows.collect()
}

/// Files an attachment into the patient's chart under a category; false if filed already.
pub fn file_to_chart(
    conn: &Connection,
    patient_id: i64,
    attachment: &Attachment,
    category: &str,
    staff_id: i64,
    now: i64,
) -> rusqlite::Result<bool> {
    Ok(crate::db::cached_exec(conn,
        "INSERT INTO chart_document (patient_id, attachment_id, category, title, filed_by, filed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT DO NOTHING",
        params![patient_id, attachment.id, category, attachment.file_name, staff_id, now],
    )? == 1)
}

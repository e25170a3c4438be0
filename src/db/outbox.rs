//! The outbox: emails waiting to be sent, written in the transaction of their cause, then
//! claimed, sent and recorded by the mail thread.

use rusqlite::{params, Connection, Row};

pub struct NewEmail<'a> {
    pub kind: &'a str,
    pub recipient: &'a str,
    pub subject: &'a str,
    pub body_text: &'a str,
}

pub fn queue(conn: &Connection, email: &NewEmail, now: i64) -> rusqlite::Result<i64> {
    crate::db::cached_exec(
        conn,
        "INSERT INTO outbox (kind, recipient, subject, body_text, next_attempt_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        params![
            email.kind,
            email.recipient,
            email.subject,
            email.body_text,
            now
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

/// An email as the mail thread sends it.
pub struct QueuedEmail {
    pub id: i64,
    pub recipient: String,
    pub subject: String,
    pub body_text: String,
    pub created_at: i64,
    pub attempts: i64,
}

fn queued_from_row(r: &Row) -> rusqlite::Result<QueuedEmail> {
    Ok(QueuedEmail {
        id: r.get(0)?,
        recipient: r.get(1)?,
        subject: r.get(2)?,
        body_text: r.get(3)?,
        created_at: r.get(4)?,
        attempts: r.get(5)?,
    })
}

const QUEUED_COLUMNS: &str = "id, recipient, subject, body_text, created_at, attempts";

/// Queued emails whose time has come, oldest first.
pub fn due(conn: &Connection, now: i64, limit: i64) -> rusqlite::Result<Vec<QueuedEmail>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {QUEUED_COLUMNS} FROM outbox WHERE state = 'queued' AND next_attempt_at <= ?1
          ORDER BY id LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![now, limit], queued_from_row)?;
    rows.collect()
}

/// Every email after `id` (the demo prints them).
pub fn after(conn: &Connection, id: i64) -> rusqlite::Result<Vec<QueuedEmail>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {QUEUED_COLUMNS} FROM outbox WHERE id > ?1 ORDER BY id LIMIT 100"
    ))?;
    let rows = stmt.query_map([id], queued_from_row)?;
    rows.collect()
}

/// Claims a queued email for sending; false when it is no longer queued.
pub fn claim(conn: &Connection, id: i64, now: i64) -> rusqlite::Result<bool> {
    Ok(crate::db::cached_exec(
        conn,
        "UPDATE outbox SET state = 'sending', claimed_at = ?2 WHERE id = ?1 AND state = 'queued'",
        params![id, now],
    )? == 1)
}

pub fn mark_sent(conn: &Connection, id: i64, reply: &str, now: i64) -> rusqlite::Result<()> {
    crate::db::cached_exec(conn,
        // Once delivered, the body (which may hold a live one-time link) is not kept.
        "UPDATE outbox SET state = 'sent', sent_at = ?3, attempts = attempts + 1, server_reply = ?2,
                last_error = '', body_text = '' WHERE id = ?1",
        params![id, reply, now],
    )?;
    Ok(())
}

pub fn mark_failed(conn: &Connection, id: i64, reason: &str) -> rusqlite::Result<()> {
    crate::db::cached_exec(conn,
        "UPDATE outbox SET state = 'failed', attempts = attempts + 1, last_error = ?2 WHERE id = ?1",
        params![id, reason],
    )?;
    Ok(())
}

pub fn requeue(conn: &Connection, id: i64, reason: &str, next: i64) -> rusqlite::Result<()> {
    crate::db::cached_exec(
        conn,
        "UPDATE outbox SET state = 'queued', attempts = attempts + 1, last_error = ?2,
                next_attempt_at = ?3 WHERE id = ?1",
        params![id, reason, next],
    )?;
    Ok(())
}

/// Rows left 'sending' by a stop: they may have been delivered, so they are not resent alone.
pub fn fail_interrupted(conn: &Connection) -> rusqlite::Result<usize> {
    crate::db::cached_exec(conn,
        "UPDATE outbox SET state = 'failed',
                last_error = 'Carepost stopped while sending this email: it may or may not have arrived. Retry it if it did not.'
          WHERE state = 'sending'",
        [],
    )
}

/// An administrator asks to send a failed email again.
pub fn retry(conn: &Connection, id: i64, now: i64) -> rusqlite::Result<bool> {
    Ok(crate::db::cached_exec(
        conn,
        "UPDATE outbox SET state = 'queued', next_attempt_at = ?2, created_at = ?2
          WHERE id = ?1 AND state = 'failed'",
        params![id, now],
    )? == 1)
}

/// A row of the administrators' Outbox page.
pub struct OutboxRow {
    pub id: i64,
    pub kind: String,
    pub recipient: String,
    pub state: String,
    pub attempts: i64,
    pub last_error: String,
    pub server_reply: String,
    pub created_at: i64,
}

pub fn page(
    conn: &Connection,
    page: u32,
    per_page: u32,
) -> rusqlite::Result<(Vec<OutboxRow>, bool)> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, kind, recipient, state, attempts, last_error, server_reply, created_at
           FROM outbox ORDER BY id DESC LIMIT ?1 OFFSET ?2",
    )?;
    let offset = i64::from(page.saturating_sub(1)) * i64::from(per_page);
    let rows = stmt.query_map(params![i64::from(per_page) + 1, offset], |r| {
        Ok(OutboxRow {
            id: r.get(0)?,
            kind: r.get(1)?,
            recipient: r.get(2)?,
            state: r.get(3)?,
            attempts: r.get(4)?,
            last_error: r.get(5)?,
            server_reply: r.get(6)?,
            created_at: r.get(7)?,
        })
    })?;
    let mut rows: Vec<OutboxRow> = rows.collect::<rusqlite::Result<_>>()?;
    let more = rows.len() > per_page as usize;
    rows.truncate(per_page as usize);
    Ok((rows, more))
}

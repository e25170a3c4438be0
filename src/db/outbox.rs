//! The outbox: emails waiting to be sent, written in the transaction of their cause.

use rusqlite::{params, Connection};

pub struct NewEmail<'a> {
    pub kind: &'a str,
    pub recipient: &'a str,
    pub subject: &'a str,
    pub body_text: &'a str,
}

pub fn queue(conn: &Connection, email: &NewEmail, now: i64) -> rusqlite::Result<i64> {
    conn.execute(
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

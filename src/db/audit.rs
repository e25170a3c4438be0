//! Appending to the audit log. There is no update or delete here, nor anywhere else.

use crate::crypto;
use rusqlite::{params, Connection, OptionalExtension};

pub struct Entry<'a> {
    pub at: i64,
    pub actor_kind: &'a str,
    pub actor_id: Option<i64>,
    pub action: &'a str,
    pub patient_id: Option<i64>,
    pub object: &'a str,
    pub outcome: &'a str,
    pub client: &'a str,
}

/// The text hashed for an entry: every field, unambiguously separated.
pub fn canonical(e: &Entry, prev_hash: &str) -> String {
    format!(
        "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
        prev_hash,
        e.at,
        e.actor_kind,
        e.actor_id.map(|i| i.to_string()).unwrap_or_default(),
        e.action,
        e.patient_id.map(|i| i.to_string()).unwrap_or_default(),
        e.object,
        e.outcome,
        e.client
    )
}

/// Appends an entry chained to the last one, inside the transaction of the event; outside one,
/// in its own write transaction, so two appends never read the same last entry.
pub fn append(conn: &Connection, e: &Entry) -> rusqlite::Result<()> {
    if conn.is_autocommit() {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let result = append_locked(conn, e);
        conn.execute_batch(if result.is_ok() { "COMMIT" } else { "ROLLBACK" })?;
        return result;
    }
    append_locked(conn, e)
}

fn append_locked(conn: &Connection, e: &Entry) -> rusqlite::Result<()> {
    let prev: String = conn
        .query_row(
            "SELECT hash FROM audit_event ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or_default();
    let hash = crypto::sha256_hex(canonical(e, &prev).as_bytes());
    conn.execute(
        "INSERT INTO audit_event (at, actor_kind, actor_id, action, patient_id, object, outcome,
                                  client, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            e.at,
            e.actor_kind,
            e.actor_id,
            e.action,
            e.patient_id,
            e.object,
            e.outcome,
            e.client,
            prev,
            hash
        ],
    )?;
    Ok(())
}

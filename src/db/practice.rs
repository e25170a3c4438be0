//! The practice row and the first-run setup link.

use crate::crypto;
use rusqlite::{params, Connection, OptionalExtension};

#[derive(Clone, Debug)]
pub struct Practice {
    pub name: String,
    pub phone: String,
    pub messaging_enabled: bool,
    pub is_demo: bool,
}

pub fn get(conn: &Connection) -> rusqlite::Result<Option<Practice>> {
    conn.query_row(
        "SELECT name, phone, messaging_enabled, is_demo FROM practice WHERE id = 1",
        [],
        |r| {
            Ok(Practice {
                name: r.get(0)?,
                phone: r.get(1)?,
                messaging_enabled: r.get(2)?,
                is_demo: r.get(3)?,
            })
        },
    )
    .optional()
}

pub fn insert(
    conn: &Connection,
    name: &str,
    messaging_enabled: bool,
    is_demo: bool,
    now: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO practice (id, name, messaging_enabled, is_demo, created_at)
         VALUES (1, ?1, ?2, ?3, ?4)",
        params![name, messaging_enabled, is_demo, now],
    )?;
    // Setup is done: no setup link may work any more.
    conn.execute("DELETE FROM setup_token", [])?;
    Ok(())
}

/// Replaces any earlier setup link with a new one valid until `expires_at`; returns the token.
pub fn new_setup_token(conn: &Connection, expires_at: i64) -> rusqlite::Result<String> {
    let token = crypto::random_token();
    conn.execute("DELETE FROM setup_token", [])?;
    conn.execute(
        "INSERT INTO setup_token (token_hash, expires_at) VALUES (?1, ?2)",
        params![crypto::sha256_hex(token.as_bytes()), expires_at],
    )?;
    Ok(token)
}

pub fn setup_token_valid(conn: &Connection, token: &str, now: i64) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) > 0 FROM setup_token WHERE token_hash = ?1 AND expires_at > ?2
           AND NOT EXISTS (SELECT 1 FROM practice)",
        params![crypto::sha256_hex(token.as_bytes()), now],
        |r| r.get(0),
    )
}

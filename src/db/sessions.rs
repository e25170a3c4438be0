//! Server-side sessions. The cookie holds a random token; only its SHA-256 is stored.

use crate::crypto;
use rusqlite::{params, Connection, OptionalExtension};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    Staff,
    Portal,
}

impl Audience {
    pub fn as_str(self) -> &'static str {
        match self {
            Audience::Staff => "staff",
            Audience::Portal => "portal",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Session {
    pub token_hash: String,
    pub principal_id: i64,
    pub csrf_token: String,
    pub acting_patient_id: Option<i64>,
    pub created_at: i64,
    pub last_seen_at: i64,
}

/// Creates a session and returns the cookie token.
pub fn create(
    conn: &Connection,
    audience: Audience,
    principal_id: i64,
    acting_patient_id: Option<i64>,
    now: i64,
) -> rusqlite::Result<String> {
    let token = crypto::random_token();
    crate::db::cached_exec(
        conn,
        "INSERT INTO session (token_hash, audience, principal_id, csrf_token, acting_patient_id,
                              created_at, last_seen_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
        params![
            crypto::sha256_hex(token.as_bytes()),
            audience.as_str(),
            principal_id,
            crypto::random_token(),
            acting_patient_id,
            now
        ],
    )?;
    Ok(token)
}

pub fn find(
    conn: &Connection,
    audience: Audience,
    token: &str,
) -> rusqlite::Result<Option<Session>> {
    crate::db::cached_row(
        conn,
        "SELECT token_hash, principal_id, csrf_token, acting_patient_id, created_at, last_seen_at
           FROM session WHERE token_hash = ?1 AND audience = ?2",
        params![crypto::sha256_hex(token.as_bytes()), audience.as_str()],
        |r| {
            Ok(Session {
                token_hash: r.get(0)?,
                principal_id: r.get(1)?,
                csrf_token: r.get(2)?,
                acting_patient_id: r.get(3)?,
                created_at: r.get(4)?,
                last_seen_at: r.get(5)?,
            })
        },
    )
    .optional()
}

pub fn touch(conn: &Connection, token_hash: &str, now: i64) -> rusqlite::Result<()> {
    crate::db::cached_exec(
        conn,
        "UPDATE session SET last_seen_at = ?2 WHERE token_hash = ?1",
        params![token_hash, now],
    )?;
    Ok(())
}

pub fn set_acting_patient(
    conn: &Connection,
    token_hash: &str,
    patient_id: i64,
) -> rusqlite::Result<()> {
    crate::db::cached_exec(
        conn,
        "UPDATE session SET acting_patient_id = ?2 WHERE token_hash = ?1",
        params![token_hash, patient_id],
    )?;
    Ok(())
}

pub fn delete(conn: &Connection, token_hash: &str) -> rusqlite::Result<()> {
    crate::db::cached_exec(
        conn,
        "DELETE FROM session WHERE token_hash = ?1",
        [token_hash],
    )?;
    Ok(())
}

/// Ends every session of one user, except `keep` (the session that asked, when it should live).
pub fn delete_for_principal(
    conn: &Connection,
    audience: Audience,
    principal_id: i64,
    keep: Option<&str>,
) -> rusqlite::Result<usize> {
    crate::db::cached_exec(
        conn,
        "DELETE FROM session WHERE audience = ?1 AND principal_id = ?2 AND token_hash IS NOT ?3",
        params![audience.as_str(), principal_id, keep],
    )
}

/// Removes sessions that can no longer be used, so the table does not grow without bound.
pub fn delete_expired(
    conn: &Connection,
    idle_before: i64,
    created_before: i64,
) -> rusqlite::Result<usize> {
    crate::db::cached_exec(
        conn,
        "DELETE FROM session WHERE last_seen_at < ?1 OR created_at < ?2",
        params![idle_before, created_before],
    )
}

/// One-time password links.
pub mod resets {
    use super::Audience;
    use crate::crypto;
    use rusqlite::{params, Connection, OptionalExtension};

    /// Creates a link valid until `expires_at` and returns its token; earlier unused links of
    /// the same user stop working.
    pub fn create(
        conn: &Connection,
        audience: Audience,
        principal_id: i64,
        now: i64,
        expires_at: i64,
    ) -> rusqlite::Result<String> {
        crate::db::cached_exec(
            conn,
            "UPDATE password_reset SET used_at = ?3
              WHERE audience = ?1 AND principal_id = ?2 AND used_at IS NULL",
            params![audience.as_str(), principal_id, now],
        )?;
        let token = crypto::random_token();
        crate::db::cached_exec(conn,
            "INSERT INTO password_reset (token_hash, audience, principal_id, expires_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![crypto::sha256_hex(token.as_bytes()), audience.as_str(), principal_id, expires_at, now],
        )?;
        Ok(token)
    }

    /// The user a live link belongs to.
    pub fn find(
        conn: &Connection,
        audience: Audience,
        token: &str,
        now: i64,
    ) -> rusqlite::Result<Option<i64>> {
        crate::db::cached_row(
            conn,
            "SELECT principal_id FROM password_reset
              WHERE token_hash = ?1 AND audience = ?2 AND used_at IS NULL AND expires_at > ?3",
            params![crypto::sha256_hex(token.as_bytes()), audience.as_str(), now],
            |r| r.get(0),
        )
        .optional()
    }

    pub fn mark_used(conn: &Connection, token: &str, now: i64) -> rusqlite::Result<()> {
        crate::db::cached_exec(
            conn,
            "UPDATE password_reset SET used_at = ?2 WHERE token_hash = ?1",
            params![crypto::sha256_hex(token.as_bytes()), now],
        )?;
        Ok(())
    }

    /// When this user last asked for a link, for throttling requests.
    pub fn last_requested(
        conn: &Connection,
        audience: Audience,
        principal_id: i64,
    ) -> rusqlite::Result<Option<i64>> {
        crate::db::cached_row(
            conn,
            "SELECT max(created_at) FROM password_reset WHERE audience = ?1 AND principal_id = ?2",
            params![audience.as_str(), principal_id],
            |r| r.get(0),
        )
    }
}

//! Patient records and portal invitations.

use rusqlite::{params, Connection};

pub struct NewPatient<'a> {
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub date_of_birth: &'a str,
    pub email: &'a str,
    pub phone: &'a str,
}

pub fn insert(conn: &Connection, new: &NewPatient, now: i64) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO patient (first_name, last_name, date_of_birth, email, phone, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            new.first_name,
            new.last_name,
            new.date_of_birth,
            new.email,
            new.phone,
            now
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

pub struct NewInvitation<'a> {
    pub patient_id: i64,
    pub role: &'a str,
    pub email: &'a str,
    pub phone: &'a str,
    pub caregiver_name: &'a str,
    pub relationship: &'a str,
    pub token_hash: &'a str,
    pub pin_hash: &'a str,
    pub expires_at: i64,
    pub created_by: Option<i64>,
}

pub fn insert_invitation(
    conn: &Connection,
    new: &NewInvitation,
    now: i64,
) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO invitation (patient_id, role, email, phone, caregiver_name, relationship,
                                 token_hash, pin_hash, status, expires_at, created_by, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9, ?10, ?11)",
        params![
            new.patient_id,
            new.role,
            new.email,
            new.phone,
            new.caregiver_name,
            new.relationship,
            new.token_hash,
            new.pin_hash,
            new.expires_at,
            new.created_by,
            now
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

//! Staff users, portal accounts and their access to patient records, and the sign-in throttle.

use rusqlite::{params, Connection, OptionalExtension, Row};

#[derive(Clone, Debug)]
pub struct Staff {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub degree: String,
    pub access_level: u8,
    pub is_admin: bool,
    pub active: bool,
    /// Chosen to invite patients when the practice restricts invitations.
    pub may_invite: bool,
}

pub(crate) const STAFF_COLUMNS: &str =
    "id, email, name, degree, access_level, is_admin, active, may_invite";

fn staff_from_row(r: &Row) -> rusqlite::Result<Staff> {
    staff_at(r, 0)
}

/// A staff user from `STAFF_COLUMNS` found at column `at` of a row.
pub(crate) fn staff_at(r: &Row, at: usize) -> rusqlite::Result<Staff> {
    Ok(Staff {
        id: r.get(at)?,
        email: r.get(at + 1)?,
        name: r.get(at + 2)?,
        degree: r.get(at + 3)?,
        access_level: r.get(at + 4)?,
        is_admin: r.get(at + 5)?,
        active: r.get(at + 6)?,
        may_invite: r.get(at + 7)?,
    })
}

/// Who a patient may write to: active staff with access level 3 (NP/PA) or higher.
pub fn message_recipients(conn: &Connection) -> rusqlite::Result<Vec<Staff>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {STAFF_COLUMNS} FROM staff WHERE active = 1 AND access_level >= 3
          ORDER BY name COLLATE NOCASE, id"
    ))?;
    let rows = stmt.query_map([], staff_from_row)?;
    rows.collect()
}

/// Email addresses of every portal account with active access to the patient (the patient's
/// own and active caregivers'), each once.
pub fn portal_emails_of_patient(
    conn: &Connection,
    patient_id: i64,
) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT lower(c.email) FROM portal_access a JOIN portal_account c ON c.id = a.account_id
          WHERE a.patient_id = ?1 AND a.status = 'active' ORDER BY 1",
    )?;
    let rows = stmt.query_map([patient_id], |r| r.get(0))?;
    rows.collect()
}

/// Email addresses of the accounts holding the patient's own active access.
pub fn own_emails_of_patient(conn: &Connection, patient_id: i64) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT lower(c.email) FROM portal_access a JOIN portal_account c ON c.id = a.account_id
          WHERE a.patient_id = ?1 AND a.status = 'active' AND a.role = 'self' ORDER BY 1",
    )?;
    let rows = stmt.query_map([patient_id], |r| r.get(0))?;
    rows.collect()
}

/// Every staff user, active first, by name.
pub fn list_staff(conn: &Connection) -> rusqlite::Result<Vec<Staff>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {STAFF_COLUMNS} FROM staff ORDER BY active DESC, name COLLATE NOCASE, id"
    ))?;
    let rows = stmt.query_map([], staff_from_row)?;
    rows.collect()
}

/// The active staff other than `staff_id`, by name: whom a thread can be forwarded to (id,
/// name, access level).
pub fn colleagues(conn: &Connection, staff_id: i64) -> rusqlite::Result<Vec<(i64, String, u8)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, name, access_level FROM staff WHERE active = 1 AND id <> ?1
          ORDER BY name COLLATE NOCASE, id",
    )?;
    let rows = stmt.query_map([staff_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    rows.collect()
}

pub fn staff_by_id(conn: &Connection, id: i64) -> rusqlite::Result<Option<Staff>> {
    crate::db::cached_row(
        conn,
        &format!("SELECT {STAFF_COLUMNS} FROM staff WHERE id = ?1"),
        [id],
        staff_from_row,
    )
    .optional()
}

/// Saves the editable fields of a staff user (not the password, not `active`).
pub fn update_staff(conn: &Connection, s: &Staff) -> rusqlite::Result<()> {
    crate::db::cached_exec(
        conn,
        "UPDATE staff SET email = ?2, name = ?3, degree = ?4, access_level = ?5, is_admin = ?6,
                may_invite = ?7
          WHERE id = ?1",
        params![
            s.id,
            s.email,
            s.name,
            s.degree,
            s.access_level,
            s.is_admin,
            s.may_invite
        ],
    )?;
    Ok(())
}

pub fn set_staff_active(conn: &Connection, id: i64, active: bool) -> rusqlite::Result<()> {
    crate::db::cached_exec(
        conn,
        "UPDATE staff SET active = ?2 WHERE id = ?1",
        params![id, active],
    )?;
    Ok(())
}

pub fn active_administrators(conn: &Connection) -> rusqlite::Result<i64> {
    crate::db::cached_row(
        conn,
        "SELECT count(*) FROM staff WHERE is_admin = 1 AND active = 1",
        [],
        |r| r.get(0),
    )
}

pub fn set_staff_password(conn: &Connection, id: i64, hash: &str) -> rusqlite::Result<()> {
    crate::db::cached_exec(
        conn,
        "UPDATE staff SET password_hash = ?2 WHERE id = ?1",
        params![id, hash],
    )?;
    Ok(())
}

pub fn set_portal_password(conn: &Connection, id: i64, hash: &str) -> rusqlite::Result<()> {
    crate::db::cached_exec(
        conn,
        "UPDATE portal_account SET password_hash = ?2 WHERE id = ?1",
        params![id, hash],
    )?;
    Ok(())
}

pub struct NewStaff<'a> {
    pub email: &'a str,
    pub name: &'a str,
    pub degree: &'a str,
    pub access_level: u8,
    pub is_admin: bool,
    pub password_hash: &'a str,
}

pub fn insert_staff(conn: &Connection, new: &NewStaff, now: i64) -> rusqlite::Result<i64> {
    crate::db::cached_exec(
        conn,
        "INSERT INTO staff (email, name, degree, access_level, is_admin, password_hash, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            new.email,
            new.name,
            new.degree,
            new.access_level,
            new.is_admin,
            new.password_hash,
            now
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

/// The active staff user with this id (a deactivated one is not found: their sessions end).
pub fn active_staff(conn: &Connection, id: i64) -> rusqlite::Result<Option<Staff>> {
    crate::db::cached_row(
        conn,
        &format!("SELECT {STAFF_COLUMNS} FROM staff WHERE id = ?1 AND active = 1"),
        [id],
        staff_from_row,
    )
    .optional()
}

pub fn staff_by_email(conn: &Connection, email: &str) -> rusqlite::Result<Option<Staff>> {
    crate::db::cached_row(
        conn,
        &format!("SELECT {STAFF_COLUMNS} FROM staff WHERE email = ?1"),
        [email],
        staff_from_row,
    )
    .optional()
}

/// (id, password hash) of the active staff user signing in with this email.
pub fn staff_credentials(
    conn: &Connection,
    email: &str,
) -> rusqlite::Result<Option<(i64, String)>> {
    crate::db::cached_row(
        conn,
        "SELECT id, password_hash FROM staff WHERE email = ?1 AND active = 1",
        [email],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

#[derive(Clone, Debug)]
pub struct PortalAccount {
    pub id: i64,
    pub email: String,
    pub name: String,
}

pub fn insert_portal_account(
    conn: &Connection,
    email: &str,
    name: &str,
    password_hash: &str,
    now: i64,
) -> rusqlite::Result<i64> {
    crate::db::cached_exec(conn,
        "INSERT INTO portal_account (email, name, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![email, name, password_hash, now],
    )?;
    Ok(conn.last_insert_rowid())
}

pub fn portal_account_by_email(
    conn: &Connection,
    email: &str,
) -> rusqlite::Result<Option<PortalAccount>> {
    crate::db::cached_row(
        conn,
        "SELECT id, email, name FROM portal_account WHERE email = ?1",
        [email],
        |r| {
            Ok(PortalAccount {
                id: r.get(0)?,
                email: r.get(1)?,
                name: r.get(2)?,
            })
        },
    )
    .optional()
}

pub fn portal_credentials(
    conn: &Connection,
    email: &str,
) -> rusqlite::Result<Option<(i64, String)>> {
    crate::db::cached_row(
        conn,
        "SELECT id, password_hash FROM portal_account WHERE email = ?1",
        [email],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

/// One patient record a portal account reaches, as themselves or as a caregiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatientAccess {
    pub patient_id: i64,
    pub patient_name: String,
    pub role: String,
    pub relationship: String,
    pub active: bool,
}

impl PatientAccess {
    pub fn is_caregiver(&self) -> bool {
        self.role == "caregiver"
    }
}

/// Every record this account reaches or once reached, active first, by patient name.
pub fn accesses_for_account(
    conn: &Connection,
    account_id: i64,
) -> rusqlite::Result<Vec<PatientAccess>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ACCESS_COLUMNS} FROM portal_access a JOIN patient p ON p.id = a.patient_id
          WHERE a.account_id = ?1"
    ))?;
    let rows = stmt
        .query_map([account_id], |r| access_at(r, 0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(sorted_accesses(rows))
}

/// The columns `access_at` reads, of `portal_access a` joined with `patient p`.
pub(crate) const ACCESS_COLUMNS: &str =
    "a.patient_id, p.first_name || ' ' || p.last_name, a.role, a.relationship,
     a.status = 'active', p.first_name";

/// An access from `ACCESS_COLUMNS` found at column `at` of a row, with the patient's first
/// name to sort by.
pub(crate) fn access_at(r: &Row, at: usize) -> rusqlite::Result<(PatientAccess, String)> {
    let access = PatientAccess {
        patient_id: r.get(at)?,
        patient_name: r.get(at + 1)?,
        role: r.get(at + 2)?,
        relationship: r.get(at + 3)?,
        active: r.get(at + 4)?,
    };
    Ok((access, r.get(at + 5)?))
}

/// Active first, the account's own record first among them, then by first name. Sorted here:
/// an account has a handful of rows, and SQLite would build a sorter for them on every
/// request.
pub(crate) fn sorted_accesses(mut rows: Vec<(PatientAccess, String)>) -> Vec<PatientAccess> {
    rows.sort_by(|(a, a_first), (b, b_first)| {
        (!a.active, a.role != "self", a_first, a.patient_id).cmp(&(
            !b.active,
            b.role != "self",
            b_first,
            b.patient_id,
        ))
    });
    rows.into_iter().map(|(access, _)| access).collect()
}

/// The role ('self' or 'caregiver') an account holds, or held, for a patient.
pub fn role_for_patient(
    conn: &Connection,
    account_id: i64,
    patient_id: i64,
) -> rusqlite::Result<Option<String>> {
    crate::db::cached_row(
        conn,
        "SELECT role FROM portal_access WHERE account_id = ?1 AND patient_id = ?2",
        params![account_id, patient_id],
        |r| r.get(0),
    )
    .optional()
}

pub fn grant_access(
    conn: &Connection,
    account_id: i64,
    patient_id: i64,
    role: &str,
    relationship: &str,
    now: i64,
) -> rusqlite::Result<()> {
    crate::db::cached_exec(
        conn,
        "INSERT INTO portal_access (account_id, patient_id, role, relationship, status, created_at)
         VALUES (?1, ?2, ?3, ?4, 'active', ?5)
         ON CONFLICT (account_id, patient_id)
         DO UPDATE SET status = 'active', role = excluded.role,
                       relationship = excluded.relationship, revoked_at = NULL",
        params![account_id, patient_id, role, relationship, now],
    )?;
    Ok(())
}

/// A caregiver's access to one patient, as the practice sees it.
#[derive(Clone, Debug)]
pub struct CaregiverAccess {
    pub access_id: i64,
    pub name: String,
    pub email: String,
    pub relationship: String,
    pub active: bool,
}

pub fn caregivers_of_patient(
    conn: &Connection,
    patient_id: i64,
) -> rusqlite::Result<Vec<CaregiverAccess>> {
    let mut stmt = conn.prepare_cached(
        "SELECT a.id, c.name, c.email, a.relationship, a.status = 'active'
           FROM portal_access a JOIN portal_account c ON c.id = a.account_id
          WHERE a.patient_id = ?1 AND a.role = 'caregiver'
          ORDER BY a.status = 'active' DESC, c.name",
    )?;
    let rows = stmt.query_map([patient_id], |r| {
        Ok(CaregiverAccess {
            access_id: r.get(0)?,
            name: r.get(1)?,
            email: r.get(2)?,
            relationship: r.get(3)?,
            active: r.get(4)?,
        })
    })?;
    rows.collect()
}

/// Revokes the patient's own access (every account holding it). Returns how many were active.
pub fn revoke_own_access(conn: &Connection, patient_id: i64, now: i64) -> rusqlite::Result<usize> {
    crate::db::cached_exec(
        conn,
        "UPDATE portal_access SET status = 'revoked', revoked_at = ?2
          WHERE patient_id = ?1 AND role = 'self' AND status = 'active'",
        params![patient_id, now],
    )
}

/// Revokes one caregiver's access to this patient; 0 when it is not theirs or not active.
pub fn revoke_caregiver(
    conn: &Connection,
    patient_id: i64,
    access_id: i64,
    now: i64,
) -> rusqlite::Result<usize> {
    crate::db::cached_exec(
        conn,
        "UPDATE portal_access SET status = 'revoked', revoked_at = ?3
          WHERE id = ?2 AND patient_id = ?1 AND role = 'caregiver' AND status = 'active'",
        params![patient_id, access_id, now],
    )
}

/// When a sign-in for this address is next allowed, if it is locked now.
pub fn throttle_locked_until(
    conn: &Connection,
    audience: &str,
    email: &str,
    now: i64,
) -> rusqlite::Result<Option<i64>> {
    crate::db::cached_row(
        conn,
        "SELECT locked_until FROM login_throttle
          WHERE audience = ?1 AND email = ?2 AND locked_until > ?3",
        params![audience, email, now],
        |r| r.get(0),
    )
    .optional()
}

/// Counts a failed sign-in and returns the number of failures so far.
pub fn throttle_record_failure(
    conn: &Connection,
    audience: &str,
    email: &str,
    now: i64,
    forget_after: i64,
) -> rusqlite::Result<i64> {
    crate::db::cached_row(
        conn,
        "INSERT INTO login_throttle (audience, email, failures, locked_until, last_failure_at)
         VALUES (?1, ?2, 1, 0, ?3)
         ON CONFLICT (audience, email) DO UPDATE SET
             failures = CASE WHEN last_failure_at < ?3 - ?4 THEN 1 ELSE failures + 1 END,
             last_failure_at = ?3
         RETURNING failures",
        params![audience, email, now, forget_after],
        |r| r.get(0),
    )
}

/// Locks an address until `until`, or leaves a longer lock as it is: a slower attempt that
/// finishes after a later one must not shorten the lock that one set.
pub fn throttle_lock(
    conn: &Connection,
    audience: &str,
    email: &str,
    until: i64,
) -> rusqlite::Result<()> {
    crate::db::cached_exec(
        conn,
        "UPDATE login_throttle SET locked_until = max(locked_until, ?3)
          WHERE audience = ?1 AND email = ?2",
        params![audience, email, until],
    )?;
    Ok(())
}

pub fn throttle_clear(conn: &Connection, audience: &str, email: &str) -> rusqlite::Result<()> {
    crate::db::cached_exec(
        conn,
        "DELETE FROM login_throttle WHERE audience = ?1 AND email = ?2",
        params![audience, email],
    )?;
    Ok(())
}

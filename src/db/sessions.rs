//! Server-side sessions. The cookie holds a random token; only its SHA-256 is stored.

use crate::crypto;
use crate::db::accounts::{
    self, PatientAccess, PortalAccount, Staff, ACCESS_COLUMNS, STAFF_COLUMNS,
};
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::sync::OnceLock;

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

/// A session's columns, read by `session_from_row` at the start of a row.
const SESSION_COLUMNS: &str =
    "s.token_hash, s.principal_id, s.csrf_token, s.acting_patient_id, s.created_at, s.last_seen_at";

fn session_from_row(r: &Row) -> rusqlite::Result<Session> {
    Ok(Session {
        token_hash: r.get(0)?,
        principal_id: r.get(1)?,
        csrf_token: r.get(2)?,
        acting_patient_id: r.get(3)?,
        created_at: r.get(4)?,
        last_seen_at: r.get(5)?,
    })
}

/// The statement of `find_staff`, written once.
pub(crate) fn staff_caller_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        let staff: String = STAFF_COLUMNS
            .split(", ")
            .map(|c| format!("st.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "SELECT {SESSION_COLUMNS}, st.unread_threads, {staff}
               FROM session s LEFT JOIN staff st ON st.id = s.principal_id AND st.active = 1
              WHERE s.token_hash = ?1 AND s.audience = ?2"
        )
    })
}

/// An active staff member, and how many threads are unread for them as the request begins
/// (kept on their row, see `messages::unread_count`): every practice page shows that count.
pub type StaffUser = (Staff, i64);

/// The practice-view session of `token` and its user, if active: one statement, the first of
/// each request (SQLite takes and drops its log's read lock per statement).
pub fn find_staff(
    conn: &Connection,
    token: &str,
) -> rusqlite::Result<Option<(Session, Option<StaffUser>)>> {
    let hash = crypto::sha256_hex(token.as_bytes());
    let found = params![hash, Audience::Staff.as_str()];
    crate::db::cached_row(conn, staff_caller_sql(), found, |r| {
        // The user's columns follow the session's and the unread count; all NULL when the user
        // is not active.
        let staff = match r.get::<_, Option<i64>>(6)? {
            Some(unread) => Some((accounts::staff_at(r, 7)?, unread)),
            None => None,
        };
        Ok((session_from_row(r)?, staff))
    })
    .optional()
}

/// A portal account and every record it reaches or once reached (see
/// `accounts::accesses_for_account`).
pub type PortalUser = (PortalAccount, Vec<PatientAccess>);

/// The statement of `find_portal`, written once. A chain of LEFT JOINs, each an index lookup:
/// written as `LEFT JOIN (portal_access JOIN patient)`, SQLite built that join for every account
/// on every request (6 ms each in the benchmark).
pub(crate) fn portal_caller_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "SELECT {SESSION_COLUMNS}, acc.id, acc.email, acc.name, {ACCESS_COLUMNS}
               FROM session s LEFT JOIN portal_account acc ON acc.id = s.principal_id
                    LEFT JOIN portal_access a ON a.account_id = acc.id
                    LEFT JOIN patient p ON p.id = a.patient_id
              WHERE s.token_hash = ?1 AND s.audience = ?2"
        )
    })
}

/// The portal session of `token` with its account and accesses, if the account still exists:
/// one statement, the first of each request.
pub fn find_portal(
    conn: &Connection,
    token: &str,
) -> rusqlite::Result<Option<(Session, Option<PortalUser>)>> {
    let mut stmt = conn.prepare_cached(portal_caller_sql())?;
    let hash = crypto::sha256_hex(token.as_bytes());
    let mut rows = stmt.query(params![hash, Audience::Portal.as_str()])?;
    let Some(first) = rows.next()? else {
        return Ok(None);
    };
    let session = session_from_row(first)?;
    let Some(id) = first.get::<_, Option<i64>>(6)? else {
        return Ok(Some((session, None)));
    };
    let account = PortalAccount {
        id,
        email: first.get(7)?,
        name: first.get(8)?,
    };
    let mut accesses = Vec::new();
    let mut row = Some(first);
    while let Some(r) = row {
        // An account with no access has one row, its access columns NULL; an access whose
        // patient row is missing (only possible with foreign keys off) is left out, as sign-in
        // leaves it out.
        let null = rusqlite::types::ValueRef::Null;
        if r.get_ref(9)? != null && r.get_ref(14)? != null {
            accesses.push(accounts::access_at(r, 9)?);
        }
        row = rows.next()?;
    }
    Ok(Some((
        session,
        Some((account, accounts::sorted_accesses(accesses))),
    )))
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

#[cfg(test)]
mod tests {
    use super::{create, find_portal, find_staff, Audience};
    use crate::db::accounts::{self, NewStaff};
    use crate::db::patients::{self, PatientFields};

    fn patient(conn: &rusqlite::Connection, first: &str, last: &str) -> i64 {
        let fields = PatientFields {
            first_name: first,
            last_name: last,
            date_of_birth: "1980-01-01",
            email: "",
            phone: "",
        };
        patients::insert(conn, &fields, 0).unwrap()
    }

    #[test]
    fn a_staff_session_is_found_with_its_user_while_the_user_is_active() {
        let path = crate::db::test_folder("find-staff");
        let conn = crate::db::DataDir::open(&path).unwrap().connect().unwrap();
        let new = NewStaff {
            email: "dr@example.org",
            name: "Dr Who",
            degree: "MD",
            access_level: 4,
            is_admin: true,
            password_hash: "x",
        };
        let id = accounts::insert_staff(&conn, &new, 0).unwrap();
        let token = create(&conn, Audience::Staff, id, None, 7).unwrap();
        let (session, staff) = find_staff(&conn, &token).unwrap().unwrap();
        assert_eq!((session.principal_id, session.last_seen_at), (id, 7));
        let (staff, unread) = staff.unwrap();
        assert_eq!(
            (staff.id, staff.name.as_str(), staff.is_admin, unread),
            (id, "Dr Who", true, 0)
        );
        // With the unread count kept on the user's row.
        conn.execute("UPDATE staff SET unread_threads = 3 WHERE id = ?1", [id])
            .unwrap();
        let (_, staff) = find_staff(&conn, &token).unwrap().unwrap();
        assert_eq!(staff.map(|(_, unread)| unread), Some(3));
        // Another audience's session, or a token not issued, finds nothing.
        let portal = create(&conn, Audience::Portal, id, None, 7).unwrap();
        assert!(find_staff(&conn, &portal).unwrap().is_none());
        assert!(find_staff(&conn, &"0".repeat(64)).unwrap().is_none());
        // A deactivated user's session is found without the user, for the caller to end it.
        accounts::set_staff_active(&conn, id, false).unwrap();
        let (session, staff) = find_staff(&conn, &token).unwrap().unwrap();
        assert_eq!(session.principal_id, id);
        assert!(staff.is_none());
        std::fs::remove_dir_all(path).unwrap();
    }

    #[test]
    fn a_portal_session_is_found_with_its_account_and_every_access_in_order() {
        let path = crate::db::test_folder("find-portal");
        let conn = crate::db::DataDir::open(&path).unwrap().connect().unwrap();
        let account =
            accounts::insert_portal_account(&conn, "a@example.org", "Ann", "x", 0).unwrap();
        let token = create(&conn, Audience::Portal, account, None, 0).unwrap();
        // No access yet: the account, and no access.
        let (_, user) = find_portal(&conn, &token).unwrap().unwrap();
        let (found, accesses) = user.unwrap();
        assert_eq!((found.id, found.name.as_str()), (account, "Ann"));
        assert!(accesses.is_empty());
        let child = patient(&conn, "Bo", "Lee");
        let own = patient(&conn, "Ann", "Lee");
        let former = patient(&conn, "Al", "Lee");
        accounts::grant_access(&conn, account, child, "caregiver", "parent", 0).unwrap();
        accounts::grant_access(&conn, account, former, "caregiver", "parent", 0).unwrap();
        accounts::grant_access(&conn, account, own, "self", "", 0).unwrap();
        conn.execute(
            "UPDATE portal_access SET status = 'revoked' WHERE patient_id = ?1",
            [former],
        )
        .unwrap();
        // Active first, the account's own record first, then by first name; revoked ones last.
        let (_, user) = find_portal(&conn, &token).unwrap().unwrap();
        let (_, accesses) = user.unwrap();
        let shown: Vec<(i64, &str, bool)> = accesses
            .iter()
            .map(|a| (a.patient_id, a.patient_name.as_str(), a.active))
            .collect();
        assert_eq!(
            shown,
            [
                (own, "Ann Lee", true),
                (child, "Bo Lee", true),
                (former, "Al Lee", false)
            ]
        );
        assert_eq!(
            accesses,
            accounts::accesses_for_account(&conn, account).unwrap()
        );
        // A staff session never passes as a portal one; a deleted account leaves its session
        // found without it, for the caller to end.
        let staff = create(&conn, Audience::Staff, account, None, 0).unwrap();
        assert!(find_portal(&conn, &staff).unwrap().is_none());
        conn.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
        // An access whose patient row is gone (only possible with foreign keys off) is left
        // out, not an error.
        conn.execute("DELETE FROM patient WHERE id = ?1", [child])
            .unwrap();
        let (_, user) = find_portal(&conn, &token).unwrap().unwrap();
        let ids: Vec<i64> = user.unwrap().1.iter().map(|a| a.patient_id).collect();
        assert_eq!(ids, [own, former]);
        conn.execute("DELETE FROM portal_account WHERE id = ?1", [account])
            .unwrap();
        let (session, user) = find_portal(&conn, &token).unwrap().unwrap();
        assert_eq!(session.principal_id, account);
        assert!(user.is_none());
        std::fs::remove_dir_all(path).unwrap();
    }
}

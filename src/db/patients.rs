//! Patient records, their portal status, and portal invitations.

use rusqlite::{params, Connection, OptionalExtension, Row};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortalStatus {
    NotInvited,
    Invited,
    Enrolled,
    Revoked,
}

impl PortalStatus {
    pub fn label(self) -> &'static str {
        match self {
            PortalStatus::NotInvited => "Not invited",
            PortalStatus::Invited => "Invited",
            PortalStatus::Enrolled => "Enrolled",
            PortalStatus::Revoked => "Access revoked",
        }
    }

    fn from_code(code: &str) -> PortalStatus {
        match code {
            "enrolled" => PortalStatus::Enrolled,
            "invited" => PortalStatus::Invited,
            "revoked" => PortalStatus::Revoked,
            _ => PortalStatus::NotInvited,
        }
    }
}

/// The portal status of the patient `p`, as an SQL expression taking `?now` as parameter 1,
/// from the columns the database keeps on the patient row (migration V16): enrolled while an
/// account holds their own access, invited while an own invitation can still be used, revoked
/// when their access was taken back, else not invited.
const STATUS_SQL: &str = "CASE
    WHEN p.self_access = 'active' THEN 'enrolled'
    WHEN p.invited_until > ?1 THEN 'invited'
    WHEN p.self_access = 'revoked' THEN 'revoked'
    ELSE 'not_invited' END";

#[derive(Clone, Debug)]
pub struct Patient {
    pub id: i64,
    pub first_name: String,
    pub last_name: String,
    pub date_of_birth: String,
    pub email: String,
    pub phone: String,
    pub status: PortalStatus,
    /// Someone can read messages for this patient: the patient or an active caregiver.
    pub reachable: bool,
}

impl Patient {
    pub fn full_name(&self) -> String {
        format!("{} {}", self.first_name, self.last_name)
    }
}

fn patient_from_row(r: &Row) -> rusqlite::Result<Patient> {
    let status: String = r.get(6)?;
    Ok(Patient {
        id: r.get(0)?,
        first_name: r.get(1)?,
        last_name: r.get(2)?,
        date_of_birth: r.get(3)?,
        email: r.get(4)?,
        phone: r.get(5)?,
        status: PortalStatus::from_code(&status),
        reachable: r.get(7)?,
    })
}

fn select(where_order: &str) -> String {
    format!(
        "SELECT p.id, p.first_name, p.last_name, p.date_of_birth, p.email, p.phone, {STATUS_SQL},
                p.reachable
           FROM patient p {where_order}"
    )
}

pub struct PatientFields<'a> {
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub date_of_birth: &'a str,
    pub email: &'a str,
    pub phone: &'a str,
}

pub fn insert(conn: &Connection, new: &PatientFields, now: i64) -> rusqlite::Result<i64> {
    crate::db::cached_exec(
        conn,
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

pub fn update(conn: &Connection, id: i64, f: &PatientFields) -> rusqlite::Result<()> {
    crate::db::cached_exec(
        conn,
        "UPDATE patient SET first_name = ?2, last_name = ?3, date_of_birth = ?4, email = ?5,
                phone = ?6
          WHERE id = ?1",
        params![
            id,
            f.first_name,
            f.last_name,
            f.date_of_birth,
            f.email,
            f.phone
        ],
    )?;
    Ok(())
}

pub fn get(conn: &Connection, id: i64, now: i64) -> rusqlite::Result<Option<Patient>> {
    crate::db::cached_row(
        conn,
        &select("WHERE p.id = ?2"),
        params![now, id],
        patient_from_row,
    )
    .optional()
}

/// One page of patients matching `query` (name, date of birth or email; empty: everyone), by
/// last name, and whether another page follows.
pub fn search(
    conn: &Connection,
    query: &str,
    page: u32,
    per_page: u32,
    now: i64,
) -> rusqlite::Result<(Vec<Patient>, bool)> {
    let query = query.trim();
    let offset = i64::from(page.saturating_sub(1)) * i64::from(per_page);
    let limit = i64::from(per_page) + 1;
    let mut rows: Vec<Patient> = if query.is_empty() {
        let mut stmt = conn.prepare_cached(statements().everyone.as_str())?;
        let found = stmt.query_map(params![now, "", limit, offset], patient_from_row)?;
        found.collect::<rusqlite::Result<_>>()?
    } else if let Some(date) = crate::dates::Date::parse(query) {
        let mut stmt = conn.prepare_cached(statements().born.as_str())?;
        let found = stmt.query_map(
            params![now, date.to_string(), limit, offset],
            patient_from_row,
        )?;
        found.collect::<rusqlite::Result<_>>()?
    } else {
        let words = search_words(query);
        let Some((from, below)) = words.first().map(|w| (&w.1, &w.2)) else {
            return Ok((Vec::new(), false));
        };
        let mut stmt = conn.prepare_cached(search_sql(words.len()))?;
        let mut values: Vec<&dyn rusqlite::ToSql> = vec![&now, &"", &limit, &offset, from, below];
        for (pattern, _, _) in &words[1..] {
            values.push(pattern);
        }
        let found = stmt.query_map(values.as_slice(), patient_from_row)?;
        found.collect::<rusqlite::Result<_>>()?
    };
    let more = rows.len() > per_page as usize;
    rows.truncate(per_page as usize);
    Ok((rows, more))
}

/// For each word of a search (at most four): its LIKE pattern, and the range of names that
/// begin with it, compared without case (ASCII only, as LIKE does): from the word in lower
/// case up to, not including, the word with its last character raised by one.
fn search_words(query: &str) -> Vec<(String, String, String)> {
    query
        .split_whitespace()
        .take(4)
        .filter_map(|w| {
            let word: String = w
                .chars()
                .filter(|c| !matches!(c, '%' | '_' | '\\'))
                .map(|c| c.to_ascii_lowercase())
                .collect();
            let mut below: Vec<char> = word.chars().collect();
            // The last character that has a next one (U+10FFFF has none): raised, and what
            // followed it dropped. A word of only U+10FFFF matches up to the end of the index.
            // '@' raised is 'A', which NOCASE reads as 'a': the bound is then '[', the next
            // character it reads as itself (no folded name holds 'A' to 'Z').
            while let Some(last) = below.pop() {
                if let Some(next) = (u32::from(last) + 1..=0x10FFFF).find_map(char::from_u32) {
                    below.push(if next.is_ascii_uppercase() { '[' } else { next });
                    break;
                }
            }
            let below: String = if below.is_empty() {
                char::MAX.to_string().repeat(64)
            } else {
                below.into_iter().collect()
            };
            (!word.is_empty()).then(|| (format!("{word}%"), word, below))
        })
        .collect()
}

/// The statements of the patient list, written once: everyone, those born on a date, and a
/// search of one to four words.
struct Statements {
    everyone: String,
    born: String,
    search: [String; 4],
}

fn statements() -> &'static Statements {
    static STATEMENTS: std::sync::OnceLock<Statements> = std::sync::OnceLock::new();
    STATEMENTS.get_or_init(|| {
        let order = "ORDER BY p.last_name COLLATE NOCASE, p.first_name COLLATE NOCASE, p.id
                     LIMIT ?3 OFFSET ?4";
        Statements {
            everyone: select(&format!("WHERE ?2 = '' {order}")),
            born: select(&format!("WHERE p.date_of_birth = ?2 {order}")),
            search: [1, 2, 3, 4].map(write_search_sql),
        }
    })
}

/// The search statement for `words` words (1 to 4, see `search_words`).
pub(crate) fn search_sql(words: usize) -> &'static str {
    &statements().search[words.clamp(1, 4) - 1]
}

/// ?5 and ?6 are the first word's range, ?7 on the LIKE patterns of the words after it. Each
/// word must begin the first name, the last name or the email.
///
/// Three index ranges find the patients whose last name, first name or email begins with the
/// first word; the other words' LIKE checks them; their union, merged in name order, stops at
/// the end of the page; only then are the page's patient rows read. The last-name range
/// comes out of its index already in name order, so a common last name costs one page of rows,
/// not every patient who has it. The first word needs no LIKE: a name in its range begins with
/// it (both compare ASCII letters without case, and nothing else), so a one-word search reads
/// the last-name index alone. The plan does not depend on the words, so the statement stays
/// prepared: written as ranges because SQLite turns `LIKE ?` into index ranges only by planning
/// again for each new pattern.
fn write_search_sql(words: usize) -> String {
    let likes: String = (1..words)
        .map(|i| {
            let n = i + 6;
            format!(" AND (first_name LIKE ?{n} OR last_name LIKE ?{n} OR email LIKE ?{n})")
        })
        .collect();
    let arm = |column: &str| {
        format!(
            "SELECT id, last_name COLLATE NOCASE, first_name COLLATE NOCASE FROM patient
              WHERE {column} COLLATE NOCASE >= ?5 AND {column} COLLATE NOCASE < ?6{likes}"
        )
    };
    select(&format!(
        "WHERE ?2 = ?2 AND p.id IN (
             SELECT id FROM ({} UNION {} UNION {} ORDER BY 2, 3, 1 LIMIT ?3 OFFSET ?4))
         ORDER BY p.last_name COLLATE NOCASE, p.first_name COLLATE NOCASE, p.id",
        arm("last_name"),
        arm("first_name"),
        arm("email")
    ))
}

pub struct NewInvitation<'a> {
    pub patient_id: i64,
    pub role: &'a str,
    pub email: &'a str,
    pub phone: &'a str,
    pub caregiver_name: &'a str,
    pub relationship: &'a str,
    pub token_hash: &'a str,
    pub pin: &'a str,
    pub expires_at: i64,
    pub created_by: Option<i64>,
}

pub fn insert_invitation(
    conn: &Connection,
    new: &NewInvitation,
    now: i64,
) -> rusqlite::Result<i64> {
    crate::db::cached_exec(
        conn,
        "INSERT INTO invitation (patient_id, role, email, phone, caregiver_name, relationship,
                                 token_hash, pin, status, expires_at, created_by, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9, ?10, ?11)",
        params![
            new.patient_id,
            new.role,
            new.email,
            new.phone,
            new.caregiver_name,
            new.relationship,
            new.token_hash,
            new.pin,
            new.expires_at,
            new.created_by,
            now
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

#[derive(Clone, Debug)]
pub struct Invitation {
    pub id: i64,
    pub patient_id: i64,
    pub role: String,
    pub email: String,
    pub caregiver_name: String,
    pub relationship: String,
    pub pin: String,
    pub status: String,
    pub expires_at: i64,
}

impl Invitation {
    pub fn is_caregiver(&self) -> bool {
        self.role == "caregiver"
    }

    pub fn usable(&self, now: i64) -> bool {
        self.status == "pending" && self.expires_at > now
    }
}

const INVITATION_COLUMNS: &str =
    "id, patient_id, role, email, caregiver_name, relationship, pin, status, expires_at";

fn invitation_from_row(r: &Row) -> rusqlite::Result<Invitation> {
    Ok(Invitation {
        id: r.get(0)?,
        patient_id: r.get(1)?,
        role: r.get(2)?,
        email: r.get(3)?,
        caregiver_name: r.get(4)?,
        relationship: r.get(5)?,
        pin: r.get(6)?,
        status: r.get(7)?,
        expires_at: r.get(8)?,
    })
}

pub fn invitation_by_token_hash(
    conn: &Connection,
    token_hash: &str,
) -> rusqlite::Result<Option<Invitation>> {
    crate::db::cached_row(
        conn,
        &format!("SELECT {INVITATION_COLUMNS} FROM invitation WHERE token_hash = ?1"),
        [token_hash],
        invitation_from_row,
    )
    .optional()
}

/// The patient's invitations that can still be used, newest first.
pub fn pending_invitations(
    conn: &Connection,
    patient_id: i64,
    now: i64,
) -> rusqlite::Result<Vec<Invitation>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {INVITATION_COLUMNS} FROM invitation
          WHERE patient_id = ?1 AND status = 'pending' AND expires_at > ?2
          ORDER BY id DESC"
    ))?;
    let rows = stmt.query_map(params![patient_id, now], invitation_from_row)?;
    rows.collect()
}

/// Cancels the patient's pending invitations of one role (a re-invite kills the old link).
pub fn cancel_pending(conn: &Connection, patient_id: i64, role: &str) -> rusqlite::Result<usize> {
    crate::db::cached_exec(
        conn,
        "UPDATE invitation SET status = 'cancelled'
          WHERE patient_id = ?1 AND role = ?2 AND status = 'pending'",
        params![patient_id, role],
    )
}

/// Cancels one pending invitation of this patient; 0 when there is none such.
pub fn cancel_invitation(conn: &Connection, patient_id: i64, id: i64) -> rusqlite::Result<usize> {
    crate::db::cached_exec(
        conn,
        "UPDATE invitation SET status = 'cancelled'
          WHERE id = ?2 AND patient_id = ?1 AND status = 'pending'",
        params![patient_id, id],
    )
}

/// Counts a wrong date of birth or PIN; locks the invitation at `lock_at` failures. Returns
/// whether it is now locked.
pub fn record_failed_attempt(conn: &Connection, id: i64, lock_at: i64) -> rusqlite::Result<bool> {
    crate::db::cached_row(
        conn,
        "UPDATE invitation
            SET failed_attempts = failed_attempts + 1,
                status = CASE WHEN failed_attempts + 1 >= ?2 THEN 'locked' ELSE status END
          WHERE id = ?1
      RETURNING status = 'locked'",
        params![id, lock_at],
        |r| r.get(0),
    )
}

/// Marks a pending invitation used; false when it was no longer pending (used by a
/// concurrent request).
pub fn mark_used(conn: &Connection, id: i64) -> rusqlite::Result<bool> {
    Ok(crate::db::cached_exec(
        conn,
        "UPDATE invitation SET status = 'used' WHERE id = ?1 AND status = 'pending'",
        [id],
    )? == 1)
}

/// Patients eligible for auto-invite: never invited, never enrolled, with an email.
pub fn has_portal_history(conn: &Connection, patient_id: i64) -> rusqlite::Result<bool> {
    crate::db::cached_row(
        conn,
        "SELECT EXISTS (SELECT 1 FROM invitation WHERE patient_id = ?1 AND role = 'self')
             OR EXISTS (SELECT 1 FROM portal_access WHERE patient_id = ?1 AND role = 'self')",
        [patient_id],
        |r| r.get(0),
    )
}

#[cfg(test)]
mod tests {
    use super::{insert, search, search_words, PatientFields};

    fn words(q: &str) -> Vec<(String, String, String)> {
        search_words(q)
    }

    fn w(pattern: &str, from: &str, below: &str) -> (String, String, String) {
        (pattern.into(), from.into(), below.into())
    }

    #[test]
    fn search_words_give_the_range_of_names_that_begin_with_them() {
        assert_eq!(words("Ngu"), [w("ngu%", "ngu", "ngv")]);
        assert_eq!(
            words(" riv  AL "),
            [w("riv%", "riv", "riw"), w("al%", "al", "am")]
        );
        // 'z' is followed by '{', which sorts after every name that begins with "z".
        assert_eq!(words("Z"), [w("z%", "z", "{")]);
        assert_eq!(words("José"), [w("josé%", "josé", "josê")]);
        // Wildcards typed by the user are not wildcards; a word of only wildcards is no word.
        assert_eq!(words("o_b%r"), [w("obr%", "obr", "obs")]);
        assert!(words("% _").is_empty());
        // The last code point has no next one: the range ends after the one before it.
        assert_eq!(words("a\u{10FFFF}")[0].2, "b");
        // NOCASE reads the 'A' after '@' as 'a', which would take in "john[", "john_" and more.
        assert_eq!(words("John@"), [w("john@%", "john@", "john[")]);
        assert_eq!(words("one two three four five").len(), 4);
    }

    #[test]
    fn search_merges_first_name_last_name_and_email_matches_in_name_order_by_page() {
        let path = crate::db::test_folder("search-merge");
        let data = crate::db::DataDir::open(&path).unwrap();
        let conn = data.connect().unwrap();
        for (first, last, email) in [
            ("Alex", "Rivera", "alex@example.org"),
            ("Rivka", "Adams", "r.adams@example.org"),
            ("Sam", "Zhou", "rivers@example.org"),
            ("Riva", "Riverton", "riva@example.org"),
            ("Morgan", "Rivera", "m.rivera@example.org"),
            ("Dana", "Cole", "dana@example.org"),
            ("John", "Sharp", "john@example.org"),
            ("Johnny", "Sharp", "john_sharp@example.org"),
            ("Jon", "Sharp", "john^@example.org"),
        ] {
            let fields = PatientFields {
                first_name: first,
                last_name: last,
                date_of_birth: "1980-01-02",
                email,
                phone: "",
            };
            insert(&conn, &fields, 0).unwrap();
        }
        let names = |query: &str, page: u32, per_page: u32| {
            let (found, more) = search(&conn, query, page, per_page, 0).unwrap();
            let names: Vec<String> = found
                .iter()
                .map(|p| format!("{} {}", p.first_name, p.last_name))
                .collect();
            (names, more)
        };
        // Last name, first name and email matches, each once, by last name then first name.
        let all = [
            "Rivka Adams",
            "Alex Rivera",
            "Morgan Rivera",
            "Riva Riverton",
            "Sam Zhou",
        ];
        assert_eq!(names("RIV", 1, 10), (all.map(String::from).to_vec(), false));
        // Pages cut the merged order.
        assert_eq!(
            names("riv", 1, 2),
            (all[..2].iter().map(|n| n.to_string()).collect(), true)
        );
        assert_eq!(
            names("riv", 2, 2),
            (all[2..4].iter().map(|n| n.to_string()).collect(), true)
        );
        assert_eq!(
            names("riv", 3, 2),
            (all[4..].iter().map(|n| n.to_string()).collect(), false)
        );
        // Every word must begin one of the three, in any order.
        assert_eq!(names("riv mor", 1, 10).0, ["Morgan Rivera"]);
        assert_eq!(names("m.riv morgan", 1, 10).0, ["Morgan Rivera"]);
        assert!(names("riv dana", 1, 10).0.is_empty());
        assert!(names("ivera", 1, 10).0.is_empty(), "only beginnings match");
        // A word is matched as typed, whatever sorts between it and its range's end.
        assert_eq!(names("john@", 1, 10).0, ["John Sharp"]);
        assert_eq!(
            names("JOHN_", 1, 10).0.len(),
            3,
            "'_' is no wildcard, it is dropped"
        );
        drop(conn);
        let _ = std::fs::remove_dir_all(path);
    }
}

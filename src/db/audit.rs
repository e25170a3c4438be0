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
/// in its own write transaction (in turn with the process's other writers, durable on return),
/// so two appends never read the same last entry.
pub fn append(conn: &Connection, e: &Entry) -> rusqlite::Result<()> {
    if conn.is_autocommit() {
        let tx = crate::db::begin_write(conn)?;
        append_locked(&tx, e)?;
        return tx.commit();
    }
    append_locked(conn, e)
}

fn append_locked(conn: &Connection, e: &Entry) -> rusqlite::Result<()> {
    let prev: String = crate::db::cached_row(
        conn,
        "SELECT hash FROM audit_event ORDER BY id DESC LIMIT 1",
        [],
        |r| r.get(0),
    )
    .optional()?
    .unwrap_or_default();
    let hash = crypto::sha256_hex(canonical(e, &prev).as_bytes());
    crate::db::cached_exec(
        conn,
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

/// What the audit report is narrowed to.
#[derive(Default)]
pub struct Filter {
    pub from: Option<i64>,
    pub until: Option<i64>,
    pub staff_id: Option<i64>,
    pub patient_id: Option<i64>,
    pub action: String,
    /// Only entries up to this id: the newest one when the first page was shown, so that
    /// entries added meanwhile (this report's own views among them) do not shift the pages.
    pub upto: Option<i64>,
}

/// One line of the audit report, with names resolved.
pub struct ReportRow {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub patient: String,
    pub object: String,
    pub outcome: String,
    pub client: String,
}

/// Entries matching the filter, newest first: one page and whether more follow.
pub fn report(
    conn: &Connection,
    f: &Filter,
    page: u32,
    per_page: u32,
) -> rusqlite::Result<(Vec<ReportRow>, bool)> {
    let mut stmt = conn.prepare_cached(
        "SELECT e.id, e.at,
                CASE e.actor_kind
                    WHEN 'staff' THEN coalesce((SELECT name FROM staff WHERE id = e.actor_id), 'staff ' || e.actor_id)
                    WHEN 'portal' THEN coalesce((SELECT name || ' (portal)' FROM portal_account WHERE id = e.actor_id), 'portal ' || e.actor_id)
                    ELSE e.actor_kind END,
                e.action,
                coalesce((SELECT first_name || ' ' || last_name FROM patient WHERE id = e.patient_id), ''),
                e.object, e.outcome, e.client
           FROM audit_event e
          WHERE (?1 IS NULL OR e.at >= ?1) AND (?2 IS NULL OR e.at < ?2)
            AND (?3 IS NULL OR (e.actor_kind = 'staff' AND e.actor_id = ?3))
            AND (?4 IS NULL OR e.patient_id = ?4)
            AND (?5 = '' OR e.action = ?5)
            AND (?8 IS NULL OR e.id <= ?8)
          ORDER BY e.id DESC LIMIT ?6 OFFSET ?7",
    )?;
    let offset = i64::from(page.saturating_sub(1)) * i64::from(per_page);
    let rows = stmt.query_map(
        params![
            f.from,
            f.until,
            f.staff_id,
            f.patient_id,
            f.action,
            i64::from(per_page) + 1,
            offset,
            f.upto
        ],
        |r| {
            Ok(ReportRow {
                id: r.get(0)?,
                at: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                patient: r.get(4)?,
                object: r.get(5)?,
                outcome: r.get(6)?,
                client: r.get(7)?,
            })
        },
    )?;
    let mut rows: Vec<ReportRow> = rows.collect::<rusqlite::Result<_>>()?;
    let more = rows.len() > per_page as usize;
    rows.truncate(per_page as usize);
    Ok((rows, more))
}

/// The newest entry's id.
pub fn newest_id(conn: &Connection) -> rusqlite::Result<i64> {
    crate::db::cached_row(
        conn,
        "SELECT coalesce(max(id), 0) FROM audit_event",
        [],
        |r| r.get(0),
    )
}

/// The distinct actions recorded, for the report's filter.
pub fn actions(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT DISTINCT action FROM audit_event ORDER BY action")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    rows.collect()
}

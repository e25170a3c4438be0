//! The practice row (name and settings) and the first-run setup link.

use crate::crypto;
use rusqlite::{params, Connection, OptionalExtension};
use std::sync::{Mutex, PoisonError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Practice {
    pub name: String,
    pub phone: String,
    pub messaging_enabled: bool,
    /// Add messages about patients to the chart automatically.
    pub auto_chart: bool,
    /// Archiving a shared thread archives it for everyone.
    pub archive_for_everyone: bool,
    /// Only administrators and chosen users may invite patients.
    pub invite_chosen_only: bool,
    pub auto_invite: bool,
    pub is_demo: bool,
}

pub fn get(conn: &Connection) -> rusqlite::Result<Option<Practice>> {
    crate::db::cached_row(
        conn,
        "SELECT name, phone, messaging_enabled, auto_chart, archive_for_everyone,
                invite_policy = 'chosen', auto_invite, is_demo
           FROM practice WHERE id = 1",
        [],
        |r| {
            Ok(Practice {
                name: r.get(0)?,
                phone: r.get(1)?,
                messaging_enabled: r.get(2)?,
                auto_chart: r.get(3)?,
                archive_for_everyone: r.get(4)?,
                invite_chosen_only: r.get(5)?,
                auto_invite: r.get(6)?,
                is_demo: r.get(7)?,
            })
        },
    )
    .optional()
}

/// The practice row kept in memory: every page shows the practice's name and most check a
/// setting, and reading the row costs a database transaction each time. Once the row exists
/// only `update` changes it, and whoever commits an update calls `forget` afterwards. A read
/// that began before a `forget` is not kept, so a value read just before an update commits
/// cannot stay in memory after it. No row (before first-run setup) is never kept.
#[derive(Default)]
pub struct Memo {
    state: Mutex<MemoState>,
}

#[derive(Default)]
struct MemoState {
    /// Counts `forget` calls.
    generation: u64,
    row: Option<Practice>,
}

impl Memo {
    /// The kept row, or the one `read` returns (kept for next time).
    pub fn get(
        &self,
        read: impl FnOnce() -> rusqlite::Result<Option<Practice>>,
    ) -> rusqlite::Result<Option<Practice>> {
        let generation = {
            let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(row) = &state.row {
                return Ok(Some(row.clone()));
            }
            state.generation
        };
        let row = read()?;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.generation == generation {
            state.row.clone_from(&row);
        }
        Ok(row)
    }

    /// Drops the kept row; call after committing a change to it.
    pub fn forget(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.generation += 1;
        state.row = None;
    }
}

pub fn insert(
    conn: &Connection,
    name: &str,
    messaging_enabled: bool,
    is_demo: bool,
    now: i64,
) -> rusqlite::Result<()> {
    crate::db::cached_exec(
        conn,
        "INSERT INTO practice (id, name, messaging_enabled, is_demo, created_at)
         VALUES (1, ?1, ?2, ?3, ?4)",
        params![name, messaging_enabled, is_demo, now],
    )?;
    // Setup is done: no setup link may work any more.
    crate::db::cached_exec(conn, "DELETE FROM setup_token", [])?;
    Ok(())
}

pub fn update(conn: &Connection, p: &Practice) -> rusqlite::Result<()> {
    crate::db::cached_exec(
        conn,
        "UPDATE practice SET name = ?1, phone = ?2, messaging_enabled = ?3, auto_chart = ?4,
                archive_for_everyone = ?5, invite_policy = ?6, auto_invite = ?7
          WHERE id = 1",
        params![
            p.name,
            p.phone,
            p.messaging_enabled,
            p.auto_chart,
            p.archive_for_everyone,
            if p.invite_chosen_only {
                "chosen"
            } else {
                "everyone"
            },
            p.auto_invite
        ],
    )?;
    Ok(())
}

/// Replaces any earlier setup link with a new one valid until `expires_at`; returns the token.
pub fn new_setup_token(conn: &Connection, expires_at: i64) -> rusqlite::Result<String> {
    let token = crypto::random_token();
    crate::db::cached_exec(conn, "DELETE FROM setup_token", [])?;
    crate::db::cached_exec(
        conn,
        "INSERT INTO setup_token (token_hash, expires_at) VALUES (?1, ?2)",
        params![crypto::sha256_hex(token.as_bytes()), expires_at],
    )?;
    Ok(token)
}

pub fn setup_token_valid(conn: &Connection, token: &str, now: i64) -> rusqlite::Result<bool> {
    crate::db::cached_row(
        conn,
        "SELECT count(*) > 0 FROM setup_token WHERE token_hash = ?1 AND expires_at > ?2
           AND NOT EXISTS (SELECT 1 FROM practice)",
        params![crypto::sha256_hex(token.as_bytes()), now],
        |r| r.get(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn named(name: &str) -> Practice {
        Practice {
            name: name.into(),
            phone: String::new(),
            messaging_enabled: true,
            auto_chart: false,
            archive_for_everyone: false,
            invite_chosen_only: false,
            auto_invite: false,
            is_demo: false,
        }
    }

    #[test]
    fn memo_reads_once_until_forgotten() {
        let memo = Memo::default();
        let reads = Cell::new(0);
        let read = |name: &str| {
            reads.set(reads.get() + 1);
            Ok(Some(named(name)))
        };
        assert_eq!(memo.get(|| read("A")).unwrap().unwrap().name, "A");
        assert_eq!(memo.get(|| read("B")).unwrap().unwrap().name, "A");
        assert_eq!(reads.get(), 1);
        memo.forget();
        assert_eq!(memo.get(|| read("B")).unwrap().unwrap().name, "B");
        assert_eq!(reads.get(), 2);
    }

    #[test]
    fn memo_keeps_no_missing_row_and_no_read_overtaken_by_forget() {
        let memo = Memo::default();
        // Before setup there is no row; the next read must look again.
        assert!(memo.get(|| Ok(None)).unwrap().is_none());
        assert_eq!(
            memo.get(|| Ok(Some(named("A")))).unwrap().unwrap().name,
            "A"
        );
        memo.forget();
        // A read that began before an update committed returns what it read, but is not kept.
        let stale = memo.get(|| {
            memo.forget();
            Ok(Some(named("old")))
        });
        assert_eq!(stale.unwrap().unwrap().name, "old");
        assert_eq!(
            memo.get(|| Ok(Some(named("new")))).unwrap().unwrap().name,
            "new"
        );
    }
}

//! Backups, restores and the audit-chain check: operational commands, each safe to run while
//! the server runs (backup, audit verify) or refusing to overwrite without an explicit flag
//! (restore).

use crate::attachments::{self, Store};
use crate::db::{self, audit, DataDir};
use std::fs;
use std::path::Path;

fn folder_is_empty(path: &Path) -> bool {
    fs::read_dir(path).map_or(true, |mut entries| entries.next().is_none())
}

/// Copies the referenced attachments of the database at `db_path` from `from` to `to`.
fn copy_blobs(db_path: &Path, from: &Store, to: &Store) -> Result<usize, String> {
    let conn = db::open_read_only(db_path)?;
    let references = db::attachments::all_references(&conn)
        .map_err(|e| format!("cannot read attachments: {e}"))?;
    to.open()
        .map_err(|e| format!("cannot create the attachment folder: {e}"))?;
    let mut copied = 0;
    for (_, sha256, _) in &references {
        let target = to.path_of(sha256);
        if target.exists() {
            continue;
        }
        if let Some(folder) = target.parent() {
            fs::create_dir_all(folder)
                .map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
        }
        fs::copy(from.path_of(sha256), &target)
            .map_err(|e| format!("cannot copy attachment {sha256}: {e}"))?;
        fs::File::open(&target)
            .and_then(|f| f.sync_all())
            .map_err(|e| format!("cannot sync {}: {e}", target.display()))?;
        copied += 1;
    }
    Ok(copied)
}

fn sync_path(path: &Path) -> Result<(), String> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", path.display()))
}

/// Checks a data folder: SQLite's integrity check and every attachment.
fn check(folder: &Path) -> Result<String, String> {
    let conn = db::open_read_only(&folder.join(db::DB_FILE))?;
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| format!("integrity check failed: {e}"))?;
    if integrity != "ok" {
        return Err(format!("the database copy is damaged: {integrity}"));
    }
    let references = db::attachments::all_references(&conn)
        .map_err(|e| format!("cannot read attachments: {e}"))?;
    let report = attachments::verify(&Store::new(folder), &references)
        .map_err(|e| format!("cannot read the attachments: {e}"))?;
    if !report.is_clean() {
        return Err(format!(
            "the attachments are not complete: {} missing, {} corrupt, {} unreferenced",
            report.missing.len(),
            report.corrupt.len(),
            report.unreferenced.len()
        ));
    }
    let messages: i64 = conn
        .query_row("SELECT count(*) FROM message", [], |r| r.get(0))
        .unwrap_or(0);
    Ok(format!(
        "{messages} messages, {} attachment files",
        report.checked
    ))
}

/// `carepost backup DEST`: a consistent copy while the server runs: SQLite's snapshot of the
/// database (VACUUM INTO), then every attachment it references, then a check of the copy.
pub fn backup(data: &Path, dest: &Path) -> Result<String, String> {
    let source = DataDir::open_existing(data)?;
    if dest.exists() && !folder_is_empty(dest) {
        return Err(format!(
            "{} is not empty: choose a new folder for the backup.",
            dest.display()
        ));
    }
    fs::create_dir_all(dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    let copy = dest.join(db::DB_FILE);
    let conn = source.connect()?;
    conn.execute("VACUUM INTO ?1", [copy.to_string_lossy()])
        .map_err(|e| format!("cannot copy the database: {e}"))?;
    // VACUUM INTO does not fsync its output: make the copy durable before calling it done.
    sync_path(&copy)?;
    let copied = copy_blobs(&copy, &Store::new(data), &Store::new(dest))?;
    sync_path(dest)?;
    let summary = check(dest)?;
    Ok(format!(
        "Backup written to {} and checked: {summary} ({copied} copied).",
        dest.display()
    ))
}

/// `carepost restore SRC --data DIR`: into an empty folder, or over an existing one only with
/// `force` (and never while a server holds it).
pub fn restore(src: &Path, data: &Path, force: bool) -> Result<String, String> {
    check(src).map_err(|e| format!("{} is not a usable backup: {e}", src.display()))?;
    let used = data.exists() && !folder_is_empty(data);
    if used && !force {
        return Err(format!(
            "{} is not empty: restore into an empty folder, or add --force to replace what is there.",
            data.display()
        ));
    }
    fs::create_dir_all(data).map_err(|e| format!("cannot create {}: {e}", data.display()))?;
    // Held until the restore is complete: no server can start on the folder meanwhile, and
    // taking it proves none is running now. The database itself is not opened: it may be the
    // damaged thing being replaced.
    let _lock = db::lock_data_dir(data)?;
    if used {
        for name in [db::DB_FILE, "carepost.db-wal", "carepost.db-shm"] {
            let _ = fs::remove_file(data.join(name));
        }
        let _ = fs::remove_dir_all(data.join("blobs"));
    }
    let target = data.join(db::DB_FILE);
    fs::copy(src.join(db::DB_FILE), &target)
        .map_err(|e| format!("cannot copy the database: {e}"))?;
    sync_path(&target)?;
    copy_blobs(&target, &Store::new(src), &Store::new(data))?;
    sync_path(data)?;
    let summary = check(data)?;
    Ok(format!("Restored into {}: {summary}.", data.display()))
}

/// `carepost audit verify`: recomputes the hash chain; names the first entry that does not fit.
pub fn audit_verify(data: &Path) -> Result<String, String> {
    let source = DataDir::open_existing(data)?;
    let conn = source.connect()?;
    let mut stmt = conn
        .prepare(
            "SELECT id, at, actor_kind, actor_id, action, patient_id, object, outcome, client, prev_hash, hash
               FROM audit_event ORDER BY id",
        )
        .map_err(|e| format!("cannot read the audit log: {e}"))?;
    let mut rows = stmt
        .query([])
        .map_err(|e| format!("cannot read the audit log: {e}"))?;
    let mut expected_prev = String::new();
    let mut count = 0u64;
    while let Some(r) = rows
        .next()
        .map_err(|e| format!("cannot read the audit log: {e}"))?
    {
        let read = |i: usize| -> Result<String, String> {
            r.get::<_, String>(i).map_err(|e| e.to_string())
        };
        let id: i64 = r.get(0).map_err(|e| e.to_string())?;
        let (actor_kind, action, object, outcome, client) =
            (read(2)?, read(4)?, read(6)?, read(7)?, read(8)?);
        let entry = audit::Entry {
            at: r.get(1).map_err(|e| e.to_string())?,
            actor_kind: &actor_kind,
            actor_id: r.get(3).map_err(|e| e.to_string())?,
            action: &action,
            patient_id: r.get(5).map_err(|e| e.to_string())?,
            object: &object,
            outcome: &outcome,
            client: &client,
        };
        let (prev, hash) = (read(9)?, read(10)?);
        if prev != expected_prev {
            return Err(format!("audit entry {id} does not follow the entry before it: an entry was removed, inserted or reordered."));
        }
        if crate::crypto::sha256_hex(audit::canonical(&entry, &prev).as_bytes()) != hash {
            return Err(format!(
                "audit entry {id} was altered: its content does not match its hash."
            ));
        }
        expected_prev = hash;
        count += 1;
    }
    Ok(format!("The audit log is intact: {count} entries."))
}

//! Opening the data folder and its SQLite database, migrations, and a connection pool sized to
//! the server's worker threads. The queries live in one module per noun.

pub mod accounts;
pub mod attachments;
pub mod audit;
pub mod messages;
pub mod outbox;
pub mod patients;
pub mod practice;
pub mod sessions;

use rusqlite::{Connection, OpenFlags};
use std::fs::File;
use std::ops::{Deref, DerefMut};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

mod embedded {
    refinery::embed_migrations!("migrations");
}

pub const DB_FILE: &str = "carepost.db";
pub const LOCK_FILE: &str = "carepost.lock";

/// The data folder, opened, locked against a second Carepost, migrated.
pub struct DataDir {
    pub path: PathBuf,
    pub schema_version: i64,
    /// Held for the life of the process: the exclusive lock on `carepost.lock`.
    _lock: File,
}

/// The newest migration this binary carries.
pub fn latest_schema_version() -> i64 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

impl DataDir {
    /// Opens (creating if needed) the data folder and applies pending migrations. Every error is
    /// one sentence that says what to fix; nothing is written before the checks pass.
    pub fn open(path: &Path) -> Result<DataDir, String> {
        if path.exists() && !path.is_dir() {
            return Err(format!(
                "The data folder {} is a file, not a folder: choose another with --data.",
                path.display()
            ));
        }
        std::fs::create_dir_all(path).map_err(|e| {
            format!(
                "Cannot create the data folder {} ({}): create it or choose another with --data.",
                path.display(),
                io_reason(&e)
            )
        })?;
        let lock = lock_data_dir(path)?;
        let db_path = path.join(DB_FILE);
        let mut conn = open_connection(&db_path).map_err(|e| describe_open_error(&db_path, &e))?;
        let applied = applied_version(&conn).map_err(|e| describe_open_error(&db_path, &e))?;
        let latest = latest_schema_version();
        if applied > latest {
            return Err(format!(
                "The database {} was written by a newer Carepost (schema version {applied}; this \
                 one knows up to {latest}): run that newer version, or restore a backup made by this one.",
                db_path.display()
            ));
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| describe_open_error(&db_path, &e))?;
        embedded::migrations::runner()
            .set_abort_divergent(true)
            .set_abort_missing(true)
            .run(&mut conn)
            .map_err(|e| {
                format!(
                    "Cannot bring the database {} up to date ({e}): restore a backup or report this.",
                    db_path.display()
                )
            })?;
        Ok(DataDir {
            path: path.to_path_buf(),
            schema_version: latest,
            _lock: lock,
        })
    }

    /// Opens an existing data folder for checking while a server may be using it: no lock, no
    /// migration (the schema must be current).
    pub fn open_existing(path: &Path) -> Result<DataDir, String> {
        let db_path = path.join(DB_FILE);
        if !db_path.is_file() {
            return Err(format!(
                "There is no Carepost database in {}: check --data.",
                path.display()
            ));
        }
        let conn = open_connection(&db_path).map_err(|e| describe_open_error(&db_path, &e))?;
        let applied = applied_version(&conn).map_err(|e| describe_open_error(&db_path, &e))?;
        if applied != latest_schema_version() {
            return Err(format!(
                "The database {} has schema version {applied}, this Carepost expects {}: start `carepost serve` once to update it, or use the matching version.",
                db_path.display(),
                latest_schema_version()
            ));
        }
        let lock =
            File::open(&db_path).map_err(|e| format!("cannot open {}: {e}", db_path.display()))?;
        Ok(DataDir {
            path: path.to_path_buf(),
            schema_version: applied,
            _lock: lock,
        })
    }

    pub fn db_path(&self) -> PathBuf {
        self.path.join(DB_FILE)
    }

    pub fn connect(&self) -> Result<Connection, String> {
        open_connection(&self.db_path()).map_err(|e| describe_open_error(&self.db_path(), &e))
    }

    /// Folds the write-ahead log into the database file, for a clean shutdown.
    pub fn checkpoint(&self) -> Result<(), String> {
        let conn = self.connect()?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(|e| format!("checkpoint failed: {e}"))
    }
}

/// Takes the data folder's exclusive lock (no second Carepost may use it meanwhile).
pub fn lock_data_dir(path: &Path) -> Result<File, String> {
    let lock_path = path.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| {
            format!(
                "Cannot write in the data folder {} ({}): give the user running Carepost write \
                 access, or choose another folder with --data.",
                path.display(),
                io_reason(&e)
            )
        })?;
    // SAFETY: flock on a file descriptor we own; it has no memory effects.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(format!(
            "Another Carepost is already using the data folder {}: stop it first, or choose \
             another folder with --data.",
            path.display()
        ));
    }
    Ok(file)
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::ReadOnlyFilesystem => "read-only file system".into(),
        _ => e.to_string(),
    }
}

fn describe_open_error(db_path: &Path, e: &rusqlite::Error) -> String {
    let text = e.to_string();
    if text.contains("not a database") || text.contains("malformed") {
        format!(
            "The database {} is damaged or is not a Carepost database: restore it from a backup, \
             or choose another folder with --data.",
            db_path.display()
        )
    } else if text.contains("readonly") || text.contains("unable to open") {
        format!(
            "Cannot open the database {} for writing ({text}): give the user running Carepost \
             write access to the data folder.",
            db_path.display()
        )
    } else {
        format!("Cannot open the database {} ({text}).", db_path.display())
    }
}

/// The highest migration applied to this database, 0 for a new one. Reading the schema also
/// proves the file is a readable SQLite database.
fn applied_version(conn: &Connection) -> rusqlite::Result<i64> {
    let has_history: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'refinery_schema_history'",
        [],
        |r| r.get(0),
    )?;
    if !has_history {
        return Ok(0);
    }
    conn.query_row(
        "SELECT coalesce(max(version), 0) FROM refinery_schema_history",
        [],
        |r| r.get(0),
    )
}

/// Every connection: foreign keys enforced, a busy timeout, and full fsync on commit so an
/// acknowledged message survives power loss.
pub fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// Opens a database only to read it: never creates or changes the file.
pub fn open_read_only(path: &Path) -> Result<Connection, String> {
    if !path.is_file() {
        return Err(format!(
            "there is no Carepost database at {}",
            path.display()
        ));
    }
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| describe_open_error(path, &e))
}

/// A fixed set of connections, one per worker thread.
pub struct Pool {
    idle: Mutex<Vec<Connection>>,
    returned: Condvar,
}

impl Pool {
    pub fn new(data: &DataDir, size: usize) -> Result<Pool, String> {
        let conns = (0..size)
            .map(|_| data.connect())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Pool {
            idle: Mutex::new(conns),
            returned: Condvar::new(),
        })
    }

    pub fn get(&self) -> PooledConn<'_> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(conn) = idle.pop() {
                return PooledConn {
                    pool: self,
                    conn: Some(conn),
                };
            }
            idle = self.returned.wait(idle).unwrap_or_else(|e| e.into_inner());
        }
    }
}

pub struct PooledConn<'a> {
    pool: &'a Pool,
    conn: Option<Connection>,
}

impl Deref for PooledConn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("connection present until drop")
    }
}

impl DerefMut for PooledConn<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn.as_mut().expect("connection present until drop")
    }
}

impl Drop for PooledConn<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // A transaction left open by a panicking handler is rolled back here, so the next
            // user of the connection starts clean.
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
            self.pool.returned.notify_one();
        }
    }
}

//! Opening the data folder and its SQLite database, migrations, and a connection pool sized to
//! the server's worker threads. The queries live in one module per noun.

pub mod accounts;
pub mod attachments;
pub mod audit;
pub mod batch;
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
use std::sync::{Condvar, Mutex, MutexGuard};

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

/// Process-wide SQLite settings, before its first connection: no memory statistics. Keeping them
/// takes one global mutex around every allocation of every connection, which the profile of the
/// benchmark showed as the largest single cost of a page (threads waiting on that mutex).
fn configure_sqlite() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: sqlite3_config before sqlite3_initialize (the first open runs after this);
        // if SQLite were already initialised it would just answer SQLITE_MISUSE.
        unsafe {
            rusqlite::ffi::sqlite3_config(
                rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS,
                0 as std::ffi::c_int,
            );
        }
    });
}

/// Statements prepared once per connection and kept: a page runs a dozen of them, and preparing
/// (parsing and planning) cost more than running them in the benchmark's profile.
const STATEMENT_CACHE: usize = 256;

/// `query_row` through the connection's statement cache.
pub fn cached_row<T, P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row(params, f)
}

/// `execute` through the connection's statement cache.
pub fn cached_exec<P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// While another connection holds the write lock: try again every 0.2 ms for the first 0.2 s,
/// then every 5 ms, and give up (SQLITE_BUSY) after 5 s. A write transaction here lasts well
/// under a millisecond, so waiting writers take their turn almost at once. SQLite's own busy
/// timeout sleeps 1, 2, 5, 10... up to 100 ms between tries, which under 16 concurrent writers
/// put the p99 of every write near 100 ms while the lock stood free (see the README's
/// Performance section).
fn wait_for_write_lock(attempt: i32) -> bool {
    const QUICK_TRIES: i32 = 1_000;
    let (step, waited) = if attempt < QUICK_TRIES {
        (std::time::Duration::from_micros(200), attempt as u64 * 200)
    } else {
        (
            std::time::Duration::from_millis(5),
            200_000 + (attempt - QUICK_TRIES) as u64 * 5_000,
        )
    };
    if waited >= 5_000_000 {
        return false;
    }
    std::thread::sleep(step);
    true
}

/// Every connection: foreign keys enforced, a quick busy handler, and full fsync on commit so an
/// acknowledged message survives power loss.
pub fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    open_connection_with(path, OpenFlags::SQLITE_OPEN_CREATE)
}

/// `open_connection`, creating the file only with `SQLITE_OPEN_CREATE` in `create`.
fn open_connection_with(path: &Path, create: OpenFlags) -> rusqlite::Result<Connection> {
    configure_sqlite();
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | create | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_handler(Some(wait_for_write_lock))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // Plans that do not depend on bound values: otherwise SQLite (built with STAT4) marks a
    // statement with a join, an ORDER BY or a `LIMIT ?` to be planned again whenever a value
    // changes, and a cached statement is parsed and planned again on every use (8% of the
    // server's time in the benchmark's profile of sends).
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
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
    configure_sqlite();
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| describe_open_error(path, &e))
}

/// A write transaction that waits its turn in this process, and whose commit is durable before
/// `commit` returns (group commit).
///
/// - Writers queue on a mutex (parked, in turn) rather than on SQLite's file lock (polled), so the
///   one holding the lock keeps the CPU and the next wakes as soon as it commits.
/// - The transaction runs at `synchronous = NORMAL`: COMMIT appends to the WAL without waiting
///   for the disk, and the turn passes on at once. `commit` then waits for one fsync of the WAL
///   that began after this COMMIT; one fsync covers every commit made while the previous one ran.
///   So an acknowledged write has reached the disk, as with `synchronous = FULL`, at a fraction of
///   the fsyncs (measured in the benchmark, see the README's Performance section).
///
/// Dropped uncommitted, it rolls back. Every other statement keeps `synchronous = FULL`.
pub struct Write<'c> {
    conn: &'c Connection,
    open: bool,
    turn: Option<MutexGuard<'static, ()>>,
}

/// Set by `bulk_load_without_fsync`.
static BULK_LOAD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// For a program that fills a fresh data folder in bulk (the benchmark's builder) and would
/// simply start again after a crash: from now on, this process's write transactions commit
/// without waiting for the disk. Never called by the server or the command-line tools.
pub fn bulk_load_without_fsync() {
    BULK_LOAD.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn bulk_loading() -> bool {
    BULK_LOAD.load(std::sync::atomic::Ordering::Relaxed)
}

/// The setting every connection keeps outside `Write` transactions.
fn restore_sync() -> &'static str {
    if bulk_loading() {
        "PRAGMA synchronous = OFF"
    } else {
        "PRAGMA synchronous = FULL"
    }
}

/// Begins a write transaction (BEGIN IMMEDIATE) once this process's other writers are done.
pub fn begin_write(conn: &Connection) -> rusqlite::Result<Write<'_>> {
    static TURN: Mutex<()> = Mutex::new(());
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let begin = if bulk_loading() {
        "PRAGMA synchronous = OFF; BEGIN IMMEDIATE"
    } else {
        "PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE"
    };
    conn.execute_batch(begin).inspect_err(|_| {
        let _ = conn.execute_batch(restore_sync());
    })?;
    Ok(Write {
        conn,
        open: true,
        turn: Some(turn),
    })
}

impl Write<'_> {
    /// Commits, gives the turn to the next writer, then waits until the commit is on disk.
    pub fn commit(mut self) -> rusqlite::Result<()> {
        self.conn.execute_batch("COMMIT")?;
        self.open = false;
        let _ = self.conn.execute_batch(restore_sync());
        self.turn = None;
        if bulk_loading() {
            return Ok(());
        }
        let wal = format!("{}-wal", self.conn.path().unwrap_or_default());
        wait_until_durable(Path::new(&wal)).map_err(|e| {
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR_FSYNC),
                Some(format!("cannot flush {wal} to disk: {e}")),
            )
        })
    }
}

impl Drop for Write<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.conn.execute_batch("ROLLBACK");
            let _ = self.conn.execute_batch(restore_sync());
        }
    }
}

impl Deref for Write<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

/// Of one WAL file: commits counted so far, how many of them an fsync has covered, and up to
/// which one a failed fsync left them unconfirmed.
#[derive(Default)]
struct Flushes {
    committed: u64,
    durable: u64,
    failed: u64,
    flushing: bool,
}

/// WAL flushes done by `wait_until_durable` in this process (for tests).
static FLUSH_COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Returns once an fsync of `wal` that began after the caller's COMMIT has finished. Whoever
/// finds no flush of that file running does the next one, for everyone who committed before it
/// began. If that flush fails, everyone it was for gets the error, not only the one who ran it:
/// a second fsync would usually succeed after the kernel has reported (and dropped) the failure,
/// though the pages may be lost.
fn wait_until_durable(wal: &Path) -> std::io::Result<()> {
    static FLUSHES: std::sync::LazyLock<Mutex<std::collections::HashMap<PathBuf, Flushes>>> =
        std::sync::LazyLock::new(Default::default);
    static FLUSHED: Condvar = Condvar::new();
    let mut all = FLUSHES.lock().unwrap_or_else(|e| e.into_inner());
    let f = all.entry(wal.to_path_buf()).or_default();
    f.committed += 1;
    let mine = f.committed;
    loop {
        let f = all.entry(wal.to_path_buf()).or_default();
        // Failure first: a later flush that succeeds does not bring back pages a failed one lost.
        if f.failed >= mine {
            return Err(std::io::Error::other(
                "an earlier flush of the write-ahead log failed",
            ));
        }
        if f.durable >= mine {
            return Ok(());
        }
        if f.flushing {
            all = FLUSHED.wait(all).unwrap_or_else(|e| e.into_inner());
            continue;
        }
        f.flushing = true;
        let covers = f.committed;
        drop(all);
        // Opened each time: the WAL is the same file for the server's life, but a fresh
        // descriptor can never point at a file SQLite has since replaced.
        let flushed = File::options()
            .append(true)
            .open(wal)
            .and_then(|w| w.sync_data());
        FLUSH_COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        all = FLUSHES.lock().unwrap_or_else(|e| e.into_inner());
        let f = all.entry(wal.to_path_buf()).or_default();
        f.flushing = false;
        if flushed.is_ok() {
            f.durable = f.durable.max(covers);
        } else {
            f.failed = f.failed.max(covers);
        }
        FLUSHED.notify_all();
        flushed?;
    }
}

/// A set of connections, one per worker thread, and the threads that write views together and
/// fold the write-ahead log into the database for them.
///
/// A thread never waits for a connection while it could open one: when every connection is in
/// use (a thread holding one asks for a second, or a thread outside the workers asks), `get`
/// opens an extra one, closed when it comes back to a full pool. Waiting instead let a thread
/// that held a connection wait for itself, and enough of them at once hang the server. Only if
/// opening fails does `get` wait for a connection to come back.
pub struct Pool {
    idle: Mutex<Idle>,
    returned: Condvar,
    /// How many connections the pool keeps.
    size: usize,
    db_path: PathBuf,
    cache_mib: u64,
    /// Folds the write-ahead log into the database file (see `start_checkpoints`).
    checkpointer: Background<()>,
    /// The writer thread for small writes made together (see `batch`).
    writer: batch::Batcher,
}

/// The connections not in use, and how many threads wait for one. Returning a connection wakes
/// a waiter only if there is one: a wake-up is a system call even when nobody waits, and a
/// page takes and returns connections several times (measured: 10 futex calls per mailbox page
/// against 3 per static file).
struct Idle {
    conns: Vec<Connection>,
    waiting: usize,
}

/// A connection for the pool or its writer thread.
///
/// - The page cache holds up to `cache_mib` MiB: SQLite's default (2 MB) could not hold the
///   pages of 16 staff inboxes at 1,000,000 messages, so each view read them again through the
///   system's cache and the inbox's cost grew with the history.
/// - No automatic checkpoint: SQLite would run one inside the COMMIT that takes the log past
///   1,000 pages, while that writer still holds the write turn, and every writer waited for the
///   copy and its two fsyncs (5% of the server's time in the profile of sends). The
///   checkpoint thread (`start_checkpoints`) does it instead.
///
/// (Both measured by the benchmark; see the README's Performance section.)
///
/// The database must exist: a connection opened while the server runs (an extra one, see
/// `Pool`) must never create an empty database where the real one went missing.
fn working_connection(db_path: &Path, cache_mib: u64) -> Result<Connection, String> {
    let conn = open_connection_with(db_path, OpenFlags::empty())
        .map_err(|e| describe_open_error(db_path, &e))?;
    let cache_kib = i64::try_from(cache_mib).unwrap_or(1024) * 1024;
    conn.execute_batch(&format!(
        "PRAGMA cache_size = -{cache_kib}; PRAGMA wal_autocheckpoint = 0"
    ))
    .map_err(|e| describe_open_error(db_path, &e))?;
    Ok(conn)
}

impl Pool {
    /// `size` connections, each with a page cache of up to `cache_mib` MiB.
    pub fn new(data: &DataDir, size: usize, cache_mib: u64) -> Result<Pool, String> {
        let db_path = data.db_path();
        let conns = (0..size)
            .map(|_| working_connection(&db_path, cache_mib))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Pool {
            idle: Mutex::new(Idle { conns, waiting: 0 }),
            returned: Condvar::new(),
            size,
            checkpointer: start_checkpoints(checkpoint_connection(data)?)?,
            writer: batch::Batcher::start(working_connection(&db_path, cache_mib)?)?,
            db_path,
            cache_mib,
        })
    }

    /// Runs `work` in the next write transaction shared with other requests' small writes, and
    /// returns once it is on disk (see `batch::Batcher::write`; `work` must not use the pool).
    ///
    /// A bulk load (`bulk_load_without_fsync`) has one writer, whom the hand-off to the writer
    /// thread would only slow down: its work runs at once, in its own transaction (committed
    /// without a flush, as every bulk write), on a connection of the pool, so that a pool of one
    /// reads and writes on one connection, whose cache no other connection's commit empties.
    pub fn write_together<T, F>(&self, work: F) -> rusqlite::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        if bulk_loading() {
            let conn = self.get();
            let tx = begin_write(&conn)?;
            let value = work(&tx)?;
            tx.commit()?;
            return Ok(value);
        }
        self.writer.write(work)
    }

    /// The writer thread's transactions committed so far, and the jobs handed to it (for tests).
    #[cfg(test)]
    pub(crate) fn writer_counts(&self) -> (u64, u64) {
        (self.writer.batches(), self.writer.submitted())
    }

    /// Ends the writer thread (after its queued writes) and the checkpoint thread, for the final
    /// checkpoint at shutdown: a TRUNCATE checkpoint that met the thread's own checkpoint would
    /// fail at once (SQLite does not wait for that lock).
    pub fn stop_threads(&self) {
        self.writer.stop();
        self.checkpointer.stop();
    }

    /// Connections waiting in the pool for a request (for tests).
    #[cfg(test)]
    pub(crate) fn idle_connections(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .conns
            .len()
    }

    pub fn get(&self) -> PooledConn<'_> {
        let mut warned = false;
        loop {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(conn) = idle.conns.pop() {
                return PooledConn {
                    pool: self,
                    conn: Some(conn),
                };
            }
            drop(idle);
            match working_connection(&self.db_path, self.cache_mib) {
                Ok(conn) => {
                    log::debug!("every database connection in use: opened an extra one");
                    return PooledConn {
                        pool: self,
                        conn: Some(conn),
                    };
                }
                Err(e) if !warned => {
                    warned = true;
                    log::warn!("cannot open an extra database connection, waiting for one: {e}");
                }
                Err(_) => {}
            }
            // Woken by a returned connection, or trying to open one again shortly: a thread
            // that holds a connection itself would otherwise wait for ever.
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.conns.is_empty() {
                idle.waiting += 1;
                idle = self
                    .returned
                    .wait_timeout(idle, std::time::Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                idle.waiting -= 1;
            }
        }
    }
}

/// How often the checkpointer looks for committed pages to copy into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// A named thread fed by a channel. `stop`, or dropping it, closes the channel: the thread
/// takes what was already sent and ends, and `stop` returns once it has.
struct Background<T> {
    running: Mutex<Option<(std::sync::mpsc::Sender<T>, std::thread::JoinHandle<()>)>>,
}

impl<T: Send + 'static> Background<T> {
    fn spawn(
        name: &str,
        body: impl FnOnce(std::sync::mpsc::Receiver<T>) + Send + 'static,
    ) -> Result<Background<T>, String> {
        let (send, receive) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(receive))
            .map_err(|e| format!("cannot start the {name} thread: {e}"))?;
        Ok(Background {
            running: Mutex::new(Some((send, thread))),
        })
    }

    /// Hands `message` to the thread; false once it has been stopped.
    fn send(&self, message: T) -> bool {
        match &*self.running.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((send, _)) => send.send(message).is_ok(),
            None => false,
        }
    }
}

impl<T> Background<T> {
    /// Returns once the thread has ended (at once if it already has).
    fn stop(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((send, thread)) = running {
            drop(send);
            let _ = thread.join();
        }
    }
}

impl<T> Drop for Background<T> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The checkpoint thread's connection: a checkpoint flushes the database file as every write
/// does, so not in a bulk load (`restore_sync`), whose checkpoints would otherwise flush a
/// growing file ten times a second (it took the benchmark's build from 264 to 468 s).
fn checkpoint_connection(data: &DataDir) -> Result<Connection, String> {
    let conn = data.connect()?;
    conn.execute_batch(restore_sync())
        .map_err(|e| format!("cannot set up the checkpoint connection: {e}"))?;
    Ok(conn)
}

/// A thread that copies committed pages from the write-ahead log into the database file
/// (a PASSIVE checkpoint: it never waits for or blocks readers and writers) every
/// `CHECKPOINT_EVERY`, so the log stays short without a writer doing it in its turn. It stops
/// when told to or dropped.
fn start_checkpoints(conn: Connection) -> Result<Background<()>, String> {
    Background::spawn("checkpoint", move |stopped| {
        let mut failing = false;
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            stopped.recv_timeout(CHECKPOINT_EVERY)
        {
            match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                Ok(()) => failing = false,
                // Said once per run of failures; the next checkpoint tries again.
                Err(e) if !failing => {
                    failing = true;
                    log::warn!("checkpoint of the write-ahead log failed: {e}");
                }
                Err(_) => {}
            }
        }
    })
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
            let mut idle = self.pool.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.conns.len() >= self.pool.size && idle.waiting == 0 {
                // An extra connection (see `Pool`): closed, outside the lock.
                drop(idle);
                drop(conn);
                return;
            }
            idle.conns.push(conn);
            if idle.waiting > 0 {
                self.pool.returned.notify_one();
            }
        }
    }
}

/// A path no other test uses, under the system's temporary folder (not created).
#[cfg(test)]
pub(crate) fn test_folder(label: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "carepost-db-{label}-{}-{}",
        std::process::id(),
        crate::crypto::random_token()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh, migrated data folder under the system's temporary folder.
    fn fresh(label: &str) -> (DataDir, PathBuf) {
        let path = test_folder(label);
        (DataDir::open(&path).unwrap(), path)
    }

    /// The value of an integer PRAGMA on this connection.
    fn pragma(conn: &Connection, name: &str) -> i64 {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .unwrap()
    }

    fn count(conn: &Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM staff", [], |r| r.get(0))
            .unwrap()
    }

    fn add_staff(conn: &Connection, n: usize) {
        conn.execute(
            "INSERT INTO staff (email, name, degree, access_level, is_admin, password_hash, created_at)
             VALUES (?1, 'A B', '', 1, 0, 'x', 0)",
            [format!("s{n}-{}@example.org", crate::crypto::random_token())],
        )
        .unwrap();
    }

    #[test]
    fn a_committed_write_is_seen_and_the_connection_is_back_to_full_sync() {
        let (data, path) = fresh("commit");
        let conn = data.connect().unwrap();
        let other = data.connect().unwrap();
        let tx = begin_write(&conn).unwrap();
        let sync = pragma(&tx, "synchronous");
        assert_eq!(
            sync, 1,
            "NORMAL inside the transaction: the fsync comes after"
        );
        add_staff(&tx, 1);
        assert_eq!(count(&other), 0, "not visible before the commit");
        tx.commit().unwrap();
        assert_eq!(count(&other), 1);
        let sync = pragma(&conn, "synchronous");
        assert_eq!(sync, 2, "every other statement stays FULL");
        let _ = std::fs::remove_dir_all(path);
    }

    #[test]
    fn a_write_dropped_without_commit_leaves_nothing() {
        let (data, path) = fresh("rollback");
        let conn = data.connect().unwrap();
        {
            let tx = begin_write(&conn).unwrap();
            add_staff(&tx, 1);
        }
        assert!(conn.is_autocommit());
        assert_eq!(count(&conn), 0);
        let sync = pragma(&conn, "synchronous");
        assert_eq!(sync, 2);
        // And the turn was given back: the next writer gets in at once.
        let tx = begin_write(&conn).unwrap();
        add_staff(&tx, 2);
        tx.commit().unwrap();
        assert_eq!(count(&conn), 1);
        let _ = std::fs::remove_dir_all(path);
    }

    #[test]
    fn many_writers_at_once_all_commit_with_fewer_flushes_than_commits() {
        let (data, path) = fresh("group");
        let (threads, each) = (8, 40);
        let flushes_before = FLUSH_COUNT.load(std::sync::atomic::Ordering::Relaxed);
        std::thread::scope(|scope| {
            for t in 0..threads {
                let data = &data;
                scope.spawn(move || {
                    let conn = data.connect().unwrap();
                    for i in 0..each {
                        let tx = begin_write(&conn).unwrap();
                        add_staff(&tx, t * 1000 + i);
                        tx.commit().unwrap();
                    }
                });
            }
        });
        let flushes = FLUSH_COUNT.load(std::sync::atomic::Ordering::Relaxed) - flushes_before;
        let conn = data.connect().unwrap();
        assert_eq!(count(&conn), (threads * each) as i64);
        // Other tests may commit meanwhile, each adding at most one flush of its own.
        assert!(
            flushes < (threads * each) as u64,
            "{flushes} flushes for {} commits: no commit shared a flush",
            threads * each
        );
        let _ = std::fs::remove_dir_all(path);
    }

    #[test]
    fn a_thread_holding_every_connection_gets_another_which_is_closed_when_given_back() {
        let (data, path) = fresh("pool-extra");
        let pool = Pool::new(&data, 1, 1).unwrap();
        let pool = std::sync::Arc::new(pool);
        let (done, finished) = std::sync::mpsc::channel();
        let same = std::sync::Arc::clone(&pool);
        // Not joined: a thread that waited for itself would fail the test instead of hanging it.
        std::thread::spawn(move || {
            let held = same.get();
            let second = same.get();
            second.execute_batch("SELECT 1").unwrap();
            held.execute_batch("SELECT 1").unwrap();
            drop(second);
            drop(held);
            done.send(()).unwrap();
        });
        finished
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a second connection for the thread holding the only one");
        assert_eq!(
            pool.idle.lock().unwrap().conns.len(),
            1,
            "the pool keeps its size: one of the two was closed when given back"
        );
        let _ = std::fs::remove_dir_all(path);
    }

    #[test]
    fn when_no_connection_can_be_opened_none_is_created_and_a_returned_one_wakes_the_waiter() {
        use std::time::Duration;
        let (data, path) = fresh("pool-wait");
        let pool = std::sync::Arc::new(Pool::new(&data, 1, 1).unwrap());
        let (got, waited) = std::sync::mpsc::channel();
        let held = pool.get();
        // The database file went missing: no extra connection can be opened, and none may
        // create an empty one in its place (open ones go on working).
        let db_path = data.db_path();
        std::fs::remove_file(&db_path).unwrap();
        let other = std::sync::Arc::clone(&pool);
        // Not joined: if it is never woken, the test fails rather than hangs.
        std::thread::spawn(move || {
            let conn = other.get();
            conn.execute_batch("SELECT 1").unwrap();
            got.send(()).unwrap();
        });
        // The other thread waits: there is nothing for it until this connection comes back.
        assert!(waited.recv_timeout(Duration::from_millis(300)).is_err());
        drop(held);
        assert!(!db_path.exists(), "no empty database was created");
        waited
            .recv_timeout(Duration::from_secs(10))
            .expect("the waiting thread got the returned connection");
        let _ = std::fs::remove_dir_all(path);
    }

    fn plan(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Vec<String> {
        conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(params, |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn a_requests_caller_is_found_by_lookups_alone() {
        let (data, path) = fresh("caller-plans");
        let conn = data.connect().unwrap();
        for sql in [
            super::sessions::staff_caller_sql(),
            super::sessions::portal_caller_sql(),
        ] {
            let steps = plan(&conn, sql, ["x", "staff"]);
            // Each table found by its key: no scan, and no join built before it is used.
            assert!(steps.iter().all(|l| l.starts_with("SEARCH")), "{steps:?}");
        }
        let _ = std::fs::remove_dir_all(path);
    }

    #[test]
    fn mailbox_inbox_and_unread_count_read_one_index_range_and_sort_nothing() {
        let (data, path) = fresh("list-plans");
        let conn = data.connect().unwrap();
        let mailbox = plan(
            &conn,
            super::messages::MAILBOX_SQL,
            rusqlite::params![1, 1, 21, 0],
        );
        assert!(
            mailbox.iter().any(|l| l.starts_with("SEARCH t USING")
                && l.contains("COVERING INDEX thread_by_patient (patient_id=?)")),
            "{mailbox:?}"
        );
        // The staff name is in the index too: the only lookup per row is the account's read
        // marker, by its primary key.
        let searches: Vec<&String> = mailbox.iter().filter(|l| l.starts_with("SEARCH")).collect();
        assert!(
            searches.len() == 2
                && searches[1]
                    .starts_with("SEARCH r USING PRIMARY KEY (thread_id=? AND account_id=?)")
                && mailbox.iter().all(|l| !l.starts_with("SCAN")),
            "{mailbox:?}"
        );
        let inbox = plan(
            &conn,
            super::messages::staff_box_sql(super::messages::StaffBox::Inbox),
            rusqlite::params![1, 26, 0],
        );
        // A box's page is one range of its index, and nothing else: no lookups per row.
        assert!(
            inbox.len() == 1
                && inbox[0].starts_with(
                    "SEARCH thread_staff USING COVERING INDEX thread_staff_box (staff_id=? AND archived=?)"
                ),
            "{inbox:?}"
        );
        let boxes = |which| {
            plan(
                &conn,
                super::messages::staff_box_sql(which),
                rusqlite::params![1, 26, 0],
            )
        };
        let sent = boxes(super::messages::StaffBox::Sent);
        assert!(
            sent.len() == 1
                && sent[0].contains("COVERING INDEX thread_staff_sent (staff_id=? AND has_sent=?)"),
            "{sent:?}"
        );
        let archived = boxes(super::messages::StaffBox::Archived);
        for p in [&mailbox, &inbox, &sent, &archived] {
            assert!(!p.iter().any(|l| l.contains("TEMP B-TREE")), "{p:?}");
        }
        // The unread count is one row's.
        let unread = plan(&conn, super::messages::UNREAD_COUNT_SQL, [1]);
        assert_eq!(
            unread,
            ["SEARCH staff USING INTEGER PRIMARY KEY (rowid=?)"],
            "{unread:?}"
        );
        let _ = std::fs::remove_dir_all(path);
    }

    /// A database in a new folder, migrated only up to `version`, as an older Carepost left it.
    fn migrated_up_to(label: &str, version: i32) -> (Connection, PathBuf) {
        let path = test_folder(label);
        std::fs::create_dir_all(&path).unwrap();
        let mut conn = Connection::open(path.join("old.db")).unwrap();
        embedded::migrations::runner()
            .set_target(refinery::Target::Version(version))
            .run(&mut conn)
            .unwrap();
        (conn, path)
    }

    #[test]
    fn a_thread_keeps_the_staff_member_it_was_first_addressed_to_and_their_name() {
        // A database from before the columns: its threads get them from their first staff row.
        let (mut conn, path) = migrated_up_to("first-staff", 8);
        add_staff(&conn, 1);
        add_staff(&conn, 2);
        conn.execute_batch(
            "UPDATE staff SET name = 'Jamie Kim', degree = 'NP' WHERE id = 2;
             INSERT INTO patient (id, first_name, last_name, date_of_birth, email, created_at)
                  VALUES (1, 'Riley', 'Morgan', '2010-01-01', '', 0);
             INSERT INTO thread (id, patient_id, subject, started_by, created_at, last_visible_at)
                  VALUES (1, 1, 'Old', 'portal', 0, 0);
             INSERT INTO thread (id, patient_id, subject, started_by, created_at, last_visible_at)
                  VALUES (2, 1, 'Nobody yet', 'portal', 0, 0);
             INSERT INTO thread_staff (thread_id, staff_id, last_activity_at) VALUES (1, 2, 0);
             INSERT INTO thread_staff (thread_id, staff_id, last_activity_at) VALUES (1, 1, 0);",
        )
        .unwrap();
        embedded::migrations::runner().run(&mut conn).unwrap();
        let first = |conn: &Connection, thread: i64| -> (Option<i64>, String) {
            conn.query_row(
                "SELECT first_staff_id, with_name FROM thread WHERE id = ?1",
                [thread],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
        };
        assert_eq!(first(&conn, 1), (Some(2), "Jamie Kim, NP".into()));
        assert_eq!(first(&conn, 2), (None, String::new()));
        let shown = |conn: &Connection, thread: i64| {
            super::messages::thread_for_patient(conn, 1, thread)
                .unwrap()
                .unwrap()
                .with()
                .to_owned()
        };
        assert_eq!(shown(&conn, 1), "Jamie Kim, NP");
        assert_eq!(shown(&conn, 2), "The practice");
        // A new thread: set by its first staff row, kept when another member joins.
        let thread = super::messages::insert_thread(&conn, 1, "New", "portal", 0).unwrap();
        assert_eq!(first(&conn, thread), (None, String::new()));
        super::messages::address_to_staff(&conn, thread, 1, true, false, 0).unwrap();
        super::messages::address_to_staff(&conn, thread, 2, true, false, 0).unwrap();
        super::messages::address_to_staff(&conn, thread, 1, false, true, 1).unwrap();
        assert_eq!(first(&conn, thread), (Some(1), "A B".into()));
        // A member renamed, or given another degree: every thread naming them follows; the
        // threads of others, and an unchanged save, keep theirs.
        conn.execute("UPDATE staff SET name = 'Jamie Lee' WHERE id = 2", [])
            .unwrap();
        assert_eq!(first(&conn, 1), (Some(2), "Jamie Lee, NP".into()));
        conn.execute("UPDATE staff SET degree = '' WHERE id = 2", [])
            .unwrap();
        assert_eq!(first(&conn, 1), (Some(2), "Jamie Lee".into()));
        conn.execute("UPDATE staff SET degree = 'MD' WHERE id = 1", [])
            .unwrap();
        assert_eq!(first(&conn, thread), (Some(1), "A B, MD".into()));
        assert_eq!(first(&conn, 1), (Some(2), "Jamie Lee".into()));
        let _ = std::fs::remove_dir_all(path);
    }

    #[test]
    fn each_patients_portal_status_follows_every_change_of_their_access_and_invitations() {
        use super::{accounts, patients};
        // The status and reachability as worked out from the access and invitation rows, the
        // way the pages did before they were kept on the patient row.
        fn worked_out(conn: &Connection, patient: i64, now: i64) -> (String, bool) {
            conn.query_row(
                "SELECT CASE
                     WHEN EXISTS (SELECT 1 FROM portal_access a WHERE a.patient_id = ?1
                                     AND a.role = 'self' AND a.status = 'active') THEN 'Enrolled'
                     WHEN EXISTS (SELECT 1 FROM invitation i WHERE i.patient_id = ?1
                                     AND i.role = 'self' AND i.status = 'pending'
                                     AND i.expires_at > ?2) THEN 'Invited'
                     WHEN EXISTS (SELECT 1 FROM portal_access a WHERE a.patient_id = ?1
                                     AND a.role = 'self' AND a.status = 'revoked') THEN 'Revoked'
                     ELSE 'NotInvited' END,
                        EXISTS (SELECT 1 FROM portal_access a WHERE a.patient_id = ?1
                                   AND a.status = 'active')",
                rusqlite::params![patient, now],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
        }
        fn kept(conn: &Connection, patient: i64, now: i64) -> (String, bool) {
            let p = patients::get(conn, patient, now).unwrap().unwrap();
            (format!("{:?}", p.status), p.reachable)
        }
        fn invite(conn: &Connection, patient: i64, role: &str, expires_at: i64) -> i64 {
            let token = crate::crypto::random_token();
            let new = patients::NewInvitation {
                patient_id: patient,
                role,
                email: "x@example.org",
                phone: "",
                caregiver_name: "",
                relationship: "",
                token_hash: &token,
                pin: "123456",
                expires_at,
                created_by: None,
            };
            patients::insert_invitation(conn, &new, 0).unwrap()
        }
        let account = |conn: &Connection, n: i64| {
            accounts::insert_portal_account(conn, &format!("a{n}@example.org"), "A", "x", 0)
                .unwrap()
        };
        // A database from before the columns: they are filled when the migration runs.
        let (mut conn, path) = migrated_up_to("portal-status", 15);
        for (id, name) in [
            (1, "Enrolled"),
            (2, "Revoked"),
            (3, "Invited"),
            (4, "Expired"),
        ] {
            conn.execute(
                "INSERT INTO patient (id, first_name, last_name, date_of_birth, created_at)
                 VALUES (?1, ?2, 'P', '2000-01-01', 0)",
                rusqlite::params![id, name],
            )
            .unwrap();
        }
        let (a1, a2, carer) = (account(&conn, 1), account(&conn, 2), account(&conn, 3));
        accounts::grant_access(&conn, a1, 1, "self", "", 0).unwrap();
        accounts::grant_access(&conn, a2, 2, "self", "", 0).unwrap();
        accounts::revoke_own_access(&conn, 2, 0).unwrap();
        accounts::grant_access(&conn, carer, 2, "caregiver", "parent", 0).unwrap();
        invite(&conn, 3, "self", 100);
        invite(&conn, 4, "self", 5);
        embedded::migrations::runner().run(&mut conn).unwrap();
        let now = 10;
        let check = |conn: &Connection, step: &str| {
            let mut ids = conn.prepare("SELECT id FROM patient").unwrap();
            let ids: Vec<i64> = ids
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            for patient in ids {
                assert_eq!(
                    kept(conn, patient, now),
                    worked_out(conn, patient, now),
                    "patient {patient} after: {step}"
                );
            }
        };
        let status = |conn: &Connection, patient| kept(conn, patient, now).0;
        check(&conn, "the migration");
        assert_eq!(
            [1, 2, 3, 4].map(|p| status(&conn, p)),
            ["Enrolled", "Revoked", "Invited", "NotInvited"]
        );
        assert!(kept(&conn, 2, now).1, "a caregiver reads for patient 2");
        conn.execute(
            "INSERT INTO patient (id, first_name, last_name, date_of_birth, created_at)
             VALUES (5, 'New', 'P', '2000-01-01', 0)",
            [],
        )
        .unwrap();
        let caregiver_invitation = invite(&conn, 5, "caregiver", 100);
        check(&conn, "a new patient, invited as a caregiver's");
        assert_eq!(status(&conn, 5), "NotInvited");
        type Step = (&'static str, fn(&Connection));
        let steps: [Step; 11] = [
            ("an own invitation", |c| {
                invite(c, 5, "self", 50);
            }),
            ("a later one beside it", |c| {
                invite(c, 5, "self", 80);
            }),
            ("the pending ones cancelled by a new invitation", |c| {
                patients::cancel_pending(c, 5, "self").unwrap();
                invite(c, 5, "self", 60);
            }),
            ("its wrong PINs, until it locks", |c| {
                let id: i64 = c
                    .query_row(
                        "SELECT max(id) FROM invitation WHERE patient_id = 5 AND role = 'self'",
                        [],
                        |r| r.get(0),
                    )
                    .unwrap();
                patients::record_failed_attempt(c, id, 2).unwrap();
                patients::record_failed_attempt(c, id, 2).unwrap();
            }),
            ("invited again, and the invitation used to enroll", |c| {
                let id = invite(c, 5, "self", 60);
                patients::mark_used(c, id).unwrap();
                let a =
                    accounts::insert_portal_account(c, "own5@example.org", "B", "x", 0).unwrap();
                accounts::grant_access(c, a, 5, "self", "", 0).unwrap();
            }),
            ("the own access revoked", |c| {
                accounts::revoke_own_access(c, 5, 1).unwrap();
            }),
            ("a caregiver's access used", |c| {
                let a =
                    accounts::insert_portal_account(c, "carer5@example.org", "C", "x", 0).unwrap();
                accounts::grant_access(c, a, 5, "caregiver", "parent", 0).unwrap();
            }),
            (
                "an own invitation after the revocation, then cancelled",
                |c| {
                    let id = invite(c, 5, "self", 70);
                    patients::cancel_invitation(c, 5, id).unwrap();
                },
            ),
            ("the caregiver's access revoked", |c| {
                let id: i64 = c
                    .query_row(
                        "SELECT id FROM portal_access WHERE patient_id = 5 AND role = 'caregiver'",
                        [],
                        |r| r.get(0),
                    )
                    .unwrap();
                accounts::revoke_caregiver(c, 5, id, 2).unwrap();
            }),
            ("the own access granted again to the same account", |c| {
                let a: i64 = c
                    .query_row(
                        "SELECT account_id FROM portal_access WHERE patient_id = 5 AND role = 'self'",
                        [],
                        |r| r.get(0),
                    )
                    .unwrap();
                accounts::grant_access(c, a, 5, "self", "", 3).unwrap();
            }),
            (
                "an access row moved to another patient, and one removed",
                |c| {
                    c.execute_batch(
                    "UPDATE portal_access SET patient_id = 3 WHERE patient_id = 5 AND role = 'self';
                     DELETE FROM portal_access WHERE patient_id = 1;",
                )
                .unwrap();
                },
            ),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for (step, change) in steps {
            change(&conn);
            check(&conn, step);
            seen.insert(status(&conn, 5));
        }
        // The steps went through every status (the check above is not of one state only).
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert!(!kept(&conn, 1, now).1, "patient 1 has no access left");
        assert_eq!(status(&conn, 3), "Enrolled");
        // An invitation runs out on its own: nothing is written when it does.
        patients::cancel_invitation(&conn, 5, caregiver_invitation).unwrap();
        invite(&conn, 1, "self", 20);
        assert_eq!(kept(&conn, 1, 19).0, "Invited");
        assert_eq!(kept(&conn, 1, 20).0, "NotInvited");
        let _ = std::fs::remove_dir_all(path);
    }

    #[test]
    fn a_sign_in_lock_is_never_shortened_by_a_later_one() {
        use super::accounts;
        let (data, path) = fresh("throttle");
        let conn = data.connect().unwrap();
        let locked =
            |conn: &Connection| accounts::throttle_locked_until(conn, "staff", "a@b.co", 0);
        accounts::throttle_record_failure(&conn, "staff", "a@b.co", 0, 900).unwrap();
        accounts::throttle_lock(&conn, "staff", "a@b.co", 900).unwrap();
        // A slower attempt, counted earlier, finishing after the lock with its 5 s slow-down.
        accounts::throttle_lock(&conn, "staff", "a@b.co", 5).unwrap();
        assert_eq!(locked(&conn).unwrap(), Some(900));
        accounts::throttle_lock(&conn, "staff", "a@b.co", 1_000).unwrap();
        assert_eq!(locked(&conn).unwrap(), Some(1_000));
        let _ = std::fs::remove_dir_all(path);
    }

    #[test]
    fn each_staff_members_unread_count_follows_every_change_of_their_rows() {
        use super::messages as m;
        // A database from before the count: it is counted when the migration runs.
        let (mut conn, path) = migrated_up_to("unread-count", 12);
        add_staff(&conn, 1);
        add_staff(&conn, 2);
        conn.execute_batch(
            "INSERT INTO patient (id, first_name, last_name, date_of_birth, email, created_at)
                  VALUES (1, 'Riley', 'Morgan', '2010-01-01', '', 0);
             INSERT INTO thread (id, patient_id, subject, started_by, created_at, visible_count,
                                 last_visible_at)
                  VALUES (1, 1, 'One', 'portal', 0, 1, 0), (2, 1, 'Two', 'portal', 0, 1, 0),
                         (3, 1, 'Three', 'portal', 0, 1, 0);
             INSERT INTO thread_staff (thread_id, staff_id, unread, archived, last_activity_at)
                  VALUES (1, 1, 1, 0, 5), (2, 1, 1, 1, 5), (1, 2, 0, 0, 5);",
        )
        .unwrap();
        embedded::migrations::runner().run(&mut conn).unwrap();
        let kept = |conn: &Connection| [1, 2].map(|id| m::unread_count(conn, id).unwrap());
        let counted = |conn: &Connection| {
            [1, 2].map(|id: i64| -> i64 {
                conn.query_row(
                    "SELECT count(*) FROM thread_staff
                      WHERE staff_id = ?1 AND unread = 1 AND archived = 0",
                    [id],
                    |r| r.get(0),
                )
                .unwrap()
            })
        };
        assert_eq!(kept(&conn), [1, 0]);
        type Step = (&'static str, fn(&Connection), [i64; 2]);
        let steps: [Step; 11] = [
            (
                "the patient writes in an archived thread",
                |c| m::patient_wrote(c, 2, 10).unwrap(),
                [2, 0],
            ),
            (
                "a thread is addressed to someone new",
                |c| m::address_to_staff(c, 2, 2, true, false, 11).unwrap(),
                [2, 1],
            ),
            (
                "a thread is read",
                |c| {
                    m::mark_read_staff(c, 1, 1).unwrap();
                },
                [1, 1],
            ),
            (
                "a thread is read again",
                |c| {
                    m::mark_read_staff(c, 1, 1).unwrap();
                },
                [1, 1],
            ),
            (
                "an unread thread is archived",
                |c| {
                    m::set_archived(c, 2, 2, true, false).unwrap();
                },
                [1, 0],
            ),
            (
                "the patient writes",
                |c| m::patient_wrote(c, 1, 12).unwrap(),
                [2, 1],
            ),
            (
                "someone already on an archived thread is addressed again",
                |c| m::address_to_staff(c, 2, 2, true, false, 12).unwrap(),
                [2, 2],
            ),
            (
                "someone already on it sends in it, which makes it read for them",
                |c| m::address_to_staff(c, 2, 2, false, true, 12).unwrap(),
                [2, 1],
            ),
            (
                "a row is added unread",
                |c| m::address_to_staff(c, 3, 1, true, false, 13).unwrap(),
                [3, 1],
            ),
            (
                "a row moves to someone else",
                |c| {
                    c.execute(
                        "UPDATE thread_staff SET staff_id = 2 WHERE thread_id = 3",
                        [],
                    )
                    .unwrap();
                },
                [2, 2],
            ),
            (
                "rows are deleted",
                |c| {
                    c.execute("DELETE FROM thread_staff WHERE thread_id = 1", [])
                        .unwrap();
                },
                [1, 1],
            ),
        ];
        for (what, step, expected) in steps {
            step(&conn);
            assert_eq!(counted(&conn), expected, "the rows after: {what}");
            assert_eq!(kept(&conn), expected, "the count after: {what}");
        }
        let _ = std::fs::remove_dir_all(path);
    }

    #[test]
    fn a_box_row_carries_its_thread_and_patient_and_follows_their_changes() {
        use super::messages::{self as m, StaffBox};
        // A database from before the copies: its rows get them from the thread and patient.
        let (mut conn, path) = migrated_up_to("box-copies", 11);
        add_staff(&conn, 1);
        conn.execute_batch(
            "INSERT INTO patient (id, first_name, last_name, date_of_birth, email, created_at)
                  VALUES (1, 'Riley', 'Morgan', '2010-01-01', '', 0);
             INSERT INTO thread (id, patient_id, subject, started_by, created_at, visible_count,
                                 last_visible_at)
                  VALUES (1, 1, 'Old', 'portal', 0, 3, 0);
             INSERT INTO thread_staff (thread_id, staff_id, unread, last_activity_at)
                  VALUES (1, 1, 1, 5);",
        )
        .unwrap();
        embedded::migrations::runner().run(&mut conn).unwrap();
        let listed = |conn: &Connection, which| {
            m::staff_box(conn, 1, which, 1, 25)
                .unwrap()
                .0
                .into_iter()
                .map(|r| {
                    (
                        r.thread_id,
                        r.subject,
                        r.visible_count,
                        r.patient_name,
                        r.patient_dob,
                        r.unread,
                    )
                })
                .collect::<Vec<_>>()
        };
        let row = |id: i64, subject: &str, count: i64, name: &str, born: &str, unread: bool| {
            (
                id,
                subject.to_owned(),
                count,
                name.to_owned(),
                born.to_owned(),
                unread,
            )
        };
        assert_eq!(
            listed(&conn, StaffBox::Inbox),
            [row(1, "Old", 3, "Riley Morgan", "2010-01-01", true)]
        );
        // A new thread's row is filled when it is added; a message the patient sees counts.
        let thread = m::insert_thread(&conn, 1, "New", "staff", 10).unwrap();
        m::address_to_staff(&conn, thread, 1, false, true, 10).unwrap();
        let message = |internal: bool| m::NewMessage {
            thread_id: thread,
            sender: m::Sender::Staff(1),
            body: "Hello",
            link_url: "",
            internal,
            idempotency_key: None,
        };
        m::insert_message(&conn, &message(false), 10).unwrap();
        m::insert_message(&conn, &message(true), 11).unwrap();
        m::insert_message(&conn, &message(false), 12).unwrap();
        assert_eq!(
            listed(&conn, StaffBox::Sent),
            [row(thread, "New", 2, "Riley Morgan", "2010-01-01", false)]
        );
        // The patient's name and date of birth change on every row of theirs.
        super::patients::update(
            &conn,
            1,
            &super::patients::PatientFields {
                first_name: "Riley",
                last_name: "Morgan-Hale",
                date_of_birth: "2010-01-02",
                email: "",
                phone: "",
            },
        )
        .unwrap();
        assert_eq!(
            listed(&conn, StaffBox::Inbox),
            [
                row(thread, "New", 2, "Riley Morgan-Hale", "2010-01-02", false),
                row(1, "Old", 3, "Riley Morgan-Hale", "2010-01-02", true),
            ]
        );
        // Archived rows keep their copies; a thread's subject follows it too.
        m::set_archived(&conn, 1, 1, true, false).unwrap();
        conn.execute("UPDATE thread SET subject = 'Renamed' WHERE id = 1", [])
            .unwrap();
        assert_eq!(
            listed(&conn, StaffBox::Archived),
            [row(
                1,
                "Renamed",
                3,
                "Riley Morgan-Hale",
                "2010-01-02",
                true
            )]
        );
        assert_eq!(
            listed(&conn, StaffBox::Inbox),
            [row(
                thread,
                "New",
                2,
                "Riley Morgan-Hale",
                "2010-01-02",
                false
            )]
        );
        let _ = std::fs::remove_dir_all(path);
    }

    #[test]
    fn opening_a_read_thread_again_changes_no_read_marker() {
        let (data, path) = fresh("read-again");
        let conn = data.connect().unwrap();
        add_staff(&conn, 1);
        conn.execute_batch(
            "INSERT INTO patient (id, first_name, last_name, date_of_birth, email, created_at)
                  VALUES (1, 'Riley', 'Morgan', '2010-01-01', '', 0);
             INSERT INTO portal_account (id, email, name, password_hash, created_at)
                  VALUES (1, 'r@example.org', 'Riley', 'x', 0);",
        )
        .unwrap();
        let thread = super::messages::insert_thread(&conn, 1, "Hello", "portal", 0).unwrap();
        super::messages::address_to_staff(&conn, thread, 1, true, false, 0).unwrap();
        let staff = |conn: &Connection| super::messages::mark_read_staff(conn, thread, 1).unwrap();
        let portal =
            |conn: &Connection| super::messages::mark_read_portal(conn, thread, 1).unwrap();
        assert_eq!(staff(&conn), 1, "unread: marked read");
        assert_eq!(staff(&conn), 0, "already read: nothing written");
        assert_eq!(
            super::messages::staff_state(&conn, thread, 1).unwrap(),
            Some((false, false))
        );
        assert_eq!(portal(&conn), 1, "first opening: marked");
        assert_eq!(portal(&conn), 0, "nothing new: nothing written");
        conn.execute(
            "UPDATE thread SET last_staff_message_id = 7 WHERE id = ?1",
            [thread],
        )
        .unwrap();
        assert_eq!(
            portal(&conn),
            1,
            "a new message from the practice: marked again"
        );
        let read: i64 = conn
            .query_row(
                "SELECT last_read_message_id FROM thread_portal_read WHERE thread_id = ?1",
                [thread],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(read, 7);
        let _ = std::fs::remove_dir_all(path);
    }

    #[test]
    fn patient_search_reads_index_ranges_not_every_patient() {
        let (data, path) = fresh("search");
        let conn = data.connect().unwrap();
        let sql = super::patients::search_sql(2);
        let plan = self::plan(
            &conn,
            sql,
            rusqlite::params![0, "", 26, 0, "ngu", "ngv", "an%"],
        );
        let searched = |index: &str| {
            plan.iter()
                .position(|l| l.starts_with(&format!("SEARCH patient USING INDEX {index} (")))
        };
        for index in ["patient_by_first_name", "patient_by_email"] {
            assert!(searched(index).is_some(), "{index} not searched: {plan:?}");
        }
        // The last-name range is read in name order, so the merge stops after a page of it.
        let by_last_name = searched("patient_by_name").expect("patient_by_name searched");
        assert!(
            !plan[by_last_name + 1].starts_with("USE TEMP B-TREE"),
            "{plan:?}"
        );
        assert!(plan.iter().any(|l| l == "MERGE (UNION)"), "{plan:?}");
        assert!(
            plan.iter()
                .any(|l| l.starts_with("SEARCH p USING INTEGER PRIMARY KEY")),
            "{plan:?}"
        );
        assert!(
            !plan
                .iter()
                .any(|l| l.starts_with("SCAN p") || l.starts_with("SCAN patient")),
            "{plan:?}"
        );
        // Each listed patient's portal status is read from their row: no portal access or
        // invitation is looked up.
        assert!(
            !plan
                .iter()
                .any(|l| l.contains("portal_access") || l.contains("invitation")),
            "{plan:?}"
        );
        // A one-word search needs no LIKE: its last-name range is read from the index alone.
        let one = self::plan(
            &conn,
            super::patients::search_sql(1),
            rusqlite::params![0, "", 26, 0, "ngu", "ngv"],
        );
        assert!(
            one.iter()
                .any(|l| l.starts_with("SEARCH patient USING COVERING INDEX patient_by_name (")),
            "{one:?}"
        );
        let _ = std::fs::remove_dir_all(path);
    }

    #[test]
    fn the_pool_leaves_checkpoints_to_its_own_thread() {
        let (data, path) = fresh("checkpoint");
        let db_bytes = || std::fs::metadata(data.db_path()).unwrap().len();
        let before = db_bytes();
        let pool = Pool::new(&data, 2, 8).unwrap();
        {
            let conn = pool.get();
            let auto = pragma(&conn, "wal_autocheckpoint");
            assert_eq!(
                auto, 0,
                "a committing worker would checkpoint in its write turn"
            );
            let cache = pragma(&conn, "cache_size");
            assert_eq!(
                cache,
                -8 * 1024,
                "the pool's page cache is 8 MiB per connection"
            );
            let tx = begin_write(&conn).unwrap();
            for n in 0..2_000 {
                tx.execute(
                    "INSERT INTO staff (email, name, degree, access_level, is_admin,
                                        password_hash, created_at)
                     VALUES (?1, ?2, '', 1, 0, 'x', 0)",
                    rusqlite::params![format!("s{n}@example.org"), "n".repeat(1_000)],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        // About 2 MB now in the log: the checkpointer copies it into the database file.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while db_bytes() < before + 2_000_000 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(
            db_bytes() >= before + 2_000_000,
            "the database file did not grow: nothing was checkpointed ({} bytes)",
            db_bytes()
        );
        drop(pool);
        let _ = std::fs::remove_dir_all(path);
    }

    #[test]
    fn cached_statements_are_not_planned_again_when_their_values_change() {
        let (data, path) = fresh("qpsg");
        let conn = data.connect().unwrap();
        // A join, an ORDER BY and a LIMIT taken from a parameter: each made SQLite re-plan
        // the statement on every new value before the connection asked for stable plans.
        let sql = "SELECT a.patient_id FROM portal_access a JOIN patient p ON p.id = a.patient_id
                    WHERE a.account_id = ?1 ORDER BY a.role, p.first_name LIMIT ?2";
        for i in 0..4i64 {
            let mut st = conn.prepare_cached(sql).unwrap();
            let _ = st.query_map([i, i + 10], |_| Ok(())).unwrap().count();
            assert_eq!(
                st.get_status(rusqlite::StatementStatus::RePrepare),
                0,
                "run {i} planned the statement again"
            );
        }
        drop(conn);
        let _ = std::fs::remove_dir_all(path);
    }

    #[test]
    fn the_writer_thread_connection_is_set_up_like_the_pools() {
        let (data, path) = fresh("writer-settings");
        let pool = Pool::new(&data, 1, 3).unwrap();
        let read = |conn: &Connection| -> rusqlite::Result<(i64, i64)> {
            Ok((
                pragma(conn, "wal_autocheckpoint"),
                pragma(conn, "cache_size"),
            ))
        };
        let pooled = read(&pool.get()).unwrap();
        let writer = pool.write_together(move |conn| read(conn)).unwrap();
        assert_eq!(pooled, (0, -3 * 1024));
        assert_eq!(
            writer, pooled,
            "no automatic checkpoint inside the writer's commits"
        );
        drop(pool);
        let _ = std::fs::remove_dir_all(path);
    }
}

//! Small writes from many requests, committed together: one writer thread runs every job that
//! is waiting in one transaction, each job inside its own savepoint, and answers each caller
//! once that transaction is durable.
//!
//! Its jobs are the sends of messages and the views of threads (a view is a write: its read
//! marker and the audit entry of the read). Written one transaction per request, under 16
//! concurrent clients, a view cost about 400 µs of server CPU and a patient's send about 740 µs:
//! the writers queued for their turn one by one, each commit wrote its own copy of the pages the
//! others also changed (the audit log's newest, the message table's last), and every commit
//! emptied the page cache of every other connection. Together, the jobs waiting at once share one
//! turn, one commit and one flush (measured by the benchmark; see the README's Performance
//! section).

use super::{begin_write, cached_exec, Background, Connection};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;

/// At most this many jobs share one transaction, so a long queue still commits often.
const MOST_PER_BATCH: usize = 64;

/// One caller's write, and where its answer goes.
trait Job: Send {
    /// Runs the write; false if it failed (its savepoint is then rolled back).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller: its own result, or the batch's error if the batch did not commit.
    fn answer(self: Box<Self>, batch: Result<(), &rusqlite::Error>);
}

struct Pending<T, F> {
    work: Option<F>,
    result: Option<rusqlite::Result<T>>,
    answer: SyncSender<rusqlite::Result<T>>,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> rusqlite::Result<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        // A panicking job is a bug; it fails alone, and the writer thread lives on.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(conn)))
            .unwrap_or_else(|_| Err(failure("a write job panicked")));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, batch: Result<(), &rusqlite::Error>) {
        let result = match (self.result, batch) {
            (Some(Err(own)), _) => Err(own),
            (_, Err(e)) => Err(copy(e)),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (None, Ok(())) => Err(failure("a write job did not run")),
        };
        // The caller may be gone (it cannot be: it waits); nothing to do then.
        let _ = self.answer.send(result);
    }
}

fn failure(text: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
        Some(text.to_owned()),
    )
}

/// The batch's error, for each of its callers (rusqlite's error cannot be cloned).
fn copy(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, text) => {
            rusqlite::Error::SqliteFailure(*code, text.clone())
        }
        other => failure(&other.to_string()),
    }
}

/// The writer thread and the queue to it. Dropped, it finishes the jobs already queued and ends.
pub struct Batcher {
    writer: Background<Box<dyn Job>>,
    #[cfg_attr(not(test), allow(dead_code))]
    batches: Arc<AtomicU64>,
    /// Jobs handed to the queue so far (for tests).
    #[cfg(test)]
    submitted: AtomicU64,
}

impl Batcher {
    /// Starts the writer thread on its own connection.
    pub fn start(conn: Connection) -> Result<Batcher, String> {
        let batches = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&batches);
        let writer =
            Background::spawn("writer", move |jobs| write_batches(&conn, &jobs, &counted))?;
        Ok(Batcher {
            writer,
            batches,
            #[cfg(test)]
            submitted: AtomicU64::new(0),
        })
    }

    /// Runs `work` in the next shared write transaction, in turn with every other writer of the
    /// process, and returns its result once that transaction is on disk. If `work` fails, what
    /// it wrote is undone and the others' writes still commit; if the transaction fails, nothing
    /// of it is kept and every caller gets the error.
    ///
    /// `work` runs on the writer thread, inside the transaction, while this process's write
    /// turn is held: it must not take a connection from the pool (whose holders may be waiting
    /// for this very write), begin a write of its own or queue one here (it would wait for the
    /// turn it holds), nor end the transaction.
    pub fn write<T, F>(&self, work: F) -> rusqlite::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (answer, answered) = mpsc::sync_channel(1);
        let job = Box::new(Pending {
            work: Some(work),
            result: None,
            answer,
        });
        let sent = self.writer.send(job);
        #[cfg(test)]
        self.submitted.fetch_add(1, Ordering::Relaxed);
        if !sent {
            return Err(failure("the writer has stopped"));
        }
        answered
            .recv()
            .unwrap_or_else(|_| Err(failure("the writer stopped before answering")))
    }

    /// Transactions committed so far (for tests: shows that jobs share them).
    #[cfg(test)]
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Jobs handed to the queue so far (for tests).
    #[cfg(test)]
    pub fn submitted(&self) -> u64 {
        self.submitted.load(Ordering::Relaxed)
    }

    /// Finishes the queued jobs and ends the thread; returns once it has ended.
    pub fn stop(&self) {
        self.writer.stop();
    }
}

/// The writer thread: waits for a job, takes every job queued behind it, and commits them
/// together.
fn write_batches(conn: &Connection, jobs: &Receiver<Box<dyn Job>>, batches: &AtomicU64) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MOST_PER_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcome = commit_batch(conn, &mut batch);
        if outcome.is_ok() {
            batches.fetch_add(1, Ordering::Relaxed);
        }
        for job in batch {
            job.answer(outcome.as_ref().map(|_| ()));
        }
    }
}

fn commit_batch(conn: &Connection, batch: &mut [Box<dyn Job>]) -> rusqlite::Result<()> {
    let tx = begin_write(conn)?;
    for job in batch.iter_mut() {
        // Through the statement cache: parsed once per connection, not once per job.
        cached_exec(&tx, "SAVEPOINT job", [])?;
        let ok = job.run(&tx);
        // A job must leave the transaction open (SQLite ends it on some errors, and a job must
        // never COMMIT): otherwise what came before was kept outside the batch, and nobody may
        // be told it succeeded.
        if tx.is_autocommit() {
            return Err(failure("a write job ended the batch's transaction"));
        }
        if !ok {
            cached_exec(&tx, "ROLLBACK TO job", [])?;
        }
        cached_exec(&tx, "RELEASE job", [])?;
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{test_folder, DataDir};

    fn names(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM staff ORDER BY name")
            .unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.collect::<rusqlite::Result<_>>().unwrap()
    }

    fn add(conn: &Connection, name: &str) -> rusqlite::Result<i64> {
        conn.execute(
            "INSERT INTO staff (email, name, degree, access_level, is_admin, password_hash, created_at)
             VALUES (?1, ?2, '', 1, 0, 'x', 0)",
            [format!("{name}@example.org"), name.to_owned()],
        )?;
        Ok(conn.last_insert_rowid())
    }

    #[test]
    fn jobs_queued_together_share_one_durable_transaction_and_a_failure_stays_its_own() {
        let path = test_folder("batch");
        let data = DataDir::open(&path).unwrap();
        let batcher = Arc::new(Batcher::start(data.connect().unwrap()).unwrap());
        let reader = data.connect().unwrap();

        // Hold the write turn so that every job queues up behind it.
        let holder = data.connect().unwrap();
        let turn = begin_write(&holder).unwrap();
        let callers: Vec<_> = (0..12)
            .map(|i| {
                let batcher = Arc::clone(&batcher);
                std::thread::spawn(move || {
                    batcher.write(move |conn| {
                        let id = add(conn, &format!("n{i:02}"))?;
                        if i == 5 {
                            // Written, then failed: must leave nothing behind.
                            return Err(failure("job five fails"));
                        }
                        Ok(id)
                    })
                })
            })
            .collect();
        // The writer may take the first job before the others are queued, then waits for the
        // turn; every other job queues behind it.
        while batcher.submitted.load(Ordering::Relaxed) < 12 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let before = batcher.batches();
        drop(turn);
        let results: Vec<_> = callers.into_iter().map(|c| c.join().unwrap()).collect();

        for (i, result) in results.iter().enumerate() {
            assert_eq!(result.is_ok(), i != 5, "job {i}: {result:?}");
        }
        let expected: Vec<String> = (0..12)
            .filter(|&i| i != 5)
            .map(|i| format!("n{i:02}"))
            .collect();
        assert_eq!(names(&reader), expected, "visible to others once answered");
        let used = batcher.batches() - before;
        assert!(
            used <= 2,
            "12 queued jobs took {used} transactions (at most one for a job taken early, one for the rest)"
        );
        batcher.stop();
        assert!(
            batcher.write(|_| Ok(())).is_err(),
            "a stopped writer refuses"
        );
        let _ = std::fs::remove_dir_all(path);
    }

    #[test]
    fn a_batch_that_cannot_begin_answers_every_caller_with_its_error_and_writes_nothing() {
        let path = test_folder("batch-fail");
        let data = DataDir::open(&path).unwrap();
        let conn = data.connect().unwrap();
        // A connection already inside a transaction cannot begin the batch's.
        conn.execute_batch("BEGIN").unwrap();
        let mut answers = Vec::new();
        let mut batch: Vec<Box<dyn Job>> = (0..3)
            .map(|i| {
                let (answer, answered) = mpsc::sync_channel(1);
                answers.push(answered);
                Box::new(Pending {
                    work: Some(move |c: &Connection| add(c, &format!("x{i}"))),
                    result: None,
                    answer,
                }) as Box<dyn Job>
            })
            .collect();
        let outcome = commit_batch(&conn, &mut batch);
        assert!(outcome.is_err());
        for job in batch {
            job.answer(outcome.as_ref().map(|_| ()));
        }
        for answered in answers {
            let got = answered.recv().unwrap();
            assert!(got.is_err(), "{got:?}");
        }
        conn.execute_batch("ROLLBACK").unwrap();
        assert!(names(&data.connect().unwrap()).is_empty());
        let _ = std::fs::remove_dir_all(path);
    }

    #[test]
    fn a_panicking_job_or_one_that_ends_the_transaction_never_reports_success_wrongly() {
        let path = test_folder("batch-bad-jobs");
        let data = DataDir::open(&path).unwrap();
        let batcher = Batcher::start(data.connect().unwrap()).unwrap();
        let panicked = batcher.write(|conn| -> rusqlite::Result<()> {
            add(conn, "before-panic")?;
            panic!("a bug in a job")
        });
        assert!(panicked.is_err());
        assert!(
            names(&data.connect().unwrap()).is_empty(),
            "rolled back to its savepoint"
        );
        assert_eq!(batcher.write(|conn| add(conn, "next")).map(|_| ()), Ok(()));
        let ended = batcher.write(|conn| conn.execute_batch("COMMIT"));
        assert!(ended.is_err(), "a job that commits is told it failed");
        assert_eq!(
            batcher.write(|conn| add(conn, "after")).map(|_| ()),
            Ok(()),
            "the writer goes on"
        );
        assert_eq!(names(&data.connect().unwrap()), ["after", "next"]);
        batcher.stop();
        let _ = std::fs::remove_dir_all(path);
    }
}

//! A request's own work without HTTP: Carepost's request handler called in this process on the
//! same data folder, one request at a time. Set beside the server's CPU for the same request
//! over HTTP, it splits a page's cost into the page's own work (who is calling, the queries,
//! the HTML) and the rest (parsing the request, writing the response through the socket,
//! tiny_http's hand-offs between threads, the log line).

use carepost::attachments::Store;
use carepost::clock::Clock;
use carepost::config::Config;
use carepost::db::{DataDir, Pool};
use carepost::web::App;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Handler {
    app: App,
}

impl Handler {
    /// Carepost's request handler on `data`, as the server builds it, with default settings.
    pub fn open(data: &Path) -> Result<Handler, String> {
        let data = DataDir::open_existing(data)?;
        let config = Config::default();
        let pool = Pool::new(&data, 1, config.page_cache_mib)?;
        Ok(Handler {
            app: App::new(
                config,
                pool,
                Store::new(&data.path),
                Clock::system(),
                data.schema_version,
            ),
        })
    }

    /// This process's CPU time per GET of `path` with `cookie`, in microseconds, over about
    /// `duration` of calls (after one unmeasured call that must answer 200). The process's,
    /// not the calling thread's: a thread view's write runs on the pool's writer thread. The
    /// load generator is idle meanwhile.
    pub fn cost(&self, path: &str, cookie: &str, duration: Duration) -> Result<f64, String> {
        let request = || {
            let mut headers = vec![("Host".to_owned(), "localhost".to_owned())];
            if !cookie.is_empty() {
                headers.push(("Cookie".to_owned(), cookie.to_owned()));
            }
            rouille::Request::fake_http("GET", path, headers, Vec::new())
        };
        let status = carepost::web::handle(&self.app, &request()).status_code;
        if status != 200 {
            return Err(format!("GET {path} in process: HTTP {status}"));
        }
        let (mut calls, mut cpu) = (0u64, 0.0);
        let started = Instant::now();
        while started.elapsed() < duration {
            let request = request();
            let before = crate::load::process_cpu_seconds();
            for _ in 0..100 {
                let response = carepost::web::handle(&self.app, &request);
                if response.status_code != 200 {
                    return Err(format!(
                        "GET {path} in process: HTTP {}",
                        response.status_code
                    ));
                }
            }
            cpu += crate::load::process_cpu_seconds() - before;
            calls += 100;
        }
        Ok(cpu * 1e6 / calls as f64)
    }

    /// This process's CPU time per thread view's write alone (the thread found for the caller,
    /// then the read marker and the audit entry, durably committed, as `messaging::patient_reads`
    /// writes them, without reading the messages), in microseconds, with `at_once` portal callers viewing `thread` of the account
    /// at `email` together for about `duration`: what a thread page costs at least, beside
    /// answering over HTTP. The writes share transactions as the server's do; with every caller
    /// doing nothing else, more of them share each one than under the pages' load, so this is
    /// the write's cost at its lowest.
    pub fn view_write_cost(
        &self,
        email: &str,
        thread: i64,
        at_once: usize,
        duration: Duration,
    ) -> Result<f64, String> {
        use carepost::db::accounts;
        let caller = {
            let conn = self.app.pool.get();
            let account = accounts::portal_account_by_email(&conn, email)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no portal account {email}"))?;
            // The record the account holds access to and the thread belongs to.
            let (patient_id, caregiver) = conn
                .query_row(
                    "SELECT a.patient_id, a.role = 'caregiver'
                       FROM portal_access a JOIN thread t ON t.patient_id = a.patient_id
                      WHERE a.account_id = ?1 AND t.id = ?2 AND a.status = 'active'",
                    [account.id, thread],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(|e| format!("{email} cannot open thread {thread}: {e}"))?;
            carepost::messaging::PortalCaller {
                account_id: account.id,
                patient_id,
                caregiver,
            }
        };
        let write = || {
            carepost::messaging::patient_view_written(
                &self.app.pool,
                caller,
                thread,
                "127.0.0.1",
                self.app.clock.now(),
            )
            .map_err(|e| format!("a thread view's write in process: {e:?}"))
        };
        write()?;
        let before = crate::load::process_cpu_seconds();
        let started = Instant::now();
        let written: Result<Vec<u64>, String> = std::thread::scope(|scope| {
            let callers: Vec<_> = (0..at_once)
                .map(|_| {
                    scope.spawn(|| {
                        let mut n = 0u64;
                        while started.elapsed() < duration {
                            write()?;
                            n += 1;
                        }
                        Ok(n)
                    })
                })
                .collect();
            callers
                .into_iter()
                .map(|c| c.join().unwrap_or_else(|_| Err("a caller panicked".into())))
                .collect()
        });
        let cpu = crate::load::process_cpu_seconds() - before;
        let writes: u64 = written?.iter().sum();
        Ok(cpu * 1e6 / writes.max(1) as f64)
    }
}

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
}

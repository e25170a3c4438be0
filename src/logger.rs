//! A small logger to stderr: one line per event, UTC time, level, message. Request lines carry a
//! request id. Nothing logged may contain a password, token, PIN or message body: callers log
//! route patterns, ids and outcomes only.

use log::{Level, LevelFilter, Metadata, Record};
use std::cell::Cell;
use std::io::Write;

thread_local! {
    /// The id of the request this thread is answering, put on every line logged meanwhile.
    static REQUEST_ID: Cell<Option<u32>> = const { Cell::new(None) };
}

/// Runs `work` with `id` as the current request id of this thread's log lines.
pub fn with_request_id<T>(id: u32, work: impl FnOnce() -> T) -> T {
    REQUEST_ID.with(|cell| cell.set(Some(id)));
    let result = work();
    REQUEST_ID.with(|cell| cell.set(None));
    result
}

struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        // tiny_http logs the end of its accept loop at shutdown as an error; it is expected.
        if metadata.target().starts_with("tiny_http") {
            return false;
        }
        // Other crates only when something is wrong: multipart, for one, logs every upload's
        // boundary at info.
        metadata.level() <= Level::Warn || metadata.target().starts_with("carepost")
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let request = REQUEST_ID
            .with(Cell::get)
            .map(|id| format!("req={id:06x} "))
            .unwrap_or_default();
        let line = format!(
            "{} {:5} {request}{}\n",
            crate::dates::format_timestamp(now as i64),
            record.level(),
            record.args()
        );
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

pub fn init(level: &str) {
    let filter = match level {
        "error" => LevelFilter::Error,
        "warn" => LevelFilter::Warn,
        "debug" => LevelFilter::Debug,
        _ => LevelFilter::Info,
    };
    static LOGGER: StderrLogger = StderrLogger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(filter);
    }
}

//! Time is a parameter: code that depends on "now" asks a `Clock`, so tests can move time.

use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// Debug builds only: a file holding seconds to add to the real time, so the integration
    /// tests can move the server's clock (session idle expiry, lockouts, link expiry).
    #[cfg(debug_assertions)]
    offset_file: Option<std::path::PathBuf>,
}

impl Clock {
    pub fn system() -> Clock {
        Clock {
            #[cfg(debug_assertions)]
            offset_file: std::env::var_os("CAREPOST_TEST_CLOCK_FILE").map(Into::into),
        }
    }

    /// Seconds since the Unix epoch, UTC.
    pub fn now(&self) -> i64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        real + self.offset()
    }

    #[cfg(debug_assertions)]
    fn offset(&self) -> i64 {
        self.offset_file
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0)
    }

    #[cfg(not(debug_assertions))]
    fn offset(&self) -> i64 {
        0
    }
}

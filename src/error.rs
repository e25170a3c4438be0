//! One error type. Each error carries what the user may be told and what goes to the log; the web
//! layer turns it into a response in one place (`web::respond_error`).

use std::fmt;

#[derive(Debug)]
pub enum AppError {
    /// Not found, or not the caller's: the two must look the same.
    NotFound,
    /// The request is malformed; the message is safe to show.
    BadRequest(String),
    /// A state change without a valid CSRF token.
    CsrfRejected,
    /// The caller must sign in (or sign in again) first; `ended` says why a session ended.
    SignInRequired {
        portal: bool,
        ended: Option<SessionEnd>,
    },
    /// Signed in, but this page is not for them (used only where existence is not secret).
    Forbidden,
    /// A portal account whose every access was revoked: told so on whatever it opens next.
    AccessEnded,
    /// The body is larger than the configured limit.
    PayloadTooLarge { limit: u64 },
    /// The server could not write (a full or failing disk); the text goes to the log only.
    StorageFailed(String),
    /// Something failed inside; the text goes to the log only.
    Internal(String),
}

/// Why a session ended on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// No request for the idle limit.
    Idle,
    /// Older than the absolute lifetime, however active.
    Lifetime,
}

impl AppError {
    pub fn internal(context: &str, error: impl fmt::Display) -> AppError {
        AppError::Internal(format!("{context}: {error}"))
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::NotFound => write!(f, "not found"),
            AppError::AccessEnded => write!(f, "portal access ended"),
            AppError::BadRequest(m) => write!(f, "bad request: {m}"),
            AppError::CsrfRejected => write!(f, "csrf token missing or invalid"),
            AppError::SignInRequired { .. } => write!(f, "sign-in required"),
            AppError::Forbidden => write!(f, "forbidden"),
            AppError::PayloadTooLarge { limit } => write!(f, "body over {limit} bytes"),
            AppError::StorageFailed(m) => write!(f, "storage: {m}"),
            AppError::Internal(m) => write!(f, "internal: {m}"),
        }
    }
}

impl From<rusqlite::Error> for AppError {
    fn from(e: rusqlite::Error) -> Self {
        AppError::internal("database", e)
    }
}

pub type AppResult<T> = Result<T, AppError>;

/// Messages about fields of a form, keyed by field name, in the order found. The web layer shows
/// each beside its field and all in a summary; domain code fills it without knowing HTML.
#[derive(Default, Debug)]
pub struct FieldErrors(Vec<(&'static str, String)>);

impl FieldErrors {
    pub fn add(&mut self, field: &'static str, message: impl Into<String>) {
        if self.get(field).is_none() {
            self.0.push((field, message.into()));
        }
    }

    pub fn get(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, m)| m.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.0.iter().map(|(f, m)| (*f, m.as_str()))
    }
}

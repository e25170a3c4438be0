//! CSRF protection for every state change. Signed-in forms carry the session's token; forms shown
//! before sign-in (sign-in, setup) carry a token that must equal an HttpOnly, SameSite=Strict
//! cookie (double submit). A request without a valid token changes nothing and answers 403.

use super::form::Form;
use super::App;
use crate::crypto;
use crate::error::{AppError, AppResult};
use rouille::{Request, Response};

pub const FIELD: &str = "csrf";
const COOKIE: &str = "carepost_csrf";

/// Checks a signed-in form against its session's token.
pub fn check(form: &Form, session_token: &str) -> AppResult<()> {
    let sent = form.get(FIELD);
    if !sent.is_empty() && crypto::constant_time_eq(sent.as_bytes(), session_token.as_bytes()) {
        Ok(())
    } else {
        Err(AppError::CsrfRejected)
    }
}

/// The token for a form shown before sign-in: the browser's existing one, or a new one that the
/// response must set with `set_anonymous_cookie`.
pub fn anonymous_token(request: &Request) -> (String, bool) {
    match cookie(request) {
        Some(token) => (token, false),
        None => (crypto::random_token(), true),
    }
}

pub fn check_anonymous(request: &Request, form: &Form) -> AppResult<()> {
    match cookie(request) {
        Some(token) => check(form, &token),
        None => Err(AppError::CsrfRejected),
    }
}

pub fn set_anonymous_cookie(response: Response, app: &App, token: &str) -> Response {
    let secure = if app.config.secure_cookies() {
        "; Secure"
    } else {
        ""
    };
    response.with_additional_header(
        "Set-Cookie",
        format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}"),
    )
}

fn cookie(request: &Request) -> Option<String> {
    rouille::input::cookies(request)
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

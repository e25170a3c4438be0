//! Reading url-encoded forms with the body limit checked before anything is read.

use super::App;
use crate::error::{AppError, AppResult};
use rouille::Request;
use std::io::Read;

/// The fields of a submitted form.
#[derive(Debug, Default)]
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn from_owned(pairs: Vec<(String, String)>) -> Form {
        Form(pairs)
    }

    /// A form filled from stored values, for showing an edit page.
    pub fn from_pairs(pairs: Vec<(&str, String)>) -> Form {
        Form(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    /// The field's value, or "" when absent. Values keep what was typed (minus NUL bytes and
    /// carriage returns, which no field needs).
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// The field trimmed, for names, emails and other one-line values.
    pub fn trimmed(&self, name: &str) -> &str {
        self.get(name).trim()
    }
}

/// The request body's declared length, if it declared one.
pub fn content_length(request: &Request) -> AppResult<Option<u64>> {
    match request.header("Content-Length") {
        None => Ok(None),
        Some(text) => text.trim().parse::<u64>().map(Some).map_err(|_| {
            AppError::BadRequest("The request's Content-Length is not a number.".into())
        }),
    }
}

/// Reads an url-encoded form body of at most `max_form_bytes`. A body declared larger is refused
/// before a byte of it is read; a body without a declared length is cut at the limit.
pub fn read(app: &App, request: &Request) -> AppResult<Form> {
    let limit = app.config.max_form_bytes;
    let content_type = request.header("Content-Type").unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return Err(AppError::BadRequest(
            "This address expects a form sent from a Carepost page.".into(),
        ));
    }
    if content_length(request)?.is_some_and(|n| n > limit) {
        return Err(AppError::PayloadTooLarge { limit });
    }
    let body = request
        .data()
        .ok_or_else(|| AppError::Internal("request body already taken".into()))?;
    let mut bytes = Vec::new();
    body.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|_| AppError::BadRequest("The form arrived incomplete. Try again.".into()))?;
    if bytes.len() as u64 > limit {
        return Err(AppError::PayloadTooLarge { limit });
    }
    Ok(parse(&bytes))
}

pub fn parse(bytes: &[u8]) -> Form {
    Form(
        form_urlencoded::parse(bytes)
            .map(|(k, v)| {
                let clean: String = v.chars().filter(|c| *c != '\0' && *c != '\r').collect();
                (k.into_owned(), clean)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_cleans() {
        let form = parse(b"a=1&b=x%00y&c=line1%0D%0Aline2&d=%FF");
        assert_eq!(form.get("a"), "1");
        assert_eq!(form.get("b"), "xy");
        assert_eq!(form.get("c"), "line1\nline2");
        assert_eq!(form.get("d"), "\u{FFFD}");
        assert_eq!(form.get("missing"), "");
    }
}

//! Sign-in rules shared by the practice view and the portal: password policy, the throttle that
//! slows and then locks repeated failures, and the constant-cost check of unknown addresses.

use crate::crypto;
use crate::db::accounts;
use crate::db::sessions::Audience;
use crate::error::AppResult;
use rusqlite::Connection;

/// Failures within this window count towards a lock; older ones are forgotten.
const FAILURE_WINDOW_SECS: i64 = 15 * 60;
/// From this many failures on, each further attempt must wait a little longer.
const SLOW_DOWN_AFTER: i64 = 3;
/// At this many failures the address is locked for `LOCK_SECS`.
const LOCK_AFTER: i64 = 5;
pub const LOCK_SECS: i64 = 15 * 60;

pub const MAX_PASSWORD_CHARS: usize = 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum SignIn {
    Accepted(i64),
    Refused,
    /// Too many failures: wait this many seconds.
    Locked(i64),
}

/// Checks an email and password. The answer for an unknown address is the same, and costs the
/// same, as for a wrong password; the throttle counts per address typed, existing or not.
pub fn sign_in(
    conn: &Connection,
    audience: Audience,
    email: &str,
    password: &str,
    now: i64,
) -> AppResult<SignIn> {
    let email = normalise_email(email);
    let who = audience.as_str();
    if let Some(until) = accounts::throttle_locked_until(conn, who, &email, now)? {
        return Ok(SignIn::Locked(until - now));
    }
    let credentials = match audience {
        Audience::Staff => accounts::staff_credentials(conn, &email)?,
        Audience::Portal => accounts::portal_credentials(conn, &email)?,
    };
    let password = truncate_chars(password, MAX_PASSWORD_CHARS);
    let accepted = match &credentials {
        Some((id, hash)) => crypto::verify_password(password, hash).then_some(*id),
        None => {
            crypto::verify_password(password, crypto::decoy_hash());
            None
        }
    };
    if let Some(id) = accepted {
        accounts::throttle_clear(conn, who, &email)?;
        return Ok(SignIn::Accepted(id));
    }
    let failures = accounts::throttle_record_failure(conn, who, &email, now, FAILURE_WINDOW_SECS)?;
    if failures >= LOCK_AFTER {
        accounts::throttle_lock(conn, who, &email, now + LOCK_SECS)?;
    } else if failures >= SLOW_DOWN_AFTER {
        // 5 s, then 10 s: enough to make guessing slow, short enough not to annoy a person.
        accounts::throttle_lock(
            conn,
            who,
            &email,
            now + 5 * (failures - SLOW_DOWN_AFTER + 1),
        )?;
    }
    Ok(SignIn::Refused)
}

pub fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}

fn truncate_chars(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// What is wrong with a new password, in words for the person choosing it.
pub fn password_problem(password: &str) -> Option<&'static str> {
    if password.chars().count() < 8 {
        Some("Use at least 8 characters.")
    } else if password.chars().count() > MAX_PASSWORD_CHARS {
        Some("Use at most 1024 characters.")
    } else if !password.chars().any(|c| c.is_lowercase()) {
        Some("Include at least one lower-case letter.")
    } else if !password.chars().any(|c| c.is_uppercase()) {
        Some("Include at least one upper-case letter.")
    } else if !password.chars().any(|c| c.is_ascii_digit()) {
        Some("Include at least one digit.")
    } else {
        None
    }
}

/// A plausible email address: one @, something on each side, a dot in the domain, no spaces.
pub fn email_problem(email: &str) -> Option<&'static str> {
    let email = email.trim();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains('@')
            }
            None => false,
        };
    (!valid).then_some("Enter an email address such as name@example.com.")
}

/// Human words for a wait, such as "15 minutes" or "10 seconds".
pub fn describe_wait(secs: i64) -> String {
    if secs >= 90 {
        format!("{} minutes", (secs + 59) / 60)
    } else {
        format!("{} seconds", secs.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_policy() {
        assert!(password_problem("short1A").is_some());
        assert!(password_problem("alllowercase1").is_some());
        assert!(password_problem("ALLUPPERCASE1").is_some());
        assert!(password_problem("NoDigitsHere").is_some());
        assert_eq!(password_problem("Good enough 1"), None);
    }

    #[test]
    fn email_shape() {
        assert_eq!(email_problem("a@b.co"), None);
        assert!(email_problem("a@b").is_some());
        assert!(email_problem("a b@c.de").is_some());
        assert!(email_problem("@c.de").is_some());
    }
}

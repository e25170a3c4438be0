//! Sign-in rules shared by the practice view and the portal: password policy, the throttle that
//! slows and then locks repeated failures, and the constant-cost check of unknown addresses.

use crate::audit::Actor;
use crate::crypto;
use crate::db::accounts;
use crate::db::sessions::{self, Audience};
use crate::db::Pool;
use crate::error::{AppError, AppResult, FieldErrors};
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
///
/// No database connection is held while the password is checked: argon2 waits its turn on two
/// hashing threads, and sign-ins holding connections meanwhile would leave the pages fewer.
pub fn sign_in(
    pool: &Pool,
    audience: Audience,
    email: &str,
    password: &str,
    client: &str,
    now: i64,
) -> AppResult<SignIn> {
    let outcome = check_sign_in(pool, audience, email, password, now)?;
    // Every attempt is audited: accepted as the account, refused or locked anonymously (the
    // address typed is not recorded).
    let (actor, result) = match &outcome {
        SignIn::Accepted(id) => (
            Actor {
                kind: audience.as_str(),
                id: Some(*id),
                client: client.to_owned(),
            },
            "ok",
        ),
        SignIn::Refused => (Actor::anonymous(client), "refused"),
        SignIn::Locked(_) => (Actor::anonymous(client), "locked"),
    };
    crate::audit::record_outcome(
        &pool.get(),
        &actor,
        "auth.sign_in",
        None,
        audience.as_str(),
        result,
        now,
    )?;
    Ok(outcome)
}

fn check_sign_in(
    pool: &Pool,
    audience: Audience,
    email: &str,
    password: &str,
    now: i64,
) -> AppResult<SignIn> {
    let email = normalise_email(email);
    let who = audience.as_str();
    let (failures, credentials) = {
        let conn = pool.get();
        if let Some(until) = accounts::throttle_locked_until(&conn, who, &email, now)? {
            return Ok(SignIn::Locked(until - now));
        }
        // Count the attempt before checking the password, so that concurrent guesses cannot all
        // pass the lock check: beyond the limit, no password is checked at all.
        let failures =
            accounts::throttle_record_failure(&conn, who, &email, now, FAILURE_WINDOW_SECS)?;
        if failures > LOCK_AFTER {
            accounts::throttle_lock(&conn, who, &email, now + LOCK_SECS)?;
            return Ok(SignIn::Locked(LOCK_SECS));
        }
        let credentials = match audience {
            Audience::Staff => accounts::staff_credentials(&conn, &email)?,
            Audience::Portal => accounts::portal_credentials(&conn, &email)?,
        };
        (failures, credentials)
    };
    let password = truncate_chars(password, MAX_PASSWORD_CHARS);
    let accepted = match &credentials {
        Some((id, hash)) => crypto::verify_password(password, hash).then_some(*id),
        None => {
            crypto::verify_password(password, crypto::decoy_hash());
            None
        }
    };
    let conn = pool.get();
    if let Some(id) = accepted {
        accounts::throttle_clear(&conn, who, &email)?;
        return Ok(SignIn::Accepted(id));
    }
    if failures >= LOCK_AFTER {
        accounts::throttle_lock(&conn, who, &email, now + LOCK_SECS)?;
    } else if failures >= SLOW_DOWN_AFTER {
        // 5 s, then 10 s: enough to make guessing slow, short enough not to annoy a person.
        accounts::throttle_lock(
            &conn,
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

/// How long a link from "forgot password" works.
pub const RESET_SECS: i64 = 3600;
/// How long a link sent by an administrator (or to a new staff user) works.
pub const ADMIN_RESET_SECS: i64 = 86_400;
/// A new link for the same account is not sent more often than this.
const RESET_REQUEST_GAP_SECS: i64 = 60;

fn reset_path(audience: Audience) -> &'static str {
    match audience {
        Audience::Staff => "/practice/reset/",
        Audience::Portal => "/portal/reset/",
    }
}

/// Creates a one-time password link and queues its email. Call inside a transaction.
#[allow(clippy::too_many_arguments)]
pub fn queue_password_link(
    tx: &Connection,
    practice: &str,
    audience: Audience,
    principal: i64,
    email: &str,
    base_url: &str,
    by_administrator: bool,
    now: i64,
) -> rusqlite::Result<()> {
    let valid = if by_administrator {
        ADMIN_RESET_SECS
    } else {
        RESET_SECS
    };
    let token = sessions::resets::create(tx, audience, principal, now, now + valid)?;
    let link = format!("{base_url}{}{token}", reset_path(audience));
    crate::outbox::queue_password_reset(tx, practice, email, &link, by_administrator, now)?;
    Ok(())
}

/// "Forgot password": queues a link when the address has an account, and does the same visible
/// thing when it has none. At most one link a minute per account.
pub fn request_reset(
    conn: &mut Connection,
    practice: &str,
    audience: Audience,
    email: &str,
    base_url: &str,
    client: &str,
    now: i64,
) -> rusqlite::Result<()> {
    let email = normalise_email(email);
    let principal = match audience {
        Audience::Staff => accounts::staff_credentials(conn, &email)?.map(|(id, _)| id),
        Audience::Portal => accounts::portal_credentials(conn, &email)?.map(|(id, _)| id),
    };
    // Known address or not, the request does the same visible work: one write transaction
    // with one audit entry, so its timing does not tell which addresses have accounts.
    let tx = crate::db::begin_write(&*conn)?;
    let anonymous = Actor::anonymous(client);
    match principal {
        None => crate::audit::record_outcome(
            &tx,
            &anonymous,
            "password.reset_request",
            None,
            "",
            "no account",
            now,
        )?,
        Some(principal) => {
            let recent = sessions::resets::last_requested(&tx, audience, principal)?
                .is_some_and(|at| now - at < RESET_REQUEST_GAP_SECS);
            let actor = Actor {
                kind: audience.as_str(),
                id: Some(principal),
                client: client.to_owned(),
            };
            if recent {
                crate::audit::record_outcome(
                    &tx,
                    &actor,
                    "password.reset_request",
                    None,
                    "",
                    "throttled",
                    now,
                )?;
            } else {
                queue_password_link(
                    &tx, practice, audience, principal, &email, base_url, false, now,
                )?;
                crate::audit::record(&tx, &actor, "password.reset_request", None, "", now)?;
            }
        }
    }
    tx.commit()
}

/// Whether a password link is live (for showing its form).
pub fn reset_link_valid(
    conn: &Connection,
    audience: Audience,
    token: &str,
    now: i64,
) -> rusqlite::Result<bool> {
    Ok(sessions::resets::find(conn, audience, token, now)?.is_some())
}

/// Sets a new password from a one-time link and ends every session of the account.
pub fn reset_password(
    conn: &mut Connection,
    audience: Audience,
    token: &str,
    password: &str,
    password_again: &str,
    client: &str,
    now: i64,
) -> Result<Result<(), FieldErrors>, AppError> {
    let errors = new_password_problems(password, password_again);
    if !errors.is_empty() {
        return Ok(Err(errors));
    }
    let hash = crypto::hash_password(password).map_err(AppError::Internal)?;
    let tx = crate::db::begin_write(&*conn)?;
    let principal = sessions::resets::find(&tx, audience, token, now)?.ok_or(AppError::NotFound)?;
    set_password(&tx, audience, principal, &hash)?;
    sessions::resets::mark_used(&tx, token, now)?;
    sessions::delete_for_principal(&tx, audience, principal, None)?;
    let actor = Actor {
        kind: audience.as_str(),
        id: Some(principal),
        client: client.to_owned(),
    };
    crate::audit::record(&tx, &actor, "password.reset", None, "", now)?;
    tx.commit()?;
    Ok(Ok(()))
}

/// Changes the password of a signed-in user who proves the current one; other sessions end.
#[allow(clippy::too_many_arguments)]
pub fn change_password(
    pool: &Pool,
    audience: Audience,
    principal: i64,
    email: &str,
    current: &str,
    password: &str,
    password_again: &str,
    keep_session: &str,
    client: &str,
    now: i64,
) -> Result<Result<(), FieldErrors>, AppError> {
    let mut errors = new_password_problems(password, password_again);
    match sign_in(pool, audience, email, current, client, now)? {
        SignIn::Accepted(id) if id == principal => {}
        SignIn::Locked(wait) => errors.add(
            "current_password",
            format!(
                "Too many wrong passwords. Wait {} and try again.",
                describe_wait(wait)
            ),
        ),
        _ => errors.add("current_password", "Your current password is not right."),
    }
    if !errors.is_empty() {
        return Ok(Err(errors));
    }
    let hash = crypto::hash_password(password).map_err(AppError::Internal)?;
    let conn = pool.get();
    let tx = crate::db::begin_write(&conn)?;
    set_password(&tx, audience, principal, &hash)?;
    sessions::delete_for_principal(&tx, audience, principal, Some(keep_session))?;
    let actor = Actor {
        kind: audience.as_str(),
        id: Some(principal),
        client: client.to_owned(),
    };
    crate::audit::record(&tx, &actor, "password.change", None, "", now)?;
    tx.commit()?;
    Ok(Ok(()))
}

fn set_password(
    conn: &Connection,
    audience: Audience,
    principal: i64,
    hash: &str,
) -> rusqlite::Result<()> {
    match audience {
        Audience::Staff => accounts::set_staff_password(conn, principal, hash),
        Audience::Portal => accounts::set_portal_password(conn, principal, hash),
    }
}

fn new_password_problems(password: &str, again: &str) -> FieldErrors {
    let mut errors = FieldErrors::default();
    if let Some(problem) = password_problem(password) {
        errors.add("password", problem);
    } else if password != again {
        errors.add("password_again", "The two passwords are not the same.");
    }
    errors
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

    /// A sign-in waiting for its password check holds no database connection: the pool's one
    /// stays in the pool for the pages meanwhile. (Before, a sign-in kept its connection while
    /// argon2 waited its turn, so 8 sign-ins at once held 8 of the pool's 16, and the pages beyond
    /// the other 8 each opened a connection of their own, with a cold cache, and closed it.)
    #[test]
    fn a_sign_in_holds_no_connection_while_its_password_is_checked() {
        use crate::db::{test_folder, DataDir};
        use std::time::Duration;

        let path = test_folder("sign-in-pool");
        let data = DataDir::open(&path).unwrap();
        let now = 1_800_000_000;
        let hash = crypto::hash_password("Correct horse 1").unwrap();
        accounts::insert_staff(
            &data.connect().unwrap(),
            &accounts::NewStaff {
                email: "doc@example.org",
                name: "Dr Doc",
                degree: "",
                access_level: 4,
                is_admin: false,
                password_hash: &hash,
            },
            now,
        )
        .unwrap();
        let pool = std::sync::Arc::new(Pool::new(&data, 1, 8).unwrap());
        let watcher = data.connect().unwrap();

        let busy = crypto::occupy_hash_threads();
        let signing_in = {
            let pool = std::sync::Arc::clone(&pool);
            std::thread::spawn(move || {
                sign_in(
                    &pool,
                    Audience::Staff,
                    "doc@example.org",
                    "Correct horse 1",
                    "test",
                    now,
                )
            })
        };
        // The attempt is counted just before the password is checked.
        let waited = std::time::Instant::now();
        while watcher
            .query_row(
                "SELECT count(*) FROM login_throttle WHERE email = 'doc@example.org'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
            == 0
        {
            assert!(
                waited.elapsed() < Duration::from_secs(20),
                "no attempt counted"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        // Its password check cannot start while the hashing threads are busy: meanwhile the
        // pool's connection must come back.
        let waited = std::time::Instant::now();
        while pool.idle_connections() == 0 && waited.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(2));
        }
        let idle = pool.idle_connections();
        drop(busy);
        assert_eq!(
            idle, 1,
            "the sign-in kept the pool's connection while waiting for its password check"
        );
        assert!(matches!(
            signing_in.join().unwrap().unwrap(),
            SignIn::Accepted(_)
        ));
        pool.stop_threads();
        let _ = std::fs::remove_dir_all(path);
    }

    #[test]
    fn email_shape() {
        assert_eq!(email_problem("a@b.co"), None);
        assert!(email_problem("a@b").is_some());
        assert!(email_problem("a b@c.de").is_some());
        assert!(email_problem("@c.de").is_some());
    }
}

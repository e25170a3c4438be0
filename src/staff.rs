//! Staff rules with no HTTP in them: creating the first practice and its administrators, shared
//! by the setup page and `carepost admin create`.

use crate::auth;
use crate::crypto;
use crate::db::accounts::{self, NewStaff};
use crate::db::practice;
use crate::error::{AppError, FieldErrors};
use rusqlite::{Connection, TransactionBehavior};

pub struct NewAdministrator<'a> {
    /// Required when the practice does not exist yet; ignored after.
    pub practice_name: &'a str,
    pub name: &'a str,
    pub email: &'a str,
    pub degree: &'a str,
    pub access_level: u8,
    pub password: &'a str,
    pub password_again: &'a str,
}

pub enum Created {
    New(i64),
    /// The address already belongs to an administrator: nothing changed.
    AlreadyExists(i64),
}

/// Checks every field; each problem is named against its field.
pub fn validate(new: &NewAdministrator, practice_exists: bool) -> FieldErrors {
    let mut errors = FieldErrors::default();
    if !practice_exists && new.practice_name.trim().is_empty() {
        errors.add("practice_name", "Enter the practice's name.");
    }
    if new.practice_name.chars().count() > 200 {
        errors.add("practice_name", "Use at most 200 characters.");
    }
    if new.name.trim().is_empty() {
        errors.add("name", "Enter the administrator's name.");
    } else if new.name.chars().count() > 200 {
        errors.add("name", "Use at most 200 characters.");
    }
    if let Some(problem) = auth::email_problem(new.email) {
        errors.add("email", problem);
    }
    if new.degree.chars().count() > 40 {
        errors.add("degree", "Use at most 40 characters.");
    }
    if !(1..=4).contains(&new.access_level) {
        errors.add("access_level", "Choose an access level from 1 to 4.");
    }
    if let Some(problem) = auth::password_problem(new.password) {
        errors.add("password", problem);
    } else if new.password != new.password_again {
        errors.add("password_again", "The two passwords are not the same.");
    }
    errors
}

/// Creates the practice (when missing) and the administrator in one transaction. With a setup
/// token, the token must still be valid inside that transaction, so a link works once.
pub fn create_administrator(
    conn: &mut Connection,
    new: &NewAdministrator,
    setup_token: Option<&str>,
    now: i64,
) -> Result<Result<Created, FieldErrors>, AppError> {
    let email = auth::normalise_email(new.email);
    // Hash before the transaction: it is the slow part and holds no lock.
    let errors = {
        let practice_exists = practice::get(conn)?.is_some();
        validate(new, practice_exists)
    };
    if !errors.is_empty() {
        return Ok(Err(errors));
    }
    let hash = crypto::hash_password(new.password).map_err(AppError::Internal)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(token) = setup_token {
        if !practice::setup_token_valid(&tx, token, now)? {
            return Err(AppError::NotFound);
        }
    }
    if let Some(existing) = accounts::staff_by_email(&tx, &email)? {
        if existing.is_admin {
            return Ok(Ok(Created::AlreadyExists(existing.id)));
        }
        let mut errors = FieldErrors::default();
        errors.add(
            "email",
            "A staff user with this email address exists and is not an administrator.",
        );
        return Ok(Err(errors));
    }
    if practice::get(&tx)?.is_none() {
        practice::insert(&tx, new.practice_name.trim(), false, false, now)?;
    }
    let id = accounts::insert_staff(
        &tx,
        &NewStaff {
            email: &email,
            name: new.name.trim(),
            degree: new.degree.trim(),
            access_level: new.access_level,
            is_admin: true,
            password_hash: &hash,
        },
        now,
    )?;
    tx.commit()?;
    Ok(Ok(Created::New(id)))
}

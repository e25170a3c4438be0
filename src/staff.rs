//! Staff rules with no HTTP in them: creating the first practice and its administrators, shared
//! by the setup page and `carepost admin create`.

use crate::audit::{self, Actor};
use crate::auth;
use crate::crypto;
use crate::db::accounts::{self, NewStaff};
use crate::db::practice;
use crate::db::sessions::{self, Audience};
use crate::error::{AppError, FieldErrors};
use rusqlite::Connection;

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
    AlreadyExists,
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
    let tx = crate::db::begin_write(&*conn)?;
    if let Some(token) = setup_token {
        if !practice::setup_token_valid(&tx, token, now)? {
            return Err(AppError::NotFound);
        }
    }
    if let Some(existing) = accounts::staff_by_email(&tx, &email)? {
        if existing.is_admin {
            return Ok(Ok(Created::AlreadyExists));
        }
        let mut errors = FieldErrors::default();
        errors.add(
            "email",
            "A staff user with this email address exists and is not an administrator.",
        );
        return Ok(Err(errors));
    }
    let new_practice = practice::get(&tx)?.is_none();
    if new_practice {
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
    let how = if setup_token.is_some() {
        "setup link"
    } else {
        "command line"
    };
    audit::record(
        &tx,
        &Actor::system(),
        "staff.create_administrator",
        None,
        &format!("staff {id} by {how}"),
        now,
    )?;
    tx.commit()?;
    Ok(Ok(Created::New(id)))
}

/// The fields of a staff user an administrator edits.
pub struct StaffForm<'a> {
    pub email: &'a str,
    pub name: &'a str,
    pub degree: &'a str,
    pub access_level: u8,
    pub is_admin: bool,
    pub may_invite: bool,
}

pub fn validate_user(f: &StaffForm) -> FieldErrors {
    let mut errors = FieldErrors::default();
    if f.name.trim().is_empty() {
        errors.add("name", "Enter the user's name.");
    } else if f.name.chars().count() > 200 {
        errors.add("name", "Use at most 200 characters.");
    }
    if let Some(problem) = auth::email_problem(f.email) {
        errors.add("email", problem);
    }
    if f.degree.chars().count() > 40 {
        errors.add("degree", "Use at most 40 characters.");
    }
    if !(1..=4).contains(&f.access_level) {
        errors.add("access_level", "Choose an access level from 1 to 4.");
    }
    errors
}

const EMAIL_TAKEN: &str = "Another staff user already signs in with this email address.";
const LAST_ADMIN: &str =
    "This is the practice's last administrator: make another user an administrator first.";

/// Adds a staff user, who is emailed a link to choose a password.
pub fn create_user(
    conn: &mut Connection,
    practice: &practice::Practice,
    actor: &Actor,
    f: &StaffForm,
    base_url: &str,
    now: i64,
) -> Result<Result<i64, FieldErrors>, AppError> {
    let mut errors = validate_user(f);
    if !errors.is_empty() {
        return Ok(Err(errors));
    }
    let email = auth::normalise_email(f.email);
    // Nobody knows this password: the user chooses theirs through the emailed link.
    let unusable = crypto::hash_password(&crypto::random_token()).map_err(AppError::Internal)?;
    let tx = crate::db::begin_write(&*conn)?;
    if accounts::staff_by_email(&tx, &email)?.is_some() {
        errors.add("email", EMAIL_TAKEN);
        return Ok(Err(errors));
    }
    let id = accounts::insert_staff(
        &tx,
        &NewStaff {
            email: &email,
            name: f.name.trim(),
            degree: f.degree.trim(),
            access_level: f.access_level,
            is_admin: f.is_admin,
            password_hash: &unusable,
        },
        now,
    )?;
    if f.may_invite {
        let mut staff = accounts::staff_by_id(&tx, id)?.ok_or(AppError::NotFound)?;
        staff.may_invite = true;
        accounts::update_staff(&tx, &staff)?;
    }
    audit::record(
        &tx,
        actor,
        "staff.create",
        None,
        &format!("staff {id} level {}", f.access_level),
        now,
    )?;
    auth::queue_password_link(
        &tx,
        &practice.name,
        Audience::Staff,
        id,
        &email,
        base_url,
        true,
        now,
    )?;
    tx.commit()?;
    Ok(Ok(id))
}

/// Saves an administrator's edit of a staff user. The last active administrator keeps the flag.
pub fn update_user(
    conn: &mut Connection,
    actor: &Actor,
    id: i64,
    f: &StaffForm,
    now: i64,
) -> Result<Result<(), FieldErrors>, AppError> {
    let mut errors = validate_user(f);
    if !errors.is_empty() {
        return Ok(Err(errors));
    }
    let email = auth::normalise_email(f.email);
    let tx = crate::db::begin_write(&*conn)?;
    let before = accounts::staff_by_id(&tx, id)?.ok_or(AppError::NotFound)?;
    if accounts::staff_by_email(&tx, &email)?.is_some_and(|other| other.id != id) {
        errors.add("email", EMAIL_TAKEN);
        return Ok(Err(errors));
    }
    // The administrator flag manages users; it does not widen clinical access. So nobody
    // changes their own access level: another administrator must.
    if actor.staff_id() == Some(id) && before.access_level != f.access_level {
        errors.add(
            "access_level",
            "You cannot change your own access level: ask another administrator.",
        );
        return Ok(Err(errors));
    }
    if before.is_admin && before.active && !f.is_admin && accounts::active_administrators(&tx)? <= 1
    {
        errors.add("is_admin", LAST_ADMIN);
        return Ok(Err(errors));
    }
    let after = accounts::Staff {
        email,
        name: f.name.trim().to_owned(),
        degree: f.degree.trim().to_owned(),
        access_level: f.access_level,
        is_admin: f.is_admin,
        may_invite: f.may_invite,
        ..before.clone()
    };
    accounts::update_staff(&tx, &after)?;
    let mut changes = Vec::new();
    if before.access_level != after.access_level {
        changes.push(format!(
            "access level {} -> {}",
            before.access_level, after.access_level
        ));
    }
    if before.is_admin != after.is_admin {
        changes.push(format!(
            "administrator {} -> {}",
            before.is_admin, after.is_admin
        ));
    }
    if before.may_invite != after.may_invite {
        changes.push(format!(
            "may invite {} -> {}",
            before.may_invite, after.may_invite
        ));
    }
    if before.email != after.email || before.name != after.name || before.degree != after.degree {
        changes.push("details".into());
    }
    audit::record(
        &tx,
        actor,
        "staff.update",
        None,
        &format!("staff {id}: {}", changes.join(", ")),
        now,
    )?;
    tx.commit()?;
    Ok(Ok(()))
}

/// Deactivates (signing the user out everywhere at once) or reactivates a staff user.
pub fn set_active(
    conn: &mut Connection,
    actor: &Actor,
    id: i64,
    active: bool,
    now: i64,
) -> Result<Result<(), &'static str>, AppError> {
    let tx = crate::db::begin_write(&*conn)?;
    let staff = accounts::staff_by_id(&tx, id)?.ok_or(AppError::NotFound)?;
    if !active && staff.is_admin && staff.active && accounts::active_administrators(&tx)? <= 1 {
        return Ok(Err(LAST_ADMIN));
    }
    accounts::set_staff_active(&tx, id, active)?;
    if !active {
        sessions::delete_for_principal(&tx, Audience::Staff, id, None)?;
    }
    let action = if active {
        "staff.reactivate"
    } else {
        "staff.deactivate"
    };
    audit::record(&tx, actor, action, None, &format!("staff {id}"), now)?;
    tx.commit()?;
    Ok(Ok(()))
}

/// Emails a staff user a one-time link to choose a new password.
pub fn send_password_link(
    conn: &mut Connection,
    practice: &practice::Practice,
    actor: &Actor,
    id: i64,
    base_url: &str,
    now: i64,
) -> Result<(), AppError> {
    let tx = crate::db::begin_write(&*conn)?;
    let staff = accounts::staff_by_id(&tx, id)?.ok_or(AppError::NotFound)?;
    auth::queue_password_link(
        &tx,
        &practice.name,
        Audience::Staff,
        id,
        &staff.email,
        base_url,
        true,
        now,
    )?;
    audit::record(
        &tx,
        actor,
        "staff.password_link",
        None,
        &format!("staff {id}"),
        now,
    )?;
    tx.commit()?;
    Ok(())
}

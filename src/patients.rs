//! Patient records: validation, creation and edits, with auto-invite. No HTTP here.

use crate::audit::{self, Actor};
use crate::auth;
use crate::dates::Date;
use crate::db::patients::{self, Patient, PatientFields};
use crate::db::practice::Practice;
use crate::error::{AppError, FieldErrors};
use crate::portal_access;
use rusqlite::Connection;

/// Checks a patient form; returns the fields cleaned (trimmed, date normalised) or the problems.
pub fn validate<'a>(f: &PatientFields<'a>, today: Date) -> (FieldErrors, String) {
    let mut errors = FieldErrors::default();
    for (field, value, label) in [
        ("first_name", f.first_name, "first name"),
        ("last_name", f.last_name, "last name"),
    ] {
        if value.trim().is_empty() {
            errors.add(field, format!("Enter the patient's {label}."));
        } else if value.chars().count() > 100 {
            errors.add(field, "Use at most 100 characters.");
        }
    }
    let date = Date::parse(f.date_of_birth);
    match date {
        None => errors.add(
            "date_of_birth",
            "Enter the date of birth as month/day/year, for example 03/14/1984.",
        ),
        Some(d) if d > today => errors.add(
            "date_of_birth",
            "The date of birth cannot be in the future.",
        ),
        Some(_) => {}
    }
    if !f.email.trim().is_empty() {
        if let Some(problem) = auth::email_problem(f.email) {
            errors.add("email", problem);
        }
    }
    if f.phone.chars().count() > 40 {
        errors.add("phone", "Use at most 40 characters.");
    }
    (errors, date.map(|d| d.to_string()).unwrap_or_default())
}

pub enum Saved {
    /// The patient's id, and the PIN when saving invited them automatically.
    Ok(i64, Option<String>),
    Invalid(FieldErrors),
}

/// Creates (`id` None) or updates a patient, then applies auto-invite, in one transaction.
pub fn save(
    conn: &mut Connection,
    practice: &Practice,
    actor: &Actor,
    id: Option<i64>,
    f: &PatientFields,
    base_url: &str,
    now: i64,
) -> Result<Saved, AppError> {
    let (errors, date) = validate(f, Date::from_timestamp(now));
    if !errors.is_empty() {
        return Ok(Saved::Invalid(errors));
    }
    let email = auth::normalise_email(f.email);
    let clean = PatientFields {
        first_name: f.first_name.trim(),
        last_name: f.last_name.trim(),
        date_of_birth: &date,
        email: &email,
        phone: f.phone.trim(),
    };
    let tx = crate::db::begin_write(&*conn)?;
    let id = match id {
        Some(id) => {
            patients::get(&tx, id, now)?.ok_or(AppError::NotFound)?;
            patients::update(&tx, id, &clean)?;
            audit::record(&tx, actor, "patient.update", Some(id), "demographics", now)?;
            id
        }
        None => {
            let id = patients::insert(&tx, &clean, now)?;
            audit::record(&tx, actor, "patient.create", Some(id), "demographics", now)?;
            id
        }
    };
    let patient: Patient = patients::get(&tx, id, now)?.ok_or(AppError::NotFound)?;
    let pin = portal_access::auto_invite(&tx, practice, &patient, base_url, now)?;
    tx.commit()?;
    Ok(Saved::Ok(id, pin))
}

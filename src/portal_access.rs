//! Portal access rules with no HTTP in them: who may invite, invitations with a one-time link
//! and a PIN, registration, caregivers, and revocation.

use crate::audit::{self, Actor};
use crate::auth::{self, SignIn};
use crate::crypto;
use crate::db::accounts::{self, Staff};
use crate::db::patients::{self, Invitation, NewInvitation, Patient};
use crate::db::practice::Practice;
use crate::db::sessions::Audience;
use crate::db::Pool;
use crate::error::{AppError, FieldErrors};
use crate::outbox;
use rusqlite::Connection;

pub const INVITATION_SECS: i64 = 30 * 86_400;
/// Wrong date-of-birth/PIN attempts before the invitation is locked.
pub const ATTEMPTS_BEFORE_LOCK: i64 = 5;
/// Shown, word for word, for a used, cancelled, locked or expired registration link.
pub const LINK_EXPIRED: &str =
    "Your registration link has expired. Ask your doctor to enroll you again.";

/// Whether this staff user may invite patients under the practice's setting.
pub fn may_invite(practice: &Practice, staff: &Staff) -> bool {
    !practice.invite_chosen_only || staff.is_admin || staff.may_invite
}

/// Caregiver access opens a patient's whole record to someone else: front-office staff
/// (level 1) who are not administrators cannot grant it.
pub fn may_invite_caregiver(staff: &Staff) -> bool {
    staff.is_admin || staff.access_level >= 2
}

pub struct InviteRequest<'a> {
    pub email: &'a str,
    pub phone: &'a str,
    /// For a caregiver: their name and relationship to the patient.
    pub caregiver: Option<(&'a str, &'a str)>,
}

pub fn validate_invite(request: &InviteRequest) -> FieldErrors {
    let mut errors = FieldErrors::default();
    if let Some((name, relationship)) = request.caregiver {
        if name.trim().is_empty() {
            errors.add("name", "Enter the caregiver's name.");
        } else if name.chars().count() > 200 {
            errors.add("name", "Use at most 200 characters.");
        }
        if relationship.trim().is_empty() {
            errors.add(
                "relationship",
                "Enter how the caregiver is related to the patient, for example Parent.",
            );
        } else if relationship.chars().count() > 100 {
            errors.add("relationship", "Use at most 100 characters.");
        }
    }
    if let Some(problem) = auth::email_problem(request.email) {
        errors.add("email", problem);
    }
    if request.phone.chars().count() > 40 {
        errors.add("phone", "Use at most 40 characters.");
    }
    errors
}

/// A new invitation: the PIN is for the staff member to hand over; the link goes only into the
/// email (the demo prints it).
pub struct Invited {
    pub pin: String,
    pub link: String,
}

/// Creates an invitation (cancelling earlier pending ones of the same kind for a patient's own
/// access) and queues its email. Call inside a transaction.
#[allow(clippy::too_many_arguments)]
pub fn invite(
    tx: &Connection,
    practice: &Practice,
    actor: &Actor,
    patient: &Patient,
    request: &InviteRequest,
    base_url: &str,
    now: i64,
) -> rusqlite::Result<Invited> {
    let role = if request.caregiver.is_some() {
        "caregiver"
    } else {
        "self"
    };
    if role == "self" {
        patients::cancel_pending(tx, patient.id, "self")?;
    }
    let token = crypto::random_token();
    let pin = crypto::random_digits(6);
    let (caregiver_name, relationship) = request.caregiver.unwrap_or(("", ""));
    let email = auth::normalise_email(request.email);
    let id = patients::insert_invitation(
        tx,
        &NewInvitation {
            patient_id: patient.id,
            role,
            email: &email,
            phone: request.phone.trim(),
            caregiver_name: caregiver_name.trim(),
            relationship: relationship.trim(),
            token_hash: &crypto::sha256_hex(token.as_bytes()),
            pin: &pin,
            expires_at: now + INVITATION_SECS,
            created_by: actor.staff_id(),
        },
        now,
    )?;
    let link = format!("{base_url}/portal/register/{token}");
    outbox::queue_invitation(tx, &practice.name, &email, &link, role == "caregiver", now)?;
    if role == "caregiver" {
        // The patient hears of it at their own address, so an invitation they did not ask for
        // does not go unnoticed.
        for own in accounts::own_emails_of_patient(tx, patient.id)? {
            outbox::queue_caregiver_notice(tx, &practice.name, &own, now)?;
        }
    }
    let action = if role == "caregiver" {
        "caregiver.invite"
    } else {
        "portal.invite"
    };
    audit::record(
        tx,
        actor,
        action,
        Some(patient.id),
        &format!("invitation {id}"),
        now,
    )?;
    Ok(Invited { pin, link })
}

/// A registration link that can still be used, with its patient.
pub fn open_link(
    conn: &Connection,
    token: &str,
    now: i64,
) -> rusqlite::Result<Option<(Invitation, Patient)>> {
    let Some(invitation) =
        patients::invitation_by_token_hash(conn, &crypto::sha256_hex(token.as_bytes()))?
    else {
        return Ok(None);
    };
    if !invitation.usable(now) {
        return Ok(None);
    }
    Ok(patients::get(conn, invitation.patient_id, now)?.map(|p| (invitation, p)))
}

pub struct Registration<'a> {
    pub date_of_birth: &'a str,
    pub pin: &'a str,
    /// Create a new account (true) or link to an existing one (false).
    pub new_account: bool,
    pub email: &'a str,
    pub password: &'a str,
    pub password_again: &'a str,
}

pub enum Registered {
    /// The account now holds the record; sign it in, acting for this patient.
    Done {
        account_id: i64,
        patient_id: i64,
    },
    Invalid(FieldErrors),
    /// The link is (now) dead: used, cancelled, expired, or locked by this attempt.
    LinkDead,
}

/// Registers from an invitation link: proves identity with date of birth and PIN, then creates
/// an account or signs in to an existing one, and grants access. The link works once.
pub fn register(
    pool: &Pool,
    token: &str,
    form: &Registration,
    client: &str,
    now: i64,
) -> Result<Registered, AppError> {
    let conn = pool.get();
    let Some((invitation, patient)) = open_link(&conn, token, now)? else {
        return Ok(Registered::LinkDead);
    };
    let mut errors = FieldErrors::default();
    let dob_given = crate::dates::Date::parse(form.date_of_birth).map(|d| d.to_string());
    let identity_ok = dob_given.as_deref() == Some(patient.date_of_birth.as_str())
        && crypto::constant_time_eq(form.pin.trim().as_bytes(), invitation.pin.as_bytes());
    if !identity_ok {
        let locked = patients::record_failed_attempt(&conn, invitation.id, ATTEMPTS_BEFORE_LOCK)?;
        let actor = Actor::anonymous(client);
        audit::record_outcome(
            &conn,
            &actor,
            "portal.register",
            Some(patient.id),
            &format!("invitation {}", invitation.id),
            if locked { "locked" } else { "refused" },
            now,
        )?;
        if locked {
            return Ok(Registered::LinkDead);
        }
        errors.add(
            "date_of_birth",
            "The date of birth or the PIN is not right. Check both and try again.",
        );
        return Ok(Registered::Invalid(errors));
    }
    let email = auth::normalise_email(form.email);
    let (account_id, password_hash) = if form.new_account {
        if let Some(problem) = auth::email_problem(&email) {
            errors.add("email", problem);
        }
        if let Some(problem) = auth::password_problem(form.password) {
            errors.add("password", problem);
        } else if form.password != form.password_again {
            errors.add("password_again", "The two passwords are not the same.");
        }
        if errors.is_empty() && accounts::portal_account_by_email(&conn, &email)?.is_some() {
            errors.add("email", "A portal account already uses this email address. Choose \"I already have an account\" below and sign in with it.");
        }
        if !errors.is_empty() {
            return Ok(Registered::Invalid(errors));
        }
        // No connection is held while argon2 runs (see `auth::sign_in`).
        drop(conn);
        (
            None,
            Some(crypto::hash_password(form.password).map_err(AppError::Internal)?),
        )
    } else {
        drop(conn);
        match auth::sign_in(pool, Audience::Portal, &email, form.password, client, now)? {
            SignIn::Accepted(id) => (Some(id), None),
            SignIn::Refused => {
                errors.add(
                    "existing_password",
                    "The email address or password is not right.",
                );
                return Ok(Registered::Invalid(errors));
            }
            SignIn::Locked(wait) => {
                errors.add(
                    "existing_password",
                    format!(
                        "Too many failed sign-ins with this email address. Wait {} and try again.",
                        auth::describe_wait(wait)
                    ),
                );
                return Ok(Registered::Invalid(errors));
            }
        }
    };
    let conn = pool.get();
    let tx = crate::db::begin_write(&conn)?;
    // An account holds one role per patient: a caregiver invitation sent to the patient's own
    // address must not turn their own access into caregiver access (nor the reverse). Checked
    // inside the write, so that two registrations at once cannot both pass it.
    if let Some(id) = account_id {
        let held = accounts::role_for_patient(&tx, id, patient.id)?;
        if held.as_deref().is_some_and(|role| role != invitation.role) {
            errors.add(
                "email",
                "This portal account already has access to this record in another role. Ask the practice to send the invitation to a different email address.",
            );
            return Ok(Registered::Invalid(errors));
        }
    }
    if !patients::mark_used(&tx, invitation.id)? {
        return Ok(Registered::LinkDead);
    }
    let account_id = match (account_id, password_hash) {
        (Some(id), _) => id,
        (None, Some(hash)) => {
            let name = if invitation.is_caregiver() {
                invitation.caregiver_name.clone()
            } else {
                patient.full_name()
            };
            match accounts::insert_portal_account(&tx, &email, &name, &hash, now) {
                Ok(id) => id,
                // Taken meanwhile by a concurrent registration.
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    errors.add("email", "A portal account already uses this email address. Choose \"I already have an account\" below and sign in with it.");
                    return Ok(Registered::Invalid(errors));
                }
                Err(e) => return Err(e.into()),
            }
        }
        (None, None) => return Err(AppError::Internal("registration without account".into())),
    };
    accounts::grant_access(
        &tx,
        account_id,
        patient.id,
        &invitation.role,
        &invitation.relationship,
        now,
    )?;
    let actor = Actor::portal(account_id, client);
    audit::record(
        &tx,
        &actor,
        "portal.register",
        Some(patient.id),
        &format!("invitation {}", invitation.id),
        now,
    )?;
    tx.commit()?;
    Ok(Registered::Done {
        account_id,
        patient_id: patient.id,
    })
}

/// Ends the patient's own portal access and any pending invitation for it.
pub fn revoke_patient(
    tx: &Connection,
    actor: &Actor,
    patient_id: i64,
    now: i64,
) -> rusqlite::Result<()> {
    let revoked = accounts::revoke_own_access(tx, patient_id, now)?;
    let cancelled = patients::cancel_pending(tx, patient_id, "self")?;
    audit::record(
        tx,
        actor,
        "portal.revoke",
        Some(patient_id),
        &format!("{revoked} access, {cancelled} invitation"),
        now,
    )
}

/// Ends one caregiver's access; false when it is not an active caregiver of this patient.
pub fn revoke_caregiver(
    tx: &Connection,
    actor: &Actor,
    patient_id: i64,
    access_id: i64,
    now: i64,
) -> rusqlite::Result<bool> {
    let done = accounts::revoke_caregiver(tx, patient_id, access_id, now)? == 1;
    if done {
        audit::record(
            tx,
            actor,
            "caregiver.revoke",
            Some(patient_id),
            &format!("access {access_id}"),
            now,
        )?;
    }
    Ok(done)
}

/// Cancels one pending invitation of this patient; false when there is none such.
pub fn cancel_invitation(
    tx: &Connection,
    actor: &Actor,
    patient_id: i64,
    invitation_id: i64,
    now: i64,
) -> rusqlite::Result<bool> {
    let done = patients::cancel_invitation(tx, patient_id, invitation_id)? == 1;
    if done {
        audit::record(
            tx,
            actor,
            "portal.invitation_cancel",
            Some(patient_id),
            &format!("invitation {invitation_id}"),
            now,
        )?;
    }
    Ok(done)
}

/// Auto-invite: a patient aged 18–85 with an email, never invited or enrolled, is invited when
/// the practice has turned it on. Returns the PIN when an invitation was made.
pub fn auto_invite(
    tx: &Connection,
    practice: &Practice,
    patient: &Patient,
    base_url: &str,
    now: i64,
) -> rusqlite::Result<Option<String>> {
    if !practice.auto_invite || patient.email.is_empty() {
        return Ok(None);
    }
    let Some(birth) = crate::dates::Date::parse(&patient.date_of_birth) else {
        return Ok(None);
    };
    let age = birth.age_on(crate::dates::Date::from_timestamp(now));
    if !(18..=85).contains(&age) || patients::has_portal_history(tx, patient.id)? {
        return Ok(None);
    }
    let request = InviteRequest {
        email: &patient.email,
        phone: &patient.phone,
        caregiver: None,
    };
    invite(
        tx,
        practice,
        &Actor::system(),
        patient,
        &request,
        base_url,
        now,
    )
    .map(|i| Some(i.pin))
}

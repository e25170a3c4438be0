//! The patient portal (patients and caregivers).

pub mod messages;
pub mod register;

use super::form;
use super::routes::Params;
use super::views::layout::{page, Context};
use super::{csrf, html, session, signin, App};
use crate::db::sessions::{self, Audience};
use crate::error::{AppError, AppResult};
use maud::html;
use rouille::{Request, Response};

/// Shown, word for word, to a patient or caregiver whose access has been revoked.
pub const REVOKED_SENTENCE: &str = "Ask your doctor to provide access to your health records.";

pub fn login_form(app: &App, request: &Request, _: &Params) -> AppResult<Response> {
    signin::form(app, request, Audience::Portal)
}

pub fn login_submit(app: &App, request: &Request, _: &Params) -> AppResult<Response> {
    signin::submit(app, request, Audience::Portal)
}

pub fn logout(app: &App, request: &Request, _: &Params) -> AppResult<Response> {
    signin::logout(app, request, Audience::Portal)
}

pub fn home(app: &App, request: &Request, _: &Params) -> AppResult<Response> {
    let caller = session::portal_user(app, request)?;
    let ctx = Context::portal(app, &caller);
    let Some(acting) = &caller.acting else {
        return Ok(html(page(
            &ctx,
            "Your portal access has ended",
            html! {
                h1 { "Your portal access has ended" }
                p.notice { (REVOKED_SENTENCE) }
            },
        )));
    };
    Ok(html(page(
        &ctx,
        "Portal home",
        html! {
            h1 { "Welcome, " (caller.account.name) }
            @if acting.is_caregiver() {
                p { "You are using the portal as a caregiver (" (acting.relationship) ") for " strong { (acting.patient_name) } "." }
            } @else {
                p { "You are viewing your own health record." }
            }
            @if ctx.portal_messaging() {
                p { a.button href="/portal/messages" { "Messages" } " " a.button.secondary href="/portal/messages/new" { "Write to the practice" } }
            }
            @if caller.active_accesses().count() > 1 {
                p { "You can switch to another record with \"Viewing\" at the top of every page." }
            }
        },
    )))
}

/// Chooses which of the account's records the session acts for. Any record not held actively
/// by this account is not found.
pub fn switch_patient(app: &App, request: &Request, _: &Params) -> AppResult<Response> {
    let caller = session::portal_user(app, request)?;
    let form = form::read(app, request)?;
    csrf::check(&form, &caller.session.csrf_token)?;
    let wanted: i64 = form
        .trimmed("patient")
        .parse()
        .map_err(|_| AppError::NotFound)?;
    let access = caller
        .active_accesses()
        .find(|a| a.patient_id == wanted)
        .ok_or(AppError::NotFound)?;
    sessions::set_acting_patient(
        &app.pool.get(),
        &caller.session.token_hash,
        access.patient_id,
    )?;
    Ok(Response::redirect_303("/portal"))
}

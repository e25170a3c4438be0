//! Forgotten passwords, one-time password links and changing a password, for both audiences.

use super::form::{self, Form};
use super::routes::Params;
use super::views::layout::{message_page, page, Context};
use super::views::{self, csrf_field, error_summary, Field, FieldErrors};
use super::{client, csrf, html, notice_text, session, App};
use crate::auth;
use crate::db::sessions::Audience;
use crate::error::{AppError, AppResult};
use maud::html;
use rouille::{Request, Response};

fn prefix(audience: Audience) -> &'static str {
    match audience {
        Audience::Staff => "/practice",
        Audience::Portal => "/portal",
    }
}

const HINT: &str =
    "At least 8 characters, with a lower-case letter, an upper-case letter and a digit.";
const SENT: &str = "If an account uses this address, a link to choose a new password is on its way to it. The link works once, for one hour.";

fn forgot_page(
    app: &App,
    audience: Audience,
    csrf_token: &str,
    email: &str,
    errors: &FieldErrors,
    sent: bool,
) -> Response {
    let ctx = Context::public(app);
    html(page(
        &ctx,
        "Forgot your password",
        html! {
            h1 { "Forgot your password?" }
            @if sent {
                p.notice role="status" { (SENT) }
            } @else {
                p { "Enter the email address you sign in with. We will email you a link to choose a new password." }
            }
            (error_summary(errors))
            form.stacked method="post" action={ (prefix(audience)) "/forgot" } novalidate {
                (csrf_field(csrf_token))
                (Field::new("email", "Email address").kind("email").value(email).autocomplete("username").render(errors))
                button type="submit" { "Email me a link" }
            }
            p { a href={ (prefix(audience)) "/login" } { "Back to sign in" } }
        },
    ))
}

fn forgot_form(app: &App, request: &Request, audience: Audience) -> AppResult<Response> {
    let (token, new_cookie) = csrf::anonymous_token(request);
    let response = forgot_page(app, audience, &token, "", &FieldErrors::default(), false);
    Ok(if new_cookie {
        csrf::set_anonymous_cookie(response, app, &token)
    } else {
        response
    })
}

/// The same answer whether or not the address has an account.
fn forgot_submit(app: &App, request: &Request, audience: Audience) -> AppResult<Response> {
    let form = form::read(app, request)?;
    csrf::check_anonymous(request, &form)?;
    let email = form.trimmed("email");
    let mut errors = FieldErrors::default();
    if let Some(problem) = auth::email_problem(email) {
        errors.add("email", problem);
        return Ok(
            forgot_page(app, audience, form.get(csrf::FIELD), email, &errors, false)
                .with_status_code(400),
        );
    }
    let practice_name = app.practice_row()?.map(|p| p.name).unwrap_or_default();
    auth::request_reset(
        &mut app.pool.get(),
        &practice_name,
        audience,
        email,
        app.config.public_base(),
        &client(request),
        app.clock.now(),
    )?;
    Ok(forgot_page(
        app,
        audience,
        form.get(csrf::FIELD),
        "",
        &errors,
        true,
    ))
}

fn dead_link(app: &App, audience: Audience) -> Response {
    let ctx = Context::public(app);
    let _ = audience;
    message_page(
        &ctx,
        "Link no longer valid",
        "This link has been used or has expired. Ask for a new one from the sign-in page.",
    )
    .with_status_code(404)
}

fn reset_page(
    app: &App,
    audience: Audience,
    link: &str,
    csrf_token: &str,
    errors: &FieldErrors,
) -> Response {
    let ctx = Context::public(app);
    html(page(
        &ctx,
        "Choose a new password",
        html! {
            h1 { "Choose a new password" }
            (error_summary(errors))
            form.stacked method="post" action={ (prefix(audience)) "/reset/" (link) } novalidate {
                (csrf_field(csrf_token))
                (Field::new("password", "New password").kind("password").autocomplete("new-password").hint(HINT).render(errors))
                (Field::new("password_again", "New password again").kind("password").autocomplete("new-password").render(errors))
                button type="submit" { "Save the new password" }
            }
        },
    ))
}

fn reset_form(
    app: &App,
    request: &Request,
    params: &Params,
    audience: Audience,
) -> AppResult<Response> {
    let link = params.get(0);
    if !auth::reset_link_valid(&app.pool.get(), audience, link, app.clock.now())? {
        return Ok(dead_link(app, audience));
    }
    let (token, new_cookie) = csrf::anonymous_token(request);
    let response = reset_page(app, audience, link, &token, &FieldErrors::default());
    Ok(if new_cookie {
        csrf::set_anonymous_cookie(response, app, &token)
    } else {
        response
    })
}

fn reset_submit(
    app: &App,
    request: &Request,
    params: &Params,
    audience: Audience,
) -> AppResult<Response> {
    let link = params.get(0);
    let form = form::read(app, request)?;
    csrf::check_anonymous(request, &form)?;
    let result = auth::reset_password(
        &mut app.pool.get(),
        audience,
        link,
        form.get("password"),
        form.get("password_again"),
        &client(request),
        app.clock.now(),
    );
    match result {
        Ok(Ok(())) => Ok(Response::redirect_303(format!(
            "{}/login?reset=1",
            prefix(audience)
        ))),
        Ok(Err(errors)) => Ok(
            reset_page(app, audience, link, form.get(csrf::FIELD), &errors).with_status_code(400),
        ),
        Err(AppError::NotFound) => Ok(dead_link(app, audience)),
        Err(e) => Err(e),
    }
}

/// The account page: who you are, and the change-password form.
fn account_page(
    app: &App,
    ctx: &Context,
    audience: Audience,
    email: &str,
    csrf_token: &str,
    errors: &FieldErrors,
    notice: Option<&str>,
) -> Response {
    let _ = app;
    html(page(
        ctx,
        "My account",
        html! {
            h1 { "My account" }
            (views::notice(notice))
            p { "You sign in as " strong { (email) } "." }
            h2 { "Change your password" }
            (error_summary(errors))
            form.stacked method="post" action={ (prefix(audience)) "/account/password" } novalidate {
                (csrf_field(csrf_token))
                (Field::new("current_password", "Current password").kind("password").autocomplete("current-password").render(errors))
                (Field::new("password", "New password").kind("password").autocomplete("new-password").hint(HINT).render(errors))
                (Field::new("password_again", "New password again").kind("password").autocomplete("new-password").render(errors))
                button type="submit" { "Change password" }
            }
        },
    ))
}

fn account(app: &App, request: &Request, audience: Audience) -> AppResult<Response> {
    let notice = notice_text(request);
    match audience {
        Audience::Staff => {
            let caller = session::staff(app, request)?;
            let ctx = Context::practice(app, &caller);
            Ok(account_page(
                app,
                &ctx,
                audience,
                &caller.staff.email,
                &caller.session.csrf_token,
                &FieldErrors::default(),
                notice,
            ))
        }
        Audience::Portal => {
            let caller = session::portal_user(app, request)?;
            let ctx = Context::portal(app, &caller);
            Ok(account_page(
                app,
                &ctx,
                audience,
                &caller.account.email,
                &caller.session.csrf_token,
                &FieldErrors::default(),
                notice,
            ))
        }
    }
}

fn change(app: &App, request: &Request, audience: Audience) -> AppResult<Response> {
    let (ctx, principal, email, session) = match audience {
        Audience::Staff => {
            let c = session::staff(app, request)?;
            (
                Context::practice(app, &c),
                c.staff.id,
                c.staff.email,
                c.session,
            )
        }
        Audience::Portal => {
            let c = session::portal_user(app, request)?;
            (
                Context::portal(app, &c),
                c.account.id,
                c.account.email,
                c.session,
            )
        }
    };
    let form: Form = form::read(app, request)?;
    csrf::check(&form, &session.csrf_token)?;
    let result = auth::change_password(
        &app.pool,
        audience,
        principal,
        &email,
        form.get("current_password"),
        form.get("password"),
        form.get("password_again"),
        &session.token_hash,
        &client(request),
        app.clock.now(),
    )?;
    match result {
        Ok(()) => Ok(Response::redirect_303(format!(
            "{}/account?notice=password_changed",
            prefix(audience)
        ))),
        Err(errors) => Ok(account_page(
            app,
            &ctx,
            audience,
            &email,
            &session.csrf_token,
            &errors,
            None,
        )
        .with_status_code(400)),
    }
}

pub fn staff_forgot_form(app: &App, r: &Request, _: &Params) -> AppResult<Response> {
    forgot_form(app, r, Audience::Staff)
}
pub fn staff_forgot(app: &App, r: &Request, _: &Params) -> AppResult<Response> {
    forgot_submit(app, r, Audience::Staff)
}
pub fn staff_reset_form(app: &App, r: &Request, p: &Params) -> AppResult<Response> {
    reset_form(app, r, p, Audience::Staff)
}
pub fn staff_reset(app: &App, r: &Request, p: &Params) -> AppResult<Response> {
    reset_submit(app, r, p, Audience::Staff)
}
pub fn staff_account(app: &App, r: &Request, _: &Params) -> AppResult<Response> {
    account(app, r, Audience::Staff)
}
pub fn staff_change(app: &App, r: &Request, _: &Params) -> AppResult<Response> {
    change(app, r, Audience::Staff)
}
pub fn portal_forgot_form(app: &App, r: &Request, _: &Params) -> AppResult<Response> {
    forgot_form(app, r, Audience::Portal)
}
pub fn portal_forgot(app: &App, r: &Request, _: &Params) -> AppResult<Response> {
    forgot_submit(app, r, Audience::Portal)
}
pub fn portal_reset_form(app: &App, r: &Request, p: &Params) -> AppResult<Response> {
    reset_form(app, r, p, Audience::Portal)
}
pub fn portal_reset(app: &App, r: &Request, p: &Params) -> AppResult<Response> {
    reset_submit(app, r, p, Audience::Portal)
}
pub fn portal_account(app: &App, r: &Request, _: &Params) -> AppResult<Response> {
    account(app, r, Audience::Portal)
}
pub fn portal_change(app: &App, r: &Request, _: &Params) -> AppResult<Response> {
    change(app, r, Audience::Portal)
}

//! Sign-in and sign-out pages, one implementation for both audiences.

use super::form::{self, Form};
use super::views::layout::{page, Context};
use super::views::{Field, FieldErrors};
use super::{csrf, html, session, App};
use crate::auth::{self, SignIn};
use crate::db::accounts;
use crate::db::sessions::{self, Audience};
use crate::error::AppResult;
use maud::html;
use rouille::{Request, Response};

struct Words {
    heading: &'static str,
    action: &'static str,
    home: &'static str,
}

fn words(audience: Audience) -> Words {
    match audience {
        Audience::Staff => Words {
            heading: "Practice sign in",
            action: "/practice/login",
            home: "/practice",
        },
        Audience::Portal => Words {
            heading: "Sign in to your patient portal",
            action: "/portal/login",
            home: "/portal",
        },
    }
}

pub fn form(app: &App, request: &Request, audience: Audience) -> AppResult<Response> {
    let expired = request.get_param("expired");
    let notice = if expired.as_deref() == Some("lifetime") {
        let hours = app.config.session_max_hours;
        let unit = if hours == 1 { "hour" } else { "hours" };
        Some(format!(
            "For your security, you are signed out {hours} {unit} after signing in. Please sign in again."
        ))
    } else if expired.is_some() {
        Some(format!(
            "You were signed out after {} minutes without activity. Please sign in again.",
            app.config.session_idle_minutes
        ))
    } else if request.get_param("signed_out").is_some() {
        Some("You have signed out.".to_owned())
    } else if request.get_param("reset").is_some() {
        Some("Your new password is saved. Sign in with it.".to_owned())
    } else {
        None
    };
    let (token, new_cookie) = csrf::anonymous_token(request);
    let response = render(
        app,
        audience,
        &token,
        "",
        &FieldErrors::default(),
        notice.as_deref(),
    );
    Ok(if new_cookie {
        csrf::set_anonymous_cookie(response, app, &token)
    } else {
        response
    })
}

fn render(
    app: &App,
    audience: Audience,
    csrf_token: &str,
    email: &str,
    errors: &FieldErrors,
    notice: Option<&str>,
) -> Response {
    let w = words(audience);
    let ctx = Context::public(app);
    html(page(
        &ctx,
        w.heading,
        html! {
            h1 { (w.heading) }
            @if let Some(notice) = notice {
                p.notice role="status" { (notice) }
            }
            (super::views::error_summary(errors))
            form.stacked method="post" action=(w.action) novalidate {
                (super::views::csrf_field(csrf_token))
                (Field::new("email", "Email address").kind("email").value(email).autocomplete("username").render(errors))
                (Field::new("password", "Password").kind("password").autocomplete("current-password").render(errors))
                button type="submit" { "Sign in" }
            }
            p { a href={ (w.action.trim_end_matches("/login")) "/forgot" } { "Forgot your password?" } }
            @if audience == Audience::Staff {
                p.aside { "Are you a patient? " a href="/portal/login" { "Sign in to the patient portal" } "." }
            } @else {
                p.aside { "Practice staff: " a href="/practice/login" { "sign in here" } "." }
            }
        },
    ))
}

pub fn submit(app: &App, request: &Request, audience: Audience) -> AppResult<Response> {
    let form: Form = form::read(app, request)?;
    csrf::check_anonymous(request, &form)?;
    let email = form.trimmed("email");
    let password = form.get("password");
    let mut errors = FieldErrors::default();
    if email.is_empty() {
        errors.add("email", "Enter your email address.");
    }
    if password.is_empty() {
        errors.add("password", "Enter your password.");
    }
    let now = app.clock.now();
    if errors.is_empty() {
        match auth::sign_in(
            &app.pool,
            audience,
            email,
            password,
            &super::client(request),
            now,
        )? {
            SignIn::Accepted(principal) => {
                let conn = app.pool.get();
                let acting = match audience {
                    Audience::Staff => None,
                    Audience::Portal => accounts::accesses_for_account(&conn, principal)?
                        .into_iter()
                        .find(|a| a.active)
                        .map(|a| a.patient_id),
                };
                let token = sessions::create(&conn, audience, principal, acting, now)?;
                log::info!("sign-in accepted: {} {}", audience.as_str(), principal);
                let response = Response::redirect_303(words(audience).home);
                return Ok(session::set_cookie(response, app, audience, &token));
            }
            SignIn::Refused => {
                log::info!("sign-in refused: {}", audience.as_str());
                errors.add("password", "The email address or password is not right.");
            }
            SignIn::Locked(wait) => {
                log::warn!("sign-in throttled: {}", audience.as_str());
                errors.add(
                    "password",
                    format!(
                        "Too many failed sign-ins with this email address. Wait {} and try again.",
                        auth::describe_wait(wait)
                    ),
                );
            }
        }
    }
    let token = form.get(csrf::FIELD);
    Ok(render(app, audience, token, email, &errors, None).with_status_code(400))
}

/// Ends the session on the server, then clears the cookie.
pub fn logout(app: &App, request: &Request, audience: Audience) -> AppResult<Response> {
    let (session_hash, csrf_token, principal) = match audience {
        Audience::Staff => {
            let caller = session::staff(app, request)?;
            (
                caller.session.token_hash,
                caller.session.csrf_token,
                caller.staff.id,
            )
        }
        Audience::Portal => {
            let caller = session::portal_user(app, request)?;
            (
                caller.session.token_hash,
                caller.session.csrf_token,
                caller.account.id,
            )
        }
    };
    let form = form::read(app, request)?;
    csrf::check(&form, &csrf_token)?;
    let conn = app.pool.get();
    sessions::delete(&conn, &session_hash)?;
    let actor = crate::audit::Actor {
        kind: audience.as_str(),
        id: Some(principal),
        client: super::client(request),
    };
    crate::audit::record(
        &conn,
        &actor,
        "auth.sign_out",
        None,
        audience.as_str(),
        app.clock.now(),
    )?;
    drop(conn);
    let target = format!("{}?signed_out=1", words(audience).action);
    Ok(session::clear_cookie(
        Response::redirect_303(target),
        app,
        audience,
    ))
}

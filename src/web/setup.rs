//! The start page and the one-time first-run setup link.

use super::form::{self, Form};
use super::routes::Params;
use super::views::layout::{message_page, page, Context};
use super::views::{csrf_field, error_summary, Field, FieldErrors};
use super::{csrf, html, session, App};
use crate::db::practice;
use crate::db::sessions::{self, Audience};
use crate::error::{AppError, AppResult};
use crate::staff::{self, Created, NewAdministrator};
use maud::html;
use rouille::{Request, Response};

pub fn start_page(app: &App, _request: &Request, _: &Params) -> AppResult<Response> {
    let ctx = Context::public(app);
    if ctx.practice_name.is_none() {
        return Ok(message_page(
            &ctx,
            "Carepost is not set up yet",
            "Open the one-time setup link that Carepost printed when it started, or create an \
             administrator with `carepost admin create`.",
        ));
    }
    Ok(html(page(
        &ctx,
        "Welcome",
        html! {
            h1 { "Secure messaging with your practice" }
            div.choices {
                a.button href="/portal/login" { "Patients and caregivers: sign in" }
                a.button.secondary href="/practice/login" { "Practice staff: sign in" }
            }
        },
    )))
}

fn require_valid_token(app: &App, token: &str) -> AppResult<()> {
    let conn = app.pool.get();
    if practice::setup_token_valid(&conn, token, app.clock.now())? {
        Ok(())
    } else {
        Err(AppError::NotFound)
    }
}

pub fn form(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    require_valid_token(app, params.get(0))?;
    let (token, new_cookie) = csrf::anonymous_token(request);
    let response = render(
        app,
        params.get(0),
        &token,
        &Form::default(),
        &FieldErrors::default(),
    );
    Ok(if new_cookie {
        csrf::set_anonymous_cookie(response, app, &token)
    } else {
        response
    })
}

fn render(
    app: &App,
    setup_token: &str,
    csrf_token: &str,
    form: &Form,
    errors: &FieldErrors,
) -> Response {
    let ctx = Context::public(app);
    let level = form.get("access_level");
    html(page(
        &ctx,
        "Set up Carepost",
        html! {
            h1 { "Set up Carepost" }
            p { "Name the practice and create the first administrator. This link works once." }
            (error_summary(errors))
            form.stacked method="post" action={ "/setup/" (setup_token) } novalidate {
                (csrf_field(csrf_token))
                (Field::new("practice_name", "Practice name").value(form.get("practice_name")).autocomplete("organization").render(errors))
                (Field::new("name", "Your name").value(form.get("name")).autocomplete("name").render(errors))
                (Field::new("email", "Your email address (your sign-in)").kind("email").value(form.get("email")).autocomplete("email").render(errors))
                (Field::new("degree", "Degree or title (optional)").value(form.get("degree")).hint("For example MD, NP, RN or Practice manager.").render(errors))
                div.field.has-error[errors.get("access_level").is_some()] {
                    label for="access_level" { "Your access level" }
                    @if let Some(message) = errors.get("access_level") {
                        p.field-error id="access_level-error" { (message) }
                    }
                    select #access_level name="access_level" {
                        @for n in 1u8..=4 {
                            option value=(n) selected[level == n.to_string()] { (super::practice::access_level_label(n)) }
                        }
                    }
                }
                (Field::new("password", "Password").kind("password").autocomplete("new-password")
                    .hint("At least 8 characters, with a lower-case letter, an upper-case letter and a digit.").render(errors))
                (Field::new("password_again", "Password again").kind("password").autocomplete("new-password").render(errors))
                button type="submit" { "Create the practice" }
            }
        },
    ))
}

pub fn submit(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    let setup_token = params.get(0);
    require_valid_token(app, setup_token)?;
    let form = form::read(app, request)?;
    csrf::check_anonymous(request, &form)?;
    let new = NewAdministrator {
        practice_name: form.get("practice_name"),
        name: form.get("name"),
        email: form.get("email"),
        degree: form.get("degree"),
        access_level: form.trimmed("access_level").parse().unwrap_or(0),
        password: form.get("password"),
        password_again: form.get("password_again"),
    };
    let now = app.clock.now();
    let mut conn = app.pool.get();
    match staff::create_administrator(&mut conn, &new, Some(setup_token), now)? {
        Ok(Created::New(id)) => {
            log::info!("first-run setup completed; administrator {id} created");
            let token = sessions::create(&conn, Audience::Staff, id, None, now)?;
            Ok(session::set_cookie(
                Response::redirect_303("/practice"),
                app,
                Audience::Staff,
                &token,
            ))
        }
        // Not reachable while the link is valid (no practice means no staff), and never a way
        // to sign in as someone who exists.
        Ok(Created::AlreadyExists) => Err(AppError::NotFound),
        Err(errors) => {
            drop(conn);
            Ok(
                render(app, setup_token, form.get(csrf::FIELD), &form, &errors)
                    .with_status_code(400),
            )
        }
    }
}

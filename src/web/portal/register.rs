//! Registration from an invitation link: date of birth + PIN, then a new account or an
//! existing one.

use crate::db::sessions::{self, Audience};
use crate::error::AppResult;
use crate::portal_access::{self, Registered, Registration, LINK_EXPIRED};
use crate::web::form::{self, Form};
use crate::web::routes::Params;
use crate::web::views::layout::{message_page, page, Context};
use crate::web::views::{csrf_field, error_summary, Field, FieldErrors};
use crate::web::{client, csrf, html, session, App};
use maud::html;
use rouille::{Request, Response};

fn expired(app: &App) -> Response {
    message_page(
        &Context::public(app),
        "Registration link expired",
        LINK_EXPIRED,
    )
    .with_status_code(410)
}

fn render(
    app: &App,
    link: &str,
    csrf_token: &str,
    caregiver_for: Option<&str>,
    form: &Form,
    errors: &FieldErrors,
) -> Response {
    let ctx = Context::public(app);
    let action = format!("/portal/register/{link}");
    let existing = form.get("mode") == "existing";
    html(page(
        &ctx,
        "Register for the patient portal",
        html! {
            h1 { "Register for the patient portal" }
            @if caregiver_for.is_some() {
                p { "You were invited as a caregiver. To prove who you are, enter the date of birth of the person you care for and the PIN the practice gave you." }
            } @else {
                p { "To prove who you are, enter your date of birth and the PIN the practice gave you." }
            }
            (error_summary(errors))
            form.stacked method="post" action=(action) novalidate {
                (csrf_field(csrf_token))
                (Field::new("date_of_birth", if caregiver_for.is_some() { "Their date of birth" } else { "Your date of birth" })
                    .value(form.get("date_of_birth")).autocomplete("off").hint("Month/day/year, for example 03/14/1984 (1984-03-14 works too).").render(errors))
                (Field::new("pin", "PIN").value(form.get("pin")).autocomplete("one-time-code").hint("6 digits, given to you by the practice.").render(errors))
                fieldset {
                    legend { "Your portal account" }
                    div.field.radio {
                        input #mode-new type="radio" name="mode" value="new" checked[!existing];
                        label for="mode-new" { "Create a new account" }
                    }
                    div.field.radio {
                        input #mode-existing type="radio" name="mode" value="existing" checked[existing];
                        label for="mode-existing" { "I already have an account: add this record to it" }
                    }
                }
                (Field::new("email", "Email address (your sign-in)").kind("email").value(form.get("email")).autocomplete("username").render(errors))
                (Field::new("password", "Password").kind("password").autocomplete("new-password")
                    .hint("For a new account: at least 8 characters, with a lower-case letter, an upper-case letter and a digit. For an existing account: its password.").render(errors))
                (Field::new("password_again", "Password again (new account only)").kind("password").autocomplete("new-password").render(errors))
                button type="submit" { "Register" }
            }
        },
    ))
}

pub fn form(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    let link = params.get(0);
    let Some((invitation, patient)) =
        portal_access::open_link(&app.pool.get(), link, app.clock.now())?
    else {
        return Ok(expired(app));
    };
    let (token, new_cookie) = csrf::anonymous_token(request);
    let prefilled = Form::from_pairs(vec![
        ("email", invitation.email.clone()),
        ("mode", "new".into()),
    ]);
    let caregiver_for = invitation.is_caregiver().then(|| patient.full_name());
    let response = render(
        app,
        link,
        &token,
        caregiver_for.as_deref(),
        &prefilled,
        &FieldErrors::default(),
    );
    Ok(if new_cookie {
        csrf::set_anonymous_cookie(response, app, &token)
    } else {
        response
    })
}

pub fn submit(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    let link = params.get(0);
    let form = form::read(app, request)?;
    csrf::check_anonymous(request, &form)?;
    let now = app.clock.now();
    let caregiver_for = portal_access::open_link(&app.pool.get(), link, now)?
        .and_then(|(inv, p)| inv.is_caregiver().then(|| p.full_name()));
    let registration = Registration {
        date_of_birth: form.get("date_of_birth"),
        pin: form.get("pin"),
        new_account: form.get("mode") != "existing",
        email: form.get("email"),
        password: form.get("password"),
        password_again: form.get("password_again"),
    };
    let outcome = portal_access::register(&app.pool, link, &registration, &client(request), now)?;
    match outcome {
        Registered::Done {
            account_id,
            patient_id,
        } => {
            let token = sessions::create(
                &app.pool.get(),
                Audience::Portal,
                account_id,
                Some(patient_id),
                now,
            )?;
            Ok(session::set_cookie(
                Response::redirect_303("/portal"),
                app,
                Audience::Portal,
                &token,
            ))
        }
        Registered::LinkDead => Ok(expired(app)),
        Registered::Invalid(errors) => {
            // The existing-account password error belongs to the password field.
            let mut shown = FieldErrors::default();
            for (field, message) in errors.iter() {
                shown.add(
                    if field == "existing_password" {
                        "password"
                    } else {
                        field
                    },
                    message,
                );
            }
            Ok(render(
                app,
                link,
                form.get(csrf::FIELD),
                caregiver_for.as_deref(),
                &form,
                &shown,
            )
            .with_status_code(400))
        }
    }
}

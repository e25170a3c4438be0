//! Administration (administrators only): staff users and practice settings.

use crate::audit::{self, Actor};
use crate::db::accounts::{self, Staff};
use crate::db::practice::{self, Practice};
use crate::error::{AppError, AppResult, FieldErrors};
use crate::staff::{self, StaffForm};
use crate::web::form::{self, Form};
use crate::web::routes::Params;
use crate::web::session::{self, StaffCaller};
use crate::web::views::layout::{page, Context};
use crate::web::views::{self, action_button, checkbox, csrf_field, error_summary, Field};
use crate::web::{client, csrf, html, notice_text, App};
use maud::html;
use rouille::{Request, Response};

fn level_options() -> Vec<(String, String)> {
    (1u8..=4)
        .map(|n| (n.to_string(), super::access_level_label(n).to_owned()))
        .collect()
}

pub fn users(app: &App, request: &Request, _: &Params) -> AppResult<Response> {
    let caller = session::administrator(app, request)?;
    let list = accounts::list_staff(&app.pool.get())?;
    let ctx = Context::practice(app, &caller);
    Ok(html(page(
        &ctx,
        "Users",
        html! {
            h1 { "Users" }
            (views::notice(notice_text(request)))
            p { a.button href="/practice/admin/users/new" { "Add a user" } }
            table.list {
                thead { tr { th { "Name" } th { "Email" } th { "Access" } th { "Status" } } }
                tbody {
                    @for s in &list {
                        tr {
                            td { a href={ "/practice/admin/users/" (s.id) } { (s.name) } @if !s.degree.is_empty() { ", " (s.degree) } }
                            td { (s.email) }
                            td { (super::access_level_label(s.access_level)) @if s.is_admin { br; "Administrator" } }
                            td { @if s.active { "Active" } @else { "Deactivated" } }
                        }
                    }
                }
            }
        },
    )))
}

fn user_form_page(
    app: &App,
    caller: &StaffCaller,
    target: Option<&Staff>,
    form: &Form,
    errors: &FieldErrors,
    notice: Option<&str>,
) -> Response {
    let ctx = Context::practice(app, caller);
    let title = if target.is_some() {
        "Edit user"
    } else {
        "Add a user"
    };
    let action = target.map_or("/practice/admin/users/new".to_owned(), |t| {
        format!("/practice/admin/users/{}", t.id)
    });
    let csrf_token = &caller.session.csrf_token;
    html(page(
        &ctx,
        title,
        html! {
            h1 { (title) }
            (views::notice(notice))
            (error_summary(errors))
            form.stacked method="post" action=(action) novalidate {
                (csrf_field(csrf_token))
                (Field::new("name", "Name").value(form.get("name")).autocomplete("off").render(errors))
                (Field::new("email", "Sign-in email").kind("email").value(form.get("email")).render(errors))
                (Field::new("degree", "Degree or title").value(form.get("degree")).hint("For example MD, DO, NP, PA, RN, MA.").render(errors))
                (views::select("access_level", "Access level", &level_options(), form.get("access_level"), errors))
                (checkbox("is_admin", "Administrator", form.get("is_admin") == "on", "Manages users, practice settings and portal access. It does not widen what clinical data the user sees.", errors))
                (checkbox("may_invite", "May invite patients", form.get("may_invite") == "on", "Matters only when practice settings restrict who may invite.", errors))
                button type="submit" { @if target.is_some() { "Save" } @else { "Add the user" } }
            }
            @if let Some(t) = target {
                section.panel {
                    h2 { "Account" }
                    p { "Status: " strong { @if t.active { "Active" } @else { "Deactivated" } } }
                    div.actions {
                        (action_button(&format!("/practice/admin/users/{}/password-link", t.id), csrf_token, "Email a password link", "secondary"))
                        @if t.active {
                            (action_button(&format!("/practice/admin/users/{}/deactivate", t.id), csrf_token, "Deactivate", "danger"))
                        } @else {
                            (action_button(&format!("/practice/admin/users/{}/reactivate", t.id), csrf_token, "Reactivate", "secondary"))
                        }
                    }
                }
            }
        },
    ))
}

fn form_of(s: &Staff) -> Form {
    let mut fields = vec![
        ("name", s.name.clone()),
        ("email", s.email.clone()),
        ("degree", s.degree.clone()),
        ("access_level", s.access_level.to_string()),
    ];
    if s.is_admin {
        fields.push(("is_admin", "on".into()));
    }
    if s.may_invite {
        fields.push(("may_invite", "on".into()));
    }
    Form::from_pairs(fields)
}

fn staff_form(form: &Form) -> StaffForm<'_> {
    StaffForm {
        email: form.get("email"),
        name: form.get("name"),
        degree: form.get("degree"),
        access_level: form.trimmed("access_level").parse().unwrap_or(0),
        is_admin: form.get("is_admin") == "on",
        may_invite: form.get("may_invite") == "on",
    }
}

pub fn new_user_form(app: &App, request: &Request, _: &Params) -> AppResult<Response> {
    let caller = session::administrator(app, request)?;
    let defaults = Form::from_pairs(vec![("access_level", "1".into())]);
    Ok(user_form_page(
        app,
        &caller,
        None,
        &defaults,
        &FieldErrors::default(),
        None,
    ))
}

pub fn create_user(app: &App, request: &Request, _: &Params) -> AppResult<Response> {
    let caller = session::administrator(app, request)?;
    let form = form::read(app, request)?;
    csrf::check(&form, &caller.session.csrf_token)?;
    let practice = app.practice()?;
    let actor = Actor::staff(caller.staff.id, &client(request));
    let result = staff::create_user(
        &mut app.pool.get(),
        &practice,
        &actor,
        &staff_form(&form),
        app.config.public_base(),
        app.clock.now(),
    )?;
    match result {
        Ok(id) => Ok(Response::redirect_303(format!(
            "/practice/admin/users/{id}?notice=link_sent"
        ))),
        Err(errors) => {
            Ok(user_form_page(app, &caller, None, &form, &errors, None).with_status_code(400))
        }
    }
}

fn target(app: &App, params: &Params) -> AppResult<Staff> {
    accounts::staff_by_id(&app.pool.get(), params.id(0)?)?.ok_or(AppError::NotFound)
}

pub fn edit_user_form(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    let caller = session::administrator(app, request)?;
    let t = target(app, params)?;
    Ok(user_form_page(
        app,
        &caller,
        Some(&t),
        &form_of(&t),
        &FieldErrors::default(),
        notice_text(request),
    ))
}

pub fn update_user(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    let caller = session::administrator(app, request)?;
    let t = target(app, params)?;
    let form = form::read(app, request)?;
    csrf::check(&form, &caller.session.csrf_token)?;
    let actor = Actor::staff(caller.staff.id, &client(request));
    // Bound first, so the connection is back before an error page is drawn (see `forward`).
    let updated = staff::update_user(
        &mut app.pool.get(),
        &actor,
        t.id,
        &staff_form(&form),
        app.clock.now(),
    )?;
    match updated {
        Ok(()) => Ok(Response::redirect_303(format!(
            "/practice/admin/users/{}?notice=saved",
            t.id
        ))),
        Err(errors) => {
            Ok(user_form_page(app, &caller, Some(&t), &form, &errors, None).with_status_code(400))
        }
    }
}

fn set_active(app: &App, request: &Request, params: &Params, active: bool) -> AppResult<Response> {
    let caller = session::administrator(app, request)?;
    let t = target(app, params)?;
    let form = form::read(app, request)?;
    csrf::check(&form, &caller.session.csrf_token)?;
    let actor = Actor::staff(caller.staff.id, &client(request));
    let changed = staff::set_active(&mut app.pool.get(), &actor, t.id, active, app.clock.now())?;
    match changed {
        Ok(()) => {
            let notice = if active { "reactivated" } else { "deactivated" };
            Ok(Response::redirect_303(format!(
                "/practice/admin/users/{}?notice={notice}",
                t.id
            )))
        }
        Err(message) => {
            let mut errors = FieldErrors::default();
            errors.add("is_admin", message);
            Ok(
                user_form_page(app, &caller, Some(&t), &form_of(&t), &errors, None)
                    .with_status_code(400),
            )
        }
    }
}

pub fn deactivate_user(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    set_active(app, request, params, false)
}

pub fn reactivate_user(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    set_active(app, request, params, true)
}

pub fn send_password_link(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    let caller = session::administrator(app, request)?;
    let t = target(app, params)?;
    let form = form::read(app, request)?;
    csrf::check(&form, &caller.session.csrf_token)?;
    let practice = app.practice()?;
    let actor = Actor::staff(caller.staff.id, &client(request));
    staff::send_password_link(
        &mut app.pool.get(),
        &practice,
        &actor,
        t.id,
        app.config.public_base(),
        app.clock.now(),
    )?;
    Ok(Response::redirect_303(format!(
        "/practice/admin/users/{}?notice=link_sent",
        t.id
    )))
}

fn settings_page(
    app: &App,
    caller: &StaffCaller,
    p: &Practice,
    errors: &FieldErrors,
    notice: Option<&str>,
) -> Response {
    let ctx = Context::practice(app, caller);
    let policy = if p.invite_chosen_only {
        "chosen"
    } else {
        "everyone"
    };
    let policies = vec![
        ("everyone".to_owned(), "Every staff user".to_owned()),
        (
            "chosen".to_owned(),
            "Administrators and the users marked \"May invite patients\"".to_owned(),
        ),
    ];
    html(page(
        &ctx,
        "Practice settings",
        html! {
            h1 { "Practice settings" }
            (views::notice(notice))
            (error_summary(errors))
            form.stacked method="post" action="/practice/admin/settings" novalidate {
                (csrf_field(&caller.session.csrf_token))
                (Field::new("name", "Practice name").value(&p.name).autocomplete("organization").render(errors))
                (Field::new("phone", "Contact phone").kind("tel").value(&p.phone).autocomplete("tel").hint("Shown to patients so they can call the office.").render(errors))
                (checkbox("messaging_enabled", "Patient messaging", p.messaging_enabled, "Enrolled patients and their caregivers can write to the practice's NPs, PAs and physicians.", errors))
                (checkbox("auto_chart", "Add messages about patients to the chart automatically", p.auto_chart, "Staff can still choose otherwise for each message.", errors))
                (checkbox("archive_for_everyone", "Archiving a shared thread archives it for everyone", p.archive_for_everyone, "", errors))
                (views::select("invite_policy", "Who may invite patients to the portal", &policies, policy, errors))
                (checkbox("auto_invite", "Invite patients automatically", p.auto_invite, "Patients aged 18 to 85 with an email address on file are invited when their record is saved.", errors))
                button type="submit" { "Save settings" }
            }
        },
    ))
}

pub fn settings(app: &App, request: &Request, _: &Params) -> AppResult<Response> {
    let caller = session::administrator(app, request)?;
    let p = app.practice()?;
    Ok(settings_page(
        app,
        &caller,
        &p,
        &FieldErrors::default(),
        notice_text(request),
    ))
}

pub fn save_settings(app: &App, request: &Request, _: &Params) -> AppResult<Response> {
    let caller = session::administrator(app, request)?;
    let form = form::read(app, request)?;
    csrf::check(&form, &caller.session.csrf_token)?;
    let before = app.practice()?;
    let after = Practice {
        name: form.trimmed("name").to_owned(),
        phone: form.trimmed("phone").to_owned(),
        messaging_enabled: form.get("messaging_enabled") == "on",
        auto_chart: form.get("auto_chart") == "on",
        archive_for_everyone: form.get("archive_for_everyone") == "on",
        invite_chosen_only: form.get("invite_policy") == "chosen",
        auto_invite: form.get("auto_invite") == "on",
        is_demo: before.is_demo,
    };
    let mut errors = FieldErrors::default();
    if after.name.is_empty() {
        errors.add("name", "Enter the practice's name.");
    } else if after.name.chars().count() > 200 {
        errors.add("name", "Use at most 200 characters.");
    }
    if after.phone.chars().count() > 40 {
        errors.add("phone", "Use at most 40 characters.");
    }
    if !errors.is_empty() {
        return Ok(settings_page(app, &caller, &after, &errors, None).with_status_code(400));
    }
    let now = app.clock.now();
    let actor = Actor::staff(caller.staff.id, &client(request));
    let conn = app.pool.get();
    let tx = crate::db::begin_write(&conn)?;
    practice::update(&tx, &after)?;
    // Every change is recorded with who made it.
    let changes = [
        ("practice name", before.name != after.name),
        ("contact phone", before.phone != after.phone),
        (
            "patient messaging",
            before.messaging_enabled != after.messaging_enabled,
        ),
        ("auto chart", before.auto_chart != after.auto_chart),
        (
            "archive for everyone",
            before.archive_for_everyone != after.archive_for_everyone,
        ),
        (
            "invite policy",
            before.invite_chosen_only != after.invite_chosen_only,
        ),
        ("auto invite", before.auto_invite != after.auto_invite),
    ];
    for (setting, changed) in changes {
        if changed {
            audit::record(&tx, &actor, "setting.change", None, setting, now)?;
        }
    }
    let committed = tx.commit();
    // Forgotten even when the commit reports an error: a failed flush comes after COMMIT, so
    // the new settings may be in force all the same.
    app.practice_memo.forget();
    committed?;
    Ok(Response::redirect_303(
        "/practice/admin/settings?notice=saved",
    ))
}

/// The outbox, newest first: every email's kind, recipient, state, attempts and last error.
pub fn outbox(app: &App, request: &Request, _: &Params) -> AppResult<Response> {
    let caller = session::administrator(app, request)?;
    let page_number: u32 = request
        .get_param("page")
        .and_then(|p| p.parse().ok())
        .filter(|p| (1..=100_000).contains(p))
        .unwrap_or(1);
    let (rows, more) = crate::db::outbox::page(&app.pool.get(), page_number, 50)?;
    let no_server = app.config.smtp_host.trim().is_empty();
    let ctx = Context::practice(app, &caller);
    Ok(html(page(
        &ctx,
        "Outbox",
        html! {
            h1 { "Outbox" }
            (views::notice(notice_text(request)))
            @if no_server {
                p.notice { "No mail server is configured, so emails are not sent: they wait here and go out once smtp.host is set." }
            }
            table.list {
                thead { tr { th { "Queued" } th { "Kind" } th { "To" } th { "State" } th { "Attempts" } th { "Last answer" } } }
                tbody {
                    @for row in &rows {
                        tr {
                            td data-label="Queued" { (crate::dates::format_local(row.created_at)) }
                            td data-label="Kind" { (row.kind.replace('_', " ")) }
                            td data-label="To" { (row.recipient) }
                            td data-label="State" {
                                @if row.state == "queued" && no_server { "Not sent: no mail server configured" }
                                @else { (row.state) }
                                @if row.state == "failed" {
                                    " " (action_button(&format!("/practice/admin/outbox/{}/retry", row.id), &caller.session.csrf_token, "Retry", "secondary small"))
                                }
                            }
                            td data-label="Attempts" { (row.attempts) }
                            td data-label="Last answer" { @if !row.last_error.is_empty() { (row.last_error) } @else { (row.server_reply) } }
                        }
                    }
                }
            }
            nav.pager aria-label="Pages" {
                @if page_number > 1 { a href={ "/practice/admin/outbox?page=" (page_number - 1) } rel="prev" { "Newer" } }
                @if more { a href={ "/practice/admin/outbox?page=" (page_number + 1) } rel="next" { "Older" } }
            }
        },
    )))
}

pub fn retry_email(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    let caller = session::administrator(app, request)?;
    let form = form::read(app, request)?;
    csrf::check(&form, &caller.session.csrf_token)?;
    let id = params.id(0)?;
    let now = app.clock.now();
    let conn = app.pool.get();
    let tx = crate::db::begin_write(&conn)?;
    if !crate::db::outbox::retry(&tx, id, now)? {
        return Err(AppError::NotFound);
    }
    audit::record(
        &tx,
        &Actor::staff(caller.staff.id, &client(request)),
        "outbox.retry",
        None,
        &format!("email {id}"),
        now,
    )?;
    tx.commit()?;
    Ok(Response::redirect_303(
        "/practice/admin/outbox?notice=retrying",
    ))
}

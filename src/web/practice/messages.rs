//! Messages in the practice view: the inbox, threads, replies, forwarding, archiving, filing to
//! the chart, and new messages to enrolled patients.

use super::patients::status_badge;
use crate::dates::format_local;
use crate::db::accounts;
use crate::db::messages::{self as store, StaffBox};
use crate::db::patients::{self, PortalStatus};
use crate::error::{AppError, AppResult, FieldErrors};
use crate::messaging::{self, Sent};
use crate::web::form::{self, Form};
use crate::web::routes::Params;
use crate::web::session::{self, StaffCaller};
use crate::web::upload::MessageForm;
use crate::web::views::layout::{page, Context};
use crate::web::views::messages::{
    conversation, file_field, key_for, message_fields, summary, FileLinks,
};
use crate::web::views::{self, action_button, checkbox, csrf_field};
use crate::web::{client, csrf, html, notice_text, App};
use maud::html;
use rouille::{Request, Response};

const PER_PAGE: u32 = 25;

fn page_param(request: &Request) -> u32 {
    request
        .get_param("page")
        .and_then(|p| p.parse().ok())
        .filter(|p| (1..=100_000).contains(p))
        .unwrap_or(1)
}

pub fn inbox(app: &App, request: &Request, _: &Params) -> AppResult<Response> {
    let caller = session::staff(app, request)?;
    let (which, name, label) = match request.get_param("box").as_deref() {
        Some("archived") => (StaffBox::Archived, "archived", "Archived"),
        Some("sent") => (StaffBox::Sent, "sent", "Sent"),
        _ => (StaffBox::Inbox, "inbox", "Inbox"),
    };
    let page_number = page_param(request);
    let (rows, more) = store::staff_box(
        &app.pool.get(),
        caller.staff.id,
        which,
        page_number,
        PER_PAGE,
    )?;
    let ctx = Context::practice(app, &caller);
    Ok(html(page(
        &ctx,
        &format!("Messages – {label}"),
        html! {
            h1 { "Messages" }
            (views::notice(notice_text(request)))
            ul.tabs {
                @for (b, l) in [("inbox", "Inbox"), ("archived", "Archived"), ("sent", "Sent")] {
                    li { a href={ "/practice/messages?box=" (b) } aria-current=[(b == name).then_some("page")] { (l) } }
                }
            }
            p { a.button href="/practice/messages/new" { "New message to a patient" } }
            @if rows.is_empty() {
                p { "Nothing here." }
            } @else {
                table.list {
                    caption.visually-hidden { (label) ", newest activity first" }
                    thead { tr { th { "Patient" } th { "Subject" } th { "Last activity" } th { "Messages" } } }
                    tbody {
                        @for row in &rows {
                            tr.unread[row.unread] {
                                td { strong { (row.patient_name) } br; "Born " (row.patient_dob) }
                                td {
                                    a href={ "/practice/messages/" (row.thread_id) } { (row.subject) }
                                    @if row.unread { " " span.count { "Unread" } }
                                }
                                td data-label="Last activity" { (format_local(row.last_activity_at)) }
                                td data-label="Messages" { (row.visible_count) }
                            }
                        }
                    }
                }
            }
            nav.pager aria-label="Pages" {
                @if page_number > 1 { a href={ "/practice/messages?box=" (name) "&page=" (page_number - 1) } rel="prev" { "Newer" } }
                @if more { a href={ "/practice/messages?box=" (name) "&page=" (page_number + 1) } rel="next" { "Older" } }
            }
        },
    )))
}

fn thread_page(
    app: &App,
    request: &Request,
    caller: &StaffCaller,
    id: i64,
    form: &Form,
    errors: &FieldErrors,
    status: u16,
) -> AppResult<Response> {
    let now = app.clock.now();
    let practice = app.practice()?;
    let (thread, shown) =
        messaging::staff_reads(&app.pool, &caller.staff, id, &client(request), now)?;
    let (patient, on_thread, colleagues, unread) = {
        let conn = app.pool.get();
        (
            patients::get(&conn, thread.patient_id, now)?.ok_or(AppError::NotFound)?,
            store::staff_on_thread(&conn, thread.id)?,
            accounts::colleagues(&conn, caller.staff.id)?,
            // Read after opening the thread made it read for the caller.
            store::unread_count(&conn, caller.staff.id)?,
        )
    };
    let archived = on_thread
        .iter()
        .any(|(id, _, archived)| *id == caller.staff.id && *archived);
    let csrf_token = &caller.session.csrf_token;
    let base = format!("/practice/messages/{}", thread.id);
    let chart_default = if form.get("key").is_empty() {
        practice.auto_chart
    } else {
        form.get("chart") == "on"
    };
    let ctx = Context::practice_with(app, caller, unread);
    Ok(html(page(
        &ctx,
        &format!("Message: {}", thread.subject),
        html! {
            p { a href="/practice/messages" { "← Inbox" } }
            h1 { (thread.subject) }
            (views::notice(notice_text(request)))
            dl.facts {
                dt { "Patient" } dd { a href={ "/practice/patients/" (patient.id) } { (patient.full_name()) } ", born " (patient.date_of_birth) }
                dt { "Portal" } dd {
                    (status_badge(patient.status))
                    @if patient.reachable && patient.status != PortalStatus::Enrolled { " A caregiver has access and reads replies." }
                }
                dt { "With" } dd { (on_thread.iter().map(|(_, n, _)| n.as_str()).collect::<Vec<_>>().join(", ")) }
            }
            div.actions {
                (action_button(&format!("{base}/unread"), csrf_token, "Mark unread", "secondary small"))
                @if archived {
                    (action_button(&format!("{base}/unarchive"), csrf_token, "Move to inbox", "secondary small"))
                } @else {
                    (action_button(&format!("{base}/archive"), csrf_token, "Archive", "secondary small"))
                }
                (action_button(&format!("{base}/chart"), csrf_token, "Add to chart", "secondary small"))
            }
            (conversation(&shown, &patient.full_name(), &FileLinks { base: format!("{base}/files"), staff_csrf: Some(csrf_token) }))
            @if !patient.reachable {
                p.notice { "Nobody has active portal access to this record, so replies cannot be read now." }
            }
            h2 #latest { "Reply" }
            (summary(errors))
            form.stacked method="post" action={ (base) "/reply" } enctype="multipart/form-data" novalidate {
                (csrf_field(csrf_token))
                (message_fields(form, errors, false, &key_for(form)))
                (checkbox("chart", "Add this message to the patient's chart", chart_default, "", errors))
                (file_field(errors))
                button type="submit" { "Send reply" }
            }
            h2 { "Forward to a colleague" }
            form.stacked method="post" action={ (base) "/forward" } novalidate {
                (csrf_field(csrf_token))
                (views::select("to", "Colleague", &colleagues.iter()
                    .map(|(id, name, level)| (id.to_string(), format!("{name} ({})", super::access_level_label(*level)))).collect::<Vec<_>>(), form.get("to"), errors))
                div.field {
                    label for="note" { "Internal note (the patient never sees it)" }
                    textarea #note name="note" rows="3" { (form.get("note")) }
                }
                (checkbox("move", "Remove it from my inbox", form.get("move") == "on", "", errors))
                button.secondary type="submit" { "Forward" }
            }
        },
    ))
    .with_status_code(status))
}

pub fn thread(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    let caller = session::staff(app, request)?;
    thread_page(
        app,
        request,
        &caller,
        params.id(0)?,
        &Form::default(),
        &FieldErrors::default(),
        200,
    )
}

fn signed_form(app: &App, request: &Request) -> AppResult<(StaffCaller, Form)> {
    let caller = session::staff(app, request)?;
    let form = form::read(app, request)?;
    csrf::check(&form, &caller.session.csrf_token)?;
    Ok((caller, form))
}

pub fn reply(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    let caller = session::staff(app, request)?;
    let upload = MessageForm::read_signed(app, request, &caller.session.csrf_token)?;
    let form = &upload.form;
    let id = params.id(0)?;
    if let Some((errors, status)) = upload.refusal() {
        return thread_page(app, request, &caller, id, form, &errors, status);
    }
    let sent = messaging::staff_replies(
        &app.pool,
        &caller.staff,
        id,
        &upload.draft(app, false),
        form.get("chart") == "on",
        form.get("key"),
        &client(request),
        app.clock.now(),
    )?;
    match sent {
        Sent::Thread(id) => Ok(Response::redirect_303(format!(
            "/practice/messages/{id}#latest"
        ))),
        Sent::Invalid(errors) => thread_page(
            app,
            request,
            &caller,
            id,
            form,
            &upload.explain(errors),
            400,
        ),
    }
}

pub fn mark_unread(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    let (caller, _) = signed_form(app, request)?;
    messaging::mark_unread(
        &mut app.pool.get(),
        &caller.staff,
        params.id(0)?,
        &client(request),
        app.clock.now(),
    )?;
    Ok(Response::redirect_303("/practice/messages"))
}

fn set_archived(
    app: &App,
    request: &Request,
    params: &Params,
    archived: bool,
) -> AppResult<Response> {
    let (caller, _) = signed_form(app, request)?;
    let practice = app.practice()?;
    let id = params.id(0)?;
    messaging::archive(
        &mut app.pool.get(),
        &practice,
        &caller.staff,
        id,
        archived,
        &client(request),
        app.clock.now(),
    )?;
    Ok(Response::redirect_303(if archived {
        "/practice/messages".to_owned()
    } else {
        format!("/practice/messages/{id}")
    }))
}

pub fn archive(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    set_archived(app, request, params, true)
}

pub fn unarchive(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    set_archived(app, request, params, false)
}

pub fn forward(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    let (caller, form) = signed_form(app, request)?;
    let id = params.id(0)?;
    // Bound first: in the `match` itself the connection would be held while the error page
    // is drawn, which takes connections of its own (see `tests/messaging.rs`, one worker).
    let forwarded = messaging::forward(
        &mut app.pool.get(),
        &caller.staff,
        id,
        form.get("to"),
        form.get("note"),
        form.get("move") == "on",
        &client(request),
        app.clock.now(),
    )?;
    match forwarded {
        Ok(()) => Ok(Response::redirect_303(format!(
            "/practice/messages/{id}?notice=forwarded"
        ))),
        Err(errors) => thread_page(app, request, &caller, id, &form, &errors, 400),
    }
}

pub fn chart(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    let (caller, _) = signed_form(app, request)?;
    let id = params.id(0)?;
    messaging::add_to_chart(
        &mut app.pool.get(),
        &caller.staff,
        id,
        &client(request),
        app.clock.now(),
    )?;
    Ok(Response::redirect_303(format!(
        "/practice/messages/{id}?notice=charted"
    )))
}

/// New message: first find an enrolled patient, then write.
pub fn compose(app: &App, request: &Request, _: &Params) -> AppResult<Response> {
    let caller = session::staff(app, request)?;
    match request
        .get_param("patient")
        .and_then(|p| p.parse::<i64>().ok())
    {
        Some(patient_id) => compose_page(
            app,
            &caller,
            patient_id,
            &Form::default(),
            &FieldErrors::default(),
            200,
        ),
        None => patient_picker(app, request, &caller),
    }
}

fn patient_picker(app: &App, request: &Request, caller: &StaffCaller) -> AppResult<Response> {
    let query = request.get_param("q").unwrap_or_default();
    let found = if query.trim().is_empty() {
        Vec::new()
    } else {
        patients::search(&app.pool.get(), &query, 1, 25, app.clock.now())?.0
    };
    let ctx = Context::practice(app, caller);
    Ok(html(page(
        &ctx,
        "New message",
        html! {
            h1 { "New message to a patient" }
            form.search method="get" action="/practice/messages/new" role="search" {
                div.field {
                    label for="q" { "Find the patient by name or date of birth (MM/DD/YYYY)" }
                    input #q type="search" name="q" value=(query);
                }
                button type="submit" { "Find" }
            }
            @if !query.trim().is_empty() {
                @if found.is_empty() { p { "No patients match." } } @else {
                    table.list {
                        thead { tr { th { "Patient" } th { "Date of birth" } th { "Portal" } } }
                        tbody {
                            @for p in &found {
                                tr {
                                    td {
                                        @if p.reachable {
                                            a href={ "/practice/messages/new?patient=" (p.id) } { "Write to " (p.full_name()) }
                                        } @else { (p.full_name()) }
                                    }
                                    td { (p.date_of_birth) }
                                    td { (status_badge(p.status)) @if !p.reachable { " – nobody has portal access to read messages" } }
                                }
                            }
                        }
                    }
                }
            }
        },
    )))
}

fn compose_page(
    app: &App,
    caller: &StaffCaller,
    patient_id: i64,
    form: &Form,
    errors: &FieldErrors,
    status: u16,
) -> AppResult<Response> {
    let patient =
        patients::get(&app.pool.get(), patient_id, app.clock.now())?.ok_or(AppError::NotFound)?;
    let practice = app.practice()?;
    let chart_default = if form.get("key").is_empty() {
        practice.auto_chart
    } else {
        form.get("chart") == "on"
    };
    let ctx = Context::practice(app, caller);
    Ok(html(page(
        &ctx,
        "New message",
        html! {
            h1 { "New message to " (patient.full_name()) }
            p { "Born " (patient.date_of_birth) ". Portal: " (status_badge(patient.status)) }
            p.hint { "The patient (and any caregiver with access) gets one email saying a message is waiting. The email never contains the message." }
            (summary(errors))
            @if let Some(problem) = errors.get("patient") { p.field-error { (problem) } }
            form.stacked method="post" action="/practice/messages/new" enctype="multipart/form-data" novalidate {
                (csrf_field(&caller.session.csrf_token))
                input type="hidden" name="patient" value=(patient.id);
                (message_fields(form, errors, true, &key_for(form)))
                (checkbox("chart", "Add this message to the patient's chart", chart_default, "", errors))
                (file_field(errors))
                button type="submit" { "Send" }
            }
        },
    ))
    .with_status_code(status))
}

pub fn send(app: &App, request: &Request, _: &Params) -> AppResult<Response> {
    let caller = session::staff(app, request)?;
    let upload = MessageForm::read_signed(app, request, &caller.session.csrf_token)?;
    let form = &upload.form;
    let patient_id: i64 = form
        .trimmed("patient")
        .parse()
        .map_err(|_| AppError::NotFound)?;
    if let Some((errors, status)) = upload.refusal() {
        return compose_page(app, &caller, patient_id, form, &errors, status);
    }
    let practice = app.practice()?;
    let sent = messaging::staff_starts(
        &app.pool,
        &practice,
        &caller.staff,
        patient_id,
        &upload.draft(app, true),
        form.get("chart") == "on",
        form.get("key"),
        app.config.public_base(),
        &client(request),
        app.clock.now(),
    )?;
    match sent {
        Sent::Thread(id) => Ok(Response::redirect_303(format!("/practice/messages/{id}"))),
        Sent::Invalid(errors) => {
            compose_page(app, &caller, patient_id, form, &upload.explain(errors), 400)
        }
    }
}

pub fn download(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    let caller = session::staff(app, request)?;
    let attachment = messaging::attachment_for_staff(
        &app.pool.get(),
        &caller.staff,
        params.id(0)?,
        params.id(1)?,
        &client(request),
        app.clock.now(),
    )?;
    crate::web::download::serve(app, request, &attachment)
}

pub fn file_attachment(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    let (caller, form) = signed_form(app, request)?;
    let id = params.id(0)?;
    messaging::file_attachment(
        &mut app.pool.get(),
        &caller.staff,
        id,
        params.id(1)?,
        form.get("category"),
        &client(request),
        app.clock.now(),
    )?;
    Ok(Response::redirect_303(format!(
        "/practice/messages/{id}?notice=charted"
    )))
}

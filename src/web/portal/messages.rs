//! The portal's Messages section: only when the practice has enabled messaging and the account
//! acts for an enrolled patient or as an active caregiver; otherwise every address is 404.

use crate::dates::format_local;
use crate::db::accounts;
use crate::db::messages as store;
use crate::db::practice::Practice;
use crate::error::{AppError, AppResult, FieldErrors};
use crate::messaging::{self, PortalCaller, Sent};
use crate::web::form::Form;
use crate::web::routes::Params;
use crate::web::session::{self, PortalCaller as Session};
use crate::web::upload::MessageForm;
use crate::web::views::csrf_field;
use crate::web::views::layout::{page, Context};
use crate::web::views::messages::{
    conversation, disclaimer, file_field, key_for, message_fields, summary, FileLinks,
};
use crate::web::{client, html, App};
use maud::html;
use rouille::{Request, Response};

const PER_PAGE: u32 = 20;

struct Caller {
    session: Session,
    sender: PortalCaller,
    patient_name: String,
    practice: Practice,
}

fn caller(app: &App, request: &Request) -> AppResult<Caller> {
    let session = session::portal_user(app, request)?;
    let practice = app.practice()?;
    let Some(acting) = session.acting.clone() else {
        return Err(AppError::AccessEnded);
    };
    if !practice.messaging_enabled {
        return Err(AppError::NotFound);
    }
    Ok(Caller {
        sender: PortalCaller {
            account_id: session.account.id,
            patient_id: acting.patient_id,
            caregiver: acting.is_caregiver(),
        },
        patient_name: acting.patient_name,
        session,
        practice,
    })
}

pub fn mailbox(app: &App, request: &Request, _: &Params) -> AppResult<Response> {
    let c = caller(app, request)?;
    let page_number: u32 = request
        .get_param("page")
        .and_then(|p| p.parse().ok())
        .filter(|p| (1..=100_000).contains(p))
        .unwrap_or(1);
    let (rows, more) = store::mailbox(
        &app.pool.get(),
        c.sender.patient_id,
        c.sender.account_id,
        page_number,
        PER_PAGE,
    )?;
    let ctx = Context::portal(app, &c.session);
    Ok(html(page(
        &ctx,
        "Messages",
        html! {
            h1 { "Messages" }
            (disclaimer())
            p { a.button href="/portal/messages/new" { "New message" } }
            @if rows.is_empty() {
                p { "No messages yet. Messages you send and receive appear here, newest first." }
            } @else {
                table.list {
                    caption.visually-hidden { "Your conversations with " (c.practice.name) ", newest first" }
                    thead { tr { th { "Subject" } th { "With" } th { "Last message" } th { "Messages" } } }
                    tbody {
                        @for row in &rows {
                            tr.unread[row.unread] {
                                td {
                                    a href={ "/portal/messages/" (row.thread.id) } { (row.thread.subject) }
                                    @if row.unread { " " span.count { "New" } }
                                }
                                td data-label="With" { (row.thread.with()) }
                                td data-label="Last message" { (format_local(row.thread.last_visible_at)) }
                                td data-label="Messages" { (row.thread.visible_count) }
                            }
                        }
                    }
                }
            }
            nav.pager aria-label="Pages" {
                @if page_number > 1 { a href={ "/portal/messages?page=" (page_number - 1) } rel="prev" { "Newer messages" } }
                @if more { a href={ "/portal/messages?page=" (page_number + 1) } rel="next" { "Older messages" } }
            }
        },
    )))
}

fn compose_page(app: &App, c: &Caller, form: &Form, errors: &FieldErrors) -> AppResult<Response> {
    let recipients = accounts::message_recipients(&app.pool.get())?;
    let ctx = Context::portal(app, &c.session);
    let chosen = form.get("recipient");
    let recipient_error = errors.get("recipient");
    Ok(html(page(
        &ctx,
        "New message",
        html! {
            h1 { "New message" }
            (disclaimer())
            (summary(errors))
            form.stacked method="post" action="/portal/messages/new" enctype="multipart/form-data" novalidate {
                (csrf_field(&c.session.session.csrf_token))
                div.field.has-error[recipient_error.is_some()] {
                    label for="recipient" { "To" }
                    @if let Some(message) = recipient_error { p.field-error id="recipient-error" { (message) } }
                    select #recipient name="recipient" aria-invalid=[recipient_error.map(|_| "true")]
                        aria-describedby=[recipient_error.map(|_| "recipient-error")] {
                        option value="" { "Choose who should receive it" }
                        @for s in &recipients {
                            option value=(s.id) selected[chosen == s.id.to_string()] {
                                (s.name) @if !s.degree.is_empty() { ", " (s.degree) }
                            }
                        }
                    }
                }
                (message_fields(form, errors, true, &key_for(form)))
                (file_field(errors))
                button type="submit" { "Send" }
            }
            @if c.sender.caregiver {
                p.hint { "You are writing as a caregiver on behalf of " (c.patient_name) "." }
            }
        },
    )))
}

pub fn compose(app: &App, request: &Request, _: &Params) -> AppResult<Response> {
    let c = caller(app, request)?;
    let mut form = Form::default();
    if let Some(to) = request.get_param("to") {
        form = Form::from_pairs(vec![("recipient", to)]);
    }
    compose_page(app, &c, &form, &FieldErrors::default())
}

pub fn send(app: &App, request: &Request, _: &Params) -> AppResult<Response> {
    let c = caller(app, request)?;
    let upload = MessageForm::read_signed(app, request, &c.session.session.csrf_token)?;
    let form = &upload.form;
    if let Some((errors, status)) = upload.refusal() {
        return Ok(compose_page(app, &c, form, &errors)?.with_status_code(status));
    }
    let sent = messaging::patient_starts(
        &app.pool,
        &c.practice,
        c.sender,
        form.get("recipient"),
        &upload.draft(app, true),
        form.get("key"),
        &client(request),
        app.clock.now(),
    )?;
    match sent {
        Sent::Thread(id) => Ok(Response::redirect_303(format!(
            "/portal/messages/{id}#latest"
        ))),
        Sent::Invalid(errors) => {
            Ok(compose_page(app, &c, form, &upload.explain(errors))?.with_status_code(400))
        }
    }
}

fn thread_page(
    app: &App,
    request: &Request,
    c: &Caller,
    id: i64,
    form: &Form,
    errors: &FieldErrors,
) -> AppResult<Response> {
    let (thread, shown) =
        messaging::patient_reads(&app.pool, c.sender, id, &client(request), app.clock.now())?;
    let ctx = Context::portal(app, &c.session);
    Ok(html(page(
        &ctx,
        &format!("Message: {}", thread.subject),
        html! {
            p { a href="/portal/messages" { "← All messages" } }
            h1 { (thread.subject) }
            p { "With " strong { (thread.with()) } " at " (c.practice.name) }
            (disclaimer())
            (conversation(&shown, &c.patient_name, &FileLinks { base: format!("/portal/messages/{}/files", thread.id), staff_csrf: None }))
            h2 #latest { "Reply" }
            (summary(errors))
            form.stacked method="post" action={ "/portal/messages/" (thread.id) "/reply" } enctype="multipart/form-data" novalidate {
                (csrf_field(&c.session.session.csrf_token))
                (message_fields(form, errors, false, &key_for(form)))
                (file_field(errors))
                button type="submit" { "Send reply" }
            }
        },
    )))
}

pub fn thread(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    let c = caller(app, request)?;
    thread_page(
        app,
        request,
        &c,
        params.id(0)?,
        &Form::default(),
        &FieldErrors::default(),
    )
}

pub fn reply(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    let c = caller(app, request)?;
    let id = params.id(0)?;
    let upload = MessageForm::read_signed(app, request, &c.session.session.csrf_token)?;
    let form = &upload.form;
    if let Some((errors, status)) = upload.refusal() {
        return Ok(thread_page(app, request, &c, id, form, &errors)?.with_status_code(status));
    }
    let sent = messaging::patient_replies(
        &app.pool,
        &c.practice,
        c.sender,
        id,
        &upload.draft(app, false),
        form.get("key"),
        &client(request),
        app.clock.now(),
    )?;
    match sent {
        Sent::Thread(id) => Ok(Response::redirect_303(format!(
            "/portal/messages/{id}#latest"
        ))),
        Sent::Invalid(errors) => {
            Ok(
                thread_page(app, request, &c, id, form, &upload.explain(errors))?
                    .with_status_code(400),
            )
        }
    }
}

pub fn download(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    let c = caller(app, request)?;
    let attachment = messaging::attachment_for_patient(
        &app.pool.get(),
        c.sender,
        params.id(0)?,
        params.id(1)?,
        &client(request),
        app.clock.now(),
    )?;
    crate::web::download::serve(app, request, &attachment)
}

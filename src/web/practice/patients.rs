//! Patients in the practice view: search, records, portal invitations, caregivers, revocation.

use crate::audit::{self, Actor};
use crate::dates::format_local;
use crate::db::accounts::{self, CaregiverAccess};
use crate::db::messages;
use crate::db::patients::{self, Invitation, Patient, PatientFields, PortalStatus};
use crate::db::practice::Practice;
use crate::error::{AppError, AppResult, FieldErrors};
use crate::patients::{self as patient_rules, Saved};
use crate::portal_access::{self, InviteRequest};
use crate::web::form::{self, Form};
use crate::web::routes::Params;
use crate::web::session::{self, StaffCaller};
use crate::web::views::layout::{page, Context};
use crate::web::views::{self, action_button, csrf_field, error_summary, Field};
use crate::web::{client, csrf, html, notice_text, App};
use maud::{html, Markup};
use rouille::{Request, Response};

const PER_PAGE: u32 = 25;

fn actor(caller: &StaffCaller, request: &Request) -> Actor {
    Actor::staff(caller.staff.id, &client(request))
}

pub fn status_badge(status: PortalStatus) -> Markup {
    let class = match status {
        PortalStatus::Enrolled => "enrolled",
        PortalStatus::Invited => "invited",
        PortalStatus::Revoked => "revoked",
        PortalStatus::NotInvited => "not-invited",
    };
    html! { span class={ "status " (class) } { (status.label()) } }
}

pub fn list(app: &App, request: &Request, _: &Params) -> AppResult<Response> {
    let caller = session::staff(app, request)?;
    let query = request.get_param("q").unwrap_or_default();
    let page_number: u32 = request
        .get_param("page")
        .and_then(|p| p.parse().ok())
        .filter(|p| (1..=100_000).contains(p))
        .unwrap_or(1);
    let now = app.clock.now();
    let (rows, more) = patients::search(&app.pool.get(), &query, page_number, PER_PAGE, now)?;
    let page_link = |n: u32| {
        let q: String = form_urlencoded::byte_serialize(query.as_bytes()).collect();
        format!("/practice/patients?q={q}&page={n}")
    };
    let ctx = Context::practice(app, &caller);
    Ok(html(page(
        &ctx,
        "Patients",
        html! {
            h1 { "Patients" }
            form.search method="get" action="/practice/patients" role="search" {
                div.field {
                    label for="q" { "Search by name, date of birth (MM/DD/YYYY) or email" }
                    input #q type="search" name="q" value=(query);
                }
                button type="submit" { "Search" }
            }
            p { a.button.secondary href="/practice/patients/new" { "Add a patient" } }
            @if rows.is_empty() {
                p { "No patients match." }
            } @else {
                table.list {
                    thead { tr { th { "Name" } th { "Date of birth" } th { "Email" } th { "Portal" } } }
                    tbody {
                        @for p in &rows {
                            tr {
                                td { a href={ "/practice/patients/" (p.id) } { (p.last_name) ", " (p.first_name) } }
                                td { (p.date_of_birth) }
                                td { (p.email) }
                                td { (status_badge(p.status)) }
                            }
                        }
                    }
                }
            }
            nav.pager aria-label="Pages" {
                @if page_number > 1 { a href=(page_link(page_number - 1)) rel="prev" { "Previous page" } }
                @if more { a href=(page_link(page_number + 1)) rel="next" { "Next page" } }
            }
        },
    )))
}

fn patient_form_page(
    app: &App,
    caller: &StaffCaller,
    id: Option<i64>,
    form: &Form,
    errors: &FieldErrors,
) -> Response {
    let ctx = Context::practice(app, caller);
    let title = if id.is_some() {
        "Edit patient"
    } else {
        "Add a patient"
    };
    let action = id.map_or("/practice/patients/new".to_owned(), |id| {
        format!("/practice/patients/{id}/edit")
    });
    html(page(
        &ctx,
        title,
        html! {
            h1 { (title) }
            (error_summary(errors))
            form.stacked method="post" action=(action) novalidate {
                (csrf_field(&caller.session.csrf_token))
                (Field::new("first_name", "First name").value(form.get("first_name")).render(errors))
                (Field::new("last_name", "Last name").value(form.get("last_name")).render(errors))
                (Field::new("date_of_birth", "Date of birth").value(form.get("date_of_birth")).hint("Month/day/year, for example 03/14/1984 (1984-03-14 works too).").render(errors))
                (Field::new("email", "Email (optional)").kind("email").value(form.get("email")).hint("Needed to invite the patient to the portal.").render(errors))
                (Field::new("phone", "Phone (optional)").kind("tel").value(form.get("phone")).render(errors))
                button type="submit" { "Save" }
            }
        },
    ))
}

fn fields(form: &Form) -> PatientFields<'_> {
    PatientFields {
        first_name: form.get("first_name"),
        last_name: form.get("last_name"),
        date_of_birth: form.get("date_of_birth"),
        email: form.get("email"),
        phone: form.get("phone"),
    }
}

pub fn new_form(app: &App, request: &Request, _: &Params) -> AppResult<Response> {
    let caller = session::staff(app, request)?;
    Ok(patient_form_page(
        app,
        &caller,
        None,
        &Form::default(),
        &FieldErrors::default(),
    ))
}

fn save(app: &App, request: &Request, id: Option<i64>) -> AppResult<Response> {
    let caller = session::staff(app, request)?;
    let form = form::read(app, request)?;
    csrf::check(&form, &caller.session.csrf_token)?;
    let practice = app.practice()?;
    let saved = patient_rules::save(
        &mut app.pool.get(),
        &practice,
        &actor(&caller, request),
        id,
        &fields(&form),
        app.config.public_base(),
        app.clock.now(),
    )?;
    match saved {
        Saved::Ok(id, Some(_pin)) => Ok(Response::redirect_303(format!(
            "/practice/patients/{id}?notice=invited"
        ))),
        Saved::Ok(id, None) => Ok(Response::redirect_303(format!(
            "/practice/patients/{id}?notice=saved"
        ))),
        Saved::Invalid(errors) => {
            Ok(patient_form_page(app, &caller, id, &form, &errors).with_status_code(400))
        }
    }
}

pub fn create(app: &App, request: &Request, _: &Params) -> AppResult<Response> {
    save(app, request, None)
}

fn load(app: &App, params: &Params) -> AppResult<Patient> {
    patients::get(&app.pool.get(), params.id(0)?, app.clock.now())?.ok_or(AppError::NotFound)
}

pub fn edit_form(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    let caller = session::staff(app, request)?;
    let p = load(app, params)?;
    let form = Form::from_pairs(vec![
        ("first_name", p.first_name.clone()),
        ("last_name", p.last_name.clone()),
        ("date_of_birth", p.date_of_birth.clone()),
        ("email", p.email.clone()),
        ("phone", p.phone.clone()),
    ]);
    Ok(patient_form_page(
        app,
        &caller,
        Some(p.id),
        &form,
        &FieldErrors::default(),
    ))
}

pub fn update(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    let id = params.id(0)?;
    save(app, request, Some(id))
}

fn invitation_row(caller: &StaffCaller, patient_id: i64, inv: &Invitation) -> Markup {
    html! {
        tr {
            td {
                @if inv.is_caregiver() { (inv.caregiver_name) " (" (inv.relationship) ")" } @else { "The patient" }
                br; (inv.email)
            }
            td { span.pin { (inv.pin) } }
            td { (crate::dates::Date::from_timestamp(inv.expires_at).to_string()) }
            td { (action_button(&format!("/practice/patients/{patient_id}/invitations/{}/cancel", inv.id), &caller.session.csrf_token, "Cancel invitation", "secondary small")) }
        }
    }
}

fn caregiver_row(caller: &StaffCaller, patient_id: i64, c: &CaregiverAccess) -> Markup {
    html! {
        tr {
            td { (c.name) } td { (c.relationship) } td { (c.email) }
            td {
                @if c.active {
                    "Active " (action_button(&format!("/practice/patients/{patient_id}/caregivers/{}/revoke", c.access_id), &caller.session.csrf_token, "Revoke", "danger small"))
                } @else { "Revoked" }
            }
        }
    }
}

pub fn show(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    let caller = session::staff(app, request)?;
    let p = load(app, params)?;
    let now = app.clock.now();
    let practice = app.practice()?;
    // Clinical staff (level 2 and up) see every thread with the patient and the chart.
    let clinical = caller.staff.access_level >= 2;
    let (pending, caregivers, threads, documents) = {
        let conn = app.pool.get();
        audit::record(
            &conn,
            &actor(&caller, request),
            "patient.view",
            Some(p.id),
            "",
            now,
        )?;
        (
            patients::pending_invitations(&conn, p.id, now)?,
            accounts::caregivers_of_patient(&conn, p.id)?,
            if clinical {
                messages::threads_of_patient(&conn, p.id)?
            } else {
                Vec::new()
            },
            if clinical {
                messages::chart_documents(&conn, p.id)?
            } else {
                Vec::new()
            },
        )
    };
    let can_invite = portal_access::may_invite(&practice, &caller.staff);
    let csrf_token = &caller.session.csrf_token;
    let ctx = Context::practice(app, &caller);
    Ok(html(page(
        &ctx,
        &p.full_name(),
        html! {
            h1 { (p.full_name()) }
            (views::notice(notice_text(request)))
            dl.facts {
                dt { "Date of birth" } dd { (p.date_of_birth) }
                dt { "Email" } dd { @if p.email.is_empty() { "None on file" } @else { (p.email) } }
                dt { "Phone" } dd { @if p.phone.is_empty() { "None on file" } @else { (p.phone) } }
                dt { "Portal" } dd { (status_badge(p.status)) }
            }
            p { a href={ "/practice/patients/" (p.id) "/edit" } { "Edit details" } }
            section.panel aria-labelledby="portal-heading" {
                h2 #portal-heading { "Portal access" }
                @if !pending.is_empty() {
                    p { "Waiting invitations. Give each person their PIN in person or by phone; it is never emailed." }
                    table.list {
                        thead { tr { th { "For" } th { "PIN" } th { "Link valid until" } th { "" } } }
                        tbody { @for inv in &pending { (invitation_row(&caller, p.id, inv)) } }
                    }
                }
                div.actions {
                    @if can_invite && p.status != PortalStatus::Enrolled {
                        a.button href={ "/practice/patients/" (p.id) "/invite" } {
                            @if p.status == PortalStatus::NotInvited { "Invite to the portal" } @else { "Invite again" }
                        }
                    }
                    @if p.status == PortalStatus::Enrolled {
                        (action_button(&format!("/practice/patients/{}/revoke", p.id), csrf_token, "Revoke portal access", "danger"))
                    }
                }
            }
            @if clinical {
                section.panel aria-labelledby="messages-heading" {
                    h2 #messages-heading { "Messages" }
                    @if p.reachable {
                        p { a.button.secondary href={ "/practice/messages/new?patient=" (p.id) } { "Write to " (p.first_name) } }
                    }
                    @if threads.is_empty() {
                        p { "No messages with this patient." }
                    } @else {
                        table.list {
                            thead { tr { th { "Subject" } th { "Last message" } th { "Messages" } } }
                            tbody {
                                @for t in &threads {
                                    tr {
                                        td { a href={ "/practice/messages/" (t.id) } { (t.subject) } }
                                        td data-label="Last message" { (format_local(t.last_visible_at)) }
                                        td data-label="Messages" { (t.visible_count) }
                                    }
                                }
                            }
                        }
                    }
                }
                section.panel aria-labelledby="documents-heading" {
                    h2 #documents-heading { "Documents" }
                    @if documents.is_empty() {
                        p { "Nothing filed to the chart yet." }
                    } @else {
                        table.list {
                            thead { tr { th { "Document" } th { "Category" } th { "Filed" } th { "By" } } }
                            tbody {
                                @for d in &documents {
                                    tr {
                                        td { @if let Some(t) = d.thread_id { a href={ "/practice/messages/" (t) } { (d.title) } } @else { (d.title) } }
                                        td { (d.category) }
                                        td { (format_local(d.filed_at)) }
                                        td { (d.filed_by) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            section.panel aria-labelledby="caregivers-heading" {
                h2 #caregivers-heading { "Caregivers" }
                @if caregivers.is_empty() {
                    p { "No caregiver has access." }
                } @else {
                    table.list {
                        thead { tr { th { "Name" } th { "Relationship" } th { "Email" } th { "Access" } } }
                        tbody { @for c in &caregivers { (caregiver_row(&caller, p.id, c)) } }
                    }
                }
                @if can_invite && portal_access::may_invite_caregiver(&caller.staff) {
                    p { a.button.secondary href={ "/practice/patients/" (p.id) "/caregivers/new" } { "Invite a caregiver" } }
                }
            }
        },
    )))
}

fn invite_page(
    app: &App,
    caller: &StaffCaller,
    p: &Patient,
    caregiver: bool,
    form: &Form,
    errors: &FieldErrors,
) -> Response {
    let ctx = Context::practice(app, caller);
    let (title, action) = if caregiver {
        (
            "Invite a caregiver",
            format!("/practice/patients/{}/caregivers/new", p.id),
        )
    } else {
        (
            "Invite to the portal",
            format!("/practice/patients/{}/invite", p.id),
        )
    };
    html(page(
        &ctx,
        title,
        html! {
            h1 { (title) }
            p { "Patient: " strong { (p.full_name()) } ", born " (p.date_of_birth) }
            p { "An email with a one-time registration link goes to the address below. You will then see a 6-digit PIN to give them in person or by phone." }
            (error_summary(errors))
            form.stacked method="post" action=(action) novalidate {
                (csrf_field(&caller.session.csrf_token))
                @if caregiver {
                    (Field::new("name", "Caregiver's name").value(form.get("name")).render(errors))
                    (Field::new("relationship", "Relationship to the patient").value(form.get("relationship")).hint("For example Parent, Spouse, Son, Daughter.").render(errors))
                }
                (Field::new("email", "Email").kind("email").value(form.get("email")).render(errors))
                @if !caregiver {
                    (Field::new("phone", "Phone").kind("tel").value(form.get("phone")).render(errors))
                }
                button type="submit" { "Send the invitation" }
            }
        },
    ))
}

fn invite_guard(
    app: &App,
    request: &Request,
    params: &Params,
    caregiver: bool,
) -> AppResult<(StaffCaller, Patient, Practice)> {
    let caller = session::staff(app, request)?;
    let p = load(app, params)?;
    let practice = app.practice()?;
    if !portal_access::may_invite(&practice, &caller.staff)
        || (caregiver && !portal_access::may_invite_caregiver(&caller.staff))
    {
        return Err(AppError::Forbidden);
    }
    Ok((caller, p, practice))
}

pub fn invite_form(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    let (caller, p, _) = invite_guard(app, request, params, false)?;
    let form = Form::from_pairs(vec![("email", p.email.clone()), ("phone", p.phone.clone())]);
    Ok(invite_page(
        app,
        &caller,
        &p,
        false,
        &form,
        &FieldErrors::default(),
    ))
}

pub fn caregiver_form(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    let (caller, p, _) = invite_guard(app, request, params, true)?;
    Ok(invite_page(
        app,
        &caller,
        &p,
        true,
        &Form::default(),
        &FieldErrors::default(),
    ))
}

fn send_invitation(
    app: &App,
    request: &Request,
    params: &Params,
    caregiver: bool,
) -> AppResult<Response> {
    let (caller, p, practice) = invite_guard(app, request, params, caregiver)?;
    let form = form::read(app, request)?;
    csrf::check(&form, &caller.session.csrf_token)?;
    let invite = InviteRequest {
        email: form.get("email"),
        phone: form.get("phone"),
        caregiver: caregiver.then(|| (form.get("name"), form.get("relationship"))),
    };
    let errors = portal_access::validate_invite(&invite);
    if !errors.is_empty() {
        return Ok(invite_page(app, &caller, &p, caregiver, &form, &errors).with_status_code(400));
    }
    if !caregiver && p.status == PortalStatus::Enrolled {
        return Err(AppError::BadRequest(
            "This patient is already enrolled in the portal.".into(),
        ));
    }
    let now = app.clock.now();
    let conn = app.pool.get();
    let tx = crate::db::begin_write(&conn)?;
    portal_access::invite(
        &tx,
        &practice,
        &actor(&caller, request),
        &p,
        &invite,
        app.config.public_base(),
        now,
    )?;
    tx.commit()?;
    Ok(Response::redirect_303(format!(
        "/practice/patients/{}?notice=invited",
        p.id
    )))
}

pub fn invite(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    send_invitation(app, request, params, false)
}

pub fn invite_caregiver(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    send_invitation(app, request, params, true)
}

/// Runs one portal-access change for a patient of this practice; `change` answers whether
/// there was anything to change (else 404).
fn access_change(
    app: &App,
    request: &Request,
    params: &Params,
    notice: &str,
    change: impl FnOnce(&rusqlite::Connection, &Actor, i64, i64) -> rusqlite::Result<bool>,
) -> AppResult<Response> {
    let caller = session::staff(app, request)?;
    let p = load(app, params)?;
    let form = form::read(app, request)?;
    csrf::check(&form, &caller.session.csrf_token)?;
    let conn = app.pool.get();
    let tx = crate::db::begin_write(&conn)?;
    if !change(&tx, &actor(&caller, request), p.id, app.clock.now())? {
        return Err(AppError::NotFound);
    }
    tx.commit()?;
    Ok(Response::redirect_303(format!(
        "/practice/patients/{}?notice={notice}",
        p.id
    )))
}

pub fn cancel_invitation(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    let invitation_id = params.id(1)?;
    access_change(
        app,
        request,
        params,
        "cancelled",
        |tx, actor, patient, now| {
            portal_access::cancel_invitation(tx, actor, patient, invitation_id, now)
        },
    )
}

pub fn revoke(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    access_change(
        app,
        request,
        params,
        "revoked",
        |tx, actor, patient, now| {
            portal_access::revoke_patient(tx, actor, patient, now).map(|()| true)
        },
    )
}

pub fn revoke_caregiver(app: &App, request: &Request, params: &Params) -> AppResult<Response> {
    let access_id = params.id(1)?;
    access_change(
        app,
        request,
        params,
        "revoked",
        |tx, actor, patient, now| {
            portal_access::revoke_caregiver(tx, actor, patient, access_id, now)
        },
    )
}

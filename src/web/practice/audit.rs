//! The audit report (administrators): who did what, to which patient, when; filtered, paged,
//! exportable as CSV. Viewing or exporting it is itself audited.

use crate::audit::{self, Actor};
use crate::dates::{days_from_civil, format_timestamp, Date};
use crate::db::accounts;
use crate::db::audit::{self as store, Filter, ReportRow};
use crate::error::AppResult;
use crate::web::routes::Params;
use crate::web::session::{self, StaffCaller};
use crate::web::views::layout::{page, Context};
use crate::web::views::{self, Field, FieldErrors};
use crate::web::{client, html, App};
use maud::html;
use rouille::{Request, Response};

const PER_PAGE: u32 = 50;

fn day_start(text: &str) -> Option<i64> {
    Date::parse(text).map(|d| days_from_civil(d.year, d.month, d.day) * 86_400)
}

struct Query {
    filter: Filter,
    raw: Vec<(&'static str, String)>,
}

fn query(request: &Request) -> Query {
    let get = |name: &str| request.get_param(name).unwrap_or_default();
    let filter = Filter {
        from: day_start(&get("from")),
        // "to" is inclusive: up to the end of that day.
        until: day_start(&get("to")).map(|t| t + 86_400),
        staff_id: get("staff").parse().ok(),
        patient_id: get("patient").parse().ok(),
        action: get("action").chars().take(64).collect(),
        upto: get("upto").parse().ok(),
    };
    let raw = ["from", "to", "staff", "patient", "action", "upto"]
        .into_iter()
        .map(|k| (k, get(k)))
        .collect();
    Query { filter, raw }
}

fn query_string(q: &Query) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &q.raw {
        if !v.is_empty() {
            out.append_pair(k, v);
        }
    }
    out.finish()
}

fn record_view(
    app: &App,
    request: &Request,
    caller: &StaffCaller,
    action: &str,
    q: &Query,
) -> AppResult<()> {
    let conn = app.pool.get();
    audit::record(
        &conn,
        &Actor::staff(caller.staff.id, &client(request)),
        action,
        q.filter.patient_id,
        &query_string(q),
        app.clock.now(),
    )?;
    Ok(())
}

/// Fixes the newest entry the report covers, if the address does not already.
fn pin_snapshot(app: &App, q: &mut Query) -> AppResult<()> {
    if q.filter.upto.is_none() {
        let newest = store::newest_id(&app.pool.get())?;
        q.filter.upto = Some(newest);
        q.raw.retain(|(k, _)| *k != "upto");
        q.raw.push(("upto", newest.to_string()));
    }
    Ok(())
}

pub fn report(app: &App, request: &Request, _: &Params) -> AppResult<Response> {
    let caller = session::administrator(app, request)?;
    let mut q = query(request);
    record_view(app, request, &caller, "audit.view", &q)?;
    pin_snapshot(app, &mut q)?;
    let page_number: u32 = request
        .get_param("page")
        .and_then(|p| p.parse().ok())
        .filter(|p| (1..=100_000).contains(p))
        .unwrap_or(1);
    let (rows, more, staff, actions) = {
        let conn = app.pool.get();
        let (rows, more) = store::report(&conn, &q.filter, page_number, PER_PAGE)?;
        (
            rows,
            more,
            accounts::list_staff(&conn)?,
            store::actions(&conn)?,
        )
    };
    let mut staff_options = vec![(String::new(), "Anyone".to_owned())];
    staff_options.extend(staff.iter().map(|s| (s.id.to_string(), s.name.clone())));
    let mut action_options = vec![(String::new(), "Any action".to_owned())];
    action_options.extend(actions.iter().map(|a| (a.clone(), a.clone())));
    let get = |k: &str| {
        q.raw
            .iter()
            .find(|(n, _)| *n == k)
            .map_or("", |(_, v)| v.as_str())
    };
    let qs = query_string(&q);
    let no_errors = FieldErrors::default();
    let ctx = Context::practice(app, &caller);
    Ok(html(page(
        &ctx,
        "Audit report",
        html! {
            h1 { "Audit report" }
            form.search method="get" action="/practice/admin/audit" {
                (Field::new("from", "From (MM/DD/YYYY)").value(get("from")).render(&no_errors))
                (Field::new("to", "To (MM/DD/YYYY)").value(get("to")).render(&no_errors))
                (views::select("staff", "Staff user", &staff_options, get("staff"), &no_errors))
                (Field::new("patient", "Patient number").value(get("patient")).hint("From the patient page's address.").render(&no_errors))
                (views::select("action", "Action", &action_options, get("action"), &no_errors))
                button type="submit" { "Show" }
            }
            p { a href={ "/practice/admin/audit.csv?" (qs) } { "Download these entries as CSV" } }
            table.list {
                thead { tr { th { "Time (UTC)" } th { "Who" } th { "Action" } th { "Patient" } th { "Object" } th { "Outcome" } th { "Client" } } }
                tbody {
                    @for r in &rows {
                        tr {
                            td { (format_timestamp(r.at)) }
                            td { (r.actor) }
                            td { (r.action) }
                            td { (r.patient) }
                            td { (r.object) }
                            td { (r.outcome) }
                            td { (r.client) }
                        }
                    }
                }
            }
            nav.pager aria-label="Pages" {
                @if page_number > 1 { a href={ "/practice/admin/audit?" (qs) "&page=" (page_number - 1) } rel="prev" { "Newer" } }
                @if more { a href={ "/practice/admin/audit?" (qs) "&page=" (page_number + 1) } rel="next" { "Older" } }
            }
        },
    )))
}

/// A CSV cell: quoted, quotes doubled, and a leading = + - @ neutralised so a spreadsheet does
/// not run it as a formula.
fn cell(text: &str) -> String {
    let safe = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    format!("\"{}\"", safe.replace('"', "\"\""))
}

fn csv_line(r: &ReportRow) -> String {
    [
        r.id.to_string(),
        format_timestamp(r.at),
        r.actor.clone(),
        r.action.clone(),
        r.patient.clone(),
        r.object.clone(),
        r.outcome.clone(),
        r.client.clone(),
    ]
    .iter()
    .map(|v| cell(v))
    .collect::<Vec<_>>()
    .join(",")
}

pub fn export(app: &App, request: &Request, _: &Params) -> AppResult<Response> {
    let caller = session::administrator(app, request)?;
    let mut q = query(request);
    record_view(app, request, &caller, "audit.export", &q)?;
    pin_snapshot(app, &mut q)?;
    let mut out = String::from("id,time_utc,who,action,patient,object,outcome,client\r\n");
    let conn = app.pool.get();
    let mut page_number = 1;
    loop {
        let (rows, more) = store::report(&conn, &q.filter, page_number, 1000)?;
        for r in &rows {
            out.push_str(&csv_line(r));
            out.push_str("\r\n");
        }
        if !more || page_number >= 100 {
            break;
        }
        page_number += 1;
    }
    Ok(
        Response::from_data("text/csv; charset=utf-8", out).with_additional_header(
            "Content-Disposition",
            "attachment; filename=\"carepost-audit.csv\"",
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::cell;

    #[test]
    fn csv_cells_are_quoted_and_defused() {
        assert_eq!(cell("plain"), "\"plain\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("=HYPERLINK(1)"), "\"'=HYPERLINK(1)\"");
    }
}

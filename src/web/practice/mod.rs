//! The practice view (staff).

pub mod admin;
pub mod audit;
pub mod messages;
pub mod patients;

use super::routes::Params;
use super::views::layout::{page, Context};
use super::{html, session, signin, App};
use crate::db::sessions::Audience;
use crate::error::AppResult;
use maud::html;
use rouille::{Request, Response};

pub fn login_form(app: &App, request: &Request, _: &Params) -> AppResult<Response> {
    signin::form(app, request, Audience::Staff)
}

pub fn login_submit(app: &App, request: &Request, _: &Params) -> AppResult<Response> {
    signin::submit(app, request, Audience::Staff)
}

pub fn logout(app: &App, request: &Request, _: &Params) -> AppResult<Response> {
    signin::logout(app, request, Audience::Staff)
}

pub fn access_level_label(level: u8) -> &'static str {
    match level {
        1 => "Level 1 – front office / billing",
        2 => "Level 2 – clinical staff",
        3 => "Level 3 – NP/PA",
        _ => "Level 4 – physician",
    }
}

pub fn home(app: &App, request: &Request, _: &Params) -> AppResult<Response> {
    let caller = session::staff(app, request)?;
    let ctx = Context::practice(app, &caller);
    let staff = &caller.staff;
    let unread = match &ctx.view {
        crate::web::views::layout::View::Practice { unread, .. } => *unread,
        _ => 0,
    };
    Ok(html(page(
        &ctx,
        "Practice home",
        html! {
            h1 { "Welcome, " (staff.name) }
            // The day starts here: what waits, and the two ways in.
            p.lead {
                @match unread {
                    0 => { "Nothing unread in your inbox." }
                    1 => { strong { "1 conversation" } " in your inbox has unread messages." }
                    n => { strong { (n) " conversations" } " in your inbox have unread messages." }
                }
            }
            p {
                a.button href="/practice/messages" { "Open the inbox" } " "
                a.button.secondary href="/practice/patients" { "Find a patient" }
            }
            h2 { "Your account" }
            dl.facts {
                dt { "Access" } dd { (access_level_label(staff.access_level)) }
                @if !staff.degree.is_empty() { dt { "Degree or title" } dd { (staff.degree) } }
                @if staff.is_admin { dt { "Role" } dd { "Administrator" } }
            }
        },
    )))
}

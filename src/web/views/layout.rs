//! The page frame shared by the practice view and the portal: practice name, who is signed in,
//! navigation, and the embedded stylesheet.

use super::csrf_field;
use crate::db::practice;
use crate::web::{assets, App};
use maud::{html, Markup, DOCTYPE};
use rouille::Response;

pub enum View {
    Public,
    Practice {
        user_name: String,
        csrf: String,
        is_admin: bool,
        /// Unread patient messages in this user's inbox, shown in the navigation.
        unread: i64,
    },
    Portal {
        account_name: String,
        csrf: String,
        /// "Alex Rivera" or "Riley Morgan (as caregiver)".
        acting_for: Option<String>,
        acting_id: Option<i64>,
        /// Every record the account may switch to: (patient id, label).
        records: Vec<(i64, String)>,
        /// The Messages section is open to this record.
        messaging: bool,
    },
}

pub struct Context {
    pub practice_name: Option<String>,
    pub view: View,
}

impl Context {
    pub fn public(app: &App) -> Context {
        Context {
            practice_name: practice_name(app),
            view: View::Public,
        }
    }

    /// A practice page, with the caller's unread count as their request began.
    pub fn practice(app: &App, caller: &crate::web::session::StaffCaller) -> Context {
        Context::practice_with(app, caller, caller.unread)
    }

    /// A practice page shown after a change to the caller's unread threads (opening one), with
    /// the count as read again.
    pub fn practice_with(
        app: &App,
        caller: &crate::web::session::StaffCaller,
        unread: i64,
    ) -> Context {
        Context {
            practice_name: practice_name(app),
            view: View::Practice {
                user_name: caller.staff.name.clone(),
                csrf: caller.session.csrf_token.clone(),
                is_admin: caller.staff.is_admin,
                unread,
            },
        }
    }

    pub fn portal(app: &App, caller: &crate::web::session::PortalCaller) -> Context {
        let label = |a: &crate::db::accounts::PatientAccess| {
            if a.is_caregiver() {
                format!("{} (as caregiver)", a.patient_name)
            } else {
                a.patient_name.clone()
            }
        };
        let practice = practice_row(app);
        let messaging_enabled = practice.as_ref().is_some_and(|p| p.messaging_enabled);
        Context {
            practice_name: practice.map(|p| p.name),
            view: View::Portal {
                account_name: caller.account.name.clone(),
                csrf: caller.session.csrf_token.clone(),
                acting_for: caller.acting.as_ref().map(label),
                acting_id: caller.acting.as_ref().map(|a| a.patient_id),
                records: caller
                    .active_accesses()
                    .map(|a| (a.patient_id, label(a)))
                    .collect(),
                messaging: caller.acting.is_some() && messaging_enabled,
            },
        }
    }

    /// Whether the portal's Messages section is open on this page.
    pub fn portal_messaging(&self) -> bool {
        matches!(
            self.view,
            View::Portal {
                messaging: true,
                ..
            }
        )
    }
}

fn practice_row(app: &App) -> Option<practice::Practice> {
    app.practice_row().ok().flatten()
}

fn practice_name(app: &App) -> Option<String> {
    practice_row(app).map(|p| p.name)
}

/// A whole page: `title` names where the user is, then the practice.
pub fn page(ctx: &Context, title: &str, body: Markup) -> Markup {
    let practice = ctx.practice_name.as_deref().unwrap_or("Carepost");
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " – " (practice) }
                link rel="stylesheet" href=(assets::css_url());
            }
            body {
                a.skip-link href="#main" { "Skip to content" }
                header.site-header {
                    div.bar {
                        span.practice-name { (practice) }
                        (user_bar(ctx))
                    }
                    (navigation(ctx))
                }
                main #main {
                    (body)
                }
                footer.site-footer {
                    p { "Carepost – secure messaging with your practice" }
                }
            }
        }
    }
}

fn user_bar(ctx: &Context) -> Markup {
    match &ctx.view {
        View::Public => html! {},
        View::Practice {
            user_name, csrf, ..
        } => html! {
            div.user {
                span { "Signed in as " strong { (user_name) } }
                form.inline method="post" action="/practice/logout" {
                    (csrf_field(csrf))
                    button.link-button type="submit" { "Sign out" }
                }
            }
        },
        View::Portal {
            account_name,
            csrf,
            acting_for,
            acting_id,
            records,
            ..
        } => html! {
            div.user {
                span { "Signed in as " strong { (account_name) } }
                @if records.len() > 1 {
                    form.inline.switcher method="post" action="/portal/acting" {
                        (csrf_field(csrf))
                        label for="acting-patient" { "Viewing" }
                        select #acting-patient name="patient" {
                            @for (id, label) in records {
                                option value=(id) selected[Some(*id) == *acting_id] { (label) }
                            }
                        }
                        button.small type="submit" { "Switch" }
                    }
                } @else if let Some(name) = acting_for {
                    span.acting { "Viewing " strong { (name) } }
                }
                form.inline method="post" action="/portal/logout" {
                    (csrf_field(csrf))
                    button.link-button type="submit" { "Sign out" }
                }
            }
        },
    }
}

fn navigation(ctx: &Context) -> Markup {
    match &ctx.view {
        View::Public => html! {},
        View::Practice {
            is_admin, unread, ..
        } => html! {
            nav aria-label="Practice" {
                ul {
                    li { a href="/practice" { "Home" } }
                    li {
                        a href="/practice/messages" {
                            "Messages"
                            @if *unread > 0 { " " span.count { (unread) span.visually-hidden { " unread" } } }
                        }
                    }
                    li { a href="/practice/patients" { "Patients" } }
                    @if *is_admin {
                        li { a href="/practice/admin/users" { "Users" } }
                        li { a href="/practice/admin/settings" { "Practice settings" } }
                        li { a href="/practice/admin/outbox" { "Outbox" } }
                        li { a href="/practice/admin/audit" { "Audit" } }
                    }
                    li { a href="/practice/account" { "My account" } }
                }
            }
        },
        View::Portal { messaging, .. } => html! {
            nav aria-label="Portal" {
                ul {
                    li { a href="/portal" { "Home" } }
                    @if *messaging { li { a href="/portal/messages" { "Messages" } } }
                    li { a href="/portal/account" { "My account" } }
                }
            }
        },
    }
}

/// A page with a heading and one paragraph, for errors and notices.
pub fn message_page(ctx: &Context, title: &str, text: &str) -> Response {
    crate::web::html(page(
        ctx,
        title,
        html! {
            h1 { (title) }
            p { (text) }
            p { a href="/" { "Go to the start page" } }
        },
    ))
}

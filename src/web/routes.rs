//! Every route of both views, in one table.

use super::portal::{self, messages as portal_messages, register};
use super::practice::{
    self, admin, audit as practice_audit, messages as practice_messages, patients,
};
use super::{assets, password, setup, App};
use crate::error::{AppError, AppResult};
use rouille::{Request, Response};

pub type Handler = fn(&App, &Request, &Params) -> AppResult<Response>;

/// The path segments captured by `{name}` in a pattern, in order.
pub struct Params(Vec<String>);

impl Params {
    pub fn get(&self, index: usize) -> &str {
        self.0.get(index).map_or("", String::as_str)
    }

    /// A captured id; anything that is not a positive number is simply not found.
    pub fn id(&self, index: usize) -> AppResult<i64> {
        self.get(index)
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or(AppError::NotFound)
    }
}

pub struct Route {
    pub method: &'static str,
    pub pattern: &'static str,
    pub handler: Handler,
}

const fn route(method: &'static str, pattern: &'static str, handler: Handler) -> Route {
    Route {
        method,
        pattern,
        handler,
    }
}

#[rustfmt::skip]
pub const ROUTES: &[Route] = &[
    route("GET", "/",                                                         setup::start_page),
    route("GET", "/healthz",                                                  assets::health),
    route("GET", "/assets/{file}",                                            assets::serve),
    route("GET", "/setup/{token}",                                            setup::form),
    route("POST", "/setup/{token}",                                            setup::submit),
    // Practice view: signing in
    route("GET", "/practice/login",                                           practice::login_form),
    route("POST", "/practice/login",                                           practice::login_submit),
    route("POST", "/practice/logout",                                          practice::logout),
    route("GET", "/practice/forgot",                                          password::staff_forgot_form),
    route("POST", "/practice/forgot",                                          password::staff_forgot),
    route("GET", "/practice/reset/{token}",                                   password::staff_reset_form),
    route("POST", "/practice/reset/{token}",                                   password::staff_reset),
    route("GET", "/practice/account",                                         password::staff_account),
    route("POST", "/practice/account/password",                                password::staff_change),
    route("GET", "/practice",                                                 practice::home),
    // Practice view: patients and their portal access
    route("GET", "/practice/patients",                                        patients::list),
    route("GET", "/practice/patients/new",                                    patients::new_form),
    route("POST", "/practice/patients/new",                                    patients::create),
    route("GET", "/practice/patients/{id}",                                   patients::show),
    route("GET", "/practice/patients/{id}/edit",                              patients::edit_form),
    route("POST", "/practice/patients/{id}/edit",                              patients::update),
    route("GET", "/practice/patients/{id}/invite",                            patients::invite_form),
    route("POST", "/practice/patients/{id}/invite",                            patients::invite),
    route("POST", "/practice/patients/{id}/revoke",                            patients::revoke),
    route("POST", "/practice/patients/{id}/invitations/{invitation}/cancel",   patients::cancel_invitation),
    route("GET", "/practice/patients/{id}/caregivers/new",                    patients::caregiver_form),
    route("POST", "/practice/patients/{id}/caregivers/new",                    patients::invite_caregiver),
    route("POST", "/practice/patients/{id}/caregivers/{access}/revoke",        patients::revoke_caregiver),
    // Practice view: messages
    route("GET", "/practice/messages",                                        practice_messages::inbox),
    route("GET", "/practice/messages/new",                                    practice_messages::compose),
    route("POST", "/practice/messages/new",                                    practice_messages::send),
    route("GET", "/practice/messages/{id}",                                   practice_messages::thread),
    route("POST", "/practice/messages/{id}/reply",                             practice_messages::reply),
    route("POST", "/practice/messages/{id}/unread",                            practice_messages::mark_unread),
    route("POST", "/practice/messages/{id}/archive",                           practice_messages::archive),
    route("POST", "/practice/messages/{id}/unarchive",                         practice_messages::unarchive),
    route("POST", "/practice/messages/{id}/forward",                           practice_messages::forward),
    route("POST", "/practice/messages/{id}/chart",                             practice_messages::chart),
    route("GET", "/practice/messages/{id}/files/{file}",                      practice_messages::download),
    route("POST", "/practice/messages/{id}/files/{file}/chart",                practice_messages::file_attachment),
    // Practice view: administration
    route("GET", "/practice/admin/users",                                     admin::users),
    route("GET", "/practice/admin/users/new",                                 admin::new_user_form),
    route("POST", "/practice/admin/users/new",                                 admin::create_user),
    route("GET", "/practice/admin/users/{id}",                                admin::edit_user_form),
    route("POST", "/practice/admin/users/{id}",                                admin::update_user),
    route("POST", "/practice/admin/users/{id}/deactivate",                     admin::deactivate_user),
    route("POST", "/practice/admin/users/{id}/reactivate",                     admin::reactivate_user),
    route("POST", "/practice/admin/users/{id}/password-link",                  admin::send_password_link),
    route("GET", "/practice/admin/settings",                                  admin::settings),
    route("POST", "/practice/admin/settings",                                  admin::save_settings),
    route("GET", "/practice/admin/audit",                                     practice_audit::report),
    route("GET", "/practice/admin/audit.csv",                                 practice_audit::export),
    route("GET", "/practice/admin/outbox",                                    admin::outbox),
    route("POST", "/practice/admin/outbox/{id}/retry",                         admin::retry_email),
    // Patient portal
    route("GET", "/portal/login",                                             portal::login_form),
    route("POST", "/portal/login",                                             portal::login_submit),
    route("POST", "/portal/logout",                                            portal::logout),
    route("GET", "/portal/forgot",                                            password::portal_forgot_form),
    route("POST", "/portal/forgot",                                            password::portal_forgot),
    route("GET", "/portal/reset/{token}",                                     password::portal_reset_form),
    route("POST", "/portal/reset/{token}",                                     password::portal_reset),
    route("GET", "/portal/register/{token}",                                  register::form),
    route("POST", "/portal/register/{token}",                                  register::submit),
    route("GET", "/portal/account",                                           password::portal_account),
    route("POST", "/portal/account/password",                                  password::portal_change),
    route("GET", "/portal/messages",                                          portal_messages::mailbox),
    route("GET", "/portal/messages/new",                                      portal_messages::compose),
    route("POST", "/portal/messages/new",                                      portal_messages::send),
    route("GET", "/portal/messages/{id}",                                     portal_messages::thread),
    route("POST", "/portal/messages/{id}/reply",                               portal_messages::reply),
    route("GET", "/portal/messages/{id}/files/{file}",                        portal_messages::download),
    route("GET", "/portal",                                                   portal::home),
    route("POST", "/portal/acting",                                            portal::switch_patient),
];

pub struct Found {
    pub pattern: &'static str,
    pub handler: Handler,
    pub params: Params,
}

pub fn find(method: &str, path: &str) -> Option<Found> {
    let method = if method == "HEAD" { "GET" } else { method };
    ROUTES.iter().find_map(|route| {
        if route.method != method {
            return None;
        }
        matches(route.pattern, path).map(|params| Found {
            pattern: route.pattern,
            handler: route.handler,
            params,
        })
    })
}

fn matches(pattern: &str, path: &str) -> Option<Params> {
    let mut params = Vec::new();
    let mut want = pattern.split('/');
    let mut have = path.split('/');
    loop {
        match (want.next(), have.next()) {
            (None, None) => return Some(Params(params)),
            (Some(w), Some(h)) if w.starts_with('{') => {
                if h.is_empty() {
                    return None;
                }
                params.push(h.to_owned());
            }
            (Some(w), Some(h)) if w == h => {}
            _ => return None,
        }
    }
}

/// No route: 400 when the path exists for another method (saying so), else 404.
pub fn not_routed(method: &str, path: &str) -> AppError {
    let known_path = ROUTES.iter().any(|r| matches(r.pattern, path).is_some());
    if known_path {
        AppError::BadRequest(format!("This address does not accept a {method} request."))
    } else {
        AppError::NotFound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        assert!(find("GET", "/").is_some());
        assert!(find("GET", "/practice").is_some());
        assert!(find("GET", "/practice/").is_none());
        let found = find("GET", "/setup/abc").unwrap();
        assert_eq!(found.params.get(0), "abc");
        assert!(find("GET", "/setup/").is_none());
        assert!(find("HEAD", "/healthz").is_some());
        assert!(find("DELETE", "/practice").is_none());
    }
}

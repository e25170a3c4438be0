//! Who is calling. `staff(...)` and `portal_user(...)` are the typed guards every protected
//! handler starts with: it cannot forget to check, because it needs the value they return.

use super::App;
use crate::db::accounts::{PatientAccess, PortalAccount, Staff};
use crate::db::sessions::{self, Audience, Session};
use crate::error::{AppError, AppResult, SessionEnd};
use rouille::{Request, Response};
use rusqlite::Connection;

/// Sessions are refreshed in the database at most this often, not on every request.
const TOUCH_EVERY_SECS: i64 = 30;

fn cookie_name(audience: Audience) -> &'static str {
    match audience {
        Audience::Staff => "carepost_staff",
        Audience::Portal => "carepost_portal",
    }
}

fn cookie_path(audience: Audience) -> &'static str {
    match audience {
        Audience::Staff => "/practice",
        Audience::Portal => "/portal",
    }
}

pub fn set_cookie(response: Response, app: &App, audience: Audience, token: &str) -> Response {
    let secure = if app.config.secure_cookies() {
        "; Secure"
    } else {
        ""
    };
    response.with_additional_header(
        "Set-Cookie",
        format!(
            "{}={token}; Path={}; HttpOnly; SameSite=Lax{secure}",
            cookie_name(audience),
            cookie_path(audience)
        ),
    )
}

pub fn clear_cookie(response: Response, app: &App, audience: Audience) -> Response {
    let secure = if app.config.secure_cookies() {
        "; Secure"
    } else {
        ""
    };
    response.with_additional_header(
        "Set-Cookie",
        format!(
            "{}=; Path={}; HttpOnly; SameSite=Lax; Max-Age=0{secure}",
            cookie_name(audience),
            cookie_path(audience)
        ),
    )
}

fn token(request: &Request, audience: Audience) -> Option<String> {
    rouille::input::cookies(request)
        .find(|(name, _)| *name == cookie_name(audience))
        .map(|(_, value)| value.to_owned())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The live session of this audience, if any, with what `find` read along with it (who it
/// belongs to): an idle or too-old one is ended here.
fn live_session<T>(
    app: &App,
    request: &Request,
    audience: Audience,
    find: impl FnOnce(&Connection, &str) -> rusqlite::Result<Option<(Session, T)>>,
) -> AppResult<Result<(Session, T), Option<SessionEnd>>> {
    let Some(token) = token(request, audience) else {
        return Ok(Err(None));
    };
    let conn = app.pool.get();
    let Some((session, who)) = find(&conn, &token)? else {
        return Ok(Err(None));
    };
    let now = app.clock.now();
    let idle_limit = i64::try_from(app.config.session_idle_minutes * 60).unwrap_or(i64::MAX);
    let age_limit = i64::try_from(app.config.session_max_hours * 3600).unwrap_or(i64::MAX);
    let ended = if now - session.created_at > age_limit {
        Some(SessionEnd::Lifetime)
    } else if now - session.last_seen_at > idle_limit {
        Some(SessionEnd::Idle)
    } else {
        None
    };
    if ended.is_some() {
        sessions::delete(&conn, &session.token_hash)?;
        return Ok(Err(ended));
    }
    if now - session.last_seen_at >= TOUCH_EVERY_SECS {
        sessions::touch(&conn, &session.token_hash, now)?;
    }
    Ok(Ok((session, who)))
}

/// A session whose user is gone (deleted, or deactivated) is ended at once.
fn end_orphaned(app: &App, session: &Session, portal: bool) -> AppError {
    if let Err(e) = sessions::delete(&app.pool.get(), &session.token_hash) {
        return e.into();
    }
    AppError::SignInRequired {
        portal,
        ended: None,
    }
}

/// A signed-in, active staff user.
pub struct StaffCaller {
    pub staff: Staff,
    pub session: Session,
    /// Threads unread for them when the request began (a page that changes it reads it again).
    pub unread: i64,
}

pub fn staff(app: &App, request: &Request) -> AppResult<StaffCaller> {
    let (session, staff) = live_session(app, request, Audience::Staff, sessions::find_staff)?
        .map_err(|ended| AppError::SignInRequired {
            portal: false,
            ended,
        })?;
    // A deactivated user is signed out at once: their sessions no longer find them.
    match staff {
        Some((staff, unread)) => Ok(StaffCaller {
            staff,
            session,
            unread,
        }),
        None => Err(end_orphaned(app, &session, false)),
    }
}

/// Administrators only; anyone else is told the page does not exist.
pub fn administrator(app: &App, request: &Request) -> AppResult<StaffCaller> {
    let caller = staff(app, request)?;
    if caller.staff.is_admin {
        Ok(caller)
    } else {
        Err(AppError::NotFound)
    }
}

/// A signed-in portal account, with the records it reaches and the one it is acting for.
pub struct PortalCaller {
    pub account: PortalAccount,
    pub session: Session,
    pub accesses: Vec<PatientAccess>,
    /// The active record this session acts for; None when every access has been revoked.
    pub acting: Option<PatientAccess>,
}

impl PortalCaller {
    pub fn active_accesses(&self) -> impl Iterator<Item = &PatientAccess> {
        self.accesses.iter().filter(|a| a.active)
    }
}

pub fn portal_user(app: &App, request: &Request) -> AppResult<PortalCaller> {
    let (session, user) = live_session(app, request, Audience::Portal, sessions::find_portal)?
        .map_err(|ended| AppError::SignInRequired {
            portal: true,
            ended,
        })?;
    let Some((account, accesses)) = user else {
        return Err(end_orphaned(app, &session, true));
    };
    // Access is re-read on every request, so a revocation takes effect on the next click.
    let acting = session
        .acting_patient_id
        .and_then(|id| accesses.iter().find(|a| a.patient_id == id && a.active))
        .or_else(|| accesses.iter().find(|a| a.active))
        .cloned();
    Ok(PortalCaller {
        account,
        session,
        accesses,
        acting,
    })
}

/// Deletes sessions past their idle or absolute limit.
pub fn sweep_expired(app: &App) {
    let now = app.clock.now();
    let idle = i64::try_from(app.config.session_idle_minutes * 60).unwrap_or(i64::MAX);
    let max = i64::try_from(app.config.session_max_hours * 3600).unwrap_or(i64::MAX);
    let conn = app.pool.get();
    if let Err(e) = sessions::delete_expired(&conn, now - idle, now - max) {
        log::warn!("could not remove expired sessions: {e}");
    }
}

//! The HTTP side: the server loop, one wrapper that every request passes through (request id,
//! routing, error pages, security headers, logging), and the shared pieces handlers use.

pub mod assets;
pub mod csrf;
pub mod download;
pub mod form;
pub mod password;
pub mod portal;
pub mod practice;
pub mod routes;
pub mod session;
pub mod setup;
pub mod signin;
pub mod transport;
pub mod upload;
pub mod views;

use crate::clock::Clock;
use crate::config::Config;
use crate::db::{self, DataDir, Pool};
use crate::error::{AppError, SessionEnd};
use rouille::{Request, Response};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// What every handler can reach.
pub struct App {
    pub config: Config,
    pub pool: Pool,
    pub store: crate::attachments::Store,
    pub clock: Clock,
    pub schema_version: i64,
    /// The practice row, kept in memory (see `practice::Memo`); the settings page forgets it.
    practice_memo: db::practice::Memo,
}

impl App {
    pub fn new(
        config: Config,
        pool: Pool,
        store: crate::attachments::Store,
        clock: Clock,
        schema_version: i64,
    ) -> App {
        App {
            config,
            pool,
            store,
            clock,
            schema_version,
            practice_memo: db::practice::Memo::default(),
        }
    }

    /// The practice's name and settings, or None before first-run setup.
    pub fn practice_row(&self) -> rusqlite::Result<Option<db::practice::Practice>> {
        self.practice_memo
            .get(|| db::practice::get(&self.pool.get()))
    }

    /// The practice's name and settings; pages that need them are not found before setup.
    pub fn practice(&self) -> Result<db::practice::Practice, AppError> {
        self.practice_row()?.ok_or(AppError::NotFound)
    }
}

/// Starts serving and returns when a SIGINT or SIGTERM has been handled: new connections are
/// refused, requests in flight finish, and the write-ahead log is folded into the database.
/// `prepare` runs once the address is bound and before requests are answered (they get 503
/// meanwhile): it may seed data and print what the operator needs, knowing the public URL.
pub fn serve(
    mut config: Config,
    data: DataDir,
    clock: Clock,
    prepare: impl FnOnce(&App) -> Result<(), String>,
) -> Result<(), String> {
    let workers = usize::try_from(config.workers).unwrap_or(8);
    crate::dates::set_local_offset(config.utc_offset().unwrap_or(0));
    let pool = Pool::new(&data, workers, config.page_cache_mib)?;
    let listen = config.listen.clone();
    let idle = Duration::from_secs(config.idle_connection_seconds);
    // Bind first: the handler needs the App, and the App needs the address actually bound.
    let slot: Arc<OnceLock<App>> = Arc::new(OnceLock::new());
    let handler_slot = Arc::clone(&slot);
    let server = rouille::Server::new(&listen, move |request| match handler_slot.get() {
        Some(app) => handle(app, request),
        None => Response::text("starting").with_status_code(503),
    })
    .map_err(|e| describe_bind_error(&listen, &*e))?
    .pool_size(workers);
    let addr = server.server_addr();
    let listener = transport::harden(addr, idle)?;
    if config.public_url.is_empty() {
        config.public_url = format!("http://{addr}");
    }
    let store = crate::attachments::Store::new(&data.path);
    let leftovers = store.open().map_err(|e| {
        format!(
            "Cannot prepare the attachment store in {}: {e}",
            data.path.display()
        )
    })?;
    if leftovers > 0 {
        log::info!("removed {leftovers} unfinished upload(s) left by an earlier stop");
    }
    let referenced: std::collections::HashSet<String> =
        db::attachments::all_references(&pool.get())
            .map_err(|e| format!("cannot read the attachment records: {e}"))?
            .into_iter()
            .map(|(_, sha256, _)| sha256)
            .collect();
    let orphans = store
        .remove_unreferenced(&referenced)
        .map_err(|e| format!("cannot tidy the attachment store: {e}"))?;
    if orphans > 0 {
        log::info!("removed {orphans} stored file(s) whose message was never committed");
    }
    crate::allocator::release_free();
    let app = App::new(config, pool, store, clock, data.schema_version);
    prepare(&app)?;
    let app = slot.get_or_init(|| app);

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    }
    println!("listening on http://{addr}");
    log::info!("listening on http://{addr} with {workers} workers");

    let mut last_sweep = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        server.poll_timeout(Duration::from_millis(100));
        if last_sweep.elapsed() > Duration::from_secs(5) {
            last_sweep = Instant::now();
            session::sweep_expired(app);
            remind_unread(app);
        }
    }
    log::info!("shutting down: no new connections, finishing requests in flight");
    transport::stop_accepting(listener);
    // Requests still arriving on open connections are served until those connections end (the
    // watch thread closes silent ones), for at most the grace period.
    let grace_until = Instant::now() + idle.min(Duration::from_secs(10));
    while Instant::now() < grace_until && !transport::connections_on_port(addr.port()).is_empty() {
        server.poll_timeout(Duration::from_millis(50));
    }
    server.poll_timeout(Duration::from_millis(50));
    server.join();
    drop(server);
    app.pool.stop_threads();
    data.checkpoint()?;
    log::info!("stopped cleanly");
    Ok(())
}

/// Queues the unread-message reminders that are due (see `reminder_business_hours`).
fn remind_unread(app: &App) {
    if app.config.reminder_business_hours == 0 {
        return;
    }
    let practice = match app.practice_row() {
        Ok(Some(p)) => p.name,
        _ => return,
    };
    let mut conn = app.pool.get();
    let offset = app.config.utc_offset().unwrap_or(0);
    let result = crate::reminders::sweep(
        &mut conn,
        &practice,
        app.config.public_base(),
        app.config.reminder_business_hours,
        offset,
        app.clock.now(),
    );
    match result {
        Ok(0) => {}
        Ok(n) => log::info!("queued {n} unread-message reminder(s)"),
        Err(e) => log::warn!("could not queue unread-message reminders: {e}"),
    }
}

pub fn describe_bind_error(listen: &str, e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    if text.contains("in use") {
        format!(
            "Cannot listen on {listen}: the address is already in use. Stop the other program or \
             choose another address with --listen."
        )
    } else {
        format!("Cannot listen on {listen} ({text}): choose another address with --listen.")
    }
}

static REQUEST_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Every request passes through here.
pub fn handle(app: &App, request: &Request) -> Response {
    let id = REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed) & 0xff_ffff;
    crate::logger::with_request_id(id, || handle_logged(app, request))
}

fn handle_logged(app: &App, request: &Request) -> Response {
    let started = Instant::now();
    let found = check_url(request.raw_url())
        .map_err(|problem| AppError::BadRequest(problem.into()))
        .and_then(|()| {
            routes::find(request.method(), &request.url())
                .ok_or_else(|| routes::not_routed(request.method(), &request.url()))
        });
    let pattern = found.as_ref().map_or("-", |f| f.pattern);
    let outcome = found.and_then(|found| {
        // A panic is a bug; it still answers with our error page and headers, and the worker
        // thread lives on.
        let call = std::panic::AssertUnwindSafe(|| (found.handler)(app, request, &found.params));
        std::panic::catch_unwind(call)
            .unwrap_or_else(|_| Err(AppError::Internal("handler panicked".into())))
    });
    let response = match outcome {
        Ok(response) => response,
        Err(error) => respond_error(app, request, error),
    };
    let response = with_security_headers(response, &app.config);
    // The route pattern, never the raw URL: URLs can carry one-time tokens.
    log::info!(
        target: "carepost::request",
        "{} {} {} {}ms",
        request.method(),
        pattern,
        response.status_code,
        started.elapsed().as_millis()
    );
    response
}

/// An address must be a path whose percent-escapes decode to UTF-8 text without control
/// characters; anything else is a malformed URL (400), not a missing page.
fn check_url(raw: &str) -> Result<(), &'static str> {
    const BAD: &str = "This address is not valid. Check it, or go back to the start page.";
    if !raw.starts_with('/') {
        return Err(BAD);
    }
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(BAD)?;
            decoded.push(byte);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    match String::from_utf8(decoded) {
        Ok(text) if !text.chars().any(char::is_control) => Ok(()),
        _ => Err(BAD),
    }
}

/// The one place where an error becomes an HTTP response.
fn respond_error(app: &App, request: &Request, error: AppError) -> Response {
    let ctx = views::layout::Context::public(app);
    let (status, title, text) = match &error {
        AppError::NotFound => (404, "Page not found", "There is nothing here. Check the address, or go back to the start page.".to_owned()),
        AppError::BadRequest(message) => (400, "Request not understood", message.clone()),
        AppError::CsrfRejected => (403, "Form expired", "This form has expired or did not come from Carepost, so nothing was changed. Go back, reload the page and try again.".to_owned()),
        AppError::Forbidden => (403, "Not allowed", "Your account does not give access to this page.".to_owned()),
        AppError::AccessEnded => (403, "Your portal access has ended", portal::REVOKED_SENTENCE.to_owned()),
        AppError::PayloadTooLarge { limit } => (413, "Too large", format!("What was sent is larger than the {} bytes this form accepts, so nothing was saved.", limit)),
        AppError::SignInRequired { portal, ended } => {
            let login = if *portal { "/portal/login" } else { "/practice/login" };
            let target = match ended {
                Some(SessionEnd::Idle) => format!("{login}?expired=idle"),
                Some(SessionEnd::Lifetime) => format!("{login}?expired=lifetime"),
                None => login.to_owned(),
            };
            let mut response = Response::redirect_303(target);
            if ended.is_some() {
                response = session::clear_cookie(response, app, if *portal { db::sessions::Audience::Portal } else { db::sessions::Audience::Staff });
            }
            return response;
        }
        AppError::StorageFailed(detail) => {
            log::error!("{} failed, storage: {detail}", request.method());
            (507, "Could not store the file", "Carepost could not store the file because the server's disk is full or failing, so nothing was sent. Please tell the practice; you can still send a message without a file.".to_owned())
        }
        AppError::Internal(detail) => {
            log::error!("{} failed: {detail}", request.method());
            (500, "Something went wrong", "Carepost could not complete this request and nothing was changed. Try again in a moment; if it keeps happening, tell the practice.".to_owned())
        }
    };
    views::layout::message_page(&ctx, title, &text).with_status_code(status)
}

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// Security headers on every response, in one place.
pub fn with_security_headers(mut response: Response, config: &Config) -> Response {
    let cacheable = response
        .headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("Cache-Control") && v.contains("immutable"));
    response
        .headers
        .retain(|(k, _)| !k.eq_ignore_ascii_case("Cache-Control") || cacheable);
    let mut headers = vec![
        ("Content-Security-Policy", CSP),
        ("X-Frame-Options", "DENY"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
        ("Cross-Origin-Resource-Policy", "same-origin"),
        (
            "Permissions-Policy",
            "camera=(), microphone=(), geolocation=(), interest-cohort=()",
        ),
    ];
    if !cacheable {
        // Pages may carry patient information: never stored by the browser or a proxy.
        headers.push(("Cache-Control", "no-store"));
    }
    if config.secure_cookies() {
        headers.push(("Strict-Transport-Security", "max-age=31536000"));
    }
    for (name, value) in headers {
        response.headers.push((name.into(), value.into()));
    }
    response
}

/// Renders maud markup as an HTML page response.
pub fn html(markup: maud::Markup) -> Response {
    Response::html(markup.into_string())
}

/// The client's address, for the audit log.
pub fn client(request: &Request) -> String {
    request.remote_addr().ip().to_string()
}

/// The fixed text for a `?notice=` code; unknown codes show nothing.
pub fn notice_text(request: &Request) -> Option<&'static str> {
    Some(match request.get_param("notice")?.as_str() {
        "saved" => "Your changes are saved.",
        "created" => "Created.",
        "invited" => "The invitation is on its way by email. Give the patient the PIN shown below; it is never emailed.",
        "cancelled" => "The invitation is cancelled: its link no longer works.",
        "revoked" => "Portal access is revoked. The messages stay in the practice view.",
        "deactivated" => "The user is deactivated and signed out everywhere.",
        "reactivated" => "The user is active again.",
        "link_sent" => "A link to choose a password is on its way by email.",
        "retrying" => "The email is queued again.",
        "forwarded" => "The thread is forwarded.",
        "charted" => "The thread's messages are in the patient's chart.",
        "password_changed" => "Your password is changed. Other devices where you were signed in are signed out.",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn malformed_urls() {
        for good in [
            "/",
            "/practice",
            "/portal/login?expired=idle",
            "/setup/ab%20c",
            "/caf%C3%A9",
        ] {
            assert!(super::check_url(good).is_ok(), "{good}");
        }
        for bad in [
            "*",
            "http://x/",
            "/%ff%fe",
            "/a%00",
            "/%zz",
            "/%4",
            "/x?y=%0a",
        ] {
            assert!(super::check_url(bad).is_err(), "{bad}");
        }
    }
}

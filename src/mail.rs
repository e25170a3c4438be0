//! Delivering the outbox over SMTP. A dedicated thread owns a small current-thread async
//! runtime for mail-send and feeds from the outbox table: claim a row, send it, record the
//! result. Nothing sends mail inside a web request.

use crate::clock::Clock;
use crate::config::Config;
use crate::db::outbox::{self, QueuedEmail};
use crate::db::DataDir;
use mail_send::mail_builder::MessageBuilder;
use mail_send::SmtpClientBuilder;
use std::time::Duration;

/// Give up on an email this long after it was queued.
const GIVE_UP_AFTER_SECS: i64 = 3 * 86_400;
/// How often the mail thread looks for due emails.
const POLL: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// STARTTLS on a plain connection (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on this machine.
    None,
}

#[derive(Clone, Debug)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub credentials: Option<(String, String)>,
    pub from_address: String,
    pub from_name: String,
    pub timeout: Duration,
}

impl SmtpSettings {
    /// The mail server from the configuration; None when no host is set. Every bad combination
    /// is one sentence that says what to fix.
    pub fn from_config(config: &Config) -> Result<Option<SmtpSettings>, String> {
        let host = config.smtp_host.trim();
        if host.is_empty() {
            return Ok(None);
        }
        let port = u16::try_from(config.smtp_port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or("smtp.port must be between 1 and 65535")?;
        let security = match config.smtp_security.as_str() {
            "tls" => Security::Tls,
            "none" => Security::None,
            _ => Security::StartTls,
        };
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if security == Security::None && !loopback {
            return Err(format!(
                "smtp.security = \"none\" sends mail unencrypted: it is only allowed for a relay on this machine (localhost), not for {host}. Use \"starttls\" or \"tls\"."
            ));
        }
        let password = if !config.smtp_password_file.is_empty() {
            std::fs::read_to_string(&config.smtp_password_file)
                .map_err(|e| {
                    format!(
                        "cannot read smtp.password_file {}: {e}",
                        config.smtp_password_file
                    )
                })?
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        } else {
            config.smtp_password.clone()
        };
        let credentials =
            match (config.smtp_username.is_empty(), password.is_empty()) {
                (true, true) => None,
                (false, false) => Some((config.smtp_username.clone(), password)),
                (true, false) => {
                    return Err(
                        "smtp.password is set but smtp.username is not: set both or neither".into(),
                    )
                }
                (false, true) => return Err(
                    "smtp.username is set but no password: set smtp.password or smtp.password_file"
                        .into(),
                ),
            };
        let from_ok = config
            .smtp_from_address
            .split_once('@')
            .is_some_and(|(local, domain)| {
                !local.is_empty()
                    && !domain.is_empty()
                    && !config.smtp_from_address.contains(char::is_whitespace)
            });
        if !from_ok {
            return Err(format!(
                "smtp.from_address must be an email address (it is \"{}\")",
                config.smtp_from_address
            ));
        }
        if config.smtp_timeout_seconds == 0 || config.smtp_timeout_seconds > 600 {
            return Err("smtp.timeout_seconds must be between 1 and 600".into());
        }
        Ok(Some(SmtpSettings {
            host: host.to_owned(),
            port,
            security,
            credentials,
            from_address: config.smtp_from_address.clone(),
            from_name: config.smtp_from_name.clone(),
            timeout: Duration::from_secs(config.smtp_timeout_seconds),
        }))
    }
}

/// What became of one attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted; the server's reply.
    Sent(String),
    /// Try again later (connection trouble, a 4xx reply).
    Retry(String),
    /// Refused for good (a 5xx reply).
    Refused(String),
}

/// The HTML alternative of a plain-text email: escaped paragraphs, addresses as links.
pub fn html_of(text: &str) -> String {
    let paragraphs = text.split("\n\n").map(|p| {
        let lines: Vec<String> = p
            .lines()
            .map(|line| {
                let escaped = maud::html! { (line) }.into_string();
                if line.starts_with("http://") || line.starts_with("https://") {
                    format!("<a href=\"{escaped}\">{escaped}</a>")
                } else {
                    escaped
                }
            })
            .collect();
        format!("<p>{}</p>", lines.join("<br>"))
    });
    format!(
        "<!DOCTYPE html><html><body style=\"font-family:sans-serif\">{}</body></html>",
        paragraphs.collect::<String>()
    )
}

fn message<'a>(
    s: &'a SmtpSettings,
    email: &'a QueuedEmail,
    message_id: &'a str,
) -> MessageBuilder<'a> {
    MessageBuilder::new()
        .from((s.from_name.as_str(), s.from_address.as_str()))
        .to(email.recipient.as_str())
        .subject(email.subject.as_str())
        .message_id(message_id)
        .text_body(email.body_text.as_str())
        .html_body(html_of(&email.body_text))
}

/// One attempt, bounded as a whole by the configured timeout: mail-send's own timeout does not
/// cover waiting for the greeting of a plain connection.
async fn deliver(s: &SmtpSettings, email: &QueuedEmail, message_id: &str) -> Outcome {
    match tokio::time::timeout(s.timeout, attempt(s, email, message_id)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Retry(format!(
            "the mail server did not answer within {} seconds",
            s.timeout.as_secs()
        )),
    }
}

async fn attempt(s: &SmtpSettings, email: &QueuedEmail, message_id: &str) -> Outcome {
    let builder = match SmtpClientBuilder::new(s.host.as_str(), s.port) {
        Ok(b) => b,
        Err(e) => return Outcome::Retry(format!("cannot prepare TLS: {e}")),
    };
    let mut builder = builder
        .implicit_tls(s.security == Security::Tls)
        .timeout(s.timeout)
        .helo_host("carepost");
    if let Some((user, password)) = &s.credentials {
        builder = builder.credentials((user.as_str(), password.as_str()));
    }
    let built = message(s, email, message_id);
    let result = match s.security {
        Security::None => match builder.connect_plain().await {
            Ok(mut client) => client.send(built).await,
            Err(e) => Err(e),
        },
        _ => match builder.connect().await {
            Ok(mut client) => client.send(built).await,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(reply) => Outcome::Sent(format!("{} {}", reply.code, reply.message)),
        Err(mail_send::Error::UnexpectedReply(reply))
        | Err(mail_send::Error::AuthenticationFailed(reply)) => {
            let text = format!("{} {}", reply.code, reply.message);
            if (500..600).contains(&reply.code) {
                Outcome::Refused(text)
            } else {
                Outcome::Retry(text)
            }
        }
        Err(e) => Outcome::Retry(e.to_string()),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("cannot start the mail runtime: {e}"))
}

/// Sends one email now (for `carepost mail test`).
pub fn send_now(s: &SmtpSettings, to: &str, subject: &str, text: &str) -> Result<Outcome, String> {
    let email = QueuedEmail {
        id: 0,
        recipient: to.to_owned(),
        subject: subject.to_owned(),
        body_text: text.to_owned(),
        created_at: 0,
        attempts: 0,
    };
    Ok(runtime()?.block_on(deliver(s, &email, &message_id(0))))
}

fn message_id(outbox_id: i64) -> String {
    format!(
        "carepost-{outbox_id}-{}@carepost",
        &crate::crypto::random_token()[..16]
    )
}

/// Growing delays between attempts: 1, 5, 15 and 30 minutes, then every 2 hours, until the
/// email is 3 days old.
pub fn retry_delay(attempts: i64) -> i64 {
    match attempts {
        0 | 1 => 60,
        2 => 300,
        3 => 900,
        4 => 1800,
        _ => 7200,
    }
}

/// Starts the mail thread. Without a mail server, a demo prints each new email instead (it
/// stays queued, visible to administrators, and is sent once a server is configured).
pub fn start(
    data: &DataDir,
    clock: Clock,
    settings: Option<SmtpSettings>,
    print_demo: bool,
) -> Result<(), String> {
    let conn = data.connect()?;
    // A row claimed when Carepost stopped may or may not have reached the server: never send it
    // twice on our own; an administrator sees it and may retry.
    let interrupted =
        outbox::fail_interrupted(&conn).map_err(|e| format!("cannot read the outbox: {e}"))?;
    if interrupted > 0 {
        log::warn!("{interrupted} email(s) were being sent when Carepost stopped; marked failed for an administrator to retry");
    }
    if settings.is_none() && !print_demo {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("mail".into())
        .spawn(move || match settings {
            Some(settings) => match runtime() {
                Ok(rt) => loop {
                    if let Err(e) = send_due(&conn, &rt, &settings, &clock) {
                        log::error!("mail thread: {e}");
                    }
                    std::thread::sleep(POLL);
                },
                Err(e) => log::error!("{e}"),
            },
            None => print_new(&conn),
        })
        .map_err(|e| format!("cannot start the mail thread: {e}"))?;
    Ok(())
}

fn send_due(
    conn: &rusqlite::Connection,
    rt: &tokio::runtime::Runtime,
    s: &SmtpSettings,
    clock: &Clock,
) -> rusqlite::Result<()> {
    for email in outbox::due(conn, clock.now(), 20)? {
        if !outbox::claim(conn, email.id, clock.now())? {
            continue;
        }
        let outcome = rt.block_on(deliver(s, &email, &message_id(email.id)));
        let now = clock.now();
        match &outcome {
            Outcome::Sent(reply) => outbox::mark_sent(conn, email.id, reply, now)?,
            Outcome::Refused(reply) => outbox::mark_failed(conn, email.id, reply)?,
            Outcome::Retry(reason) if now - email.created_at >= GIVE_UP_AFTER_SECS => {
                outbox::mark_failed(conn, email.id, &format!("gave up after 3 days: {reason}"))?
            }
            Outcome::Retry(reason) => outbox::requeue(
                conn,
                email.id,
                reason,
                now + retry_delay(email.attempts + 1),
            )?,
        }
        // The log names the row and the outcome, never the address or content.
        log::info!(
            "email {} attempt {}: {}",
            email.id,
            email.attempts + 1,
            outcome_word(&outcome)
        );
    }
    Ok(())
}

fn outcome_word(o: &Outcome) -> &'static str {
    match o {
        Outcome::Sent(_) => "sent",
        Outcome::Retry(_) => "will retry",
        Outcome::Refused(_) => "refused by the server",
    }
}

/// Demo without a mail server: show each new email on standard output.
fn print_new(conn: &rusqlite::Connection) {
    let mut last = 0;
    loop {
        match outbox::after(conn, last) {
            Ok(rows) => {
                for email in rows {
                    last = email.id;
                    println!(
                        "--- demo email (not sent: no mail server configured) ---\nTo: {}\nSubject: {}\n\n{}---",
                        email.recipient, email.subject, email.body_text
                    );
                }
            }
            Err(e) => log::error!("reading the outbox: {e}"),
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_alternative_is_escaped() {
        let html =
            html_of("Hello <b>you</b>,\n\nSign in at:\nhttps://x.org/portal/login?a=1&b=2\n");
        assert!(html.contains("Hello &lt;b&gt;you&lt;/b&gt;,"));
        assert!(html.contains("<a href=\"https://x.org/portal/login?a=1&amp;b=2\">"));
    }

    #[test]
    fn delays_grow() {
        assert!(retry_delay(1) < retry_delay(2));
        assert!(retry_delay(4) < retry_delay(9));
    }
}

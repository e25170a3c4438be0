//! Email delivery, end to end: the real binary, a real SMTP server (tests/smtp_sink.rs) on
//! 127.0.0.1 with `smtp.security = "none"`, and the outbox read with python3's sqlite3.
//!
//! The mail thread polls every second and uses the server clock, so retry delays are made due
//! with `advance_clock` and every wait is a short polling loop.

use crate::harness::*;
use crate::smtp_sink::{Email, Received, SmtpSink};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Environment settings for one configuration case.
type Settings<'a> = Vec<(&'a str, &'a str)>;

const PUBLIC_URL: &str = "https://portal.example.test";
const PRACTICE: &str = "Demo Family Practice";
const FROM_ADDRESS: &str = "portal@clinic.example.test";
const FROM_NAME: &str = "Clinic Portal";
const DAY: i64 = 86_400;
const NO_SERVER: &str = "Not sent: no mail server configured";
const INTERRUPTED: &str = "Carepost stopped while sending this email";

// ---------------------------------------------------------------------------------------------
// Helpers: configuration and waiting

/// Options pointing Carepost at the sink (plain SMTP on loopback).
fn with_sink(options: Options, port: u16) -> Options {
    options
        .env("CAREPOST_PUBLIC_URL", PUBLIC_URL)
        .env("CAREPOST_SMTP_HOST", "127.0.0.1")
        .env("CAREPOST_SMTP_PORT", &port.to_string())
        .env("CAREPOST_SMTP_SECURITY", "none")
        .env("CAREPOST_SMTP_FROM_ADDRESS", FROM_ADDRESS)
        .env("CAREPOST_SMTP_FROM_NAME", FROM_NAME)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Polls `check` every 100 ms until it holds; panics with `what` after `limit`.
#[track_caller]
fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting until {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The server's "now": real time plus the offset the harness writes next to the data folder.
fn server_now(data: &Path) -> i64 {
    let offset: i64 = std::fs::read_to_string(data.with_extension("clock"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    real + offset
}

// ---------------------------------------------------------------------------------------------
// Helpers: the database

/// Rows of a query, every value as text ("" for NULL).
fn query(data: &Path, sql: &str, params: &[&str]) -> Vec<Vec<String>> {
    db_rows(data, sql, params)
}

#[track_caller]
fn scalar(data: &Path, sql: &str, params: &[&str]) -> String {
    let rows = query(data, sql, params);
    assert_eq!(rows.len(), 1, "one row from {sql:?}: {rows:?}");
    rows[0][0].clone()
}

/// One row of the outbox table.
#[derive(Debug, Clone)]
struct Row {
    id: i64,
    kind: String,
    recipient: String,
    subject: String,
    body: String,
    state: String,
    attempts: i64,
    last_error: String,
    server_reply: String,
    next_attempt_at: i64,
    created_at: i64,
    sent_at: String,
}

fn outbox(data: &Path) -> Vec<Row> {
    query(
        data,
        "SELECT id, kind, recipient, subject, body_text, state, attempts, last_error, server_reply,
                next_attempt_at, created_at, sent_at
           FROM outbox ORDER BY id",
        &[],
    )
    .into_iter()
    .map(|r| Row {
        id: r[0].parse().unwrap(),
        kind: r[1].clone(),
        recipient: r[2].clone(),
        subject: r[3].clone(),
        body: r[4].clone(),
        state: r[5].clone(),
        attempts: r[6].parse().unwrap(),
        last_error: r[7].clone(),
        server_reply: r[8].clone(),
        next_attempt_at: r[9].parse().unwrap(),
        created_at: r[10].parse().unwrap(),
        sent_at: r[11].clone(),
    })
    .collect()
}

#[track_caller]
fn row(data: &Path, id: i64) -> Row {
    outbox(data)
        .into_iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("no outbox row {id}"))
}

/// The only outbox row of this kind to this address.
#[track_caller]
fn only_row(data: &Path, kind: &str, recipient: &str) -> Row {
    let found: Vec<Row> = outbox(data)
        .into_iter()
        .filter(|r| r.kind == kind && r.recipient == recipient)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {kind} email to {recipient}: {found:#?}"
    );
    found.into_iter().next().unwrap()
}

/// Waits until row `id` satisfies `check`; panics (showing the row) after `limit`.
#[track_caller]
fn wait_for_row(
    data: &Path,
    id: i64,
    limit: Duration,
    what: &str,
    check: impl Fn(&Row) -> bool,
) -> Row {
    let deadline = Instant::now() + limit;
    loop {
        let r = row(data, id);
        if check(&r) {
            return r;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting until email {id} {what}: {r:#?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn staff_id(data: &Path, email: &str) -> String {
    scalar(data, "SELECT id FROM staff WHERE email = ?", &[email])
}

fn patient_id(data: &Path, first: &str, last: &str) -> String {
    scalar(
        data,
        "SELECT id FROM patient WHERE first_name = ? AND last_name = ?",
        &[first, last],
    )
}

// ---------------------------------------------------------------------------------------------
// Helpers: pages

#[track_caller]
fn signed_in_staff(server: &Server, email: &str) -> Client {
    let mut client = server.client();
    let response = client.login_staff(email, DEMO_PASSWORD);
    assert_eq!(response.status, 303, "{email} signs in: {}", response.body);
    client
}

/// Runs a request and checks that it answered within a few seconds.
#[track_caller]
fn quickly(what: &str, request: impl FnOnce() -> Response) -> Response {
    let started = Instant::now();
    let response = request();
    let took = started.elapsed();
    assert!(
        took < secs(5),
        "{what} took {took:?}: the page must not wait for the mail server"
    );
    response
}

#[track_caller]
fn assert_redirect(response: &Response, to: &str) {
    assert_eq!(
        response.status, 303,
        "expected a redirect to {to}; body:\n{}",
        response.body
    );
    assert_eq!(response.location(), to);
}

/// Every PIN shown on a patient page.
fn pins_on(page: &Response) -> Vec<String> {
    page.body
        .split("class=\"pin\">")
        .skip(1)
        .map(|rest| rest.split('<').next().unwrap().to_owned())
        .collect()
}

/// The text of an HTML fragment: tags removed, the usual entities decoded, spaces collapsed.
fn text_of(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    let out = out
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The rows of the Outbox page's table whose "To" cell is `recipient`: each as its cells' text.
fn outbox_page_rows(page: &Response, recipient: &str) -> Vec<Vec<String>> {
    let Some(tbody) = page.body.split("<tbody>").nth(1) else {
        return Vec::new();
    };
    let tbody = tbody.split("</tbody>").next().unwrap();
    tbody
        .split("<tr>")
        .skip(1)
        .map(|tr| {
            tr.split("</tr>")
                .next()
                .unwrap()
                .split("<td")
                .skip(1)
                .map(|td| {
                    let inner = td.split_once('>').map(|(_, rest)| rest).unwrap_or("");
                    let inner = match inner.rfind("</td>") {
                        Some(end) => &inner[..end],
                        None => inner,
                    };
                    text_of(inner)
                })
                .collect::<Vec<String>>()
        })
        .filter(|cells| cells.get(2).is_some_and(|to| to == recipient))
        .collect()
}

/// The one row of the Outbox page for this kind of email to `recipient`: (state, attempts,
/// last answer).
#[track_caller]
fn outbox_page_row(page: &Response, kind: &str, recipient: &str) -> (String, String, String) {
    let kind = kind.replace('_', " ");
    let rows: Vec<Vec<String>> = outbox_page_rows(page, recipient)
        .into_iter()
        .filter(|cells| cells.get(1) == Some(&kind))
        .collect();
    assert_eq!(
        rows.len(),
        1,
        "one Outbox row for the {kind} to {recipient}: {rows:?}\n{}",
        page.body
    );
    let cells = &rows[0];
    assert_eq!(cells.len(), 6, "six cells: {cells:?}");
    (cells[3].clone(), cells[4].clone(), cells[5].clone())
}

// ---------------------------------------------------------------------------------------------
// Helpers: the causes of emails, through the web pages

fn invite_patient(client: &mut Client, patient: &str, email: &str) -> Response {
    let path = format!("/practice/patients/{patient}/invite");
    let token = client.get(&path).csrf();
    quickly("an invitation", || {
        client.post_form(
            &path,
            &[("csrf", &token), ("email", email), ("phone", "555-0142")],
        )
    })
}

fn invite_caregiver(client: &mut Client, patient: &str, name: &str, email: &str) -> Response {
    let path = format!("/practice/patients/{patient}/caregivers/new");
    let token = client.get(&path).csrf();
    quickly("a caregiver invitation", || {
        client.post_form(
            &path,
            &[
                ("csrf", &token),
                ("name", name),
                ("relationship", "Son"),
                ("email", email),
            ],
        )
    })
}

/// "Forgot password" on the portal (`/portal`) or the practice view (`/practice`).
fn forgot_password(server: &Server, area: &str, email: &str) -> Response {
    let mut visitor = server.client();
    let path = format!("{area}/forgot");
    let token = visitor.get(&path).csrf();
    let response = quickly("a password reset request", || {
        visitor.post_form(&path, &[("csrf", &token), ("email", email)])
    });
    response.assert_status(200);
    response
}

fn admin_password_link(admin: &mut Client, staff: &str) -> Response {
    let page = format!("/practice/admin/users/{staff}");
    let token = admin.get(&page).csrf();
    quickly("an administrator's password link", || {
        admin.post_form(&format!("{page}/password-link"), &[("csrf", &token)])
    })
}

/// A new thread from the practice to a patient; returns the response (a redirect to it).
fn start_thread(client: &mut Client, patient: &str, subject: &str, body: &str) -> Response {
    let token = client
        .get(&format!("/practice/messages/new?patient={patient}"))
        .assert_status(200)
        .csrf();
    quickly("a new message", || {
        client.post_form(
            "/practice/messages/new",
            &[
                ("csrf", &token),
                ("patient", patient),
                ("subject", subject),
                ("body", body),
            ],
        )
    })
}

/// Registers Chris Rivera with the caregiver invitation the demo seeded for Alex (the link is
/// read from the queued email).
fn register_chris(server: &Server, pin: &str) {
    let body = scalar(
        &server.data,
        "SELECT body_text FROM outbox WHERE kind = 'caregiver_invitation' AND recipient = 'chris@demo.test'",
        &[],
    );
    let start = body.find("/portal/register/").expect("a registration link");
    let link: String = body[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    let mut chris = server.client();
    let registered = chris.submit(
        "/portal/login",
        &link,
        &[
            ("date_of_birth", "1984-03-14"),
            ("pin", pin),
            ("mode", "new"),
            ("email", "chris@demo.test"),
            ("password", DEMO_PASSWORD),
            ("password_again", DEMO_PASSWORD),
        ],
    );
    assert_redirect(&registered, "/portal");
}

// ---------------------------------------------------------------------------------------------
// Helpers: received emails

/// The accepted message whose Message-ID names outbox row `id`.
#[track_caller]
fn message_of(received: &[Received], id: i64) -> (Received, Email) {
    let marker = format!("carepost-{id}-");
    let found: Vec<&Received> = received
        .iter()
        .filter(|m| {
            m.parse()
                .header("Message-ID")
                .is_some_and(|v| v.contains(&marker))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one message for outbox row {id} (Message-ID {marker}…)"
    );
    (found[0].clone(), found[0].parse())
}

/// Checks a delivered email against its outbox row: envelope, headers, both alternatives.
#[track_caller]
fn assert_well_formed(row: &Row, message: &Received, email: &Email) {
    assert_eq!(
        message.mail_from, FROM_ADDRESS,
        "envelope sender of {}",
        row.id
    );
    let bare = message
        .data
        .match_indices('\n')
        .filter(|(i, _)| *i == 0 || message.data.as_bytes()[i - 1] != b'\r')
        .count();
    assert_eq!(
        bare, 0,
        "every line ends with CRLF (RFC 5322 2.3):\n{:?}",
        message.data
    );
    assert!(
        message.data.split("\r\n").all(|line| line.len() <= 998),
        "no line longer than 998 characters"
    );
    assert_eq!(
        message.rcpt_to,
        vec![row.recipient.clone()],
        "envelope recipient of {}",
        row.id
    );
    let from = email.header("From").expect("a From header");
    assert!(
        from.contains(FROM_ADDRESS) && from.contains(FROM_NAME),
        "From: {from}"
    );
    let to = email.header("To").expect("a To header");
    assert!(to.contains(&row.recipient), "To: {to}");
    assert_eq!(email.headers_named("To").len(), 1);
    assert!(email.header("Cc").is_none() && email.header("Bcc").is_none());
    assert_eq!(
        email.header("Subject"),
        Some(row.subject.as_str()),
        "Subject of {}",
        row.id
    );
    let id = email.header("Message-ID").expect("a Message-ID header");
    assert!(
        id.starts_with('<') && id.ends_with('>') && id.contains('@'),
        "Message-ID: {id}"
    );
    assert!(email.header("Date").is_some(), "a Date header");
    assert_eq!(
        email.content_type(),
        "multipart/alternative",
        "{:#?}",
        email.headers
    );
    let kinds: Vec<&str> = email
        .parts
        .iter()
        .map(|p| p.content_type.as_str())
        .collect();
    assert_eq!(
        kinds,
        ["text/plain", "text/html"],
        "the alternatives, plain first"
    );
    for part in &email.parts {
        assert!(
            part.charset.is_empty() || part.charset == "utf-8" || part.charset == "us-ascii",
            "charset {:?}",
            part.charset
        );
    }
    assert_eq!(
        email.text().trim_end(),
        row.body.trim_end(),
        "the text alternative is the queued text"
    );
    let html = email.html();
    assert!(html.contains("<html") && html.contains("</html>"), "{html}");
    assert_eq!(
        text_of(html),
        row.body.split_whitespace().collect::<Vec<_>>().join(" "),
        "the HTML alternative says the same as the text"
    );
}

/// The practice name and the public address, in both alternatives; the link as a link.
#[track_caller]
fn assert_names_practice_and_links(email: &Email, path: &str) {
    for (which, body) in [("text", email.text()), ("html", email.html())] {
        assert!(
            body.contains(PRACTICE),
            "the {which} part names the practice:\n{body}"
        );
        assert!(
            body.contains(&format!("{PUBLIC_URL}{path}")),
            "the {which} part links to {PUBLIC_URL}{path}:\n{body}"
        );
    }
    let href = format!("<a href=\"{PUBLIC_URL}{path}");
    assert!(
        email.html().contains(&href),
        "the HTML part has {href}…:\n{}",
        email.html()
    );
}

/// None of `secrets` in the subject or either alternative.
#[track_caller]
fn assert_keeps_secrets(what: &str, message: &Received, email: &Email, secrets: &[String]) {
    let subject = email.header("Subject").unwrap_or("");
    for secret in secrets {
        for (which, text) in [
            ("subject", subject),
            ("text", email.text()),
            ("html", email.html()),
        ] {
            assert!(
                !text.contains(secret.as_str()),
                "the {what} email carries {secret:?} in its {which}:\n{text}"
            );
        }
        // Dates and message text would be visible in the raw message too (7bit or QP).
        if secret.len() > 6 {
            assert!(
                !message.data.contains(secret.as_str()),
                "the raw {what} email carries {secret:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 0. The sink itself

fn smtp_line(reader: &mut std::io::BufReader<std::net::TcpStream>) -> String {
    use std::io::BufRead;
    let mut reply = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        reply.push_str(&line);
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return reply;
        }
    }
}

fn smtp_say(
    stream: &mut std::net::TcpStream,
    reader: &mut std::io::BufReader<std::net::TcpStream>,
    line: &str,
) -> String {
    use std::io::Write;
    stream.write_all(line.as_bytes()).unwrap();
    stream.write_all(b"\r\n").unwrap();
    smtp_line(reader)
}

#[test]
fn the_sink_speaks_enough_smtp_and_goes_down_and_up_on_one_port() {
    let mut sink = SmtpSink::start();
    let port = sink.port();
    sink.reject_recipients("nobody@");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(secs(5))).unwrap();
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    assert!(smtp_line(&mut reader).starts_with("220 "));
    let ehlo = smtp_say(&mut stream, &mut reader, "EHLO tester");
    assert!(
        ehlo.starts_with("250-") && ehlo.lines().last().unwrap().starts_with("250 "),
        "{ehlo}"
    );
    assert!(!ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"));
    assert!(smtp_say(&mut stream, &mut reader, "DATA").starts_with("503"));
    assert!(smtp_say(&mut stream, &mut reader, "MAIL FROM:<a@example.test>").starts_with("250"));
    assert!(
        smtp_say(&mut stream, &mut reader, "RCPT TO:<nobody@example.test>")
            .starts_with("550 5.1.1 mailbox unavailable")
    );
    assert!(smtp_say(&mut stream, &mut reader, "NOOP").starts_with("250"));
    assert!(smtp_say(&mut stream, &mut reader, "RSET").starts_with("250"));
    assert!(smtp_say(&mut stream, &mut reader, "RCPT TO:<b@example.test>").starts_with("503"));
    assert!(smtp_say(
        &mut stream,
        &mut reader,
        "MAIL FROM:<a@example.test> BODY=8BITMIME"
    )
    .starts_with("250"));
    assert!(smtp_say(&mut stream, &mut reader, "RCPT TO:<b@example.test>").starts_with("250"));
    assert!(smtp_say(&mut stream, &mut reader, "DATA").starts_with("354"));
    let message = "Subject: =?utf-8?q?caf=C3=A9?=\r\n\
        Content-Type: multipart/alternative; boundary=\"XY\"\r\n\r\n\
        --XY\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
        ..starts with a dot, and a soft=\r\n break, caf=C3=A9\r\n\
        --XY\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\nPHA+aGk8L3A+\r\n\
        --XY--\r\n.";
    let answer = smtp_say(&mut stream, &mut reader, message);
    assert!(answer.starts_with("250"), "{answer}");
    assert!(smtp_say(&mut stream, &mut reader, "QUIT").starts_with("221"));
    let received = sink.wait_for_messages(1, secs(5));
    assert_eq!(received[0].mail_from, "a@example.test");
    assert_eq!(received[0].rcpt_to, ["b@example.test"]);
    assert!(
        received[0].data.contains("\r\n.starts with a dot"),
        "{}",
        received[0].data
    );
    let email = received[0].parse();
    assert_eq!(email.header("Subject"), Some("café"));
    assert_eq!(email.text(), ".starts with a dot, and a soft break, café");
    assert_eq!(email.html(), "<p>hi</p>");
    assert_eq!(sink.refused().len(), 1);

    // DATA refused with 554.
    sink.reject_data(true);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    smtp_line(&mut reader);
    smtp_say(&mut stream, &mut reader, "HELO tester");
    smtp_say(&mut stream, &mut reader, "MAIL FROM:<a@example.test>");
    smtp_say(&mut stream, &mut reader, "RCPT TO:<b@example.test>");
    smtp_say(&mut stream, &mut reader, "DATA");
    assert!(smtp_say(&mut stream, &mut reader, "Subject: x\r\n\r\nhello\r\n.").starts_with("554"));
    assert_eq!(sink.received().len(), 1);

    // Down: refused; up again on the same port.
    sink.stop();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    sink.up();
    assert_eq!(sink.port(), port);
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut reader = std::io::BufReader::new(stream);
    assert!(smtp_line(&mut reader).starts_with("220 "));
}

// ---------------------------------------------------------------------------------------------
// 1 and 3. Every cause queues its email in its own request; the mail thread sends it; what
// each email says and never says.

#[test]
fn every_cause_queues_its_email_and_the_mail_thread_delivers_it_with_safe_content() {
    // The mail server accepts connections but says nothing: any request that waited for it
    // would hang.
    let sink = SmtpSink::start();
    sink.stall_greeting(true);
    let server = Server::start(with_sink(Options::demo(), sink.port()));
    let data = server.data.clone();
    assert!(
        sink.wait_for_connections(1, secs(10)),
        "the mail thread connects for the demo's invitations"
    );
    // Claimed before sending: the first email is 'sending' while the server is silent.
    let demo_rows = outbox(&data);
    only_row(&data, "caregiver_invitation", "chris@demo.test");
    only_row(&data, "invitation", "sam@demo.test");
    wait_for_row(&data, demo_rows[0].id, secs(5), "is claimed", |r| {
        r.state == "sending"
    });

    let mut admin = signed_in_staff(&server, "admin@demo.test");
    let mut lee = signed_in_staff(&server, "dr.lee@demo.test");
    let taylor = patient_id(&data, "Taylor", "Nguyen");
    let alex = patient_id(&data, "Alex", "Rivera");
    let before = |data: &PathBuf| outbox(data).len();

    // Invitation.
    let n = before(&data);
    let sent = invite_patient(&mut lee, &taylor, "taylor.n@example.test");
    assert_redirect(
        &sent,
        &format!("/practice/patients/{taylor}?notice=invited"),
    );
    let invitation = only_row(&data, "invitation", "taylor.n@example.test");
    assert_eq!(outbox(&data).len(), n + 1);
    assert_eq!(invitation.state, "queued");
    assert_eq!(invitation.attempts, 0);
    assert_eq!(
        scalar(
            &data,
            "SELECT count(*) FROM audit_event WHERE action = 'portal.invite' AND at = ?",
            &[&invitation.created_at.to_string()]
        ),
        "1",
        "the invitation and its email were written together"
    );

    // Caregiver invitation.
    let sent = invite_caregiver(&mut lee, &taylor, "Pat Quill", "pat.quill@example.test");
    assert_redirect(
        &sent,
        &format!("/practice/patients/{taylor}?notice=invited"),
    );
    let caregiver = only_row(&data, "caregiver_invitation", "pat.quill@example.test");
    assert_eq!(caregiver.state, "queued");
    let pins = pins_on(&lee.get(&format!("/practice/patients/{taylor}")));
    assert_eq!(pins.len(), 2, "Taylor's and Pat's PINs: {pins:?}");

    // Password reset asked by the user, on the portal and in the practice view.
    forgot_password(&server, "/portal", "alex@demo.test");
    let portal_reset = only_row(&data, "password_reset", "alex@demo.test");
    assert_eq!(portal_reset.state, "queued");
    forgot_password(&server, "/practice", "np.kim@demo.test");
    let staff_reset = only_row(&data, "password_reset", "np.kim@demo.test");
    assert_eq!(staff_reset.state, "queued");

    // Password link sent by an administrator.
    let desk = staff_id(&data, "desk@demo.test");
    let sent = admin_password_link(&mut admin, &desk);
    assert_redirect(
        &sent,
        &format!("/practice/admin/users/{desk}?notice=link_sent"),
    );
    let admin_reset = only_row(&data, "password_reset", "desk@demo.test");
    assert_eq!(admin_reset.state, "queued");

    // A new thread from the practice: one notice to each address with access to the patient,
    // here Alex and Chris (who registers with the caregiver invitation seeded by the demo).
    let chris_pins = pins_on(&admin.get(&format!("/practice/patients/{alex}")));
    assert_eq!(chris_pins.len(), 1, "Chris's PIN is on Alex's page");
    register_chris(&server, &chris_pins[0]);
    const SUBJECT: &str = "Potassium result XQZ";
    const BODY: &str = "Your potassium was 5.9 mmol/L on the last draw; please repeat it.";
    let n = before(&data);
    let sent = start_thread(&mut lee, &alex, SUBJECT, BODY);
    assert_eq!(sent.status, 303, "{}", sent.body);
    assert!(sent.location().starts_with("/practice/messages/"));
    assert_eq!(outbox(&data).len(), n + 2, "two notices");
    let alex_notice = only_row(&data, "new_message", "alex@demo.test");
    let chris_notice = only_row(&data, "new_message", "chris@demo.test");
    assert_eq!(alex_notice.state, "queued");
    assert_eq!(chris_notice.state, "queued");
    assert_eq!(
        scalar(
            &data,
            "SELECT count(*) FROM audit_event WHERE action = 'message.send' AND at = ?",
            &[&alex_notice.created_at.to_string()]
        ),
        "1",
        "the message and its notices were written together"
    );

    // Nothing was delivered while the server was silent; every page answered anyway.
    assert!(sink.received().is_empty());
    // (Snapshot while queued: the rows as the mail thread will send them.)
    let rows = outbox(&data);
    let total = rows.len();
    assert!(total >= demo_rows.len() + 7, "{rows:#?}");
    assert!(
        rows.iter()
            .all(|r| r.state == "queued" || (r.id == demo_rows[0].id && r.state == "sending")),
        "{rows:#?}"
    );

    // The server speaks: every email goes out, once, recorded as sent at the first attempt.
    sink.stall_greeting(false);
    let received = sink.wait_for_messages(total, secs(20));
    for r in &rows {
        let r = wait_for_row(&data, r.id, secs(5), "is sent", |r| r.state == "sent");
        assert_eq!(r.attempts, 1, "{r:#?}");
        assert!(r.server_reply.starts_with("250"), "{r:#?}");
        assert!(r.last_error.is_empty(), "{r:#?}");
        assert!(!r.sent_at.is_empty(), "{r:#?}");
    }
    std::thread::sleep(secs(2));
    assert_eq!(sink.received().len(), total, "no email twice");
    let ids: HashSet<String> = received
        .iter()
        .map(|m| m.parse().header("Message-ID").unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), total, "a distinct Message-ID for each email");

    // What each says, and never says.
    let sam_pin: String = server
        .stdout()
        .split("and PIN ")
        .nth(1)
        .expect("the demo prints Sam's PIN")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let mut all_pins = pins.clone();
    all_pins.push(sam_pin);
    all_pins.extend(chris_pins);
    let secrets = |extra: &[&str]| -> Vec<String> {
        let mut s: Vec<String> = all_pins.clone();
        s.extend(
            [
                SUBJECT,
                BODY,
                "potassium",
                "mmol",
                "Taylor",
                "Nguyen",
                "1958-11-30",
                "Alex",
                "Rivera",
                "1984-03-14",
                "Riley",
                "Morgan",
                "2017-09-21",
                "Sam",
                "Patel",
                "1991-07-02",
                "Quinn",
                "2020-02-11",
            ]
            .map(String::from),
        );
        s.extend(extra.iter().map(|e| e.to_string()));
        s
    };

    for r in &rows {
        let (message, email) = message_of(&received, r.id);
        assert_well_formed(r, &message, &email);
        for (which, body) in [("text", email.text()), ("html", email.html())] {
            assert!(
                body.contains(PRACTICE),
                "the {which} part of the {} email names the practice:\n{body}",
                r.kind
            );
        }
        assert_keeps_secrets(&r.kind, &message, &email, &secrets(&[]));
    }

    let (_, email) = message_of(&received, invitation.id);
    assert_names_practice_and_links(&email, "/portal/register/");
    assert!(
        email.text().contains("never sent by email"),
        "{}",
        email.text()
    );
    assert!(
        !email.text().contains("care for"),
        "a patient's own invitation"
    );
    let (_, email) = message_of(&received, caregiver.id);
    assert_names_practice_and_links(&email, "/portal/register/");
    assert!(email.text().contains("care for"), "{}", email.text());
    assert_keeps_secrets(
        "caregiver invitation",
        &message_of(&received, caregiver.id).0,
        &email,
        &secrets(&["Pat Quill", "Quill"]),
    );
    for demo in demo_rows.iter().filter(|r| r.kind.ends_with("invitation")) {
        let (_, email) = message_of(&received, demo.id);
        assert_names_practice_and_links(&email, "/portal/register/");
    }
    let (_, email) = message_of(&received, portal_reset.id);
    assert_names_practice_and_links(&email, "/portal/reset/");
    assert!(
        email.text().contains("Someone, probably you"),
        "{}",
        email.text()
    );
    let (_, email) = message_of(&received, staff_reset.id);
    assert_names_practice_and_links(&email, "/practice/reset/");
    assert!(
        email.text().contains("Someone, probably you"),
        "{}",
        email.text()
    );
    let (_, email) = message_of(&received, admin_reset.id);
    assert_names_practice_and_links(&email, "/practice/reset/");
    assert!(
        email.text().contains("An administrator"),
        "{}",
        email.text()
    );
    for notice in [&alex_notice, &chris_notice] {
        let (_, email) = message_of(&received, notice.id);
        assert_names_practice_and_links(&email, "/portal/login");
        assert!(
            email.text().contains("never sent by email"),
            "{}",
            email.text()
        );
    }
    // The reset link is a real one: it opens the form.
    let (_, email) = message_of(&received, portal_reset.id);
    let start = email.text().find("/portal/reset/").unwrap();
    let link: String = email.text()[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    server
        .client()
        .get(&link)
        .assert_status(200)
        .assert_contains("name=\"password\"");
}

// ---------------------------------------------------------------------------------------------
// 2 and 4. Retries with growing delays on the server clock; failed after 3 days; the Outbox
// page; an administrator's retry; closed to other staff.

#[test]
fn failures_are_retried_with_growing_delays_and_fail_after_three_days_then_an_administrator_retries(
) {
    let mut sink = SmtpSink::down();
    let server = Server::start(with_sink(Options::demo(), sink.port()));
    let data = server.data.clone();
    let chris = only_row(&data, "caregiver_invitation", "chris@demo.test");
    let (chris, created) = (chris.id, chris.created_at);
    let sam = only_row(&data, "invitation", "sam@demo.test").id;

    // The first attempt fails at once (nothing listens) and is put back for a minute later.
    let mut attempts = 0;
    let mut delay_before = 0;
    let mut delays = Vec::new();
    for delay in [60, 300, 900, 1800, 7200, 7200] {
        if delay_before > 0 {
            // Not before the delay is over (real time moves on meanwhile: a margin of 30 s).
            server.advance_clock(delay_before - 30);
            std::thread::sleep(Duration::from_millis(1500));
            assert_eq!(
                row(&data, chris).attempts,
                attempts,
                "no attempt before the delay is over"
            );
            server.advance_clock(30);
        }
        attempts += 1;
        let r = wait_for_row(
            &data,
            chris,
            secs(10),
            &format!("has {attempts} attempt(s)"),
            |r| r.attempts == attempts,
        );
        let now = server_now(&data);
        assert_eq!(r.state, "queued", "{r:#?}");
        assert!(!r.last_error.is_empty(), "the failure is recorded: {r:#?}");
        let waits = r.next_attempt_at - now;
        assert!(
            waits > delay - 10 && waits <= delay,
            "after attempt {attempts}, the next is in {waits} s; expected {delay} s"
        );
        delays.push(delay);
        delay_before = delay;
        wait_for_row(&data, sam, secs(10), "keeps pace", |r| {
            r.attempts == attempts
        });
    }
    assert!(delays.windows(2).all(|w| w[0] <= w[1]) && delays[0] < delays[4]);

    // What administrators see meanwhile.
    let mut admin = signed_in_staff(&server, "admin@demo.test");
    let page = admin.get("/practice/admin/outbox");
    page.assert_status(200).assert_lacks(NO_SERVER);
    let (state, shown_attempts, answer) =
        outbox_page_row(&page, "caregiver_invitation", "chris@demo.test");
    assert_eq!(state, "queued");
    assert_eq!(shown_attempts, attempts.to_string());
    assert_eq!(answer, text_of(&row(&data, chris).last_error));
    let (state, ..) = outbox_page_row(&page, "invitation", "sam@demo.test");
    assert_eq!(state, "queued");

    // Every 2 hours until the email is 3 days old: still queued just before, failed just after.
    server.advance_clock(DAY);
    attempts += 1;
    wait_for_row(&data, chris, secs(10), "is tried a day later", |r| {
        r.attempts == attempts && r.state == "queued"
    });
    let just_before = created + 3 * DAY - 120 - server_now(&data);
    assert!(just_before > 7200);
    server.advance_clock(just_before);
    attempts += 1;
    let r = wait_for_row(&data, chris, secs(10), "is tried just before 3 days", |r| {
        r.attempts == attempts
    });
    assert_eq!(r.state, "queued", "not given up before 3 days: {r:#?}");
    server.advance_clock(7200);
    attempts += 1;
    let r = wait_for_row(&data, chris, secs(10), "fails after 3 days", |r| {
        r.state == "failed"
    });
    assert_eq!(r.attempts, attempts, "{r:#?}");
    assert!(r.last_error.starts_with("gave up after 3 days"), "{r:#?}");
    wait_for_row(&data, sam, secs(10), "fails too", |r| r.state == "failed");
    // Failed rows are left alone.
    server.advance_clock(DAY);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(row(&data, chris).attempts, attempts);

    // (A day later the earlier session has ended.)
    let mut admin = signed_in_staff(&server, "admin@demo.test");
    let page = admin.get("/practice/admin/outbox");
    let (state, shown_attempts, answer) =
        outbox_page_row(&page, "caregiver_invitation", "chris@demo.test");
    assert!(state.starts_with("failed"), "{state}");
    assert!(state.contains("Retry"), "a Retry button: {state}");
    assert_eq!(shown_attempts, attempts.to_string());
    assert!(answer.starts_with("gave up after 3 days"), "{answer}");

    // Other staff: no Outbox page, no retry.
    let mut lee = signed_in_staff(&server, "dr.lee@demo.test");
    lee.get("/practice/admin/outbox").assert_status(404);
    let token = lee.get("/practice").csrf();
    lee.post_form(
        &format!("/practice/admin/outbox/{chris}/retry"),
        &[("csrf", &token)],
    )
    .assert_status(404);
    assert_eq!(row(&data, chris).state, "failed");
    let anonymous = server.client().get("/practice/admin/outbox");
    assert_ne!(anonymous.status, 200);
    assert!(!anonymous.body.contains("chris@demo.test"));

    // The server is back; an administrator retries one failed email: it is delivered, once.
    sink.up();
    let retry = format!("/practice/admin/outbox/{chris}/retry");
    assert!(
        page.body.contains(&format!("action=\"{retry}\"")),
        "{}",
        page.body
    );
    let forged = admin.post_form(&retry, &[("csrf", "0".repeat(64).as_str())]);
    assert!(
        forged.status == 400 || forged.status == 403,
        "no retry without the CSRF token: {}",
        forged.status
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(row(&data, chris).state, "failed");
    let retried = admin.post_form(&retry, &[("csrf", &page.csrf())]);
    assert_redirect(&retried, "/practice/admin/outbox?notice=retrying");
    let r = wait_for_row(&data, chris, secs(10), "is sent after the retry", |r| {
        r.state == "sent"
    });
    assert!(r.server_reply.starts_with("250"), "{r:#?}");
    assert!(r.last_error.is_empty(), "{r:#?}");
    let received = sink.wait_for_messages(1, secs(5));
    assert_eq!(received[0].rcpt_to, ["chris@demo.test"]);
    assert_eq!(
        scalar(
            &data,
            "SELECT count(*) FROM audit_event WHERE action = 'outbox.retry' AND object = ?",
            &[&format!("email {chris}")]
        ),
        "1"
    );
    let page = admin.get("/practice/admin/outbox");
    let (state, _, answer) = outbox_page_row(&page, "caregiver_invitation", "chris@demo.test");
    assert_eq!(state, "sent");
    assert!(answer.starts_with("250"), "{answer}");
    // A sent email is not "retried" again; the other failed one stays failed.
    admin
        .post_form(&retry, &[("csrf", &page.csrf())])
        .assert_status(404);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(sink.received().len(), 1, "exactly once");
    assert_eq!(row(&data, sam).state, "failed");
}

// ---------------------------------------------------------------------------------------------
// 2. The server down at first and up later; queued emails survive restarts; exactly once.

#[test]
fn emails_wait_for_a_server_that_is_down_and_survive_restarts_delivered_exactly_once() {
    let dir = TempDir::new("mail-restart");
    let data = dir.path().join("data");
    let mut sink = SmtpSink::down();
    let options = with_sink(Options::demo(), sink.port());
    let mut server = Server::start_in(&data, options.clone());
    let demo = outbox(&data);
    assert!(demo.len() >= 2, "{demo:#?}");
    for r in &demo {
        wait_for_row(&data, r.id, secs(10), "fails a first time", |r| {
            r.attempts == 1 && r.state == "queued"
        });
    }

    // Up later, while Carepost runs: the next attempt delivers each once.
    sink.up();
    server.advance_clock(61);
    sink.wait_for_messages(demo.len(), secs(10));
    for r in &demo {
        let r = wait_for_row(&data, r.id, secs(5), "is sent", |r| r.state == "sent");
        assert_eq!(r.attempts, 2, "one failure, then sent: {r:#?}");
        assert!(r.server_reply.starts_with("250"));
    }

    // Down again: a page still answers at once and its email is queued.
    sink.stop();
    let taylor = patient_id(&data, "Taylor", "Nguyen");
    let mut lee = signed_in_staff(&server, "dr.lee@demo.test");
    let sent = invite_patient(&mut lee, &taylor, "taylor.n@example.test");
    assert_eq!(sent.status, 303, "{}", sent.body);
    let invitation = only_row(&data, "invitation", "taylor.n@example.test");
    wait_for_row(&data, invitation.id, secs(10), "fails a first time", |r| {
        r.attempts == 1 && r.state == "queued"
    });

    // Carepost stops with the email queued; it starts again with the server up.
    assert!(server.terminate().success());
    assert_eq!(
        row(&data, invitation.id).state,
        "queued",
        "kept across the stop"
    );
    sink.up();
    let mut server = Server::start_in(&data, options.clone());
    // Due a minute after the failed attempt, which was on the earlier clock (61 s ahead); the
    // restarted clock starts without an offset.
    server.advance_clock(200);
    let received = sink.wait_for_messages(demo.len() + 1, secs(10));
    assert_eq!(sink.received_by("taylor.n@example.test").len(), 1);
    let r = wait_for_row(&data, invitation.id, secs(5), "is sent", |r| {
        r.state == "sent"
    });
    assert_eq!(r.attempts, 2, "{r:#?}");
    let (message, email) = message_of(&received, invitation.id);
    assert_well_formed(&invitation, &message, &email);

    // Nothing goes twice: not later, not after another restart.
    server.advance_clock(DAY);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(server.terminate().success());
    let server = Server::start_in(&data, options);
    server.advance_clock(3 * DAY);
    std::thread::sleep(secs(2));
    assert_eq!(
        sink.received().len(),
        demo.len() + 1,
        "each email exactly once"
    );
    for r in outbox(&data) {
        assert_eq!(r.state, "sent", "{r:#?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Claim before send: an email Carepost was sending when it stopped is not sent again.

#[test]
fn an_email_being_sent_when_carepost_is_killed_is_not_sent_again() {
    let dir = TempDir::new("mail-killed");
    let data = dir.path().join("data");
    let sink = SmtpSink::start();
    sink.hold_data(true);
    let options = with_sink(Options::demo(), sink.port());
    let mut server = Server::start_in(&data, options.clone());
    assert!(
        sink.wait_for_held(secs(10)),
        "the first email reaches the server"
    );
    let rows = outbox(&data);
    let sending: Vec<&Row> = rows.iter().filter(|r| r.state == "sending").collect();
    assert_eq!(sending.len(), 1, "claimed before it was sent: {rows:#?}");
    assert_eq!(
        (sending[0].kind.as_str(), sending[0].recipient.as_str()),
        ("caregiver_invitation", "chris@demo.test"),
        "the oldest email first"
    );
    let chris = sending[0].id;
    let sam = only_row(&data, "invitation", "sam@demo.test").id;
    assert_eq!(row(&data, sam).state, "queued");

    // Killed before the server's answer arrives; the server keeps the message.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    sink.hold_data(false);
    sink.wait_for_messages(1, secs(5));
    assert_eq!(row(&data, chris).state, "sending");

    let server = Server::start_in(&data, options);
    let r = wait_for_row(&data, chris, secs(5), "is marked failed", |r| {
        r.state == "failed"
    });
    assert!(r.last_error.contains(INTERRUPTED), "{r:#?}");
    for other in rows.iter().filter(|r| r.id != chris) {
        let r = wait_for_row(&data, other.id, secs(10), "is sent", |r| r.state == "sent");
        assert_eq!(r.attempts, 1);
    }
    server.advance_clock(DAY);
    std::thread::sleep(secs(2));
    assert_eq!(
        sink.received_by("chris@demo.test").len(),
        1,
        "not sent a second time on its own"
    );
    assert_eq!(sink.received_by("sam@demo.test").len(), 1);
    assert_eq!(sink.received().len(), rows.len());

    let mut admin = signed_in_staff(&server, "admin@demo.test");
    let page = admin.get("/practice/admin/outbox");
    let (state, _, answer) = outbox_page_row(&page, "caregiver_invitation", "chris@demo.test");
    assert!(
        state.starts_with("failed") && state.contains("Retry"),
        "{state}"
    );
    assert!(answer.contains(INTERRUPTED), "{answer}");
}

// ---------------------------------------------------------------------------------------------
// 3. A practice name with non-ASCII letters, markup and a line break: encoded in the headers,
// escaped in the HTML, and never a header of its own.

#[test]
fn an_unusual_practice_name_is_encoded_in_headers_and_escaped_in_html() {
    let sink = SmtpSink::start();
    let server = Server::start(with_sink(Options::demo(), sink.port()));
    let data = server.data.clone();
    let demo = outbox(&data).len();
    sink.wait_for_messages(demo, secs(10));
    let mut admin = signed_in_staff(&server, "admin@demo.test");
    let page = admin.get("/practice/admin/settings");
    let name = "Praxis Müller & Söhne <Nord>\r\nBcc: evil@attacker.test";
    let saved = admin.post_form(
        "/practice/admin/settings",
        &[
            ("csrf", &page.csrf()),
            ("name", name),
            ("phone", "555-0100"),
            ("messaging_enabled", "on"),
            ("invite_policy", "everyone"),
        ],
    );
    assert_eq!(saved.status, 303, "{}", saved.body);
    let stored = scalar(&data, "SELECT name FROM practice", &[]);
    forgot_password(&server, "/portal", "alex@demo.test");
    let reset = only_row(&data, "password_reset", "alex@demo.test");
    assert!(reset.subject.contains(&stored), "{reset:#?}");
    let received = sink.wait_for_messages(demo + 1, secs(10));
    let (message, email) = message_of(&received, reset.id);
    assert_eq!(message.rcpt_to, ["alex@demo.test"], "only the recipient");
    assert!(email.header("Bcc").is_none(), "{:#?}", email.headers);
    assert!(
        !email
            .headers
            .iter()
            .any(|(_, v)| v.contains("evil@attacker.test") && !v.contains("Müller")),
        "no header of its own: {:#?}",
        email.headers
    );
    assert_eq!(email.headers_named("Subject").len(), 1);
    assert_eq!(
        email
            .header("Subject")
            .unwrap()
            .replace(['\r', '\n'], " ")
            .split_whitespace()
            .collect::<Vec<_>>(),
        reset.subject.split_whitespace().collect::<Vec<_>>(),
        "the subject, decoded"
    );
    let first_line = stored.lines().next().unwrap();
    assert!(email.text().contains(first_line), "{}", email.text());
    assert!(
        email
            .html()
            .contains("Praxis Müller &amp; Söhne &lt;Nord&gt;"),
        "escaped in HTML: {}",
        email.html()
    );
    assert!(!email.html().contains("<Nord>"));
    assert_eq!(email.part("text/plain").charset, "utf-8");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(sink.received_by("evil@attacker.test").is_empty());
    assert_eq!(sink.received().len(), demo + 1);
}

// ---------------------------------------------------------------------------------------------
// 7. A permanent refusal fails at once, with the server's words.

#[test]
fn a_permanent_refusal_fails_after_one_attempt_with_the_servers_message() {
    let sink = SmtpSink::start();
    sink.reject_recipients("sam@");
    let server = Server::start(with_sink(Options::demo(), sink.port()));
    let data = server.data.clone();
    let sam = only_row(&data, "invitation", "sam@demo.test");
    let chris = only_row(&data, "caregiver_invitation", "chris@demo.test");
    let r = wait_for_row(&data, sam.id, secs(10), "fails", |r| {
        r.state != "queued" && r.state != "sending"
    });
    assert_eq!(r.state, "failed", "{r:#?}");
    assert_eq!(r.attempts, 1, "{r:#?}");
    assert!(r.last_error.contains("550"), "{r:#?}");
    assert!(r.last_error.contains("mailbox unavailable"), "{r:#?}");
    wait_for_row(&data, chris.id, secs(10), "is sent", |r| r.state == "sent");

    // Never tried again on its own.
    server.advance_clock(DAY);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(row(&data, sam.id).attempts, 1);
    assert_eq!(
        sink.refused().len(),
        1,
        "one RCPT refused: {:?}",
        sink.refused()
    );
    assert!(sink.received_by("sam@demo.test").is_empty());

    let mut admin = signed_in_staff(&server, "admin@demo.test");
    let page = admin.get("/practice/admin/outbox");
    page.assert_status(200);
    let (state, attempts, answer) = outbox_page_row(&page, "invitation", "sam@demo.test");
    assert!(state.starts_with("failed"), "{state}");
    assert_eq!(attempts, "1");
    assert!(
        answer.contains("550") && answer.contains("mailbox unavailable"),
        "{answer}"
    );
    let (state, attempts, answer) =
        outbox_page_row(&page, "caregiver_invitation", "chris@demo.test");
    assert_eq!((state.as_str(), attempts.as_str()), ("sent", "1"));
    assert!(answer.starts_with("250"), "{answer}");

    // DATA refused with 554: the same.
    sink.reject_data(true);
    forgot_password(&server, "/portal", "alex@demo.test");
    let reset = only_row(&data, "password_reset", "alex@demo.test");
    let r = wait_for_row(&data, reset.id, secs(10), "fails", |r| r.state == "failed");
    assert_eq!(r.attempts, 1);
    assert!(r.last_error.contains("554"), "{r:#?}");

    // Fixed on the server's side, an administrator retries: delivered once.
    sink.reject_data(false);
    sink.accept_all_recipients();
    let retried = admin.post_form(
        &format!("/practice/admin/outbox/{}/retry", sam.id),
        &[("csrf", &page.csrf())],
    );
    assert_redirect(&retried, "/practice/admin/outbox?notice=retrying");
    let r = wait_for_row(&data, sam.id, secs(10), "is sent", |r| r.state == "sent");
    assert!(r.server_reply.starts_with("250"));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(sink.received_by("sam@demo.test").len(), 1);
    assert_eq!(
        row(&data, reset.id).state,
        "failed",
        "only the retried email"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. No mail server: emails wait (the demo prints them) and go once a server is configured.

#[test]
fn without_a_mail_server_emails_wait_and_go_out_once_one_is_configured() {
    let dir = TempDir::new("mail-none");
    let data = dir.path().join("data");
    let plain = Options::demo().env("CAREPOST_PUBLIC_URL", PUBLIC_URL);
    let mut server = Server::start_in(&data, plain.clone());
    wait_until(secs(5), "the demo prints its two emails", || {
        server.stdout().matches("--- demo email").count() >= 2
    });
    let out = server.stdout();
    assert!(
        out.contains("To: chris@demo.test") && out.contains("To: sam@demo.test"),
        "{out}"
    );
    assert!(
        server.log().contains("no mail server configured"),
        "{}",
        server.log()
    );

    forgot_password(&server, "/portal", "alex@demo.test");
    wait_until(secs(5), "the demo prints the reset email", || {
        server.stdout().contains("To: alex@demo.test")
    });
    std::thread::sleep(Duration::from_millis(1500));
    let rows = outbox(&data);
    assert_eq!(
        server.stdout().matches("--- demo email").count(),
        rows.len(),
        "each email printed once"
    );
    only_row(&data, "password_reset", "alex@demo.test");
    for r in &rows {
        assert_eq!((r.state.as_str(), r.attempts), ("queued", 0), "{r:#?}");
    }
    let mut admin = signed_in_staff(&server, "admin@demo.test");
    let page = admin.get("/practice/admin/outbox");
    page.assert_status(200)
        .assert_contains("No mail server is configured");
    for r in &rows {
        let (state, attempts, _) = outbox_page_row(&page, &r.kind, &r.recipient);
        assert_eq!(state, NO_SERVER);
        assert_eq!(attempts, "0");
    }
    assert!(server.terminate().success());

    // Restarted with a mail server: everything waiting goes out, once.
    let sink = SmtpSink::start();
    let options = with_sink(Options::demo(), sink.port());
    let mut server = Server::start_in(&data, options.clone());
    let received = sink.wait_for_messages(rows.len(), secs(10));
    for queued in &rows {
        let r = wait_for_row(&data, queued.id, secs(5), "is sent", |r| r.state == "sent");
        assert_eq!(r.attempts, 1);
        let (message, email) = message_of(&received, r.id);
        assert_well_formed(queued, &message, &email);
    }
    assert!(
        !server.stdout().contains("--- demo email"),
        "a configured server is used, not stdout"
    );
    let mut admin = signed_in_staff(&server, "admin@demo.test");
    admin
        .get("/practice/admin/outbox")
        .assert_lacks(NO_SERVER)
        .assert_lacks("No mail server is configured");
    server.advance_clock(DAY);
    std::thread::sleep(secs(2));
    assert!(server.terminate().success());
    let server = Server::start_in(&data, options);
    server.advance_clock(DAY);
    std::thread::sleep(secs(2));
    assert_eq!(sink.received().len(), rows.len(), "exactly once");
}

// ---------------------------------------------------------------------------------------------
// 5. Settings: check-config and `carepost mail test`.

fn check_config(dir: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let data = dir.join("data");
    run(&["check-config", "--data", data.to_str().unwrap()], env, "")
}

#[test]
fn check_config_refuses_unsafe_or_incomplete_mail_settings_naming_the_option() {
    let dir = TempDir::new("mail-config");
    let password_file = dir.path().join("smtp-password");
    std::fs::write(&password_file, "s3cret-from-file\nsecond line ignored\n").unwrap();
    let password_file = password_file.to_str().unwrap().to_owned();
    let missing = dir.path().join("no-such-file").to_str().unwrap().to_owned();
    let a_folder = dir.path().to_str().unwrap().to_owned();
    let host = ("CAREPOST_SMTP_HOST", "smtp.example.org");

    let valid: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![host],
        vec![
            host,
            ("CAREPOST_SMTP_SECURITY", "tls"),
            ("CAREPOST_SMTP_PORT", "465"),
        ],
        vec![
            ("CAREPOST_SMTP_HOST", "localhost"),
            ("CAREPOST_SMTP_SECURITY", "none"),
        ],
        vec![
            ("CAREPOST_SMTP_HOST", "127.0.0.1"),
            ("CAREPOST_SMTP_SECURITY", "none"),
        ],
        vec![
            ("CAREPOST_SMTP_HOST", "::1"),
            ("CAREPOST_SMTP_SECURITY", "none"),
        ],
        vec![
            host,
            ("CAREPOST_SMTP_USERNAME", "clinic"),
            ("CAREPOST_SMTP_PASSWORD", "pw"),
        ],
        vec![
            host,
            ("CAREPOST_SMTP_USERNAME", "clinic"),
            ("CAREPOST_SMTP_PASSWORD_FILE", &password_file),
        ],
    ];
    for env in &valid {
        let (code, out, err) = check_config(dir.path(), env);
        assert_eq!(code, 0, "{env:?} is valid: {out}{err}");
        assert!(out.contains("The configuration is valid."), "{out}");
    }

    // (environment, words the message must contain)
    let invalid: Vec<(Settings, Vec<&str>)> = vec![
        (
            vec![host, ("CAREPOST_SMTP_SECURITY", "none")],
            vec!["smtp.security", "smtp.example.org"],
        ),
        (
            vec![
                ("CAREPOST_SMTP_HOST", "10.0.0.5"),
                ("CAREPOST_SMTP_SECURITY", "none"),
            ],
            vec!["smtp.security", "10.0.0.5"],
        ),
        (
            vec![
                ("CAREPOST_SMTP_HOST", "localhost.example.org"),
                ("CAREPOST_SMTP_SECURITY", "none"),
            ],
            vec!["smtp.security"],
        ),
        (
            vec![host, ("CAREPOST_SMTP_SECURITY", "ssl")],
            vec!["smtp.security"],
        ),
        (
            vec![host, ("CAREPOST_SMTP_USERNAME", "clinic")],
            vec!["smtp.username", "smtp.password"],
        ),
        (
            vec![host, ("CAREPOST_SMTP_PASSWORD", "pw")],
            vec!["smtp.password", "smtp.username"],
        ),
        (
            vec![
                host,
                ("CAREPOST_SMTP_USERNAME", "clinic"),
                ("CAREPOST_SMTP_PASSWORD_FILE", &missing),
            ],
            vec!["smtp.password_file", "no-such-file"],
        ),
        (
            vec![
                host,
                ("CAREPOST_SMTP_USERNAME", "clinic"),
                ("CAREPOST_SMTP_PASSWORD_FILE", &a_folder),
            ],
            vec!["smtp.password_file"],
        ),
        (
            vec![
                host,
                ("CAREPOST_SMTP_PASSWORD", "pw"),
                ("CAREPOST_SMTP_PASSWORD_FILE", &password_file),
            ],
            vec!["smtp.password", "smtp.password_file"],
        ),
        (
            vec![host, ("CAREPOST_SMTP_FROM_ADDRESS", "not an address")],
            vec!["smtp.from_address"],
        ),
        (vec![host, ("CAREPOST_SMTP_PORT", "0")], vec!["smtp.port"]),
        (
            vec![host, ("CAREPOST_SMTP_PORT", "70000")],
            vec!["smtp.port"],
        ),
        (
            vec![host, ("CAREPOST_SMTP_TIMEOUT_SECONDS", "0")],
            vec!["smtp.timeout_seconds"],
        ),
    ];
    for (env, words) in &invalid {
        let (code, out, err) = check_config(dir.path(), env);
        assert_ne!(code, 0, "{env:?} is refused: {out}{err}");
        assert!(!out.contains("valid"), "{out}");
        for word in words {
            assert!(
                err.contains(word),
                "the message for {env:?} names {word:?}: {err}"
            );
        }
        assert!(!err.contains("panicked"), "{err}");
    }

    // The same from a config file.
    let file = dir.path().join("carepost.toml");
    std::fs::write(
        &file,
        "[smtp]\nhost = \"mail.example.org\"\nsecurity = \"none\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let (code, _, err) = run(
        &[
            "check-config",
            "--config",
            file.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ],
        &[],
        "",
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("smtp.security") && err.contains("mail.example.org"),
        "{err}"
    );
    // A server refuses to start on it, too.
    let (code, _, err) = run_for(
        &[
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
        secs(20),
    )
    .expect("carepost serve stops at once on a refused configuration");
    assert_ne!(code, 0);
    assert!(err.contains("smtp.security"), "{err}");
}

fn mail_env(port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("CAREPOST_SMTP_HOST", "127.0.0.1".into()),
        ("CAREPOST_SMTP_PORT", port.to_string()),
        ("CAREPOST_SMTP_SECURITY", "none".into()),
        ("CAREPOST_SMTP_FROM_ADDRESS", FROM_ADDRESS.into()),
        ("CAREPOST_SMTP_FROM_NAME", FROM_NAME.into()),
    ]
}

fn mail_test(port: u16, address: &str, extra: &[(&str, &str)]) -> (i32, String, String) {
    let env = mail_env(port);
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra);
    run(&["mail", "test", address], &all, "")
}

#[test]
fn mail_test_sends_one_email_and_prints_the_servers_answer() {
    let mut sink = SmtpSink::start();
    let (code, out, err) = mail_test(sink.port(), "me@clinic.example.test", &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("250"), "the server's answer is printed: {out}");
    assert!(out.contains("SINK1"), "the server's own words: {out}");
    let received = sink.wait_for_messages(1, secs(5));
    assert_eq!(received[0].rcpt_to, ["me@clinic.example.test"]);
    assert_eq!(received[0].mail_from, FROM_ADDRESS);
    let email = received[0].parse();
    assert_eq!(email.header("Subject"), Some("Carepost test email"));
    assert!(email
        .header("To")
        .unwrap()
        .contains("me@clinic.example.test"));
    assert!(email.header("From").unwrap().contains(FROM_NAME));
    assert!(
        email.text().contains("email delivery works"),
        "{}",
        email.text()
    );

    // Refused by the server: non-zero, with the server's words.
    sink.reject_recipients("nobody@");
    let (code, out, err) = mail_test(sink.port(), "nobody@clinic.example.test", &[]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("550") && err.contains("mailbox unavailable"),
        "{err}"
    );
    assert!(err.contains("Not sent"), "{err}");

    // STARTTLS asked of a server that does not offer it: refused, never sent in clear.
    let (code, out, err) = mail_test(
        sink.port(),
        "me@clinic.example.test",
        &[("CAREPOST_SMTP_SECURITY", "starttls")],
    );
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("Not sent"), "{err}");
    assert_eq!(sink.received().len(), 1);

    // Nothing listening: non-zero, saying so.
    sink.stop();
    let (code, out, err) = mail_test(sink.port(), "me@clinic.example.test", &[]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("Not sent"), "{err}");
    assert!(
        err.to_lowercase().contains("refused"),
        "the reason is given: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    // No server configured, or not an address.
    let (code, _, err) = run(&["mail", "test", "me@clinic.example.test"], &[], "");
    assert_ne!(code, 0);
    assert!(err.contains("smtp.host"), "{err}");
    let (code, _, err) = mail_test(sink.port(), "not an address", &[]);
    assert_ne!(code, 0);
    assert!(err.contains("not an email address"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// smtp.timeout_seconds: a server that accepts the connection and then says nothing.

/// Runs the binary; kills it after `limit`. None when it had to be killed.
fn run_for(
    args: &[&str],
    env: &[(&str, String)],
    limit: Duration,
) -> Option<(i32, String, String)> {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    match wait_timeout(&mut child, limit) {
        Some(_) => {
            let out = child.wait_with_output().unwrap();
            Some((
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ))
        }
        None => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    }
}

// These two fail today: with smtp.security = "none", src/mail.rs `deliver` calls mail-send's
// `connect_plain`, which bounds only the TCP connect by the timeout, not the wait for the 220
// greeting; nothing else bounds the attempt. A relay that accepts and never greets blocks the
// mail thread for good (its email stays 'sending', no other email goes out) and `carepost mail
// test` never returns.

#[test]
fn a_silent_mail_server_is_given_up_after_the_timeout_by_the_mail_thread() {
    let sink = SmtpSink::start();
    sink.stall_greeting(true);
    let server = Server::start(
        with_sink(Options::demo(), sink.port()).env("CAREPOST_SMTP_TIMEOUT_SECONDS", "2"),
    );
    let data = server.data.clone();
    let first = outbox(&data)[0].id;
    assert!(sink.wait_for_connections(1, secs(10)));
    // With smtp.timeout_seconds = 2 the attempt ends within seconds and is put back for later;
    // the mail thread must not wait forever for a greeting.
    let r = wait_for_row(
        &data,
        first,
        secs(10),
        "gives up on the silent server",
        |r| r.state == "queued" && r.attempts == 1,
    );
    assert!(!r.last_error.is_empty(), "{r:#?}");

    // Once the server speaks again, every email goes out, once.
    sink.stall_greeting(false);
    server.advance_clock(7200);
    let all = outbox(&data).len();
    sink.wait_for_messages(all, secs(20));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(sink.received().len(), all);
}

#[test]
fn mail_test_gives_up_on_a_silent_server_after_the_timeout() {
    let sink = SmtpSink::start();
    sink.stall_greeting(true);
    let mut env = mail_env(sink.port());
    env.push(("CAREPOST_SMTP_TIMEOUT_SECONDS", "2".into()));
    let outcome = run_for(&["mail", "test", "me@clinic.example.test"], &env, secs(15));
    let (code, out, err) =
        outcome.expect("`carepost mail test` ends within 15 s with smtp.timeout_seconds = 2");
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("Not sent"), "{err}");
}

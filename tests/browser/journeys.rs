//! The journeys of issue #8, each a person's task from start to end.

use crate::driver::Browser;
use crate::harness::{db_rows, Options, Server, TempDir, DEMO_PASSWORD};
use crate::smtp_sink::{Received, SmtpSink};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const ALL: &[crate::Journey] = &[
    ("first_run_setup", first_run_setup),
    ("invite_and_register", invite_and_register),
    (
        "message_with_attachment_and_reply",
        message_with_attachment_and_reply,
    ),
    ("physician_starts_a_thread", physician_starts_a_thread),
    (
        "caregiver_registers_and_writes",
        caregiver_registers_and_writes,
    ),
    ("revoked_patient", revoked_patient),
    (
        "refused_upload_keeps_the_message",
        refused_upload_keeps_the_message,
    ),
    ("keyboard_only", keyboard_only),
    ("errors_are_announced", errors_are_announced),
    ("the_checks_can_fail", the_checks_can_fail),
    ("every_page_passes_the_checks", every_page_passes_the_checks),
];

const NEW_PASSWORD: &str = "Correct-horse-9";

// ---------------------------------------------------------------------------------------------
// Setting the scene

/// The real binary with the SMTP sink as its mail server; `demo` seeds the demo practice.
fn server_with_sink(demo: bool) -> (Server, SmtpSink) {
    let sink = SmtpSink::start();
    let mut options = if demo {
        Options::demo()
    } else {
        Options::default()
    };
    // Without a public URL, links in emails point at the address the server bound.
    options = options
        .env("CAREPOST_SMTP_HOST", "127.0.0.1")
        .env("CAREPOST_SMTP_PORT", &sink.port().to_string())
        .env("CAREPOST_SMTP_SECURITY", "none")
        .env("CAREPOST_SMTP_FROM_ADDRESS", "portal@clinic.example.test");
    let server = Server::start(options);
    (server, sink)
}

fn sign_in_portal(b: &mut Browser, email: &str, password: &str) {
    b.visit("/portal/login");
    b.fill("Email address", email);
    b.fill("Password", password);
    b.press("Sign in");
    b.assert_no_text("did not match");
}

fn sign_in_practice(b: &mut Browser, email: &str, password: &str) {
    b.visit("/practice/login");
    b.fill("Email address", email);
    b.fill("Password", password);
    b.press("Sign in");
    b.assert_no_text("did not match");
}

/// Finds a patient by `search` on the Patients page and opens the row `listed`.
fn open_patient(b: &mut Browser, search: &str, listed: &str) {
    b.click_link("Patients");
    b.fill("Search", search);
    b.press("Search");
    b.click_link(listed);
}

/// Fills the registration form (opened from the emailed link) for a new account.
fn register(b: &mut Browser, date_label: &str, date: &str, pin: &str, email: &str) {
    b.fill(date_label, date);
    b.fill("PIN", pin);
    b.fill("Email address", email);
    b.fill("Password", NEW_PASSWORD);
    b.fill("Password again", NEW_PASSWORD);
    b.press("Register");
}

fn sign_out(b: &mut Browser) {
    b.press("Sign out");
}

/// The emails the sink accepted for `address`, waiting up to 15 s for `count` of them.
fn emails_to(sink: &SmtpSink, address: &str, count: usize) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = sink.received_by(address);
        if got.len() >= count || Instant::now() > deadline {
            assert!(
                got.len() >= count,
                "expected {count} email(s) to {address}, got {}",
                got.len()
            );
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The first link in an email's text part that contains `path_part`.
fn link_in(email: &Received, path_part: &str) -> String {
    let text = email.parse().text().to_string();
    text.split_whitespace()
        .find(|w| w.starts_with("http") && w.contains(path_part))
        .unwrap_or_else(|| panic!("no link containing {path_part} in:\n{text}"))
        .trim_end_matches(['.', ',', ')', '>'])
        .to_string()
}

/// Waits until the sink has received nothing new for 2 s (the demo's own invitations are
/// sent at start) and returns how many emails it holds.
fn quiet(sink: &SmtpSink) -> usize {
    let mut seen = sink.received().len();
    let mut since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    while since.elapsed() < Duration::from_secs(2) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let now = sink.received().len();
        if now != seen {
            seen = now;
            since = Instant::now();
        }
    }
    seen
}

/// Emails Carepost has queued so far, sent or not: the outbox is written in the same
/// transaction as the message that causes an email, so this is exact the moment a page returns.
fn outbox_rows(server: &Server) -> usize {
    let rows = db_rows(&server.data, "SELECT count(*) FROM outbox", &[]);
    rows[0][0].parse().unwrap()
}

/// A small real PDF.
fn pdf_file(dir: &TempDir) -> PathBuf {
    let path = dir.path().join("home-readings.pdf");
    let body = "%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n\
                2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n\
                3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>endobj\n\
                trailer<</Root 1 0 R>>\n%%EOF\n";
    std::fs::write(&path, body).unwrap();
    path
}

/// The 6-digit PIN shown on a patient page after an invitation.
fn pin_on_page(b: &Browser) -> String {
    let v = b.eval("const p = document.querySelector('.pin'); return p ? p.innerText.trim() : '';");
    let pin = v.as_str().unwrap_or_default().to_string();
    assert_eq!(
        pin.len(),
        6,
        "a 6-digit PIN is shown to staff on {}",
        b.path()
    );
    pin
}

// ---------------------------------------------------------------------------------------------
// Journeys

/// First-run setup → the administrator enables messaging and adds a physician and an NP, who
/// each get an email with a link to set their password.
fn first_run_setup() {
    let (server, sink) = server_with_sink(false);
    let setup = server.setup_path().expect("the setup link is printed");
    let mut b = Browser::open("setup", &server.base);
    b.visit(&setup);
    b.screenshots("setup");
    b.fill("Practice name", "Harbor Family Medicine");
    b.fill("Your name", "Pat Owner");
    b.fill("Your email address", "owner@harbor.test");
    b.fill("Degree or title", "Practice manager");
    b.fill("Password", NEW_PASSWORD);
    b.fill("Password again", NEW_PASSWORD);
    b.press("Create the practice");
    b.assert_text("Harbor Family Medicine");

    b.click_link("Practice settings");
    b.tick("Patient messaging");
    b.press("Save settings");
    b.assert_text("saved");
    b.screenshots("settings");

    for (name, email, degree, level) in [
        ("Dr. Ana Silva", "silva@harbor.test", "MD", "Level 4"),
        ("Noor Haddad", "haddad@harbor.test", "NP", "Level 3"),
    ] {
        b.click_link("Users");
        b.click_link_containing("Add a user");
        b.fill("Name", name);
        b.fill("Sign-in email", email);
        b.fill("Degree or title", degree);
        b.choose("Access level", level);
        b.press("Add the user");
        b.assert_text("A link to choose a password is on its way by email.");
        let mail = emails_to(&sink, email, 1);
        let link = link_in(&mail[0], "/practice/reset/");
        assert!(link.starts_with(&server.base), "{link}");
    }
    b.click_link("Users");
    b.assert_text("Dr. Ana Silva");
    b.assert_text("Noor Haddad");
    b.screenshots("users");

    // The NP follows the emailed link, sets a password and signs in.
    let link = link_in(
        &emails_to(&sink, "haddad@harbor.test", 1)[0],
        "/practice/reset/",
    );
    sign_out(&mut b);
    b.visit(&link);
    b.fill("New password", NEW_PASSWORD);
    b.fill("New password again", NEW_PASSWORD);
    b.press_in_form_of("New password", "Save the new password");
    sign_in_practice(&mut b, "haddad@harbor.test", NEW_PASSWORD);
    b.assert_text("Noor Haddad");
    b.close();
}

/// Staff invite a patient → the email arrives without the PIN → the patient registers with
/// date of birth and PIN.
fn invite_and_register() {
    let (server, sink) = server_with_sink(true);
    let mut b = Browser::open("invite", &server.base);
    sign_in_practice(&mut b, "rn.cho@demo.test", DEMO_PASSWORD);
    open_patient(&mut b, "Nguyen", "Nguyen, Taylor");
    b.assert_text("Not invited");
    b.click_link_containing("Invite");
    b.screenshots("invite-form");
    b.press("Send the invitation");
    b.assert_text("Invited");
    let pin = pin_on_page(&b);
    b.screenshots("patient-invited");

    let mail = emails_to(&sink, "taylor@demo.test", 1);
    let text = mail[0].parse().text().to_string();
    assert!(!text.contains(&pin), "the PIN is never emailed:\n{text}");
    let html = mail[0].parse().html().to_string();
    assert!(!html.contains(&pin), "the PIN is never emailed (HTML part)");
    let link = link_in(&mail[0], "/portal/register/");
    sign_out(&mut b);

    b.visit(&link);
    b.screenshots("register");
    // Typed as the hint shows it: month/day/year.
    register(
        &mut b,
        "Your date of birth",
        "11/30/1958",
        &pin,
        "taylor@demo.test",
    );
    b.assert_text("Taylor");
    b.screenshots("portal-home");
    sign_out(&mut b);
    sign_in_portal(&mut b, "taylor@demo.test", NEW_PASSWORD);
    b.assert_text("Messages");
    b.close();
}

/// The patient writes to the NP with a PDF → the NP sees the unread count, reads, files the
/// attachment to the chart and replies → the patient sees the reply, and no email was sent.
fn message_with_attachment_and_reply() {
    let (server, _sink) = server_with_sink(true);
    let files = TempDir::new("browser-files");
    let pdf = pdf_file(&files);
    let mut b = Browser::open("message", &server.base);

    sign_in_portal(&mut b, "alex@demo.test", DEMO_PASSWORD);
    b.click_link("Messages");
    b.screenshots("portal-mailbox");
    b.click_link("New message");
    b.assert_text("25 MB");
    b.assert_text("PDF");
    b.screenshots("portal-compose");
    b.choose("To", "Jamie Kim");
    b.fill("Subject", "Knee swelling");
    b.fill(
        "Message",
        "My left knee has been swollen since Tuesday. The readings from my home cuff are attached.",
    );
    b.attach("Attach a file", &pdf);
    b.press("Send");
    b.assert_text("Knee swelling");
    b.assert_text("home-readings.pdf");
    b.screenshots("portal-sent");
    sign_out(&mut b);
    let emails_before = outbox_rows(&server);

    sign_in_practice(&mut b, "np.kim@demo.test", DEMO_PASSWORD);
    b.assert_text("2 conversations in your inbox have unread messages.");
    let nav =
        b.eval("return [...document.querySelectorAll('nav a')].map(a => a.innerText).join('|');");
    let nav = nav.as_str().unwrap_or_default();
    assert!(
        nav.contains("Messages 2 unread") || nav.contains("Messages 2"),
        "the practice navigation shows 2 unread threads for Kim: {nav}"
    );
    b.click_link_containing("Messages");
    b.assert_text("Alex Rivera");
    b.assert_text("Born 1984-03-14");
    b.screenshots("practice-inbox");
    b.click_link("Knee swelling");
    b.assert_text("Enrolled");
    b.assert_text("home-readings.pdf");
    b.screenshots("practice-thread");
    b.choose("File to chart as", "Other");
    b.press_in_form_of("File to chart as", "Add to chart");
    b.assert_text("filed in the chart");
    b.choose("Colleague", "Dr. Morgan Lee");
    b.fill(
        "Internal note",
        "Knee effusion? Please take a look if you have a minute.",
    );
    b.press("Forward");
    b.assert_text("Knee effusion?");
    b.fill(
        "Message",
        "Please rest it and use ice tonight. We can see you tomorrow at 9.",
    );
    b.press("Send reply");
    b.assert_text("use ice tonight");
    sign_out(&mut b);

    sign_in_portal(&mut b, "alex@demo.test", DEMO_PASSWORD);
    b.click_link("Messages");
    b.click_link("Knee swelling");
    b.assert_text("use ice tonight");
    b.assert_text("With Jamie Kim, NP");
    b.assert_no_text("Morgan Lee");
    b.assert_no_text("Knee effusion");
    b.screenshots("portal-thread");
    assert_eq!(
        outbox_rows(&server),
        emails_before,
        "a reply in a thread the patient started queues no email"
    );
    b.close();
}

/// The physician starts a new thread → exactly one email arrives, without its content.
fn physician_starts_a_thread() {
    let (server, sink) = server_with_sink(true);
    let mut b = Browser::open("new-thread", &server.base);
    sign_in_practice(&mut b, "dr.lee@demo.test", DEMO_PASSWORD);
    quiet(&sink);
    let before = sink.received_by("alex@demo.test").len();
    let queued = outbox_rows(&server);
    b.click_link_containing("Messages");
    b.click_link("New message to a patient");
    b.fill("Find the patient", "Rivera");
    b.press("Find");
    b.click_link("Write to Alex Rivera");
    b.screenshots("practice-compose");
    b.fill("Subject", "Your lab results");
    b.fill(
        "Message",
        "Your cholesterol came back lower than last year. Keep it up.",
    );
    b.press("Send");
    b.assert_text("Your lab results");
    emails_to(&sink, "alex@demo.test", before + 1);
    quiet(&sink);
    let mail = sink.received_by("alex@demo.test");
    assert_eq!(mail.len(), before + 1, "exactly one email");
    assert_eq!(outbox_rows(&server), queued + 1, "exactly one email queued");
    let email = mail[before].parse();
    let whole = format!(
        "{}\n{}\n{}",
        email.header("Subject").unwrap_or_default(),
        email.text(),
        email.html()
    );
    for secret in ["cholesterol", "lab results", "Keep it up"] {
        assert!(
            !whole.contains(secret),
            "no health information in the email:\n{whole}"
        );
    }
    b.close();
}

/// Staff invite a caregiver → the caregiver registers with the patient's date of birth and the
/// PIN → writes on the patient's behalf, and the practice sees who wrote.
fn caregiver_registers_and_writes() {
    let (server, sink) = server_with_sink(true);
    let mut b = Browser::open("caregiver", &server.base);
    sign_in_practice(&mut b, "rn.cho@demo.test", DEMO_PASSWORD);
    open_patient(&mut b, "Nguyen", "Nguyen, Taylor");
    b.click_link("Invite a caregiver");
    b.fill("Caregiver's name", "Lee Nguyen");
    b.fill("Relationship to the patient", "Son");
    b.fill("Email", "lee.nguyen@demo.test");
    b.press("Send the invitation");
    let pin = pin_on_page(&b);
    sign_out(&mut b);

    let link = link_in(
        &emails_to(&sink, "lee.nguyen@demo.test", 1)[0],
        "/portal/register/",
    );
    b.visit(&link);
    register(
        &mut b,
        "Their date of birth",
        "1958-11-30",
        &pin,
        "lee.nguyen@demo.test",
    );
    b.click_link("Messages");
    b.click_link("New message");
    b.choose("To", "Morgan Lee");
    b.fill("Subject", "Mom's prescription");
    b.fill(
        "Message",
        "Writing for my mother: her refill ran out yesterday.",
    );
    b.press("Send");
    b.assert_text("Mom's prescription");
    b.screenshots("caregiver-sent");
    sign_out(&mut b);

    sign_in_practice(&mut b, "dr.lee@demo.test", DEMO_PASSWORD);
    b.click_link_containing("Messages");
    b.click_link("Mom's prescription");
    b.assert_text("Taylor Nguyen");
    b.assert_text("Lee Nguyen");
    b.close();
}

/// The practice revokes a signed-in patient; the patient's next click shows the sentence.
fn revoked_patient() {
    let (server, _sink) = server_with_sink(true);
    let mut patient = Browser::open("revoked", &server.base);
    sign_in_portal(&mut patient, "alex@demo.test", DEMO_PASSWORD);
    patient.assert_text("Messages");

    let mut staff = Browser::open("revoke", &server.base);
    sign_in_practice(&mut staff, "admin@demo.test", DEMO_PASSWORD);
    open_patient(&mut staff, "Rivera", "Rivera, Alex");
    staff.press("Revoke portal access");
    staff.assert_text("Portal access is revoked");
    staff.close();

    patient.click_link("Messages");
    patient.assert_text("Ask your doctor to provide access to your health records.");
    patient.screenshots("revoked");
    patient.close();
}

/// A 30 MB file is refused with a clear message, and everything typed is still in the form.
fn refused_upload_keeps_the_message() {
    let (server, _sink) = server_with_sink(true);
    let files = TempDir::new("browser-big");
    let big = files.path().join("scan.pdf");
    let mut bytes = b"%PDF-1.4\n".to_vec();
    bytes.resize(30 * 1024 * 1024, b'0');
    std::fs::write(&big, bytes).unwrap();
    let mut b = Browser::open("too-big", &server.base);
    sign_in_portal(&mut b, "alex@demo.test", DEMO_PASSWORD);
    b.click_link("Messages");
    b.click_link("New message");
    b.choose("To", "Jamie Kim");
    b.fill("Subject", "My scan");
    b.fill(
        "Message",
        "Here is the scan from the imaging center, all 40 pages.",
    );
    b.attach("Attach a file", &big);
    b.press("Send");
    b.assert_text("25 MB");
    assert_eq!(b.value_of("Subject"), "My scan");
    assert_eq!(
        b.value_of("Message"),
        "Here is the scan from the imaging center, all 40 pages."
    );
    b.screenshots("too-big");
    b.close();
}

/// Signing in, reading and replying with the keyboard alone, with focus always visible.
fn keyboard_only() {
    let (server, _sink) = server_with_sink(true);
    let mut b = Browser::open("keyboard", &server.base);
    b.visit("/practice/login");
    b.tab_to("Email address");
    assert!(b.focus_is_visible(), "focus is visible on the email field");
    b.type_text("np.kim@demo.test");
    b.tab_to("Password");
    b.type_text(DEMO_PASSWORD);
    b.tab_to("Sign in");
    assert!(
        b.focus_is_visible(),
        "focus is visible on the sign-in button"
    );
    b.enter();
    b.tab_to("Messages 1 unread");
    assert!(
        b.focus_is_visible(),
        "focus is visible on a navigation link"
    );
    b.enter();
    b.tab_to("Blood pressure readings");
    assert!(b.focus_is_visible(), "focus is visible on an inbox row");
    b.enter();
    b.assert_text("Should I still take the morning dose");
    b.tab_to("Message");
    b.type_text("Yes, take it after measuring.");
    b.tab_to("Send reply");
    b.enter();
    b.assert_text("Yes, take it after measuring.");
    b.tab_to("Archive");
    assert!(b.focus_is_visible(), "focus is visible on an action button");
    b.enter();
    b.tab_to("Sign out");
    b.enter();

    // A patient writes a new message, choosing the recipient with the arrow keys.
    b.visit("/portal/login");
    b.tab_to("Email address");
    b.type_text("alex@demo.test");
    b.tab_to("Password");
    b.type_text(DEMO_PASSWORD);
    b.enter();
    b.tab_to("Write to the practice");
    b.enter();
    b.tab_to("To");
    assert!(b.focus_is_visible(), "focus is visible on a select");
    b.key("\u{e015}\u{e015}"); // Arrow down twice: the second practitioner.
    b.tab_to("Subject");
    b.type_text("Typed without a mouse");
    b.tab_to("Message");
    b.type_text("Every step of this message was made with the keyboard.");
    b.tab_to("Send");
    b.enter();
    b.assert_text("Every step of this message was made with the keyboard.");
    b.assert_text("Jamie Kim");
    b.close();
}

/// A form sent with mistakes: a summary at the top links to each field, and each field says
/// what is wrong next to it, described to screen readers.
fn errors_are_announced() {
    let (server, _sink) = server_with_sink(true);
    let mut b = Browser::open("errors", &server.base);
    sign_in_portal(&mut b, "alex@demo.test", DEMO_PASSWORD);
    b.click_link("Messages");
    b.click_link("New message");
    b.fill("Subject", "Question");
    b.press("Send");
    let report = b.eval(
        "const s = document.querySelector('[role=alert]');
         const links = s ? [...s.querySelectorAll('a')].map(a => a.getAttribute('href')) : [];
         const fields = [...document.querySelectorAll('[aria-invalid=true]')].map(f => {
             const ids = (f.getAttribute('aria-describedby') || '').split(' ');
             const said = ids.map(i => document.getElementById(i)).filter(Boolean)
                 .map(e => e.innerText).join(' ');
             const error = document.getElementById(f.id + '-error');
             return {id: f.id, said, error: error ? error.innerText : ''};
         });
         const form = document.querySelector('main form[enctype]');
         const before = s && form
             && (s.compareDocumentPosition(form) & Node.DOCUMENT_POSITION_FOLLOWING) !== 0;
         return {summary: s ? s.innerText : '', links, fields,
                 before};",
    );
    let summary = report["summary"].as_str().unwrap_or_default();
    assert!(!summary.is_empty(), "an error summary is shown");
    let links: Vec<&str> = report["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    assert!(
        links.contains(&"#recipient"),
        "summary links to the field: {links:?}"
    );
    assert!(
        links.contains(&"#body"),
        "summary links to the field: {links:?}"
    );
    assert_eq!(
        report["before"], true,
        "the summary comes before the form: {report}"
    );
    for field in report["fields"].as_array().unwrap() {
        let said = field["said"].as_str().unwrap_or_default();
        let error = field["error"].as_str().unwrap_or_default();
        assert!(
            !error.is_empty() && said.contains(error),
            "field {} describes its error \"{error}\" to screen readers (it says \"{said}\")",
            field["id"]
        );
    }
    let in_page_order: Vec<String> = report["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("#{}", f["id"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(
        links, in_page_order,
        "the summary lists problems in the form's order"
    );
    assert_eq!(b.value_of("Subject"), "Question");
    b.screenshots("compose-errors");
    b.close();
}

/// The checks every page gets are real: a page without a proper title, with a script, an
/// unlabelled field, an image without text and pale text is reported on each count; a page
/// wider than the phone is caught by the overflow check.
fn the_checks_can_fail() {
    let (server, _sink) = server_with_sink(false);
    let mut b = Browser::open("checks", &server.base);
    b.visit_unchecked(
        "data:text/html;charset=utf-8,<html lang=en><title>Bad page</title><main>\
         <img src=x.png><input type=text><script>1</script>\
         <p style='color:%23ccc;background:%23fff'>pale text</p></main>",
    );
    let problems = b.page_problems().join("\n");
    for found in [
        "title:",
        "script:",
        "image-alt (",
        "label (",
        "color-contrast (",
    ] {
        assert!(
            problems.contains(found),
            "the checks report {found}:\n{problems}"
        );
    }
    b.visit_unchecked(
        "data:text/html;charset=utf-8,<html lang=en><meta name=viewport \
         content='width=device-width'><title>Wide – test</title><main>\
         <div style='width:900px'>wide</div></main>",
    );
    b.resize(crate::driver::PHONE);
    assert!(
        !b.overflow().is_empty(),
        "a page wider than a phone is caught"
    );
    b.visit_unchecked(
        "data:text/html;charset=utf-8,<html lang=en><title>Jargon – test</title><main>\
         <p>Your thread %2342 was saved (session token expired).</p></main>",
    );
    let jargon = b.jargon().join("\n");
    for found in ["\"thread\"", "\"session\"", "\"token\"", "#42"] {
        assert!(
            jargon.contains(found),
            "the jargon check reports {found}:\n{jargon}"
        );
    }
    b.close();
}

/// GET routes that are not pages, or whose page another journey opens.
const NOT_IN_TOUR: &[(&str, &str)] = &[
    ("/healthz", "plain text for monitoring"),
    ("/assets/{file}", "the style sheet"),
    ("/practice/messages/{id}/files/{file}", "a download"),
    ("/portal/messages/{id}/files/{file}", "a download"),
    ("/practice/admin/audit.csv", "a CSV export"),
    ("/setup/{token}", "first_run_setup"),
    ("/practice/reset/{token}", "first_run_setup"),
];

/// Every page of both views, opened as the people who use it: axe-core, the title, the
/// no-script and plain-language checks on each, and no sideways overflow at 320 px, phone or
/// desktop width. The tour must cover every GET route in `src/web/routes.rs` that is a page.
fn every_page_passes_the_checks() {
    let (server, sink) = server_with_sink(true);
    let mut b = Browser::open("tour", &server.base);
    let mut seen: Vec<&str> = Vec::new();
    let mut page = |b: &mut Browser, route: &'static str, path: Option<&str>, name: &str| {
        if let Some(path) = path {
            b.visit(path);
        }
        b.screenshots(name);
        seen.push(route);
    };

    // Signed out.
    page(&mut b, "/", Some("/"), "start");
    page(
        &mut b,
        "/practice/login",
        Some("/practice/login"),
        "practice-sign-in",
    );
    page(
        &mut b,
        "/practice/forgot",
        Some("/practice/forgot"),
        "practice-forgot",
    );
    page(
        &mut b,
        "/portal/login",
        Some("/portal/login"),
        "portal-sign-in",
    );
    page(
        &mut b,
        "/portal/forgot",
        Some("/portal/forgot"),
        "portal-forgot",
    );
    let out = server.stdout();
    let sam = out
        .split_whitespace()
        .find(|w| w.contains("/portal/register/"))
        .expect("the demo prints Sam's link");
    page(&mut b, "/portal/register/{token}", Some(sam), "register");
    b.visit("/portal/forgot");
    b.fill("Email address", "alex@demo.test");
    b.press("Email me a link");
    let deadline = Instant::now() + Duration::from_secs(15);
    let reset = loop {
        let found = sink
            .received_by("alex@demo.test")
            .into_iter()
            .find(|m| m.parse().text().contains("/portal/reset/"));
        match found {
            Some(mail) => break mail,
            None if Instant::now() > deadline => panic!("no password link reached Alex"),
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let link = link_in(&reset, "/portal/reset/");
    page(&mut b, "/portal/reset/{token}", Some(&link), "portal-reset");
    b.visit("/no/such/page");
    b.assert_text("Page not found");

    // The practice, as an administrator.
    sign_in_practice(&mut b, "admin@demo.test", DEMO_PASSWORD);
    for (route, name) in [
        ("/practice", "practice-home"),
        ("/practice/account", "practice-account"),
        ("/practice/patients", "patients"),
        ("/practice/patients/new", "patient-new"),
        ("/practice/messages", "inbox"),
        ("/practice/messages/new", "practice-new-message"),
        ("/practice/admin/users", "users"),
        ("/practice/admin/users/new", "user-new"),
        ("/practice/admin/settings", "settings"),
        ("/practice/admin/audit", "audit"),
        ("/practice/admin/outbox", "outbox"),
    ] {
        page(&mut b, route, Some(route), name);
    }
    b.visit("/practice/messages?box=archived");
    b.visit("/practice/messages?box=sent");
    b.click_link("Users");
    b.click_link("Jamie Kim");
    page(&mut b, "/practice/admin/users/{id}", None, "user");
    b.click_link("Patients");
    b.click_link("Patel, Sam");
    page(&mut b, "/practice/patients/{id}", None, "patient");
    let sam_page = b.path();
    page(
        &mut b,
        "/practice/patients/{id}/edit",
        Some(&format!("{sam_page}/edit")),
        "patient-edit",
    );
    page(
        &mut b,
        "/practice/patients/{id}/invite",
        Some(&format!("{sam_page}/invite")),
        "invite",
    );
    page(
        &mut b,
        "/practice/patients/{id}/caregivers/new",
        Some(&format!("{sam_page}/caregivers/new")),
        "caregiver-invite",
    );
    sign_out(&mut b);

    // The practice thread, as the physician it was written to.
    sign_in_practice(&mut b, "dr.lee@demo.test", DEMO_PASSWORD);
    b.click_link_containing("Messages");
    b.click_link("School sports form");
    // Riley has no account of their own; the thread says who reads replies.
    b.assert_text("A caregiver has access and reads replies.");
    page(&mut b, "/practice/messages/{id}", None, "practice-thread");
    sign_out(&mut b);

    // The portal, as a parent holding two children's records.
    sign_in_portal(&mut b, "jordan@demo.test", DEMO_PASSWORD);
    page(&mut b, "/portal", None, "portal-home");
    for (route, name) in [
        ("/portal/messages", "portal-messages"),
        ("/portal/messages/new", "portal-new-message"),
        ("/portal/account", "portal-account"),
    ] {
        page(&mut b, route, Some(route), name);
    }
    b.choose("Viewing", "Riley");
    b.press("Switch");
    b.assert_text("Riley Morgan");
    b.click_link("Messages");
    b.click_link("School sports form");
    page(&mut b, "/portal/messages/{id}", None, "portal-thread");
    b.close();

    let routes = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/web/routes.rs"),
    )
    .unwrap();
    let missing: Vec<&str> = routes
        .split("route(\"GET\", \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|r| !seen.contains(r) && !NOT_IN_TOUR.iter().any(|(n, _)| n == r))
        .collect();
    assert!(
        missing.is_empty(),
        "pages the tour does not open: {missing:?}"
    );
}

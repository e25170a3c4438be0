//! Secure messaging, end to end against the real binary: the portal's Messages section (only
//! with messaging enabled and an active record), the mailbox, writing to the practice's NPs,
//! PAs and physicians, the practice inbox and its thread actions, staff-started messages and
//! their notification emails, who may open what, and the audit trail.
//!
//! Stored rows (`thread`, `message`, `outbox`, `audit_event`, `chart_document`) are read with
//! python3's sqlite3 module while the server runs.

use crate::harness::*;

const DISCLAIMER: &str = "Messages are only for non-urgent issues. Call your doctor's office if you need an immediate response. Dial 911 for life-threatening situations.";
const PRACTICE: &str = "Demo Family Practice";
const JORDAN_FOR_RILEY: &str = "Jordan Morgan (caregiver) on behalf of Riley Morgan";
const SPORTS: &str = "School sports form";
const FOLLOW_UP: &str = "Follow-up after your visit";
const BLOOD_PRESSURE: &str = "Blood pressure readings";

// ---------------------------------------------------------------------------------------------
// Helpers: signing in and settings

#[track_caller]
fn staff(server: &Server, email: &str) -> Client {
    let mut client = server.client();
    assert_redirect(&client.login_staff(email, DEMO_PASSWORD), "/practice");
    client
}

#[track_caller]
fn portal(server: &Server, email: &str) -> Client {
    let mut client = server.client();
    assert_redirect(&client.login_portal(email, DEMO_PASSWORD), "/portal");
    client
}

#[track_caller]
fn assert_redirect(response: &Response, to: &str) {
    assert_eq!(
        (response.status, response.location()),
        (303, to),
        "expected a redirect to {to}; body:\n{}",
        response.body
    );
}

/// Posts `fields` with the CSRF token of a page that changes nothing when fetched.
fn post_signed(
    client: &mut Client,
    token_page: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> Response {
    let token = client.get(token_page).csrf();
    let mut all = vec![("csrf", token.as_str())];
    all.extend_from_slice(fields);
    client.post_form(path, &all)
}

fn staff_post(client: &mut Client, path: &str, fields: &[(&str, &str)]) -> Response {
    post_signed(client, "/practice/account", path, fields)
}

fn portal_post(client: &mut Client, path: &str, fields: &[(&str, &str)]) -> Response {
    post_signed(client, "/portal/account", path, fields)
}

#[track_caller]
fn act_for(client: &mut Client, patient: &str) {
    assert_redirect(
        &portal_post(client, "/portal/acting", &[("patient", patient)]),
        "/portal",
    );
}

/// Saves the practice settings as they are, except for the checkboxes in `changes`.
#[track_caller]
fn settings(admin: &mut Client, changes: &[(&str, bool)]) {
    let page = admin.get("/practice/admin/settings");
    page.assert_status(200);
    let mut fields = vec![
        ("name", input_value(&page, "name")),
        ("phone", input_value(&page, "phone")),
        ("invite_policy", selected_option(&page, "invite_policy")),
    ];
    for name in [
        "messaging_enabled",
        "auto_chart",
        "archive_for_everyone",
        "auto_invite",
    ] {
        let on = changes
            .iter()
            .find(|(n, _)| *n == name)
            .map_or_else(|| is_checked(&page, name), |(_, on)| *on);
        if on {
            fields.push((name, "on".into()));
        }
    }
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_redirect(
        &admin.submit(
            "/practice/admin/settings",
            "/practice/admin/settings",
            &fields,
        ),
        "/practice/admin/settings?notice=saved",
    );
}

/// Creates a staff user as an administrator; returns the new id.
#[track_caller]
fn create_staff(admin: &mut Client, name: &str, email: &str, degree: &str, level: &str) -> String {
    let created = admin.submit(
        "/practice/admin/users/new",
        "/practice/admin/users/new",
        &[
            ("name", name),
            ("email", email),
            ("degree", degree),
            ("access_level", level),
        ],
    );
    assert_eq!(created.status, 303, "user created:\n{}", created.body);
    created
        .location()
        .trim_start_matches("/practice/admin/users/")
        .split('?')
        .next()
        .unwrap()
        .to_owned()
}

#[track_caller]
fn deactivate_staff(admin: &mut Client, id: &str) {
    let page = format!("/practice/admin/users/{id}");
    assert_redirect(
        &admin.submit(&page, &format!("{page}/deactivate"), &[]),
        &format!("{page}?notice=deactivated"),
    );
}

#[track_caller]
fn update_staff(admin: &mut Client, id: &str, fields: &[(&str, &str)]) {
    let page = format!("/practice/admin/users/{id}");
    assert_redirect(
        &admin.submit(&page, &page, fields),
        &format!("{page}?notice=saved"),
    );
}

/// Registers Chris Rivera with the caregiver invitation seeded for Alex; signed in after.
fn register_chris(server: &Server) -> Client {
    let mut admin = staff(server, "admin@demo.test");
    let alex = patient_id(server, "Alex", "Rivera");
    let page = admin.get(&format!("/practice/patients/{alex}"));
    let row = page
        .body
        .split("<tr>")
        .find(|row| row.contains("Chris Rivera (Spouse)") && row.contains("class=\"pin\""))
        .unwrap_or_else(|| panic!("no waiting invitation for Chris:\n{}", page.body));
    let pin: String = row
        .split("class=\"pin\">")
        .nth(1)
        .unwrap()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let mail = scalar(
        server,
        "SELECT body_text FROM outbox WHERE kind = 'caregiver_invitation' AND recipient = 'chris@demo.test'",
        &[],
    );
    let start = mail.find("/portal/register/").expect("a registration link");
    let link: String = mail[start..]
        .chars()
        .take_while(|c| *c != '\n' && !c.is_whitespace())
        .collect();
    let mut chris = server.client();
    let registered = chris.submit(
        "/portal/login",
        &link,
        &[
            ("date_of_birth", "1984-03-14"),
            ("pin", &pin),
            ("mode", "new"),
            ("email", "chris@demo.test"),
            ("password", DEMO_PASSWORD),
            ("password_again", DEMO_PASSWORD),
        ],
    );
    assert_redirect(&registered, "/portal");
    chris
}

// ---------------------------------------------------------------------------------------------
// Helpers: message forms

/// A message form as the browser holds it: the page's CSRF token and idempotency key, and
/// what was typed. Posting it again is what a double click or a resubmit does.
struct Filled {
    action: String,
    fields: Vec<(String, String)>,
}

impl Filled {
    #[track_caller]
    fn new(client: &mut Client, page: &str, action: &str, typed: &[(&str, &str)]) -> Filled {
        let form = client.get(page);
        form.assert_status(200);
        let key = hidden(&form, "key");
        assert!(
            key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()),
            "the form carries a 64-hex key: {key:?}"
        );
        let mut fields = vec![("csrf".to_owned(), form.csrf()), ("key".to_owned(), key)];
        fields.extend(typed.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Filled {
            action: action.to_owned(),
            fields,
        }
    }

    fn post(&self, client: &mut Client) -> Response {
        let pairs: Vec<(&str, &str)> = self
            .fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        client.post_form(&self.action, &pairs)
    }
}

fn portal_new(client: &mut Client, typed: &[(&str, &str)]) -> Filled {
    Filled::new(
        client,
        "/portal/messages/new",
        "/portal/messages/new",
        typed,
    )
}

fn portal_reply(client: &mut Client, thread: &str, body: &str) -> Filled {
    let page = format!("/portal/messages/{thread}");
    Filled::new(client, &page, &format!("{page}/reply"), &[("body", body)])
}

fn staff_reply(client: &mut Client, thread: &str, typed: &[(&str, &str)]) -> Filled {
    let page = format!("/practice/messages/{thread}");
    Filled::new(client, &page, &format!("{page}/reply"), typed)
}

fn staff_new(client: &mut Client, patient: &str, typed: &[(&str, &str)]) -> Filled {
    let mut all = vec![("patient", patient)];
    all.extend_from_slice(typed);
    Filled::new(
        client,
        &format!("/practice/messages/new?patient={patient}"),
        "/practice/messages/new",
        &all,
    )
}

/// The thread a send redirected to (`{prefix}{id}` with an optional `#latest`).
#[track_caller]
fn sent_to(response: &Response, prefix: &str) -> String {
    assert_eq!(
        response.status, 303,
        "message sent; body:\n{}",
        response.body
    );
    let rest = response
        .location()
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("redirect {:?} is not under {prefix}", response.location()));
    let id: String = rest.chars().take_while(char::is_ascii_digit).collect();
    assert!(!id.is_empty(), "a thread id in {:?}", response.location());
    id
}

/// Sends a new portal message to `recipient` and returns the thread.
#[track_caller]
fn patient_writes(client: &mut Client, recipient: &str, subject: &str, body: &str) -> String {
    let form = portal_new(
        client,
        &[
            ("recipient", recipient),
            ("subject", subject),
            ("body", body),
        ],
    );
    sent_to(&form.post(client), "/portal/messages/")
}

// ---------------------------------------------------------------------------------------------
// Helpers: reading pages

fn tag_at<'a>(body: &'a str, marker: &str) -> &'a str {
    let start = body
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in:\n{body}"));
    body[start..].split('>').next().unwrap()
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let marker = format!(" {name}=\"");
    let start = tag.find(&marker)? + marker.len();
    Some(unescape(tag[start..].split('"').next().unwrap()))
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

#[track_caller]
fn hidden(page: &Response, name: &str) -> String {
    attribute(
        tag_at(&page.body, &format!("name=\"{name}\" value=")),
        "value",
    )
    .unwrap()
}

fn input_value(page: &Response, id: &str) -> String {
    attribute(tag_at(&page.body, &format!("<input id=\"{id}\"")), "value").unwrap_or_default()
}

fn textarea(page: &Response, id: &str) -> String {
    let tag = format!("<textarea id=\"{id}\"");
    let start = page
        .body
        .find(&tag)
        .unwrap_or_else(|| panic!("no textarea {id}:\n{}", page.body));
    let inner = page.body[start..].split_once('>').unwrap().1;
    unescape(inner.split("</textarea>").next().unwrap())
}

fn is_checked(page: &Response, id: &str) -> bool {
    tag_at(&page.body, &format!("type=\"checkbox\" id=\"{id}\"")).contains(" checked")
}

/// The (value, text) options of a select, without the empty "choose" option.
fn options(page: &Response, id: &str) -> Vec<(String, String)> {
    let start = page
        .body
        .find(&format!("<select id=\"{id}\""))
        .unwrap_or_else(|| panic!("no select {id}:\n{}", page.body));
    page.body[start..]
        .split("</select>")
        .next()
        .unwrap()
        .split("<option")
        .skip(1)
        .map(|o| {
            let (tag, text) = o.split_once('>').unwrap();
            (
                attribute(tag, "value").unwrap_or_default(),
                unescape(text.split('<').next().unwrap()),
            )
        })
        .filter(|(value, _)| !value.is_empty())
        .collect()
}

fn selected_option(page: &Response, id: &str) -> String {
    let start = page.body.find(&format!("<select id=\"{id}\"")).unwrap();
    page.body[start..]
        .split("</select>")
        .next()
        .unwrap()
        .split("<option")
        .skip(1)
        .map(|o| o.split('>').next().unwrap())
        .find(|tag| tag.contains(" selected"))
        .and_then(|tag| attribute(tag, "value"))
        .unwrap_or_default()
}

/// The text of the error shown beside a form field.
#[track_caller]
fn error_beside(page: &Response, field: &str) -> String {
    let marker = format!("id=\"{field}-error\">");
    let start = page
        .body
        .find(&marker)
        .unwrap_or_else(|| panic!("no error beside {field}:\n{}", page.body))
        + marker.len();
    page.body[start..].split('<').next().unwrap().to_owned()
}

fn main_of(page: &Response) -> &str {
    page.body.split("<main").nth(1).expect("page has a <main>")
}

fn portal_nav(page: &Response) -> &str {
    page.body
        .split("<nav aria-label=\"Portal\">")
        .nth(1)
        .expect("a portal navigation")
        .split("</nav>")
        .next()
        .unwrap()
}

/// The unread count in the practice navigation (0 when none is shown).
#[track_caller]
fn nav_unread(page: &Response) -> i64 {
    page.assert_status(200);
    let marker = "href=\"/practice/messages\">Messages";
    let start = page
        .body
        .find(marker)
        .unwrap_or_else(|| panic!("no Messages in the navigation:\n{}", page.body))
        + marker.len();
    match page.body[start..].strip_prefix(" <span class=\"count\">") {
        Some(rest) => rest
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap(),
        None => 0,
    }
}

fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.replace("<br>", " ").chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    unescape(out.trim())
}

/// One row of a mailbox or inbox table.
#[derive(Debug)]
struct Row {
    id: String,
    subject: String,
    unread: bool,
    cells: Vec<String>,
}

fn rows(page: &Response) -> Vec<Row> {
    page.assert_status(200);
    let Some(tbody) = main_of(page).split("<tbody>").nth(1) else {
        return Vec::new();
    };
    tbody
        .split("</tbody>")
        .next()
        .unwrap()
        .split("<tr")
        .skip(1)
        .map(|tr| {
            let (tag, rest) = tr.split_once('>').unwrap();
            let link = rest
                .split("<a href=\"")
                .nth(1)
                .expect("a row links its thread");
            let (href, after) = link.split_once("\">").unwrap();
            Row {
                id: href.rsplit('/').next().unwrap().to_owned(),
                subject: unescape(after.split("</a>").next().unwrap()),
                unread: tag.contains("class=\"unread\""),
                cells: rest
                    .split("<td")
                    .skip(1)
                    .map(|td| {
                        let inner = td.split_once('>').map_or("", |(_, inner)| inner);
                        strip_tags(inner.split("</td>").next().unwrap())
                    })
                    .collect(),
            }
        })
        .collect()
}

fn subjects(rows: &[Row]) -> Vec<&str> {
    rows.iter().map(|r| r.subject.as_str()).collect()
}

#[track_caller]
fn row<'a>(rows: &'a [Row], subject: &str) -> &'a Row {
    rows.iter()
        .find(|r| r.subject == subject)
        .unwrap_or_else(|| panic!("no row {subject:?} in {rows:#?}"))
}

/// The href of the first link with this rel.
fn link_with_rel(page: &Response, rel: &str) -> Option<String> {
    page.body
        .split("<a ")
        .skip(1)
        .map(|a| a.split('>').next().unwrap())
        .find(|tag| tag.contains(&format!("rel=\"{rel}\"")))
        .and_then(|tag| attribute(&format!(" {tag}"), "href"))
}

/// A message as a thread page shows it.
#[derive(Debug)]
struct Shown {
    sender: String,
    time: String,
    /// As in the HTML (escaped).
    body: String,
    internal: bool,
}

fn shown(page: &Response) -> Vec<Shown> {
    page.assert_status(200);
    let list = page
        .body
        .split("<ol class=\"conversation\"")
        .nth(1)
        .expect("a conversation")
        .split("</ol>")
        .next()
        .unwrap();
    let between = |text: &str, open: &str, close: &str| -> String {
        text.split(open)
            .nth(1)
            .unwrap_or_else(|| panic!("no {open} in {text}"))
            .split(close)
            .next()
            .unwrap()
            .to_owned()
    };
    list.split("<li class=\"message")
        .skip(1)
        .map(|li| Shown {
            internal: li.split('"').next().unwrap().contains("internal"),
            sender: unescape(&between(li, "<strong>", "</strong>")),
            time: between(li, "<time>", "</time>"),
            body: between(li, "<div class=\"body\">", "</div>"),
        })
        .collect()
}

fn senders(page: &Response) -> Vec<String> {
    shown(page).into_iter().map(|m| m.sender).collect()
}

#[track_caller]
fn assert_not_found(response: &Response, what: &str) {
    assert_eq!(
        response.status, 404,
        "{what}: expected 404; body:\n{}",
        response.body
    );
}

// ---------------------------------------------------------------------------------------------
// Helpers: the database

fn query(server: &Server, sql: &str, params: &[&str]) -> Vec<Vec<String>> {
    db_rows(&server.data, sql, params)
}

#[track_caller]
fn scalar(server: &Server, sql: &str, params: &[&str]) -> String {
    let rows = query(server, sql, params);
    assert_eq!(rows.len(), 1, "one row from {sql:?}: {rows:?}");
    rows[0][0].clone()
}

#[track_caller]
fn count(server: &Server, sql: &str, params: &[&str]) -> i64 {
    scalar(server, sql, params).parse().unwrap()
}

fn staff_id(server: &Server, email: &str) -> String {
    scalar(server, "SELECT id FROM staff WHERE email = ?", &[email])
}

fn account_id(server: &Server, email: &str) -> String {
    scalar(
        server,
        "SELECT id FROM portal_account WHERE email = ?",
        &[email],
    )
}

fn patient_id(server: &Server, first: &str, last: &str) -> String {
    scalar(
        server,
        "SELECT id FROM patient WHERE first_name = ? AND last_name = ?",
        &[first, last],
    )
}

#[track_caller]
fn thread_id(server: &Server, subject: &str) -> String {
    scalar(
        server,
        "SELECT id FROM thread WHERE subject = ?",
        &[subject],
    )
}

/// (threads, messages, chart documents) stored.
fn stored(server: &Server) -> (i64, i64, i64) {
    (
        count(server, "SELECT count(*) FROM thread", &[]),
        count(server, "SELECT count(*) FROM message", &[]),
        count(server, "SELECT count(*) FROM chart_document", &[]),
    )
}

fn messages_with_body(server: &Server, body: &str) -> i64 {
    count(
        server,
        "SELECT count(*) FROM message WHERE body = ?",
        &[body],
    )
}

fn outbox_total(server: &Server) -> i64 {
    count(server, "SELECT count(*) FROM outbox", &[])
}

/// (recipient, subject, body) of every new-message notice.
fn notices(server: &Server) -> Vec<(String, String, String)> {
    query(
        server,
        "SELECT recipient, subject, body_text FROM outbox WHERE kind = 'new_message' ORDER BY id",
        &[],
    )
    .into_iter()
    .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
    .collect()
}

/// Messages of a thread filed in the chart.
fn charted_in(server: &Server, thread: &str) -> i64 {
    count(
        server,
        "SELECT count(*) FROM chart_document d JOIN message m ON m.id = d.message_id
          WHERE m.thread_id = ?",
        &[thread],
    )
}

/// When a thread last had a message the patient can see, as pages show times.
/// The thread's last activity as pages show it.
fn thread_time(server: &Server, thread: &str) -> String {
    shown_time(&scalar(
        server,
        &format!(
            "SELECT {} FROM thread WHERE id = ?",
            SHOWN_TIME_PARTS.replace("at,", "last_visible_at,")
        ),
        &[thread],
    ))
}

/// SQLite's parts of the unix time `at` for `shown_time`.
const SHOWN_TIME_PARTS: &str = "strftime('%m %d %Y %H %M', at, 'unixepoch')";

/// "11 28 2026 03 29" as pages show it: "Nov 28, 2026, 3:29 AM" (the test server's practice
/// time is UTC).
fn shown_time(parts: &str) -> String {
    let n: Vec<u32> = parts.split(' ').map(|p| p.parse().unwrap()).collect();
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][n[0] as usize - 1];
    let (hour, half) = match n[3] {
        0 => (12, "AM"),
        h @ 1..=11 => (h, "AM"),
        12 => (12, "PM"),
        h => (h - 12, "PM"),
    };
    format!("{month} {}, {}, {hour}:{:02} {half}", n[1], n[2], n[4])
}

#[derive(Debug, PartialEq)]
struct Audit {
    actor_kind: String,
    actor_id: String,
    patient_id: String,
}

fn last_audit_id(server: &Server) -> String {
    scalar(server, "SELECT coalesce(max(id), 0) FROM audit_event", &[])
}

/// Runs `during` and returns what it answered with the `action` audit rows it wrote.
fn audited<T>(server: &Server, action: &str, during: impl FnOnce() -> T) -> (T, Vec<Audit>) {
    let before = last_audit_id(server);
    let result = during();
    let rows = query(
        server,
        "SELECT actor_kind, actor_id, patient_id FROM audit_event
          WHERE id > ? AND action = ? ORDER BY id",
        &[&before, action],
    )
    .into_iter()
    .map(|r| Audit {
        actor_kind: r[0].clone(),
        actor_id: r[1].clone(),
        patient_id: r[2].clone(),
    })
    .collect();
    (result, rows)
}

fn audit(kind: &str, actor: &str, patient: &str) -> Vec<Audit> {
    vec![Audit {
        actor_kind: kind.into(),
        actor_id: actor.into(),
        patient_id: patient.into(),
    }]
}

// ---------------------------------------------------------------------------------------------
// 1. The Messages section exists only with messaging enabled and an active record

#[test]
fn messages_section_needs_messaging_enabled_and_an_active_record() {
    let server = Server::start(Options::demo());
    let mut alex = portal(&server, "alex@demo.test");
    let mut jordan = portal(&server, "jordan@demo.test");
    let mut admin = staff(&server, "admin@demo.test");
    let lee = staff_id(&server, "dr.lee@demo.test");
    let alex_thread = thread_id(&server, BLOOD_PRESSURE);

    // Enabled (the demo): in the navigation, with the disclaimer word for word at the top.
    for client in [&mut alex, &mut jordan] {
        let home = client.get("/portal");
        assert!(portal_nav(&home).contains("href=\"/portal/messages\""));
    }
    let mailbox = alex.get("/portal/messages");
    mailbox.assert_status(200);
    let main = main_of(&mailbox);
    assert!(main.contains(DISCLAIMER), "mailbox disclaimer:\n{main}");
    assert!(main.find(DISCLAIMER) < main.find("<table"), "{main}");
    let compose = alex.get("/portal/messages/new");
    compose.assert_status(200);
    let main = main_of(&compose);
    assert!(main.contains(DISCLAIMER), "compose disclaimer:\n{main}");
    assert!(
        main.find(DISCLAIMER) < main.find("<form"),
        "the disclaimer comes before the form:\n{main}"
    );
    alex.get(&format!("/portal/messages/{alex_thread}"))
        .assert_status(200)
        .assert_contains(DISCLAIMER);

    // Forms opened while enabled, posted once it is switched off.
    let new_form = portal_new(
        &mut alex,
        &[
            ("recipient", &lee),
            ("subject", "Written while enabled"),
            ("body", "Posted after messaging was switched off"),
        ],
    );
    let reply_form = portal_reply(&mut alex, &alex_thread, "A reply posted while off");

    settings(&mut admin, &[("messaging_enabled", false)]);
    assert_eq!(
        scalar(&server, "SELECT messaging_enabled FROM practice", &[]),
        "0"
    );
    let before = stored(&server);
    let outbox_before = outbox_total(&server);
    for client in [&mut alex, &mut jordan] {
        for page in ["/portal", "/portal/account"] {
            let shown = client.get(page);
            shown.assert_status(200);
            assert!(
                !portal_nav(&shown).contains("/portal/messages"),
                "{page} navigation still offers Messages"
            );
            shown.assert_lacks("href=\"/portal/messages");
        }
        for path in [
            "/portal/messages".to_owned(),
            "/portal/messages?page=2".to_owned(),
            "/portal/messages/new".to_owned(),
            format!("/portal/messages/{alex_thread}"),
            format!("/portal/messages/{alex_thread}/files/1"),
        ] {
            assert_not_found(&client.get(&path), &path);
        }
        let forged = portal_post(
            client,
            "/portal/messages/new",
            &[
                ("key", &"a".repeat(64)),
                ("recipient", &lee),
                ("subject", "Sent while off"),
                ("body", "Should never arrive"),
            ],
        );
        assert_not_found(&forged, "POST /portal/messages/new while off");
    }
    assert_not_found(&new_form.post(&mut alex), "a new message posted while off");
    assert_not_found(&reply_form.post(&mut alex), "a reply posted while off");
    assert_eq!(stored(&server), before, "nothing is stored while off");
    assert_eq!(outbox_total(&server), outbox_before);

    // Switched back on: the section returns.
    settings(&mut admin, &[("messaging_enabled", true)]);
    assert!(portal_nav(&alex.get("/portal")).contains("href=\"/portal/messages\""));
    alex.get("/portal/messages")
        .assert_status(200)
        .assert_contains(BLOOD_PRESSURE);

    // A patient whose access the practice revoked has no Messages section, and is told why.
    let mut morgan = portal(&server, "morgan@demo.test");
    assert!(!portal_nav(&morgan.get("/portal")).contains("/portal/messages"));
    for path in ["/portal/messages", "/portal/messages/new"] {
        morgan
            .get(path)
            .assert_status(403)
            .assert_contains("Ask your doctor to provide access to your health records.");
    }
    let forged = portal_post(
        &mut morgan,
        "/portal/messages/new",
        &[
            ("key", &"b".repeat(64)),
            ("recipient", &lee),
            ("subject", "From a revoked account"),
            ("body", "Should never arrive"),
        ],
    );
    assert_eq!(forged.status, 403, "POST by a revoked patient");
    forged.assert_contains("Ask your doctor to provide access to your health records.");
    assert_eq!(stored(&server), before);
}

/// Rule 1: messaging works only once enabled. A staff message while it is off would email the
/// patient that a message waits in a portal section that answers 404.
#[test]
fn staff_cannot_notify_a_patient_of_a_message_while_messaging_is_off() {
    let server = Server::start(Options::demo());
    let mut admin = staff(&server, "admin@demo.test");
    let mut desk = staff(&server, "desk@demo.test");
    let alex = patient_id(&server, "Alex", "Rivera");
    settings(&mut admin, &[("messaging_enabled", false)]);
    let before = stored(&server);

    let form = staff_new(
        &mut desk,
        &alex,
        &[
            ("subject", "Written while messaging is off"),
            ("body", "The patient cannot read this in the portal."),
        ],
    );
    let answer = form.post(&mut desk);
    assert!(
        notices(&server).is_empty(),
        "a new-message email was queued while patient messaging is off (answer {}): {:?}",
        answer.status,
        notices(&server)
    );
    assert_eq!(
        stored(&server),
        before,
        "a thread the patient cannot open was stored while messaging is off"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Writing to the practice: recipients, limits, links, plain text, one message per form

#[test]
fn patients_write_only_to_active_clinicians_within_the_limits() {
    let server = Server::start(Options::demo());
    let mut alex = portal(&server, "alex@demo.test");
    let mut admin = staff(&server, "admin@demo.test");
    let mut lee_client = staff(&server, "dr.lee@demo.test");
    let [lee, kim, cho, desk, admin_id] = [
        "dr.lee@demo.test",
        "np.kim@demo.test",
        "rn.cho@demo.test",
        "desk@demo.test",
        "admin@demo.test",
    ]
    .map(|e| staff_id(&server, e));
    let alex_patient = patient_id(&server, "Alex", "Rivera");
    let alex_account = account_id(&server, "alex@demo.test");
    let recipients =
        |client: &mut Client| options(&client.get("/portal/messages/new"), "recipient");
    let lee_option = (lee.clone(), "Dr. Morgan Lee, MD".to_owned());
    let kim_option = (kim.clone(), "Jamie Kim, NP".to_owned());

    // Exactly the active staff of level 3 or 4.
    assert_eq!(
        recipients(&mut alex),
        [lee_option.clone(), kim_option.clone()]
    );
    let former = create_staff(&mut admin, "Dr. Pat Former", "former@demo.test", "MD", "4");
    assert!(recipients(&mut alex).contains(&(former.clone(), "Dr. Pat Former, MD".into())));
    deactivate_staff(&mut admin, &former);
    assert_eq!(
        recipients(&mut alex),
        [lee_option.clone(), kim_option.clone()]
    );
    // (Creating the user queued their password link; patients' messages must add nothing.)
    let outbox_before = outbox_total(&server);

    // Forged recipients are refused beside the field, the typed text kept, nothing stored.
    let before = stored(&server);
    for forged in [
        cho.as_str(),
        desk.as_str(),
        admin_id.as_str(),
        former.as_str(),
        "999999",
        "abc",
        "-1",
        "",
    ] {
        let refused = portal_new(
            &mut alex,
            &[
                ("recipient", forged),
                ("subject", "Refill question"),
                ("body", "Can I get a refill?\nThe pharmacy is closed."),
                ("link", "https://example.org/refill"),
            ],
        )
        .post(&mut alex);
        refused.assert_status(400);
        assert!(
            !error_beside(&refused, "recipient").is_empty(),
            "{forged:?}"
        );
        assert_eq!(input_value(&refused, "subject"), "Refill question");
        assert_eq!(
            textarea(&refused, "body"),
            "Can I get a refill?\nThe pharmacy is closed."
        );
        assert_eq!(input_value(&refused, "link"), "https://example.org/refill");
        assert_eq!(
            options(&refused, "recipient"),
            [lee_option.clone(), kim_option.clone()]
        );
    }
    assert_eq!(
        stored(&server),
        before,
        "no forged recipient stores anything"
    );

    // Subject, body and link rules: refused beside the field, everything typed kept.
    let long_body = "b".repeat(20_001);
    let subject_201 = "S".repeat(201);
    let cases: [(&str, &str, &str, &str); 10] = [
        ("subject", "", "A body without a subject", ""),
        ("subject", "   ", "A body with a blank subject", ""),
        ("subject", &subject_201, "A body with a long subject", ""),
        ("body", "Empty body", "", ""),
        ("body", "Blank body", " \n ", ""),
        ("body", "Too long", &long_body, ""),
        ("link", "Bad link", "See link", "javascript:alert(1)"),
        (
            "link",
            "Bad link",
            "See link",
            "data:text/html;base64,PHNjcmlwdD4=",
        ),
        ("link", "Bad link", "See link", "ftp://example.org/file.txt"),
        ("link", "Bad link", "See link", "example.org/no-scheme"),
    ];
    for (field, subject, body, link) in cases {
        let refused = portal_new(
            &mut alex,
            &[
                ("recipient", &lee),
                ("subject", subject),
                ("body", body),
                ("link", link),
            ],
        )
        .post(&mut alex);
        refused.assert_status(400);
        assert!(
            !error_beside(&refused, field).is_empty(),
            "{field} refused for {subject:?}"
        );
        assert_eq!(input_value(&refused, "subject"), subject);
        assert_eq!(textarea(&refused, "body"), body, "the typed body is kept");
        assert_eq!(input_value(&refused, "link"), link);
        assert_eq!(selected_option(&refused, "recipient"), lee);
    }
    assert_eq!(stored(&server), before, "no refused message is stored");

    // The limits themselves are accepted.
    let full = patient_writes(&mut alex, &lee, &"S".repeat(200), &"b".repeat(20_000));
    assert_eq!(
        scalar(
            &server,
            "SELECT length(t.subject) || ' ' || length(m.body) FROM thread t JOIN message m ON m.thread_id = t.id WHERE t.id = ?",
            &[&full]
        ),
        "200 20000"
    );

    // A valid link is shown in full, opened without leaking the portal.
    let link = "https://example.org/leaflets/blood-pressure?lang=en";
    let linked = portal_new(
        &mut alex,
        &[
            ("recipient", &kim),
            ("subject", "Leaflet"),
            ("body", "Is this leaflet right?"),
            ("link", link),
        ],
    )
    .post(&mut alex);
    let linked = sent_to(&linked, "/portal/messages/");
    let anchor = format!("<a href=\"{link}\" rel=\"noopener noreferrer\"");
    alex.get(&format!("/portal/messages/{linked}"))
        .assert_contains(&anchor)
        .assert_contains(&format!(">{link}</a>"));

    // Plain text: escaped in both views, line breaks kept.
    let markup = "<script>alert(1)</script>\n<b>x</b>";
    let escaped = "&lt;script&gt;alert(1)&lt;/script&gt;\n&lt;b&gt;x&lt;/b&gt;";
    let plain = patient_writes(&mut alex, &lee, "Tags <i>in</i> the subject", markup);
    for page in [
        alex.get(&format!("/portal/messages/{plain}")),
        lee_client.get(&format!("/practice/messages/{plain}")),
    ] {
        page.assert_contains(escaped)
            .assert_contains("Tags &lt;i&gt;in&lt;/i&gt; the subject")
            .assert_lacks("<script>alert(1)")
            .assert_lacks("<b>x</b>")
            .assert_lacks("<i>in</i>");
        assert_eq!(shown(&page).last().unwrap().body, escaped);
    }

    // One form, one message: resubmitted twice and after a refresh, it lands once.
    let form = portal_new(
        &mut alex,
        &[
            ("recipient", &kim),
            ("subject", "Only once"),
            ("body", "Sent with one click, then again"),
        ],
    );
    let (first, sends) = audited(&server, "message.send", || form.post(&mut alex));
    let once = sent_to(&first, "/portal/messages/");
    assert_eq!(first.location(), format!("/portal/messages/{once}#latest"));
    assert_eq!(sends, audit("portal", &alex_account, &alex_patient));
    alex.get(&format!("/portal/messages/{once}"))
        .assert_contains("Sent with one click, then again");
    for _ in 0..2 {
        assert_redirect(&form.post(&mut alex), first.location());
    }
    // The refresh: a browser fetches the address without its #fragment.
    alex.get(&format!("/portal/messages/{once}"))
        .assert_status(200);
    assert_redirect(&form.post(&mut alex), first.location());
    assert_eq!(
        messages_with_body(&server, "Sent with one click, then again"),
        1
    );
    assert_eq!(
        count(
            &server,
            "SELECT count(*) FROM thread WHERE subject = 'Only once'",
            &[]
        ),
        1
    );
    let reply = portal_reply(&mut alex, &once, "A reply sent once");
    for _ in 0..3 {
        assert_redirect(
            &reply.post(&mut alex),
            &format!("/portal/messages/{once}#latest"),
        );
    }
    assert_eq!(messages_with_body(&server, "A reply sent once"), 1);

    // A patient's message queues no email.
    assert_eq!(outbox_total(&server), outbox_before);

    // Deactivated staff leave the list; a user raised to level 3 joins it.
    let np_kim = kim.clone();
    deactivate_staff(&mut admin, &np_kim);
    assert_eq!(recipients(&mut alex), std::slice::from_ref(&lee_option));
    let to_kim = portal_new(
        &mut alex,
        &[
            ("recipient", &kim),
            ("subject", "To a deactivated NP"),
            ("body", "Should be refused"),
        ],
    )
    .post(&mut alex);
    to_kim.assert_status(400);
    assert!(!error_beside(&to_kim, "recipient").is_empty());
    update_staff(
        &mut admin,
        &cho,
        &[
            ("name", "Casey Cho"),
            ("email", "rn.cho@demo.test"),
            ("degree", "RN"),
            ("access_level", "3"),
        ],
    );
    assert_eq!(
        recipients(&mut alex),
        [(cho.clone(), "Casey Cho, RN".to_owned()), lee_option]
    );
    let to_cho = patient_writes(&mut alex, &cho, "For the nurse", "Now at level 3");
    assert_eq!(
        count(
            &server,
            "SELECT count(*) FROM thread_staff WHERE thread_id = ? AND staff_id = ?",
            &[&to_cho, &cho]
        ),
        1
    );
}

/// A double click sends the same form twice at once: one message, and both clicks land on it.
#[test]
fn simultaneous_submits_of_one_form_send_one_message() {
    let server = Server::start(Options::demo());
    let mut alex = portal(&server, "alex@demo.test");
    let lee = staff_id(&server, "dr.lee@demo.test");
    let body = "Clicked several times at once";
    let form = portal_new(
        &mut alex,
        &[
            ("recipient", &lee),
            ("subject", "Double click"),
            ("body", body),
        ],
    );
    let answers: Vec<(u16, String)> = std::thread::scope(|scope| {
        let clicks: Vec<_> = (0..6)
            .map(|_| {
                let mut click = Client::new(alex.addr);
                click.cookies = alex.cookies.clone();
                let form = &form;
                scope.spawn(move || {
                    let answer = form.post(&mut click);
                    (answer.status, answer.location().to_owned())
                })
            })
            .collect();
        clicks.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert_eq!(messages_with_body(&server, body), 1, "{answers:?}");
    let thread = (
        303,
        format!(
            "/portal/messages/{}#latest",
            thread_id(&server, "Double click")
        ),
    );
    assert!(
        answers.iter().all(|a| *a == thread),
        "every click is answered with the thread: {answers:?}\nserver log:\n{}",
        server.log()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. The mailbox and the practice inbox: order, markers, pages; reading is per account

#[test]
fn mailbox_and_inbox_list_newest_first_by_page_and_reading_is_per_account() {
    let server = Server::start(Options::demo());
    let mut chris = register_chris(&server);
    let mut alex = portal(&server, "alex@demo.test");
    let lee = staff_id(&server, "dr.lee@demo.test");
    let alex_patient = patient_id(&server, "Alex", "Rivera");
    let follow_up = thread_id(&server, FOLLOW_UP);
    let blood = thread_id(&server, BLOOD_PRESSURE);

    // The seeded mailbox: newest first, other party, date, count, unread marker, no bodies.
    let mailbox = alex.get("/portal/messages");
    let listed = rows(&mailbox);
    assert_eq!(subjects(&listed), [FOLLOW_UP, BLOOD_PRESSURE]);
    for (r, with, messages, unread) in [
        (&listed[0], "Dr. Morgan Lee, MD", "1", true),
        (&listed[1], "Jamie Kim, NP", "3", false),
    ] {
        assert_eq!(r.cells[1], with);
        assert_eq!(r.cells[2], thread_time(&server, &r.id));
        assert_eq!(r.cells[3], messages);
        assert_eq!(r.unread, unread, "{r:?}");
    }
    for body in [
        "142/91",
        "Your results are in",
        "morning dose",
        "Keep taking readings",
    ] {
        assert!(
            !main_of(&mailbox).contains(body),
            "the mailbox previews {body:?}"
        );
    }

    // A caregiver account reads for itself only.
    let chris_mailbox = rows(&chris.get("/portal/messages"));
    assert!(row(&chris_mailbox, FOLLOW_UP).unread);
    let chris_account = account_id(&server, "chris@demo.test");
    let (page, views) = audited(&server, "thread.view", || {
        chris.get(&format!("/portal/messages/{follow_up}"))
    });
    page.assert_status(200);
    assert_eq!(views, audit("portal", &chris_account, &alex_patient));
    assert!(!row(&rows(&chris.get("/portal/messages")), FOLLOW_UP).unread);
    assert!(
        row(&rows(&alex.get("/portal/messages")), FOLLOW_UP).unread,
        "Chris reading must not mark it read for Alex"
    );
    let alex_account = account_id(&server, "alex@demo.test");
    let (_, views) = audited(&server, "thread.view", || {
        alex.get(&format!("/portal/messages/{follow_up}"))
    });
    assert_eq!(views, audit("portal", &alex_account, &alex_patient));
    assert!(!row(&rows(&alex.get("/portal/messages")), FOLLOW_UP).unread);

    // A thread: every message oldest first, with sender, time and content.
    let page = alex.get(&format!("/portal/messages/{blood}"));
    let messages = shown(&page);
    assert_eq!(
        senders(&page),
        ["Alex Rivera", "Jamie Kim, NP", "Alex Rivera"]
    );
    let times: Vec<String> = query(
        &server,
        &format!(
            "SELECT {} FROM message WHERE thread_id = ? ORDER BY id",
            SHOWN_TIME_PARTS.replace("at,", "created_at,")
        ),
        &[&blood],
    )
    .into_iter()
    .map(|r| shown_time(&r[0]))
    .collect();
    assert_eq!(
        messages.iter().map(|m| m.time.clone()).collect::<Vec<_>>(),
        times
    );
    assert!(messages[0].body.starts_with("Hello,\nMy home readings"));
    assert!(messages[1].body.contains("Keep taking readings"));
    assert!(messages[2].body.contains("morning dose"));

    // 24 more threads, a little apart: pages of 20, newest first.
    for n in 1..=24 {
        server.advance_clock(10);
        patient_writes(
            &mut alex,
            &lee,
            &format!("Question {n:02}"),
            &format!("Body of question {n:02}"),
        );
    }
    let first = alex.get("/portal/messages");
    let page_one = rows(&first);
    let expected: Vec<String> = (5..=24).rev().map(|n| format!("Question {n:02}")).collect();
    assert_eq!(subjects(&page_one), expected);
    assert!(page_one
        .iter()
        .all(|r| r.cells[1] == "Dr. Morgan Lee, MD" && r.cells[3] == "1" && !r.unread));
    assert!(!main_of(&first).contains("Body of question"));
    assert_eq!(
        link_with_rel(&first, "next").as_deref(),
        Some("/portal/messages?page=2")
    );
    assert_eq!(link_with_rel(&first, "prev"), None);
    let second = alex.get("/portal/messages?page=2");
    assert_eq!(
        subjects(&rows(&second)),
        [
            "Question 04",
            "Question 03",
            "Question 02",
            "Question 01",
            FOLLOW_UP,
            BLOOD_PRESSURE
        ]
    );
    assert_eq!(
        link_with_rel(&second, "prev").as_deref(),
        Some("/portal/messages?page=1")
    );
    assert_eq!(link_with_rel(&second, "next"), None);

    // New activity moves a thread to the top.
    server.advance_clock(10);
    let form = portal_reply(&mut alex, &blood, "Back at the top");
    sent_to(&form.post(&mut alex), "/portal/messages/");
    let top = &rows(&alex.get("/portal/messages"))[0];
    assert_eq!(
        (top.subject.as_str(), top.cells[3].as_str()),
        (BLOOD_PRESSURE, "4")
    );

    // Dr. Lee's inbox: pages of 25, patient name and date of birth on each row, and the
    // unread count in the navigation of every page matches the unread rows.
    let mut lee_client = staff(&server, "dr.lee@demo.test");
    let first = lee_client.get("/practice/messages");
    let page_one = rows(&first);
    assert_eq!(page_one.len(), 25);
    assert_eq!(
        subjects(&page_one)[..24],
        (1..=24)
            .rev()
            .map(|n| format!("Question {n:02}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(page_one[24].subject, SPORTS);
    assert_eq!(
        link_with_rel(&first, "next").as_deref(),
        Some("/practice/messages?box=inbox&page=2")
    );
    let second = rows(&lee_client.get("/practice/messages?box=inbox&page=2"));
    assert_eq!(subjects(&second), [FOLLOW_UP]);
    for r in page_one.iter().chain(&second) {
        let expected = if r.subject == SPORTS {
            "Riley Morgan Born 2017-09-21"
        } else {
            "Alex Rivera Born 1984-03-14"
        };
        assert_eq!(r.cells[0], expected, "{r:?}");
    }
    let unread_rows = page_one.iter().chain(&second).filter(|r| r.unread).count() as i64;
    assert_eq!(unread_rows, 25);
    for page in ["/practice", "/practice/patients", "/practice/messages"] {
        assert_eq!(nav_unread(&lee_client.get(page)), unread_rows, "{page}");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Caregivers, and who may open what

#[test]
fn caregivers_write_for_the_record_they_act_for_and_nobody_reaches_another_thread() {
    let server = Server::start(Options::demo());
    let mut jordan = portal(&server, "jordan@demo.test");
    let mut alex = portal(&server, "alex@demo.test");
    let mut lee = staff(&server, "dr.lee@demo.test");
    let mut desk = staff(&server, "desk@demo.test");
    let riley = patient_id(&server, "Riley", "Morgan");
    let quinn = patient_id(&server, "Quinn", "Morgan");
    let alex_patient = patient_id(&server, "Alex", "Rivera");
    let sports = thread_id(&server, SPORTS);
    let blood = thread_id(&server, BLOOD_PRESSURE);
    let before = stored(&server);

    // Jordan acting for Quinn: Riley's thread is not there.
    act_for(&mut jordan, &quinn);
    let mailbox = jordan.get("/portal/messages");
    assert!(rows(&mailbox).is_empty());
    mailbox.assert_lacks(SPORTS);
    let thread_page = format!("/portal/messages/{sports}");
    assert_not_found(
        &jordan.get(&thread_page),
        "Riley's thread while acting for Quinn",
    );
    let forged = portal_post(
        &mut jordan,
        &format!("{thread_page}/reply"),
        &[
            ("key", &"c".repeat(64)),
            ("body", "Sent for the wrong child"),
        ],
    );
    assert_not_found(&forged, "a reply to Riley's thread while acting for Quinn");
    assert_eq!(stored(&server), before);

    // Switched to Riley: the thread opens; a reply is signed as the caregiver in both views.
    act_for(&mut jordan, &riley);
    assert_eq!(subjects(&rows(&jordan.get("/portal/messages"))), [SPORTS]);
    assert_eq!(senders(&jordan.get(&thread_page)), [JORDAN_FOR_RILEY]);
    let reply = portal_reply(&mut jordan, &sports, "We can drop it off on Friday.");
    assert_redirect(
        &reply.post(&mut jordan),
        &format!("/portal/messages/{sports}#latest"),
    );
    assert_eq!(
        senders(&jordan.get(&thread_page)),
        [JORDAN_FOR_RILEY, JORDAN_FOR_RILEY]
    );
    assert_eq!(
        senders(&lee.get(&format!("/practice/messages/{sports}"))),
        [JORDAN_FOR_RILEY, JORDAN_FOR_RILEY]
    );
    assert_eq!(
        scalar(
            &server,
            "SELECT sender_role FROM message WHERE body = 'We can drop it off on Friday.'",
            &[]
        ),
        "caregiver"
    );
    let before = stored(&server);

    // Alex cannot open, reply to, or learn of Riley's thread.
    let (answer, views) = audited(&server, "thread.view", || alex.get(&thread_page));
    assert_not_found(&answer, "Alex opening Riley's thread");
    assert!(views.is_empty());
    assert_eq!(
        answer.body,
        alex.get("/portal/messages/999999").body,
        "Riley's thread looks like one that does not exist"
    );
    alex.get("/portal/messages").assert_lacks(SPORTS);
    let foreign_reply = Filled {
        action: format!("{thread_page}/reply"),
        ..portal_reply(&mut alex, &blood, "Meant for Riley's thread")
    };
    assert_not_found(
        &foreign_reply.post(&mut alex),
        "Alex replying in Riley's thread",
    );
    assert_eq!(stored(&server), before, "nothing stored by a foreign reply");

    // The front desk (level 1), not on the thread, gets 404 for it and for each action.
    let practice_page = format!("/practice/messages/{sports}");
    assert_not_found(&desk.get(&practice_page), "desk opening Riley's thread");
    let lee_state = query(
        &server,
        "SELECT staff_id, unread, archived FROM thread_staff WHERE thread_id = ? ORDER BY staff_id",
        &[&sports],
    );
    let lee_id = staff_id(&server, "dr.lee@demo.test");
    for (action, fields) in [
        (
            "reply",
            vec![
                ("key", "d".repeat(64)),
                ("body", "From the desk".to_owned()),
            ],
        ),
        ("unread", vec![]),
        ("archive", vec![]),
        ("unarchive", vec![]),
        (
            "forward",
            vec![("to", lee_id.clone()), ("note", "Desk note".to_owned())],
        ),
        ("chart", vec![]),
    ] {
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = staff_post(&mut desk, &format!("{practice_page}/{action}"), &fields);
        assert_not_found(&answer, &format!("desk POST {action}"));
    }
    assert!(rows(&desk.get("/practice/messages")).is_empty());
    assert_eq!(stored(&server), before, "the desk's actions stored nothing");
    assert_eq!(
        query(
            &server,
            "SELECT staff_id, unread, archived FROM thread_staff WHERE thread_id = ? ORDER BY staff_id",
            &[&sports],
        ),
        lee_state,
        "the desk's actions changed nobody's view of the thread"
    );

    // The desk's own thread works; an action aimed at another thread's id changes only that
    // one, and only if the caller may open it.
    let own = sent_to(
        &staff_new(
            &mut desk,
            &alex_patient,
            &[
                ("subject", "Appointment reminder"),
                ("body", "See you Monday."),
            ],
        )
        .post(&mut desk),
        "/practice/messages/",
    );
    assert_not_found(
        &staff_post(
            &mut desk,
            &format!("/practice/messages/{sports}/archive"),
            &[],
        ),
        "desk archiving a thread it may not open",
    );
    assert_eq!(
        subjects(&rows(&desk.get("/practice/messages"))),
        ["Appointment reminder"]
    );
    assert_redirect(
        &staff_post(&mut desk, &format!("/practice/messages/{own}/archive"), &[]),
        "/practice/messages",
    );
    assert_eq!(
        subjects(&rows(&desk.get("/practice/messages?box=archived"))),
        ["Appointment reminder"]
    );
    assert_eq!(
        query(
            &server,
            "SELECT staff_id, unread, archived FROM thread_staff WHERE thread_id = ? ORDER BY staff_id",
            &[&sports],
        ),
        lee_state
    );
}

// ---------------------------------------------------------------------------------------------
// 5. The practice view: inbox boxes, reading, replying, forwarding, archiving, the chart

#[test]
fn staff_read_reply_forward_archive_and_file_threads() {
    let server = Server::start(Options::demo());
    let mut lee = staff(&server, "dr.lee@demo.test");
    let mut kim = staff(&server, "np.kim@demo.test");
    let mut admin = staff(&server, "admin@demo.test");
    let mut jordan = portal(&server, "jordan@demo.test");
    let mut alex = portal(&server, "alex@demo.test");
    let lee_id = staff_id(&server, "dr.lee@demo.test");
    let kim_id = staff_id(&server, "np.kim@demo.test");
    let riley = patient_id(&server, "Riley", "Morgan");
    let alex_patient = patient_id(&server, "Alex", "Rivera");
    let sports = thread_id(&server, SPORTS);
    let follow_up = thread_id(&server, FOLLOW_UP);
    let sports_page = format!("/practice/messages/{sports}");
    act_for(&mut jordan, &riley);

    // Boxes: Inbox, Sent, Archived.
    let inbox = rows(&lee.get("/practice/messages"));
    assert_eq!(subjects(&inbox), [SPORTS, FOLLOW_UP]);
    assert_eq!(
        inbox.iter().map(|r| r.unread).collect::<Vec<_>>(),
        [true, false]
    );
    assert_eq!(
        subjects(&rows(&lee.get("/practice/messages?box=sent"))),
        [FOLLOW_UP]
    );
    assert!(rows(&lee.get("/practice/messages?box=archived")).is_empty());
    assert_eq!(
        subjects(&rows(&kim.get("/practice/messages"))),
        [BLOOD_PRESSURE]
    );
    for page in ["/practice", "/practice/patients", "/practice/messages"] {
        assert_eq!(nav_unread(&lee.get(page)), 1, "{page}");
    }

    // Reading: the whole thread and the portal status; audited; the count drops.
    let (page, views) = audited(&server, "thread.view", || lee.get(&sports_page));
    assert_eq!(views, audit("staff", &lee_id, &riley));
    assert_eq!(senders(&page), [JORDAN_FOR_RILEY]);
    page.assert_contains("Riley Morgan</a>, born 2017-09-21")
        .assert_contains("<dt>Portal</dt><dd><span class=\"status ");
    assert_eq!(nav_unread(&page), 0);
    lee.get(&format!("/practice/messages/{follow_up}"))
        .assert_contains("<dt>Portal</dt><dd><span class=\"status enrolled\">Enrolled</span>");

    // Mark unread: the count goes back up.
    let (answer, _) = audited(&server, "thread.mark_unread", || {
        staff_post(&mut lee, &format!("{sports_page}/unread"), &[])
    });
    assert_redirect(&answer, "/practice/messages");
    assert_eq!(nav_unread(&lee.get("/practice")), 1);
    assert!(row(&rows(&lee.get("/practice/messages")), SPORTS).unread);

    // Reply: in the thread, once per form, audited, in Sent, and no email.
    let outbox_before = outbox_total(&server);
    let reply_text = "Yes, drop it off at the front desk.";
    let form = staff_reply(&mut lee, &sports, &[("body", reply_text)]);
    let (answer, sends) = audited(&server, "message.send", || form.post(&mut lee));
    assert_redirect(&answer, &format!("{sports_page}#latest"));
    assert_eq!(sends, audit("staff", &lee_id, &riley));
    for _ in 0..2 {
        assert_redirect(&form.post(&mut lee), &format!("{sports_page}#latest"));
    }
    assert_eq!(messages_with_body(&server, reply_text), 1);
    assert_eq!(
        outbox_total(&server),
        outbox_before,
        "a reply sends no email"
    );
    assert!(subjects(&rows(&lee.get("/practice/messages?box=sent"))).contains(&SPORTS));
    let in_portal = rows(&jordan.get("/portal/messages"));
    assert!(row(&in_portal, SPORTS).unread);
    assert_eq!(row(&in_portal, SPORTS).cells[3], "2");

    // Forwarding offers every other active member, by name.
    let offered = options(&lee.get(&sports_page), "to");
    let ids: Vec<&str> = offered.iter().map(|(id, _)| id.as_str()).collect();
    assert!(ids.contains(&kim_id.as_str()), "{offered:?}");
    assert!(!ids.contains(&lee_id.as_str()), "{offered:?}");
    let names: Vec<String> = offered.iter().map(|(_, n)| n.to_lowercase()).collect();
    let mut by_name = names.clone();
    by_name.sort();
    assert_eq!(names, by_name);
    let others = "SELECT count(*) FROM staff WHERE active = 1 AND id <> ?";
    assert_eq!(offered.len() as i64, count(&server, others, &[&lee_id]));

    // Forward with an internal note: unread for the colleague, never shown in the portal.
    let note = "Please check the dates on the form before signing";
    let (answer, forwards) = audited(&server, "thread.forward", || {
        staff_post(
            &mut lee,
            &format!("{sports_page}/forward"),
            &[("to", &kim_id), ("note", note)],
        )
    });
    assert_redirect(&answer, &format!("{sports_page}?notice=forwarded"));
    assert_eq!(forwards, audit("staff", &lee_id, &riley));
    let kim_inbox = rows(&kim.get("/practice/messages"));
    assert!(row(&kim_inbox, SPORTS).unread);
    assert_eq!(nav_unread(&kim.get("/practice")), 2);
    let kim_name = scalar(&server, "SELECT name FROM staff WHERE id = ?", &[&kim_id]);
    for page in [kim.get(&sports_page), lee.get(&sports_page)] {
        let with = page
            .body
            .split("<dt>With</dt><dd>")
            .nth(1)
            .unwrap_or_default();
        assert!(
            with.split("</dd>").next().unwrap().contains(&kim_name),
            "the thread is now with Kim too"
        );
        page.assert_contains(note);
        assert!(shown(&page)
            .iter()
            .any(|m| m.internal && m.body.contains(note)));
    }
    let portal_view = jordan.get(&format!("/portal/messages/{sports}"));
    portal_view.assert_lacks(note).assert_lacks("Forwarded to");
    assert!(shown(&portal_view).iter().all(|m| !m.internal));
    assert_eq!(shown(&portal_view).len(), 2);
    // The patient's mailbox still names the member the thread was addressed to, not Kim.
    let mailbox = rows(&jordan.get("/portal/messages"));
    let sports_row = row(&mailbox, SPORTS);
    assert_eq!(sports_row.cells[1], "Dr. Morgan Lee, MD");
    assert_eq!(sports_row.cells[3], "2");
    // Renamed by the administrator, the member is named anew on the patient's side: in the
    // mailbox and on the thread page.
    let edit = format!("/practice/admin/users/{lee_id}");
    assert_redirect(
        &admin.submit(
            &edit,
            &edit,
            &[
                ("name", "Dr. Morgan Lee-Park"),
                ("email", "dr.lee@demo.test"),
                ("degree", "DO"),
                ("access_level", "4"),
            ],
        ),
        &format!("{edit}?notice=saved"),
    );
    let mailbox = rows(&jordan.get("/portal/messages"));
    assert_eq!(row(&mailbox, SPORTS).cells[1], "Dr. Morgan Lee-Park, DO");
    jordan
        .get(&format!("/portal/messages/{sports}"))
        .assert_contains("With <strong>Dr. Morgan Lee-Park, DO</strong>");

    // Archive is per user: out of Lee's inbox, into Archived; Kim keeps it; nothing erased.
    let before = stored(&server);
    let (answer, archives) = audited(&server, "thread.archive", || {
        staff_post(&mut lee, &format!("{sports_page}/archive"), &[])
    });
    assert_redirect(&answer, "/practice/messages");
    assert_eq!(archives, audit("staff", &lee_id, &riley));
    assert!(!subjects(&rows(&lee.get("/practice/messages"))).contains(&SPORTS));
    assert_eq!(
        subjects(&rows(&lee.get("/practice/messages?box=archived"))),
        [SPORTS]
    );
    assert!(subjects(&rows(&kim.get("/practice/messages"))).contains(&SPORTS));
    // The thread page offers each their own way back or out.
    lee.get(&sports_page)
        .assert_contains(&format!("{sports_page}/unarchive\""))
        .assert_lacks(&format!("{sports_page}/archive\""));
    kim.get(&sports_page)
        .assert_contains(&format!("{sports_page}/archive\""))
        .assert_lacks(&format!("{sports_page}/unarchive\""));
    assert_eq!(stored(&server), before, "archiving keeps every message");
    assert_redirect(
        &staff_post(&mut lee, &format!("{sports_page}/unarchive"), &[]),
        &sports_page,
    );
    assert!(subjects(&rows(&lee.get("/practice/messages"))).contains(&SPORTS));
    assert!(rows(&lee.get("/practice/messages?box=archived")).is_empty());

    // With "archive for everyone", one archive takes it out of every inbox.
    settings(&mut admin, &[("archive_for_everyone", true)]);
    assert_redirect(
        &staff_post(&mut lee, &format!("{sports_page}/archive"), &[]),
        "/practice/messages",
    );
    assert!(!subjects(&rows(&kim.get("/practice/messages"))).contains(&SPORTS));
    assert_eq!(
        subjects(&rows(&kim.get("/practice/messages?box=archived"))),
        [SPORTS]
    );
    assert_eq!(stored(&server), before);
    assert_redirect(
        &staff_post(&mut lee, &format!("{sports_page}/unarchive"), &[]),
        &sports_page,
    );
    assert!(subjects(&rows(&kim.get("/practice/messages"))).contains(&SPORTS));
    settings(&mut admin, &[("archive_for_everyone", false)]);

    // Add to chart: the thread's messages (not the internal note) in the patient's Documents.
    let (answer, filings) = audited(&server, "chart.file", || {
        staff_post(
            &mut lee,
            &format!("/practice/messages/{follow_up}/chart"),
            &[],
        )
    });
    assert_redirect(
        &answer,
        &format!("/practice/messages/{follow_up}?notice=charted"),
    );
    assert_eq!(filings, audit("staff", &lee_id, &alex_patient));
    assert_eq!(charted_in(&server, &follow_up), 1);
    let chart = lee.get(&format!("/practice/patients/{alex_patient}"));
    let documents = chart
        .body
        .split("id=\"documents-heading\"")
        .nth(1)
        .expect("Documents");
    assert!(
        documents.contains(&format!("Message: {FOLLOW_UP}")),
        "{documents}"
    );
    assert_redirect(
        &staff_post(&mut lee, &format!("{sports_page}/chart"), &[]),
        &format!("{sports_page}?notice=charted"),
    );
    assert_eq!(
        charted_in(&server, &sports),
        2,
        "the internal note stays out of the chart"
    );

    // Auto-chart: a patient's message is filed; a staff reply with the box unticked is not.
    settings(&mut admin, &[("auto_chart", true)]);
    let lee_staff = lee_id.clone();
    let auto = patient_writes(
        &mut alex,
        &lee_staff,
        "Auto-chart check",
        "Filed by itself?",
    );
    assert_eq!(
        scalar(
            &server,
            "SELECT count(*) || ' ' || coalesce(max(d.filed_by), 'none') FROM chart_document d
               JOIN message m ON m.id = d.message_id WHERE m.thread_id = ?",
            &[&auto]
        ),
        "1 none"
    );
    let auto_page = lee.get(&format!("/practice/messages/{auto}"));
    assert!(
        is_checked(&auto_page, "chart"),
        "the chart box starts ticked"
    );
    let unticked = staff_reply(&mut lee, &auto, &[("body", "Not for the chart")]);
    sent_to(&unticked.post(&mut lee), "/practice/messages/");
    let ticked = staff_reply(
        &mut lee,
        &auto,
        &[("body", "For the chart"), ("chart", "on")],
    );
    sent_to(&ticked.post(&mut lee), "/practice/messages/");
    let filed = |body: &str| {
        count(
            &server,
            "SELECT count(*) FROM chart_document d JOIN message m ON m.id = d.message_id WHERE m.body = ?",
            &[body],
        )
    };
    assert_eq!(filed("Not for the chart"), 0);
    assert_eq!(filed("For the chart"), 1);
    lee.get(&format!("/practice/patients/{alex_patient}"))
        .assert_contains("Message: Auto-chart check")
        .assert_contains("Automatically");
}

#[test]
fn messages_are_never_edited_or_deleted() {
    let routes =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/web/routes.rs")).unwrap();
    let declared: Vec<(&str, &str)> = routes
        .lines()
        .filter_map(|line| line.trim().strip_prefix("route(\""))
        .map(|rest| {
            let method = rest.split('"').next().unwrap();
            let pattern = rest.split('"').nth(2).unwrap();
            (method, pattern)
        })
        .collect();
    assert!(declared.len() > 20, "routes read: {declared:?}");
    for (method, pattern) in &declared {
        assert!(
            ["GET", "POST"].contains(method),
            "{method} {pattern}: only GET and POST exist"
        );
        if pattern.contains("/messages") {
            for word in ["edit", "delete", "remove", "update", "destroy", "erase"] {
                assert!(
                    !pattern.contains(word),
                    "{method} {pattern} would change a message"
                );
            }
        }
    }

    // Nor does any other method reach a message.
    let server = Server::start(Options::demo());
    let mut lee = staff(&server, "dr.lee@demo.test");
    let sports = thread_id(&server, SPORTS);
    let before = stored(&server);
    let token = lee.get("/practice/account").csrf();
    for method in ["DELETE", "PUT", "PATCH"] {
        let answer = lee.request(
            method,
            &format!("/practice/messages/{sports}"),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            format!("csrf={token}&body=changed").as_bytes(),
        );
        assert!(answer.status >= 400, "{method} answered {}", answer.status);
    }
    assert_eq!(stored(&server), before);
}

// ---------------------------------------------------------------------------------------------
// 6. Staff write to patients: enrolled only, one content-free email per address

#[test]
fn staff_write_to_enrolled_patients_with_one_content_free_email() {
    let server = Server::start(Options::demo());
    let mut desk = staff(&server, "desk@demo.test");
    let mut cho = staff(&server, "rn.cho@demo.test");
    let mut alex = portal(&server, "alex@demo.test");
    let desk_id = staff_id(&server, "desk@demo.test");
    let alex_patient = patient_id(&server, "Alex", "Rivera");

    // Only enrolled patients can be written to.
    let picker = desk.get("/practice/messages/new?q=Patel");
    picker.assert_status(200).assert_contains("Sam Patel");
    let before = stored(&server);
    let outbox_before = outbox_total(&server);
    for (first, last) in [("Sam", "Patel"), ("Taylor", "Nguyen"), ("Morgan", "Blake")] {
        let patient = patient_id(&server, first, last);
        picker.assert_lacks(&format!("/practice/messages/new?patient={patient}\""));
        let refused = staff_new(
            &mut desk,
            &patient,
            &[("subject", "Not enrolled"), ("body", "Cannot be read")],
        )
        .post(&mut desk);
        refused.assert_status(400);
        assert!(
            refused.body.contains("class=\"field-error\"")
                && refused.body.contains("Nobody has portal access"),
            "{first}: {}",
            refused.body
        );
        assert_eq!(input_value(&refused, "subject"), "Not enrolled");
    }
    assert_eq!(stored(&server), before);
    assert_eq!(outbox_total(&server), outbox_before);

    // To Alex: one thread, one email saying only that a message waits.
    let subject = "Your lab appointment";
    let body = "Please book a fasting blood test before Thursday.";
    let form = staff_new(
        &mut desk,
        &alex_patient,
        &[("subject", subject), ("body", body)],
    );
    let (answer, sends) = audited(&server, "message.send", || form.post(&mut desk));
    let thread = sent_to(&answer, "/practice/messages/");
    assert_eq!(answer.location(), format!("/practice/messages/{thread}"));
    assert_eq!(sends, audit("staff", &desk_id, &alex_patient));
    assert_redirect(&form.post(&mut desk), answer.location());
    assert_eq!(messages_with_body(&server, body), 1);
    let sent = notices(&server);
    assert_eq!(
        sent.iter().map(|n| n.0.as_str()).collect::<Vec<_>>(),
        ["alex@demo.test"]
    );
    let (_, mail_subject, mail_body) = &sent[0];
    assert!(
        mail_body.contains(PRACTICE) && mail_body.contains("/portal/login"),
        "{mail_body}"
    );
    for secret in [
        subject,
        body,
        "lab appointment",
        "fasting",
        "Alex",
        "Rivera",
        "1984-03-14",
    ] {
        assert!(
            !mail_subject.contains(secret) && !mail_body.contains(secret),
            "the notice carries {secret:?}: {mail_subject}\n{mail_body}"
        );
    }

    // Alex sees it unread, from the desk; replies in the thread send no email.
    let mailbox = rows(&alex.get("/portal/messages"));
    let listed = row(&mailbox, subject);
    assert!(listed.unread);
    assert_eq!(listed.cells[1], "Drew Desk, Front desk");
    let outbox_before = outbox_total(&server);
    sent_to(
        &portal_reply(&mut alex, &thread, "Booked for Wednesday.").post(&mut alex),
        "/portal/messages/",
    );
    sent_to(
        &staff_reply(&mut desk, &thread, &[("body", "Thank you.")]).post(&mut desk),
        "/practice/messages/",
    );
    assert_eq!(outbox_total(&server), outbox_before);

    // The patient page lists every thread with the patient for level 2 and up only.
    let page = format!("/practice/patients/{alex_patient}");
    let for_cho = cho.get(&page);
    let section = for_cho
        .body
        .split("id=\"messages-heading\"")
        .nth(1)
        .expect("rn.cho sees the Messages section");
    for listed in [BLOOD_PRESSURE, FOLLOW_UP, subject] {
        assert!(
            section.contains(listed),
            "{listed} on the patient page:\n{section}"
        );
    }
    desk.get(&page)
        .assert_status(200)
        .assert_lacks("messages-heading")
        .assert_lacks(BLOOD_PRESSURE);
}

/// Riley is a child with no portal account of her own; Jordan holds active caregiver access.
/// "New message to a patient" must reach her through Jordan.
#[test]
fn staff_write_to_a_child_through_the_active_caregiver() {
    let server = Server::start(Options::demo());
    let mut desk = staff(&server, "desk@demo.test");
    let mut jordan = portal(&server, "jordan@demo.test");
    let riley = patient_id(&server, "Riley", "Morgan");
    let subject = "Vaccination schedule";
    let body = "Riley is due for a booster next month.";

    let answer =
        staff_new(&mut desk, &riley, &[("subject", subject), ("body", body)]).post(&mut desk);
    let thread = sent_to(&answer, "/practice/messages/");
    let sent = notices(&server);
    assert_eq!(
        sent.iter().map(|n| n.0.as_str()).collect::<Vec<_>>(),
        ["jordan@demo.test"]
    );
    for secret in [subject, body, "Riley", "2017-09-21"] {
        assert!(
            !sent[0].1.contains(secret) && !sent[0].2.contains(secret),
            "{secret}"
        );
    }
    desk.get(&format!("/practice/messages/{thread}"))
        .assert_lacks("cannot read replies now");
    act_for(&mut jordan, &riley);
    assert!(row(&rows(&jordan.get("/portal/messages")), subject).unread);
}

/// With one worker the server has one database connection. A change refused with an error page
/// used to keep its connection while that page was drawn, which takes one again, and the
/// request waited for itself for ever (with the default 16 workers, 16 such requests at once
/// would have).
#[test]
fn refused_forwards_and_user_changes_answer_even_with_one_database_connection() {
    let server = Server::start(Options::demo().env("CAREPOST_WORKERS", "1"));
    let mut kim = staff(&server, "np.kim@demo.test");
    let page = format!("/practice/messages/{}", thread_id(&server, BLOOD_PRESSURE));
    let refused = staff_post(
        &mut kim,
        &format!("{page}/forward"),
        &[("to", ""), ("note", "Typed note to keep")],
    );
    assert_eq!(refused.status, 400, "{}", refused.body);
    refused
        .assert_contains("Choose a colleague from the list.")
        .assert_contains("Typed note to keep");

    let mut admin = staff(&server, "admin@demo.test");
    let admin_id = scalar(
        &server,
        "SELECT id FROM staff WHERE email = ?",
        &["admin@demo.test"],
    );
    let user_page = format!("/practice/admin/users/{admin_id}");
    let unnamed = staff_post(
        &mut admin,
        &user_page,
        &[
            ("email", "admin@demo.test"),
            ("name", ""),
            ("access_level", "2"),
        ],
    );
    assert_eq!(unnamed.status, 400, "{}", unnamed.body);
    let last_admin = staff_post(&mut admin, &format!("{user_page}/deactivate"), &[]);
    assert_eq!(last_admin.status, 400, "{}", last_admin.body);
}

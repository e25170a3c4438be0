//! Enrollment, end to end against the real binary: staff users and practice settings
//! (administrators only), patient records and search, portal invitations with a PIN,
//! registration, caregivers, revocation, password links, auto-invite, and what emails may carry.
//!
//! Emails are rows of the `outbox` table and the audit log is `audit_event`; both are read with
//! python3's sqlite3 module while the server runs.

use crate::harness::*;

const LINK_EXPIRED: &str =
    "Your registration link has expired. Ask your doctor to enroll you again.";
const REVOKED: &str = "Ask your doctor to provide access to your health records.";
const RESET_SENT: &str = "If an account uses this address, a link to choose a new password";
const DEAD_RESET: &str = "This link has been used or has expired.";
const NEW_PASSWORD: &str = "Fresh-pass-42";
const DAY: i64 = 86_400;

// ---------------------------------------------------------------------------------------------
// Helpers: pages

fn signed_in_staff(server: &Server, email: &str) -> Client {
    let mut client = server.client();
    assert_redirect(&client.login_staff(email, DEMO_PASSWORD), "/practice");
    client
}

fn signed_in_portal(server: &Server, email: &str, password: &str) -> Client {
    let mut client = server.client();
    assert_redirect(&client.login_portal(email, password), "/portal");
    client
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

#[track_caller]
fn assert_refused(response: &Response, what: &str) {
    assert!(
        response.status == 403 || response.status == 404,
        "{what}: expected 403 or 404, got {}:\n{}",
        response.status,
        response.body
    );
}

/// The HTML tag that starts at the first occurrence of `marker`.
fn tag_at<'a>(body: &'a str, marker: &str) -> &'a str {
    let start = body
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in:\n{body}"));
    body[start..].split('>').next().unwrap()
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let marker = format!(" {name}=\"");
    let start = tag.find(&marker)? + marker.len();
    Some(
        tag[start..]
            .split('"')
            .next()
            .unwrap()
            .replace("&amp;", "&"),
    )
}

/// The text of the error shown beside a form field.
#[track_caller]
fn error_beside(response: &Response, field: &str) -> String {
    let marker = format!("id=\"{field}-error\">");
    let start = response
        .body
        .find(&marker)
        .unwrap_or_else(|| panic!("no error beside {field}:\n{}", response.body))
        + marker.len();
    response.body[start..].split('<').next().unwrap().to_owned()
}

fn input_value(response: &Response, name: &str) -> String {
    attribute(
        tag_at(&response.body, &format!("<input id=\"{name}\"")),
        "value",
    )
    .unwrap_or_default()
}

fn is_checked(response: &Response, name: &str) -> bool {
    tag_at(&response.body, &format!("type=\"checkbox\" id=\"{name}\"")).contains(" checked")
}

fn selected_option(response: &Response, select: &str) -> String {
    let start = response
        .body
        .find(&format!("<select id=\"{select}\""))
        .unwrap_or_else(|| panic!("no select {select}:\n{}", response.body));
    let options = response.body[start..].split("</select>").next().unwrap();
    options
        .split("<option")
        .skip(1)
        .map(|o| o.split('>').next().unwrap())
        .find(|tag| tag.contains(" selected"))
        .and_then(|tag| attribute(tag, "value"))
        .unwrap_or_default()
}

fn main_of(page: &Response) -> &str {
    page.body.split("<main").nth(1).expect("page has a <main>")
}

/// The portal status label on a patient page.
fn portal_status(page: &Response) -> String {
    let marker = "<span class=\"status ";
    let start = page
        .body
        .find(marker)
        .unwrap_or_else(|| panic!("no portal status on:\n{}", page.body));
    let rest = &page.body[start..];
    rest[rest.find('>').unwrap() + 1..]
        .split('<')
        .next()
        .unwrap()
        .to_owned()
}

/// "Last, First" of each patient row of the list page.
fn listed_patients(page: &Response) -> Vec<String> {
    page.body
        .split("<td><a href=\"/practice/patients/")
        .skip(1)
        .map(|row| {
            row.split_once("\">")
                .unwrap()
                .1
                .split("</a>")
                .next()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// The href of the first link with this rel, "&amp;" decoded.
fn link_with_rel(page: &Response, rel: &str) -> Option<String> {
    page.body
        .split("<a ")
        .skip(1)
        .map(|a| a.split('>').next().unwrap())
        .find(|tag| tag.contains(&format!("rel=\"{rel}\"")))
        .and_then(|tag| attribute(&format!(" {tag}"), "href"))
}

/// The action of the first form whose action starts with `prefix`.
#[track_caller]
fn form_action(page: &Response, prefix: &str) -> String {
    let marker = format!("action=\"{prefix}");
    let start = page
        .body
        .find(&marker)
        .unwrap_or_else(|| panic!("no form posting to {prefix}:\n{}", page.body))
        + "action=\"".len();
    page.body[start..].split('"').next().unwrap().to_owned()
}

/// A waiting invitation as the patient page shows it to staff.
#[derive(Debug)]
struct Pending {
    who: String,
    pin: String,
    cancel: String,
}

fn pending_invitations(page: &Response) -> Vec<Pending> {
    page.body
        .split("<tr>")
        .filter(|row| row.contains("class=\"pin\""))
        .map(|row| Pending {
            who: row["<td>".len()..].split("<br>").next().unwrap().to_owned(),
            pin: row
                .split("class=\"pin\">")
                .nth(1)
                .unwrap()
                .split('<')
                .next()
                .unwrap()
                .to_owned(),
            cancel: attribute(tag_at(row, "<form"), "action").unwrap(),
        })
        .collect()
}

/// The PIN of the one waiting invitation for `who` ("The patient", or "Name (Relationship)").
#[track_caller]
fn pin_for(page: &Response, who: &str) -> String {
    let found: Vec<Pending> = pending_invitations(page)
        .into_iter()
        .filter(|p| p.who == who)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one waiting invitation for {who}:\n{found:?}"
    );
    let pin = found[0].pin.clone();
    assert!(
        pin.len() == 6 && pin.bytes().all(|b| b.is_ascii_digit()),
        "PIN {pin:?} is 6 digits"
    );
    pin
}

/// The options of the portal's "Viewing" switcher: (patient id, label, selected).
fn viewing_options(page: &Response) -> Vec<(String, String, bool)> {
    let Some(start) = page.body.find("<select id=\"acting-patient\"") else {
        return Vec::new();
    };
    page.body[start..]
        .split("</select>")
        .next()
        .unwrap()
        .split("<option")
        .skip(1)
        .map(|o| {
            let (tag, text) = o.split_once('>').unwrap();
            (
                attribute(tag, "value").unwrap(),
                text.split('<').next().unwrap().to_owned(),
                tag.contains(" selected"),
            )
        })
        .collect()
}

fn viewing_labels(page: &Response) -> Vec<String> {
    viewing_options(page)
        .into_iter()
        .map(|(_, l, _)| l)
        .collect()
}

/// The path of the link in `text` that starts with `prefix` and ends with a 64-hex token.
#[track_caller]
fn link_path(text: &str, prefix: &str) -> String {
    let start = text
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix} link in:\n{text}"))
        + prefix.len();
    let token: String = text[start..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    assert_eq!(token.len(), 64, "a 64-hex token after {prefix} in:\n{text}");
    format!("{prefix}{token}")
}

#[track_caller]
fn assert_link_expired(response: &Response) {
    response.assert_contains(LINK_EXPIRED);
    assert!(
        !response.body.contains("name=\"pin\""),
        "an expired link shows no form:\n{}",
        response.body
    );
}

/// The anonymous CSRF token (and its cookie) of this client, as any public form carries.
fn anonymous_token(client: &mut Client) -> String {
    client.get("/portal/login").csrf()
}

fn post_with(client: &mut Client, path: &str, token: &str, fields: &[(&str, &str)]) -> Response {
    let mut all = vec![("csrf", token)];
    all.extend_from_slice(fields);
    client.post_form(path, &all)
}

/// A registration that creates a new account.
fn register_new(
    client: &mut Client,
    link: &str,
    token: &str,
    (dob, pin): (&str, &str),
    email: &str,
    (password, again): (&str, &str),
) -> Response {
    post_with(
        client,
        link,
        token,
        &[
            ("date_of_birth", dob),
            ("pin", pin),
            ("mode", "new"),
            ("email", email),
            ("password", password),
            ("password_again", again),
        ],
    )
}

/// A registration that adds the record to an existing account.
fn register_existing(
    client: &mut Client,
    link: &str,
    token: &str,
    (dob, pin): (&str, &str),
    email: &str,
    password: &str,
) -> Response {
    post_with(
        client,
        link,
        token,
        &[
            ("date_of_birth", dob),
            ("pin", pin),
            ("mode", "existing"),
            ("email", email),
            ("password", password),
        ],
    )
}

fn patient_page(id: &str) -> String {
    format!("/practice/patients/{id}")
}

fn patient_form<'a>(
    first: &'a str,
    last: &'a str,
    dob: &'a str,
    email: &'a str,
    phone: &'a str,
) -> [(&'static str, &'a str); 5] {
    [
        ("first_name", first),
        ("last_name", last),
        ("date_of_birth", dob),
        ("email", email),
        ("phone", phone),
    ]
}

fn create_patient(client: &mut Client, fields: &[(&str, &str)]) -> Response {
    client.submit("/practice/patients/new", "/practice/patients/new", fields)
}

/// The patient id a create or edit redirected to.
#[track_caller]
fn redirected_patient(response: &Response) -> String {
    assert_eq!(response.status, 303, "{}", response.body);
    response
        .location()
        .strip_prefix("/practice/patients/")
        .and_then(|rest| rest.split('?').next())
        .unwrap_or_else(|| panic!("not a patient page: {}", response.location()))
        .to_owned()
}

/// Sends the patient's own invitation from their page; returns the patient page after it.
fn invite(client: &mut Client, patient: &str, email: &str, phone: &str) -> Response {
    let path = format!("{}/invite", patient_page(patient));
    let sent = client.submit(&path, &path, &[("email", email), ("phone", phone)]);
    assert_redirect(&sent, &format!("{}?notice=invited", patient_page(patient)));
    client.get(sent.location())
}

fn search(client: &mut Client, query: &str) -> Response {
    let page = client.get(&format!(
        "/practice/patients?{}",
        encode_form(&[("q", query)])
    ));
    page.assert_status(200);
    page
}

/// The staff user fields of the demo's desk user, with `may_invite` as given.
fn desk_fields(may_invite: bool) -> Vec<(&'static str, &'static str)> {
    let mut fields = vec![
        ("name", "Drew Desk"),
        ("email", "desk@demo.test"),
        ("degree", "Front desk"),
        ("access_level", "1"),
    ];
    if may_invite {
        fields.push(("may_invite", "on"));
    }
    fields
}

// ---------------------------------------------------------------------------------------------
// Helpers: practice settings

#[derive(Clone, Debug, PartialEq)]
struct Settings {
    name: String,
    phone: String,
    messaging: bool,
    auto_chart: bool,
    archive_for_everyone: bool,
    chosen_only: bool,
    auto_invite: bool,
}

fn read_settings(admin: &mut Client) -> Settings {
    let page = admin.get("/practice/admin/settings");
    page.assert_status(200);
    Settings {
        name: input_value(&page, "name"),
        phone: input_value(&page, "phone"),
        messaging: is_checked(&page, "messaging_enabled"),
        auto_chart: is_checked(&page, "auto_chart"),
        archive_for_everyone: is_checked(&page, "archive_for_everyone"),
        chosen_only: selected_option(&page, "invite_policy") == "chosen",
        auto_invite: is_checked(&page, "auto_invite"),
    }
}

fn save_settings(admin: &mut Client, s: &Settings) -> Response {
    let mut fields = vec![
        ("name", s.name.as_str()),
        ("phone", s.phone.as_str()),
        (
            "invite_policy",
            if s.chosen_only { "chosen" } else { "everyone" },
        ),
    ];
    for (name, on) in [
        ("messaging_enabled", s.messaging),
        ("auto_chart", s.auto_chart),
        ("archive_for_everyone", s.archive_for_everyone),
        ("auto_invite", s.auto_invite),
    ] {
        if on {
            fields.push((name, "on"));
        }
    }
    admin.submit(
        "/practice/admin/settings",
        "/practice/admin/settings",
        &fields,
    )
}

fn change_settings(admin: &mut Client, change: impl FnOnce(&mut Settings)) {
    let mut settings = read_settings(admin);
    change(&mut settings);
    assert_redirect(
        &save_settings(admin, &settings),
        "/practice/admin/settings?notice=saved",
    );
}

// ---------------------------------------------------------------------------------------------
// Helpers: the database

/// Rows of a query, every value as text ("" for NULL).
fn query(server: &Server, sql: &str, params: &[&str]) -> Vec<Vec<String>> {
    db_rows(&server.data, sql, params)
}

#[track_caller]
fn scalar(server: &Server, sql: &str, params: &[&str]) -> String {
    let rows = query(server, sql, params);
    assert_eq!(rows.len(), 1, "one row from {sql:?}: {rows:?}");
    rows[0][0].clone()
}

fn staff_id(server: &Server, email: &str) -> String {
    scalar(server, "SELECT id FROM staff WHERE email = ?", &[email])
}

fn patient_id(server: &Server, first: &str, last: &str) -> String {
    scalar(
        server,
        "SELECT id FROM patient WHERE first_name = ? AND last_name = ?",
        &[first, last],
    )
}

#[derive(Debug)]
struct Email {
    kind: String,
    recipient: String,
    subject: String,
    body: String,
}

fn outbox(server: &Server) -> Vec<Email> {
    query(
        server,
        "SELECT kind, recipient, subject, body_text FROM outbox ORDER BY id",
        &[],
    )
    .into_iter()
    .map(|r| Email {
        kind: r[0].clone(),
        recipient: r[1].clone(),
        subject: r[2].clone(),
        body: r[3].clone(),
    })
    .collect()
}

fn emails(server: &Server, kind: &str, recipient: &str) -> Vec<Email> {
    outbox(server)
        .into_iter()
        .filter(|e| e.kind == kind && e.recipient == recipient)
        .collect()
}

/// The only email of this kind to this address.
#[track_caller]
fn only_email(server: &Server, kind: &str, recipient: &str) -> Email {
    let mut found = emails(server, kind, recipient);
    assert_eq!(found.len(), 1, "one {kind} email to {recipient}: {found:?}");
    found.pop().unwrap()
}

fn count(server: &Server, sql: &str, params: &[&str]) -> usize {
    scalar(server, sql, params).parse().unwrap()
}

#[derive(Debug)]
struct Audit {
    actor_kind: String,
    actor_id: String,
    patient_id: String,
    object: String,
}

fn audit(server: &Server, action: &str) -> Vec<Audit> {
    query(
        server,
        "SELECT actor_kind, actor_id, patient_id, object FROM audit_event WHERE action = ? ORDER BY id",
        &[action],
    )
    .into_iter()
    .map(|r| Audit {
        actor_kind: r[0].clone(),
        actor_id: r[1].clone(),
        patient_id: r[2].clone(),
        object: r[3].clone(),
    })
    .collect()
}

fn acting_patient(server: &Server, account_email: &str) -> Vec<String> {
    query(
        server,
        "SELECT s.acting_patient_id FROM session s JOIN portal_account a ON a.id = s.principal_id
          WHERE s.audience = 'portal' AND a.email = ?",
        &[account_email],
    )
    .into_iter()
    .map(|r| r[0].clone())
    .collect()
}

/// Visits every patient page, collects the PINs shown to staff, and checks that no email ever
/// carried one. Returns how many PINs were seen.
fn assert_no_pin_emailed(server: &Server, staff: &mut Client, also: &[String]) -> usize {
    let mut pins: Vec<String> = also.to_vec();
    for row in query(server, "SELECT id FROM patient", &[]) {
        let page = staff.get(&patient_page(&row[0]));
        page.assert_status(200);
        pins.extend(pending_invitations(&page).into_iter().map(|p| p.pin));
    }
    let mail = outbox(server);
    assert!(!mail.is_empty());
    for pin in &pins {
        for email in &mail {
            assert!(
                !email.body.contains(pin.as_str()) && !email.subject.contains(pin.as_str()),
                "PIN {pin} was emailed: {email:?}"
            );
        }
    }
    pins.len()
}

/// Today's date (UTC) moved by `days`, `years` earlier: a date of birth. A 29 February that
/// does not exist becomes 28 February for today (the birthday has come) and 1 March otherwise.
fn born(years: i64, days: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (y, m, d) = civil_from_days(now.div_euclid(DAY) + days);
    let year = y - years;
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let (m, d) = match (m, d) {
        (2, 29) if !leap && days <= 0 => (2, 28),
        (2, 29) if !leap => (3, 1),
        other => other,
    };
    format!("{year:04}-{m:02}-{d:02}")
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Sam's registration link (path) and PIN, as `serve --demo` prints them.
fn sam_from_stdout(server: &Server) -> (String, String) {
    let out = server.stdout();
    let link = link_path(&out, "/portal/register/");
    let pin: String = out
        .split("and PIN ")
        .nth(1)
        .unwrap_or_else(|| panic!("no PIN printed:\n{out}"))
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert_eq!(pin.len(), 6, "{out}");
    (link, pin)
}

/// The declared routes of one method under `prefix`, `{…}` replaced by `id`.
fn declared_routes(method: &str, prefix: &str, id: &str) -> Vec<String> {
    let source =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/web/routes.rs")).unwrap();
    let marker = format!("route(\"{method}\", \"");
    let routes: Vec<String> = source
        .lines()
        .filter_map(|l| l.trim().strip_prefix(&marker))
        .map(|rest| rest.split('"').next().unwrap())
        .filter(|path| path.starts_with(prefix))
        .map(|path| {
            path.split('/')
                .map(|seg| if seg.starts_with('{') { id } else { seg })
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    assert!(!routes.is_empty(), "no {method} routes under {prefix}");
    routes
}

// ---------------------------------------------------------------------------------------------
// 1. Users

#[test]
fn administrators_add_edit_and_deactivate_users_and_keep_the_last_administrator() {
    let server = Server::start(Options::demo());
    let admin_id = staff_id(&server, "admin@demo.test");
    let mut admin = signed_in_staff(&server, "admin@demo.test");

    let list = admin.get("/practice/admin/users");
    list.assert_status(200);
    for email in [
        "admin@demo.test",
        "dr.lee@demo.test",
        "np.kim@demo.test",
        "rn.cho@demo.test",
        "desk@demo.test",
    ] {
        list.assert_contains(email);
    }

    // A new user is emailed a link to choose a password, and signs in with it.
    let created = admin.submit(
        "/practice/admin/users/new",
        "/practice/admin/users/new",
        &[
            ("name", "Robin Reyes"),
            ("email", "robin@demo.test"),
            ("degree", "PA"),
            ("access_level", "3"),
            ("may_invite", "on"),
        ],
    );
    let robin = staff_id(&server, "robin@demo.test");
    assert_redirect(
        &created,
        &format!("/practice/admin/users/{robin}?notice=link_sent"),
    );
    assert_eq!(
        query(
            &server,
            "SELECT name, degree, access_level, is_admin, may_invite, active FROM staff WHERE id = ?",
            &[&robin]
        ),
        vec![vec!["Robin Reyes", "PA", "3", "0", "1", "1"]]
    );
    admin
        .get("/practice/admin/users")
        .assert_contains("Robin Reyes")
        .assert_contains("robin@demo.test");
    let mail = only_email(&server, "password_reset", "robin@demo.test");
    let link = link_path(&mail.body, "/practice/reset/");
    assert!(
        mail.body.contains(&format!("{}{link}", server.base)),
        "{mail:?}"
    );
    let mut robin_client = server.client();
    let set = robin_client.submit(
        &link,
        &link,
        &[("password", NEW_PASSWORD), ("password_again", NEW_PASSWORD)],
    );
    assert_redirect(&set, "/practice/login?reset=1");
    assert_redirect(
        &robin_client.login_staff("robin@demo.test", NEW_PASSWORD),
        "/practice",
    );
    robin_client
        .get("/practice")
        .assert_contains("Robin Reyes")
        .assert_contains("Level 3");
    robin_client.get(&link).assert_contains(DEAD_RESET);

    // Editing the access level saves it and is audited with the change.
    let lee = staff_id(&server, "dr.lee@demo.test");
    let lee_page = format!("/practice/admin/users/{lee}");
    assert_eq!(selected_option(&admin.get(&lee_page), "access_level"), "4");
    let saved = admin.submit(
        &lee_page,
        &lee_page,
        &[
            ("name", "Dr. Morgan Lee"),
            ("email", "dr.lee@demo.test"),
            ("degree", "MD"),
            ("access_level", "3"),
        ],
    );
    assert_redirect(&saved, &format!("{lee_page}?notice=saved"));
    let reloaded = admin.get(saved.location());
    reloaded.assert_contains("Your changes are saved.");
    assert_eq!(selected_option(&reloaded, "access_level"), "3");
    assert_eq!(
        scalar(
            &server,
            "SELECT access_level FROM staff WHERE id = ?",
            &[&lee]
        ),
        "3"
    );
    let updates = audit(&server, "staff.update");
    assert!(
        updates.iter().any(|a| a.actor_kind == "staff"
            && a.actor_id == admin_id
            && a.object.contains(&format!("staff {lee}"))
            && a.object.contains("access level")
            && a.object.contains('4')
            && a.object.contains('3')),
        "{updates:?}"
    );

    // An address another user signs in with is refused beside the field, with what was typed.
    let staff_count = count(&server, "SELECT count(*) FROM staff", &[]);
    let duplicate = admin.submit(
        "/practice/admin/users/new",
        "/practice/admin/users/new",
        &[
            ("name", "Someone Else"),
            ("email", "NP.Kim@demo.test"),
            ("degree", "MA"),
            ("access_level", "2"),
            ("is_admin", "on"),
        ],
    );
    duplicate.assert_status(400);
    assert!(
        error_beside(&duplicate, "email").contains("already"),
        "{}",
        duplicate.body
    );
    assert_eq!(input_value(&duplicate, "name"), "Someone Else");
    assert_eq!(input_value(&duplicate, "email"), "NP.Kim@demo.test");
    assert_eq!(input_value(&duplicate, "degree"), "MA");
    assert_eq!(selected_option(&duplicate, "access_level"), "2");
    assert!(is_checked(&duplicate, "is_admin"));
    assert_eq!(
        count(&server, "SELECT count(*) FROM staff", &[]),
        staff_count
    );
    let robin_page = format!("/practice/admin/users/{robin}");
    let taken = admin.submit(
        &robin_page,
        &robin_page,
        &[
            ("name", "Robin Reyes"),
            ("email", "desk@demo.test"),
            ("degree", "PA"),
            ("access_level", "3"),
        ],
    );
    taken.assert_status(400);
    assert!(error_beside(&taken, "email").contains("already"));
    assert_eq!(
        scalar(&server, "SELECT email FROM staff WHERE id = ?", &[&robin]),
        "robin@demo.test"
    );

    // Deactivating signs the user out at once and keeps them out until reactivated.
    let mut lee_client = signed_in_staff(&server, "dr.lee@demo.test");
    lee_client.get("/practice").assert_status(200);
    let off = admin.submit(&lee_page, &format!("{lee_page}/deactivate"), &[]);
    assert_redirect(&off, &format!("{lee_page}?notice=deactivated"));
    assert_redirect(&lee_client.get("/practice"), "/practice/login");
    assert_redirect(&lee_client.get("/practice/patients"), "/practice/login");
    server
        .client()
        .login_staff("dr.lee@demo.test", DEMO_PASSWORD)
        .assert_status(400);
    admin
        .get("/practice/admin/users")
        .assert_contains("Deactivated");
    let on = admin.submit(&lee_page, &format!("{lee_page}/reactivate"), &[]);
    assert_redirect(&on, &format!("{lee_page}?notice=reactivated"));
    signed_in_staff(&server, "dr.lee@demo.test")
        .get("/practice")
        .assert_status(200);

    // The last administrator can neither drop the flag nor be deactivated.
    let me = format!("/practice/admin/users/{admin_id}");
    let me_fields = [
        ("name", "Avery Admin"),
        ("email", "admin@demo.test"),
        ("degree", "Practice manager"),
        ("access_level", "1"),
    ];
    let refused = admin.submit(&me, &me, &me_fields);
    refused.assert_status(400);
    assert!(
        error_beside(&refused, "is_admin").contains("last administrator"),
        "{}",
        refused.body
    );
    assert_eq!(
        scalar(
            &server,
            "SELECT is_admin FROM staff WHERE id = ?",
            &[&admin_id]
        ),
        "1"
    );
    let refused = admin.submit(&me, &format!("{me}/deactivate"), &[]);
    refused.assert_status(400);
    refused.assert_contains("last administrator");
    assert_eq!(
        scalar(
            &server,
            "SELECT active FROM staff WHERE id = ?",
            &[&admin_id]
        ),
        "1"
    );
    admin.get("/practice/admin/users").assert_status(200);

    // With a second administrator, the first may step down, and loses the pages at once.
    let kim = staff_id(&server, "np.kim@demo.test");
    let kim_page = format!("/practice/admin/users/{kim}");
    let promoted = admin.submit(
        &kim_page,
        &kim_page,
        &[
            ("name", "Jamie Kim"),
            ("email", "np.kim@demo.test"),
            ("degree", "NP"),
            ("access_level", "3"),
            ("is_admin", "on"),
        ],
    );
    assert_redirect(&promoted, &format!("{kim_page}?notice=saved"));
    assert_redirect(
        &admin.submit(&me, &me, &me_fields),
        &format!("{me}?notice=saved"),
    );
    admin.get("/practice/admin/users").assert_status(404);
    signed_in_staff(&server, "np.kim@demo.test")
        .get("/practice/admin/users")
        .assert_status(200);
}

// ---------------------------------------------------------------------------------------------
// 2. Practice settings, and administration closed to everyone else

#[test]
fn settings_persist_are_audited_and_administration_is_closed_to_other_staff() {
    let server = Server::start(Options::demo());
    let admin_id = staff_id(&server, "admin@demo.test");
    let mut admin = signed_in_staff(&server, "admin@demo.test");
    let mut settings = read_settings(&mut admin);
    assert_eq!(
        settings,
        Settings {
            name: "Demo Family Practice".into(),
            phone: String::new(),
            messaging: true,
            auto_chart: false,
            archive_for_everyone: false,
            chosen_only: false,
            auto_invite: false,
        }
    );

    type Change = fn(&mut Settings);
    let changes: [(&str, Change); 8] = [
        ("messaging", |s| s.messaging = false),
        ("messaging", |s| s.messaging = true),
        ("chart", |s| s.auto_chart = true),
        ("archive", |s| s.archive_for_everyone = true),
        ("polic", |s| s.chosen_only = true),
        ("auto invite", |s| s.auto_invite = true),
        ("name", |s| s.name = "Riverside Clinic".into()),
        ("phone", |s| s.phone = "555-0199".into()),
    ];
    for (setting, change) in changes {
        let before = audit(&server, "setting.change").len();
        change(&mut settings);
        assert_redirect(
            &save_settings(&mut admin, &settings),
            "/practice/admin/settings?notice=saved",
        );
        assert_eq!(
            read_settings(&mut admin),
            settings,
            "after changing {setting}"
        );
        let rows = audit(&server, "setting.change");
        assert_eq!(
            rows.len(),
            before + 1,
            "one audit row for {setting}: {rows:?}"
        );
        let row = rows.last().unwrap();
        assert!(
            row.object
                .to_lowercase()
                .replace('_', " ")
                .contains(setting),
            "the audit row names {setting}: {row:?}"
        );
        assert_eq!(
            (row.actor_kind.as_str(), row.actor_id.as_str()),
            ("staff", admin_id.as_str())
        );
    }
    admin
        .get("/practice/admin/settings")
        .assert_contains("<span class=\"practice-name\">Riverside Clinic</span>");

    // Saving without a change records nothing.
    let before = audit(&server, "setting.change").len();
    save_settings(&mut admin, &settings);
    assert_eq!(audit(&server, "setting.change").len(), before);

    // An empty practice name is refused beside the field.
    let mut unnamed = settings.clone();
    unnamed.name = "   ".into();
    unnamed.auto_chart = false;
    let refused = save_settings(&mut admin, &unnamed);
    refused.assert_status(400);
    assert!(!error_beside(&refused, "name").is_empty());
    assert_eq!(read_settings(&mut admin), settings);
    assert_eq!(audit(&server, "setting.change").len(), before);

    // Anyone but an administrator: every administration page and action is not found, and
    // nothing changes.
    let desk = staff_id(&server, "desk@demo.test");
    let snapshot = |server: &Server| {
        (
            query(server, "SELECT * FROM practice", &[]),
            query(server, "SELECT * FROM staff ORDER BY id", &[]),
            count(server, "SELECT count(*) FROM outbox", &[]),
            count(server, "SELECT count(*) FROM password_reset", &[]),
            count(server, "SELECT count(*) FROM audit_event WHERE action LIKE 'staff.%' OR action = 'setting.change'", &[]),
        )
    };
    let before = snapshot(&server);
    for email in ["rn.cho@demo.test", "dr.lee@demo.test"] {
        let mut user = signed_in_staff(&server, email);
        let home = user.get("/practice");
        home.assert_lacks("/practice/admin/");
        let token = home.csrf();
        for path in declared_routes("GET", "/practice/admin/", &desk) {
            user.get(&path).assert_status(404);
        }
        for path in declared_routes("POST", "/practice/admin/", &desk) {
            let response = post_with(
                &mut user,
                &path,
                &token,
                &[
                    ("name", "Taken Over"),
                    ("email", "taken@over.test"),
                    ("degree", "MD"),
                    ("access_level", "4"),
                    ("is_admin", "on"),
                    ("may_invite", "on"),
                    ("phone", "555-0000"),
                    ("invite_policy", "chosen"),
                    ("auto_invite", "on"),
                ],
            );
            assert_eq!(
                response.status, 404,
                "{email} POST {path}: {}",
                response.body
            );
        }
        user.get("/practice").assert_status(200);
    }
    assert_eq!(snapshot(&server), before);
}

// ---------------------------------------------------------------------------------------------
// 3. Patient records

#[test]
fn patient_records_are_validated_searched_and_paged() {
    let server = Server::start(Options::demo());
    let mut desk = signed_in_staff(&server, "desk@demo.test");

    // Each problem is named beside its field, and what was typed stays.
    let refused = create_patient(
        &mut desk,
        &patient_form("", "   ", "2023-02-30", "not-an-email", "555-0111"),
    );
    refused.assert_status(400);
    for field in ["first_name", "last_name", "date_of_birth", "email"] {
        assert!(!error_beside(&refused, field).is_empty());
    }
    assert_eq!(input_value(&refused, "date_of_birth"), "2023-02-30");
    assert_eq!(input_value(&refused, "email"), "not-an-email");
    assert_eq!(input_value(&refused, "phone"), "555-0111");
    let future = create_patient(
        &mut desk,
        &patient_form("Casey", "Okafor", "2999-01-01", "", ""),
    );
    future.assert_status(400);
    assert!(error_beside(&future, "date_of_birth").contains("future"));
    assert_eq!(input_value(&future, "first_name"), "Casey");
    assert_eq!(input_value(&future, "last_name"), "Okafor");
    let patients = count(&server, "SELECT count(*) FROM patient", &[]);
    assert_eq!(patients, 6, "nothing saved");

    // Created, then edited.
    let created = create_patient(
        &mut desk,
        &patient_form(
            "Casey",
            "Okafor",
            "1979-04-05",
            "casey@example.com",
            "555-0123",
        ),
    );
    let casey = redirected_patient(&created);
    let page = desk.get(&patient_page(&casey));
    page.assert_contains("Casey Okafor")
        .assert_contains("1979-04-05")
        .assert_contains("casey@example.com")
        .assert_contains("555-0123");
    assert_eq!(portal_status(&page), "Not invited");
    let edit = format!("{}/edit", patient_page(&casey));
    let form = desk.get(&edit);
    assert_eq!(input_value(&form, "last_name"), "Okafor");
    assert_eq!(input_value(&form, "date_of_birth"), "1979-04-05");
    let bad_edit = desk.submit(
        &edit,
        &edit,
        &patient_form(
            "Casey",
            "Okafor-Smith",
            "1979-13-05",
            "casey@example.com",
            "",
        ),
    );
    bad_edit.assert_status(400);
    assert_eq!(input_value(&bad_edit, "last_name"), "Okafor-Smith");
    let edited = desk.submit(
        &edit,
        &edit,
        &patient_form(
            "Casey",
            "Okafor-Smith",
            "1979-04-05",
            "casey.os@example.com",
            "555-0999",
        ),
    );
    assert_eq!(redirected_patient(&edited), casey);
    desk.get(&patient_page(&casey))
        .assert_contains("Casey Okafor-Smith")
        .assert_contains("casey.os@example.com")
        .assert_contains("555-0999")
        .assert_lacks("555-0123");

    // Search by last-name prefix, date of birth and email prefix.
    assert_eq!(listed_patients(&search(&mut desk, "riv")), ["Rivera, Alex"]);
    assert_eq!(
        listed_patients(&search(&mut desk, "1991-07-02")),
        ["Patel, Sam"]
    );
    assert_eq!(
        listed_patients(&search(&mut desk, "morgan@")),
        ["Blake, Morgan"]
    );
    assert_eq!(
        listed_patients(&search(&mut desk, "Morgan")),
        ["Blake, Morgan", "Morgan, Quinn", "Morgan, Riley"]
    );
    assert_eq!(
        listed_patients(&search(&mut desk, "casey.os")),
        ["Okafor-Smith, Casey"]
    );
    search(&mut desk, "Nobody").assert_contains("No patients match.");

    // 30 more: 25 on the first page, the rest on the second.
    for n in 1..=30 {
        let first = format!("P{n:02}");
        let created = create_patient(
            &mut desk,
            &patient_form(&first, "Zpager", "2000-01-01", "", ""),
        );
        redirected_patient(&created);
    }
    let first_page = search(&mut desk, "Zpager");
    let names = listed_patients(&first_page);
    assert_eq!(names.len(), 25);
    assert_eq!(names[0], "Zpager, P01");
    assert!(first_page.body.contains("Next page"));
    assert_eq!(link_with_rel(&first_page, "prev"), None);
    let next = link_with_rel(&first_page, "next").expect("a next-page link");
    let second_page = desk.get(&next);
    let rest = listed_patients(&second_page);
    assert_eq!(
        rest,
        (26..=30)
            .map(|n| format!("Zpager, P{n:02}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(link_with_rel(&second_page, "next"), None);
    assert!(link_with_rel(&second_page, "prev").is_some());
    let everyone = desk.get("/practice/patients");
    assert_eq!(listed_patients(&everyone).len(), 25);
    let next = link_with_rel(&everyone, "next").expect("a next-page link");
    assert_eq!(listed_patients(&desk.get(&next)).len(), 37 - 25);

    // The demo patients show each portal status.
    for (first, last, status) in [
        ("Taylor", "Nguyen", "Not invited"),
        ("Sam", "Patel", "Invited"),
        ("Alex", "Rivera", "Enrolled"),
        ("Morgan", "Blake", "Access revoked"),
    ] {
        let page = desk.get(&patient_page(&patient_id(&server, first, last)));
        assert_eq!(portal_status(&page), status, "{first} {last}");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Invitations

#[test]
fn invitations_show_the_pin_to_staff_and_email_only_a_link() {
    let server = Server::start(Options::demo());
    let taylor = patient_id(&server, "Taylor", "Nguyen");
    let taylor_page = patient_page(&taylor);
    let invite_path = format!("{taylor_page}/invite");
    let mut lee = signed_in_staff(&server, "dr.lee@demo.test");
    let invitations = |server: &Server| {
        count(
            server,
            "SELECT count(*) FROM outbox WHERE kind LIKE '%invitation'",
            &[],
        )
    };

    let page = lee.get(&taylor_page);
    assert_eq!(portal_status(&page), "Not invited");
    page.assert_contains("Invite to the portal");
    let form = lee.get(&invite_path);
    form.assert_status(200);
    assert_eq!(input_value(&form, "email"), "taylor@demo.test");
    assert_eq!(input_value(&form, "phone"), "555-0100");

    // A bad address is refused and nothing is sent.
    let sent_before = invitations(&server);
    let bad = lee.submit(
        &invite_path,
        &invite_path,
        &[("email", "taylor at home"), ("phone", "555-0142")],
    );
    bad.assert_status(400);
    assert!(!error_beside(&bad, "email").is_empty());
    assert_eq!(input_value(&bad, "email"), "taylor at home");
    assert_eq!(input_value(&bad, "phone"), "555-0142");
    assert_eq!(invitations(&server), sent_before);

    // Invited at an edited address: the PIN is on the page, the link only in the email.
    let page = invite(&mut lee, &taylor, "t.nguyen@example.org", "555-0142");
    page.assert_contains("never emailed");
    assert_eq!(portal_status(&page), "Invited");
    let first_pin = pin_for(&page, "The patient");
    assert_eq!(invitations(&server), sent_before + 1);
    assert!(emails(&server, "invitation", "taylor@demo.test").is_empty());
    let mail = only_email(&server, "invitation", "t.nguyen@example.org");
    let first_link = link_path(&mail.body, "/portal/register/");
    assert!(mail.body.contains(&format!("{}{first_link}", server.base)));
    for secret in [first_pin.as_str(), "1958-11-30", "Taylor", "Nguyen"] {
        assert!(
            !mail.body.contains(secret) && !mail.subject.contains(secret),
            "the invitation email carries {secret:?}: {mail:?}"
        );
    }
    let mut visitor = server.client();
    visitor
        .get(&first_link)
        .assert_status(200)
        .assert_contains("name=\"pin\"");

    // Inviting again: a new PIN and a new link; the old link is dead.
    page.assert_contains("Invite again");
    let page = invite(&mut lee, &taylor, "t.nguyen@example.org", "555-0142");
    assert_eq!(portal_status(&page), "Invited");
    let second_pin = pin_for(&page, "The patient");
    assert_ne!(second_pin, first_pin);
    let mails = emails(&server, "invitation", "t.nguyen@example.org");
    assert_eq!(mails.len(), 2);
    let second_link = link_path(&mails[1].body, "/portal/register/");
    assert_ne!(second_link, first_link);
    assert_link_expired(&visitor.get(&first_link));
    visitor
        .get(&second_link)
        .assert_status(200)
        .assert_contains("name=\"pin\"");

    // Cancelled: the link is dead the same way and the patient is not invited.
    let pending = pending_invitations(&page);
    assert_eq!(pending.len(), 1, "{pending:?}");
    let cancelled = lee.submit(&taylor_page, &pending[0].cancel, &[]);
    assert_redirect(&cancelled, &format!("{taylor_page}?notice=cancelled"));
    let page = lee.get(&taylor_page);
    assert_eq!(portal_status(&page), "Not invited");
    assert!(pending_invitations(&page).is_empty());
    assert_link_expired(&visitor.get(&second_link));

    // An enrolled patient is not invited again.
    let alex = patient_id(&server, "Alex", "Rivera");
    let alex_invite = format!("{}/invite", patient_page(&alex));
    let refused = post_with(
        &mut lee,
        &alex_invite,
        &page.csrf(),
        &[("email", "alex@demo.test"), ("phone", "")],
    );
    refused.assert_status(400);
    assert_eq!(portal_status(&lee.get(&patient_page(&alex))), "Enrolled");

    // Invitations restricted to chosen users: the desk may not, until marked.
    let mut admin = signed_in_staff(&server, "admin@demo.test");
    change_settings(&mut admin, |s| s.chosen_only = true);
    let mut desk = signed_in_staff(&server, "desk@demo.test");
    let page = desk.get(&taylor_page);
    page.assert_status(200).assert_lacks("Invite to the portal");
    let token = page.csrf();
    let sent_before = invitations(&server);
    assert_refused(&desk.get(&invite_path), "desk GET invite");
    assert_refused(
        &post_with(
            &mut desk,
            &invite_path,
            &token,
            &[("email", "t.nguyen@example.org"), ("phone", "")],
        ),
        "desk POST invite",
    );
    let caregiver_path = format!("{taylor_page}/caregivers/new");
    assert_refused(&desk.get(&caregiver_path), "desk GET caregiver invite");
    assert_refused(
        &post_with(
            &mut desk,
            &caregiver_path,
            &token,
            &[
                ("name", "Pat Nguyen"),
                ("relationship", "Son"),
                ("email", "pat@example.org"),
            ],
        ),
        "desk POST caregiver invite",
    );
    assert_eq!(invitations(&server), sent_before);
    assert_eq!(portal_status(&lee.get(&taylor_page)), "Not invited");
    assert_refused(&lee.get(&invite_path), "dr.lee GET invite");
    admin.get(&invite_path).assert_status(200);

    let desk_page = format!(
        "/practice/admin/users/{}",
        staff_id(&server, "desk@demo.test")
    );
    assert_redirect(
        &admin.submit(&desk_page, &desk_page, &desk_fields(true)),
        &format!("{desk_page}?notice=saved"),
    );
    desk.get(&taylor_page)
        .assert_contains("Invite to the portal");
    let page = invite(&mut desk, &taylor, "taylor@demo.test", "555-0100");
    assert_eq!(portal_status(&page), "Invited");
    let desk_pin = pin_for(&page, "The patient");
    assert_eq!(invitations(&server), sent_before + 1);
    only_email(&server, "invitation", "taylor@demo.test");

    let seen = assert_no_pin_emailed(&server, &mut admin, &[first_pin, second_pin, desk_pin]);
    assert!(
        seen >= 5,
        "PINs of Taylor's three invitations, Sam's and Chris's"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Registration

#[test]
fn registration_proves_identity_once_and_links_new_or_existing_accounts() {
    let server = Server::start(Options::demo());
    let sam = patient_id(&server, "Sam", "Patel");
    let sam_page = patient_page(&sam);
    let mut admin = signed_in_staff(&server, "admin@demo.test");
    let (printed_link, printed_pin) = sam_from_stdout(&server);
    assert_eq!(pin_for(&admin.get(&sam_page), "The patient"), printed_pin);

    // Wrong date of birth or PIN: refused beside the field, with the email kept; the fifth
    // wrong try locks the link for good.
    let mut visitor = server.client();
    let token = anonymous_token(&mut visitor);
    let form = visitor.get(&printed_link);
    form.assert_status(200);
    assert_eq!(input_value(&form, "email"), "sam@demo.test");
    let wrong_pin = if printed_pin == "000000" {
        "111111"
    } else {
        "000000"
    };
    for (attempt, answers) in [
        ("1991-07-03", printed_pin.as_str()),
        ("1991-07-02", wrong_pin),
        ("not a date", printed_pin.as_str()),
        ("1991-07-02", ""),
    ]
    .into_iter()
    .enumerate()
    {
        let refused = register_new(
            &mut visitor,
            &printed_link,
            &token,
            answers,
            "sam.typed@example.com",
            (NEW_PASSWORD, NEW_PASSWORD),
        );
        assert_eq!(
            refused.status,
            400,
            "attempt {}: {}",
            attempt + 1,
            refused.body
        );
        assert!(!error_beside(&refused, "date_of_birth").is_empty());
        assert_eq!(input_value(&refused, "email"), "sam.typed@example.com");
    }
    let fifth = register_new(
        &mut visitor,
        &printed_link,
        &token,
        ("1990-01-01", printed_pin.as_str()),
        "sam.typed@example.com",
        (NEW_PASSWORD, NEW_PASSWORD),
    );
    assert_link_expired(&fifth);
    let right = register_new(
        &mut visitor,
        &printed_link,
        &token,
        ("1991-07-02", printed_pin.as_str()),
        "sam.typed@example.com",
        (NEW_PASSWORD, NEW_PASSWORD),
    );
    assert_link_expired(&right);
    assert_link_expired(&visitor.get(&printed_link));
    assert!(!visitor.cookies.contains_key("carepost_portal"));
    assert_eq!(
        count(
            &server,
            "SELECT count(*) FROM portal_account WHERE email = 'sam.typed@example.com'",
            &[]
        ),
        0
    );

    // Invited again: the password policy and the confirmation are enforced (without using up
    // attempts), then the account is created and signed in, once.
    let page = invite(&mut admin, &sam, "sam@demo.test", "555-0102");
    let pin = pin_for(&page, "The patient");
    let mails = emails(&server, "invitation", "sam@demo.test");
    let link = link_path(&mails.last().unwrap().body, "/portal/register/");
    let mut sam_client = server.client();
    let token = anonymous_token(&mut sam_client);
    let identity = ("1991-07-02", pin.as_str());
    for (password, again, field) in [
        ("Short1a", "Short1a", "password"),
        ("alllowercase1", "alllowercase1", "password"),
        ("ALLUPPERCASE1", "ALLUPPERCASE1", "password"),
        ("NoDigitsHere", "NoDigitsHere", "password"),
        (NEW_PASSWORD, "Fresh-pass-43", "password_again"),
        ("short", "short", "password"),
    ] {
        let refused = register_new(
            &mut sam_client,
            &link,
            &token,
            identity,
            "sam@demo.test",
            (password, again),
        );
        assert_eq!(refused.status, 400, "{password}/{again}: {}", refused.body);
        assert!(
            !error_beside(&refused, field).is_empty(),
            "{password}/{again}"
        );
        assert_eq!(input_value(&refused, "email"), "sam@demo.test");
    }
    let done = register_new(
        &mut sam_client,
        &link,
        &token,
        identity,
        "sam@demo.test",
        (NEW_PASSWORD, NEW_PASSWORD),
    );
    assert_redirect(&done, "/portal");
    sam_client
        .get("/portal")
        .assert_status(200)
        .assert_contains("Welcome, Sam Patel")
        .assert_contains("You are viewing your own health record.");
    assert_eq!(portal_status(&admin.get(&sam_page)), "Enrolled");
    assert_link_expired(&sam_client.get(&link));
    let mut again = server.client();
    let again_token = anonymous_token(&mut again);
    assert_link_expired(&register_new(
        &mut again,
        &link,
        &again_token,
        identity,
        "other@example.com",
        (NEW_PASSWORD, NEW_PASSWORD),
    ));
    signed_in_portal(&server, "sam@demo.test", NEW_PASSWORD);

    // A caregiver invitation linked to an existing account: the caregiver proves the
    // patient's date of birth, not their own.
    let caregiver_path = format!("{sam_page}/caregivers/new");
    let sent = admin.submit(
        &caregiver_path,
        &caregiver_path,
        &[
            ("name", "Alex Rivera"),
            ("relationship", "Brother"),
            ("email", "alex@demo.test"),
        ],
    );
    assert_redirect(&sent, &format!("{sam_page}?notice=invited"));
    let caregiver_pin = pin_for(&admin.get(&sam_page), "Alex Rivera (Brother)");
    let mail = only_email(&server, "caregiver_invitation", "alex@demo.test");
    for secret in [caregiver_pin.as_str(), "1991-07-02", "Sam", "Patel"] {
        assert!(
            !mail.body.contains(secret),
            "caregiver email carries {secret:?}: {mail:?}"
        );
    }
    let link = link_path(&mail.body, "/portal/register/");
    let mut alex = server.client();
    let token = anonymous_token(&mut alex);
    alex.get(&link)
        .assert_status(200)
        .assert_contains("Their date of birth");
    let own_birthday = register_existing(
        &mut alex,
        &link,
        &token,
        ("1984-03-14", caregiver_pin.as_str()),
        "alex@demo.test",
        DEMO_PASSWORD,
    );
    own_birthday.assert_status(400);
    assert!(!error_beside(&own_birthday, "date_of_birth").is_empty());
    let wrong_password = register_existing(
        &mut alex,
        &link,
        &token,
        ("1991-07-02", caregiver_pin.as_str()),
        "alex@demo.test",
        "Not-the-pass-1",
    );
    wrong_password.assert_status(400);
    assert!(!error_beside(&wrong_password, "password").is_empty());
    let linked = register_existing(
        &mut alex,
        &link,
        &token,
        ("1991-07-02", caregiver_pin.as_str()),
        "alex@demo.test",
        DEMO_PASSWORD,
    );
    assert_redirect(&linked, "/portal");
    let home = alex.get("/portal");
    home.assert_contains("Viewing");
    assert_eq!(
        viewing_labels(&home),
        ["Alex Rivera", "Sam Patel (as caregiver)"]
    );
    assert!(
        main_of(&home).contains("<strong>Sam Patel</strong>"),
        "acting for Sam:\n{}",
        home.body
    );
    assert_eq!(
        viewing_labels(&signed_in_portal(&server, "alex@demo.test", DEMO_PASSWORD).get("/portal")),
        ["Alex Rivera", "Sam Patel (as caregiver)"]
    );
    let page = admin.get(&sam_page);
    assert_eq!(portal_status(&page), "Enrolled");
    page.assert_contains("Brother")
        .assert_contains("alex@demo.test");
    assert_eq!(
        portal_status(&admin.get(&patient_page(&patient_id(&server, "Alex", "Rivera")))),
        "Enrolled"
    );
    assert_link_expired(&alex.get(&link));

    assert_no_pin_emailed(&server, &mut admin, &[printed_pin, pin, caregiver_pin]);

    // A link lives 30 days: Chris Rivera's, seeded with the demo.
    let alex_patient = patient_id(&server, "Alex", "Rivera");
    let chris_pin = pin_for(
        &admin.get(&patient_page(&alex_patient)),
        "Chris Rivera (Spouse)",
    );
    let chris_link = link_path(
        &only_email(&server, "caregiver_invitation", "chris@demo.test").body,
        "/portal/register/",
    );
    let mut chris = server.client();
    let token = anonymous_token(&mut chris);
    server.advance_clock(29 * DAY);
    chris
        .get(&chris_link)
        .assert_status(200)
        .assert_contains("name=\"pin\"");
    server.advance_clock(2 * DAY);
    assert_link_expired(&chris.get(&chris_link));
    assert_link_expired(&register_new(
        &mut chris,
        &chris_link,
        &token,
        ("1984-03-14", chris_pin.as_str()),
        "chris@demo.test",
        (NEW_PASSWORD, NEW_PASSWORD),
    ));
    assert_eq!(
        count(
            &server,
            "SELECT count(*) FROM portal_account WHERE email = 'chris@demo.test'",
            &[]
        ),
        0
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Caregivers

#[test]
fn caregivers_reach_only_the_records_they_hold() {
    let server = Server::start(Options::demo());
    let riley = patient_id(&server, "Riley", "Morgan");
    let quinn = patient_id(&server, "Quinn", "Morgan");
    let mut jordan = signed_in_portal(&server, "jordan@demo.test", DEMO_PASSWORD);

    let home = jordan.get("/portal");
    home.assert_status(200);
    let options = viewing_options(&home);
    let mut held: Vec<String> = options.iter().map(|(id, _, _)| id.clone()).collect();
    held.sort();
    let mut expected = vec![riley.clone(), quinn.clone()];
    expected.sort();
    assert_eq!(held, expected);
    assert_eq!(
        viewing_labels(&home),
        ["Quinn Morgan (as caregiver)", "Riley Morgan (as caregiver)"]
    );
    for other in ["Alex Rivera", "Sam Patel", "Taylor Nguyen", "Morgan Blake"] {
        home.assert_lacks(other);
    }

    // Switching to a held record works.
    let switched = post_with(
        &mut jordan,
        "/portal/acting",
        &home.csrf(),
        &[("patient", &riley)],
    );
    assert_redirect(&switched, "/portal");
    assert_eq!(
        acting_patient(&server, "jordan@demo.test"),
        vec![riley.clone()]
    );
    let home = jordan.get("/portal");
    assert!(viewing_options(&home)
        .iter()
        .any(|(id, _, selected)| *id == riley && *selected));

    // Any other record is not found, and the session keeps acting for Riley.
    let token = home.csrf();
    for other in [
        patient_id(&server, "Alex", "Rivera"),
        patient_id(&server, "Morgan", "Blake"),
        patient_id(&server, "Sam", "Patel"),
        "999999".into(),
        "0".into(),
        "-1".into(),
        "Riley".into(),
        String::new(),
    ] {
        let refused = post_with(
            &mut jordan,
            "/portal/acting",
            &token,
            &[("patient", &other)],
        );
        assert_eq!(
            refused.status, 404,
            "switching to {other:?}: {}",
            refused.body
        );
        assert_eq!(
            acting_patient(&server, "jordan@demo.test"),
            vec![riley.clone()]
        );
    }

    // The practice revokes Jordan's access to Riley: the next request no longer reaches Riley.
    let mut staff = signed_in_staff(&server, "np.kim@demo.test");
    let riley_page = patient_page(&riley);
    let page = staff.get(&riley_page);
    page.assert_contains("Jordan Morgan")
        .assert_contains("Parent");
    let revoke = form_action(&page, &format!("{riley_page}/caregivers/"));
    assert!(revoke.ends_with("/revoke"), "{revoke}");
    assert_redirect(
        &staff.submit(&riley_page, &revoke, &[]),
        &format!("{riley_page}?notice=revoked"),
    );
    staff.get(&riley_page).assert_contains("Revoked");
    let home = jordan.get("/portal");
    home.assert_status(200).assert_lacks("Riley");
    home.assert_contains("Quinn Morgan (as caregiver)");
    assert!(
        main_of(&home).contains("<strong>Quinn Morgan</strong>"),
        "{}",
        home.body
    );
    let refused = post_with(
        &mut jordan,
        "/portal/acting",
        &home.csrf(),
        &[("patient", &riley)],
    );
    assert_eq!(refused.status, 404);
    signed_in_portal(&server, "jordan@demo.test", DEMO_PASSWORD)
        .get("/portal")
        .assert_lacks("Riley")
        .assert_contains("Quinn Morgan");
    let audited = audit(&server, "caregiver.revoke");
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0].patient_id, riley);
    assert_eq!(audited[0].actor_id, staff_id(&server, "np.kim@demo.test"));
}

// ---------------------------------------------------------------------------------------------
// 7. Revocation

#[test]
fn revoked_patients_see_the_sentence_and_a_new_invitation_restores_access() {
    let server = Server::start(Options::demo());
    let alex = patient_id(&server, "Alex", "Rivera");
    let alex_page = patient_page(&alex);
    let mut alex_client = signed_in_portal(&server, "alex@demo.test", DEMO_PASSWORD);
    alex_client
        .get("/portal")
        .assert_contains("You are viewing your own health record.");

    let mut lee = signed_in_staff(&server, "dr.lee@demo.test");
    let page = lee.get(&alex_page);
    assert_eq!(portal_status(&page), "Enrolled");
    let revoked = lee.submit(&alex_page, &format!("{alex_page}/revoke"), &[]);
    assert_redirect(&revoked, &format!("{alex_page}?notice=revoked"));
    assert_eq!(portal_status(&lee.get(&alex_page)), "Access revoked");

    let assert_sentence_only = |page: &Response| {
        page.assert_status(200);
        let main = main_of(page);
        assert!(
            main.contains(&format!(">{REVOKED}</p>")),
            "the sentence, word for word:\n{main}"
        );
        for record in [
            "You are viewing your own health record.",
            "caregiver",
            "Welcome",
            "1984-03-14",
        ] {
            assert!(!main.contains(record), "{record:?} shown:\n{main}");
        }
        assert!(viewing_options(page).is_empty());
    };
    assert_sentence_only(&alex_client.get("/portal"));
    assert_sentence_only(
        &signed_in_portal(&server, "alex@demo.test", DEMO_PASSWORD).get("/portal"),
    );
    assert_sentence_only(
        &signed_in_portal(&server, "morgan@demo.test", DEMO_PASSWORD).get("/portal"),
    );
    let listed = search(&mut lee, "Rivera");
    listed.assert_contains("Access revoked");

    // Invited again: a new PIN, and registering with the existing account restores access.
    let page = invite(&mut lee, &alex, "alex@demo.test", "555-0100");
    assert_eq!(portal_status(&page), "Invited");
    let pin = pin_for(&page, "The patient");
    let chris_pin = pin_for(&page, "Chris Rivera (Spouse)");
    let link = link_path(
        &only_email(&server, "invitation", "alex@demo.test").body,
        "/portal/register/",
    );
    let token = anonymous_token(&mut alex_client);
    let restored = register_existing(
        &mut alex_client,
        &link,
        &token,
        ("1984-03-14", pin.as_str()),
        "alex@demo.test",
        DEMO_PASSWORD,
    );
    assert_redirect(&restored, "/portal");
    alex_client
        .get("/portal")
        .assert_contains("You are viewing your own health record.")
        .assert_lacks(REVOKED);
    assert_eq!(portal_status(&lee.get(&alex_page)), "Enrolled");

    assert_no_pin_emailed(&server, &mut lee, &[pin, chris_pin]);
}

// ---------------------------------------------------------------------------------------------
// 8. Forgotten and changed portal passwords

#[test]
fn portal_passwords_reset_by_a_one_time_link_and_change_from_the_account_page() {
    let server = Server::start(Options::demo());

    // Changing the password: the current one is checked; other sessions end, this one stays.
    let mut jordan = signed_in_portal(&server, "jordan@demo.test", DEMO_PASSWORD);
    let mut jordan_elsewhere = signed_in_portal(&server, "jordan@demo.test", DEMO_PASSWORD);
    let wrong = jordan.submit(
        "/portal/account",
        "/portal/account/password",
        &[
            ("current_password", "Not-the-pass-1"),
            ("password", NEW_PASSWORD),
            ("password_again", NEW_PASSWORD),
        ],
    );
    wrong.assert_status(400);
    assert!(!error_beside(&wrong, "current_password").is_empty());
    let weak = jordan.submit(
        "/portal/account",
        "/portal/account/password",
        &[
            ("current_password", DEMO_PASSWORD),
            ("password", "weakpass"),
            ("password_again", "weakpass"),
        ],
    );
    weak.assert_status(400);
    assert!(!error_beside(&weak, "password").is_empty());
    jordan_elsewhere.get("/portal").assert_status(200);
    let changed = jordan.submit(
        "/portal/account",
        "/portal/account/password",
        &[
            ("current_password", DEMO_PASSWORD),
            ("password", NEW_PASSWORD),
            ("password_again", NEW_PASSWORD),
        ],
    );
    assert_redirect(&changed, "/portal/account?notice=password_changed");
    jordan
        .get(changed.location())
        .assert_status(200)
        .assert_contains("Your password is changed.");
    jordan
        .get("/portal")
        .assert_status(200)
        .assert_contains("Quinn Morgan");
    assert_redirect(&jordan_elsewhere.get("/portal"), "/portal/login");
    server
        .client()
        .login_portal("jordan@demo.test", DEMO_PASSWORD)
        .assert_status(400);
    signed_in_portal(&server, "jordan@demo.test", NEW_PASSWORD);

    // Forgot password: the same page whether or not the address has an account; one email, and
    // not a second within a minute.
    let mut alex_elsewhere = signed_in_portal(&server, "alex@demo.test", DEMO_PASSWORD);
    let mut visitor = server.client();
    let known = visitor.submit(
        "/portal/forgot",
        "/portal/forgot",
        &[("email", "alex@demo.test")],
    );
    known.assert_status(200).assert_contains(RESET_SENT);
    let unknown = visitor.submit(
        "/portal/forgot",
        "/portal/forgot",
        &[("email", "nobody@nowhere.test")],
    );
    unknown.assert_status(200);
    assert_eq!(
        known.body, unknown.body,
        "the same page for an unknown address"
    );
    assert!(emails(&server, "password_reset", "nobody@nowhere.test").is_empty());
    let mail = only_email(&server, "password_reset", "alex@demo.test");
    let link = link_path(&mail.body, "/portal/reset/");
    assert!(mail.body.contains(&format!("{}{link}", server.base)));
    let again = visitor.submit(
        "/portal/forgot",
        "/portal/forgot",
        &[("email", "alex@demo.test")],
    );
    assert_eq!(again.body, known.body);
    assert_eq!(emails(&server, "password_reset", "alex@demo.test").len(), 1);

    // The link enforces the policy, sets the password, ends other sessions, and works once.
    let mut alex = server.client();
    alex.get(&link).assert_status(200);
    let weak = alex.submit(
        &link,
        &link,
        &[("password", "weakpass1"), ("password_again", "weakpass1")],
    );
    weak.assert_status(400);
    assert!(!error_beside(&weak, "password").is_empty());
    let mismatch = alex.submit(
        &link,
        &link,
        &[
            ("password", NEW_PASSWORD),
            ("password_again", "Fresh-pass-43"),
        ],
    );
    mismatch.assert_status(400);
    assert!(!error_beside(&mismatch, "password_again").is_empty());
    alex_elsewhere.get("/portal").assert_status(200);
    let reset = alex.submit(
        &link,
        &link,
        &[("password", NEW_PASSWORD), ("password_again", NEW_PASSWORD)],
    );
    assert_redirect(&reset, "/portal/login?reset=1");
    assert_redirect(&alex_elsewhere.get("/portal"), "/portal/login");
    alex.get(&link).assert_contains(DEAD_RESET);
    let token = anonymous_token(&mut alex);
    post_with(
        &mut alex,
        &link,
        &token,
        &[
            ("password", "Other-pass-77"),
            ("password_again", "Other-pass-77"),
        ],
    )
    .assert_contains(DEAD_RESET);
    server
        .client()
        .login_portal("alex@demo.test", DEMO_PASSWORD)
        .assert_status(400);
    signed_in_portal(&server, "alex@demo.test", NEW_PASSWORD);

    // A link works for one hour.
    server.advance_clock(61);
    visitor.submit(
        "/portal/forgot",
        "/portal/forgot",
        &[("email", "alex@demo.test")],
    );
    let mails = emails(&server, "password_reset", "alex@demo.test");
    assert_eq!(mails.len(), 2);
    let link = link_path(&mails[1].body, "/portal/reset/");
    server.advance_clock(3500);
    alex.get(&link).assert_status(200).assert_lacks(DEAD_RESET);
    server.advance_clock(101);
    alex.get(&link).assert_contains(DEAD_RESET);
    let token = anonymous_token(&mut alex);
    post_with(
        &mut alex,
        &link,
        &token,
        &[
            ("password", "Other-pass-77"),
            ("password_again", "Other-pass-77"),
        ],
    )
    .assert_contains(DEAD_RESET);
    signed_in_portal(&server, "alex@demo.test", NEW_PASSWORD);
}

// ---------------------------------------------------------------------------------------------
// 9. Auto-invite

#[test]
fn auto_invite_invites_adults_with_an_email_when_their_record_is_saved() {
    let server = Server::start(Options::demo());
    let mut desk = signed_in_staff(&server, "desk@demo.test");
    let invited_count = |server: &Server| {
        count(
            server,
            "SELECT count(*) FROM outbox WHERE kind = 'invitation'",
            &[],
        )
    };
    let status_of = |desk: &mut Client, created: &Response| {
        portal_status(&desk.get(&patient_page(&redirected_patient(created))))
    };

    // Off (the default): nobody is invited.
    let before = invited_count(&server);
    let off = create_patient(
        &mut desk,
        &patient_form("Ola", "Off", &born(30, 0), "ola@example.com", ""),
    );
    assert_eq!(status_of(&mut desk, &off), "Not invited");
    assert_eq!(invited_count(&server), before);

    let mut admin = signed_in_staff(&server, "admin@demo.test");
    change_settings(&mut admin, |s| s.auto_invite = true);

    let thirty = create_patient(
        &mut desk,
        &patient_form("Tia", "Thirty", &born(30, 0), "tia@example.com", "555-0130"),
    );
    let tia = redirected_patient(&thirty);
    assert_eq!(
        thirty.location(),
        format!("/practice/patients/{tia}?notice=invited")
    );
    let page = desk.get(thirty.location());
    assert_eq!(portal_status(&page), "Invited");
    let mut pins = vec![pin_for(&page, "The patient")];
    let mail = only_email(&server, "invitation", "tia@example.com");
    link_path(&mail.body, "/portal/register/");
    let automatic = audit(&server, "portal.invite");
    assert!(
        automatic
            .iter()
            .any(|a| a.patient_id == tia && a.actor_kind == "system"),
        "{automatic:?}"
    );

    for (first, dob, email, status) in [
        ("Ten", born(10, 0), "ten@example.com", "Not invited"),
        ("Ninety", born(90, 0), "ninety@example.com", "Not invited"),
        ("Noemail", born(30, 0), "", "Not invited"),
        ("Eighteen", born(18, 0), "eighteen@example.com", "Invited"),
        (
            "Seventeen",
            born(18, 1),
            "seventeen@example.com",
            "Not invited",
        ),
        (
            "Eightyfive",
            born(86, 1),
            "eightyfive@example.com",
            "Invited",
        ),
        (
            "Eightysix",
            born(86, 0),
            "eightysix@example.com",
            "Not invited",
        ),
    ] {
        let created = create_patient(&mut desk, &patient_form(first, "Auto", &dob, email, ""));
        let page = desk.get(&patient_page(&redirected_patient(&created)));
        assert_eq!(portal_status(&page), status, "{first}, born {dob}");
        let sent = if email.is_empty() {
            0
        } else {
            emails(&server, "invitation", email).len()
        };
        assert_eq!(
            sent,
            usize::from(status == "Invited"),
            "{first}, born {dob}"
        );
        if status == "Invited" {
            pins.push(pin_for(&page, "The patient"));
        }
    }

    // Saving an existing record invites a never-invited adult, never one with portal history.
    let taylor = patient_id(&server, "Taylor", "Nguyen");
    let edit = format!("{}/edit", patient_page(&taylor));
    let saved = desk.submit(
        &edit,
        &edit,
        &patient_form(
            "Taylor",
            "Nguyen",
            "1958-11-30",
            "taylor@demo.test",
            "555-0100",
        ),
    );
    assert_redirect(&saved, &format!("{}?notice=invited", patient_page(&taylor)));
    only_email(&server, "invitation", "taylor@demo.test");
    for (first, last, dob, email, status) in [
        (
            "Morgan",
            "Blake",
            "1972-05-09",
            "morgan@demo.test",
            "Access revoked",
        ),
        ("Alex", "Rivera", "1984-03-14", "alex@demo.test", "Enrolled"),
        ("Sam", "Patel", "1991-07-02", "sam@demo.test", "Invited"),
    ] {
        let id = patient_id(&server, first, last);
        let edit = format!("{}/edit", patient_page(&id));
        let before = emails(&server, "invitation", email).len();
        let saved = desk.submit(
            &edit,
            &edit,
            &patient_form(first, last, dob, email, "555-0100"),
        );
        assert_redirect(&saved, &format!("{}?notice=saved", patient_page(&id)));
        assert_eq!(portal_status(&desk.get(&patient_page(&id))), status);
        assert_eq!(
            emails(&server, "invitation", email).len(),
            before,
            "{first} {last}"
        );
    }

    let seen = assert_no_pin_emailed(&server, &mut admin, &pins);
    assert!(seen >= 4);
}

// ---------------------------------------------------------------------------------------------
// 10. A caregiver invitation redeemed by the patient's own account

/// A family sharing one address: the spouse is invited as a caregiver at the patient's own
/// address. Registration refuses a new account there and points to "I already have an
/// account"; following that advice must not turn the patient's own access into proxy access.
#[test]
fn a_caregiver_link_never_demotes_the_patients_own_access() {
    let server = Server::start(Options::demo());
    let alex = patient_id(&server, "Alex", "Rivera");
    let alex_page = patient_page(&alex);
    let mut admin = signed_in_staff(&server, "admin@demo.test");
    let caregiver_path = format!("{alex_page}/caregivers/new");
    let sent = admin.submit(
        &caregiver_path,
        &caregiver_path,
        &[
            ("name", "Jamie Rivera"),
            ("relationship", "Spouse"),
            ("email", "alex@demo.test"),
        ],
    );
    assert_redirect(&sent, &format!("{alex_page}?notice=invited"));
    let pin = pin_for(&admin.get(&alex_page), "Jamie Rivera (Spouse)");
    let mail = only_email(&server, "caregiver_invitation", "alex@demo.test");
    let link = link_path(&mail.body, "/portal/register/");

    let mut visitor = server.client();
    let token = anonymous_token(&mut visitor);
    let identity = ("1984-03-14", pin.as_str());
    let taken = register_new(
        &mut visitor,
        &link,
        &token,
        identity,
        "alex@demo.test",
        (NEW_PASSWORD, NEW_PASSWORD),
    );
    taken.assert_status(400);
    assert!(
        error_beside(&taken, "email").contains("already have an account"),
        "{}",
        taken.body
    );
    // Refused or accepted, the patient keeps their own access.
    register_existing(
        &mut visitor,
        &link,
        &token,
        identity,
        "alex@demo.test",
        DEMO_PASSWORD,
    );

    assert_eq!(portal_status(&admin.get(&alex_page)), "Enrolled");
    let home = signed_in_portal(&server, "alex@demo.test", DEMO_PASSWORD).get("/portal");
    home.assert_contains("You are viewing your own health record.")
        .assert_lacks("Alex Rivera (as caregiver)");
}

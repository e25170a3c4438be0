//! The foundation, end to end against the real binary: first-run setup, `admin create`, the demo
//! practice, sign-in and sign-out, the sign-in throttle, session expiry, CSRF on every POST route,
//! security headers and cookies, malformed input, configuration and data-folder errors.

use crate::harness::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const NOT_RIGHT: &str = "The email address or password is not right.";
const TOO_MANY: &str = "Too many failed sign-ins";
const WRONG_CSRF: &str = "abababababababababababababababababababababababababababababababab";

const DEMO_STAFF: &[&str] = &[
    "admin@demo.test",
    "dr.lee@demo.test",
    "np.kim@demo.test",
    "rn.cho@demo.test",
    "desk@demo.test",
];
const DEMO_PORTAL: &[&str] = &["alex@demo.test", "jordan@demo.test"];

// ---------------------------------------------------------------------------------------------
// Helpers

fn minutes(n: i64) -> i64 {
    n * 60
}

/// The text of the error shown beside a form field (`<p class="field-error" id="x-error">`).
fn error_beside(response: &Response, field: &str) -> String {
    let marker = format!("id=\"{field}-error\">");
    let start = response
        .body
        .find(&marker)
        .unwrap_or_else(|| panic!("no error beside {field}:\n{}", response.body))
        + marker.len();
    response.body[start..].split('<').next().unwrap().to_owned()
}

fn has_error_beside(response: &Response, field: &str) -> bool {
    response.body.contains(&format!("id=\"{field}-error\""))
}

/// The value attribute of the input named `name`, "" when it has none.
fn input_value(response: &Response, name: &str) -> String {
    let marker = format!("<input id=\"{name}\"");
    let start = response
        .body
        .find(&marker)
        .unwrap_or_else(|| panic!("no input {name}:\n{}", response.body));
    let tag = response.body[start..].split('>').next().unwrap();
    match tag.find("value=\"") {
        Some(i) => tag[i + 7..].split('"').next().unwrap().to_owned(),
        None => String::new(),
    }
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

/// The Set-Cookie header that sets (or clears) the named cookie.
fn set_cookie<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response
        .headers_named("Set-Cookie")
        .into_iter()
        .find(|v| v.starts_with(&format!("{name}=")))
}

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

/// The value of the first `<option>` whose text starts with `label`.
fn option_value(response: &Response, label: &str) -> Option<String> {
    response
        .body
        .split("<option value=\"")
        .skip(1)
        .find_map(|rest| {
            let (value, after) = rest.split_once('"')?;
            let text = after.split_once('>')?.1;
            text.starts_with(label).then(|| value.to_owned())
        })
}

/// Whether the page's main content says the user acts as a caregiver for `name`.
#[track_caller]
fn acts_as_caregiver_for(page: &Response, name: &str) -> bool {
    let main = page.body.split("<main").nth(1).expect("page has a <main>");
    main.contains("caregiver") && main.contains(&format!("<strong>{name}</strong>"))
}

/// A session that the client has already dropped, sent again by hand.
fn replay(server: &Server, cookie: &str, value: &str, path: &str) -> Response {
    let mut client = server.client();
    client.cookies.insert(cookie.into(), value.into());
    client.get(path)
}

/// A client holding the anonymous CSRF cookie, as a browser has after showing a sign-in form.
fn client_with_form_cookie(server: &Server, form_page: &str) -> (Client, String) {
    let mut client = server.client();
    let token = client.get(form_page).assert_status(200).csrf();
    (client, token)
}

/// Runs the binary, which must exit by itself within 30 s; returns (code, stdout, stderr).
fn run_until_exit(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("CAREPOST_TEST_CLOCK_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    if wait_timeout(&mut child, Duration::from_secs(30)).is_none() {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "carepost {args:?} kept running.\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A path as a command-line argument (test paths are UTF-8).
fn arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// `serve` must refuse to start: a non-zero exit and exactly one error line on stderr naming the
/// problem (informational log lines, such as the migration runner's, may come before it).
/// Returns that line.
#[track_caller]
fn refuses_to_serve(data: &Path, listen: &str, expected: &str) -> String {
    refuses_to_start(
        &["serve", "--data", arg(data), "--listen", listen],
        expected,
    )
}

#[track_caller]
fn refuses_to_start(args: &[&str], expected: &str) -> String {
    let (code, stdout, stderr) = run_until_exit(args, &[]);
    assert_ne!(
        code, 0,
        "{args:?} should fail; stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("Z INFO "))
        .collect();
    assert_eq!(lines.len(), 1, "one error line on stderr, got:\n{stderr}");
    assert!(lines[0].starts_with("carepost: "), "{stderr}");
    assert!(
        lines[0].contains(expected),
        "stderr should mention {expected:?}:\n{stderr}"
    );
    assert!(!stdout.contains("listening on"), "{stdout}");
    lines[0].to_owned()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn check_config(file: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    run_until_exit(&["check-config", "--config", arg(file)], env)
}

fn write_config(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

// ---------------------------------------------------------------------------------------------
// 1. First-run setup link

fn setup_fields<'a>(
    practice: &'a str,
    name: &'a str,
    email: &'a str,
    password: &'a str,
    again: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("practice_name", practice),
        ("name", name),
        ("email", email),
        ("degree", "MD"),
        ("access_level", "4"),
        ("password", password),
        ("password_again", again),
    ]
}

/// Submits the setup form with the given fields and checks it is shown again with the typed
/// values kept, the passwords not echoed, and `message` beside `field`.
#[track_caller]
fn setup_refused(
    client: &mut Client,
    link: &str,
    fields: &[(&str, &str)],
    field: &str,
    message: &str,
) {
    let response = client.submit(link, link, fields);
    response.assert_status(400);
    assert!(
        error_beside(&response, field).contains(message),
        "beside {field}: {:?}",
        error_beside(&response, field)
    );
    for kept in ["practice_name", "name", "email"] {
        let typed = fields.iter().find(|(k, _)| *k == kept).unwrap().1;
        assert_eq!(input_value(&response, kept), typed, "{kept} is kept");
    }
    for other in [
        "practice_name",
        "name",
        "email",
        "password",
        "password_again",
    ] {
        assert_eq!(
            has_error_beside(&response, other),
            other == field,
            "error beside {other}?"
        );
    }
    assert_eq!(input_value(&response, "password"), "");
    assert_eq!(input_value(&response, "password_again"), "");
    let password = fields.iter().find(|(k, _)| *k == "password").unwrap().1;
    response.assert_lacks(password);
    assert!(
        !client.cookies.contains_key("carepost_staff"),
        "not signed in"
    );
}

#[test]
fn first_run_setup_link_works_once() {
    let dir = TempDir::new("setup");
    let data = dir.path().join("data");
    let mut server = Server::start_in(&data, Options::default());

    // The link is printed with the server's own base and a 64-hex token.
    let out = server.stdout();
    let printed = out
        .lines()
        .find_map(|l| l.strip_prefix("First-run setup: open "))
        .unwrap_or_else(|| panic!("no setup link printed:\n{out}"));
    let url = printed.split_whitespace().next().unwrap();
    let token = url
        .strip_prefix(&format!("{}/setup/", server.base))
        .unwrap_or_else(|| panic!("link {url} is not under {}", server.base));
    assert_eq!(token.len(), 64);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    let link = server.setup_path().unwrap();
    assert!(
        !server.log().contains(token),
        "the link is a credential: never logged"
    );

    let mut client = server.client();
    client
        .get("/")
        .assert_status(200)
        .assert_contains("Carepost is not set up yet");
    client
        .get(&format!("/setup/{}", "0".repeat(64)))
        .assert_status(404);
    client.get("/setup/nonsense").assert_status(404);
    client
        .get(&link)
        .assert_status(200)
        .assert_contains("Set up Carepost")
        .assert_contains("name=\"practice_name\"");

    setup_refused(
        &mut client,
        &link,
        &setup_fields(
            "Hill Clinic",
            "Pat Doe",
            "pat@hill.test",
            "zqxjweak",
            "zqxjweak",
        ),
        "password",
        "upper-case",
    );
    setup_refused(
        &mut client,
        &link,
        &setup_fields(
            "Hill Clinic",
            "Pat Doe",
            "pat@hill.test",
            "Qz7-first",
            "Qz7-second",
        ),
        "password_again",
        "The two passwords are not the same.",
    );
    setup_refused(
        &mut client,
        &link,
        &setup_fields(
            "Hill Clinic",
            "Pat Doe",
            "not-an-email",
            "Qz7-strong",
            "Qz7-strong",
        ),
        "email",
        "Enter an email address",
    );
    setup_refused(
        &mut client,
        &link,
        &setup_fields("", "Pat Doe", "pat@hill.test", "Qz7-strong", "Qz7-strong"),
        "practice_name",
        "Enter the practice",
    );
    client
        .get("/")
        .assert_contains("Carepost is not set up yet");

    // A valid submit creates the practice and signs the administrator in.
    let done = client.submit(
        &link,
        &link,
        &setup_fields(
            "Hill Clinic",
            "Pat Doe",
            "pat@hill.test",
            "Qz7-strong",
            "Qz7-strong",
        ),
    );
    assert_redirect(&done, "/practice");
    client
        .get("/practice")
        .assert_status(200)
        .assert_contains("Welcome, Pat Doe")
        .assert_contains("Administrator");
    client
        .get("/")
        .assert_contains("Hill Clinic")
        .assert_lacks("not set up");

    // The link is spent, for GET and for POST.
    let mut other = server.client();
    other.get(&link).assert_status(404);
    let (mut poster, token) = client_with_form_cookie(&server, "/practice/login");
    let mut fields = vec![("csrf", token.as_str())];
    fields.extend(setup_fields(
        "Evil",
        "Eve",
        "eve@evil.test",
        "Qz7-strong",
        "Qz7-strong",
    ));
    poster.post_form(&link, &fields).assert_status(404);
    poster.get("/").assert_contains("Hill Clinic");

    // Restarted on the same folder: set up, so no link; the administrator still signs in.
    server.terminate();
    let server = Server::start_in(&data, Options::default());
    assert_eq!(server.setup_path(), None, "{}", server.stdout());
    assert!(!server.stdout().contains("First-run setup"));
    let mut client = server.client();
    client.get(&link).assert_status(404);
    assert_redirect(
        &client.login_staff("pat@hill.test", "Qz7-strong"),
        "/practice",
    );
}

#[test]
fn setup_link_expires_after_30_minutes_and_a_restart_makes_a_new_one() {
    let dir = TempDir::new("setup-expiry");
    let data = dir.path().join("data");
    let mut server = Server::start_in(&data, Options::default());
    let link = server.setup_path().unwrap();
    let mut client = server.client();
    server.advance_clock(minutes(29));
    client.get(&link).assert_status(200);
    server.advance_clock(minutes(2));
    client.get(&link).assert_status(404);
    let token = client.cookies["carepost_csrf"].clone();
    let mut fields = vec![("csrf", token.as_str())];
    fields.extend(setup_fields(
        "Late",
        "Lou",
        "lou@late.test",
        "Qz7-strong",
        "Qz7-strong",
    ));
    client.post_form(&link, &fields).assert_status(404);
    client
        .get("/")
        .assert_contains("Carepost is not set up yet");

    // Not set up yet: the next start prints a new link, and only that one works.
    server.terminate();
    let server = Server::start_in(&data, Options::default());
    let new_link = server.setup_path().expect("a new setup link");
    assert_ne!(new_link, link);
    let mut client = server.client();
    client.get(&link).assert_status(404);
    client.get(&new_link).assert_status(200);
}

// ---------------------------------------------------------------------------------------------
// 2. carepost admin create

fn admin_create(
    data: &Path,
    email: &str,
    practice: Option<&str>,
    password: &str,
) -> (i32, String, String) {
    let data = data.to_str().unwrap();
    let mut args = vec![
        "admin", "create", "--data", data, "--email", email, "--name", "Bo Boss",
    ];
    if let Some(practice) = practice {
        args.extend(["--practice", practice]);
    }
    run(&args, &[], &format!("{password}\n"))
}

#[test]
fn admin_create_makes_an_administrator_who_can_sign_in() {
    let dir = TempDir::new("admin");
    let data = dir.path().join("data");

    let (code, stdout, stderr) = admin_create(
        &data,
        "boss@river.test",
        Some("Riverside Clinic"),
        "Qz7-strong",
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("created"), "{stdout}");

    let (code, stdout, stderr) = admin_create(
        &data,
        "boss@river.test",
        Some("Riverside Clinic"),
        "Qz7-strong",
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("already exists"), "{stdout}");

    let (code, stdout, stderr) = admin_create(&data, "weak@river.test", None, "weak");
    assert_ne!(code, 0, "{stdout}");
    assert!(
        stderr.contains("password") && stderr.contains("at least 8 characters"),
        "{stderr}"
    );

    let empty = dir.path().join("empty");
    let (code, stdout, stderr) = admin_create(&empty, "boss@river.test", None, "Qz7-strong");
    assert_ne!(code, 0, "{stdout}");
    assert!(stderr.contains("practice name"), "{stderr}");

    // The demo is never seeded over a real practice.
    refuses_to_start(
        &[
            "serve",
            "--demo",
            "--data",
            arg(&data),
            "--listen",
            "127.0.0.1:0",
        ],
        "already holds the practice \"Riverside Clinic\"",
    );

    let server = Server::start_in(&data, Options::default());
    assert_eq!(
        server.setup_path(),
        None,
        "a practice exists: no setup link"
    );
    let mut client = server.client();
    client.get("/").assert_contains("Riverside Clinic");
    let mut weak = server.client();
    weak.login_staff("weak@river.test", "weak")
        .assert_status(400)
        .assert_contains(NOT_RIGHT);
    assert_redirect(
        &client.login_staff("boss@river.test", "Qz7-strong"),
        "/practice",
    );
    client
        .get("/practice")
        .assert_status(200)
        .assert_contains("Welcome, Bo Boss")
        .assert_contains("Administrator");

    // While the server runs, the command refuses the folder instead of writing beside it.
    let (code, _, stderr) = admin_create(&data, "second@river.test", None, "Qz7-strong");
    assert_ne!(code, 0);
    assert!(stderr.contains("already using the data folder"), "{stderr}");
    server
        .client()
        .login_staff("second@river.test", "Qz7-strong")
        .assert_status(400);
}

// ---------------------------------------------------------------------------------------------
// 3. Demo

#[test]
fn demo_prints_its_logins_and_they_work() {
    let dir = TempDir::new("demo");
    let data = dir.path().join("data");
    let mut server = Server::start_in(&data, Options::demo());
    let out = server.stdout();
    assert!(out.contains("Demo Family Practice"), "{out}");
    for email in DEMO_STAFF.iter().chain(DEMO_PORTAL) {
        assert!(out.contains(email), "{email} missing from:\n{out}");
    }
    assert_eq!(server.setup_path(), None, "the demo practice is set up");

    let mut lee = signed_in_staff(&server, "dr.lee@demo.test");
    lee.get("/practice")
        .assert_status(200)
        .assert_contains("Dr. Morgan Lee")
        .assert_contains("Level 4");
    let mut alex = signed_in_portal(&server, "alex@demo.test");
    alex.get("/portal")
        .assert_status(200)
        .assert_contains("You are viewing your own health record.");
    let mut jordan = signed_in_portal(&server, "jordan@demo.test");
    let home = jordan.get("/portal");
    home.assert_status(200)
        .assert_contains("You are using the portal as a caregiver");
    if !acts_as_caregiver_for(&home, "Riley Morgan") {
        let riley = option_value(&home, "Riley Morgan").expect("Riley Morgan can be chosen");
        let switched = jordan.post_form(
            "/portal/acting",
            &[("csrf", &home.csrf()), ("patient", &riley)],
        );
        assert_redirect(&switched, "/portal");
    }
    assert!(acts_as_caregiver_for(
        &jordan.get("/portal"),
        "Riley Morgan"
    ));

    // Started again with --demo on the same folder: no failure, nothing seeded twice.
    server.terminate();
    let server = Server::start_in(&data, Options::demo());
    assert!(
        server.stdout().contains("seeded earlier"),
        "{}",
        server.stdout()
    );
    let mut client = server.client();
    client
        .get("/")
        .assert_status(200)
        .assert_contains("Demo Family Practice");
    signed_in_staff(&server, "dr.lee@demo.test")
        .get("/practice")
        .assert_contains("Level 4");
    signed_in_portal(&server, "alex@demo.test");
}

#[test]
fn demo_without_a_password_prints_a_generated_one() {
    let server = Server::start(Options::demo().env("CAREPOST_DEMO_PASSWORD", ""));
    let out = server.stdout();
    let password = out
        .lines()
        .find_map(|l| {
            l.split_once("(generated): ")
                .map(|(_, p)| p.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no generated password printed:\n{out}"));
    assert_ne!(password, DEMO_PASSWORD);
    let mut client = server.client();
    client
        .login_staff("dr.lee@demo.test", DEMO_PASSWORD)
        .assert_status(400);
    assert_redirect(
        &client.login_staff("dr.lee@demo.test", &password),
        "/practice",
    );
    let mut portal = server.client();
    assert_redirect(&portal.login_portal("alex@demo.test", &password), "/portal");
}

// ---------------------------------------------------------------------------------------------
// 4. Sign-in and sign-out

#[test]
fn sign_in_refusals_look_the_same_and_sign_out_ends_the_session() {
    let server = Server::start(Options::demo());

    // Wrong password and unknown address: the same answer.
    let mut client = server.client();
    let wrong = client.login_staff("dr.lee@demo.test", "Not-the-pass-1");
    wrong.assert_status(400);
    assert_eq!(error_beside(&wrong, "password"), NOT_RIGHT);
    assert_eq!(input_value(&wrong, "email"), "dr.lee@demo.test");
    assert_eq!(input_value(&wrong, "password"), "");
    let unknown = client.login_staff("nobody@demo.test", "Not-the-pass-1");
    unknown.assert_status(400);
    assert_eq!(error_beside(&unknown, "password"), NOT_RIGHT);
    assert_eq!(
        wrong.body.replace("dr.lee@demo.test", "X"),
        unknown.body.replace("nobody@demo.test", "X"),
        "the pages differ only in the typed address"
    );
    assert!(!client.cookies.contains_key("carepost_staff"));
    let portal_wrong = client.login_portal("alex@demo.test", "Not-the-pass-1");
    portal_wrong.assert_status(400);
    assert_eq!(error_beside(&portal_wrong, "password"), NOT_RIGHT);

    // Staff sign-out ends the session on the server.
    let mut staff = signed_in_staff(&server, "dr.lee@demo.test");
    let old = staff.cookies["carepost_staff"].clone();
    let page = staff.get("/practice");
    page.assert_status(200);
    let out = staff.post_form("/practice/logout", &[("csrf", &page.csrf())]);
    assert_redirect(&out, "/practice/login?signed_out=1");
    assert!(set_cookie(&out, "carepost_staff")
        .unwrap()
        .contains("Max-Age=0"));
    staff
        .get(out.location())
        .assert_contains("You have signed out.");
    assert_redirect(&staff.get("/practice"), "/practice/login");
    assert_redirect(
        &replay(&server, "carepost_staff", &old, "/practice"),
        "/practice/login",
    );

    // Portal sign-out likewise.
    let mut alex = signed_in_portal(&server, "alex@demo.test");
    let old = alex.cookies["carepost_portal"].clone();
    let page = alex.get("/portal");
    page.assert_status(200);
    let out = alex.post_form("/portal/logout", &[("csrf", &page.csrf())]);
    assert_redirect(&out, "/portal/login?signed_out=1");
    assert_redirect(&alex.get("/portal"), "/portal/login");
    assert_redirect(
        &replay(&server, "carepost_portal", &old, "/portal"),
        "/portal/login",
    );

    // One audience's session does not open the other's pages, even under the other's name.
    let mut staff = signed_in_staff(&server, "dr.lee@demo.test");
    assert_redirect(&staff.get("/portal"), "/portal/login");
    let staff_token = staff.cookies["carepost_staff"].clone();
    assert_redirect(
        &replay(&server, "carepost_portal", &staff_token, "/portal"),
        "/portal/login",
    );
    let mut jordan = signed_in_portal(&server, "jordan@demo.test");
    assert_redirect(&jordan.get("/practice"), "/practice/login");
    let portal_token = jordan.cookies["carepost_portal"].clone();
    assert_redirect(
        &replay(&server, "carepost_staff", &portal_token, "/practice"),
        "/practice/login",
    );
    // And both still work where they belong.
    staff.get("/practice").assert_status(200);
    jordan.get("/portal").assert_status(200);
}

// ---------------------------------------------------------------------------------------------
// 5. Sign-in throttle

/// Five wrong passwords, waiting out the short slow-downs after the 3rd and 4th; returns the
/// error shown beside the password each time.
fn five_failures(server: &Server, email: &str) -> Vec<String> {
    let mut client = server.client();
    (1..=5)
        .map(|attempt| {
            if attempt >= 4 {
                server.advance_clock(11);
            }
            // Failures count per address however it is typed.
            let typed = if attempt % 2 == 0 {
                format!(" {} ", email.to_uppercase())
            } else {
                email.to_owned()
            };
            let response = client.login_staff(&typed, "Wrong-pass-1");
            response.assert_status(400);
            error_beside(&response, "password")
        })
        .collect()
}

#[test]
fn repeated_failures_lock_the_address_for_15_minutes() {
    let server = Server::start(Options::demo());

    let known = five_failures(&server, "dr.lee@demo.test");
    assert!(known.iter().all(|m| m == NOT_RIGHT), "{known:?}");
    let mut client = server.client();
    let locked = client.login_staff("dr.lee@demo.test", DEMO_PASSWORD);
    locked.assert_status(400);
    let locked_message = error_beside(&locked, "password");
    assert!(locked_message.contains(TOO_MANY), "{locked_message}");
    assert!(locked_message.contains("15 minutes"), "{locked_message}");
    assert!(!client.cookies.contains_key("carepost_staff"));
    assert!(set_cookie(&locked, "carepost_staff").is_none());
    // Not merely the short slow-down.
    server.advance_clock(60);
    client
        .login_staff("dr.lee@demo.test", DEMO_PASSWORD)
        .assert_status(400)
        .assert_contains(TOO_MANY);
    assert_redirect(&client.get("/practice"), "/practice/login");

    // An address with no account is treated exactly alike.
    let unknown = five_failures(&server, "nobody@demo.test");
    assert_eq!(unknown, known);
    let unknown_locked = client.login_staff("nobody@demo.test", DEMO_PASSWORD);
    unknown_locked.assert_status(400);
    assert_eq!(error_beside(&unknown_locked, "password"), locked_message);

    // The lock is per address: another account still signs in.
    signed_in_staff(&server, "admin@demo.test");

    // After the lock, the right password works again.
    server.advance_clock(minutes(16));
    assert_redirect(
        &client.login_staff("dr.lee@demo.test", DEMO_PASSWORD),
        "/practice",
    );
    client.get("/practice").assert_status(200);
}

#[test]
fn third_failure_slows_down_the_next_attempt() {
    let server = Server::start(Options::demo());
    let mut client = server.client();
    for _ in 0..3 {
        client
            .login_staff("np.kim@demo.test", "Wrong-pass-1")
            .assert_status(400)
            .assert_contains(NOT_RIGHT);
    }
    let slowed = client.login_staff("np.kim@demo.test", DEMO_PASSWORD);
    slowed.assert_status(400);
    let message = error_beside(&slowed, "password");
    assert!(
        message.contains(TOO_MANY) && message.contains("seconds"),
        "{message}"
    );
    assert!(!client.cookies.contains_key("carepost_staff"));
    server.advance_clock(6);
    assert_redirect(
        &client.login_staff("np.kim@demo.test", DEMO_PASSWORD),
        "/practice",
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Session expiry

#[track_caller]
fn assert_expired(client: &mut Client, minutes: u32) {
    let response = client.get("/practice");
    assert_redirect(&response, "/practice/login?expired=idle");
    assert!(set_cookie(&response, "carepost_staff")
        .unwrap()
        .contains("Max-Age=0"));
    client
        .get("/practice/login?expired=idle")
        .assert_status(200)
        .assert_contains(&format!(
            "You were signed out after {minutes} minutes without activity."
        ));
    assert_redirect(&client.get("/practice"), "/practice/login");
}

#[test]
fn sessions_end_after_20_idle_minutes_and_12_hours() {
    let server = Server::start(Options::demo());
    let mut client = signed_in_staff(&server, "dr.lee@demo.test");
    let token = client.cookies["carepost_staff"].clone();
    server.advance_clock(minutes(19));
    client.get("/practice").assert_status(200);
    server.advance_clock(minutes(21));
    assert_expired(&mut client, 20);
    assert_redirect(
        &replay(&server, "carepost_staff", &token, "/practice"),
        "/practice/login",
    );

    // Active every 10 minutes, the session still ends 12 hours after sign-in.
    let mut client = signed_in_staff(&server, "dr.lee@demo.test");
    for step in 1..=71 {
        server.advance_clock(minutes(10));
        let response = client.get("/practice");
        assert_eq!(
            response.status,
            200,
            "still signed in after {} minutes",
            step * 10
        );
    }
    server.advance_clock(minutes(15));
    let response = client.get("/practice");
    assert_redirect(&response, "/practice/login?expired=lifetime");
    assert!(set_cookie(&response, "carepost_staff")
        .unwrap()
        .contains("Max-Age=0"));
    assert_redirect(&client.get("/practice"), "/practice/login");
}

/// A user kept active is signed out at the absolute limit (1 hour here, 12 by default); the
/// sign-in page must not tell them it was for inactivity.
#[test]
fn absolute_expiry_is_not_reported_as_inactivity() {
    let server = Server::start(Options::demo().env("CAREPOST_SESSION_MAX_HOURS", "1"));
    let mut client = signed_in_staff(&server, "dr.lee@demo.test");
    for _ in 0..5 {
        server.advance_clock(minutes(10));
        client.get("/practice").assert_status(200);
    }
    server.advance_clock(minutes(15));
    let response = client.get("/practice");
    assert_eq!(response.status, 303);
    assert!(
        response.location().starts_with("/practice/login"),
        "{}",
        response.location()
    );
    let login = client.get(response.location());
    login.assert_status(200);
    login.assert_lacks("without activity");
    login.assert_contains("1 hour after signing in");
}

#[test]
fn idle_limit_is_configurable() {
    let server = Server::start(Options::demo().env("CAREPOST_SESSION_IDLE_MINUTES", "5"));
    let mut client = signed_in_staff(&server, "dr.lee@demo.test");
    let mut portal = signed_in_portal(&server, "alex@demo.test");
    server.advance_clock(minutes(4));
    client.get("/practice").assert_status(200);
    portal.get("/portal").assert_status(200);
    server.advance_clock(minutes(6));
    assert_expired(&mut client, 5);
    // The portal's sessions follow the same rule.
    assert_redirect(&portal.get("/portal"), "/portal/login?expired=idle");
    portal
        .get("/portal/login?expired=idle")
        .assert_contains("You were signed out after 5 minutes without activity.");
}

// ---------------------------------------------------------------------------------------------
// 7. CSRF on every POST route

/// Posts `fields` to `action` without a token and with a wrong one; both must answer 403.
#[track_caller]
fn refused_without_valid_token(client: &mut Client, action: &str, fields: &[(&str, &str)]) {
    let response = client.post_form(action, fields);
    response
        .assert_status(403)
        .assert_contains("nothing was changed");
    assert!(set_cookie(&response, "carepost_staff").is_none());
    assert!(set_cookie(&response, "carepost_portal").is_none());
    let mut wrong = vec![("csrf", WRONG_CSRF)];
    wrong.extend_from_slice(fields);
    let response = client.post_form(action, &wrong);
    response.assert_status(403);
    assert!(set_cookie(&response, "carepost_staff").is_none());
    assert!(set_cookie(&response, "carepost_portal").is_none());
}

#[test]
fn every_post_route_requires_a_valid_csrf_token() {
    let server = Server::start(Options::demo());

    // Sign-in forms (double submit: the field must equal the cookie).
    for (login, home, email) in [
        ("/practice/login", "/practice", "dr.lee@demo.test"),
        ("/portal/login", "/portal", "alex@demo.test"),
    ] {
        let credentials = [("email", email), ("password", DEMO_PASSWORD)];
        let (mut client, _) = client_with_form_cookie(&server, login);
        refused_without_valid_token(&mut client, login, &credentials);
        assert_redirect(&client.get(home), login);
        // A token in the form but no cookie to match it.
        let (_, token) = client_with_form_cookie(&server, login);
        let mut cookieless = server.client();
        let mut fields = vec![("csrf", token.as_str())];
        fields.extend_from_slice(&credentials);
        cookieless.post_form(login, &fields).assert_status(403);
        assert_redirect(&cookieless.get(home), login);
    }

    // Sign-out forms: the session's token.
    let mut staff = signed_in_staff(&server, "dr.lee@demo.test");
    refused_without_valid_token(&mut staff, "/practice/logout", &[]);
    staff.get("/practice").assert_status(200);
    let mut alex = signed_in_portal(&server, "alex@demo.test");
    refused_without_valid_token(&mut alex, "/portal/logout", &[]);
    alex.get("/portal").assert_status(200);
    // Another session's token is not this session's.
    let other = signed_in_staff(&server, "admin@demo.test")
        .get("/practice")
        .csrf();
    staff
        .post_form("/practice/logout", &[("csrf", &other)])
        .assert_status(403);
    staff.get("/practice").assert_status(200);

    // Choosing whose record to view: the caregiver of two children switches to the other one.
    let mut jordan = signed_in_portal(&server, "jordan@demo.test");
    let home = jordan.get("/portal");
    let current = if acts_as_caregiver_for(&home, "Riley Morgan") {
        "Riley Morgan"
    } else {
        "Quinn Morgan"
    };
    let other = if current == "Riley Morgan" {
        "Quinn Morgan"
    } else {
        "Riley Morgan"
    };
    let other_id = option_value(&home, other).expect("the other child can be chosen");
    refused_without_valid_token(&mut jordan, "/portal/acting", &[("patient", &other_id)]);
    let home = jordan.get("/portal");
    home.assert_status(200);
    assert!(
        acts_as_caregiver_for(&home, current),
        "still acting for {current}"
    );
    // With the right token the same request is accepted: the 403s were the token's doing.
    assert_redirect(
        &jordan.post_form(
            "/portal/acting",
            &[("csrf", &home.csrf()), ("patient", &other_id)],
        ),
        "/portal",
    );
    assert!(
        acts_as_caregiver_for(&jordan.get("/portal"), other),
        "now acting for {other}"
    );
}

/// The pattern of every POST route declared in src/web/routes.rs.
fn declared_post_routes() -> Vec<String> {
    declared_routes("POST")
}

/// The patterns of the routes of one method declared in src/web/routes.rs.
fn declared_routes(method: &str) -> Vec<String> {
    let routes = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/web/routes.rs");
    std::fs::read_to_string(routes)
        .unwrap()
        .split(&format!("route(\"{method}\", \""))
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .collect()
}

/// A route pattern made into a path, each `{parameter}` replaced by 1.
fn sample_path(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "1"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A sweep over every POST route as declared, so that a route added later is covered too: with
/// a staff administrator's and a portal user's sessions and the sign-in form's cookie, a POST
/// without a token or with a wrong one is refused (403; 404 for an id that does not exist).
#[test]
fn no_post_route_acts_without_a_valid_csrf_token() {
    let routes = declared_post_routes();
    for expected in [
        "/setup/{token}",
        "/practice/login",
        "/practice/logout",
        "/portal/login",
        "/portal/logout",
        "/portal/acting",
    ] {
        assert!(
            routes.iter().any(|r| r == expected),
            "{expected} not found in {routes:?}"
        );
    }
    let server = Server::start(Options::demo());
    let mut client = signed_in_staff(&server, "admin@demo.test");
    let portal = signed_in_portal(&server, "alex@demo.test");
    client.cookies.extend(portal.cookies);
    client.get("/practice/login").assert_status(200);
    assert!(client.cookies.contains_key("carepost_csrf"));
    for pattern in &routes {
        let path = sample_path(pattern);
        for body in [String::new(), format!("csrf={WRONG_CSRF}")] {
            let response = client.request(
                "POST",
                &path,
                &[("Content-Type", "application/x-www-form-urlencoded")],
                body.as_bytes(),
            );
            let allowed: &[u16] = if pattern.contains('{') {
                &[403, 404]
            } else {
                &[403]
            };
            assert!(
                allowed.contains(&response.status),
                "POST {path} with body {body:?} answered {}:\n{}",
                response.status,
                response.body
            );
        }
    }
    client.get("/practice").assert_status(200);
    client.get("/portal").assert_status(200);
}

#[test]
fn setup_requires_a_valid_csrf_token() {
    let server = Server::start(Options::default());
    let link = server.setup_path().unwrap();
    let mut client = server.client();
    client.get(&link).assert_status(200);
    let fields = setup_fields(
        "Hill Clinic",
        "Pat Doe",
        "pat@hill.test",
        "Qz7-strong",
        "Qz7-strong",
    );
    refused_without_valid_token(&mut client, &link, &fields);
    client
        .get("/")
        .assert_contains("Carepost is not set up yet");
    client
        .get(&link)
        .assert_status(200)
        .assert_contains("Set up Carepost");
    assert_redirect(&client.submit(&link, &link, &fields), "/practice");
}

// ---------------------------------------------------------------------------------------------
// 8. Security headers and cookies

#[track_caller]
fn assert_security_headers(response: &Response, what: &str) {
    let csp = response
        .header("Content-Security-Policy")
        .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy"));
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert!(
        !csp.contains("http:") && !csp.contains("https:"),
        "{what}: {csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert_eq!(response.header("X-Frame-Options"), Some("DENY"), "{what}");
    assert_eq!(
        response.header("X-Content-Type-Options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(
        response.header("Referrer-Policy"),
        Some("no-referrer"),
        "{what}"
    );
    assert_eq!(
        response.header("Strict-Transport-Security"),
        None,
        "{what}: plain http"
    );
    let is_html = response
        .header("Content-Type")
        .is_some_and(|c| c.starts_with("text/html"));
    if is_html || response.status == 303 {
        let cache = response.header("Cache-Control").unwrap_or("");
        assert!(
            cache.contains("no-store"),
            "{what}: Cache-Control {cache:?}"
        );
    }
}

fn stylesheet_url(page: &Response) -> String {
    let marker = "<link rel=\"stylesheet\" href=\"";
    let start = page.body.find(marker).expect("page links a stylesheet") + marker.len();
    page.body[start..].split('"').next().unwrap().to_owned()
}

#[test]
fn every_response_carries_the_security_headers() {
    let fresh = Server::start(Options::default());
    let mut anonymous = fresh.client();
    let link = fresh.setup_path().unwrap();
    let setup = anonymous.get(&link);
    setup.assert_status(200);
    assert_security_headers(&setup, "setup page");
    assert_security_headers(&anonymous.get("/"), "start page before setup");

    let server = Server::start(Options::demo());
    let mut client = server.client();
    let mut staff = signed_in_staff(&server, "dr.lee@demo.test");
    let mut portal = signed_in_portal(&server, "alex@demo.test");
    let login = client.get("/practice/login");
    let css = stylesheet_url(&login);
    assert!(
        css.starts_with("/assets/carepost.") && css.ends_with(".css"),
        "{css}"
    );
    let pages = [
        ("/", client.get("/")),
        ("/healthz", client.get("/healthz")),
        ("/practice/login", login),
        ("/portal/login", client.get("/portal/login")),
        ("/practice signed in", staff.get("/practice")),
        ("/portal signed in", portal.get("/portal")),
        ("/practice signed out", client.get("/practice")),
        ("stylesheet", client.get(&css)),
        ("404", client.get("/no/such/page")),
        (
            "unknown asset",
            client.get("/assets/carepost.0000000000000000.css"),
        ),
        (
            "403",
            client.post_form("/practice/login", &[("email", "x@y.z")]),
        ),
        (
            "400",
            client.login_staff("dr.lee@demo.test", "Wrong-pass-1"),
        ),
        (
            "400 wrong method",
            client.request("DELETE", "/practice", &[], b""),
        ),
    ];
    for (what, response) in &pages {
        assert!(response.status < 500, "{what}: {}", response.status);
        assert_security_headers(response, what);
    }
    let status = |what: &str| pages.iter().find(|(w, _)| *w == what).unwrap().1.status;
    assert_eq!(
        [
            status("/"),
            status("/practice signed in"),
            status("/portal signed in"),
            status("stylesheet")
        ],
        [200, 200, 200, 200]
    );
    assert_eq!(
        [status("404"), status("403"), status("400")],
        [404, 403, 400]
    );

    let stylesheet = &pages.iter().find(|(w, _)| *w == "stylesheet").unwrap().1;
    assert!(stylesheet
        .header("Content-Type")
        .unwrap()
        .starts_with("text/css"));
    let cache = stylesheet.header("Cache-Control").unwrap();
    assert!(
        cache.contains("immutable") && !cache.contains("no-store"),
        "{cache}"
    );

    // Every GET route as declared, so pages added later are covered too: signed in to both
    // views as an administrator and a patient, each answers without a server error and with
    // the headers.
    let mut both = signed_in_staff(&server, "admin@demo.test");
    both.cookies.extend(portal.cookies.clone());
    let routes = declared_routes("GET");
    for expected in [
        "/",
        "/healthz",
        "/assets/{file}",
        "/setup/{token}",
        "/practice",
        "/portal",
    ] {
        assert!(
            routes.iter().any(|r| r == expected),
            "{expected} not in {routes:?}"
        );
    }
    for pattern in &routes {
        let path = sample_path(pattern);
        let response = both.get(&path);
        assert!(
            response.status < 500,
            "GET {path}: {}\n{}",
            response.status,
            response.body
        );
        assert_security_headers(&response, &path);
    }
}

#[track_caller]
fn assert_session_cookie(response: &Response, name: &str, path: &str, secure: bool) {
    let cookie = set_cookie(response, name).unwrap_or_else(|| panic!("no {name} cookie"));
    assert!(cookie.contains(&format!("Path={path};")), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert_eq!(cookie.contains("Secure"), secure, "{cookie}");
}

#[test]
fn cookies_are_http_only_and_secure_behind_https() {
    let server = Server::start(Options::demo());
    let mut client = server.client();
    let form = client.get("/practice/login");
    let csrf_cookie = set_cookie(&form, "carepost_csrf").unwrap();
    assert!(
        csrf_cookie.contains("HttpOnly") && csrf_cookie.contains("SameSite=Strict"),
        "{csrf_cookie}"
    );
    assert!(!csrf_cookie.contains("Secure"), "{csrf_cookie}");
    assert_session_cookie(
        &client.login_staff("dr.lee@demo.test", DEMO_PASSWORD),
        "carepost_staff",
        "/practice",
        false,
    );
    assert_session_cookie(
        &client.login_portal("alex@demo.test", DEMO_PASSWORD),
        "carepost_portal",
        "/portal",
        false,
    );

    let server =
        Server::start(Options::demo().env("CAREPOST_PUBLIC_URL", "https://portal.example.org"));
    let mut client = server.client();
    let form = client.get("/practice/login");
    assert!(set_cookie(&form, "carepost_csrf")
        .unwrap()
        .contains("Secure"));
    assert_eq!(
        form.header("Strict-Transport-Security"),
        Some("max-age=31536000")
    );
    let signed_in = client.login_staff("dr.lee@demo.test", DEMO_PASSWORD);
    assert_session_cookie(&signed_in, "carepost_staff", "/practice", true);
    assert!(signed_in.header("Strict-Transport-Security").is_some());
    assert_session_cookie(
        &client.login_portal("alex@demo.test", DEMO_PASSWORD),
        "carepost_portal",
        "/portal",
        true,
    );
    let page = client.get("/practice");
    page.assert_status(200);
    assert!(page.header("Strict-Transport-Security").is_some());
    let out = client.post_form("/practice/logout", &[("csrf", &page.csrf())]);
    assert!(set_cookie(&out, "carepost_staff")
        .unwrap()
        .contains("Secure"));
    assert!(client
        .get("/healthz")
        .header("Strict-Transport-Security")
        .is_some());
}

// ---------------------------------------------------------------------------------------------
// 9. Malformed input

#[test]
fn bad_input_gets_a_clear_answer_never_a_500() {
    let server = Server::start(Options::demo().env("CAREPOST_MAX_FORM_BYTES", "1000"));
    let (mut client, token) = client_with_form_cookie(&server, "/practice/login");
    let form_type = [("Content-Type", "application/x-www-form-urlencoded")];

    // Broken percent-escapes in the body.
    let body = format!("csrf={token}&email=%ZZ%E0%A4&password=%");
    let response = client.request("POST", "/practice/login", &form_type, body.as_bytes());
    response.assert_status(400);
    assert!(response
        .header("Content-Type")
        .unwrap()
        .starts_with("text/html"));
    // Broken percent-escapes in the address.
    client.get("/practice/%zz").assert_status(400);
    client.get("/%ff%fe").assert_status(400);

    // Not a form at all.
    let json = format!("{{\"csrf\":\"{token}\",\"email\":\"dr.lee@demo.test\"}}");
    client
        .request(
            "POST",
            "/practice/login",
            &[("Content-Type", "application/json")],
            json.as_bytes(),
        )
        .assert_status(400)
        .assert_contains("expects a form");
    client
        .request("POST", "/portal/login", &[], b"email=a")
        .assert_status(400);

    // Larger than max_form_bytes.
    let big = format!("csrf={token}&email={}", "a".repeat(5000));
    let response = client.request("POST", "/practice/login", &form_type, big.as_bytes());
    response.assert_status(413).assert_contains("1000 bytes");
    assert!(
        response.header("Content-Security-Policy").is_some()
            && response.header("X-Frame-Options") == Some("DENY")
    );
    // Just under it is read normally.
    let fits = format!("csrf={token}&email={}&password=x", "a".repeat(900));
    client
        .request("POST", "/practice/login", &form_type, fits.as_bytes())
        .assert_status(400)
        .assert_contains(NOT_RIGHT);

    // Unknown paths and wrong methods.
    let missing = client.get("/no/such/page");
    missing.assert_status(404).assert_contains("Page not found");
    assert!(missing
        .header("Content-Type")
        .unwrap()
        .starts_with("text/html"));
    client
        .request("DELETE", "/practice", &[], b"")
        .assert_status(400);
    client
        .request("PUT", "/practice/login", &[], b"")
        .assert_status(400);
    client
        .request("DELETE", "/no/such/page", &[], b"")
        .assert_status(404);
    client.get("/practice/").assert_status(404);

    let health = client.get("/healthz");
    health
        .assert_status(200)
        .assert_contains(&format!("\"schema_version\":{}", newest_migration()));
    assert!(health
        .header("Content-Type")
        .unwrap()
        .starts_with("application/json"));
    assert!(!server.log().contains(" 500 "), "{}", server.log());
}

/// The version of the newest migration shipped in migrations/ (`V<n>__name.sql`).
fn newest_migration() -> u32 {
    std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_prefix('V')?.split_once("__")?.0.parse().ok()
        })
        .max()
        .expect("at least one migration")
}

// ---------------------------------------------------------------------------------------------
// 10. Configuration

fn shipped_example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml")
}

#[test]
fn check_config_names_what_is_wrong() {
    let dir = TempDir::new("config");

    let valid = write_config(
        &dir,
        "valid.toml",
        "listen = \"127.0.0.1:9000\"\nworkers = 4\nsession_idle_minutes = 30\n\n[smtp]\nport = 25\nsecurity = \"none\"\n",
    );
    let (code, stdout, stderr) = check_config(&valid, &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");

    let unknown = write_config(
        &dir,
        "unknown.toml",
        "listen = \"127.0.0.1:9000\"\ncolour = \"blue\"\n",
    );
    let (code, _, stderr) = check_config(&unknown, &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("colour"), "{stderr}");

    let unknown_in_section = write_config(&dir, "section.toml", "[smtp]\nhots = \"mail\"\n");
    let (code, _, stderr) = check_config(&unknown_in_section, &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("smtp.hots"), "{stderr}");

    let malformed = write_config(
        &dir,
        "malformed.toml",
        "listen = \"127.0.0.1:9000\nworkers = = 3\n",
    );
    let (code, _, stderr) = check_config(&malformed, &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("malformed.toml"), "{stderr}");

    let wrong_type = write_config(&dir, "type.toml", "workers = \"many\"\n");
    let (code, _, stderr) = check_config(&wrong_type, &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("workers"), "{stderr}");

    let missing = dir.path().join("missing.toml");
    let (code, _, stderr) = check_config(&missing, &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("missing.toml"), "{stderr}");

    // The environment beats the file, both ways.
    let good_listen = write_config(&dir, "listen.toml", "listen = \"127.0.0.1:1\"\n");
    let (code, _, stderr) = check_config(&good_listen, &[("CAREPOST_LISTEN", "bad")]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("listen") && stderr.contains("bad"),
        "{stderr}"
    );
    let bad_listen = write_config(&dir, "bad-listen.toml", "listen = \"bad\"\n");
    let (code, _, stderr) = check_config(&bad_listen, &[]);
    assert_ne!(code, 0, "{stderr}");
    let (code, _, stderr) = check_config(&bad_listen, &[("CAREPOST_LISTEN", "127.0.0.1:1")]);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = check_config(&valid, &[("CAREPOST_WORKERS", "many")]);
    assert_ne!(code, 0);
    assert!(stderr.contains("CAREPOST_WORKERS"), "{stderr}");
}

#[test]
fn shipped_example_config_is_valid_and_current() {
    let shipped =
        std::fs::read_to_string(shipped_example()).expect("config.example.toml is shipped");
    let (code, stdout, stderr) = check_config(&shipped_example(), &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, generated, stderr) = run_until_exit(&["example-config"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        generated == shipped,
        "config.example.toml differs from `carepost example-config`:\n{generated}"
    );

    // Every option uncommented, the example is still a valid configuration.
    let dir = TempDir::new("example");
    let uncommented: String = shipped
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if rest.contains(" = ") && !rest.contains('`') => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let path = write_config(&dir, "uncommented.toml", &uncommented);
    let (code, stdout, stderr) = check_config(&path, &[]);
    assert_eq!(code, 0, "{uncommented}\n{stdout}{stderr}");
}

// ---------------------------------------------------------------------------------------------
// 11. Data folder errors

#[test]
fn data_folder_that_is_a_file_or_garbage_is_refused_untouched() {
    let dir = TempDir::new("datafile");

    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, b"hello").unwrap();
    refuses_to_serve(&file, "127.0.0.1:0", "is a file, not a folder");
    assert_eq!(std::fs::read(&file).unwrap(), b"hello");

    let data = dir.path().join("garbage");
    std::fs::create_dir(&data).unwrap();
    let garbage: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(data.join("carepost.db"), &garbage).unwrap();
    refuses_to_serve(
        &data,
        "127.0.0.1:0",
        "is damaged or is not a Carepost database",
    );
    assert!(
        std::fs::read(data.join("carepost.db")).unwrap() == garbage,
        "the file is unchanged"
    );
    let left: Vec<String> = files_in(&data)
        .into_iter()
        .filter(|f| f != "carepost.lock")
        .collect();
    assert_eq!(left, ["carepost.db"]);
}

#[test]
fn database_from_a_newer_carepost_is_refused() {
    let dir = TempDir::new("newer");
    let data = dir.path().join("data");
    Server::start_in(&data, Options::default()).terminate();
    let db = data.join("carepost.db");
    let status = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1])\n\
             c.execute(\"INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
             VALUES (999, 'future', '2099-01-01T00:00:00Z', '0')\")\n\
             c.commit()\n\
             c.close()\n",
        )
        .arg(&db)
        .status()
        .expect("python3 runs");
    assert!(status.success());
    let before = std::fs::read(&db).unwrap();
    let line = refuses_to_serve(&data, "127.0.0.1:0", "newer Carepost");
    assert!(line.contains("999"), "{line}");
    assert!(
        std::fs::read(&db).unwrap() == before,
        "the database is unchanged"
    );
}

#[test]
fn busy_data_folder_and_busy_port_are_refused() {
    let mut server = Server::start(Options::default());
    let link = server.setup_path().unwrap();
    refuses_to_serve(&server.data, "127.0.0.1:0", "already using the data folder");
    // The running server is unaffected, its setup link included.
    server.client().get(&link).assert_status(200);
    server.terminate();

    // On the same (now free, already migrated) folder, a port held by another program.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let line = refuses_to_serve(&server.data, &addr, "already in use");
    assert!(line.contains(&addr), "{line}");
}

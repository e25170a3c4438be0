//! Hostile input: random and known-bad values in every route's path, form fields, headers and
//! cookies never produce a 5xx or stop the server, and user text shown back is escaped.
//! A small seeded generator (the seed is printed) stands in for a property-testing crate.

use crate::harness::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

/// Known-bad fragments: overlong, NUL bytes, invalid UTF-8, markup, SQL, traversal, header
/// injection, numbers out of range.
const NASTY: &[&str] = &[
    "",
    "%00",
    "%FF%FE%FD",
    "%C0%AF",
    "<script>alert(1)</script>",
    "\"><img src=x onerror=alert(1)>",
    "' OR '1'='1' --",
    "1; DROP TABLE message; --",
    "../../../../etc/passwd",
    "..%2F..%2Fcarepost.db",
    "%0D%0AX-Injected:%201",
    "99999999999999999999999999",
    "-1",
    "0",
    "1e308",
    "=HYPERLINK(\"http://x\")",
    "javascript:alert(1)",
    "%F0%9F%98%80%F0%9F%98%80",
    "1984-02-30",
    "a@b",
];

const FIELDS: &[&str] = &[
    "email",
    "password",
    "password_again",
    "current_password",
    "name",
    "degree",
    "access_level",
    "is_admin",
    "may_invite",
    "practice_name",
    "phone",
    "first_name",
    "last_name",
    "date_of_birth",
    "pin",
    "mode",
    "subject",
    "body",
    "link",
    "recipient",
    "patient",
    "key",
    "chart",
    "to",
    "note",
    "move",
    "category",
    "relationship",
    "messaging_enabled",
    "invite_policy",
    "q",
    "page",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// A value: a known-bad fragment, a long run, random bytes percent-encoded, or a mix.
    fn value(&mut self) -> String {
        match self.below(5) {
            0 | 1 => NASTY[self.below(NASTY.len())].to_owned(),
            2 => "A".repeat(1 + self.below(30_000)),
            3 => (0..1 + self.below(40))
                .map(|_| format!("%{:02X}", self.below(256)))
                .collect(),
            _ => format!(
                "{}{}",
                NASTY[self.below(NASTY.len())],
                NASTY[self.below(NASTY.len())]
            ),
        }
    }
}

fn routes() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/web/routes.rs"))
            .unwrap();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("route(\""))
        .filter_map(|rest| {
            let (method, rest) = rest.split_once('"')?;
            let pattern = rest.split('"').nth(1)?;
            Some((method.to_owned(), pattern.to_owned()))
        })
        .collect()
}

/// Sends raw bytes, reads the status (0 when the server closed without answering, which
/// tiny_http does for some malformed heads).
fn status_of(addr: std::net::SocketAddr, bytes: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn random_and_known_bad_input_never_gets_a_5xx() {
    let server = Server::start(Options::demo());
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("hostile input seed: {seed}");
    let mut rng = Rng(seed);
    let mut staff = server.client();
    staff
        .login_staff("dr.lee@demo.test", DEMO_PASSWORD)
        .assert_status(303);
    let mut admin = server.client();
    admin
        .login_staff("admin@demo.test", DEMO_PASSWORD)
        .assert_status(303);
    let mut portal = server.client();
    portal
        .login_portal("alex@demo.test", DEMO_PASSWORD)
        .assert_status(303);
    let mut anonymous = server.client();
    let tokens = [
        staff.get("/practice/patients/new").csrf(),
        admin.get("/practice/admin/settings").csrf(),
        portal.get("/portal/account").csrf(),
        anonymous.get("/portal/login").csrf(),
    ];
    let routes = routes();
    assert!(routes.len() > 60, "routes parsed: {}", routes.len());
    let mut answered = 0;
    for round in 0..2000 {
        let (method, pattern) = &routes[rng.below(routes.len())];
        let path: String = pattern
            .split('/')
            .map(|seg| {
                if seg.starts_with('{') {
                    if rng.below(2) == 0 {
                        (1 + rng.below(12)).to_string()
                    } else {
                        rng.value().replace('/', "%2F")
                    }
                } else {
                    seg.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let query = if rng.below(3) == 0 {
            format!("?{}={}", FIELDS[rng.below(FIELDS.len())], rng.value())
        } else {
            String::new()
        };
        let who = rng.below(4);
        let client = [&staff, &admin, &portal, &anonymous][who];
        let mut cookies: Vec<String> = client
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if rng.below(8) == 0 {
            cookies.push(format!("carepost_staff={}", rng.value()));
        }
        let body = if method == "POST" {
            let mut fields = vec![format!("csrf={}", tokens[who])];
            for _ in 0..rng.below(8) {
                fields.push(format!(
                    "{}={}",
                    FIELDS[rng.below(FIELDS.len())],
                    rng.value()
                ));
            }
            fields.join("&")
        } else {
            String::new()
        };
        let content_type = match rng.below(6) {
            0 => "multipart/form-data; boundary=x",
            1 => "text/plain",
            _ => "application/x-www-form-urlencoded",
        };
        let mut head = format!(
            "{method} {path}{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
            body.len()
        );
        if !cookies.is_empty() {
            head.push_str(&format!("Cookie: {}\r\n", cookies.join("; ")));
        }
        if rng.below(6) == 0 {
            head.push_str(&format!("Range: bytes={}\r\n", rng.value()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body.as_bytes());
        let status = status_of(server.addr, &bytes);
        assert!(
            status < 500,
            "round {round} (seed {seed}): {method} {path}{query} as caller {who} answered {status}"
        );
        if status > 0 {
            answered += 1;
        }
    }
    assert!(answered > 1800, "most requests were answered: {answered}");
    server.client().get("/healthz").assert_status(200);
    assert!(!server.log().contains(" 500 "), "no 500 in the log");
    assert!(!server.log().contains("panicked"));
}

/// Script payloads typed into every field that is displayed come back escaped.
#[test]
fn script_payloads_are_shown_escaped_everywhere() {
    let server = Server::start(Options::demo());
    let payload = "<script>alert('x')</script>";
    let escaped = "&lt;script&gt;alert('x')&lt;/script&gt;";
    let mut admin = server.client();
    admin
        .login_staff("admin@demo.test", DEMO_PASSWORD)
        .assert_status(303);
    // A patient whose every field is a payload (the email must be valid to be saved).
    let created = admin.submit(
        "/practice/patients/new",
        "/practice/patients/new",
        &[
            ("first_name", payload),
            ("last_name", payload),
            ("date_of_birth", "1980-01-01"),
            ("email", ""),
            ("phone", payload),
        ],
    );
    created.assert_status(303);
    let patient_page = created.location().split('?').next().unwrap().to_owned();
    for page in [
        patient_page.as_str(),
        "/practice/patients",
        "/practice/patients?q=%3Cscript",
    ] {
        let shown = admin.get(page);
        shown.assert_status(200).assert_lacks(payload);
        assert!(
            shown.body.contains(escaped),
            "{page} shows the payload escaped"
        );
    }
    // A message whose subject, body and a refused link are payloads, seen by both sides.
    let mut alex = server.client();
    alex.login_portal("alex@demo.test", DEMO_PASSWORD)
        .assert_status(303);
    let form = alex.get("/portal/messages/new");
    let key_marker = "name=\"key\" value=\"";
    let at = form.body.find(key_marker).unwrap() + key_marker.len();
    let key = form.body[at..at + 64].to_owned();
    let recipient = form
        .body
        .split("<option value=\"")
        .nth(2)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let refused = alex.post_form(
        "/portal/messages/new",
        &[
            ("csrf", &form.csrf()),
            ("key", &key),
            ("recipient", &recipient),
            ("subject", payload),
            ("body", payload),
            ("link", payload),
        ],
    );
    refused.assert_status(400).assert_lacks(payload);
    assert!(
        refused.body.contains(escaped),
        "the refused form keeps the text, escaped"
    );
    let sent = alex.post_form(
        "/portal/messages/new",
        &[
            ("csrf", &form.csrf()),
            ("key", &key),
            ("recipient", &recipient),
            ("subject", payload),
            ("body", payload),
            ("link", ""),
        ],
    );
    sent.assert_status(303);
    let thread = sent.location().split('#').next().unwrap().to_owned();
    alex.get(&thread).assert_status(200).assert_lacks(payload);
    alex.get("/portal/messages")
        .assert_status(200)
        .assert_lacks(payload);
    let mut lee = server.client();
    lee.login_staff("dr.lee@demo.test", DEMO_PASSWORD)
        .assert_status(303);
    let id = thread.rsplit('/').next().unwrap();
    for page in [
        format!("/practice/messages/{id}"),
        "/practice/messages".to_owned(),
    ] {
        let shown = lee.get(&page);
        shown.assert_status(200).assert_lacks(payload);
        assert!(
            shown.body.contains(escaped),
            "{page} shows the payload escaped"
        );
    }
}

/// The remaining displayed fields: practice name, staff name and degree, caregiver name and
/// relationship, a forward's note, and the search box.
#[test]
fn script_payloads_in_names_and_notes_are_shown_escaped() {
    let server = Server::start(Options::demo());
    let payload = "<script>alert('y')</script>";
    let escaped = "&lt;script&gt;alert('y')&lt;/script&gt;";
    let mut admin = server.client();
    admin
        .login_staff("admin@demo.test", DEMO_PASSWORD)
        .assert_status(303);
    admin
        .submit(
            "/practice/admin/settings",
            "/practice/admin/settings",
            &[
                ("name", payload),
                ("phone", payload),
                ("messaging_enabled", "on"),
                ("invite_policy", "everyone"),
            ],
        )
        .assert_status(303);
    admin
        .submit(
            "/practice/admin/users/new",
            "/practice/admin/users/new",
            &[
                ("name", payload),
                ("email", "new.user@demo.test"),
                ("degree", "<b>MD</b>"),
                ("access_level", "4"),
            ],
        )
        .assert_status(303);
    let mut lee = server.client();
    lee.login_staff("dr.lee@demo.test", DEMO_PASSWORD)
        .assert_status(303);
    lee.submit(
        "/practice/patients/1/caregivers/new",
        "/practice/patients/1/caregivers/new",
        &[
            ("name", payload),
            ("relationship", payload),
            ("email", "care@demo.test"),
        ],
    )
    .assert_status(303);
    let inbox = lee.get("/practice/messages");
    let thread = inbox
        .body
        .split("href=\"/practice/messages/")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap())
        .find(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        .expect("a thread in Dr. Lee's inbox")
        .to_owned();
    let to = lee.get(&format!("/practice/messages/{thread}"));
    let colleague = to
        .body
        .split("name=\"to\"")
        .nth(1)
        .unwrap()
        .split("<option value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    lee.submit(
        &format!("/practice/messages/{thread}"),
        &format!("/practice/messages/{thread}/forward"),
        &[("to", &colleague), ("note", payload)],
    )
    .assert_status(303);
    let mut alex = server.client();
    alex.login_portal("alex@demo.test", DEMO_PASSWORD)
        .assert_status(303);
    let search = "/practice/patients?q=%3Cscript%3Ealert('y')%3C%2Fscript%3E".to_owned();
    let pages = [
        (0, "/practice/admin/users".to_owned()),
        (0, "/practice/admin/settings".to_owned()),
        (0, search),
        (1, "/practice/patients/1".to_owned()),
        (1, format!("/practice/messages/{thread}")),
        (2, "/portal".to_owned()),
        (2, "/portal/messages/new".to_owned()),
    ];
    for (who, page) in pages {
        let client = match who {
            0 => &mut admin,
            1 => &mut lee,
            _ => &mut alex,
        };
        let shown = client.get(&page);
        shown
            .assert_status(200)
            .assert_lacks(payload)
            .assert_lacks("<b>MD</b>");
        assert!(
            shown.body.contains(escaped),
            "{page} shows the payload, escaped"
        );
    }
    server
        .client()
        .get("/")
        .assert_status(200)
        .assert_lacks(payload);
}

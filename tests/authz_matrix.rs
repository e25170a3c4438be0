//! The authorization matrix: every route of both views against every kind of caller, with ids
//! that belong to someone else. Each cell names the expected answer — success, a bad request
//! answered after the checks, 404, 403, 410, or a redirect to the sign-in page of the route's
//! view — and every request that is denied must leave the database as it was. The table's route
//! set must equal the one declared in src/web/routes.rs: a route added without a row fails.
//!
//! One demo server serves the whole matrix. A first, short start of the same data folder with a
//! mail server that refuses two addresses leaves two failed emails, so that "retry" has a real
//! target; the second start has no mail server, so nothing in the outbox moves on its own.

use crate::harness::{db_rows, Client, Options, Response, Server, TempDir, DEMO_PASSWORD};
use crate::smtp_sink::SmtpSink;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Callers and outcomes

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Who {
    Anonymous,
    /// Alex Rivera, enrolled.
    PatientA,
    /// Sam Patel, who registers from the demo's printed link: another enrolled patient.
    PatientB,
    /// Chris Rivera, registered from the seeded caregiver invitation for Alex.
    CaregiverOfA,
    /// Morgan Blake, whose access the practice revoked (the account still signs in).
    RevokedPatient,
    /// desk@: front office, level 1.
    Level1,
    /// rn.cho@: clinical staff, level 2.
    Level2,
    /// np.kim@: NP, level 3.
    Level3,
    /// dr.lee@: physician, level 4.
    Level4,
    /// admin@: administrator, level 1.
    Administrator,
    /// A level-4 user signed in, then deactivated by the administrator: the old cookie is kept.
    Deactivated,
}

use Who::*;

const CALLERS: [Who; 11] = [
    Anonymous,
    PatientA,
    PatientB,
    CaregiverOfA,
    RevokedPatient,
    Level1,
    Level2,
    Level3,
    Level4,
    Administrator,
    Deactivated,
];
const ACTIVE_STAFF: [Who; 5] = [Level1, Level2, Level3, Level4, Administrator];
const PORTAL_USERS: [Who; 4] = [PatientA, PatientB, CaregiverOfA, RevokedPatient];

/// The class of an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// 2xx, or a 303 that is not to a sign-in page (a sign-out's "signed_out=1" page counts).
    Ok,
    /// 400: the caller got past every check and the form itself was refused.
    BadRequest,
    NotFound,
    /// 403 "Not allowed" (never the CSRF refusal, which is reported on its own).
    Forbidden,
    /// 303 to the sign-in page of the route's own view.
    SignIn,
    /// 410: a dead registration link.
    Gone,
}

use Outcome::*;

impl Outcome {
    fn denied(self) -> bool {
        matches!(self, NotFound | Forbidden | SignIn | Gone)
    }
}

/// The expected outcome for each caller, indexed like `CALLERS`.
#[derive(Clone, Copy)]
struct Expect([Outcome; CALLERS.len()]);

impl Expect {
    fn of(&self, who: Who) -> Outcome {
        self.0[who as usize]
    }

    fn except(mut self, whom: &[Who], outcome: Outcome) -> Expect {
        for who in whom {
            self.0[*who as usize] = outcome;
        }
        self
    }
}

/// The same for everyone (public pages and links).
fn public(outcome: Outcome) -> Expect {
    Expect([outcome; CALLERS.len()])
}

/// Every active staff user; everyone else is sent to the practice sign-in.
fn staff(outcome: Outcome) -> Expect {
    public(SignIn).except(&ACTIVE_STAFF, outcome)
}

/// A thread the caller is not on: clinical staff (level 2 and up) only. The administrator is
/// level 1: the flag does not widen clinical access.
fn clinical(outcome: Outcome) -> Expect {
    staff(outcome).except(&[Level1, Administrator], NotFound)
}

/// The thread Dr. Lee forwarded to the front desk: level 2 and up, and the desk, who is on it.
fn on_desk_thread(outcome: Outcome) -> Expect {
    staff(outcome).except(&[Administrator], NotFound)
}

/// Administration: other staff are told the page does not exist.
fn admin(outcome: Outcome) -> Expect {
    staff(NotFound).except(&[Administrator], outcome)
}

/// Every signed-in portal account, including the revoked one; everyone else is sent to the
/// portal sign-in.
fn portal(outcome: Outcome) -> Expect {
    public(SignIn).except(&PORTAL_USERS, outcome)
}

/// The portal's Messages: enrolled patients and active caregivers; the revoked are told their
/// access has ended (403 with the sentence).
fn portal_messages(outcome: Outcome) -> Expect {
    portal(outcome).except(&[RevokedPatient], Forbidden)
}

// ---------------------------------------------------------------------------------------------
// The matrix

type Fields = &'static [(&'static str, &'static str)];

/// One cell row: a route, the concrete path to call, the form to post and the outcome expected
/// for each caller. Paths and form values name ids as `{PLACEHOLDERS}` (see `World::resolve`).
struct Row {
    method: &'static str,
    pattern: &'static str,
    path: &'static str,
    /// The form a denied caller posts: one that would act if the checks let it through.
    body: Fields,
    /// What an allowed caller posts instead, when `body` would really act: a form that stops
    /// right after the checks (400). None: allowed callers post `body` too.
    probe: Option<Fields>,
    expect: Expect,
    /// Texts that a successful page shows to exactly these callers (and hides from the rest).
    texts: Vec<(&'static str, &'static [Who])>,
}

impl Row {
    fn showing(mut self, text: &'static str, to: &'static [Who]) -> Row {
        self.texts.push((text, to));
        self
    }
}

fn get(pattern: &'static str, path: &'static str, expect: Expect) -> Row {
    Row {
        method: "GET",
        pattern,
        path,
        body: &[],
        probe: None,
        expect,
        texts: Vec::new(),
    }
}

fn post(pattern: &'static str, path: &'static str, body: Fields, expect: Expect) -> Row {
    Row {
        method: "POST",
        pattern,
        path,
        body,
        probe: None,
        expect,
        texts: Vec::new(),
    }
}

fn post_probe(
    pattern: &'static str,
    path: &'static str,
    body: Fields,
    probe: Fields,
    expect: Expect,
) -> Row {
    Row {
        method: "POST",
        pattern,
        path,
        body,
        probe: Some(probe),
        expect,
        texts: Vec::new(),
    }
}

const NOTHING: Fields = &[];
const NEW_PASSWORD: Fields = &[
    ("current_password", "{PASSWORD}"),
    ("password", "Other-pass-9"),
    ("password_again", "Other-pass-9"),
];
const RESET: Fields = &[
    ("password", "Other-pass-9"),
    ("password_again", "Other-pass-9"),
];
const SETUP: Fields = &[
    ("practice_name", "Another Practice"),
    ("name", "Intruder"),
    ("email", "intruder@demo.test"),
    ("degree", ""),
    ("access_level", "4"),
    ("password", "Other-pass-9"),
    ("password_again", "Other-pass-9"),
];
const EMPTY_SIGN_IN: Fields = &[("email", ""), ("password", "")];
const NO_EMAIL: Fields = &[("email", "")];
const INVITE: Fields = &[("email", "taylor@demo.test"), ("phone", "")];
const NO_INVITE: Fields = &[("email", ""), ("phone", "")];
const ONLY_PATIENT: Fields = &[("patient", "{B}")];
const FORWARD: Fields = &[("to", "{LEVEL2_ID}"), ("note", "Not yours to forward.")];
const NO_FORWARD: Fields = &[("to", ""), ("note", "")];
const CATEGORY: Fields = &[("category", "Other")];
const NO_NAME: Fields = &[("name", "")];
const ACT_FOR_A: Fields = &[("patient", "{A}")];
const ACT_FOR_B: Fields = &[("patient", "{B}")];
const ACT_FOR_REVOKED: Fields = &[("patient", "{REVOKED}")];
const NEW_PATIENT: Fields = &[
    ("first_name", "Intruder"),
    ("last_name", "Record"),
    ("date_of_birth", "1990-01-01"),
    ("email", ""),
    ("phone", ""),
];
const EDIT_PATIENT: Fields = &[
    ("first_name", "Changed"),
    ("last_name", "Byintruder"),
    ("date_of_birth", "1991-07-02"),
    ("email", "intruder@demo.test"),
    ("phone", ""),
];
const NEW_CAREGIVER: Fields = &[
    ("name", "Intruding Caregiver"),
    ("relationship", "Stranger"),
    ("email", "intruder@demo.test"),
];
const STAFF_MESSAGE: Fields = &[
    ("patient", "{B}"),
    ("subject", "Not yours to send"),
    ("body", "This message must never be stored."),
    ("link", ""),
];
const REPLY: Fields = &[("body", "This reply must never be stored."), ("link", "")];
const NEW_USER: Fields = &[
    ("name", "Intruding User"),
    ("email", "intruder@demo.test"),
    ("degree", "MD"),
    ("access_level", "4"),
    ("is_admin", "on"),
];
const EDIT_USER: Fields = &[
    ("name", "Renamed By Intruder"),
    ("email", "dr.lee@demo.test"),
    ("degree", "MD"),
    ("access_level", "4"),
    ("is_admin", "on"),
];
const SETTINGS: Fields = &[
    ("name", "Taken Over Practice"),
    ("phone", ""),
    ("invite_policy", "chosen"),
    ("auto_invite", "on"),
];
const PORTAL_MESSAGE: Fields = &[
    ("recipient", "{LEE}"),
    ("subject", "Not yours to send"),
    ("body", "This message must never be stored."),
    ("link", ""),
];
const REGISTER: Fields = &[
    ("date_of_birth", "1991-07-02"),
    ("pin", "123456"),
    ("mode", "new"),
    ("email", "intruder@demo.test"),
    ("password", "Other-pass-9"),
    ("password_again", "Other-pass-9"),
];

/// Every route, at least once; some with several paths (ids of someone else, or of the caller).
/// Paths and form values name ids as `{PLACEHOLDERS}` (see `World::resolve`).
#[rustfmt::skip]
fn matrix() -> Vec<Row> {
    vec![
        // Public pages and links
        get("/",                "/",                                      public(Ok)),
        get("/healthz",         "/healthz",                               public(Ok)),
        get("/assets/{file}",   "/assets/{CSS}",                          public(Ok)),
        get("/assets/{file}",   "/assets/carepost.0000000000000000.css",  public(NotFound)),
        get("/setup/{token}",   "/setup/{BOGUS}",                         public(NotFound)),
        post("/setup/{token}",  "/setup/{BOGUS}", SETUP,                  public(NotFound)),

        // Practice view: signing in
        get("/practice/login",           "/practice/login",                  public(Ok)),
        post("/practice/login",          "/practice/login", EMPTY_SIGN_IN,   public(BadRequest)),
        post("/practice/logout",         "/practice/logout", NOTHING,        staff(Ok)),
        get("/practice/forgot",          "/practice/forgot",                 public(Ok)),
        post("/practice/forgot",         "/practice/forgot", NO_EMAIL,       public(BadRequest)),
        get("/practice/reset/{token}",   "/practice/reset/{BOGUS}",          public(NotFound)),
        get("/practice/reset/{token}",   "/practice/reset/{STAFF_RESET}",    public(Ok)),
        // A portal link is not a practice link.
        get("/practice/reset/{token}",   "/practice/reset/{PORTAL_RESET}",   public(NotFound)),
        post("/practice/reset/{token}",  "/practice/reset/{BOGUS}", RESET,   public(NotFound)),
        get("/practice/account",         "/practice/account",                staff(Ok)),
        post_probe("/practice/account/password", "/practice/account/password", NEW_PASSWORD, NOTHING, staff(BadRequest)),
        get("/practice",                 "/practice",                        staff(Ok)),

        // Practice view: patients and portal access. One practice: every staff user reaches
        // every record; the record's clinical sections are for level 2 and up.
        get("/practice/patients",          "/practice/patients",            staff(Ok)),
        get("/practice/patients/new",      "/practice/patients/new",        staff(Ok)),
        post_probe("/practice/patients/new", "/practice/patients/new", NEW_PATIENT, NOTHING, staff(BadRequest)),
        get("/practice/patients/{id}",     "/practice/patients/{B}",        staff(Ok)),
        get("/practice/patients/{id}",     "/practice/patients/{A}",        staff(Ok))
            .showing("Blood pressure readings", &[Level2, Level3, Level4]),
        get("/practice/patients/{id}/edit", "/practice/patients/{B}/edit",  staff(Ok)),
        post_probe("/practice/patients/{id}/edit", "/practice/patients/{B}/edit", EDIT_PATIENT, NOTHING, staff(BadRequest)),
        get("/practice/patients/{id}/invite", "/practice/patients/{T}/invite", staff(Ok)),
        post_probe("/practice/patients/{id}/invite", "/practice/patients/{T}/invite", INVITE, NO_INVITE, staff(BadRequest)),
        post("/practice/patients/{id}/revoke", "/practice/patients/{REVOKE_PATIENT}/revoke", NOTHING, staff(Ok)),
        post("/practice/patients/{id}/invitations/{invitation}/cancel",
             "/practice/patients/{T}/invitations/{INVITATION}/cancel", NOTHING, staff(Ok)),
        // Another patient's invitation under this patient's address.
        post("/practice/patients/{id}/invitations/{invitation}/cancel",
             "/practice/patients/{B}/invitations/{LIVE_INVITATION}/cancel", NOTHING, staff(NotFound)),
        // Caregiver access opens a whole record: not for level 1 unless administrator.
        get("/practice/patients/{id}/caregivers/new", "/practice/patients/{A}/caregivers/new",
            staff(Ok).except(&[Level1], Forbidden)),
        post_probe("/practice/patients/{id}/caregivers/new", "/practice/patients/{A}/caregivers/new", NEW_CAREGIVER, NOTHING,
            staff(BadRequest).except(&[Level1], Forbidden)),
        post("/practice/patients/{id}/caregivers/{access}/revoke",
             "/practice/patients/{ACCESS_PATIENT}/caregivers/{ACCESS}/revoke", NOTHING, staff(Ok)),
        // Another patient's caregiver under this patient's address.
        post("/practice/patients/{id}/caregivers/{access}/revoke",
             "/practice/patients/{B}/caregivers/{CAREGIVER_ACCESS}/revoke", NOTHING, staff(NotFound)),

        // Practice view: messages. A thread is for level 2 and up, and for whoever is on it.
        get("/practice/messages",            "/practice/messages",                   staff(Ok)),
        get("/practice/messages/new",        "/practice/messages/new",               staff(Ok)),
        get("/practice/messages/new",        "/practice/messages/new?patient={B}",   staff(Ok)),
        post_probe("/practice/messages/new", "/practice/messages/new", STAFF_MESSAGE, ONLY_PATIENT, staff(BadRequest)),
        get("/practice/messages/{id}",       "/practice/messages/{THREAD_A}",        clinical(Ok)),
        get("/practice/messages/{id}",       "/practice/messages/{THREAD_B}",        clinical(Ok)),
        get("/practice/messages/{id}",       "/practice/messages/{THREAD_DESK}",     on_desk_thread(Ok))
            .showing("Please call Alex", &[Level1, Level2, Level3, Level4]),
        post_probe("/practice/messages/{id}/reply", "/practice/messages/{THREAD_A}/reply", REPLY, NOTHING, clinical(BadRequest)),
        post_probe("/practice/messages/{id}/reply", "/practice/messages/{THREAD_DESK}/reply", REPLY, NOTHING, on_desk_thread(BadRequest)),
        post("/practice/messages/{id}/unread",    "/practice/messages/{THREAD_A}/unread",    NOTHING, clinical(Ok)),
        post("/practice/messages/{id}/archive",   "/practice/messages/{THREAD_A}/archive",   NOTHING, clinical(Ok)),
        post("/practice/messages/{id}/unarchive", "/practice/messages/{THREAD_A}/unarchive", NOTHING, clinical(Ok)),
        post_probe("/practice/messages/{id}/forward", "/practice/messages/{THREAD_A}/forward", FORWARD, NO_FORWARD, clinical(BadRequest)),
        post("/practice/messages/{id}/chart",     "/practice/messages/{THREAD_A}/chart",     NOTHING, clinical(Ok)),
        get("/practice/messages/{id}/files/{file}", "/practice/messages/{THREAD_A}/files/{FILE_A}",       clinical(Ok)),
        get("/practice/messages/{id}/files/{file}", "/practice/messages/{THREAD_DESK}/files/{FILE_DESK}", on_desk_thread(Ok)),
        // A's file under B's thread.
        get("/practice/messages/{id}/files/{file}", "/practice/messages/{THREAD_B}/files/{FILE_A}",       staff(NotFound)),
        post("/practice/messages/{id}/files/{file}/chart", "/practice/messages/{THREAD_A}/files/{FILE_A}/chart", CATEGORY, clinical(Ok)),
        post("/practice/messages/{id}/files/{file}/chart", "/practice/messages/{THREAD_B}/files/{FILE_A}/chart", CATEGORY, staff(NotFound)),

        // Practice view: administration (other staff are told it does not exist)
        get("/practice/admin/users",         "/practice/admin/users",          admin(Ok)),
        get("/practice/admin/users/new",     "/practice/admin/users/new",      admin(Ok)),
        post_probe("/practice/admin/users/new", "/practice/admin/users/new", NEW_USER, NOTHING, admin(BadRequest)),
        get("/practice/admin/users/{id}",    "/practice/admin/users/{LEE}",    admin(Ok)),
        post_probe("/practice/admin/users/{id}", "/practice/admin/users/{LEE}", EDIT_USER, NOTHING, admin(BadRequest)),
        post("/practice/admin/users/{id}/deactivate",    "/practice/admin/users/{DEACTIVATE}/deactivate",       NOTHING, admin(Ok)),
        post("/practice/admin/users/{id}/reactivate",    "/practice/admin/users/{REACTIVATE}/reactivate",       NOTHING, admin(Ok)),
        post("/practice/admin/users/{id}/password-link", "/practice/admin/users/{PASSWORD_LINK}/password-link", NOTHING, admin(Ok)),
        get("/practice/admin/settings",      "/practice/admin/settings",       admin(Ok)),
        post_probe("/practice/admin/settings", "/practice/admin/settings", SETTINGS, NO_NAME, admin(BadRequest)),
        get("/practice/admin/audit",         "/practice/admin/audit",          admin(Ok)),
        get("/practice/admin/audit.csv",     "/practice/admin/audit.csv",      admin(Ok)),
        get("/practice/admin/outbox",        "/practice/admin/outbox",         admin(Ok)),
        post("/practice/admin/outbox/{id}/retry", "/practice/admin/outbox/{FAILED_EMAIL}/retry", NOTHING, admin(Ok)),

        // Patient portal: signing in, registering, the account
        get("/portal/login",              "/portal/login",                    public(Ok)),
        post("/portal/login",             "/portal/login", EMPTY_SIGN_IN,     public(BadRequest)),
        post("/portal/logout",            "/portal/logout", NOTHING,          portal(Ok)),
        get("/portal/forgot",             "/portal/forgot",                   public(Ok)),
        post("/portal/forgot",            "/portal/forgot", NO_EMAIL,         public(BadRequest)),
        get("/portal/reset/{token}",      "/portal/reset/{BOGUS}",            public(NotFound)),
        get("/portal/reset/{token}",      "/portal/reset/{PORTAL_RESET}",     public(Ok)),
        // A practice link is not a portal link.
        get("/portal/reset/{token}",      "/portal/reset/{STAFF_RESET}",      public(NotFound)),
        post("/portal/reset/{token}",     "/portal/reset/{BOGUS}", RESET,     public(NotFound)),
        get("/portal/register/{token}",   "/portal/register/{REGISTRATION}",  public(Ok)),
        get("/portal/register/{token}",   "/portal/register/{BOGUS}",         public(Gone)),
        post("/portal/register/{token}",  "/portal/register/{BOGUS}", REGISTER, public(Gone)),
        get("/portal/account",            "/portal/account",                  portal(Ok)),
        post_probe("/portal/account/password", "/portal/account/password", NEW_PASSWORD, NOTHING, portal(BadRequest)),
        get("/portal",                    "/portal",                          portal(Ok))
            .showing("Ask your doctor to provide access to your health records.", &[RevokedPatient]),
        post("/portal/acting", "/portal/acting", ACT_FOR_A,       portal(NotFound).except(&[PatientA, CaregiverOfA], Ok)),
        post("/portal/acting", "/portal/acting", ACT_FOR_B,       portal(NotFound).except(&[PatientB], Ok)),
        // The revoked patient's own record is not theirs to act for any more.
        post("/portal/acting", "/portal/acting", ACT_FOR_REVOKED, portal(NotFound)),

        // Patient portal: messages (enrolled patients and active caregivers, own record only)
        get("/portal/messages",           "/portal/messages",                 portal_messages(Ok))
            .showing("Blood pressure readings", &[PatientA, CaregiverOfA])
            .showing("A rash", &[PatientB]),
        get("/portal/messages/new",       "/portal/messages/new",             portal_messages(Ok)),
        post_probe("/portal/messages/new", "/portal/messages/new", PORTAL_MESSAGE, NOTHING, portal_messages(BadRequest)),
        get("/portal/messages/{id}",      "/portal/messages/{THREAD_A}",      portal_messages(Ok).except(&[PatientB], NotFound)),
        get("/portal/messages/{id}",      "/portal/messages/{THREAD_B}",      portal_messages(NotFound).except(&[PatientB], Ok)),
        // The forward's internal note never reaches the portal.
        get("/portal/messages/{id}",      "/portal/messages/{THREAD_DESK}",   portal_messages(Ok).except(&[PatientB], NotFound))
            .showing("Your results are in", &[PatientA, CaregiverOfA])
            .showing("Please call Alex", &[]),
        post_probe("/portal/messages/{id}/reply", "/portal/messages/{THREAD_A}/reply", REPLY, NOTHING,
            portal_messages(BadRequest).except(&[PatientB], NotFound)),
        post_probe("/portal/messages/{id}/reply", "/portal/messages/{THREAD_B}/reply", REPLY, NOTHING,
            portal_messages(NotFound).except(&[PatientB], BadRequest)),
        get("/portal/messages/{id}/files/{file}", "/portal/messages/{THREAD_A}/files/{FILE_A}", portal_messages(Ok).except(&[PatientB], NotFound)),
        get("/portal/messages/{id}/files/{file}", "/portal/messages/{THREAD_B}/files/{FILE_B}", portal_messages(NotFound).except(&[PatientB], Ok)),
        // Someone else's file under the caller's own thread.
        get("/portal/messages/{id}/files/{file}", "/portal/messages/{THREAD_B}/files/{FILE_A}", portal_messages(NotFound)),
        get("/portal/messages/{id}/files/{file}", "/portal/messages/{THREAD_A}/files/{FILE_B}", portal_messages(NotFound)),
    ]
}

/// The forms shown before sign-in: their token is the double-submit cookie's.
const PUBLIC_FORMS: &[&str] = &[
    "/setup/{token}",
    "/practice/login",
    "/practice/forgot",
    "/practice/reset/{token}",
    "/portal/login",
    "/portal/forgot",
    "/portal/reset/{token}",
    "/portal/register/{token}",
];

// ---------------------------------------------------------------------------------------------
// The route table of src/web/routes.rs

/// (method, pattern) of every route, in declaration order.
fn declared_routes() -> Vec<(String, String)> {
    let source =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/web/routes.rs")).unwrap();
    let routes: Vec<(String, String)> = source
        .lines()
        .filter_map(|line| line.trim().strip_prefix("route(\""))
        .map(|rest| {
            let mut parts = rest.split('"');
            let method = parts.next().unwrap().to_owned();
            let pattern = parts.nth(1).unwrap().to_owned();
            (method, pattern)
        })
        .collect();
    assert!(routes.len() > 50, "routes.rs parsed to {routes:?}");
    routes
}

fn matches(pattern: &str, path: &str) -> bool {
    let want: Vec<&str> = pattern.split('/').collect();
    let have: Vec<&str> = path.split('/').collect();
    want.len() == have.len()
        && want.iter().zip(&have).all(|(w, h)| {
            if w.starts_with('{') {
                !h.is_empty()
            } else {
                w == h
            }
        })
}

/// The route the server picks for a path: the first declared one that matches.
fn route_of<'a>(routes: &'a [(String, String)], method: &str, path: &str) -> Option<&'a str> {
    let path = path.split('?').next().unwrap();
    routes
        .iter()
        .find(|(m, p)| m == method && matches(p, path))
        .map(|(_, p)| p.as_str())
}

/// Every placeholder of a template replaced by `with`.
fn fill(template: &str, with: impl Fn(&str) -> String) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .unwrap_or_else(|| panic!("unclosed placeholder in {template}"))
            + start;
        out.push_str(&with(&rest[start + 1..end]));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The table covers exactly the declared routes, and each row's path reaches its own route.
fn assert_matrix_covers_every_route() {
    let declared = declared_routes();
    let rows = matrix();
    let mut problems = Vec::new();
    for (method, pattern) in &declared {
        if !rows
            .iter()
            .any(|r| r.method == method && r.pattern == pattern)
        {
            problems.push(format!(
                "{method} {pattern} is routed but has no row in the matrix"
            ));
        }
    }
    for row in &rows {
        if !declared
            .iter()
            .any(|(m, p)| m == row.method && p == row.pattern)
        {
            problems.push(format!(
                "{} {} has a row but is not in routes.rs",
                row.method, row.pattern
            ));
        }
        let sample = fill(row.path, |_| "7".to_owned());
        let reached = route_of(&declared, row.method, &sample);
        if reached != Some(row.pattern) {
            problems.push(format!(
                "the row {} {} calls {} which the server routes to {reached:?}",
                row.method, row.pattern, row.path
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_authorization_matrix_has_a_row_for_every_route() {
    assert_matrix_covers_every_route();
}

// ---------------------------------------------------------------------------------------------
// The world: one demo server, one signed-in client per caller, concrete ids

struct World {
    server: Server,
    clients: HashMap<Who, Client>,
    /// The session CSRF token of each staff caller (the deactivated one's from before).
    staff_csrf: HashMap<Who, String>,
    portal_csrf: HashMap<Who, String>,
    /// The double-submit cookie's token, which every client holds.
    anonymous_csrf: HashMap<Who, String>,
    /// Fixed placeholders.
    values: HashMap<&'static str, String>,
    /// Placeholders whose target depends on whether the cell lets the caller through: an
    /// allowed caller acts on a target of its own that nobody else needs (so the matrix can go
    /// on), a denied one aims at a live target (so an action let through would show).
    allowed_targets: HashMap<(&'static str, Who), String>,
    denied_targets: HashMap<&'static str, String>,
    /// Kept until the server is gone.
    _dir: TempDir,
}

impl World {
    fn resolve(&self, template: &str, who: Who, allowed: bool) -> String {
        fill(template, |name| {
            if let Some(live) = self.denied_targets.get(name) {
                if allowed {
                    self.allowed_targets
                        .get(&(name, who))
                        .unwrap_or_else(|| panic!("no {name} prepared for {who:?}"))
                        .clone()
                } else {
                    live.clone()
                }
            } else {
                self.values
                    .get(name)
                    .unwrap_or_else(|| panic!("unknown placeholder {{{name}}} in {template}"))
                    .clone()
            }
        })
    }

    fn query(&self, sql: &str, params: &[&str]) -> Vec<Vec<String>> {
        db_rows(&self.server.data, sql, params)
    }
}

fn scalar(server: &Server, sql: &str, params: &[&str]) -> String {
    let rows = db_rows(&server.data, sql, params);
    assert_eq!(rows.len(), 1, "{sql} {params:?} gave {rows:?}");
    rows[0][0].clone()
}

#[track_caller]
fn assert_redirect(response: &Response, prefix: &str) {
    assert!(
        response.status == 303 && response.location().starts_with(prefix),
        "expected a redirect to {prefix}, got {} to {:?}:\n{}",
        response.status,
        response.location(),
        response.body
    );
}

/// The 64-hex token of the link in `text` that starts with `prefix`.
#[track_caller]
fn link_token(text: &str, prefix: &str) -> String {
    let start = text
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix} link in:\n{text}"))
        + prefix.len();
    let token: String = text[start..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    assert_eq!(token.len(), 64, "a 64-hex token after {prefix} in:\n{text}");
    token
}

fn signed_in_staff(server: &Server, email: &str, password: &str) -> Client {
    let mut client = server.client();
    assert_redirect(&client.login_staff(email, password), "/practice");
    client
}

fn signed_in_portal(server: &Server, email: &str) -> Client {
    let mut client = server.client();
    assert_redirect(&client.login_portal(email, DEMO_PASSWORD), "/portal");
    client
}

/// Registers a new portal account from an invitation link; the client is signed in.
fn register(server: &Server, token: &str, date_of_birth: &str, pin: &str, email: &str) -> Client {
    let mut client = server.client();
    let link = format!("/portal/register/{token}");
    let csrf = client.get(&link).csrf();
    let response = client.post_form(
        &link,
        &[
            ("csrf", &csrf),
            ("date_of_birth", date_of_birth),
            ("pin", pin),
            ("mode", "new"),
            ("email", email),
            ("password", DEMO_PASSWORD),
            ("password_again", DEMO_PASSWORD),
        ],
    );
    assert_redirect(&response, "/portal");
    client
}

fn pdf(label: &str) -> Vec<u8> {
    let mut bytes = format!("%PDF-1.4\n% {label}\n").into_bytes();
    bytes.resize(600, b'.');
    bytes
}

/// A message form with one PDF, as multipart/form-data.
fn post_with_file(
    client: &mut Client,
    action: &str,
    fields: &[(&str, &str)],
    file: &str,
) -> Response {
    let boundary = "----CarepostAuthzMatrix5e0b7c1d";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file}\"\r\nContent-Type: application/pdf\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&pdf(file));
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let content_type = format!("multipart/form-data; boundary={boundary}");
    client.request("POST", action, &[("Content-Type", &content_type)], &body)
}

/// The id at the end of a redirect such as `/portal/messages/12#latest` or `/x/12?notice=y`.
fn id_in(location: &str, prefix: &str) -> String {
    let rest = location
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{location:?} does not start with {prefix}"));
    let id: String = rest.chars().take_while(char::is_ascii_digit).collect();
    assert!(!id.is_empty(), "no id in {location:?}");
    id
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn build_world() -> World {
    let dir = TempDir::new("authz");
    let data = dir.path().join("data");

    // First start: a mail server that refuses Sam's and Chris's addresses leaves their two
    // invitation emails failed; then a clean stop.
    let sink = SmtpSink::start();
    sink.reject_recipients("sam@");
    sink.reject_recipients("chris@");
    let mut first = Server::start_in(
        &data,
        Options::demo()
            .env("CAREPOST_SMTP_HOST", "127.0.0.1")
            .env("CAREPOST_SMTP_PORT", &sink.port().to_string())
            .env("CAREPOST_SMTP_SECURITY", "none"),
    );
    let out = first.stdout();
    let sam_token = link_token(&out, "/portal/register/");
    let sam_pin: String = out
        .split("and PIN ")
        .nth(1)
        .unwrap_or_else(|| panic!("no PIN printed:\n{out}"))
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert_eq!(sam_pin.len(), 6, "{out}");
    wait_for("the seeded emails to be tried", || {
        scalar(
            &first,
            "SELECT count(*) FROM outbox WHERE state IN ('queued', 'sending')",
            &[],
        ) == "0"
    });
    assert!(first.terminate().success(), "{}", first.log());
    drop(first);
    drop(sink);

    // Second start, without a mail server: the outbox only grows.
    let server = Server::start_in(&data, Options::demo());
    let q = |sql: &str, params: &[&str]| scalar(&server, sql, params);
    let patient = |first: &str| q("SELECT id FROM patient WHERE first_name = ?", &[first]);
    let staff_id = |email: &str| q("SELECT id FROM staff WHERE email = ?", &[email]);
    let thread = |subject: &str| q("SELECT id FROM thread WHERE subject = ?", &[subject]);
    let (alex, sam, taylor, morgan) = (
        patient("Alex"),
        patient("Sam"),
        patient("Taylor"),
        patient("Morgan"),
    );
    let failed_chris = q(
        "SELECT id FROM outbox WHERE state = 'failed' AND recipient = 'chris@demo.test'",
        &[],
    );
    let failed_sam = q(
        "SELECT id FROM outbox WHERE state = 'failed' AND recipient = 'sam@demo.test'",
        &[],
    );

    let mut clients: HashMap<Who, Client> = HashMap::new();
    for (who, email) in [
        (Level1, "desk@demo.test"),
        (Level2, "rn.cho@demo.test"),
        (Level3, "np.kim@demo.test"),
        (Level4, "dr.lee@demo.test"),
        (Administrator, "admin@demo.test"),
    ] {
        clients.insert(who, signed_in_staff(&server, email, DEMO_PASSWORD));
    }
    clients.insert(PatientA, signed_in_portal(&server, "alex@demo.test"));
    clients.insert(
        RevokedPatient,
        signed_in_portal(&server, "morgan@demo.test"),
    );
    clients.insert(
        PatientB,
        register(&server, &sam_token, "1991-07-02", &sam_pin, "sam@demo.test"),
    );
    // Chris: the seeded caregiver invitation for Alex (link in the outbox, PIN in the record).
    let chris_pin = q(
        "SELECT pin FROM invitation WHERE email = 'chris@demo.test' AND status = 'pending'",
        &[],
    );
    let chris_mail = q(
        "SELECT body_text FROM outbox WHERE kind = 'caregiver_invitation' AND recipient = 'chris@demo.test'",
        &[],
    );
    let chris_token = link_token(&chris_mail, "/portal/register/");
    clients.insert(
        CaregiverOfA,
        register(
            &server,
            &chris_token,
            "1984-03-14",
            &chris_pin,
            "chris@demo.test",
        ),
    );

    // Staff users made by the administrator: one to deactivate after signing in, two spares
    // for the administrator's own actions, and one whose password link stays unused.
    let admin_client = clients.get_mut(&Administrator).unwrap();
    let mut create_user = |email: &str, level: &str| -> String {
        let response = admin_client.submit(
            "/practice/admin/users/new",
            "/practice/admin/users/new",
            &[
                ("name", email.split('@').next().unwrap()),
                ("email", email),
                ("degree", "MD"),
                ("access_level", level),
            ],
        );
        assert_redirect(&response, "/practice/admin/users/");
        id_in(response.location(), "/practice/admin/users/")
    };
    let gone = create_user("gone@demo.test", "4");
    let spare = create_user("spare@demo.test", "2");
    let spare_inactive = create_user("spare.inactive@demo.test", "2");
    create_user("reset.only@demo.test", "1");
    let reset_token = |server: &Server, recipient: &str, prefix: &str| -> String {
        let body = scalar(
            server,
            "SELECT body_text FROM outbox WHERE kind = 'password_reset' AND recipient = ? ORDER BY id DESC LIMIT 1",
            &[recipient],
        );
        link_token(&body, prefix)
    };
    let staff_reset = reset_token(&server, "reset.only@demo.test", "/practice/reset/");

    // The deactivated caller: choose a password from the link, sign in, keep the session's
    // CSRF token, then be deactivated.
    let mut gone_client = server.client();
    let gone_link = format!(
        "/practice/reset/{}",
        reset_token(&server, "gone@demo.test", "/practice/reset/")
    );
    let csrf = gone_client.get(&gone_link).csrf();
    let response = gone_client.post_form(
        &gone_link,
        &[
            ("csrf", &csrf),
            ("password", "Gone-pass-1"),
            ("password_again", "Gone-pass-1"),
        ],
    );
    assert_redirect(&response, "/practice/login?reset=1");
    assert_redirect(
        &gone_client.login_staff("gone@demo.test", "Gone-pass-1"),
        "/practice",
    );
    let gone_csrf = gone_client.get("/practice/account").csrf();
    gone_client.get("/practice").assert_status(200);
    clients.insert(Deactivated, gone_client);
    let admin_client = clients.get_mut(&Administrator).unwrap();
    for id in [&gone, &spare_inactive] {
        let page = format!("/practice/admin/users/{id}");
        let response = admin_client.submit(&page, &format!("{page}/deactivate"), &[]);
        assert_redirect(&response, &page);
    }
    // Deactivated means signed out everywhere, and no new sign-in with the right password.
    assert_eq!(
        q(
            "SELECT count(*) FROM session WHERE audience = 'staff' AND principal_id = ?",
            &[&gone]
        ),
        "0"
    );
    server
        .client()
        .login_staff("gone@demo.test", "Gone-pass-1")
        .assert_status(400);

    // A portal password link, asked for anonymously.
    let mut someone = server.client();
    let csrf = someone.get("/portal/forgot").csrf();
    someone
        .post_form(
            "/portal/forgot",
            &[("csrf", &csrf), ("email", "jordan@demo.test")],
        )
        .assert_status(200);
    let portal_reset = reset_token(&server, "jordan@demo.test", "/portal/reset/");

    // Caregiver invitations for Taylor, by Dr. Lee: one to cancel per active staff caller, one
    // live one, one whose link stays open, and one per active staff caller that is registered
    // and becomes the caregiver access that caller revokes.
    let staff_label = |who: Who| format!("{who:?}").to_ascii_lowercase();
    let mut labels = vec!["live".to_owned(), "open".to_owned()];
    for who in ACTIVE_STAFF {
        labels.push(format!("cancel-{}", staff_label(who)));
        labels.push(format!("access-{}", staff_label(who)));
    }
    let lee = clients.get_mut(&Level4).unwrap();
    let form = format!("/practice/patients/{taylor}/caregivers/new");
    let csrf = lee.get(&form).csrf();
    for label in &labels {
        let email = format!("{label}@demo.test");
        let response = lee.post_form(
            &form,
            &[
                ("csrf", &csrf),
                ("name", &format!("Helper {label}")),
                ("relationship", "Friend"),
                ("email", &email),
            ],
        );
        assert_redirect(&response, &format!("/practice/patients/{taylor}"));
    }
    let invitations: HashMap<String, (String, String)> = db_rows(
        &server.data,
        "SELECT i.email, i.id, i.pin, o.body_text FROM invitation i
           JOIN outbox o ON o.recipient = i.email AND o.kind = 'caregiver_invitation'
          WHERE i.patient_id = ? AND i.status = 'pending'",
        &[&taylor],
    )
    .into_iter()
    .map(|r| {
        let token = link_token(&r[3], "/portal/register/");
        (r[0].clone(), (r[1].clone(), format!("{}:{token}", r[2])))
    })
    .collect();
    let invitation = |label: &str| invitations[&format!("{label}@demo.test")].clone();
    let mut allowed_targets: HashMap<(&'static str, Who), String> = HashMap::new();
    for who in ACTIVE_STAFF {
        let label = staff_label(who);
        allowed_targets.insert(
            ("INVITATION", who),
            invitation(&format!("cancel-{label}")).0,
        );
        let (_, pin_token) = invitation(&format!("access-{label}"));
        let (pin, token) = pin_token.split_once(':').unwrap();
        let email = format!("access-{label}@demo.test");
        register(&server, token, "1958-11-30", pin, &email);
        let access = q(
            "SELECT a.id FROM portal_access a JOIN portal_account p ON p.id = a.account_id
              WHERE p.email = ? AND a.status = 'active'",
            &[&email],
        );
        allowed_targets.insert(("ACCESS", who), access);
        allowed_targets.insert(("ACCESS_PATIENT", who), taylor.clone());
        allowed_targets.insert(("REVOKE_PATIENT", who), taylor.clone());
    }
    allowed_targets.insert(("DEACTIVATE", Administrator), spare.clone());
    allowed_targets.insert(("REACTIVATE", Administrator), spare_inactive.clone());
    allowed_targets.insert(("PASSWORD_LINK", Administrator), spare.clone());
    allowed_targets.insert(("FAILED_EMAIL", Administrator), failed_chris.clone());
    let registration = invitation("open").1.split_once(':').unwrap().1.to_owned();
    let live_invitation = invitation("live").0;
    let caregiver_access = q(
        "SELECT a.id FROM portal_access a JOIN portal_account p ON p.id = a.account_id
          WHERE p.email = 'chris@demo.test'",
        &[],
    );

    // Threads: Alex's two seeded ones (the second forwarded by Dr. Lee to the desk), each with
    // a PDF from Alex; Sam's new one to Dr. Lee with a PDF.
    let (thread_a, thread_desk) = (
        thread("Blood pressure readings"),
        thread("Follow-up after your visit"),
    );
    let desk_id = staff_id("desk@demo.test");
    let lee = clients.get_mut(&Level4).unwrap();
    let response = lee.submit(
        &format!("/practice/messages/{thread_desk}"),
        &format!("/practice/messages/{thread_desk}/forward"),
        &[("to", &desk_id), ("note", "Please call Alex about this.")],
    );
    assert_redirect(&response, &format!("/practice/messages/{thread_desk}"));
    let alex_client = clients.get_mut(&PatientA).unwrap();
    for t in [&thread_a, &thread_desk] {
        let csrf = alex_client.get(&format!("/portal/messages/{t}")).csrf();
        let response = post_with_file(
            alex_client,
            &format!("/portal/messages/{t}/reply"),
            &[
                ("csrf", &csrf),
                ("key", ""),
                ("body", "The scan is attached."),
                ("link", ""),
            ],
            &format!("scan-{t}.pdf"),
        );
        assert_redirect(&response, &format!("/portal/messages/{t}"));
    }
    let lee_id = staff_id("dr.lee@demo.test");
    let sam_client = clients.get_mut(&PatientB).unwrap();
    let csrf = sam_client.get("/portal/messages/new").csrf();
    let response = post_with_file(
        sam_client,
        "/portal/messages/new",
        &[
            ("csrf", &csrf),
            ("key", ""),
            ("recipient", &lee_id),
            ("subject", "A rash"),
            ("body", "A photo of the rash is attached."),
            ("link", ""),
        ],
        "rash.pdf",
    );
    assert_redirect(&response, "/portal/messages/");
    let thread_b = id_in(response.location(), "/portal/messages/");
    let file_of = |thread: &str| {
        q(
            "SELECT a.id FROM attachment a JOIN message m ON m.id = a.message_id WHERE m.thread_id = ?",
            &[thread],
        )
    };
    let (file_a, file_desk, file_b) = (
        file_of(&thread_a),
        file_of(&thread_desk),
        file_of(&thread_b),
    );

    // The stylesheet's hashed address, as pages link it.
    let start_page = server.client().get("/");
    let css_start = start_page.body.find("/assets/").expect("a stylesheet link") + "/assets/".len();
    let css = start_page.body[css_start..]
        .split('"')
        .next()
        .unwrap()
        .to_owned();

    // The anonymous caller, and every caller's tokens.
    clients.insert(Anonymous, server.client());
    let mut anonymous_csrf = HashMap::new();
    let mut portal_csrf = HashMap::new();
    let mut staff_csrf = HashMap::new();
    for who in CALLERS {
        let client = clients.get_mut(&who).unwrap();
        anonymous_csrf.insert(who, client.get("/portal/login").csrf());
        if PORTAL_USERS.contains(&who) {
            portal_csrf.insert(who, client.get("/portal/account").csrf());
        }
        if ACTIVE_STAFF.contains(&who) {
            staff_csrf.insert(who, client.get("/practice/account").csrf());
        }
    }
    staff_csrf.insert(Deactivated, gone_csrf);

    let mut values: HashMap<&'static str, String> = HashMap::new();
    for (name, value) in [
        ("A", alex.clone()),
        ("B", sam.clone()),
        ("T", taylor.clone()),
        ("REVOKED", morgan),
        ("THREAD_A", thread_a),
        ("THREAD_B", thread_b),
        ("THREAD_DESK", thread_desk),
        ("FILE_A", file_a),
        ("FILE_B", file_b),
        ("FILE_DESK", file_desk),
        ("LEE", lee_id.clone()),
        ("LEVEL2_ID", staff_id("rn.cho@demo.test")),
        ("CSS", css),
        ("BOGUS", "0123456789abcdef".repeat(4)),
        ("STAFF_RESET", staff_reset),
        ("PORTAL_RESET", portal_reset),
        ("REGISTRATION", registration),
        ("LIVE_INVITATION", live_invitation.clone()),
        ("CAREGIVER_ACCESS", caregiver_access.clone()),
        ("PASSWORD", DEMO_PASSWORD.to_owned()),
    ] {
        values.insert(name, value);
    }
    let denied_targets: HashMap<&'static str, String> = [
        ("INVITATION", live_invitation),
        ("ACCESS", caregiver_access),
        ("ACCESS_PATIENT", alex),
        ("REVOKE_PATIENT", sam),
        ("DEACTIVATE", lee_id.clone()),
        ("REACTIVATE", gone),
        ("PASSWORD_LINK", lee_id),
        ("FAILED_EMAIL", failed_sam),
    ]
    .into_iter()
    .collect();

    World {
        server,
        clients,
        staff_csrf,
        portal_csrf,
        anonymous_csrf,
        values,
        allowed_targets,
        denied_targets,
        _dir: dir,
    }
}

// ---------------------------------------------------------------------------------------------
// Running the cells

/// The class of an answer, or a description of an answer that fits no class.
fn classify(response: &Response, path: &str) -> Result<Outcome, String> {
    match response.status {
        200..=299 => Result::Ok(Ok),
        303 => {
            let location = response.location();
            let (target, query) = location.split_once('?').unwrap_or((location, ""));
            let is_login = target == "/practice/login" || target == "/portal/login";
            if !is_login || query.contains("signed_out=1") || query.contains("reset=1") {
                return Result::Ok(Ok);
            }
            let own = if path.starts_with("/portal") {
                "/portal/login"
            } else {
                "/practice/login"
            };
            if target == own {
                Result::Ok(SignIn)
            } else {
                Err(format!("303 to the other view's sign-in page {location}"))
            }
        }
        400 => Result::Ok(BadRequest),
        403 if response.body.contains("Form expired") => {
            Err("403 CSRF refusal (the matrix sent the caller's valid token)".into())
        }
        403 => Result::Ok(Forbidden),
        404 => Result::Ok(NotFound),
        410 => Result::Ok(Gone),
        other => Err(format!("{other} {}", heading(response))),
    }
}

fn heading(response: &Response) -> String {
    response
        .body
        .split("<h1>")
        .nth(1)
        .and_then(|h| h.split("</h1>").next())
        .unwrap_or("")
        .to_owned()
}

fn describe(response: &Response) -> String {
    match response.status {
        303 => format!("303 to {}", response.location()),
        status => format!("{status} \"{}\"", heading(response)),
    }
}

/// Every table but the audit log, row by row; sessions without the last-seen time, which any
/// request may refresh.
fn snapshot(world: &World) -> Vec<String> {
    let columns = world.query(
        "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p
          WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'
            AND m.name NOT IN ('audit_event', 'refinery_schema_history')
          ORDER BY m.name, p.cid",
        &[],
    );
    let mut tables: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in columns {
        if row[0] == "session" && row[1] == "last_seen_at" {
            continue;
        }
        tables
            .entry(row[0].clone())
            .or_default()
            .push(row[1].clone());
    }
    assert!(tables.contains_key("message") && tables.contains_key("session"));
    let sql = tables
        .iter()
        .map(|(table, cols)| {
            let values = cols
                .iter()
                .map(|c| format!("quote(\"{c}\")"))
                .collect::<Vec<_>>()
                .join(" || ',' || ");
            format!("SELECT '{table}: ' || {values} FROM \"{table}\"")
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let mut rows: Vec<String> = world
        .query(&sql, &[])
        .into_iter()
        .map(|mut r| r.remove(0))
        .collect();
    rows.sort();
    rows
}

fn difference(before: &[String], after: &[String]) -> String {
    let gone: Vec<&String> = before.iter().filter(|r| !after.contains(r)).collect();
    let new: Vec<&String> = after.iter().filter(|r| !before.contains(r)).collect();
    gone.iter()
        .map(|r| format!("    - {r}"))
        .chain(new.iter().map(|r| format!("    + {r}")))
        .collect::<Vec<_>>()
        .join("\n")
}

struct Cell<'a> {
    row: &'a Row,
    expected: Outcome,
}

impl World {
    fn token(&self, who: Who, pattern: &str) -> String {
        let anonymous = &self.anonymous_csrf[&who];
        let own = if PUBLIC_FORMS.contains(&pattern) {
            None
        } else if pattern.starts_with("/portal") {
            self.portal_csrf.get(&who)
        } else {
            self.staff_csrf.get(&who)
        };
        own.unwrap_or(anonymous).clone()
    }

    /// Sends one cell's request; returns the path called and a failure, if any.
    fn run(&mut self, who: Who, cell: &Cell) -> (String, Option<String>) {
        let row = cell.row;
        let allowed = !cell.expected.denied();
        let path = self.resolve(row.path, who, allowed);
        let response = if row.method == "GET" {
            self.clients.get_mut(&who).unwrap().get(&path)
        } else {
            let fields = match row.probe {
                Some(probe) if allowed => probe,
                _ => row.body,
            };
            let mut form: Vec<(String, String)> =
                vec![("csrf".into(), self.token(who, row.pattern))];
            for (name, value) in fields {
                form.push(((*name).to_owned(), self.resolve(value, who, allowed)));
            }
            let pairs: Vec<(&str, &str)> =
                form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            self.clients.get_mut(&who).unwrap().post_form(&path, &pairs)
        };
        let failure = match classify(&response, &path) {
            Result::Ok(Ok) if cell.expected == Ok => {
                let wrong: Vec<String> = row
                    .texts
                    .iter()
                    .filter(|(text, to)| response.body.contains(text) != to.contains(&who))
                    .map(|(text, to)| {
                        if to.contains(&who) {
                            format!("does not show {text:?}")
                        } else {
                            format!("shows {text:?}")
                        }
                    })
                    .collect();
                (!wrong.is_empty())
                    .then(|| format!("{who:?} {} {path}: {}", row.method, wrong.join(", ")))
            }
            Result::Ok(got) if got == cell.expected => None,
            Result::Ok(got) => Some(format!(
                "{who:?} {} {path}: expected {:?}, got {got:?} ({})",
                row.method,
                cell.expected,
                describe(&response)
            )),
            Err(problem) => Some(format!(
                "{who:?} {} {path}: expected {:?}, got {problem}",
                row.method, cell.expected
            )),
        };
        (path, failure)
    }
}

#[test]
fn every_route_answers_every_kind_of_caller_as_the_matrix_says() {
    assert_matrix_covers_every_route();
    let started = Instant::now();
    let mut world = build_world();
    let prepared = started.elapsed();
    let rows = matrix();
    let mut failures: Vec<String> = Vec::new();
    let mut cells = 0;
    for who in CALLERS {
        let (denied, mut allowed): (Vec<Cell>, Vec<Cell>) = rows
            .iter()
            .map(|row| Cell {
                row,
                expected: row.expect.of(who),
            })
            .partition(|cell| cell.expected.denied());
        // Signing out ends the caller's session: last.
        allowed.sort_by_key(|cell| cell.row.pattern.ends_with("/logout"));
        cells += denied.len() + allowed.len();

        // Denied requests, bracketed by snapshots of the database.
        let before = snapshot(&world);
        let mut called = Vec::new();
        for cell in &denied {
            let (path, failure) = world.run(who, cell);
            called.push(format!("{} {path}", cell.row.method));
            failures.extend(failure);
        }
        let after = snapshot(&world);
        if before != after {
            failures.push(format!(
                "{who:?}: the requests it was denied changed the database:\n{}\n  requests: {}",
                difference(&before, &after),
                called.join(", ")
            ));
        }

        for cell in &allowed {
            failures.extend(world.run(who, cell).1);
        }
    }
    eprintln!(
        "authorization matrix: {} rows x {} callers = {cells} cells ({} routes); prepared in {:.1?}, total {:.1?}",
        rows.len(),
        CALLERS.len(),
        declared_routes().len(),
        prepared,
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} cell(s) of the authorization matrix failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

//! Operational commands against the real binary: `carepost audit verify` on an intact log, on
//! logs tampered with in three ways, and after concurrent activity; `carepost backup` while the
//! server keeps taking messages with attachments, restored and served again; and the refusals of
//! `backup` and `restore` (used folders, a running server, folders that are not backups).
//!
//! Databases are read and tampered with through python3's sqlite3 module.

use crate::harness::*;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// The command line and the database (python3's sqlite3)

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Runs `carepost ARGS`; the exit code and stdout followed by stderr.
fn carepost(args: &[&str]) -> (i32, String) {
    let (code, out, err) = run(args, &[], "");
    (code, format!("{out}{err}"))
}

fn python(script: &str, args: &[&str]) -> std::process::Output {
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs")
}

const QUERY: &str = r#"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
for row in c.execute(sys.argv[2], sys.argv[3:]):
    sys.stdout.write('\x1f'.join('' if v is None else str(v) for v in row) + '\x1e')
"#;

/// Rows of a query on the database of the data folder `data`, every value as text.
fn query(data: &Path, sql: &str, params: &[&str]) -> Vec<Vec<String>> {
    let db = data.join("carepost.db");
    let mut args = vec![p(&db), sql];
    args.extend_from_slice(params);
    let out = python(QUERY, &args);
    assert!(
        out.status.success(),
        "query {sql:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split('\x1e')
        .filter(|row| !row.is_empty())
        .map(|row| row.split('\x1f').map(str::to_owned).collect())
        .collect()
}

#[track_caller]
fn scalar(data: &Path, sql: &str, params: &[&str]) -> String {
    let rows = query(data, sql, params);
    assert_eq!(rows.len(), 1, "one row from {sql:?}: {rows:?}");
    rows[0][0].clone()
}

fn number(data: &Path, sql: &str, params: &[&str]) -> i64 {
    scalar(data, sql, params).parse().unwrap()
}

const EXECUTE: &str = r#"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
try:
    c.executescript(sys.argv[2])
except sqlite3.Error as e:
    sys.stderr.write(type(e).__name__ + ': ' + str(e))
    sys.exit(3)
"#;

/// Runs SQL statements in autocommit mode; the error SQLite gave, if any.
fn execute(data: &Path, script: &str) -> Result<(), String> {
    let db = data.join("carepost.db");
    let out = python(EXECUTE, &[p(&db), script]);
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

const COPY: &str = r#"
import sqlite3, sys
s = sqlite3.connect(sys.argv[1])
d = sqlite3.connect(sys.argv[2])
s.backup(d)
d.close()
"#;

/// A copy of the database of `from` as the only file of the new folder `to`.
fn copy_database(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    let out = python(
        COPY,
        &[p(&from.join("carepost.db")), p(&to.join("carepost.db"))],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every file under `dir` (relative path) with its content.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, into: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, into);
            } else {
                let bytes = std::fs::read(&path).unwrap_or_default();
                into.insert(path.strip_prefix(root).unwrap().to_path_buf(), bytes);
            }
        }
    }
    let mut found = BTreeMap::new();
    walk(dir, dir, &mut found);
    found
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn blob_path(data: &Path, sha256: &str) -> PathBuf {
    data.join("blobs/sha256")
        .join(&sha256[..2])
        .join(&sha256[2..])
}

#[track_caller]
fn assert_verify_clean(data: &Path) {
    let (code, out) = carepost(&["verify", "--data", p(data)]);
    assert_eq!(code, 0, "carepost verify on {}:\n{out}", data.display());
    assert!(
        out.contains("0 missing, 0 corrupt, 0 unreferenced"),
        "{out}"
    );
}

#[track_caller]
fn assert_audit_intact(data: &Path) -> String {
    let (code, out) = carepost(&["audit", "verify", "--data", p(data)]);
    assert_eq!(
        code,
        0,
        "carepost audit verify on {}:\n{out}",
        data.display()
    );
    assert!(out.contains("intact"), "{out}");
    out
}

// ---------------------------------------------------------------------------------------------
// HTTP with binary bodies, multipart forms

/// One request with this client's cookies; keeps the cookies it is given.
fn exchange(
    client: &mut Client,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Raw {
    client.request_raw(method, path, headers, body)
}

const BOUNDARY: &str = "----CarepostOperationsBoundary5e0c2b7a91d4";

/// A multipart body: text fields, then the file part (empty when no file is chosen).
fn multipart(fields: &[(&str, &str)], file: Option<(&str, &[u8])>) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    let (file_name, bytes) = file.unwrap_or(("", b""));
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// Fetches the form page (for its CSRF token and idempotency key) and posts the form.
fn send_form(
    client: &mut Client,
    page: &str,
    action: &str,
    fields: &[(&str, &str)],
    file: Option<(&str, &[u8])>,
) -> Raw {
    let form = client.get(page);
    assert_eq!(form.status, 200, "form page {page}:\n{}", form.body);
    let marker = "name=\"key\" value=\"";
    let start = form
        .body
        .find(marker)
        .unwrap_or_else(|| panic!("no idempotency key on {page}:\n{}", form.body))
        + marker.len();
    let key = form.body[start..].split('"').next().unwrap().to_owned();
    let csrf = form.csrf();
    let mut all = vec![("csrf", csrf.as_str()), ("key", key.as_str())];
    all.extend_from_slice(fields);
    let body = multipart(&all, file);
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    exchange(
        client,
        "POST",
        action,
        &[("Content-Type", &content_type)],
        &body,
    )
}

fn portal_new(
    client: &mut Client,
    recipient: &str,
    subject: &str,
    body: &str,
    file: Option<(&str, &[u8])>,
) -> Raw {
    send_form(
        client,
        "/portal/messages/new",
        "/portal/messages/new",
        &[
            ("recipient", recipient),
            ("subject", subject),
            ("body", body),
            ("link", ""),
        ],
        file,
    )
}

fn portal_reply(client: &mut Client, thread: i64, body: &str, file: Option<(&str, &[u8])>) -> Raw {
    send_form(
        client,
        &format!("/portal/messages/{thread}"),
        &format!("/portal/messages/{thread}/reply"),
        &[("body", body), ("link", "")],
        file,
    )
}

fn staff_reply(client: &mut Client, thread: i64, body: &str, file: Option<(&str, &[u8])>) -> Raw {
    send_form(
        client,
        &format!("/practice/messages/{thread}"),
        &format!("/practice/messages/{thread}/reply"),
        &[("body", body), ("link", "")],
        file,
    )
}

/// The thread a successful send redirected to.
#[track_caller]
fn thread_of(raw: &Raw) -> i64 {
    assert_eq!(raw.status, 303, "message not sent:\n{}", raw.text());
    let location = raw.location();
    location
        .trim_start_matches("/portal/messages/")
        .trim_start_matches("/practice/messages/")
        .split(['#', '?'])
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("no thread in {location:?}"))
}

#[track_caller]
fn signed_in_portal(server: &Server, email: &str) -> Client {
    let mut client = server.client();
    let r = client.login_portal(email, DEMO_PASSWORD);
    assert_eq!((r.status, r.location()), (303, "/portal"), "{}", r.body);
    client
}

#[track_caller]
fn signed_in_staff(server: &Server, email: &str) -> Client {
    let mut client = server.client();
    let r = client.login_staff(email, DEMO_PASSWORD);
    assert_eq!((r.status, r.location()), (303, "/practice"), "{}", r.body);
    client
}

/// A small PDF whose bytes depend on `label`.
fn pdf_of(label: &str, size: usize) -> Vec<u8> {
    let mut v = format!("%PDF-1.4\n% {label}\n").into_bytes();
    let mut x: u32 = label
        .bytes()
        .fold(2166136261, |h, b| (h ^ b as u32).wrapping_mul(16777619));
    while v.len() < size {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push(x as u8);
    }
    v.truncate(size);
    v
}

fn staff_id(data: &Path, email: &str) -> String {
    scalar(data, "SELECT id FROM staff WHERE email = ?", &[email])
}

/// (thread, attachment id, file name, sha256) of the one message with this body.
#[track_caller]
fn message_with_body(data: &Path, body: &str) -> Option<(i64, i64, String, String)> {
    let rows = query(
        data,
        "SELECT m.thread_id, a.id, a.file_name, a.sha256
           FROM message m LEFT JOIN attachment a ON a.message_id = m.id
          WHERE m.body = ?",
        &[body],
    );
    assert!(rows.len() <= 1, "one message with body {body:?}: {rows:?}");
    rows.first().map(|r| {
        (
            r[0].parse().unwrap(),
            r[1].parse().unwrap_or(0),
            r[2].clone(),
            r[3].clone(),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// 1. The audit chain

/// After sign-ins, a message, a patient view and a thread view, `audit verify` exits 0 and says
/// the log is intact with its number of entries. SQLite itself refuses an UPDATE, a DELETE and
/// a second entry after the same one. Then, on copies: an edited entry, an entry deleted from
/// the middle, and two entries swapped (whole rows, or only their contents) each make it exit
/// non-zero naming the first entry that does not fit.
#[test]
fn audit_verify_passes_an_intact_log_and_names_the_first_tampered_entry() {
    let dir = TempDir::new("audit");
    let data = dir.path().join("data");
    let mut server = Server::start_in(&data, Options::demo());
    let lee_id = staff_id(&data, "dr.lee@demo.test");
    let alex_patient = scalar(
        &data,
        "SELECT id FROM patient WHERE first_name = 'Alex'",
        &[],
    );
    let mut lee = signed_in_staff(&server, "dr.lee@demo.test");
    let mut alex = signed_in_portal(&server, "alex@demo.test");
    let thread = thread_of(&portal_new(
        &mut alex,
        &lee_id,
        "Audit check",
        "A message for the audit chain test.",
        None,
    ));
    lee.get(&format!("/practice/patients/{alex_patient}"))
        .assert_status(200);
    lee.get(&format!("/practice/messages/{thread}"))
        .assert_status(200);
    alex.get(&format!("/portal/messages/{thread}"))
        .assert_status(200);
    lee.get(&format!("/practice/patients/{alex_patient}"))
        .assert_status(200);
    let actions: Vec<String> = query(&data, "SELECT DISTINCT action FROM audit_event", &[])
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    for action in ["message.send", "patient.view", "thread.view"] {
        assert!(actions.iter().any(|a| a == action), "{action}: {actions:?}");
    }

    // Intact while the server runs, and after it stops, counting every entry.
    assert_audit_intact(&data);
    server.terminate();
    let total = number(&data, "SELECT count(*) FROM audit_event", &[]);
    let out = assert_audit_intact(&data);
    assert!(out.contains(&format!("{total} entries")), "{total}: {out}");

    // The database refuses changes: no UPDATE, no DELETE, no fork of the chain.
    let ids: Vec<i64> = query(&data, "SELECT id FROM audit_event ORDER BY id", &[])
        .into_iter()
        .map(|r| r[0].parse().unwrap())
        .collect();
    assert!(ids.len() >= 8, "{ids:?}");
    let middle_at = ids.len() / 2;
    let middle = ids[middle_at];
    let all_rows = query(&data, "SELECT * FROM audit_event ORDER BY id", &[]);
    for sql in [
        format!("UPDATE audit_event SET object = 'edited' WHERE id = {middle}"),
        format!("DELETE FROM audit_event WHERE id = {middle}"),
        "DELETE FROM audit_event".to_owned(),
    ] {
        let refused = execute(&data, &sql).expect_err(&sql);
        assert!(
            refused.contains("the audit log cannot be changed"),
            "{sql}: {refused}"
        );
    }
    let fork = format!(
        "INSERT INTO audit_event (at, actor_kind, action, prev_hash, hash)
         SELECT at, actor_kind, 'forged', prev_hash, 'fork' FROM audit_event WHERE id = {middle}"
    );
    let refused = execute(&data, &fork).expect_err("a fork");
    assert!(refused.contains("only grows at its end"), "{refused}");
    // Nor an entry that does not follow the last one (the unique index of before took this).
    let unchained = "INSERT INTO audit_event (at, actor_kind, action, prev_hash, hash)
                     VALUES (0, 'system', 'forged', 'not the last hash', 'x')";
    let refused = execute(&data, unchained).expect_err("an entry off the chain");
    assert!(refused.contains("only grows at its end"), "{refused}");
    // Nor an entry put in the place of the last one (REPLACE deletes without the delete trigger).
    let last = ids[ids.len() - 1];
    let replaced = format!(
        "INSERT OR REPLACE INTO audit_event (id, at, actor_kind, action, prev_hash, hash)
         SELECT id, at, actor_kind, 'forged', prev_hash, 'replaced' FROM audit_event
          WHERE id = {last}"
    );
    let refused = execute(&data, &replaced).expect_err("an entry replaced");
    assert!(refused.contains("only grows at its end"), "{refused}");
    assert_eq!(
        query(&data, "SELECT * FROM audit_event ORDER BY id", &[]),
        all_rows,
        "refused changes changed nothing"
    );
    assert_audit_intact(&data);

    // Tampering on copies (dropping the guards first, as someone with the file could).
    let tampered = |label: &str, script: &str| -> (i32, String) {
        let copy = dir.path().join(label);
        copy_database(&data, &copy);
        assert_audit_intact(&copy);
        execute(&copy, script).unwrap_or_else(|e| panic!("{label}: {e}"));
        carepost(&["audit", "verify", "--data", p(&copy)])
    };
    #[track_caller]
    fn names_entry(result: &(i32, String), id: i64, what: &str) {
        let (code, out) = result;
        assert_ne!(*code, 0, "{what}: audit verify passed:\n{out}");
        assert!(
            out.contains(&format!("audit entry {id} ")),
            "{what}: entry {id} should be named first:\n{out}"
        );
        assert!(!out.contains("intact"), "{what}: {out}");
    }

    // (a) An entry's object edited.
    let edited = tampered(
        "edited",
        &format!(
            "DROP TRIGGER audit_event_no_update;
             UPDATE audit_event SET object = object || ' (edited)' WHERE id = {middle};"
        ),
    );
    names_entry(&edited, middle, "edited object");
    assert!(edited.1.contains("altered"), "{}", edited.1);

    // (b) An entry deleted from the middle: the next one no longer follows.
    let deleted = tampered(
        "deleted",
        &format!(
            "DROP TRIGGER audit_event_no_delete;
             DELETE FROM audit_event WHERE id = {middle};"
        ),
    );
    names_entry(&deleted, ids[middle_at + 1], "deleted entry");

    // (c) Two different entries swapped: the message sent and the later patient view.
    let a = number(
        &data,
        "SELECT max(id) FROM audit_event WHERE action = 'message.send'",
        &[],
    );
    let b = number(
        &data,
        "SELECT max(id) FROM audit_event WHERE action = 'patient.view'",
        &[],
    );
    assert!(a < b, "{a} {b}");
    const CONTENT: &str = "at, actor_kind, actor_id, action, patient_id, object, outcome, client";
    let swap = |columns: &str| {
        format!(
            "DROP TRIGGER audit_event_no_update;
             CREATE TEMP TABLE original AS SELECT * FROM audit_event WHERE id IN ({a}, {b});
             UPDATE audit_event SET ({columns}) = (SELECT {columns} FROM original WHERE id = {b})
              WHERE id = {a};
             UPDATE audit_event SET ({columns}) = (SELECT {columns} FROM original WHERE id = {a})
              WHERE id = {b};"
        )
    };
    // Whole rows, hashes included: the earlier one no longer follows the entry before it.
    let reordered = tampered("reordered", &swap(&format!("{CONTENT}, prev_hash, hash")));
    names_entry(&reordered, a, "reordered rows");
    // Only the contents, the hashes left in place: the earlier one no longer matches its hash.
    let swapped = tampered("swapped", &swap(CONTENT));
    names_entry(&swapped, a, "swapped contents");
    assert!(swapped.1.contains("altered"), "{}", swapped.1);

    // The original is still intact.
    assert_audit_intact(&data);
}

/// Eight clients viewing patients and threads at once for a few seconds: every view succeeds
/// and is logged once, and the chain verifies with no fork (one entry after each entry).
#[test]
fn concurrent_activity_leaves_one_unforked_chain() {
    let server = Server::start(Options::demo());
    let data = server.data.clone();
    let lee_id = staff_id(&data, "dr.lee@demo.test");
    let mut alex = signed_in_portal(&server, "alex@demo.test");
    let alex_thread = thread_of(&portal_new(
        &mut alex,
        &lee_id,
        "Concurrent views",
        "A thread for concurrent views.",
        None,
    ));
    let mut lee = signed_in_staff(&server, "dr.lee@demo.test");
    let patient_pages: Vec<String> = query(&data, "SELECT id FROM patient ORDER BY id", &[])
        .into_iter()
        .map(|r| format!("/practice/patients/{}", r[0]))
        .filter(|page| lee.get(page).status == 200)
        .collect();
    let staff_threads: Vec<String> = query(&data, "SELECT id FROM thread ORDER BY id", &[])
        .into_iter()
        .map(|r| format!("/practice/messages/{}", r[0]))
        .filter(|page| lee.get(page).status == 200)
        .collect();
    let alex_patient = scalar(
        &data,
        "SELECT id FROM patient WHERE first_name = 'Alex'",
        &[],
    );
    let portal_threads: Vec<String> = query(
        &data,
        "SELECT id FROM thread WHERE patient_id = ? ORDER BY id",
        &[&alex_patient],
    )
    .into_iter()
    .map(|r| format!("/portal/messages/{}", r[0]))
    .filter(|page| alex.get(page).status == 200)
    .collect();
    assert!(!patient_pages.is_empty() && !staff_threads.is_empty());
    assert!(portal_threads.contains(&format!("/portal/messages/{alex_thread}")));

    let mut clients: Vec<(Client, Vec<String>)> = Vec::new();
    for i in 0..8 {
        if i % 2 == 0 {
            let email = if i % 4 == 0 {
                "dr.lee@demo.test"
            } else {
                "np.kim@demo.test"
            };
            let pages: Vec<String> = patient_pages
                .iter()
                .chain(&staff_threads)
                .cloned()
                .collect();
            clients.push((signed_in_staff(&server, email), pages));
        } else {
            clients.push((
                signed_in_portal(&server, "alex@demo.test"),
                portal_threads.clone(),
            ));
        }
    }
    // Kim (NP) may not open every thread Lee can: keep the pages each client is given.
    for (client, pages) in clients.iter_mut() {
        pages.retain(|page| client.get(page).status == 200);
        assert!(!pages.is_empty());
    }
    let views = "SELECT count(*) FROM audit_event WHERE action IN ('patient.view', 'thread.view')";
    let views_before = number(&data, views, &[]);
    let rows_before = number(&data, "SELECT count(*) FROM audit_event", &[]);

    let deadline = Instant::now() + Duration::from_secs(3);
    let results: Vec<(usize, Vec<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .into_iter()
            .map(|(mut client, pages)| {
                s.spawn(move || {
                    let (mut ok, mut failed) = (0, Vec::new());
                    let mut i = 0;
                    while Instant::now() < deadline {
                        let page = &pages[i % pages.len()];
                        let r = client.get(page);
                        if r.status == 200 {
                            ok += 1;
                        } else {
                            failed.push(format!(
                                "{page}: {} {}",
                                r.status,
                                r.body.chars().take(300).collect::<String>()
                            ));
                        }
                        i += 1;
                    }
                    (ok, failed)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok: usize = results.iter().map(|(n, _)| n).sum();
    let failed: Vec<&String> = results.iter().flat_map(|(_, f)| f).collect();
    assert!(
        failed.is_empty(),
        "{} of {} views failed, e.g. {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok >= 80, "only {ok} views in three seconds");
    assert_eq!(
        number(&data, views, &[]) - views_before,
        ok as i64,
        "one audit entry per view"
    );
    let rows = number(&data, "SELECT count(*) FROM audit_event", &[]);
    assert!(rows >= rows_before + ok as i64);
    assert_eq!(
        number(
            &data,
            "SELECT count(DISTINCT prev_hash) FROM audit_event",
            &[]
        ),
        rows,
        "a fork: two entries after the same one"
    );
    assert_eq!(
        number(&data, "SELECT count(DISTINCT hash) FROM audit_event", &[]),
        rows
    );
    let out = assert_audit_intact(&data);
    assert!(out.contains(&format!("{rows} entries")), "{rows}: {out}");
}

// ---------------------------------------------------------------------------------------------
// 2. A backup while messages arrive

struct Sent {
    body: String,
    file_name: String,
    bytes: Vec<u8>,
    acknowledged: Instant,
}

/// `carepost backup` while four clients keep sending messages with small PDFs (new portal
/// messages, portal replies, staff replies): every message acknowledged before the backup
/// started is in it; restored into an empty folder it passes `verify`, `audit verify` and
/// SQLite's integrity check, and a server on it serves each of those files byte for byte.
#[test]
fn backup_while_messages_arrive_keeps_every_acknowledged_message() {
    let dir = TempDir::new("backup");
    let data = dir.path().join("data");
    let server = Server::start_in(&data, Options::demo());
    let lee_id = staff_id(&data, "dr.lee@demo.test");
    let mut alex = signed_in_portal(&server, "alex@demo.test");
    let shared = thread_of(&portal_new(
        &mut alex,
        &lee_id,
        "Backup replies",
        "The thread both sides reply to during the backup.",
        None,
    ));
    let dest = dir.path().join("backup");
    let sent: Mutex<Vec<Sent>> = Mutex::new(Vec::new());
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);

    let (started, finished, (code, out)) = std::thread::scope(|s| {
        for writer in 0..4usize {
            let (server, lee_id, sent, failures, stop) =
                (&server, &lee_id, &sent, &failures, &stop);
            s.spawn(move || {
                let mut client = if writer == 3 {
                    signed_in_staff(server, "dr.lee@demo.test")
                } else {
                    signed_in_portal(server, "alex@demo.test")
                };
                let mut n = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let body = format!("Backup check: writer {writer}, message {n}.");
                    let file_name = format!("w{writer}-n{n}.pdf");
                    let bytes = pdf_of(&body, 1500 + (writer * 997 + n * 131) % 12_000);
                    let file = Some((file_name.as_str(), bytes.as_slice()));
                    let raw = match writer {
                        0 | 1 => portal_new(
                            &mut client,
                            lee_id,
                            &format!("Backup w{writer} n{n}"),
                            &body,
                            file,
                        ),
                        2 => portal_reply(&mut client, shared, &body, file),
                        _ => staff_reply(&mut client, shared, &body, file),
                    };
                    let acknowledged = Instant::now();
                    if raw.status == 303 {
                        sent.lock().unwrap().push(Sent {
                            body,
                            file_name,
                            bytes,
                            acknowledged,
                        });
                    } else {
                        failures.lock().unwrap().push(format!(
                            "writer {writer} message {n}: {} {}",
                            raw.status,
                            raw.text().chars().take(300).collect::<String>()
                        ));
                    }
                    n += 1;
                }
            });
        }
        std::thread::sleep(Duration::from_millis(1500));
        let started = Instant::now();
        let result = carepost(&["backup", p(&dest), "--data", p(&data)]);
        let finished = Instant::now();
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::SeqCst);
        (started, finished, result)
    });
    assert_eq!(
        code,
        0,
        "backup failed:\n{out}\nserver log:\n{}",
        server.log()
    );
    assert!(out.contains("Backup written"), "{out}");
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "sends failed: {failures:?}");
    let sent = sent.into_inner().unwrap();
    let before: Vec<&Sent> = sent.iter().filter(|m| m.acknowledged < started).collect();
    let after = sent.iter().filter(|m| m.acknowledged > finished).count();
    assert!(
        before.len() >= 8 && after > 0,
        "the backup ran among the writes: {} before, {after} after",
        before.len()
    );

    // The backup itself is consistent.
    assert_verify_clean(&dest);
    assert_audit_intact(&dest);
    assert_eq!(scalar(&dest, "PRAGMA integrity_check", &[]), "ok");

    // Restored into an empty folder.
    let restored = dir.path().join("restored");
    let (code, out) = carepost(&["restore", p(&dest), "--data", p(&restored)]);
    assert_eq!(code, 0, "restore failed:\n{out}");
    assert!(out.contains("Restored"), "{out}");
    assert_verify_clean(&restored);
    assert_audit_intact(&restored);
    assert_eq!(scalar(&restored, "PRAGMA integrity_check", &[]), "ok");
    // Every message of the writers in the restored database, by body, read at once.
    let restored_messages: HashMap<String, (i64, i64, String)> = query(
        &restored,
        "SELECT m.body, m.thread_id, a.id, a.file_name
           FROM message m JOIN attachment a ON a.message_id = m.id
          WHERE m.body LIKE 'Backup check:%'",
        &[],
    )
    .into_iter()
    .map(|r| {
        (
            r[0].clone(),
            (r[1].parse().unwrap(), r[2].parse().unwrap(), r[3].clone()),
        )
    })
    .collect();
    let missing: Vec<&str> = before
        .iter()
        .filter(|m| !restored_messages.contains_key(&m.body))
        .map(|m| m.body.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages are not in the backup: {missing:?}",
        missing.len(),
        before.len()
    );

    // A server on the restored folder serves every one of those files.
    let second = Server::start_in(&restored, Options::default());
    let mut reader = signed_in_portal(&second, "alex@demo.test");
    for m in &before {
        let (thread, attachment, file_name) = &restored_messages[&m.body];
        assert_eq!(*file_name, m.file_name, "{}", m.body);
        let got = exchange(
            &mut reader,
            "GET",
            &format!("/portal/messages/{thread}/files/{attachment}"),
            &[],
            b"",
        );
        assert_eq!(got.status, 200, "{}: {}", m.body, got.text());
        assert!(
            got.body == m.bytes,
            "{}: the restored file differs ({} bytes, sent {})",
            m.body,
            got.body.len(),
            m.bytes.len()
        );
    }
    drop(server);
}

// ---------------------------------------------------------------------------------------------
// 3. Refusals

/// A backup into a folder that holds anything is refused and writes nothing there; a backup
/// of a folder without a database is refused before creating its destination.
#[test]
fn backup_refuses_a_used_destination_and_writes_nothing() {
    let dir = TempDir::new("backup-refused");
    let data = dir.path().join("data");
    let server = Server::start_in(&data, Options::demo());
    let dest = dir.path().join("used");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(dest.join("notes.txt"), "keep me\n").unwrap();
    let before = tree(&dest);
    let (code, out) = carepost(&["backup", p(&dest), "--data", p(&data)]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("not empty"), "{out}");
    assert_eq!(
        tree(&dest),
        before,
        "the refused backup wrote into {dest:?}"
    );
    assert_eq!(names(&dest), ["notes.txt"]);

    // An empty existing folder is fine.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (code, out) = carepost(&["backup", p(&empty), "--data", p(&data)]);
    assert_eq!(code, 0, "{out}");
    assert_verify_clean(&empty);

    // Nothing to back up.
    let nothing = dir.path().join("nothing");
    std::fs::create_dir_all(&nothing).unwrap();
    let never = dir.path().join("never");
    let (code, out) = carepost(&["backup", p(&never), "--data", p(&nothing)]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("no Carepost database"), "{out}");
    assert!(!never.exists(), "the refused backup created {never:?}");
    assert!(names(&nothing).is_empty(), "{:?}", names(&nothing));
    drop(server);
}

/// Over a used folder: refused without --force (nothing changed), refused with --force while a
/// server holds the folder (nothing changed, the server keeps working), and with --force and no
/// server the folder holds exactly the backup: later messages and their files are gone.
#[test]
fn restore_over_a_used_folder_needs_force_and_no_running_server() {
    let dir = TempDir::new("restore-force");
    let data = dir.path().join("data");
    let mut server = Server::start_in(&data, Options::demo());
    let lee_id = staff_id(&data, "dr.lee@demo.test");
    let mut alex = signed_in_portal(&server, "alex@demo.test");
    let kept = pdf_of("kept by the backup", 7000);
    thread_of(&portal_new(
        &mut alex,
        &lee_id,
        "Kept",
        "Restore check: in the backup.",
        Some(("kept.pdf", &kept)),
    ));
    let backup = dir.path().join("backup");
    let (code, out) = carepost(&["backup", p(&backup), "--data", p(&data)]);
    assert_eq!(code, 0, "{out}");
    let lost = pdf_of("sent after the backup", 9000);
    thread_of(&portal_new(
        &mut alex,
        &lee_id,
        "Lost",
        "Restore check: after the backup.",
        Some(("lost.pdf", &lost)),
    ));
    let (_, _, _, lost_sha) = message_with_body(&data, "Restore check: after the backup.").unwrap();
    let lost_blob = blob_path(&data, &lost_sha);
    assert!(lost_blob.is_file());
    let backup_tree = tree(&backup);

    // While the server runs, even --force is refused, and nothing changes.
    let (code, out) = carepost(&["restore", p(&backup), "--data", p(&data), "--force"]);
    assert_ne!(code, 0, "restore --force ran under a live server:\n{out}");
    assert!(out.contains("Another Carepost"), "{out}");
    assert!(message_with_body(&data, "Restore check: after the backup.").is_some());
    assert!(lost_blob.is_file());
    assert_verify_clean(&data);
    alex.get("/portal/messages").assert_status(200);
    let mut reader = server.client();
    assert_eq!(
        reader.login_portal("alex@demo.test", DEMO_PASSWORD).status,
        303
    );

    // Without --force: refused, not a byte changed.
    server.terminate();
    let before = tree(&data);
    let (code, out) = carepost(&["restore", p(&backup), "--data", p(&data)]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("not empty") && out.contains("--force"),
        "{out}"
    );
    assert!(
        tree(&data) == before,
        "the refused restore changed {data:?}"
    );

    // With --force and no server: the folder holds the backup.
    let (code, out) = carepost(&["restore", p(&backup), "--data", p(&data), "--force"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Restored"), "{out}");
    assert!(message_with_body(&data, "Restore check: after the backup.").is_none());
    assert!(
        !lost_blob.exists(),
        "a file of a later message was left behind"
    );
    let (thread, attachment, _, _) =
        message_with_body(&data, "Restore check: in the backup.").unwrap();
    assert_verify_clean(&data);
    assert_audit_intact(&data);
    assert_eq!(scalar(&data, "PRAGMA integrity_check", &[]), "ok");
    assert!(tree(&backup) == backup_tree, "restore changed the backup");
    let second = Server::start_in(&data, Options::default());
    let mut alex = signed_in_portal(&second, "alex@demo.test");
    let got = exchange(
        &mut alex,
        "GET",
        &format!("/portal/messages/{thread}/files/{attachment}"),
        &[],
        b"",
    );
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(got.body == kept);
}

/// A source that is not a backup (missing, an empty folder, a carepost.db that is not a
/// database) is refused with a message saying so, and the target is not created or touched.
#[test]
fn restore_refuses_a_folder_that_is_not_a_backup() {
    let dir = TempDir::new("not-a-backup");
    let target = dir.path().join("target");
    let garbage = dir.path().join("garbage");
    std::fs::create_dir_all(&garbage).unwrap();
    let junk: Vec<u8> = b"These are notes, not a Carepost database.\n"
        .iter()
        .copied()
        .cycle()
        .take(8192)
        .collect();
    std::fs::write(garbage.join("carepost.db"), &junk).unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let missing = dir.path().join("missing");
    for (what, src) in [
        ("garbage", &garbage),
        ("empty", &empty),
        ("missing", &missing),
    ] {
        let (code, out) = carepost(&["restore", p(src), "--data", p(&target)]);
        assert_ne!(code, 0, "{what}: restored:\n{out}");
        assert!(out.contains("not a usable backup"), "{what}: {out}");
        assert!(
            !target.exists(),
            "{what}: the refused restore created the target"
        );
    }
    assert_eq!(std::fs::read(garbage.join("carepost.db")).unwrap(), junk);

    // Over a used folder, even with --force, a bad source changes nothing.
    let used = dir.path().join("used");
    let mut server = Server::start_in(&used, Options::demo());
    server.terminate();
    let before = tree(&used);
    let (code, out) = carepost(&["restore", p(&garbage), "--data", p(&used), "--force"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("not a usable backup"), "{out}");
    assert!(tree(&used) == before, "a refused restore changed {used:?}");
}

/// Checking a would-be backup only reads it: restoring from an empty folder (a wrong path)
/// must not leave a new, empty carepost.db in that folder.
#[test]
fn restore_from_an_empty_folder_leaves_it_empty() {
    let dir = TempDir::new("empty-source");
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (code, out) = carepost(&["restore", p(&empty), "--data", p(&dir.path().join("t"))]);
    assert_ne!(code, 0, "{out}");
    assert!(
        names(&empty).is_empty(),
        "the refused restore wrote into its source: {:?} ({out})",
        names(&empty)
    );
}

/// A data folder whose database is damaged is what a backup is for: `restore --force` replaces
/// it (no server can be using a folder whose database it cannot open).
#[test]
fn restore_force_replaces_a_damaged_database() {
    let dir = TempDir::new("damaged");
    let data = dir.path().join("data");
    let mut server = Server::start_in(&data, Options::demo());
    let backup = dir.path().join("backup");
    let (code, out) = carepost(&["backup", p(&backup), "--data", p(&data)]);
    assert_eq!(code, 0, "{out}");
    server.terminate();
    for name in ["carepost.db-wal", "carepost.db-shm"] {
        let _ = std::fs::remove_file(data.join(name));
    }
    std::fs::write(data.join("carepost.db"), vec![0x5Au8; 16_384]).unwrap();
    let (code, out) = carepost(&["restore", p(&backup), "--data", p(&data), "--force"]);
    assert_eq!(
        code, 0,
        "restore --force over a damaged database was refused:\n{out}"
    );
    assert_verify_clean(&data);
    assert_eq!(scalar(&data, "PRAGMA integrity_check", &[]), "ok");
}

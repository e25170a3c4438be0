//! Attachments, end to end against the real binary (PRODUCT.md rule 5): one file per message, at
//! most 25 MB, one of 14 formats, refused with a message naming them while the rest of the form
//! is kept; the content-addressed store under `blobs/sha256/`, its temporary files under
//! `blobs/tmp/`, downloads (headers, byte ranges, who may fetch what), filing to the chart,
//! `carepost verify`, the audit log, and a benchmark of a 25 MB upload.
//!
//! Multipart bodies are built here by hand and sent over raw sockets, so that a body can be cut
//! short, dropped, or stalled. The database is read with python3's sqlite3 module.

use crate::harness::*;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The allowed formats as every refusal must name them.
const ALLOWED_TEXT: &str = "a document (PDF, TXT or XML), a picture (JPG, PNG or GIF), a sound recording (MP3, M4A, WAV, WMA or AIFF) or a video (MP4 or MOV)";
/// 25 MB, as the article counts it.
const MAX: usize = 26_214_400;
const CATEGORIES: &[&str] = &["Lab result", "Imaging", "Letter", "Other"];

// ---------------------------------------------------------------------------------------------
// Sample files, one of every allowed type, small but with real signatures

fn sample(ext: &str) -> Vec<u8> {
    // Every byte value, so that CR, LF, NUL and "--" inside a file are carried exactly.
    let all: Vec<u8> = (0..=255u8).collect();
    let with = |head: &[u8]| {
        let mut v = head.to_vec();
        v.extend_from_slice(&all);
        v.extend_from_slice(format!("\r\n--sample {ext}--\r\n").as_bytes());
        v
    };
    match ext {
        "xml" => b"<?xml version=\"1.0\"?><a/>\n<!-- sample xml -->\n".to_vec(),
        "txt" => "Blood sugar log \u{2713}\r\nd\u{ed}a 1: 5.4 mmol/L\n--sample txt--\n"
            .as_bytes()
            .to_vec(),
        "gif" => with(b"GIF89a\x01\x00\x01\x00\x80\x00\x00"),
        "jpg" => with(b"\xFF\xD8\xFF\xE0\x00\x10JFIF\x00\x01\x01\x00jpg"),
        "jpeg" => with(b"\xFF\xD8\xFF\xE0\x00\x10JFIF\x00\x01\x01\x00jpeg"),
        "png" => with(b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"),
        "pdf" => with(b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n1 0 obj<<>>endobj\n"),
        "m4a" => with(b"\x00\x00\x00\x18ftypM4A \x00\x00\x00\x00M4A isom"),
        "mp4" => with(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"),
        "mov" => with(b"\x00\x00\x00\x14ftypqt  \x20\x05\x03\x00qt  "),
        "wav" => with(b"RIFF\x24\x08\x00\x00WAVEfmt \x10\x00\x00\x00"),
        "mp3" => with(b"ID3\x03\x00\x00\x00\x00\x00\x00\xFF\xFB\x90\x00"),
        "wma" => with(&[
            0x30, 0x26, 0xB2, 0x75, 0x8E, 0x66, 0xCF, 0x11, 0xA6, 0xD9, 0x00, 0xAA, 0x00, 0x62,
            0xCE, 0x6C, 0x01, 0x02,
        ]),
        "aiff" => with(b"FORM\x00\x00\x08\x00AIFFCOMM\x00\x00\x00\x12"),
        other => panic!("no sample for {other}"),
    }
}

/// (extension, media type served) for every allowed format.
const TYPES: &[(&str, &str)] = &[
    ("xml", "application/xml"),
    ("txt", "text/plain; charset=utf-8"),
    ("gif", "image/gif"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("png", "image/png"),
    ("pdf", "application/pdf"),
    ("m4a", "audio/mp4"),
    ("wav", "audio/wav"),
    ("mp3", "audio/mpeg"),
    ("wma", "audio/x-ms-wma"),
    ("aiff", "audio/aiff"),
    ("mp4", "video/mp4"),
    ("mov", "video/quicktime"),
];

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

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP with binary bodies

/// The request head a browser with this client's cookies would send.
fn head(
    client: &Client,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    length: usize,
) -> Vec<u8> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {length}\r\n",
        client.addr
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !client.cookies.is_empty() {
        let cookie: Vec<String> = client
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        head.push_str(&format!("Cookie: {}\r\n", cookie.join("; ")));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

fn keep_cookies(client: &mut Client, raw: &Raw) {
    for (k, value) in &raw.headers {
        if !k.eq_ignore_ascii_case("Set-Cookie") {
            continue;
        }
        let pair = value.split(';').next().unwrap_or("");
        if let Some((k, v)) = pair.split_once('=') {
            if v.is_empty() || value.contains("Max-Age=0") {
                client.cookies.remove(k.trim());
            } else {
                client.cookies.insert(k.trim().to_owned(), v.to_owned());
            }
        }
    }
}

/// Sends a request and reads the whole response. The body is written by a second thread, so
/// that a server answering before it has read everything is still heard.
fn exchange(
    client: &mut Client,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Raw {
    let head = head(client, method, path, headers, body.len());
    let mut stream = TcpStream::connect(client.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let raw = std::thread::scope(|s| {
        s.spawn(move || {
            let _ = writer.write_all(&head);
            let _ = writer.write_all(body);
        });
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        raw
    });
    let raw = parse_raw(&raw);
    keep_cookies(client, &raw);
    raw
}

fn download(client: &mut Client, path: &str, headers: &[(&str, &str)]) -> Raw {
    exchange(client, "GET", path, headers, b"")
}

// ---------------------------------------------------------------------------------------------
// multipart/form-data, built by hand

struct Multipart {
    boundary: String,
    body: Vec<u8>,
}

impl Multipart {
    fn new() -> Multipart {
        Multipart {
            boundary: "----CarepostTestBoundary7d1f0a9c3b2e4f56".into(),
            body: Vec::new(),
        }
    }

    fn text(mut self, name: &str, value: &str) -> Multipart {
        self.body.extend_from_slice(
            format!(
                "--{}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n",
                self.boundary
            )
            .as_bytes(),
        );
        self
    }

    /// A file part as a browser sends it (the name as typed, raw UTF-8).
    fn file(mut self, name: &str, filename: &str, bytes: &[u8]) -> Multipart {
        self.body.extend_from_slice(
            format!(
                "--{}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n",
                self.boundary
            )
            .as_bytes(),
        );
        self.body.extend_from_slice(bytes);
        self.body.extend_from_slice(b"\r\n");
        self
    }

    /// The content type and the finished body.
    fn finish(mut self) -> (String, Vec<u8>) {
        self.body
            .extend_from_slice(format!("--{}--\r\n", self.boundary).as_bytes());
        (
            format!("multipart/form-data; boundary={}", self.boundary),
            self.body,
        )
    }
}

fn post_multipart(client: &mut Client, action: &str, form: Multipart) -> Raw {
    let (content_type, body) = form.finish();
    exchange(
        client,
        "POST",
        action,
        &[("Content-Type", &content_type)],
        &body,
    )
}

/// What the file field carries: a named file, or nothing chosen (an empty part, as browsers
/// send it).
#[derive(Clone, Copy)]
enum Attach<'a> {
    File(&'a str, &'a [u8]),
    Nothing,
}

/// The CSRF token and the idempotency key of a message form page.
fn form_tokens(client: &mut Client, page: &str) -> (String, String) {
    let response = client.get(page);
    assert_eq!(response.status, 200, "form page {page}:\n{}", response.body);
    let marker = "name=\"key\" value=\"";
    let start = response
        .body
        .find(marker)
        .unwrap_or_else(|| panic!("no idempotency key on {page}:\n{}", response.body))
        + marker.len();
    let key = response.body[start..].split('"').next().unwrap().to_owned();
    assert_eq!(key.len(), 64, "key {key:?}");
    (response.csrf(), key)
}

/// Fills the message form of `page` and posts it to `action`: csrf, key, the fields, and the
/// file part last, as the page orders them.
fn send_form(
    client: &mut Client,
    page: &str,
    action: &str,
    fields: &[(&str, &str)],
    file: Attach,
) -> Raw {
    let (csrf, key) = form_tokens(client, page);
    let mut form = Multipart::new().text("csrf", &csrf).text("key", &key);
    for (k, v) in fields {
        form = form.text(k, v);
    }
    form = match file {
        Attach::File(name, bytes) => form.file("file", name, bytes),
        Attach::Nothing => form.file("file", "", b""),
    };
    post_multipart(client, action, form)
}

/// Alex (or a caregiver) writes a new message to Dr. Lee.
fn portal_new(
    server: &Server,
    client: &mut Client,
    subject: &str,
    body: &str,
    file: Attach,
) -> Raw {
    let lee = staff_id(server, "dr.lee@demo.test");
    send_form(
        client,
        "/portal/messages/new",
        "/portal/messages/new",
        &[
            ("recipient", &lee),
            ("subject", subject),
            ("body", body),
            ("link", ""),
        ],
        file,
    )
}

fn portal_reply(client: &mut Client, thread: i64, body: &str, file: Attach) -> Raw {
    send_form(
        client,
        &format!("/portal/messages/{thread}"),
        &format!("/portal/messages/{thread}/reply"),
        &[("body", body), ("link", "")],
        file,
    )
}

fn staff_reply(client: &mut Client, thread: i64, body: &str, file: Attach) -> Raw {
    send_form(
        client,
        &format!("/practice/messages/{thread}"),
        &format!("/practice/messages/{thread}/reply"),
        &[("body", body), ("link", "")],
        file,
    )
}

fn staff_new(client: &mut Client, patient: &str, subject: &str, body: &str, file: Attach) -> Raw {
    send_form(
        client,
        &format!("/practice/messages/new?patient={patient}"),
        "/practice/messages/new",
        &[
            ("patient", patient),
            ("subject", subject),
            ("body", body),
            ("link", ""),
        ],
        file,
    )
}

/// The thread a successful send redirected to.
#[track_caller]
fn thread_of(raw: &Raw) -> i64 {
    assert_eq!(
        raw.status,
        303,
        "expected the message to be sent; got:\n{}",
        String::from_utf8_lossy(&raw.body)
    );
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

fn signed_in_portal(server: &Server, email: &str) -> Client {
    let mut client = server.client();
    let r = client.login_portal(email, DEMO_PASSWORD);
    assert_eq!((r.status, r.location()), (303, "/portal"), "{}", r.body);
    client
}

fn signed_in_staff(server: &Server, email: &str) -> Client {
    let mut client = server.client();
    let r = client.login_staff(email, DEMO_PASSWORD);
    assert_eq!((r.status, r.location()), (303, "/practice"), "{}", r.body);
    client
}

// ---------------------------------------------------------------------------------------------
// Pages

/// The text of the error shown beside a form field.
fn error_beside(page: &Response, field: &str) -> Option<String> {
    let marker = format!("id=\"{field}-error\">");
    let start = page.body.find(&marker)? + marker.len();
    Some(page.body[start..].split('<').next().unwrap().to_owned())
}

fn input_value(page: &Response, name: &str) -> Option<String> {
    let start = page.body.find(&format!("<input id=\"{name}\""))?;
    let tag = page.body[start..].split('>').next().unwrap();
    let marker = " value=\"";
    let v = tag.find(marker)? + marker.len();
    Some(tag[v..].split('"').next().unwrap().to_owned())
}

fn textarea(page: &Response, name: &str) -> Option<String> {
    let start = page.body.find(&format!("<textarea id=\"{name}\""))?;
    let rest = &page.body[start..];
    let open = rest.find('>')? + 1;
    Some(rest[open..].split("</textarea>").next().unwrap().to_owned())
}

fn selected_recipient(page: &Response) -> Option<String> {
    let start = page.body.find("<select id=\"recipient\"")?;
    let options = page.body[start..].split("</select>").next().unwrap();
    options
        .split("<option")
        .skip(1)
        .map(|o| o.split('>').next().unwrap())
        .find(|tag| tag.contains(" selected"))
        .and_then(|tag| tag.split("value=\"").nth(1))
        .map(|v| v.split('"').next().unwrap().to_owned())
}

// ---------------------------------------------------------------------------------------------
// The database (python3's sqlite3) and the store on disk

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

fn patient_id(server: &Server, first: &str) -> String {
    scalar(
        server,
        "SELECT id FROM patient WHERE first_name = ?",
        &[first],
    )
}

fn thread_by_subject(server: &Server, subject: &str) -> i64 {
    scalar(
        server,
        "SELECT id FROM thread WHERE subject = ?",
        &[subject],
    )
    .parse()
    .unwrap()
}

/// An attachment row.
#[derive(Debug)]
struct Row {
    id: i64,
    sha256: String,
    size: u64,
    media_type: String,
    file_name: String,
}

fn attachments_of(server: &Server, thread: i64) -> Vec<Row> {
    query(
        server,
        "SELECT a.id, a.sha256, a.size, a.media_type, a.file_name
           FROM attachment a JOIN message m ON m.id = a.message_id
          WHERE m.thread_id = ? ORDER BY a.id",
        &[&thread.to_string()],
    )
    .into_iter()
    .map(|r| Row {
        id: r[0].parse().unwrap(),
        sha256: r[1].clone(),
        size: r[2].parse().unwrap(),
        media_type: r[3].clone(),
        file_name: r[4].clone(),
    })
    .collect()
}

#[track_caller]
fn last_attachment(server: &Server, thread: i64) -> Row {
    attachments_of(server, thread)
        .pop()
        .unwrap_or_else(|| panic!("thread {thread} has no attachment"))
}

fn count(server: &Server, table: &str) -> usize {
    scalar(server, &format!("SELECT count(*) FROM {table}"), &[])
        .parse()
        .unwrap()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found.sort();
    found
}

fn blobs(server: &Server) -> Vec<PathBuf> {
    files_under(&server.data.join("blobs/sha256"))
}

fn temp_files(server: &Server) -> Vec<PathBuf> {
    files_under(&server.data.join("blobs/tmp"))
}

fn blob_path(server: &Server, sha256: &str) -> PathBuf {
    server
        .data
        .join("blobs/sha256")
        .join(&sha256[..2])
        .join(&sha256[2..])
}

/// Waits up to five seconds for `blobs/tmp` to be empty; returns what is left.
fn temp_left_after_waiting(server: &Server) -> Vec<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = temp_files(server);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What an upload may change: the store, messages, attachments, threads.
#[derive(Debug, PartialEq)]
struct Snapshot {
    blobs: Vec<PathBuf>,
    messages: usize,
    threads: usize,
    attachments: usize,
}

fn snapshot(server: &Server) -> Snapshot {
    Snapshot {
        blobs: blobs(server),
        messages: count(server, "message"),
        threads: count(server, "thread"),
        attachments: count(server, "attachment"),
    }
}

/// Problems if a refused upload left anything behind (after giving the server a moment).
fn left_behind(server: &Server, before: &Snapshot) -> Vec<String> {
    let mut problems = Vec::new();
    let temp = temp_left_after_waiting(server);
    if !temp.is_empty() {
        problems.push(format!("temporary files left: {temp:?}"));
    }
    let after = snapshot(server);
    if after != *before {
        problems.push(format!("changed: before {before:?}, after {after:?}"));
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// Accepted files

/// Every allowed type, in lower and upper case, from the patient: stored once under its hash,
/// recorded with size, type and name, shown in the thread, and served byte for byte to the
/// patient and to staff with download-only headers. The same file sent twice is kept once.
/// Uploads and downloads are audited with the patient.
#[test]
fn every_allowed_type_is_stored_once_and_served_to_patient_and_staff() {
    let server = Server::start(Options::demo());
    let mut alex = signed_in_portal(&server, "alex@demo.test");
    let mut lee = signed_in_staff(&server, "dr.lee@demo.test");
    let alex_id = patient_id(&server, "Alex");
    let mut cases: Vec<(String, Vec<u8>, &str)> = Vec::new();
    for (ext, media) in TYPES {
        cases.push((format!("sample.{ext}"), sample(ext), media));
        let mut upper = sample(ext);
        upper.extend_from_slice(b"\nUPPER CASE NAME\n");
        cases.push((format!("SAMPLE.{}", ext.to_uppercase()), upper, media));
    }
    let blobs_before = blobs(&server).len();
    for (name, bytes, media) in &cases {
        let sent = portal_new(
            &server,
            &mut alex,
            &format!("Sending {name}"),
            "Here is the file.",
            Attach::File(name, bytes),
        );
        let thread = thread_of(&sent);
        let row = last_attachment(&server, thread);
        let sha = sha256_hex(bytes);
        assert_eq!(row.sha256, sha, "{name}: recorded hash");
        assert_eq!(row.size, bytes.len() as u64, "{name}: recorded size");
        assert_eq!(row.media_type, *media, "{name}: recorded media type");
        assert_eq!(row.file_name, *name, "{name}: recorded name");
        // Stored under blobs/sha256/<2>/<62>, byte for byte.
        let path = blob_path(&server, &sha);
        assert_eq!(path.file_name().unwrap().len(), 62);
        assert_eq!(
            std::fs::read(&path).unwrap_or_else(|e| panic!("{name}: {path:?}: {e}")),
            *bytes,
            "{name}: stored bytes"
        );
        // The thread links the file.
        let portal_url = format!("/portal/messages/{thread}/files/{}", row.id);
        let practice_url = format!("/practice/messages/{thread}/files/{}", row.id);
        alex.get(&format!("/portal/messages/{thread}"))
            .assert_status(200)
            .assert_contains(&format!("href=\"{portal_url}\""))
            .assert_contains(name);
        lee.get(&format!("/practice/messages/{thread}"))
            .assert_status(200)
            .assert_contains(&format!("href=\"{practice_url}\""));
        for (who, client, url) in [
            ("patient", &mut alex, &portal_url),
            ("staff", &mut lee, &practice_url),
        ] {
            let got = download(client, url, &[]);
            assert_eq!(
                got.status,
                200,
                "{who} downloads {name}: {:?}",
                got.page().body
            );
            assert!(
                got.body == *bytes,
                "{who} downloads {name}: different bytes ({} vs {})",
                got.body.len(),
                bytes.len()
            );
            assert_eq!(got.header("Content-Type"), Some(*media), "{who}: {name}");
            let disposition = got.header("Content-Disposition").unwrap_or("");
            assert!(
                disposition.starts_with(&format!("attachment; filename=\"{name}\"")),
                "{who}: {name}: Content-Disposition {disposition:?}"
            );
            assert_eq!(
                got.header("X-Content-Type-Options"),
                Some("nosniff"),
                "{who}: {name}"
            );
            assert_eq!(
                got.header("Cache-Control"),
                Some("no-store"),
                "{who}: {name}"
            );
        }
    }
    assert_eq!(
        blobs(&server).len() - blobs_before,
        cases.len(),
        "one stored file per distinct upload"
    );
    assert!(temp_files(&server).is_empty(), "{:?}", temp_files(&server));

    // The same file twice: one stored file, two attachment rows.
    let bytes = pdf_of("twice", 50_000);
    let first = thread_of(&portal_new(
        &server,
        &mut alex,
        "First copy",
        "Once.",
        Attach::File("twice.pdf", &bytes),
    ));
    let stored = blobs(&server);
    let second = thread_of(&portal_new(
        &server,
        &mut alex,
        "Second copy",
        "Twice.",
        Attach::File("again.pdf", &bytes),
    ));
    assert_eq!(
        blobs(&server),
        stored,
        "the second copy is not stored again"
    );
    assert!(temp_files(&server).is_empty(), "{:?}", temp_files(&server));
    let sha = sha256_hex(&bytes);
    assert_eq!(
        scalar(
            &server,
            "SELECT count(*) FROM attachment WHERE sha256 = ?",
            &[&sha]
        ),
        "2"
    );
    for (thread, name) in [(first, "twice.pdf"), (second, "again.pdf")] {
        let row = last_attachment(&server, thread);
        assert_eq!(row.file_name, name);
        let got = download(
            &mut alex,
            &format!("/portal/messages/{thread}/files/{}", row.id),
            &[],
        );
        assert_eq!(got.status, 200);
        assert!(got.body == bytes, "{name}: bytes differ");
    }

    // Audit: every upload and download, with the patient.
    let uploads = query(
        &server,
        "SELECT actor_kind, patient_id FROM audit_event WHERE action = 'attachment.upload'",
        &[],
    );
    assert_eq!(uploads.len(), cases.len() + 2, "{uploads:?}");
    assert!(
        uploads.iter().all(|r| r[0] == "portal" && r[1] == alex_id),
        "{uploads:?}"
    );
    let downloads = query(
        &server,
        "SELECT actor_kind, patient_id FROM audit_event WHERE action = 'attachment.download'",
        &[],
    );
    assert_eq!(downloads.len(), 2 * cases.len() + 2, "{downloads:?}");
    assert!(downloads.iter().all(|r| r[1] == alex_id), "{downloads:?}");
    assert_eq!(
        downloads.iter().filter(|r| r[0] == "staff").count(),
        cases.len(),
        "{downloads:?}"
    );
}

/// A path in the file name is never used on disk: nothing is written outside the store, and
/// the name is shown and served as its last part.
#[test]
fn path_in_a_file_name_stays_out_of_the_disk() {
    let server = Server::start(Options::demo());
    let mut alex = signed_in_portal(&server, "alex@demo.test");
    let outside = server.data.parent().unwrap().to_path_buf();
    // Where a name used as a path would have put the files (the server's working folder is
    // this one), with what was there before.
    let cwd = std::env::current_dir().unwrap();
    let places: Vec<PathBuf> = [
        server.data.join("x.pdf"),
        server.data.join("blobs/x.pdf"),
        outside.join("x.pdf"),
        cwd.join("../../x.pdf"),
        cwd.join("../x.pdf"),
        server.data.join("carepost.db.pdf"),
        server.data.join("blobs/carepost.db.pdf"),
        outside.join("carepost.db.pdf"),
        PathBuf::from("/etc/cron.d/evil.txt"),
    ]
    .into();
    let existed: Vec<bool> = places.iter().map(|p| p.exists()).collect();
    let cases = [
        ("../../x.pdf", "x.pdf"),
        ("..\\..\\windows.pdf", "windows.pdf"),
        ("/etc/cron.d/evil.txt", "evil.txt"),
        ("blobs/tmp/../../../carepost.db.pdf", "carepost.db.pdf"),
    ];
    for (i, (raw_name, shown)) in cases.iter().enumerate() {
        let bytes = if shown.ends_with(".txt") {
            b"just text\n".to_vec()
        } else {
            pdf_of(raw_name, 2_000 + i)
        };
        let thread = thread_of(&portal_new(
            &server,
            &mut alex,
            &format!("Name {i}"),
            "See attached.",
            Attach::File(raw_name, &bytes),
        ));
        let row = last_attachment(&server, thread);
        assert_eq!(row.file_name, *shown, "{raw_name}");
        assert_eq!(
            std::fs::read(blob_path(&server, &row.sha256)).unwrap(),
            bytes
        );
        alex.get(&format!("/portal/messages/{thread}"))
            .assert_contains(&format!(">{shown}</a>"))
            .assert_lacks("../");
        let got = download(
            &mut alex,
            &format!("/portal/messages/{thread}/files/{}", row.id),
            &[],
        );
        assert_eq!(got.status, 200);
        assert!(
            got.header("Content-Disposition")
                .unwrap_or("")
                .starts_with(&format!("attachment; filename=\"{shown}\"")),
            "{:?}",
            got.header("Content-Disposition")
        );
    }
    // Nothing appeared where the names point, nor anywhere in or beside the data folder but in
    // the store.
    for (place, existed) in places.iter().zip(existed) {
        assert!(existed || !place.exists(), "a file appeared at {place:?}");
    }
    for path in files_under(&outside) {
        let rel = path
            .strip_prefix(&outside)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let in_store = rel.starts_with("data/blobs/sha256/")
            && rel.len() == "data/blobs/sha256/".len() + 2 + 1 + 62;
        assert!(
            in_store
                || (rel.starts_with("data/carepost.") && !rel.ends_with(".pdf"))
                || rel == "data.clock",
            "unexpected file beside the store: {rel}"
        );
    }
    assert_eq!(blobs(&server).len(), cases.len());

    // A name with non-ASCII letters is kept, and served with a safe ASCII fallback.
    let bytes = pdf_of("accents", 1234);
    let thread = thread_of(&portal_new(
        &server,
        &mut alex,
        "Accents",
        "See attached.",
        Attach::File("r\u{e9}sum\u{e9} final.pdf", &bytes),
    ));
    let row = last_attachment(&server, thread);
    assert_eq!(row.file_name, "r\u{e9}sum\u{e9} final.pdf");
    let got = download(
        &mut alex,
        &format!("/portal/messages/{thread}/files/{}", row.id),
        &[],
    );
    assert_eq!(
        got.header("Content-Disposition"),
        Some("attachment; filename=\"r_sum_ final.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20final.pdf")
    );
    assert!(got.body == bytes);
}

// ---------------------------------------------------------------------------------------------
// Refused files

/// Files that break the rules are refused with a message naming the allowed types; nothing is
/// kept (no temporary file, no stored file, no message, no attachment row) and what was typed
/// is shown again. Checked on the portal's new-message and reply forms and on the practice's
/// reply and new-message forms. An empty file part with no name means "no file chosen".
#[test]
fn refused_files_leave_nothing_and_keep_what_was_typed() {
    let server = Server::start(Options::demo());
    let mut alex = signed_in_portal(&server, "alex@demo.test");
    let lee_id = staff_id(&server, "dr.lee@demo.test");
    let mz: Vec<u8> = [
        b"MZ\x90\x00\x03\x00\x00\x00\x04\x00".as_slice(),
        &[0u8; 200],
        b"This program cannot be run in DOS mode.",
    ]
    .concat();
    let pdf = pdf_of("refused", 5_000);
    // (what, file name, content, whether the message must name the allowed types)
    let cases: Vec<(&str, &str, Vec<u8>, bool)> = vec![
        (
            "an executable renamed .pdf",
            "invoice.pdf",
            mz.clone(),
            true,
        ),
        (
            "an executable renamed .PDF",
            "INVOICE.PDF",
            mz.clone(),
            true,
        ),
        (
            "an SVG",
            "drawing.svg",
            b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>".to_vec(),
            true,
        ),
        (
            "a .txt that is not UTF-8",
            "notes.txt",
            b"caf\xe9 au lait, 3 fois par jour\n".to_vec(),
            true,
        ),
        (
            "a .txt holding a NUL byte",
            "log.txt",
            b"line one\n\0line two\n".to_vec(),
            true,
        ),
        ("an empty file name with content", "", pdf.clone(), true),
        (
            "a name with no file name left after cleaning",
            "../",
            pdf.clone(),
            true,
        ),
        ("an .exe", "setup.exe", mz.clone(), true),
        ("a double extension", "scan.pdf.exe", mz.clone(), true),
        (
            "a name without extension",
            "README",
            b"plain words\n".to_vec(),
            true,
        ),
        (
            "an HTML page",
            "page.html",
            b"<html><script>alert(1)</script></html>".to_vec(),
            true,
        ),
        ("a JPEG named .png", "photo.png", sample("jpg"), true),
        (
            "text named .xml",
            "data.xml",
            b"hello, not xml\n".to_vec(),
            true,
        ),
        ("a PDF named .mp4", "movie.mp4", pdf.clone(), true),
        ("an empty file", "empty.pdf", Vec::new(), false),
    ];
    let mut problems: Vec<String> = Vec::new();
    for (i, (what, name, bytes, names_types)) in cases.iter().enumerate() {
        let before = snapshot(&server);
        let subject = format!("Refused case {i}");
        let body = format!("Please keep what I typed, case {i}.");
        let link = format!("https://example.org/case-{i}");
        let (csrf, key) = form_tokens(&mut alex, "/portal/messages/new");
        let form = Multipart::new()
            .text("csrf", &csrf)
            .text("key", &key)
            .text("recipient", &lee_id)
            .text("subject", &subject)
            .text("body", &body)
            .text("link", &link)
            .file("file", name, bytes);
        let raw = post_multipart(&mut alex, "/portal/messages/new", form);
        let page = raw.page();
        let mut problem = |p: String| problems.push(format!("{what} ({name:?}): {p}"));
        if raw.status != 400 {
            problem(format!(
                "answered {} (location {:?}), not 400",
                raw.status,
                raw.location()
            ));
        } else {
            match error_beside(&page, "file") {
                None => problem("no message beside the file field".into()),
                Some(message) if *names_types && !message.contains(ALLOWED_TEXT) => problem(
                    format!("message does not name the allowed types: {message:?}"),
                ),
                Some(_) => {}
            }
            if input_value(&page, "subject").as_deref() != Some(subject.as_str()) {
                problem(format!(
                    "subject not kept: {:?}",
                    input_value(&page, "subject")
                ));
            }
            if textarea(&page, "body").as_deref() != Some(body.as_str()) {
                problem(format!("body not kept: {:?}", textarea(&page, "body")));
            }
            if input_value(&page, "link").as_deref() != Some(link.as_str()) {
                problem(format!("link not kept: {:?}", input_value(&page, "link")));
            }
            if selected_recipient(&page).as_deref() != Some(lee_id.as_str()) {
                problem(format!(
                    "recipient not kept: {:?}",
                    selected_recipient(&page)
                ));
            }
        }
        for p in left_behind(&server, &before) {
            problem(p);
        }
    }

    // The reply forms, portal and practice, and the practice's new message.
    let thread = thread_by_subject(&server, "Blood pressure readings");
    let before = snapshot(&server);
    let raw = portal_reply(
        &mut alex,
        thread,
        "My reply, kept.",
        Attach::File("chart.svg", b"<svg/>"),
    );
    let page = raw.page();
    if raw.status != 400
        || !error_beside(&page, "file")
            .unwrap_or_default()
            .contains(ALLOWED_TEXT)
    {
        problems.push(format!(
            "portal reply with an SVG: {} {:?}",
            raw.status,
            error_beside(&page, "file")
        ));
    }
    if textarea(&page, "body").as_deref() != Some("My reply, kept.") {
        problems.push(format!(
            "portal reply: body not kept: {:?}",
            textarea(&page, "body")
        ));
    }
    problems.extend(
        left_behind(&server, &before)
            .into_iter()
            .map(|p| format!("portal reply: {p}")),
    );

    let mut lee = signed_in_staff(&server, "dr.lee@demo.test");
    let raw = staff_reply(
        &mut lee,
        thread,
        "Staff reply, kept.",
        Attach::File("results.pdf", &mz),
    );
    let page = raw.page();
    if raw.status != 400
        || !error_beside(&page, "file")
            .unwrap_or_default()
            .contains(ALLOWED_TEXT)
    {
        problems.push(format!(
            "staff reply with an executable: {} {:?}",
            raw.status,
            error_beside(&page, "file")
        ));
    }
    if textarea(&page, "body").as_deref() != Some("Staff reply, kept.") {
        problems.push(format!(
            "staff reply: body not kept: {:?}",
            textarea(&page, "body")
        ));
    }
    problems.extend(
        left_behind(&server, &before)
            .into_iter()
            .map(|p| format!("staff reply: {p}")),
    );

    let alex_id = patient_id(&server, "Alex");
    let raw = staff_new(
        &mut lee,
        &alex_id,
        "Staff subject, kept",
        "Staff body, kept.",
        Attach::File("macro.docm", b"PK\x03\x04"),
    );
    let page = raw.page();
    if raw.status != 400
        || !error_beside(&page, "file")
            .unwrap_or_default()
            .contains(ALLOWED_TEXT)
    {
        problems.push(format!(
            "staff new message with a .docm: {} {:?}",
            raw.status,
            error_beside(&page, "file")
        ));
    }
    if input_value(&page, "subject").as_deref() != Some("Staff subject, kept")
        || textarea(&page, "body").as_deref() != Some("Staff body, kept.")
    {
        problems.push(format!(
            "staff new message: typed fields not kept: {:?} {:?}",
            input_value(&page, "subject"),
            textarea(&page, "body")
        ));
    }
    problems.extend(
        left_behind(&server, &before)
            .into_iter()
            .map(|p| format!("staff new message: {p}")),
    );

    // No file chosen: an empty part without a name; the message goes without attachment.
    let before = snapshot(&server);
    let raw = portal_new(
        &server,
        &mut alex,
        "No file",
        "Nothing attached.",
        Attach::Nothing,
    );
    let thread = thread_of(&raw);
    assert!(attachments_of(&server, thread).is_empty());
    assert_eq!(count(&server, "message"), before.messages + 1);
    assert_eq!(blobs(&server), before.blobs);
    assert!(temp_files(&server).is_empty());

    assert!(
        problems.is_empty(),
        "refused uploads misbehaved:\n  {}",
        problems.join("\n  ")
    );
}

/// Exactly 25 MB (26,214,400 bytes) is accepted; one byte more answers 413 with the form shown
/// again, what was typed kept, and nothing left behind.
#[test]
fn exactly_25_mb_is_accepted_and_one_byte_more_is_refused() {
    let server = Server::start(Options::demo());
    let mut alex = signed_in_portal(&server, "alex@demo.test");
    let mut bytes = vec![b'a'; MAX];

    let thread = thread_of(&portal_new(
        &server,
        &mut alex,
        "Exactly 25 MB",
        "At the limit.",
        Attach::File("limit.txt", &bytes),
    ));
    let row = last_attachment(&server, thread);
    assert_eq!(row.size, MAX as u64);
    assert_eq!(row.sha256, sha256_hex(&bytes));
    assert_eq!(
        std::fs::metadata(blob_path(&server, &row.sha256))
            .unwrap()
            .len(),
        MAX as u64
    );
    assert!(temp_files(&server).is_empty());

    bytes.push(b'a');
    let before = snapshot(&server);
    let raw = portal_new(
        &server,
        &mut alex,
        "One byte over",
        "Keep this body.",
        Attach::File("over.txt", &bytes),
    );
    let page = raw.page();
    assert_eq!(raw.status, 413, "{}", page.body);
    let message = error_beside(&page, "file").expect("a message beside the file field");
    assert!(message.contains("larger than 25 MB"), "{message}");
    assert_eq!(
        input_value(&page, "subject").as_deref(),
        Some("One byte over")
    );
    assert_eq!(textarea(&page, "body").as_deref(), Some("Keep this body."));
    let problems = left_behind(&server, &before);
    assert!(problems.is_empty(), "{problems:?}");
}

/// Rule 5 for the most common oversized file, one well over 25 MB (here 40 MB): refused with the
/// same clear message, and what was typed kept in the form, as for one byte over.
#[test]
fn a_file_well_over_25_mb_is_refused_with_the_form_kept() {
    let server = Server::start(Options::demo());
    let mut alex = signed_in_portal(&server, "alex@demo.test");
    let bytes = vec![b'a'; 40 * 1024 * 1024];
    let before = snapshot(&server);
    let raw = portal_new(
        &server,
        &mut alex,
        "A long video",
        "Typed before choosing a big file.",
        Attach::File("big.txt", &bytes),
    );
    let page = raw.page();
    assert_eq!(raw.status, 413, "{}", page.body);
    assert_eq!(left_behind(&server, &before), Vec::<String>::new());
    let message = error_beside(&page, "file");
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("larger than 25 MB")),
        "no \"larger than 25 MB\" beside the file field ({message:?}); the page says:\n{}",
        page.body.split("<main").nth(1).unwrap_or(&page.body)
    );
    assert_eq!(
        input_value(&page, "subject").as_deref(),
        Some("A long video")
    );
    assert_eq!(
        textarea(&page, "body").as_deref(),
        Some("Typed before choosing a big file.")
    );
}

/// The last lines of the server's log, without backtraces.
fn log_tail(server: &Server, n: usize) -> String {
    let log = server.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.starts_with(' ')).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A request on the upload form that declares an absurd length and then hangs up is refused; the
/// server stays up for everyone else.
///
/// KNOWN DEFECT, not closable inside the binary: tiny_http 0.12 discards an unread body by
/// allocating a buffer of the whole remaining declared length (util/equal_reader.rs), so any
/// request declaring ~100 TB and hanging up aborts the process, whatever the handler does. The
/// README's nginx configuration refuses such a request before it reaches Carepost (proven by
/// transport::readme_nginx_config_covers_what_the_binary_cannot); the in-binary fix (Carepost's
/// own accept loop in front of tiny_http) is an open issue. Run with --ignored to reproduce.
#[test]
#[ignore = "tiny_http aborts on an absurd Content-Length; covered by the nginx front, see doc"]
fn an_absurd_declared_length_does_not_stop_the_server() {
    let mut server = Server::start(Options::demo());
    let mut alex = signed_in_portal(&server, "alex@demo.test");
    let before = snapshot(&server);
    let (csrf, key) = form_tokens(&mut alex, "/portal/messages/new");
    let (content_type, body) = Multipart::new()
        .text("csrf", &csrf)
        .text("key", &key)
        .text("subject", "Absurd")
        .file("file", "a.pdf", &pdf_of("absurd", 4_000))
        .finish();
    for (who, client) in [("signed in", &alex), ("signed out", &server.client())] {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(&head(
                client,
                "POST",
                "/portal/messages/new",
                &[("Content-Type", &content_type)],
                100_000_000_000_000,
            ))
            .unwrap();
        let _ = stream.write_all(&body);
        let _ = stream.shutdown(Shutdown::Write);
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        drop(stream);
        std::thread::sleep(Duration::from_millis(500));
        let exited = server.child.try_wait().unwrap();
        assert!(
            exited.is_none(),
            "{who}: the server process ended ({exited:?}) after a request declaring \
             Content-Length: 100000000000000; its log ends:\n{}",
            log_tail(&server, 4)
        );
        assert!(!answer.is_empty(), "{who}: no answer");
        let answer = parse_raw(&answer);
        assert!(
            answer.status >= 400
                || (answer.status == 303 && answer.location().starts_with("/portal/login")),
            "{who}: answered {} {:?}",
            answer.status,
            answer.location()
        );
    }
    assert_eq!(server.client().get("/healthz").status, 200);
    assert_eq!(left_behind(&server, &before), Vec::<String>::new());
}

/// Two files in one message are refused; a body cut short (the client stops sending and shuts
/// its side), a connection dropped mid-upload and an upload that stalls until the server hangs
/// up all leave no temporary file and no rows. While an upload is under way its bytes are in a
/// temporary file, not in the store.
#[test]
fn two_files_cut_off_dropped_and_stalled_uploads_leave_nothing() {
    let server = Server::start(Options::demo().env("CAREPOST_IDLE_CONNECTION_SECONDS", "2"));
    let mut alex = signed_in_portal(&server, "alex@demo.test");
    let lee_id = staff_id(&server, "dr.lee@demo.test");
    let pdf = pdf_of("cut", 4_000_000);
    let before = snapshot(&server);

    // Two files.
    let (csrf, key) = form_tokens(&mut alex, "/portal/messages/new");
    let form = Multipart::new()
        .text("csrf", &csrf)
        .text("key", &key)
        .text("recipient", &lee_id)
        .text("subject", "Two files")
        .text("body", "Both, please.")
        .text("link", "")
        .file("file", "one.pdf", &pdf_of("one", 10_000))
        .file("file", "two.pdf", &pdf_of("two", 10_000));
    let raw = post_multipart(&mut alex, "/portal/messages/new", form);
    assert_eq!(raw.status, 400, "{}", raw.page().body);
    raw.page().assert_contains("Only one file");
    assert_eq!(
        left_behind(&server, &before),
        Vec::<String>::new(),
        "two files"
    );

    // A whole form whose body stops early, at several points.
    let (csrf, key) = form_tokens(&mut alex, "/portal/messages/new");
    let (content_type, body) = Multipart::new()
        .text("csrf", &csrf)
        .text("key", &key)
        .text("recipient", &lee_id)
        .text("subject", "Cut off")
        .text("body", "This upload is cut off.")
        .text("link", "")
        .file("file", "cut.pdf", &pdf)
        .finish();
    let file_end = body.len() - "\r\n------CarepostTestBoundary7d1f0a9c3b2e4f56--\r\n".len();
    let head = head(
        &alex,
        "POST",
        "/portal/messages/new",
        &[("Content-Type", &content_type)],
        body.len(),
    );
    for (label, cut) in [
        ("in the middle of the file", body.len() / 2),
        ("after the file, before the closing boundary", file_end),
        (
            "in the typed fields, before the file",
            body.windows(13)
                .position(|w| w == b"is cut off.\r\n")
                .unwrap()
                + 5,
        ),
    ] {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.write_all(&head).unwrap();
        stream.write_all(&body[..cut]).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        if !answer.is_empty() {
            let raw = parse_raw(&answer);
            assert_ne!(raw.status, 303, "cut {label}: the message was sent");
            assert!(raw.status >= 400, "cut {label}: {}", raw.status);
        }
        assert_eq!(
            left_behind(&server, &before),
            Vec::<String>::new(),
            "cut {label}"
        );
    }

    // Dropped mid-upload: while it is under way, the bytes are in blobs/tmp only.
    {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream.write_all(&head).unwrap();
        stream.write_all(&body[..body.len() / 2]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while temp_files(&server).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            temp_files(&server).len(),
            1,
            "the upload streams to one temporary file"
        );
        assert_eq!(
            blobs(&server),
            before.blobs,
            "nothing in the store before the message is sent"
        );
        drop(stream);
    }
    assert_eq!(
        left_behind(&server, &before),
        Vec::<String>::new(),
        "dropped mid-upload"
    );

    // Stalled: half sent, then silence; the server hangs up after its idle limit (2 s here).
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.write_all(&head).unwrap();
    stream.write_all(&body[..body.len() / 3]).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the stalled upload was not ended"
    );
    assert!(
        !String::from_utf8_lossy(&answer).contains(" 303 "),
        "stalled upload sent"
    );
    assert_eq!(
        left_behind(&server, &before),
        Vec::<String>::new(),
        "stalled upload"
    );

    // And the same form, sent whole, works.
    let raw = exchange(
        &mut alex,
        "POST",
        "/portal/messages/new",
        &[("Content-Type", &content_type)],
        &body,
    );
    let thread = thread_of(&raw);
    assert_eq!(last_attachment(&server, thread).size, pdf.len() as u64);
    assert!(temp_files(&server).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Who may download

/// An attachment is reachable only through a thread the caller may read: another patient's
/// attachment is not found, whichever thread id is put in front of it, and so is a thread of
/// another record held by the same caregiver login; a level-1 staff member who is not on the
/// thread does not find it either.
#[test]
fn attachments_of_other_patients_are_not_found() {
    let server = Server::start(Options::demo());
    let riley = patient_id(&server, "Riley");
    let quinn = patient_id(&server, "Quinn");
    let riley_thread = thread_by_subject(&server, "School sports form");
    let alex_thread = thread_by_subject(&server, "Blood pressure readings");

    // Jordan, as Riley's caregiver, attaches the form.
    let mut jordan = signed_in_portal(&server, "jordan@demo.test");
    let r = jordan.submit("/portal", "/portal/acting", &[("patient", &riley)]);
    assert_eq!(r.status, 303, "{}", r.body);
    let form = pdf_of("riley sports form", 20_000);
    let raw = portal_reply(
        &mut jordan,
        riley_thread,
        "Here is the form.",
        Attach::File("sports-form.pdf", &form),
    );
    assert_eq!(thread_of(&raw), riley_thread);
    let riley_file = last_attachment(&server, riley_thread).id;
    let riley_portal = format!("/portal/messages/{riley_thread}/files/{riley_file}");
    let riley_practice = format!("/practice/messages/{riley_thread}/files/{riley_file}");
    let got = download(&mut jordan, &riley_portal, &[]);
    assert_eq!(got.status, 200);
    assert!(got.body == form);
    let riley_upload = query(
        &server,
        "SELECT actor_kind, patient_id FROM audit_event WHERE action = 'attachment.upload'",
        &[],
    );
    assert_eq!(riley_upload, vec![vec!["portal".to_owned(), riley.clone()]]);

    // Alex attaches one of his own.
    let mut alex = signed_in_portal(&server, "alex@demo.test");
    let own = pdf_of("alex own", 3_000);
    portal_reply(
        &mut alex,
        alex_thread,
        "Mine.",
        Attach::File("mine.pdf", &own),
    );
    let alex_file = last_attachment(&server, alex_thread).id;

    let not_found = |client: &mut Client, url: &str, what: &str, secret: &[u8]| {
        let got = download(client, url, &[]);
        assert_eq!(got.status, 404, "{what}: {url}");
        assert!(
            !got.body
                .windows(64)
                .any(|w| secret.windows(64).next() == Some(w)),
            "{what}: the body holds the file"
        );
    };
    not_found(
        &mut alex,
        &riley_portal,
        "alex, Riley's thread and file",
        &form,
    );
    not_found(
        &mut alex,
        &format!("/portal/messages/{alex_thread}/files/{riley_file}"),
        "alex, his thread, Riley's file",
        &form,
    );
    not_found(
        &mut jordan,
        &format!("/portal/messages/{alex_thread}/files/{alex_file}"),
        "jordan, Alex's file",
        &own,
    );
    not_found(
        &mut jordan,
        &format!("/portal/messages/{riley_thread}/files/{alex_file}"),
        "jordan, Riley's thread, Alex's file",
        &own,
    );
    // Jordan acting for Quinn does not reach Riley's file.
    let r = jordan.submit("/portal", "/portal/acting", &[("patient", &quinn)]);
    assert_eq!(r.status, 303, "{}", r.body);
    not_found(&mut jordan, &riley_portal, "jordan acting for Quinn", &form);

    // Staff: the desk (level 1, not on the thread) does not find it, nor file it; Dr. Lee does.
    let mut desk = signed_in_staff(&server, "desk@demo.test");
    not_found(&mut desk, &riley_practice, "desk", &form);
    let token = desk.get("/practice/messages").csrf();
    let r = desk.post_form(
        &format!("{riley_practice}/chart"),
        &[("csrf", &token), ("category", "Letter")],
    );
    assert_eq!(r.status, 404, "desk files to the chart: {}", r.body);
    let mut lee = signed_in_staff(&server, "dr.lee@demo.test");
    let got = download(&mut lee, &riley_practice, &[]);
    assert_eq!(got.status, 200);
    assert!(got.body == form);

    // Signed out: to the sign-in page, never the file.
    let mut nobody = server.client();
    for url in [&riley_portal, &riley_practice] {
        let got = download(&mut nobody, url, &[]);
        assert_ne!(got.status, 200, "{url}");
        assert!(got.body.len() < form.len(), "{url}");
    }
    assert_eq!(
        scalar(
            &server,
            "SELECT count(*) FROM chart_document WHERE attachment_id IS NOT NULL",
            &[]
        ),
        "0"
    );
}

// ---------------------------------------------------------------------------------------------
// The store's integrity

fn verify(server: &Server) -> (i32, String) {
    let (code, out, err) = run(
        &["verify", "--data", server.data.to_str().unwrap()],
        &[],
        "",
    );
    (code, format!("{out}{err}"))
}

/// `carepost verify` passes a clean store, and names a corrupt file, a missing file and an
/// unreferenced file; a corrupt or missing file is never served.
#[test]
fn verify_finds_corrupt_missing_and_unreferenced_files() {
    let server = Server::start(Options::demo());
    let mut alex = signed_in_portal(&server, "alex@demo.test");
    let mut lee = signed_in_staff(&server, "dr.lee@demo.test");
    let mut sent = Vec::new();
    for (name, bytes) in [
        ("a.pdf", pdf_of("verify a", 40_000)),
        ("b.png", sample("png")),
        ("c.txt", b"third file\n".to_vec()),
    ] {
        let thread = thread_of(&portal_new(
            &server,
            &mut alex,
            name,
            "For verify.",
            Attach::File(name, &bytes),
        ));
        sent.push((thread, last_attachment(&server, thread), bytes));
    }
    let (code, out) = verify(&server);
    assert_eq!(code, 0, "a clean store passes:\n{out}");
    assert!(
        out.contains("0 missing, 0 corrupt, 0 unreferenced"),
        "{out}"
    );

    // Corrupt: one byte flipped.
    let (a_thread, a, a_bytes) = &sent[0];
    let a_path = blob_path(&server, &a.sha256);
    let mut damaged = a_bytes.clone();
    damaged[20_000] ^= 0x01;
    std::fs::write(&a_path, &damaged).unwrap();
    let (code, out) = verify(&server);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains(&a.sha256[2..]) && out.contains("1 corrupt"),
        "{out}"
    );
    for (who, client, url) in [
        (
            "patient",
            &mut alex,
            format!("/portal/messages/{a_thread}/files/{}", a.id),
        ),
        (
            "staff",
            &mut lee,
            format!("/practice/messages/{a_thread}/files/{}", a.id),
        ),
    ] {
        let got = download(client, &url, &[]);
        assert_ne!(got.status, 200, "{who}: a corrupt file is served");
        assert!(
            !got.body
                .windows(1000)
                .any(|w| w == &a_bytes[10_000..11_000]),
            "{who}: the damaged bytes were sent"
        );
        assert!(got.header("Content-Disposition").is_none(), "{who}");
    }
    std::fs::write(&a_path, a_bytes).unwrap();

    // Missing.
    let (b_thread, b, b_bytes) = &sent[1];
    let b_path = blob_path(&server, &b.sha256);
    std::fs::remove_file(&b_path).unwrap();
    let (code, out) = verify(&server);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains(&b.sha256[2..]) && out.contains("missing") && out.contains("1 missing"),
        "{out}"
    );
    let got = download(
        &mut alex,
        &format!("/portal/messages/{b_thread}/files/{}", b.id),
        &[],
    );
    assert_ne!(got.status, 200, "a missing file is served");
    std::fs::write(&b_path, b_bytes).unwrap();

    // Unreferenced: a well-named file that no message refers to.
    let extra = b"nobody sent this\n".to_vec();
    let extra_path = blob_path(&server, &sha256_hex(&extra));
    std::fs::create_dir_all(extra_path.parent().unwrap()).unwrap();
    std::fs::write(&extra_path, &extra).unwrap();
    let (code, out) = verify(&server);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains(&sha256_hex(&extra)[2..])
            && out.contains("not referenced")
            && out.contains("0 missing, 0 corrupt, 1 unreferenced"),
        "{out}"
    );
    std::fs::remove_file(&extra_path).unwrap();

    // Restored: clean again, and served again.
    let (code, out) = verify(&server);
    assert_eq!(code, 0, "{out}");
    let got = download(
        &mut alex,
        &format!("/portal/messages/{a_thread}/files/{}", a.id),
        &[],
    );
    assert_eq!(got.status, 200);
    assert!(got.body == *a_bytes);
}

/// When the stored copy of a file is damaged and the same file is sent again, the new message
/// must not end up pointing at the damaged copy: the sender was told it was sent.
#[test]
fn a_file_sent_again_is_not_lost_to_a_damaged_stored_copy() {
    let server = Server::start(Options::demo());
    let mut alex = signed_in_portal(&server, "alex@demo.test");
    let bytes = pdf_of("sent again", 30_000);
    let first = thread_of(&portal_new(
        &server,
        &mut alex,
        "First",
        "Once.",
        Attach::File("form.pdf", &bytes),
    ));
    let sha = last_attachment(&server, first).sha256;
    let path = blob_path(&server, &sha);
    let mut damaged = bytes.clone();
    damaged[100] ^= 0x80;
    std::fs::write(&path, &damaged).unwrap();

    let second = thread_of(&portal_new(
        &server,
        &mut alex,
        "Second",
        "Again.",
        Attach::File("form.pdf", &bytes),
    ));
    let row = last_attachment(&server, second);
    let got = download(
        &mut alex,
        &format!("/portal/messages/{second}/files/{}", row.id),
        &[],
    );
    assert_eq!(
        got.status, 200,
        "the file just sent again cannot be downloaded: the upload was discarded because a \
         (damaged) copy with its hash was already in the store"
    );
    assert!(got.body == bytes);
}

// ---------------------------------------------------------------------------------------------
// Byte ranges

/// Audio and video answer single byte ranges (206 with Content-Range, 416 when unsatisfiable);
/// other types ignore Range and send the whole file.
#[test]
fn audio_and_video_answer_byte_ranges() {
    let server = Server::start(Options::demo());
    let mut alex = signed_in_portal(&server, "alex@demo.test");
    let mut lee = signed_in_staff(&server, "dr.lee@demo.test");
    let mut mp4 = sample("mp4");
    mp4.resize(100_000, 0x42);
    for (i, b) in mp4.iter_mut().enumerate().skip(300) {
        *b = (i % 251) as u8;
    }
    let size = mp4.len();
    let thread = thread_of(&portal_new(
        &server,
        &mut alex,
        "Video",
        "A clip.",
        Attach::File("clip.mp4", &mp4),
    ));
    let id = last_attachment(&server, thread).id;
    let portal_url = format!("/portal/messages/{thread}/files/{id}");
    let practice_url = format!("/practice/messages/{thread}/files/{id}");

    for (client, url) in [(&mut alex, &portal_url), (&mut lee, &practice_url)] {
        let got = download(client, url, &[("Range", "bytes=0-9")]);
        assert_eq!(got.status, 206, "{url}");
        assert_eq!(
            got.header("Content-Range"),
            Some(format!("bytes 0-9/{size}").as_str())
        );
        assert!(got.body == mp4[..10], "{:?}", got.body);
        assert_eq!(got.header("Content-Type"), Some("video/mp4"));
        assert_eq!(got.header("Accept-Ranges"), Some("bytes"));
    }
    for (range, start, end) in [
        ("bytes=5000-5999".to_owned(), 5000, 5999),
        (format!("bytes={}-", size - 10), size - 10, size - 1),
        ("bytes=-7".to_owned(), size - 7, size - 1),
        (format!("bytes=99990-{}", size + 500), 99_990, size - 1),
    ] {
        let got = download(&mut alex, &portal_url, &[("Range", &range)]);
        assert_eq!(got.status, 206, "{range}");
        assert_eq!(
            got.header("Content-Range"),
            Some(format!("bytes {start}-{end}/{size}").as_str()),
            "{range}"
        );
        assert!(got.body == mp4[start..=end], "{range}: wrong bytes");
    }
    let got = download(
        &mut alex,
        &portal_url,
        &[("Range", &format!("bytes={size}-{}", size + 10))],
    );
    assert_eq!(got.status, 416);
    assert_eq!(
        got.header("Content-Range"),
        Some(format!("bytes */{size}").as_str())
    );
    assert!(got.body.len() < 100);
    let got = download(&mut alex, &portal_url, &[]);
    assert_eq!(got.status, 200);
    assert!(got.body == mp4);

    // Audio too.
    let wav = sample("wav");
    let thread = thread_of(&portal_new(
        &server,
        &mut alex,
        "Audio",
        "A sound.",
        Attach::File("cough.wav", &wav),
    ));
    let id = last_attachment(&server, thread).id;
    let got = download(
        &mut alex,
        &format!("/portal/messages/{thread}/files/{id}"),
        &[("Range", "bytes=0-3")],
    );
    assert_eq!(got.status, 206);
    assert_eq!(got.body, b"RIFF");

    // A PDF ignores Range: the whole file, 200.
    let pdf = pdf_of("no ranges", 70_000);
    let thread = thread_of(&portal_new(
        &server,
        &mut alex,
        "Document",
        "A letter.",
        Attach::File("letter.pdf", &pdf),
    ));
    let id = last_attachment(&server, thread).id;
    let got = download(
        &mut alex,
        &format!("/portal/messages/{thread}/files/{id}"),
        &[("Range", "bytes=0-9")],
    );
    assert_eq!(got.status, 200);
    assert!(got.header("Content-Range").is_none());
    assert!(got.body == pdf, "{} bytes", got.body.len());
}

// ---------------------------------------------------------------------------------------------
// Staff: the chart, and their own files

/// Staff file an attachment to the chart under a category: the patient page lists it, the
/// bytes are not copied, and the filing is audited with the patient.
#[test]
fn staff_file_an_attachment_to_the_chart_without_copying_it() {
    let server = Server::start(Options::demo());
    let alex_id = patient_id(&server, "Alex");
    let lee_id = staff_id(&server, "dr.lee@demo.test");
    let mut alex = signed_in_portal(&server, "alex@demo.test");
    let bytes = pdf_of("lab results", 60_000);
    let thread = thread_of(&portal_new(
        &server,
        &mut alex,
        "My lab results",
        "From the outside lab.",
        Attach::File("lab-results.pdf", &bytes),
    ));
    let file = last_attachment(&server, thread).id;
    let stored = blobs(&server);

    let mut lee = signed_in_staff(&server, "dr.lee@demo.test");
    let page = lee.get(&format!("/practice/messages/{thread}"));
    page.assert_status(200).assert_contains(&format!(
        "action=\"/practice/messages/{thread}/files/{file}/chart\""
    ));
    for category in CATEGORIES {
        page.assert_contains(&format!("<option value=\"{category}\">"));
    }
    let token = page.csrf();
    let url = format!("/practice/messages/{thread}/files/{file}/chart");

    // Not a category from the list: refused, nothing filed.
    let r = lee.post_form(&url, &[("csrf", &token), ("category", "Prescription")]);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        scalar(
            &server,
            "SELECT count(*) FROM chart_document WHERE attachment_id = ?",
            &[&file.to_string()]
        ),
        "0"
    );

    let r = lee.post_form(&url, &[("csrf", &token), ("category", "Lab result")]);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(
        query(
            &server,
            "SELECT patient_id, category, title FROM chart_document WHERE attachment_id = ?",
            &[&file.to_string()]
        ),
        vec![vec![
            alex_id.clone(),
            "Lab result".to_owned(),
            "lab-results.pdf".to_owned()
        ]]
    );
    // Filing again changes nothing.
    lee.post_form(&url, &[("csrf", &token), ("category", "Lab result")]);
    assert_eq!(
        scalar(
            &server,
            "SELECT count(*) FROM chart_document WHERE attachment_id = ?",
            &[&file.to_string()]
        ),
        "1"
    );

    let patient_page = lee.get(&format!("/practice/patients/{alex_id}"));
    patient_page.assert_status(200);
    let documents = patient_page
        .body
        .split("id=\"documents-heading\"")
        .nth(1)
        .expect("a Documents section")
        .split("</section>")
        .next()
        .unwrap();
    let row = documents
        .split("<tr>")
        .find(|r| r.contains("lab-results.pdf"))
        .unwrap_or_else(|| panic!("the file is not listed in Documents:\n{documents}"));
    assert!(row.contains("<td>Lab result</td>"), "{row}");
    lee.get(&format!("/practice/messages/{thread}"))
        .assert_contains("filed in the chart");

    // No second copy of the bytes anywhere in the data folder.
    assert_eq!(blobs(&server), stored);
    let copies = files_under(&server.data)
        .into_iter()
        .filter(|p| std::fs::read(p).map(|b| b == bytes).unwrap_or(false))
        .count();
    assert_eq!(copies, 1);

    let filed = query(
        &server,
        "SELECT actor_kind, actor_id, patient_id FROM audit_event WHERE action = 'chart.file' AND object LIKE 'attachment%'",
        &[],
    );
    assert_eq!(filed[0], vec!["staff".to_owned(), lee_id, alex_id]);
}

/// Staff attach files too, in a reply and in a new message to the patient, and the patient
/// downloads both.
#[test]
fn staff_attach_files_and_the_patient_downloads_them() {
    let server = Server::start(Options::demo());
    let alex_id = patient_id(&server, "Alex");
    let lee_id = staff_id(&server, "dr.lee@demo.test");
    let mut lee = signed_in_staff(&server, "dr.lee@demo.test");
    let mut alex = signed_in_portal(&server, "alex@demo.test");

    let results = pdf_of("your results", 80_000);
    let followup = thread_by_subject(&server, "Follow-up after your visit");
    let raw = staff_reply(
        &mut lee,
        followup,
        "Your results are attached.",
        Attach::File("results.pdf", &results),
    );
    assert_eq!(thread_of(&raw), followup);

    let letter = sample("png");
    let raw = staff_new(
        &mut lee,
        &alex_id,
        "Your referral letter",
        "The letter is attached.",
        Attach::File("Referral Letter.PNG", &letter),
    );
    let new_thread = thread_of(&raw);
    assert_eq!(raw.location(), format!("/practice/messages/{new_thread}"));

    for (thread, bytes, name, media) in [
        (followup, &results, "results.pdf", "application/pdf"),
        (new_thread, &letter, "Referral Letter.PNG", "image/png"),
    ] {
        let row = last_attachment(&server, thread);
        assert_eq!(
            (row.file_name.as_str(), row.media_type.as_str()),
            (name, media)
        );
        let url = format!("/portal/messages/{thread}/files/{}", row.id);
        alex.get(&format!("/portal/messages/{thread}"))
            .assert_status(200)
            .assert_contains(&format!("href=\"{url}\""));
        let got = download(&mut alex, &url, &[]);
        assert_eq!(got.status, 200, "{name}");
        assert!(got.body == *bytes, "{name}: bytes differ");
        assert!(got
            .header("Content-Disposition")
            .unwrap_or("")
            .starts_with(&format!("attachment; filename=\"{name}\"")));
    }
    let uploads = query(
        &server,
        "SELECT actor_kind, actor_id, patient_id FROM audit_event WHERE action = 'attachment.upload'",
        &[],
    );
    assert_eq!(
        uploads,
        vec![vec!["staff".to_owned(), lee_id.clone(), alex_id.clone()]; 2]
    );
    assert!(temp_files(&server).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Restart

/// Temporary files left by a crash are removed when the server starts; stored files stay.
#[test]
fn a_restart_removes_leftover_temporary_files() {
    let dir = TempDir::new("attachments-restart");
    let data = dir.path().join("data");
    let mut server = Server::start_in(&data, Options::demo());
    let mut alex = signed_in_portal(&server, "alex@demo.test");
    let bytes = pdf_of("kept over a restart", 10_000);
    let thread = thread_of(&portal_new(
        &server,
        &mut alex,
        "Before restart",
        "Kept.",
        Attach::File("kept.pdf", &bytes),
    ));
    let row = last_attachment(&server, thread);
    assert!(server.terminate().success());
    drop(server);

    let tmp = data.join("blobs/tmp");
    std::fs::write(tmp.join("upload-0123456789abcdef"), pdf_of("half", 100_000)).unwrap();
    std::fs::write(tmp.join("upload-leftover"), b"").unwrap();

    let server = Server::start_in(&data, Options::demo());
    assert_eq!(temp_files(&server), Vec::<PathBuf>::new());
    assert_eq!(
        std::fs::read(blob_path(&server, &row.sha256)).unwrap(),
        bytes
    );
    let mut alex = signed_in_portal(&server, "alex@demo.test");
    let got = download(
        &mut alex,
        &format!("/portal/messages/{thread}/files/{}", row.id),
        &[],
    );
    assert_eq!(got.status, 200);
    assert!(got.body == bytes);
    let (code, out) = verify(&server);
    assert_eq!(code, 0, "{out}");
}

// ---------------------------------------------------------------------------------------------
// Benchmark

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// `cargo test --release --test integration bench_upload -- --ignored --nocapture`.
/// Uploads a 25 MB (26,214,400-byte) video as a signed-in patient several times and compares the
/// throughput with hashing the same bytes (`sha256sum`) plus writing them with fsync (`dd
/// conv=fsync`) on the same file system; reports the server's resident memory growth.
#[test]
#[ignore]
fn bench_upload() {
    const RUNS: usize = 5;
    let server = Server::start(Options::demo());
    let pid = server.child.id();
    let mut alex = signed_in_portal(&server, "alex@demo.test");
    let lee_id = staff_id(&server, "dr.lee@demo.test");
    // Incompressible content behind a real mp4 signature; each run differs in its first bytes so
    // that every upload is stored (not found already stored).
    let mut bytes = vec![0u8; MAX];
    bytes[..16].copy_from_slice(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in bytes[16..].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    // Warm up the server (pages, database) before measuring memory.
    let warm = pdf_of("warm", 100_000);
    thread_of(&portal_new(
        &server,
        &mut alex,
        "Warm up",
        "Warm.",
        Attach::File("warm.pdf", &warm),
    ));
    let rss_before = proc_status_kib(pid, "VmRSS");
    let hwm_before = proc_status_kib(pid, "VmHWM");
    let mut upload_secs = Vec::new();
    let mut hwm_after_one = 0;
    let mut rss_after_one = 0;
    for run in 0..RUNS {
        bytes[16..24].copy_from_slice(&(run as u64 + 1).to_le_bytes());
        let (csrf, key) = form_tokens(&mut alex, "/portal/messages/new");
        let (content_type, body) = Multipart::new()
            .text("csrf", &csrf)
            .text("key", &key)
            .text("recipient", &lee_id)
            .text("subject", &format!("Bench {run}"))
            .text("body", "A 25 MB video.")
            .text("link", "")
            .file("file", "video.mp4", &bytes)
            .finish();
        let started = Instant::now();
        let raw = exchange(
            &mut alex,
            "POST",
            "/portal/messages/new",
            &[("Content-Type", &content_type)],
            &body,
        );
        upload_secs.push(started.elapsed().as_secs_f64());
        let thread = thread_of(&raw);
        assert_eq!(last_attachment(&server, thread).size, MAX as u64);
        if run == 0 {
            hwm_after_one = proc_status_kib(pid, "VmHWM");
            rss_after_one = proc_status_kib(pid, "VmRSS");
        }
    }
    let hwm_after = proc_status_kib(pid, "VmHWM");
    let rss_after = proc_status_kib(pid, "VmRSS");

    // For comparison: a 40 MB file, declared over the limit and sent whole, refused (413). The
    // peak is reset first (writing 5 to clear_refs) so that the uploads above do not hide it.
    let reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
    let hwm_before_refused = proc_status_kib(pid, "VmHWM");
    let big = vec![b'a'; 40 * 1024 * 1024];
    let (csrf, key) = form_tokens(&mut alex, "/portal/messages/new");
    let (content_type, body) = Multipart::new()
        .text("csrf", &csrf)
        .text("key", &key)
        .text("recipient", &lee_id)
        .text("subject", "Too big")
        .text("body", "40 MB.")
        .text("link", "")
        .file("file", "big.txt", &big)
        .finish();
    let started = Instant::now();
    let raw = exchange(
        &mut alex,
        "POST",
        "/portal/messages/new",
        &[("Content-Type", &content_type)],
        &body,
    );
    let refused_secs = started.elapsed().as_secs_f64();
    assert_eq!(raw.status, 413);
    std::thread::sleep(Duration::from_millis(300));
    let refused_growth_kib = proc_status_kib(pid, "VmHWM").saturating_sub(hwm_before_refused);

    // Baseline on the same file system: sha256sum of the bytes, then dd with fsync.
    let scratch = TempDir::new("bench-baseline");
    let input = scratch.path().join("in.mp4");
    let output = scratch.path().join("out.mp4");
    std::fs::write(&input, &bytes).unwrap();
    let mut baseline_secs = Vec::new();
    for _ in 0..RUNS {
        let _ = std::fs::remove_file(&output);
        let started = Instant::now();
        let sum = Command::new("sha256sum")
            .arg(&input)
            .output()
            .expect("sha256sum runs");
        assert!(sum.status.success());
        let dd = Command::new("dd")
            .arg(format!("if={}", input.display()))
            .arg(format!("of={}", output.display()))
            .args(["bs=1M", "conv=fsync", "status=none"])
            .status()
            .expect("dd runs");
        assert!(dd.success());
        baseline_secs.push(started.elapsed().as_secs_f64());
    }

    let mb = MAX as f64 / 1_000_000.0;
    let upload = median(upload_secs.clone());
    let baseline = median(baseline_secs.clone());
    let upload_rate = mb / upload;
    let baseline_rate = mb / baseline;
    let ratio = upload_rate / baseline_rate;
    let growth_one_kib = hwm_after_one.saturating_sub(hwm_before);
    println!(
        "BENCH upload 26,214,400-byte mp4 x{RUNS} over HTTP as a signed-in patient: median {:.3} s, {:.1} MB/s (runs: {})",
        upload,
        upload_rate,
        upload_secs.iter().map(|s| format!("{s:.3}")).collect::<Vec<_>>().join(", ")
    );
    println!(
        "BENCH baseline sha256sum + dd bs=1M conv=fsync, same bytes, same file system: median {:.3} s, {:.1} MB/s (runs: {})",
        baseline,
        baseline_rate,
        baseline_secs.iter().map(|s| format!("{s:.3}")).collect::<Vec<_>>().join(", ")
    );
    println!("BENCH upload / baseline throughput: {ratio:.2}");
    println!(
        "BENCH server memory: VmHWM {} KiB -> {} KiB after one upload (+{} KiB) -> {} KiB after {RUNS} (+{} KiB); VmRSS {} KiB -> {} KiB after one -> {} KiB after {RUNS}",
        hwm_before,
        hwm_after_one,
        growth_one_kib,
        hwm_after,
        hwm_after.saturating_sub(hwm_before),
        rss_before,
        rss_after_one,
        rss_after
    );
    println!(
        "BENCH refused 40 MB upload (413, declared over the limit, sent whole): {refused_secs:.3} s, server VmHWM +{:.1} MiB{}",
        refused_growth_kib as f64 / 1024.0,
        if reset { "" } else { " (peak could not be reset: growth may be hidden)" }
    );
    println!(
        "BENCH goal throughput >= 0.5 x baseline: {} ({ratio:.2})",
        if ratio >= 0.5 { "met" } else { "NOT met" }
    );
    println!(
        "BENCH goal peak memory growth < 16 MiB for one upload: {} ({:.1} MiB)",
        if growth_one_kib < 16 * 1024 {
            "met"
        } else {
            "NOT met"
        },
        growth_one_kib as f64 / 1024.0
    );
}

//! Resilience, against the real binary: SIGKILL at random moments while clients send messages
//! with attachments (every acknowledged message survives with its file intact, the database and
//! the store stay consistent, no temporary file is left); a full disk (a small tmpfs) while an
//! attachment is sent; and a minute of load from many signed-in clients (no 5xx, no lost
//! message, flat memory).
//!
//! Randomness comes from a xorshift generator seeded from the clock; the seed is printed, and
//! `RESILIENCE_SEED` replays a run. `RESILIENCE_LOAD_SECS` shortens the load test while
//! developing (never below 10 s).

use crate::harness::*;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------------
// Randomness

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }
}

fn seed(test: &str) -> u64 {
    let seed = std::env::var("RESILIENCE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            nanos ^ (u64::from(std::process::id()) << 32)
        });
    println!("{test}: seed {seed} (RESILIENCE_SEED={seed} replays it)");
    seed.max(1)
}

// ---------------------------------------------------------------------------------------------
// Files

/// A small PDF whose bytes carry `label` (so every upload is unique), then pseudo-random bytes.
fn pdf(label: &str, size: usize) -> Vec<u8> {
    let mut v = format!("%PDF-1.4\n% {label}\n").into_bytes();
    let mut rng = Rng::new(label.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }));
    while v.len() < size {
        v.push(rng.next() as u8);
    }
    v
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn blob_path(data: &Path, sha256: &str) -> PathBuf {
    data.join("blobs")
        .join("sha256")
        .join(&sha256[..2])
        .join(&sha256[2..])
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

fn tmp_files(data: &Path) -> Vec<PathBuf> {
    files_in(&data.join("blobs").join("tmp"))
}

fn blob_count(data: &Path) -> usize {
    files_in(&data.join("blobs").join("sha256"))
        .iter()
        .map(|prefix| files_in(prefix).len())
        .sum()
}

// ---------------------------------------------------------------------------------------------
// HTTP that reports failures instead of panicking (the server may be killed at any moment)

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn location(&self) -> &str {
        self.header("Location").unwrap_or("")
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The visible words of an HTML page, for messages.
    fn words(&self) -> String {
        let text = self.text();
        let main = text.split("<main").nth(1).unwrap_or(&text);
        let mut out = String::new();
        let mut in_tag = false;
        for c in main.chars() {
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
        out.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("Transfer-Encoding") && v.contains("chunked"));
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Content-Length"))
        .and_then(|(_, v)| v.parse::<usize>().ok());
    if chunked {
        let (data, complete) = dechunk(&body);
        if !complete {
            return None;
        }
        body = data;
    } else if let Some(length) = length {
        if body.len() < length {
            return None;
        }
        body.truncate(length);
    }
    Some(Reply {
        status,
        headers,
        body,
    })
}

/// The data of a chunked body, and whether its last chunk arrived.
fn dechunk(mut data: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let Ok(size) = usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16)
        else {
            return (out, false);
        };
        if size == 0 {
            return (out, true);
        }
        let start = eol + 2;
        if data.len() < start + size + 2 {
            return (out, false);
        }
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
    (out, false)
}

/// One request on its own connection; the body is written by a second thread when it is large,
/// so that a server answering before reading everything is still heard.
fn exchange(
    client: &mut Client,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    limit: Duration,
) -> Result<Reply, String> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        client.addr,
        body.len()
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
    let mut stream = TcpStream::connect_timeout(&client.addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(limit))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(limit))
        .map_err(|e| e.to_string())?;
    let (raw, read) = if body.len() <= 64 * 1024 {
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        stream
            .write_all(&bytes)
            .map_err(|e| format!("write: {e}"))?;
        let mut raw = Vec::new();
        let read = stream.read_to_end(&mut raw);
        (raw, read)
    } else {
        let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
        std::thread::scope(|s| {
            s.spawn(move || {
                let _ = writer.write_all(head.as_bytes());
                let _ = writer.write_all(body);
            });
            let mut raw = Vec::new();
            let read = stream.read_to_end(&mut raw);
            (raw, read)
        })
    };
    // A response cut short (the server was killed while sending it) is no answer.
    let reply = parse_reply(&raw).ok_or_else(|| {
        format!(
            "no complete response ({} bytes, {:?})",
            raw.len(),
            read.err().map(|e| e.kind())
        )
    })?;
    for (k, value) in &reply.headers {
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
    Ok(reply)
}

const LIMIT: Duration = Duration::from_secs(30);

fn get(client: &mut Client, path: &str) -> Result<Reply, String> {
    exchange(client, "GET", path, &[], b"", LIMIT)
}

fn value_after(text: &str, marker: &str) -> Option<String> {
    let start = text.find(marker)? + marker.len();
    Some(text[start..].split('"').next()?.to_owned())
}

/// Signs in through the form, as a browser does.
fn sign_in(client: &mut Client, portal: bool, email: &str) -> Result<(), String> {
    let page = if portal {
        "/portal/login"
    } else {
        "/practice/login"
    };
    let form = get(client, page)?;
    let csrf = value_after(&form.text(), "name=\"csrf\" value=\"")
        .ok_or_else(|| format!("no CSRF field on {page} ({})", form.status))?;
    let body = encode_form(&[
        ("csrf", &csrf),
        ("email", email),
        ("password", DEMO_PASSWORD),
    ]);
    let reply = exchange(
        client,
        "POST",
        page,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
        LIMIT,
    )?;
    if reply.status == 303 {
        Ok(())
    } else {
        Err(format!("sign-in of {email} answered {}", reply.status))
    }
}

fn signed_in(server: &Server, portal: bool, email: &str) -> Client {
    let mut client = server.client();
    sign_in(&mut client, portal, email).unwrap();
    client
}

/// What the form page says: its CSRF token and its idempotency key, or the reply that was not a
/// form page.
fn form_tokens(client: &mut Client, page: &str) -> Result<Result<(String, String), Reply>, String> {
    let reply = get(client, page)?;
    if reply.status != 200 {
        return Ok(Err(reply));
    }
    let text = reply.text();
    match (
        value_after(&text, "name=\"csrf\" value=\""),
        value_after(&text, "name=\"key\" value=\""),
    ) {
        (Some(csrf), Some(key)) => Ok(Ok((csrf, key))),
        _ => Ok(Err(reply)),
    }
}

const BOUNDARY: &str = "----CarepostResilience5e1d7c9a0b3f";

fn multipart(fields: &[(&str, &str)], file: Option<(&str, &[u8])>) -> (String, Vec<u8>) {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    let (filename, bytes) = file.unwrap_or(("", b""));
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={BOUNDARY}"), body)
}

/// Fills the message form of `page` and posts it to `action`. `Ok(Err(reply))` when the form
/// page itself could not be had.
fn send_message(
    client: &mut Client,
    page: &str,
    action: &str,
    fields: &[(&str, &str)],
    file: Option<(&str, &[u8])>,
) -> Result<Result<Reply, Reply>, String> {
    let (csrf, key) = match form_tokens(client, page)? {
        Ok(tokens) => tokens,
        Err(reply) => return Ok(Err(reply)),
    };
    let mut all = vec![("csrf", csrf.as_str()), ("key", key.as_str())];
    all.extend_from_slice(fields);
    let (content_type, body) = multipart(&all, file);
    exchange(
        client,
        "POST",
        action,
        &[("Content-Type", &content_type)],
        &body,
        LIMIT,
    )
    .map(Ok)
}

/// A portal account writes a new message to a practice member.
fn portal_new(
    client: &mut Client,
    recipient: &str,
    subject: &str,
    body: &str,
    file: Option<(&str, &[u8])>,
) -> Result<Result<Reply, Reply>, String> {
    send_message(
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

/// A reply in a thread; `view` is "/portal/messages" or "/practice/messages".
fn reply_in(
    client: &mut Client,
    view: &str,
    thread: i64,
    body: &str,
    file: Option<(&str, &[u8])>,
) -> Result<Result<Reply, Reply>, String> {
    send_message(
        client,
        &format!("{view}/{thread}"),
        &format!("{view}/{thread}/reply"),
        &[("body", body), ("link", "")],
        file,
    )
}

/// The thread a successful send redirected to.
fn thread_of(reply: &Reply) -> Option<i64> {
    if reply.status != 303 {
        return None;
    }
    reply
        .location()
        .trim_start_matches("/portal/messages/")
        .trim_start_matches("/practice/messages/")
        .split(['#', '?'])
        .next()?
        .parse()
        .ok()
}

/// Ids in links of the form `{prefix}{id}` followed by a quote (not sub-pages).
fn linked_ids(text: &str, prefix: &str) -> Vec<i64> {
    let marker = format!("href=\"{prefix}");
    text.match_indices(&marker)
        .filter_map(|(at, _)| {
            let rest = &text[at + marker.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let after = rest[digits.len()..].chars().next();
            (after == Some('"')).then(|| digits.parse().ok()).flatten()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The database and `carepost verify`

fn scalar(data: &Path, sql: &str, params: &[&str]) -> String {
    let rows = db_rows(data, sql, params);
    assert_eq!(rows.len(), 1, "one row from {sql:?}: {rows:?}");
    rows[0][0].clone()
}

#[track_caller]
fn assert_integrity(data: &Path) {
    let rows = db_rows(data, "PRAGMA integrity_check", &[]);
    assert_eq!(rows, vec![vec!["ok".to_owned()]], "PRAGMA integrity_check");
}

/// What `carepost verify` said.
#[derive(Debug)]
struct Verified {
    code: i32,
    checked: usize,
    references: usize,
    missing: usize,
    corrupt: usize,
    unreferenced: usize,
    /// The hashes of the unreferenced files.
    unreferenced_hashes: Vec<String>,
    output: String,
}

fn verify(data: &Path) -> Verified {
    let (code, out, err) = run(&["verify", "--data", data.to_str().unwrap()], &[], "");
    let summary = out
        .lines()
        .find(|l| l.contains("stored files checked"))
        .unwrap_or_else(|| panic!("no summary from carepost verify:\n{out}\n{err}"));
    let numbers: Vec<usize> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(numbers.len(), 5, "summary {summary:?}");
    let unreferenced_hashes = out
        .lines()
        .filter_map(|l| l.strip_suffix(" is not referenced by any message"))
        .map(|p| {
            let path = Path::new(p);
            format!(
                "{}{}",
                path.parent()
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_string_lossy(),
                path.file_name().unwrap().to_string_lossy()
            )
        })
        .collect();
    Verified {
        code,
        checked: numbers[0],
        references: numbers[1],
        missing: numbers[2],
        corrupt: numbers[3],
        unreferenced: numbers[4],
        unreferenced_hashes,
        output: format!("{out}{err}"),
    }
}

fn audit_verify(data: &Path) -> (i32, String) {
    let (code, out, err) = run(
        &["audit", "verify", "--data", data.to_str().unwrap()],
        &[],
        "",
    );
    (code, format!("{out}{err}"))
}

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------------------------
// 1. SIGKILL at random moments

/// A message the server acknowledged (303 to its thread).
#[derive(Clone)]
struct Acked {
    body: String,
    thread: i64,
    sha256: String,
    pdf: Vec<u8>,
}

/// What one sending client saw in one cycle.
#[derive(Default)]
struct CycleLog {
    attempts: usize,
    acked: Vec<Acked>,
    /// Answers other than 303 (the form page or the send), which must not happen.
    unexpected: Vec<String>,
}

/// Sends messages with attachments as Alex until told to stop: new threads to Dr. Lee and
/// replies in the thread last acknowledged.
fn crash_sender(
    mut client: Client,
    lee: String,
    cycle: usize,
    who: usize,
    seed: u64,
    stop: Arc<AtomicBool>,
    attempted: Arc<Mutex<HashSet<String>>>,
) -> (CycleLog, Client) {
    let mut rng = Rng::new(seed);
    let mut log = CycleLog::default();
    let mut last_thread = None;
    let mut seq = 0;
    while !stop.load(Ordering::SeqCst) {
        seq += 1;
        let body = format!("crash c{cycle} t{who} n{seq} s{seed}");
        let bytes = pdf(&body, rng.between(1_000, 24_000) as usize);
        attempted.lock().unwrap().insert(sha256_hex(&bytes));
        log.attempts += 1;
        let file = Some(("scan.pdf", bytes.as_slice()));
        let result = match last_thread {
            Some(thread) if seq % 2 == 0 => {
                reply_in(&mut client, "/portal/messages", thread, &body, file)
            }
            _ => portal_new(
                &mut client,
                &lee,
                &format!("Crash c{cycle} t{who} n{seq}"),
                &body,
                file,
            ),
        };
        match result {
            Ok(Ok(reply)) => match thread_of(&reply) {
                Some(thread) => {
                    last_thread = Some(thread);
                    log.acked.push(Acked {
                        body,
                        thread,
                        sha256: sha256_hex(&bytes),
                        pdf: bytes,
                    });
                }
                None => log.unexpected.push(format!(
                    "send answered {} {}: {}",
                    reply.status,
                    reply.location(),
                    reply.words()
                )),
            },
            Ok(Err(page)) => {
                if page.status == 303 && page.location().starts_with("/portal/login") {
                    // Not expected (sessions are in the database), but recover and say so.
                    log.unexpected
                        .push("the session was gone; signed in again".to_owned());
                    if sign_in(&mut client, true, "alex@demo.test").is_err() {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                } else {
                    log.unexpected.push(format!(
                        "form page answered {}: {}",
                        page.status,
                        page.words()
                    ));
                }
            }
            // The connection failed: the server is being killed (or restarted).
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
        // A short, random pause: the kill lands anywhere in a send or between two.
        std::thread::sleep(Duration::from_millis(rng.below(15)));
    }
    (log, client)
}

/// Every acknowledged message is in the database with its attachment row, and its file is in
/// the store with the recorded hash. Every message of the test that was committed (acknowledged
/// or not) has its attachment, whose file is intact.
#[track_caller]
fn check_acknowledged(data: &Path, acked: &[Acked]) {
    let rows = db_rows(
        data,
        "SELECT m.body, m.thread_id, coalesce(a.id, ''), coalesce(a.sha256, ''), coalesce(a.size, '')
           FROM message m LEFT JOIN attachment a ON a.message_id = m.id
          WHERE m.body LIKE 'crash %'",
        &[],
    );
    let mut by_body: HashMap<&str, &Vec<String>> = HashMap::new();
    for row in &rows {
        assert!(
            by_body.insert(&row[0], row).is_none(),
            "message {:?} is in the database twice",
            row[0]
        );
        assert!(
            !row[2].is_empty(),
            "message {:?} was committed without its attachment row",
            row[0]
        );
        let path = blob_path(data, &row[3]);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "message {:?}: its file {} is not readable: {e}",
                row[0],
                path.display()
            )
        });
        assert_eq!(
            (sha256_hex(&bytes), bytes.len().to_string()),
            (row[3].clone(), row[4].clone()),
            "message {:?}: the stored file does not match its record",
            row[0]
        );
    }
    for a in acked {
        let row = by_body.get(a.body.as_str()).unwrap_or_else(|| {
            panic!(
                "the acknowledged message {:?} (thread {}) is not in the database",
                a.body, a.thread
            )
        });
        if row[3] != a.sha256 {
            let stored = std::fs::read(blob_path(data, &row[3])).unwrap_or_default();
            panic!(
                "the acknowledged message {:?} has an attachment that differs from the file sent: \
                 {} bytes sent, {} stored{}",
                a.body,
                a.pdf.len(),
                stored.len(),
                if stored.starts_with(&a.pdf) {
                    format!(
                        ", which are the bytes sent followed by {:?} (the CRLF before the \
                         multipart boundary, kept as file data)",
                        String::from_utf8_lossy(&stored[a.pdf.len()..])
                    )
                } else {
                    String::new()
                }
            );
        }
        assert_eq!(row[1], a.thread.to_string(), "thread of {:?}", a.body);
        assert_eq!(row[3], a.sha256, "attachment hash of {:?}", a.body);
        assert_eq!(
            row[4],
            a.pdf.len().to_string(),
            "attachment size of {:?}",
            a.body
        );
    }
}

#[test]
fn acknowledged_messages_survive_sigkill_at_random_moments() {
    const CYCLES: usize = 24;
    let seed = seed("CRASH");
    let mut rng = Rng::new(seed);
    let dir = TempDir::new("crash");
    let data = dir.path().join("data");
    let started = Instant::now();

    let mut server = Server::start_in(&data, Options::demo());
    let lee = scalar(
        &data,
        "SELECT id FROM staff WHERE email = ?",
        &["dr.lee@demo.test"],
    );
    let mut alex = signed_in(&server, true, "alex@demo.test");
    let attempted = Arc::new(Mutex::new(HashSet::new()));
    let mut acked: Vec<Acked> = Vec::new();
    let mut attempts = 0;
    let mut temp_left_by_kills = 0;

    for cycle in 1..=CYCLES {
        let clients = rng.between(2, 4) as usize;
        let delay = rng.between(30, 900);
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..clients)
            .map(|who| {
                let mut client = server.client();
                client.cookies = alex.cookies.clone();
                let (lee, stop, attempted) = (lee.clone(), stop.clone(), attempted.clone());
                let seed = rng.next();
                std::thread::spawn(move || {
                    crash_sender(client, lee, cycle, who, seed, stop, attempted)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(delay));
        unsafe_kill(server.child.id(), 9);
        let status = server.child.wait().unwrap();
        stop.store(true, Ordering::SeqCst);
        let mut cycle_acked = 0;
        let mut cycle_attempts = 0;
        for (i, handle) in handles.into_iter().enumerate() {
            let (log, client) = handle.join().unwrap();
            assert!(
                log.unexpected.is_empty(),
                "cycle {cycle}: unexpected answers: {:?}",
                log.unexpected
            );
            cycle_acked += log.acked.len();
            cycle_attempts += log.attempts;
            acked.extend(log.acked);
            if i == 0 {
                alex.cookies = client.cookies;
            }
        }
        attempts += cycle_attempts;
        assert!(
            status.signal() == Some(9),
            "cycle {cycle}: the server ended by itself: {status:?}\n{}",
            server.log()
        );
        let left = tmp_files(&data).len();
        temp_left_by_kills += left;
        drop(server);

        let restart = Instant::now();
        server = Server::start_in(&data, Options::demo());
        let start_ms = restart.elapsed().as_millis();
        let leftover_note = server
            .log()
            .lines()
            .find(|l| l.contains("unfinished upload"))
            .map(|l| l.split("INFO").last().unwrap_or(l).trim().to_owned())
            .unwrap_or_default();
        assert!(
            tmp_files(&data).is_empty(),
            "cycle {cycle}: temporary files are left after the start: {:?}",
            tmp_files(&data)
        );
        check_acknowledged(&data, &acked);
        assert_integrity(&data);
        let report = verify(&data);
        assert_eq!(
            (report.missing, report.corrupt),
            (0, 0),
            "cycle {cycle}: carepost verify found missing or corrupt files:\n{}",
            report.output
        );
        // Files of sends killed before their commit are removed at this start: verify is clean.
        assert_eq!(
            report.code, 0,
            "cycle {cycle}: carepost verify failed:\n{}",
            report.output
        );
        println!(
            "CRASH cycle {cycle:2}: {clients} clients, SIGKILL after {delay:3} ms: {cycle_acked:2} of \
             {cycle_attempts:2} sends acknowledged; {left} temporary file(s) left by the kill {leftover_note}; \
             verify: {} files, {} references, {} unreferenced; restart {start_ms} ms, checks {} ms",
            report.checked, report.references, report.unreferenced, restart.elapsed().as_millis() - start_ms
        );
    }

    // The end: everything once more, then every acknowledged file downloaded as Alex.
    check_acknowledged(&data, &acked);
    assert_integrity(&data);
    let report = verify(&data);
    let (audit_code, audit_out) = audit_verify(&data);
    assert_eq!(audit_code, 0, "carepost audit verify:\n{audit_out}");
    let mut downloaded = 0;
    let mut client = server.client();
    client.cookies = alex.cookies.clone();
    let ids: HashMap<String, String> = db_rows(
        &data,
        "SELECT m.body, a.id FROM message m JOIN attachment a ON a.message_id = m.id
          WHERE m.body LIKE 'crash %'",
        &[],
    )
    .into_iter()
    .map(|r| (r[0].clone(), r[1].clone()))
    .collect();
    for a in &acked {
        let path = format!("/portal/messages/{}/files/{}", a.thread, ids[&a.body]);
        let reply = get(&mut client, &path).unwrap();
        assert_eq!(reply.status, 200, "download {path}: {}", reply.words());
        assert!(
            reply.body == a.pdf,
            "download {path}: the bytes differ from what was sent for {:?}",
            a.body
        );
        downloaded += 1;
    }
    // An unreferenced file can only be the upload of a send that was not acknowledged: stored,
    // then killed before its message was committed.
    let acked_hashes: HashSet<&str> = acked.iter().map(|a| a.sha256.as_str()).collect();
    let attempted = attempted.lock().unwrap();
    for hash in &report.unreferenced_hashes {
        assert!(
            attempted.contains(hash) && !acked_hashes.contains(hash.as_str()),
            "unreferenced file {hash} is not from an unacknowledged send"
        );
    }
    assert_eq!(
        (report.missing, report.corrupt),
        (0, 0),
        "carepost verify:\n{}",
        report.output
    );
    assert!(
        acked.len() >= CYCLES,
        "too few acknowledged sends to prove anything: {}",
        acked.len()
    );
    let committed: usize = scalar(
        &data,
        "SELECT count(*) FROM message WHERE body LIKE 'crash %'",
        &[],
    )
    .parse()
    .unwrap();
    println!(
        "CRASH summary: {CYCLES} SIGKILL cycles in {:.1} s; {attempts} sends attempted, {} acknowledged, \
         {committed} committed ({} committed but killed before the answer); all {downloaded} \
         acknowledged files downloaded intact; {temp_left_by_kills} temporary files left by kills, all \
         removed at the next start; integrity_check ok; audit chain ok",
        started.elapsed().as_secs_f64(),
        acked.len(),
        committed - acked.len()
    );
    println!(
        "CRASH verify at the end: exit {}, {} files checked, {} references, {} missing, {} corrupt, \
         {} unreferenced",
        report.code, report.checked, report.references, report.missing, report.corrupt, report.unreferenced
    );
    // Files stored for sends killed before their message was committed are removed at the next
    // start, so verify is clean after the crashes.
    assert_eq!(
        (report.code, report.unreferenced),
        (0, 0),
        "carepost verify is clean after the crashes:\n{}",
        report.output
    );
    let status = server.terminate();
    assert!(status.success(), "carepost stops cleanly: {status:?}");
}

// ---------------------------------------------------------------------------------------------
// 2. A full disk

/// A tmpfs mounted for the test, unmounted when dropped (also when the test fails).
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Tmpfs {
                path: path.to_path_buf(),
            })
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

fn free_bytes(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: statvfs fills a plain struct from a valid NUL-terminated path.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0, "statvfs");
    s.f_bavail as u64 * s.f_frsize as u64
}

/// Writes `bytes` zero bytes (or until the disk is full) into a new file; returns how many.
fn fill(path: &Path, bytes: u64) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0;
    while written < bytes {
        let n = chunk.len().min((bytes - written) as usize);
        match file.write(&chunk[..n]) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    let _ = file.sync_all();
    written
}

fn counts(data: &Path) -> (String, String) {
    (
        scalar(data, "SELECT count(*) FROM message", &[]),
        scalar(data, "SELECT count(*) FROM attachment", &[]),
    )
}

#[test]
fn a_full_disk_refuses_the_attachment_clearly_and_stays_consistent() {
    let dir = TempDir::new("fulldisk");
    let mount_point = dir.path().join("small");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mounted = if root {
        Tmpfs::mount(&mount_point, "8m")
    } else {
        Err("not running as root".to_owned())
    };
    let _mount = match mounted {
        Ok(m) => m,
        Err(why) => {
            if std::env::var_os("CI").is_some() {
                panic!("the full-disk test needs to mount a small tmpfs (as root): {why}");
            }
            println!("SKIPPED: a_full_disk_refuses_the_attachment_clearly_and_stays_consistent needs to mount a small tmpfs as root ({why})");
            return;
        }
    };
    let data = mount_point.join("data");
    let server = Server::start_in(&data, Options::demo());
    let lee = scalar(
        &data,
        "SELECT id FROM staff WHERE email = ?",
        &["dr.lee@demo.test"],
    );
    let mut alex = signed_in(&server, true, "alex@demo.test");

    // With room, a small attachment goes.
    let small = pdf("full disk: small", 20_000);
    let reply = portal_new(
        &mut alex,
        &lee,
        "Before",
        "full-disk before",
        Some(("before.pdf", &small)),
    )
    .unwrap()
    .unwrap_or_else(|r| panic!("form page {}", r.status));
    let first_thread =
        thread_of(&reply).unwrap_or_else(|| panic!("send with room: {}", reply.words()));

    // Fill the disk so that the database still has room but a 3 MB file does not fit.
    let filler = mount_point.join("filler");
    let keep_free = 1_536 * 1024;
    let free = free_bytes(&mount_point);
    fill(&filler, free.saturating_sub(keep_free));
    let free_now = free_bytes(&mount_point);
    println!(
        "FULLDISK tmpfs of 8 MB: {free} bytes free after seeding, {free_now} left after filling"
    );
    assert!(
        free_now < 3_000_000 && free_now > 512 * 1024,
        "free {free_now}"
    );

    let big = pdf("full disk: big", 3 * 1024 * 1024);
    let before = counts(&data);
    let blobs_before = blob_count(&data);
    let sent_at = Instant::now();
    let reply = portal_new(
        &mut alex,
        &lee,
        "Too big for the disk",
        "full-disk big",
        Some(("big.pdf", &big)),
    )
    .unwrap()
    .unwrap_or_else(|r| panic!("form page {}", r.status));
    let took = sent_at.elapsed();
    let big_status = reply.status;
    let words = reply.words();
    println!(
        "FULLDISK sending 3 MB with {free_now} bytes free: {} after {} ms: {words:?}",
        reply.status,
        took.as_millis()
    );
    // The log is read from the server's stderr by another thread: wait for the request's line.
    let log_deadline = Instant::now() + Duration::from_secs(5);
    while server.log().matches("POST /portal/messages/new").count() < 2
        && Instant::now() < log_deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = server.log();
    let log_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN") || l.contains("/portal/messages/new"))
        .collect();
    println!("FULLDISK server log: {log_lines:#?}");

    // The database and the store are as before, and nothing is left behind.
    assert_eq!(
        counts(&data),
        before,
        "no message or attachment row was written"
    );
    assert_eq!(
        blob_count(&data),
        blobs_before,
        "no file was added to the store"
    );
    assert!(
        tmp_files(&data).is_empty(),
        "temporary files left: {:?}",
        tmp_files(&data)
    );
    assert_integrity(&data);
    let report = verify(&data);
    assert_eq!(report.code, 0, "carepost verify:\n{}", report.output);

    // The database still works: a message without a file goes while the disk stays full.
    let reply = portal_new(&mut alex, &lee, "Text only", "full-disk text only", None)
        .unwrap()
        .unwrap_or_else(|r| panic!("form page {}", r.status));
    assert!(
        thread_of(&reply).is_some(),
        "a text message with the disk nearly full: {} {}",
        reply.status,
        reply.words()
    );

    // Once space is freed, the same file goes.
    std::fs::remove_file(&filler).unwrap();
    let reply = portal_new(
        &mut alex,
        &lee,
        "After",
        "full-disk after",
        Some(("big.pdf", &big)),
    )
    .unwrap()
    .unwrap_or_else(|r| panic!("form page {}", r.status));
    let thread = thread_of(&reply).unwrap_or_else(|| {
        panic!(
            "send after freeing space: {} {}",
            reply.status,
            reply.words()
        )
    });
    assert_ne!(thread, first_thread);
    let sha = sha256_hex(&big);
    assert_eq!(
        scalar(&data, "SELECT a.sha256 FROM attachment a JOIN message m ON m.id = a.message_id WHERE m.body = ?", &["full-disk after"]),
        sha
    );
    assert_eq!(
        sha256_hex(&std::fs::read(blob_path(&data, &sha)).unwrap()),
        sha
    );
    assert!(tmp_files(&data).is_empty());
    assert_integrity(&data);
    let report = verify(&data);
    assert_eq!(report.code, 0, "carepost verify:\n{}", report.output);

    // The clear message, checked last so that the consistency checks above always run: an error
    // page at once; the failure is the server's (5xx), not a malformed request (400); the page
    // does not blame the sender's connection; and the operator's log names the cause.
    let mut unclear = Vec::new();
    if took >= Duration::from_secs(20) {
        unclear.push(format!("the answer took {took:?}"));
    }
    if big_status < 500 {
        unclear.push(format!(
            "the status is {big_status}, which says the request was at fault, not the server's storage"
        ));
    }
    if words.contains("did not arrive completely") {
        unclear.push(format!(
            "the page tells the sender the upload did not arrive completely: {words:?}"
        ));
    }
    let names_cause = log.lines().any(|l| {
        (l.contains("ERROR") || l.contains("WARN"))
            && (l.contains("No space left") || l.contains("os error 28"))
    });
    if !names_cause {
        unclear.push(
            "the server log has no error naming the full disk (No space left on device)".to_owned(),
        );
    }
    assert!(
        unclear.is_empty(),
        "a full disk is not reported clearly:\n  {}",
        unclear.join("\n  ")
    );
    drop(server);
}

// ---------------------------------------------------------------------------------------------
// 3. Load

/// What one load client saw.
#[derive(Default)]
struct LoadStats {
    statuses: BTreeMap<u16, u64>,
    latencies_us: Vec<u64>,
    /// 5xx answers and failed connections, described.
    failures: Vec<String>,
    transport_errors: u64,
    /// Sends answered 303: (body, attachment hash or "").
    acked: Vec<(String, String)>,
    sends: u64,
    with_file: u64,
    downloads: u64,
}

impl LoadStats {
    fn request(
        &mut self,
        client: &mut Client,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Option<Reply> {
        let started = Instant::now();
        let result = exchange(client, method, path, headers, body, LIMIT);
        self.latencies_us.push(started.elapsed().as_micros() as u64);
        match result {
            Ok(reply) => {
                *self.statuses.entry(reply.status).or_default() += 1;
                if reply.status >= 500 {
                    self.failures.push(format!(
                        "{method} {path} answered {}: {}",
                        reply.status,
                        reply.words()
                    ));
                }
                Some(reply)
            }
            Err(e) => {
                self.transport_errors += 1;
                self.failures.push(format!("{method} {path}: {e}"));
                None
            }
        }
    }

    fn get(&mut self, client: &mut Client, path: &str) -> Option<Reply> {
        self.request(client, "GET", path, &[], b"")
    }

    /// The message form of `page` posted to `action`; records the message when acknowledged.
    fn send(
        &mut self,
        client: &mut Client,
        page: &str,
        action: &str,
        fields: &[(&str, &str)],
        file: Option<&[u8]>,
    ) {
        let Some(form) = self.get(client, page).filter(|r| r.status == 200) else {
            return;
        };
        let text = form.text();
        let (Some(csrf), Some(key)) = (
            value_after(&text, "name=\"csrf\" value=\""),
            value_after(&text, "name=\"key\" value=\""),
        ) else {
            return;
        };
        let mut all = vec![("csrf", csrf.as_str()), ("key", key.as_str())];
        all.extend_from_slice(fields);
        let (content_type, body) = multipart(&all, file.map(|f| ("result.pdf", f)));
        self.sends += 1;
        self.with_file += u64::from(file.is_some());
        let reply = self.request(
            client,
            "POST",
            action,
            &[("Content-Type", &content_type)],
            &body,
        );
        if let Some(reply) = reply {
            let message = fields.iter().find(|(k, _)| *k == "body").unwrap().1;
            if thread_of(&reply).is_some() {
                self.acked
                    .push((message.to_owned(), file.map(sha256_hex).unwrap_or_default()));
            } else if reply.status < 500 {
                self.failures.push(format!(
                    "sending {message:?} answered {}: {}",
                    reply.status,
                    reply.words()
                ));
            }
        }
    }

    fn merge(&mut self, other: LoadStats) {
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.latencies_us.extend(other.latencies_us);
        self.failures.extend(other.failures);
        self.transport_errors += other.transport_errors;
        self.acked.extend(other.acked);
        self.sends += other.sends;
        self.with_file += other.with_file;
        self.downloads += other.downloads;
    }
}

/// Links to attachments on a thread page.
fn file_links(text: &str) -> Vec<String> {
    text.split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|href| href.contains("/files/") && !href.ends_with("/chart"))
        .map(|href| href.replace("&amp;", "&"))
        .collect()
}

/// One signed-in client reading and sending until the deadline: a patient (or caregiver) in the
/// portal, or a practice member.
fn load_client(
    mut client: Client,
    portal: bool,
    name: String,
    recipients: Vec<String>,
    seed: u64,
    deadline: Instant,
) -> LoadStats {
    let mut rng = Rng::new(seed);
    let mut stats = LoadStats::default();
    let view = if portal {
        "/portal/messages"
    } else {
        "/practice/messages"
    };
    let mut threads: Vec<i64> = Vec::new();
    let mut seq = 0;
    while Instant::now() < deadline {
        let roll = rng.below(100);
        let thread =
            (!threads.is_empty()).then(|| threads[rng.below(threads.len() as u64) as usize]);
        match (roll, thread) {
            (0..=34, _) | (35..=64 | 88.., None) => {
                if let Some(reply) = stats.get(&mut client, view).filter(|r| r.status == 200) {
                    let found = linked_ids(&reply.text(), &format!("{view}/"));
                    if !found.is_empty() {
                        threads = found;
                    }
                }
            }
            (35..=64, Some(thread)) => {
                let page = stats.get(&mut client, &format!("{view}/{thread}"));
                let links = page.map(|p| file_links(&p.text())).unwrap_or_default();
                if !links.is_empty() && rng.below(3) == 0 {
                    let link = &links[rng.below(links.len() as u64) as usize];
                    if stats.get(&mut client, link).is_some() {
                        stats.downloads += 1;
                    }
                }
            }
            (65..=74, _) => {
                let page = if portal {
                    "/portal"
                } else if rng.below(2) == 0 {
                    "/practice/patients"
                } else {
                    "/practice"
                };
                stats.get(&mut client, page);
            }
            (75..=87, _) if portal => {
                seq += 1;
                let body = format!("load {name} n{seq} s{seed}");
                let file =
                    (rng.below(3) == 0).then(|| pdf(&body, rng.between(1_000, 16_000) as usize));
                let to = &recipients[rng.below(recipients.len() as u64) as usize];
                stats.send(
                    &mut client,
                    "/portal/messages/new",
                    "/portal/messages/new",
                    &[
                        ("recipient", to),
                        ("subject", &format!("Load {name} n{seq}")),
                        ("body", &body),
                        ("link", ""),
                    ],
                    file.as_deref(),
                );
            }
            (_, Some(thread)) => {
                seq += 1;
                let body = format!("load {name} n{seq} s{seed}");
                let file =
                    (rng.below(4) == 0).then(|| pdf(&body, rng.between(1_000, 16_000) as usize));
                stats.send(
                    &mut client,
                    &format!("{view}/{thread}"),
                    &format!("{view}/{thread}/reply"),
                    &[("body", &body), ("link", "")],
                    file.as_deref(),
                );
            }
            (_, None) => {
                stats.get(&mut client, view);
            }
        }
    }
    stats
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn load_secs() -> u64 {
    std::env::var("RESILIENCE_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60u64)
        .max(10)
}

#[test]
fn a_minute_of_load_from_many_signed_in_clients() {
    let seed = seed("LOAD");
    let mut rng = Rng::new(seed);
    let server = Server::start(Options::demo());
    let data = server.data.clone();
    let id_of = |email: &str| scalar(&data, "SELECT id FROM staff WHERE email = ?", &[email]);
    let recipients = vec![id_of("dr.lee@demo.test"), id_of("np.kim@demo.test")];
    // 16 clients: 8 in the portal (a patient and a caregiver), 8 in the practice view.
    let people: Vec<(bool, &str)> = [
        (true, "alex@demo.test", 5),
        (true, "jordan@demo.test", 3),
        (false, "dr.lee@demo.test", 3),
        (false, "np.kim@demo.test", 3),
        (false, "rn.cho@demo.test", 2),
    ]
    .iter()
    .flat_map(|&(portal, email, n)| std::iter::repeat_n((portal, email), n))
    .collect();
    let rss_at_start = rss_kb(server.child.id()).unwrap_or(0);
    let clients: Vec<Client> = people
        .iter()
        .map(|&(portal, email)| signed_in(&server, portal, email))
        .collect();
    let secs = load_secs();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);

    let pid = server.child.id();
    let sampler = std::thread::spawn(move || {
        let mut samples = Vec::new();
        loop {
            if let Some(kb) = rss_kb(pid) {
                samples.push((started.elapsed().as_secs_f64(), kb));
            }
            if Instant::now() >= deadline {
                return samples;
            }
            std::thread::sleep(Duration::from_secs(2).min(deadline - Instant::now()));
        }
    });
    let handles: Vec<_> = people
        .iter()
        .zip(clients)
        .enumerate()
        .map(|(i, (&(portal, email), client))| {
            let name = format!("{}{i}", email.split('@').next().unwrap());
            let recipients = recipients.clone();
            let seed = rng.next();
            std::thread::spawn(move || {
                load_client(client, portal, name, recipients, seed, deadline)
            })
        })
        .collect();
    let mut stats = LoadStats::default();
    for handle in handles {
        stats.merge(handle.join().unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let samples = sampler.join().unwrap();

    // Every acknowledged message is there, with its attachment.
    let rows = db_rows(
        &data,
        "SELECT m.body, coalesce(a.sha256, '') FROM message m
           LEFT JOIN attachment a ON a.message_id = m.id WHERE m.body LIKE 'load %'",
        &[],
    );
    let stored: HashMap<String, String> = rows
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    let lost: Vec<&(String, String)> = stats
        .acked
        .iter()
        .filter(|(body, sha)| stored.get(body) != Some(sha))
        .collect();
    for (_, sha) in stats.acked.iter().filter(|(_, sha)| !sha.is_empty()) {
        let bytes = std::fs::read(blob_path(&data, sha)).unwrap();
        assert_eq!(&sha256_hex(&bytes), sha);
    }

    let total: u64 = stats.statuses.values().sum();
    let mut sorted = stats.latencies_us.clone();
    sorted.sort_unstable();
    println!(
        "LOAD {} clients ({} portal, {} practice) for {elapsed:.1} s: {total} requests, {:.1} requests/s",
        people.len(),
        people.iter().filter(|p| p.0).count(),
        people.iter().filter(|p| !p.0).count(),
        total as f64 / elapsed
    );
    println!(
        "LOAD statuses {:?}; {} transport errors; {} 5xx",
        stats.statuses,
        stats.transport_errors,
        stats.statuses.range(500..).map(|(_, n)| n).sum::<u64>()
    );
    println!(
        "LOAD latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.9),
        percentile(&sorted, 0.99),
        percentile(&sorted, 1.0)
    );
    println!(
        "LOAD sends {} ({} with a file), {} acknowledged, {} lost; {} downloads",
        stats.sends,
        stats.with_file,
        stats.acked.len(),
        lost.len(),
        stats.downloads
    );
    println!("LOAD RSS before the sign-ins: {rss_at_start} KiB");
    println!(
        "LOAD RSS samples (s: KiB): {}",
        samples
            .iter()
            .map(|(t, kb)| format!("{t:.0}: {kb}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // The sample taken at once still holds the sign-ins' password hashing; the thirds are of
    // the samples taken under load.
    let samples: Vec<(f64, u64)> = samples.into_iter().filter(|(t, _)| *t >= 1.0).collect();
    let third = (samples.len() / 3).max(1);
    let average =
        |s: &[(f64, u64)]| s.iter().map(|(_, kb)| *kb as f64).sum::<f64>() / s.len() as f64;
    let first = average(&samples[..third]);
    let last = average(&samples[samples.len() - third..]);
    println!(
        "LOAD RSS first third {first:.0} KiB, last third {last:.0} KiB: x{:.2}",
        last / first
    );
    let (audit_code, audit_out) = audit_verify(&data);
    assert_integrity(&data);

    assert!(
        stats.failures.is_empty(),
        "{} failures, the first ones: {:#?}",
        stats.failures.len(),
        &stats.failures[..stats.failures.len().min(10)]
    );
    assert!(lost.is_empty(), "acknowledged messages lost: {lost:?}");
    assert!(
        stats.acked.len() > 50,
        "too few messages sent: {}",
        stats.acked.len()
    );
    assert!(samples.len() >= 6, "RSS samples: {samples:?}");
    assert!(
        last <= first * 1.5,
        "memory grows: first third {first:.0} KiB, last third {last:.0} KiB"
    );
    assert_eq!(audit_code, 0, "carepost audit verify:\n{audit_out}");
}

// ---------------------------------------------------------------------------------------------
// 4. An upload that arrives in pieces (found by the crash test: a file stored with two bytes
//    more than were sent)

/// Sends a request whose body arrives in two pieces, `cut` bytes first and the rest after a
/// pause, as a slow or lossy network delivers it.
fn send_in_two_pieces(
    client: &Client,
    path: &str,
    content_type: &str,
    body: &[u8],
    cut: usize,
) -> Reply {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\nContent-Type: {content_type}\r\n",
        client.addr,
        body.len()
    );
    let cookie: Vec<String> = client
        .cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    head.push_str(&format!("Cookie: {}\r\n\r\n", cookie.join("; ")));
    let mut stream = TcpStream::connect(client.addr).unwrap();
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    let mut first = head.into_bytes();
    first.extend_from_slice(&body[..cut]);
    stream.write_all(&first).unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(250));
    stream.write_all(&body[cut..]).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_reply(&raw).expect("a complete response")
}

#[test]
fn an_upload_arriving_in_two_pieces_is_stored_exactly() {
    let server = Server::start(Options::demo());
    let data = server.data.clone();
    let lee = scalar(
        &data,
        "SELECT id FROM staff WHERE email = ?",
        &["dr.lee@demo.test"],
    );
    let mut alex = signed_in(&server, true, "alex@demo.test");
    let closing = format!("\r\n--{BOUNDARY}--\r\n");
    // Where the first piece ends: (what it is, which end it is measured from, offset). The
    // file's data ends at the CR of "\r\n--boundary--"; the message text at the CR of its
    // part's closing line.
    let cases: &[(&str, bool, isize)] = &[
        ("before the CR ending the file", true, 0),
        ("between that CR and its LF", true, 1),
        ("after the LF", true, 2),
        ("inside the closing boundary", true, 6),
        ("well inside the file", true, -100),
        ("between the CR and LF ending the message text", false, 1),
    ];
    let mut problems = Vec::new();
    for (n, &(name, in_file, offset)) in cases.iter().enumerate() {
        let file = pdf(&format!("two pieces {n}"), 15_000);
        let text = format!("two pieces {n}");
        let (csrf, key) = form_tokens(&mut alex, "/portal/messages/new")
            .unwrap()
            .unwrap_or_else(|r| panic!("form page {}", r.status));
        let fields = [
            ("csrf", csrf.as_str()),
            ("key", key.as_str()),
            ("recipient", lee.as_str()),
            ("subject", "In two pieces"),
            ("body", text.as_str()),
            ("link", ""),
        ];
        let (content_type, payload) = multipart(&fields, Some(("scan.pdf", &file)));
        let end = if in_file {
            payload.len() - closing.len()
        } else {
            let marker = format!("name=\"body\"\r\n\r\n{text}");
            payload
                .windows(marker.len())
                .position(|w| w == marker.as_bytes())
                .unwrap()
                + marker.len()
        };
        let cut = (end as isize + offset) as usize;
        let reply = send_in_two_pieces(&alex, "/portal/messages/new", &content_type, &payload, cut);
        if thread_of(&reply).is_none() {
            problems.push(format!(
                "split {name}: answered {}: {}",
                reply.status,
                reply.words()
            ));
            continue;
        }
        let rows = db_rows(
            &data,
            "SELECT m.body, a.sha256, a.size FROM message m JOIN attachment a ON a.message_id = m.id
              WHERE m.body LIKE ?",
            &[&format!("{text}%")],
        );
        let Some(row) = rows.first() else {
            problems.push(format!(
                "split {name}: no message starting {text:?} was stored"
            ));
            continue;
        };
        if row[0] != text {
            problems.push(format!(
                "split {name}: the message text is {:?}, {text:?} was sent",
                row[0]
            ));
        }
        if row[1] != sha256_hex(&file) {
            problems.push(format!(
                "split {name}: the attachment has {} bytes, {} were sent (the stored file is the \
                 file followed by the CRLF that belongs to the multipart boundary)",
                row[2],
                file.len()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "uploads arriving in two pieces are not stored exactly:\n  {}",
        problems.join("\n  ")
    );
}

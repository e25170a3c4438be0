//! A small SMTP server for the tests: real sockets on 127.0.0.1, std only, speaking enough of
//! RFC 5321 for mail-send over a plain connection (Carepost with `smtp.security = "none"`).
//!
//! It records every accepted message (envelope and raw data, dot-stuffing undone), can refuse
//! recipients matching a pattern with "550 5.1.1 mailbox unavailable" or answer DATA with 554,
//! can stall (no greeting, or no answer after DATA) to stand for a slow server, and can be
//! stopped and started again on the same port: "down" is simply no listener, so a connection is
//! refused while Carepost's configuration keeps pointing at the port.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One message the sink accepted (answered 250 to its DATA).
#[derive(Clone, Debug)]
pub struct Received {
    /// The address of MAIL FROM, without the angle brackets.
    pub mail_from: String,
    /// The addresses of the accepted RCPT TO commands.
    pub rcpt_to: Vec<String>,
    /// The message as sent after DATA, with CRLF line ends, the final "." line removed and
    /// dot-stuffing undone.
    pub data: String,
}

/// A command the sink refused, with its answer.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub command: String,
    pub reply: String,
}

#[derive(Default)]
struct Behaviour {
    /// RCPT TO addresses containing any of these (case-insensitive) get a 550.
    reject_recipients: Vec<String>,
    /// DATA is answered with 554 after the message is read.
    reject_data: bool,
    /// New connections get no greeting until this is cleared.
    stall_greeting: bool,
    /// After a message's final ".", no answer until this is cleared.
    hold_data: bool,
}

#[derive(Default)]
struct State {
    behaviour: Behaviour,
    received: Vec<Received>,
    refused: Vec<Refusal>,
    /// Every command line, in order, over all connections.
    commands: Vec<String>,
    connections: usize,
    /// Messages read completely whose answer is being held.
    held: usize,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.lock());
        self.changed.notify_all();
    }
}

struct Running {
    stop: Arc<AtomicBool>,
    accept: JoinHandle<()>,
}

/// The sink. Dropping it stops the listener.
pub struct SmtpSink {
    port: u16,
    shared: Arc<Shared>,
    running: Option<Running>,
}

const HOST: &str = "sink.test";

impl SmtpSink {
    /// A sink listening on a free port of 127.0.0.1.
    pub fn start() -> SmtpSink {
        let mut sink = SmtpSink {
            port: 0,
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
            }),
            running: None,
        };
        sink.listen();
        sink
    }

    /// A sink that is down: its port was free a moment ago and nothing listens on it now, so
    /// connections are refused until `up` is called.
    pub fn down() -> SmtpSink {
        let mut sink = SmtpSink::start();
        sink.stop();
        sink
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn is_up(&self) -> bool {
        self.running.is_some()
    }

    /// Starts listening again on the same port (a no-op when up).
    pub fn up(&mut self) {
        if self.running.is_none() {
            self.listen();
        }
    }

    /// Stops listening: new connections are refused. Returns once the listener is closed.
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop.store(true, Ordering::SeqCst);
            let _ = running.accept.join();
        }
    }

    fn listen(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline && self.port != 0 => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("the SMTP sink cannot listen on port {}: {e}", self.port),
            }
        };
        self.port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::clone(&self.shared);
        let stop_flag = Arc::clone(&stop);
        let accept = std::thread::spawn(move || {
            while !stop_flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let shared = Arc::clone(&shared);
                        let stop = Arc::clone(&stop_flag);
                        std::thread::spawn(move || {
                            let _ = session(stream, &shared, &stop);
                        });
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            // The listener is dropped here: the port is closed.
        });
        self.running = Some(Running { stop, accept });
    }

    // -----------------------------------------------------------------------------------------
    // Behaviour

    /// Recipients whose address contains `pattern` (case-insensitive) are refused with
    /// "550 5.1.1 mailbox unavailable".
    pub fn reject_recipients(&self, pattern: &str) {
        let pattern = pattern.to_ascii_lowercase();
        self.shared
            .update(|s| s.behaviour.reject_recipients.push(pattern));
    }

    /// Accepts every recipient again.
    pub fn accept_all_recipients(&self) {
        self.shared
            .update(|s| s.behaviour.reject_recipients.clear());
    }

    /// Answers every message's DATA with "554 5.6.0 message refused" (or stops doing so).
    pub fn reject_data(&self, on: bool) {
        self.shared.update(|s| s.behaviour.reject_data = on);
    }

    /// New connections wait for their greeting while this is on.
    pub fn stall_greeting(&self, on: bool) {
        self.shared.update(|s| s.behaviour.stall_greeting = on);
    }

    /// A message read completely waits for its answer while this is on.
    pub fn hold_data(&self, on: bool) {
        self.shared.update(|s| s.behaviour.hold_data = on);
    }

    // -----------------------------------------------------------------------------------------
    // What happened

    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().received.clone()
    }

    /// Accepted messages to this address.
    pub fn received_by(&self, address: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|m| m.rcpt_to.iter().any(|r| r.eq_ignore_ascii_case(address)))
            .collect()
    }

    pub fn refused(&self) -> Vec<Refusal> {
        self.shared.lock().refused.clone()
    }

    pub fn commands(&self) -> Vec<String> {
        self.shared.lock().commands.clone()
    }

    pub fn connections(&self) -> usize {
        self.shared.lock().connections
    }

    /// Messages read completely and waiting for their answer (`hold_data`).
    pub fn held(&self) -> usize {
        self.shared.lock().held
    }

    /// Waits until `done` holds for the sink's state, at most `limit`; false on time-out.
    fn wait(&self, limit: Duration, done: impl Fn(&State) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut state = self.shared.lock();
        loop {
            if done(&state) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left.min(Duration::from_millis(100)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits until at least `count` messages were accepted; panics after `limit`.
    #[track_caller]
    pub fn wait_for_messages(&self, count: usize, limit: Duration) -> Vec<Received> {
        if !self.wait(limit, |s| s.received.len() >= count) {
            let s = self.shared.lock();
            panic!(
                "the SMTP sink accepted {} message(s) within {limit:?}, expected {count}:\n{:#?}\ncommands: {:#?}",
                s.received.len(),
                s.received.iter().map(|m| &m.rcpt_to).collect::<Vec<_>>(),
                s.commands
            );
        }
        self.received()
    }

    /// Waits until at least `count` connections were made; false after `limit`.
    pub fn wait_for_connections(&self, count: usize, limit: Duration) -> bool {
        self.wait(limit, |s| s.connections >= count)
    }

    /// Waits until at least `count` commands were refused; false after `limit`.
    pub fn wait_for_refusals(&self, count: usize, limit: Duration) -> bool {
        self.wait(limit, |s| s.refused.len() >= count)
    }

    /// Waits until a message is held (`hold_data`); false after `limit`.
    pub fn wait_for_held(&self, limit: Duration) -> bool {
        self.wait(limit, |s| s.held > 0)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
        // Release any stalled session so that its thread ends.
        self.shared.update(|s| {
            s.behaviour.stall_greeting = false;
            s.behaviour.hold_data = false;
        });
    }
}

/// The address inside `<…>` of "MAIL FROM:<a@b> PARAMS" or "RCPT TO:<a@b>".
fn path_of(argument: &str) -> Option<String> {
    let start = argument.find('<')?;
    let end = start + argument[start..].find('>')?;
    Some(argument[start + 1..end].to_owned())
}

fn reply(out: &mut TcpStream, text: &str) -> std::io::Result<()> {
    out.write_all(text.as_bytes())?;
    out.write_all(b"\r\n")?;
    out.flush()
}

/// One SMTP conversation.
fn session(stream: TcpStream, shared: &Shared, stop: &AtomicBool) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut out = stream.try_clone()?;
    let mut input = BufReader::new(stream);
    shared.update(|s| s.connections += 1);

    // A stalled server accepts the connection and says nothing.
    while shared.lock().behaviour.stall_greeting {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    reply(&mut out, &format!("220 {HOST} ESMTP test sink ready"))?;

    let mut mail_from: Option<String> = None;
    let mut rcpt_to: Vec<String> = Vec::new();
    let mut raw = Vec::new();
    loop {
        raw.clear();
        if input.read_until(b'\n', &mut raw)? == 0 {
            return Ok(());
        }
        let line = String::from_utf8_lossy(&raw)
            .trim_end_matches(['\r', '\n'])
            .to_owned();
        shared.update(|s| s.commands.push(line.clone()));
        let upper = line.to_ascii_uppercase();
        let verb = upper.split(' ').next().unwrap_or("");
        match verb {
            "EHLO" => {
                // No STARTTLS, no AUTH: a plain local relay.
                reply(
                    &mut out,
                    &format!("250-{HOST} greets {}", &line[4..].trim()),
                )?;
                reply(&mut out, "250-8BITMIME")?;
                reply(&mut out, "250 SIZE 35882577")?;
            }
            "HELO" => reply(&mut out, &format!("250 {HOST}"))?,
            "MAIL" => match upper
                .starts_with("MAIL FROM:")
                .then(|| path_of(&line))
                .flatten()
            {
                Some(path) => {
                    mail_from = Some(path);
                    rcpt_to.clear();
                    reply(&mut out, "250 2.1.0 OK")?;
                }
                None => reply(&mut out, "501 5.5.4 syntax: MAIL FROM:<address>")?,
            },
            "RCPT" => {
                let path = upper
                    .starts_with("RCPT TO:")
                    .then(|| path_of(&line))
                    .flatten();
                match (path, &mail_from) {
                    (_, None) => reply(&mut out, "503 5.5.1 MAIL first")?,
                    (None, _) => reply(&mut out, "501 5.5.4 syntax: RCPT TO:<address>")?,
                    (Some(path), Some(_)) => {
                        let lower = path.to_ascii_lowercase();
                        let rejected = shared
                            .lock()
                            .behaviour
                            .reject_recipients
                            .iter()
                            .any(|p| lower.contains(p.as_str()));
                        if rejected {
                            let answer = "550 5.1.1 mailbox unavailable";
                            shared.update(|s| {
                                s.refused.push(Refusal {
                                    command: line.clone(),
                                    reply: answer.into(),
                                })
                            });
                            reply(&mut out, answer)?;
                        } else {
                            rcpt_to.push(path);
                            reply(&mut out, "250 2.1.5 OK")?;
                        }
                    }
                }
            }
            "DATA" => {
                if mail_from.is_none() || rcpt_to.is_empty() {
                    reply(&mut out, "503 5.5.1 MAIL and RCPT first")?;
                    continue;
                }
                reply(&mut out, "354 End data with <CR><LF>.<CR><LF>")?;
                let mut data: Vec<u8> = Vec::new();
                loop {
                    raw.clear();
                    if input.read_until(b'\n', &mut raw)? == 0 {
                        // The client went away in the middle of the message: nothing accepted.
                        return Ok(());
                    }
                    if raw == b".\r\n" || raw == b".\n" {
                        break;
                    }
                    // Dot-stuffing: a line that starts with "." was sent with one more.
                    if raw.first() == Some(&b'.') {
                        data.extend_from_slice(&raw[1..]);
                    } else {
                        data.extend_from_slice(&raw);
                    }
                }
                let message = Received {
                    mail_from: mail_from.take().unwrap_or_default(),
                    rcpt_to: std::mem::take(&mut rcpt_to),
                    data: String::from_utf8_lossy(&data).into_owned(),
                };
                if shared.lock().behaviour.reject_data {
                    let answer = "554 5.6.0 message refused";
                    shared.update(|s| {
                        s.refused.push(Refusal {
                            command: "DATA".into(),
                            reply: answer.into(),
                        })
                    });
                    reply(&mut out, answer)?;
                    continue;
                }
                if shared.lock().behaviour.hold_data {
                    shared.update(|s| s.held += 1);
                    while shared.lock().behaviour.hold_data {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    shared.update(|s| s.held -= 1);
                }
                // Recorded as accepted before the answer goes out, as a real server would have
                // taken responsibility for it even if the client is gone by now.
                let number = {
                    let mut s = shared.lock();
                    s.received.push(message);
                    s.received.len()
                };
                shared.changed.notify_all();
                reply(&mut out, &format!("250 2.0.0 OK queued as SINK{number}"))?;
            }
            "RSET" => {
                mail_from = None;
                rcpt_to.clear();
                reply(&mut out, "250 2.0.0 OK")?;
            }
            "NOOP" => reply(&mut out, "250 2.0.0 OK")?,
            "QUIT" => {
                reply(&mut out, "221 2.0.0 bye")?;
                return Ok(());
            }
            _ => reply(&mut out, "502 5.5.2 command not recognised")?,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading a recorded message

/// A message parsed enough for the tests: headers (unfolded) and its leaf MIME parts, decoded.
#[derive(Debug)]
pub struct Email {
    pub headers: Vec<(String, String)>,
    pub parts: Vec<Part>,
}

/// A leaf part: its content type (lower case, without parameters) and decoded body, with "\n"
/// line ends.
#[derive(Debug)]
pub struct Part {
    pub content_type: String,
    pub charset: String,
    pub encoding: String,
    pub body: String,
}

impl Email {
    pub fn parse(raw: &str) -> Email {
        let (headers, body) = split_head(raw);
        let mut parts = Vec::new();
        leaves(&headers, body, &mut parts);
        Email { headers, parts }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The top-level content type, lower case, without parameters.
    pub fn content_type(&self) -> String {
        media_type(self.header("Content-Type").unwrap_or("text/plain"))
    }

    #[track_caller]
    pub fn part(&self, content_type: &str) -> &Part {
        let found: Vec<&Part> = self
            .parts
            .iter()
            .filter(|p| p.content_type == content_type)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one {content_type} part in {:#?}",
            self.parts
        );
        found[0]
    }

    /// The text/plain alternative, decoded.
    #[track_caller]
    pub fn text(&self) -> &str {
        &self.part("text/plain").body
    }

    /// The text/html alternative, decoded.
    #[track_caller]
    pub fn html(&self) -> &str {
        &self.part("text/html").body
    }
}

/// Headers (unfolded, RFC 2047 words decoded) and the body after the blank line.
fn split_head(raw: &str) -> (Vec<(String, String)>, &str) {
    let (head, body) = match raw.find("\r\n\r\n") {
        Some(i) => (&raw[..i], &raw[i + 4..]),
        None => match raw.find("\n\n") {
            Some(i) => (&raw[..i], &raw[i + 2..]),
            None => (raw, ""),
        },
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split('\n').map(|l| l.trim_end_matches('\r')) {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push_str(line);
            }
        } else if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    for header in &mut headers {
        header.1 = decode_words(&header.1);
    }
    (headers, body)
}

fn header_of<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// A parameter of a header value such as `multipart/alternative; boundary="x"`.
pub fn parameter(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn leaves(headers: &[(String, String)], body: &str, out: &mut Vec<Part>) {
    let content_type = header_of(headers, "Content-Type").unwrap_or("text/plain");
    let media = media_type(content_type);
    if media.starts_with("multipart/") {
        let boundary = parameter(content_type, "boundary").expect("a multipart boundary");
        let delimiter = format!("--{boundary}");
        for segment in body.split(delimiter.as_str()).skip(1) {
            if segment.starts_with("--") {
                break;
            }
            let segment = segment.strip_prefix("\r\n").unwrap_or(segment);
            let segment = segment.strip_suffix("\r\n").unwrap_or(segment);
            let (part_headers, part_body) = split_head(segment);
            leaves(&part_headers, part_body, out);
        }
        return;
    }
    let encoding = header_of(headers, "Content-Transfer-Encoding")
        .unwrap_or("7bit")
        .trim()
        .to_ascii_lowercase();
    let bytes = match encoding.as_str() {
        "quoted-printable" => quoted_printable(body),
        "base64" => base64(body),
        _ => body.as_bytes().to_vec(),
    };
    out.push(Part {
        content_type: media,
        charset: parameter(content_type, "charset")
            .unwrap_or_default()
            .to_ascii_lowercase(),
        encoding,
        body: String::from_utf8_lossy(&bytes).replace("\r\n", "\n"),
    });
}

/// Quoted-printable: "=\r\n" is a soft line break, "=XX" a byte.
pub fn quoted_printable(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            if bytes[i + 1..].starts_with(b"\r\n") {
                i += 3;
                continue;
            }
            if bytes[i + 1..].starts_with(b"\n") {
                i += 2;
                continue;
            }
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

pub fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let Some(v) = value(c) else { continue };
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Decodes RFC 2047 encoded words (`=?utf-8?q?…?=`, `=?utf-8?b?…?=`) in a header value.
pub fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let decoded = rest[start + 2..].splitn(3, '?').collect::<Vec<_>>();
        let word = (decoded.len() == 3)
            .then(|| {
                let (_charset, kind, tail) = (decoded[0], decoded[1], decoded[2]);
                let end = tail.find("?=")?;
                let text = &tail[..end];
                let bytes = match kind.to_ascii_lowercase().as_str() {
                    "q" => quoted_printable(&text.replace('_', " ")),
                    "b" => base64(text),
                    _ => return None,
                };
                let consumed = start + 2 + decoded[0].len() + 1 + decoded[1].len() + 1 + end + 2;
                Some((String::from_utf8_lossy(&bytes).into_owned(), consumed))
            })
            .flatten();
        match word {
            Some((text, consumed)) => {
                let between = &rest[..start];
                // Whitespace between two encoded words is not part of the text.
                if !(last_was_word && between.trim().is_empty()) {
                    out.push_str(between);
                }
                out.push_str(&text);
                rest = &rest[consumed..];
                last_was_word = true;
            }
            None => {
                out.push_str(&rest[..start + 2]);
                rest = &rest[start + 2..];
                last_was_word = false;
            }
        }
    }
    out.push_str(rest);
    out
}

impl Received {
    pub fn parse(&self) -> Email {
        Email::parse(&self.data)
    }
}

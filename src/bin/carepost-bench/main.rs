//! carepost-bench: builds a large practice through Carepost's own storage code, starts the real
//! `carepost` binary on it and drives it over HTTP on loopback with many signed-in clients.
//! Every figure is also given as a ratio to a baseline measured in the same run (the same server
//! answering a static file; `sha256sum` plus a durable write for files), so the numbers survive a
//! noisy machine. Writes `report.md` and `report.json` under `--out` (target/bench).
//!
//! `cargo run --release --bin carepost-bench` is the full run; `-- --small` is the one CI runs.

mod dataset;
mod http;
mod inprocess;
mod load;
mod report;
mod server;

use clap::Parser;
use dataset::{Bench, Probe, Sizes, PASSWORD};
use http::Client;
use load::{Figures, Outcome, Until};
use report::{Goal, Report, Row};
use server::{rss_mib, Server};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Measures Carepost at a decade of messages against baselines from the same run")]
struct Args {
    /// Staff users.
    #[arg(long, default_value_t = 25)]
    staff: usize,
    /// Patients.
    #[arg(long, default_value_t = 20_000)]
    patients: usize,
    /// Messages at the full size (about four per thread).
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Attachments at the full size (small real files in the store).
    #[arg(long, default_value_t = 50_000)]
    attachments: u64,
    /// Smaller sizes at which the pages are measured too, to show how latency grows.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000u64, 100_000])]
    steps: Vec<u64>,
    /// Concurrent signed-in clients for pages and sends.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Clients signing in continuously beside the pages.
    #[arg(long, default_value_t = 8)]
    sign_ins: usize,
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Size of the upload and download, in MB.
    #[arg(long, default_value_t = 25)]
    file_mb: usize,
    /// A quick run for CI: a small practice, one-second measurements.
    #[arg(long)]
    small: bool,
    /// Where the data folder, server log and report go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// The carepost binary to measure (default: the one beside this program, built first when
    /// run through cargo).
    #[arg(long)]
    carepost: Option<PathBuf>,
}

fn main() {
    let mut args = Args::parse();
    if args.small {
        args.patients = args.patients.min(1_000);
        args.messages = args.messages.min(12_000);
        args.attachments = args.attachments.min(300);
        args.steps = vec![3_000];
        args.seconds = args.seconds.min(1.0);
    }
    match run(&args) {
        Ok(0) => {}
        Ok(errors) => {
            eprintln!("carepost-bench: {errors} request(s) failed; see the report");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("carepost-bench: {e}");
            std::process::exit(2);
        }
    }
}

fn say(text: &str) {
    println!("{text}");
    let _ = std::io::stdout().flush();
}

/// A signed-in client and what it works on.
struct Signed {
    client: Client,
    csrf: String,
    probe: Probe,
    portal: bool,
}

fn expect(status: u16, want: u16, what: &str) -> Result<(), String> {
    if status == want {
        Ok(())
    } else {
        Err(format!("{what}: HTTP {status}, expected {want}"))
    }
}

fn sign_in(addr: SocketAddr, probe: &Probe, portal: bool) -> Result<Signed, String> {
    let mut client = Client::new(addr);
    let (area, email) = if portal {
        ("portal", probe.portal_email.as_str())
    } else {
        ("practice", probe.staff_email.as_str())
    };
    let form = client
        .get(&format!("/{area}/login"))
        .map_err(|e| e.to_string())?;
    let token = form.csrf().ok_or("no CSRF token on the sign-in page")?;
    let signed = client
        .post_form(
            &format!("/{area}/login"),
            &[("email", email), ("password", PASSWORD), ("csrf", &token)],
        )
        .map_err(|e| e.to_string())?;
    expect(signed.status, 303, &format!("{area} sign-in of {email}"))?;
    let page = client
        .get(&format!("/{area}/messages/{}", probe.thread))
        .map_err(|e| e.to_string())?;
    expect(page.status, 200, "the probe's thread")?;
    let csrf = page.csrf().ok_or("no CSRF token on the thread page")?;
    Ok(Signed {
        client,
        csrf,
        probe: probe.clone(),
        portal,
    })
}

fn sign_in_all(
    addr: SocketAddr,
    probes: &[Probe],
    n: usize,
    portal: bool,
) -> Result<Vec<Signed>, String> {
    (0..n)
        .map(|i| sign_in(addr, &probes[i % probes.len()], portal))
        .collect()
}

/// A page: Ok(0) on 200. A file download: Ok(its size), for MB/s.
fn get_ok(client: &mut Client, path: &str) -> Outcome {
    let r = client.get(path).map_err(|e| format!("GET {path}: {e}"))?;
    if r.status != 200 {
        return Err(format!("GET {path}: HTTP {}", r.status));
    }
    let file = r
        .header("Content-Type")
        .is_some_and(|t| !t.starts_with("text/"));
    Ok(if file { r.body.len() as u64 } else { 0 })
}

/// The page kinds, each as the path a client asks for.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Page {
    PatientMailbox,
    PatientThread,
    PracticeInbox,
    PracticeThread,
    PatientSearch,
}

impl Page {
    const ALL: [Page; 5] = [
        Page::PatientMailbox,
        Page::PatientThread,
        Page::PracticeInbox,
        Page::PracticeThread,
        Page::PatientSearch,
    ];

    fn name(self) -> &'static str {
        match self {
            Page::PatientMailbox => "Patient mailbox",
            Page::PatientThread => "Patient thread (10 messages)",
            Page::PracticeInbox => "Practice inbox with unread count",
            Page::PracticeThread => "Practice thread",
            Page::PatientSearch => "Patient search",
        }
    }

    fn portal(self) -> bool {
        matches!(self, Page::PatientMailbox | Page::PatientThread)
    }

    fn path(self, probe: &Probe) -> String {
        match self {
            Page::PatientMailbox => "/portal/messages".into(),
            Page::PatientThread => format!("/portal/messages/{}", probe.thread),
            Page::PracticeInbox => "/practice/messages".into(),
            Page::PracticeThread => format!("/practice/messages/{}", probe.thread),
            Page::PatientSearch => format!("/practice/patients?q={}", probe.search),
        }
    }
}

/// Turns of static asset and page in `measure_pages` when the two are taken together.
const TURNS: u32 = 10;

/// The static asset's figures from the turns taken with a page, and its clients back.
type InTurns = Option<(Figures, Vec<Client>)>;

/// Each page kind's figures, and the static asset's from the turns with each (when paired).
type PagesFigures = (Vec<(Page, Figures)>, Vec<Figures>);

/// One page kind for `seconds`; with `statics` (clients fetching the stylesheet at `css`), the
/// static asset too, in turns with the page (see `load::alternate`), for as long again.
fn measure_page(
    page: Page,
    pid: u32,
    clients: Vec<Signed>,
    seconds: Duration,
    statics: Option<(Vec<Client>, &str)>,
) -> (Figures, Vec<Signed>, InTurns) {
    let work = |c: &mut Signed, _| get_ok(&mut c.client, &page.path(&c.probe));
    match statics {
        None => {
            let (f, clients) =
                load::with_server_cpu(pid, || load::run(clients, Until::Elapsed(seconds), work));
            (f, clients, None)
        }
        Some((statics, css)) => {
            let css_work = |c: &mut Client, _| get_ok(c, css);
            let (s, statics, f, clients) = load::alternate(
                pid,
                TURNS,
                seconds / TURNS,
                statics,
                css_work,
                clients,
                work,
            );
            (f, clients, Some((s, statics)))
        }
    }
}

/// Every page kind, one after the other, with `clients` clients each. With `paired`, each page
/// in turns with the static asset (see `measure_page`): its figures come second.
fn measure_pages(
    addr: SocketAddr,
    pid: u32,
    probes: &[Probe],
    clients: usize,
    seconds: Duration,
    paired: bool,
) -> Result<PagesFigures, String> {
    let mut portal = sign_in_all(addr, probes, clients, true)?;
    let mut staff = sign_in_all(addr, probes, clients, false)?;
    let (mut statics, css) = if paired {
        let css = stylesheet(addr)?;
        (Some(static_clients(addr, clients, &css)?), css)
    } else {
        (None, String::new())
    };
    let mut out = Vec::new();
    let mut static_figures = Vec::new();
    for page in Page::ALL {
        let side = if page.portal() {
            &mut portal
        } else {
            &mut staff
        };
        let (f, back, with) = measure_page(
            page,
            pid,
            std::mem::take(side),
            seconds,
            statics.take().map(|s| (s, css.as_str())),
        );
        *side = back;
        if let Some((s, back)) = with {
            static_figures.push(s);
            statics = Some(back);
        }
        say(&format!(
            "  {:<34} {:>8.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms  server CPU {:>5.0} µs/request  errors {}{}",
            page.name(),
            f.per_second(),
            f.p50_ms,
            f.p99_ms,
            f.server_cpu_us,
            f.errors,
            static_figures
                .last()
                .map(|s| format!("  (static asset in turns: {:.0}/s)", s.per_second()))
                .unwrap_or_default()
        ));
        out.push((page, f));
    }
    Ok((out, static_figures))
}

/// The address of the stylesheet every page links to.
fn stylesheet(addr: SocketAddr) -> Result<String, String> {
    let page = Client::new(addr)
        .get("/portal/login")
        .map_err(|e| e.to_string())?;
    http::between(&page.text(), "href=\"/assets/", "\"")
        .map(|name| format!("/assets/{name}"))
        .ok_or_else(|| "no stylesheet link on the sign-in page".to_owned())
}

/// Each request's own work without HTTP (see `inprocess`): the stylesheet, then every page
/// kind, signed in as the first probe patient and staff member. In microseconds of CPU. Then
/// the write of a thread view alone, `at_once` at a time.
fn measure_own_work(
    addr: SocketAddr,
    data: &Path,
    probe: &Probe,
    at_once: usize,
    duration: Duration,
) -> Result<(Vec<(String, f64)>, f64), String> {
    let handler = inprocess::Handler::open(data)?;
    let portal = sign_in(addr, probe, true)?;
    let staff = sign_in(addr, probe, false)?;
    let mut out = vec![(
        STATIC_ASSET.to_owned(),
        handler.cost(&stylesheet(addr)?, "", duration)?,
    )];
    for page in Page::ALL {
        let signed = if page.portal() { &portal } else { &staff };
        let cost = handler.cost(
            &page.path(&signed.probe),
            &signed.client.cookie_header(),
            duration,
        )?;
        say(&format!("  {:<34} {cost:>5.0} µs", page.name()));
        out.push((page.name().to_owned(), cost));
    }
    let write = handler.view_write_cost(&probe.portal_email, probe.thread, at_once, duration)?;
    say(&format!(
        "  {:<34} {write:>5.0} µs ({at_once} at once)",
        "A thread view's write alone"
    ));
    Ok((out, write))
}

const STATIC_ASSET: &str = "Static asset (baseline)";

/// `clients` connections that have each fetched the stylesheet at `css` once.
fn static_clients(addr: SocketAddr, clients: usize, css: &str) -> Result<Vec<Client>, String> {
    // Connections are opened one after the other, as the signed-in clients' are: a burst of
    // new connections can leave one unserved in tiny_http until the idle watch ends it (see the
    // README's Performance section).
    let mut warm = Vec::new();
    for _ in 0..clients {
        let mut c = Client::new(addr);
        get_ok(&mut c, css)?;
        warm.push(c);
    }
    Ok(warm)
}

/// The same server answering its stylesheet (the address every page links to).
fn static_baseline(
    addr: SocketAddr,
    pid: u32,
    clients: usize,
    seconds: Duration,
) -> Result<Figures, String> {
    let css = stylesheet(addr)?;
    let warm = static_clients(addr, clients, &css)?;
    Ok(load::with_server_cpu(pid, || {
        load::run(warm, Until::Elapsed(seconds), |c, _| get_ok(c, &css))
    })
    .0)
}

fn random_key() -> String {
    carepost::crypto::hex(&carepost::crypto::random_bytes::<32>())
}

/// A reply in the client's own thread: patient or staff, durably committed with its audit entry.
fn send(c: &mut Signed, body: &str) -> Outcome {
    let area = if c.portal { "portal" } else { "practice" };
    let path = format!("/{area}/messages/{}/reply", c.probe.thread);
    let key = random_key();
    let r = c
        .client
        .post_form(
            &path,
            &[
                ("csrf", &c.csrf),
                ("body", body),
                ("link", ""),
                ("key", &key),
            ],
        )
        .map_err(|e| format!("POST {path}: {e}"))?;
    if r.status == 303 {
        Ok(0)
    } else {
        Err(format!("POST {path}: HTTP {}", r.status))
    }
}

/// A multipart reply carrying one PDF of `size` bytes, rewritten in place before each send so
/// every upload is a new file with a new idempotency key.
struct Upload {
    body: Vec<u8>,
    boundary: String,
    key_at: usize,
    stamp_at: usize,
}

impl Upload {
    fn new(csrf: &str, size: usize) -> Upload {
        let boundary = format!("----carepostbench{}", &random_key()[..16]);
        let mut body = Vec::with_capacity(size + 1024);
        let field = |body: &mut Vec<u8>, name: &str, value: &str| {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                    .as_bytes(),
            );
        };
        field(&mut body, "csrf", csrf);
        field(&mut body, "body", "Here is the scan you asked for.");
        field(&mut body, "link", "");
        let key = random_key();
        field(&mut body, "key", &key);
        let key_at = body.len() - 2 - key.len();
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"scan.pdf\"\r\nContent-Type: application/pdf\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(b"%PDF-1.4\n%");
        let stamp_at = body.len();
        let start = body.len();
        body.resize(start + size - 10, b'x');
        // Varied content, so no part of the path can shortcut on repeated bytes.
        let mut rng = dataset::Rng::new(size as u64);
        for chunk in body[start + 32..].chunks_mut(8) {
            let v = rng.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        Upload {
            body,
            boundary,
            key_at,
            stamp_at,
        }
    }

    fn renew(&mut self) {
        let key = random_key();
        self.body[self.key_at..self.key_at + 64].copy_from_slice(key.as_bytes());
        self.body[self.stamp_at..self.stamp_at + 16].copy_from_slice(&key.as_bytes()[..16]);
    }
}

fn upload(c: &mut Signed, u: &mut Upload) -> Outcome {
    u.renew();
    let path = format!("/portal/messages/{}/reply", c.probe.thread);
    let r = c
        .client
        .request(
            "POST",
            &path,
            Some(&format!("multipart/form-data; boundary={}", u.boundary)),
            &u.body,
        )
        .map_err(|e| format!("upload: {e}"))?;
    if r.status == 303 {
        Ok(u.body.len() as u64)
    } else {
        Err(format!("upload: HTTP {}", r.status))
    }
}

/// `sha256sum` of the file plus writing the same bytes durably: what storing an upload costs at
/// the least. Returns MB/s.
fn file_baseline(dir: &Path, bytes: &[u8], rounds: usize) -> Result<(f64, f64), String> {
    let source = dir.join("baseline-source.pdf");
    std::fs::write(&source, bytes).map_err(|e| e.to_string())?;
    let (mut hash_time, mut write_time) = (Duration::ZERO, Duration::ZERO);
    for i in 0..rounds {
        let t = Instant::now();
        let out = std::process::Command::new("sha256sum")
            .arg(&source)
            .output()
            .map_err(|e| format!("cannot run sha256sum: {e}"))?;
        if !out.status.success() {
            return Err("sha256sum failed".into());
        }
        hash_time += t.elapsed();
        let t = Instant::now();
        let target = dir.join(format!("baseline-copy-{i}"));
        let mut f = std::fs::File::create(&target).map_err(|e| e.to_string())?;
        f.write_all(bytes).map_err(|e| e.to_string())?;
        f.sync_all().map_err(|e| e.to_string())?;
        write_time += t.elapsed();
        let _ = std::fs::remove_file(&target);
    }
    let _ = std::fs::remove_file(&source);
    let mb = (bytes.len() * rounds) as f64 / 1e6;
    Ok((
        mb / (hash_time + write_time).as_secs_f64(),
        mb / hash_time.as_secs_f64(),
    ))
}

/// Durable small writes per second on this disk (write 4 KiB + fdatasync), for reading the send
/// figures: each acknowledged send waits for at least one.
fn fsyncs_per_second(dir: &Path, seconds: Duration) -> f64 {
    let path = dir.join("fsync-probe");
    let Ok(mut f) = std::fs::File::create(&path) else {
        return 0.0;
    };
    let block = [7u8; 4096];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < seconds {
        if f.write_all(&block).is_err() || f.sync_data().is_err() {
            return 0.0;
        }
        n += 1;
    }
    let _ = std::fs::remove_file(&path);
    n as f64 / started.elapsed().as_secs_f64()
}

/// Samples a process's resident memory until stopped; the peak is kept.
struct MemoryWatch {
    peak: Arc<Mutex<f64>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MemoryWatch {
    fn start(pid: u32) -> MemoryWatch {
        let peak = Arc::new(Mutex::new(rss_mib(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (Arc::clone(&peak), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let now = rss_mib(pid);
                let mut peak = p.lock().unwrap();
                *peak = peak.max(now);
                drop(peak);
                std::thread::sleep(Duration::from_millis(25));
            }
        });
        MemoryWatch {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let peak = *self.peak.lock().unwrap();
        peak
    }
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn run(args: &Args) -> Result<u64, String> {
    let binary = server::binary(args.carepost.clone())?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let out = args.out.canonicalize().map_err(|e| e.to_string())?;
    let data = out.join("data");
    if data.exists() {
        std::fs::remove_dir_all(&data)
            .map_err(|e| format!("cannot clear {}: {e}", data.display()))?;
    }
    let log = out.join("server.log");
    let seconds = Duration::from_secs_f64(args.seconds);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs() as i64;
    let mut report = Report::new(&binary, args);

    say(&format!(
        "Building the practice: {} staff, {} patients, {} probe patients",
        args.staff, args.patients, args.clients
    ));
    let started = Instant::now();
    let mut bench = Bench::create(
        &data,
        Sizes {
            staff: args.staff,
            patients: args.patients,
            messages: args.messages,
            attachments: args.attachments,
        },
        args.clients,
        now,
    )?;
    let mut build_seconds = started.elapsed().as_secs_f64();

    // The pages at each smaller size, then everything at the full size.
    let mut sizes: Vec<u64> = args
        .steps
        .iter()
        .copied()
        .filter(|&s| s < args.messages)
        .collect();
    sizes.push(args.messages);
    let mut by_size = Vec::new();
    let mut errors = 0;
    for (i, &size) in sizes.iter().enumerate() {
        let full = i + 1 == sizes.len();
        let t = Instant::now();
        bench.grow_to(size, |n| say(&format!("  {n} messages")))?;
        build_seconds += t.elapsed().as_secs_f64();
        say(&format!(
            "{} messages in {} threads, {} attachments (built in {:.0} s so far)",
            bench.messages, bench.threads, bench.attachments, build_seconds
        ));
        let server = Server::start(&binary, &data, &log)?;
        say(&format!("Started in {:.3} s", server.startup.as_secs_f64()));
        if !full {
            let pages = measure_pages(
                server.addr,
                server.pid(),
                &bench.probes,
                args.clients,
                seconds,
                false,
            )?
            .0;
            errors += pages.iter().map(|(_, f)| f.errors).sum::<u64>();
            by_size.push((bench.messages, pages));
            server.stop()?;
            continue;
        }
        report.startup_seconds = server.startup.as_secs_f64();
        std::thread::sleep(Duration::from_secs(2));
        report.idle_mib = rss_mib(server.pid());
        let watch = MemoryWatch::start(server.pid());

        say(STATIC_ASSET);
        let baseline = static_baseline(server.addr, server.pid(), args.clients, seconds)?;
        say(&format!(
            "  {:>8.0}/s  p99 {:.2} ms  errors {} {}",
            baseline.per_second(),
            baseline.p99_ms,
            baseline.errors,
            baseline.first_error.as_deref().unwrap_or("")
        ));
        let (pages, paired) = measure_pages(
            server.addr,
            server.pid(),
            &bench.probes,
            args.clients,
            seconds,
            true,
        )?;
        by_size.push((bench.messages, pages.clone()));
        say("Each request's own work: the handler called in this process, one request at a time");
        let (own_work, view_write) = measure_own_work(
            server.addr,
            &data,
            &bench.probes[0],
            args.clients,
            seconds.min(Duration::from_secs(2)),
        )?;
        report.own_work = own_work;
        report.view_write_us = Some(view_write);

        // Pages while others sign in: half the clients in the portal, half in the practice,
        // each going round every page kind.
        say(&format!(
            "Pages, alone and while {} clients sign in",
            args.sign_ins
        ));
        let mix = |c: &mut Signed, n: u64| {
            let kinds: Vec<Page> = Page::ALL
                .into_iter()
                .filter(|p| p.portal() == c.portal)
                .collect();
            let page = kinds[n as usize % kinds.len()];
            get_ok(&mut c.client, &page.path(&c.probe))
        };
        let half = args.clients / 2;
        let mut mixed = sign_in_all(server.addr, &bench.probes, half, true)?;
        mixed.extend(sign_in_all(
            server.addr,
            &bench.probes,
            args.clients - half,
            false,
        )?);
        let (alone, mixed) = load::with_server_cpu(server.pid(), || {
            load::run(mixed, Until::Elapsed(seconds), mix)
        });
        let signers: Vec<(Client, String, Probe)> = (0..args.sign_ins)
            .map(|i| {
                let probe = bench.probes[i % bench.probes.len()].clone();
                let mut c = Client::new(server.addr);
                let token = c
                    .get("/portal/login")
                    .ok()
                    .and_then(|r| r.csrf())
                    .ok_or("no CSRF token on the sign-in page")?;
                Ok((c, token, probe))
            })
            .collect::<Result<_, String>>()?;
        let (beside, signing) =
            load::run_beside(mixed, seconds, mix, signers, |(c, token, probe), _| {
                let r = c
                    .post_form(
                        "/portal/login",
                        &[
                            ("email", &probe.portal_email),
                            ("password", PASSWORD),
                            ("csrf", token),
                        ],
                    )
                    .map_err(|e| format!("sign-in: {e}"))?;
                if r.status == 303 {
                    Ok(0)
                } else {
                    Err(format!("sign-in: HTTP {}", r.status))
                }
            });
        say(&format!(
            "  pages alone p99 {:.2} ms; beside sign-ins p99 {:.2} ms; sign-ins {:.1}/s p99 {:.0} ms",
            alone.p99_ms,
            beside.p99_ms,
            signing.per_second(),
            signing.p99_ms
        ));

        say("Sends (durably committed, with their audit entries)");
        let fsyncs = fsyncs_per_second(&out, Duration::from_secs(1));
        let patients = sign_in_all(server.addr, &bench.probes, args.clients, true)?;
        let (patient_sends, _) = load::with_server_cpu(server.pid(), || {
            load::run(patients, Until::Elapsed(seconds), |c, _| {
                send(c, "Thank you, that answers my question.")
            })
        });
        let staff = sign_in_all(server.addr, &bench.probes, args.clients, false)?;
        let (staff_replies, _) = load::with_server_cpu(server.pid(), || {
            load::run(staff, Until::Elapsed(seconds), |c, _| {
                send(c, "You are welcome. Call us if anything changes.")
            })
        });
        say(&format!(
            "  patient sends {:.0}/s p99 {:.1} ms; staff replies {:.0}/s p99 {:.1} ms; disk {:.0} fsyncs/s",
            patient_sends.per_second(),
            patient_sends.p99_ms,
            staff_replies.per_second(),
            staff_replies.p99_ms,
            fsyncs
        ));

        say(&format!("{} MB upload and download", args.file_mb));
        let size = args.file_mb * 1_000_000;
        let one = sign_in_all(server.addr, &bench.probes, 1, true)?;
        let uploads: Vec<(Signed, Upload)> = one
            .into_iter()
            .map(|s| {
                let u = Upload::new(&s.csrf, size);
                (s, u)
            })
            .collect();
        let (upload_one, uploads) = load::run(
            uploads,
            Until::Elapsed(seconds.max(Duration::from_secs(2))),
            |(c, u), _| upload(c, u),
        );
        let (base_store, base_hash) = file_baseline(&out, &uploads[0].1.body, 3)?;
        // Memory per concurrent upload: four at once, resident growth over the idle server.
        let concurrent = 4;
        let before = rss_mib(server.pid());
        let many_watch = MemoryWatch::start(server.pid());
        let many: Vec<(Signed, Upload)> =
            sign_in_all(server.addr, &bench.probes, concurrent, true)?
                .into_iter()
                .map(|s| {
                    let u = Upload::new(&s.csrf, size);
                    (s, u)
                })
                .collect();
        let (upload_many, _) = load::run(
            many,
            Until::Elapsed(seconds.max(Duration::from_secs(2))),
            |(c, u), _| upload(c, u),
        );
        let upload_peak = many_watch.finish();
        let per_upload_mib = ((upload_peak - before) / concurrent as f64).max(0.0);
        let mut reader = uploads.into_iter().next().expect("one uploader").0;
        let page = reader
            .client
            .get(&format!("/portal/messages/{}", reader.probe.thread))
            .map_err(|e| e.to_string())?;
        let prefix = format!("/portal/messages/{}/files/", reader.probe.thread);
        let file_path = page
            .text()
            .rmatch_indices(&prefix)
            .next()
            .and_then(|(at, _)| http::between(&page.text()[at..], "", "\""))
            .ok_or("no attachment link on the thread page after the uploads")?;
        let (download, _) = load::run(
            vec![reader],
            Until::Elapsed(seconds.max(Duration::from_secs(2))),
            |c, _| get_ok(&mut c.client, &file_path),
        );
        say(&format!(
            "  upload {:.0} MB/s (baseline {:.0} MB/s), {:.1} MiB per concurrent upload; download {:.0} MB/s (sha256sum {:.0} MB/s)",
            upload_one.mb_per_second(),
            base_store,
            per_upload_mib,
            download.mb_per_second(),
            base_hash
        ));
        report.peak_mib = watch.finish().max(upload_peak);
        server.stop()?;

        let db_bytes =
            file_size(&data.join("carepost.db")) + file_size(&data.join("carepost.db-wal"));
        report.db_bytes_per_message = db_bytes as f64 / bench.messages as f64;
        report.binary_bytes = file_size(&binary);
        report.fsyncs_per_second = fsyncs;
        report.messages = bench.messages;
        report.threads = bench.threads;
        report.attachments = bench.attachments;
        report.build_seconds = build_seconds;

        let ratio = |f: &Figures| f.per_second() / baseline.per_second().max(1e-9);
        // A page's ratio is to the static asset measured in turns with it.
        let page_ratio = |i: usize, f: &Figures| f.per_second() / paired[i].per_second().max(1e-9);
        report.rows.push(Row::new(STATIC_ASSET, &baseline, None));
        for (i, (page, f)) in pages.iter().enumerate() {
            report
                .rows
                .push(Row::new(page.name(), f, Some(page_ratio(i, f))));
        }
        report.turns = TURNS;
        report.static_in_turns = pages
            .iter()
            .zip(&paired)
            .map(|((page, _), s)| (page.name().to_owned(), s.per_second()))
            .collect();
        report.rows.push(Row::new(
            "Pages, all kinds in turn",
            &alone,
            Some(ratio(&alone)),
        ));
        report.rows.push(Row::new(
            &format!("Pages while {} clients sign in", args.sign_ins),
            &beside,
            Some(ratio(&beside)),
        ));
        report
            .rows
            .push(Row::new("Sign-in (argon2id)", &signing, None));
        report
            .rows
            .push(Row::new("Patient sends a message", &patient_sends, None));
        report
            .rows
            .push(Row::new("Staff reply", &staff_replies, None));
        report.rows.push(Row::new(
            &format!("{} MB upload, one client", args.file_mb),
            &upload_one,
            Some(upload_one.mb_per_second() / base_store),
        ));
        report.rows.push(Row::new(
            &format!("{} MB uploads, {concurrent} at once", args.file_mb),
            &upload_many,
            Some(upload_many.mb_per_second() / base_store),
        ));
        report.rows.push(Row::new(
            &format!("{} MB download", args.file_mb),
            &download,
            Some(download.mb_per_second() / base_hash),
        ));
        report.baseline_store_mb_s = base_store;
        report.baseline_hash_mb_s = base_hash;

        // The goals of issue 9, each with the figure that decides it.
        let first = &by_size[0];
        for (i, (page, f)) in pages.iter().enumerate() {
            report.goals.push(Goal::at_most(
                &format!("{}: p99 at 16 clients", page.name()),
                f.p99_ms,
                25.0,
                "ms",
            ));
            report.goals.push(Goal::at_least(
                &format!("{}: throughput / static", page.name()),
                page_ratio(i, f),
                0.5,
                "×",
            ));
            if let Some((_, small)) = first.1.iter().find(|(p, _)| p == page) {
                if first.0 < bench.messages {
                    report.goals.push(Goal::at_most(
                        &format!(
                            "{}: p99 at {} / at {} messages",
                            page.name(),
                            bench.messages,
                            first.0
                        ),
                        f.p99_ms / small.p99_ms.max(1e-9),
                        1.5,
                        "×",
                    ));
                }
            }
        }
        report.goals.push(Goal::at_least(
            "Patient sends per second, 16 senders",
            patient_sends.per_second(),
            2000.0,
            "/s",
        ));
        report.goals.push(Goal::at_least(
            "Staff replies per second, 16 senders",
            staff_replies.per_second(),
            2000.0,
            "/s",
        ));
        report.goals.push(Goal::at_most(
            &format!("Pages p99 while {} sign in", args.sign_ins),
            beside.p99_ms,
            25.0,
            "ms",
        ));
        report.goals.push(Goal::at_least(
            "Upload throughput / (sha256sum + durable write)",
            upload_one.mb_per_second() / base_store,
            0.5,
            "×",
        ));
        report.goals.push(Goal::at_most(
            "Resident memory growth per concurrent upload",
            per_upload_mib,
            16.0,
            "MiB",
        ));
        report.goals.push(Goal::at_most(
            "Start-up on the full folder",
            report.startup_seconds,
            1.0,
            "s",
        ));
        report.goals.push(Goal::at_most(
            "Resident memory idle",
            report.idle_mib,
            30.0,
            "MiB",
        ));
        report.goals.push(Goal::at_most(
            "Resident memory under load (peak)",
            report.peak_mib,
            150.0,
            "MiB",
        ));

        for f in [
            &baseline,
            &alone,
            &beside,
            &patient_sends,
            &staff_replies,
            &upload_one,
            &upload_many,
            &download,
        ]
        .into_iter()
        .chain(pages.iter().map(|(_, f)| f))
        {
            errors += f.errors;
            if let Some(e) = &f.first_error {
                say(&format!("  first error: {e}"));
            }
        }
        errors += signing.errors;
    }
    report.by_size = by_size
        .into_iter()
        .map(|(n, pages)| {
            (
                n,
                pages
                    .into_iter()
                    .map(|(p, f)| (p.name().to_owned(), f))
                    .collect(),
            )
        })
        .collect();
    report.errors = errors;
    let (md, json) = report.write(&out)?;
    say(&format!(
        "\n{}",
        std::fs::read_to_string(&md).unwrap_or_default()
    ));
    say(&format!("Report: {} and {}", md.display(), json.display()));
    Ok(errors)
}

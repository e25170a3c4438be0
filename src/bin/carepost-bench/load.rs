//! Runs many clients at once for a fixed time and collects what each request took.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// What one kind of request did during one measurement.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Bytes moved by the requests (uploads and downloads), for MB/s.
    pub bytes: u64,
    pub first_error: Option<String>,
    /// The server's CPU time (user + system) per successful request, in microseconds.
    pub server_cpu_us: f64,
}

impl Figures {
    pub fn per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests as f64 / self.seconds
        } else {
            0.0
        }
    }

    pub fn mb_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.bytes as f64 / 1e6 / self.seconds
        } else {
            0.0
        }
    }

    fn from_latencies(mut latencies: Vec<Duration>, errors: u64, seconds: f64) -> Figures {
        latencies.sort_unstable();
        let pick = |q: f64| -> f64 {
            if latencies.is_empty() {
                return 0.0;
            }
            let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
            latencies[i].as_secs_f64() * 1000.0
        };
        Figures {
            requests: latencies.len() as u64,
            errors,
            seconds,
            p50_ms: pick(0.50),
            p99_ms: pick(0.99),
            bytes: 0,
            first_error: None,
            server_cpu_us: 0.0,
        }
    }
}

/// One request as a worker sees it: Ok(bytes moved) or what went wrong.
pub type Outcome = Result<u64, String>;

/// What one client brings back: itself, its latencies, errors, bytes and its first error.
type ClientResult<C> = (C, Vec<Duration>, u64, u64, Option<String>);

/// When a measurement ends: after a time, or when a flag is raised.
#[derive(Clone, Copy)]
pub enum Until<'a> {
    Elapsed(Duration),
    Flag(&'a AtomicBool),
}

/// Runs `work` on every client in its own thread until the end; each call is one timed request.
/// The measured time runs from the start to the end of the last request.
pub fn run<C: Send>(
    clients: Vec<C>,
    until: Until,
    work: impl Fn(&mut C, u64) -> Outcome + Sync,
) -> (Figures, Vec<C>) {
    let (raw, clients) = run_raw(clients, until, work);
    (raw.figures(), clients)
}

/// What the requests of one or more runs took, before it is summed up as `Figures`.
#[derive(Default)]
struct Raw {
    latencies: Vec<Duration>,
    errors: u64,
    bytes: u64,
    first_error: Option<String>,
    seconds: f64,
    /// The server's CPU seconds over the runs (when measured).
    server_cpu: f64,
}

impl Raw {
    fn add(&mut self, other: Raw) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        self.bytes += other.bytes;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.seconds += other.seconds;
        self.server_cpu += other.server_cpu;
    }

    fn figures(self) -> Figures {
        let mut figures = Figures::from_latencies(self.latencies, self.errors, self.seconds);
        figures.bytes = self.bytes;
        figures.first_error = self.first_error;
        figures.server_cpu_us = self.server_cpu * 1e6 / figures.requests.max(1) as f64;
        figures
    }
}

/// Two measurements taken in turns, `turns` times `slice` each, so that both see the same
/// machine: on a shared machine whose load drifts, a baseline measured a minute apart from
/// what it is compared with moved the ratio by as much as a fifth. Each side's figures include
/// the server's CPU per request (of process `pid`).
#[allow(clippy::too_many_arguments)]
pub fn alternate<A: Send, B: Send>(
    pid: u32,
    turns: u32,
    slice: Duration,
    a: Vec<A>,
    work_a: impl Fn(&mut A, u64) -> Outcome + Sync,
    b: Vec<B>,
    work_b: impl Fn(&mut B, u64) -> Outcome + Sync,
) -> (Figures, Vec<A>, Figures, Vec<B>) {
    let (mut a, mut b) = (a, b);
    let (mut raw_a, mut raw_b) = (Raw::default(), Raw::default());
    for _ in 0..turns {
        let before = cpu_seconds(pid);
        let (mut ra, back_a) = run_raw(a, Until::Elapsed(slice), &work_a);
        let middle = cpu_seconds(pid);
        let (mut rb, back_b) = run_raw(b, Until::Elapsed(slice), &work_b);
        ra.server_cpu = middle - before;
        rb.server_cpu = cpu_seconds(pid) - middle;
        raw_a.add(ra);
        raw_b.add(rb);
        (a, b) = (back_a, back_b);
    }
    (raw_a.figures(), a, raw_b.figures(), b)
}

fn run_raw<C: Send>(
    clients: Vec<C>,
    until: Until,
    work: impl Fn(&mut C, u64) -> Outcome + Sync,
) -> (Raw, Vec<C>) {
    let too_many_errors = AtomicBool::new(false);
    let counter = AtomicU64::new(0);
    let started = Instant::now();
    let going = || {
        !too_many_errors.load(Ordering::Relaxed)
            && match until {
                Until::Elapsed(d) => started.elapsed() < d,
                Until::Flag(f) => !f.load(Ordering::Relaxed),
            }
    };
    let results: Vec<ClientResult<C>> = thread::scope(|scope| {
        let handles: Vec<_> = clients
            .into_iter()
            .map(|mut client| {
                let (too_many_errors, counter, work, going) =
                    (&too_many_errors, &counter, &work, &going);
                scope.spawn(move || {
                    let mut latencies = Vec::with_capacity(4096);
                    let (mut errors, mut bytes, mut first_error) = (0u64, 0u64, None);
                    while going() {
                        let n = counter.fetch_add(1, Ordering::Relaxed);
                        let t = Instant::now();
                        match work(&mut client, n) {
                            Ok(b) => {
                                latencies.push(t.elapsed());
                                bytes += b;
                            }
                            Err(e) => {
                                errors += 1;
                                first_error.get_or_insert(e);
                                if errors > 100 {
                                    too_many_errors.store(true, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    (client, latencies, errors, bytes, first_error)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("load client panicked"))
            .collect()
    });
    let mut raw = Raw {
        seconds: started.elapsed().as_secs_f64(),
        ..Raw::default()
    };
    let mut clients = Vec::new();
    for (client, latencies, errors, bytes, first_error) in results {
        raw.add(Raw {
            latencies,
            errors,
            bytes,
            first_error,
            ..Raw::default()
        });
        clients.push(client);
    }
    (raw, clients)
}

/// Measures `clients` for `duration` while `background` clients run beside them, from a little
/// before until the measurement ends. Returns both figures.
pub fn run_beside<C: Send, B: Send>(
    clients: Vec<C>,
    duration: Duration,
    work: impl Fn(&mut C, u64) -> Outcome + Sync,
    background: Vec<B>,
    background_work: impl Fn(&mut B, u64) -> Outcome + Sync,
) -> (Figures, Figures) {
    let done = AtomicBool::new(false);
    thread::scope(|scope| {
        let (done_ref, bg_work) = (&done, &background_work);
        let bg = scope.spawn(move || run(background, Until::Flag(done_ref), bg_work).0);
        // Let the background reach its steady state first.
        thread::sleep(Duration::from_millis(500));
        let (front, _) = run(clients, Until::Elapsed(duration), work);
        done.store(true, Ordering::Relaxed);
        let back = bg.join().expect("background load panicked");
        (front, back)
    })
}

/// CPU seconds (user + system) a process has used so far, from /proc/PID/stat.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which ends with the last ')'): utime is the 12th, stime 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / per_second
}

/// CPU seconds this process has used so far, all its threads, to the nanosecond (/proc counts
/// in 10 ms ticks, too coarse for a batch of requests).
pub fn process_cpu_seconds() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// Runs a measurement and records the server's CPU time per request in its figures.
pub fn with_server_cpu<T>(pid: u32, measure: impl FnOnce() -> (Figures, T)) -> (Figures, T) {
    let before = cpu_seconds(pid);
    let (mut figures, rest) = measure();
    let used = cpu_seconds(pid) - before;
    figures.server_cpu_us = used * 1e6 / figures.requests.max(1) as f64;
    (figures, rest)
}

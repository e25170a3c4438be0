//! The real `carepost` binary, started on the bench's data folder.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the `carepost` binary is: beside this one, built first when run through `cargo run`
/// (which only builds the bench itself).
pub fn binary(given: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(path) = given {
        return Ok(path);
    }
    let me = std::env::current_exe().map_err(|e| format!("cannot find the bench binary: {e}"))?;
    let path = me.with_file_name("carepost");
    if let Ok(cargo) = std::env::var("CARGO") {
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "--bin", "carepost"]);
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        let status = build
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err("building carepost failed".into());
        }
    }
    if !path.exists() {
        return Err(format!(
            "{} is missing: build it (cargo build --release) or pass --carepost PATH",
            path.display()
        ));
    }
    Ok(path)
}

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// From starting the process to its "listening on" line.
    pub startup: Duration,
}

impl Server {
    /// Starts `carepost serve` on `data` with its defaults (workers, log level), logging to `log`.
    pub fn start(binary: &Path, data: &Path, log: &Path) -> Result<Server, String> {
        let log_file =
            File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let started = Instant::now();
        let mut child = Command::new(binary)
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .env_remove("CAREPOST_WORKERS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(rest) = line.strip_prefix("listening on http://") {
                        break rest
                            .trim()
                            .parse::<SocketAddr>()
                            .map_err(|e| format!("odd address {rest}: {e}"))?;
                    }
                }
                _ => {
                    let _ = child.kill();
                    return Err(format!("carepost did not start; see {}", log.display()));
                }
            }
        };
        let startup = started.elapsed();
        // Keep reading stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Server {
            child,
            addr,
            startup,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server as an operator would (SIGTERM), waiting for its clean shutdown.
    pub fn stop(mut self) -> Result<(), String> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("carepost stopped with {status}"))
                };
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return Err("carepost did not stop within 30 s of SIGTERM".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of a process, in MiB (VmRSS), or 0 when it cannot be read.
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

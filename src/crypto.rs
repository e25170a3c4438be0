//! Random tokens, SHA-256, and argon2id password hashing with a limit on how many hashes run at
//! once, so sign-ins cannot starve the other requests of CPU and memory bandwidth.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use sha2::{Digest, Sha256};
use std::sync::{mpsc, Arc, Mutex, OnceLock};

/// A random 256-bit token, hex-encoded.
pub fn random_token() -> String {
    hex(&random_bytes::<32>())
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The OS random source failing is not something a request can recover from.
    getrandom::fill(&mut buf).expect("the operating system's random source failed");
    buf
}

/// A random number of `digits` decimal digits (leading zeros kept), for PINs.
pub fn random_digits(digits: usize) -> String {
    let mut out = String::with_capacity(digits);
    while out.len() < digits {
        let [b] = random_bytes::<1>();
        // Reject 250..=255 so every digit is equally likely.
        if b < 250 {
            out.push(char::from(b'0' + b % 10));
        }
    }
    out
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Compares two secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// argon2 runs on this many dedicated threads: each computation uses 19 MiB, and two saturate
/// memory bandwidth on the machines Carepost targets.
const CONCURRENT_HASHES: usize = 2;
/// Their niceness: when sign-ins and pages compete for the CPU, pages win (measured in the
/// benchmark's "pages while clients sign in").
const HASH_NICENESS: libc::c_int = 19;

type Job = Box<dyn FnOnce() + Send>;

/// Runs `work` on one of the hashing threads and waits for its answer. Only those threads ever
/// hold argon2's memory, so worker threads stay small, and their lower priority keeps sign-ins
/// from starving other requests. Runs inline if the threads cannot be started; None only if a
/// hashing thread died with the job (the caller then refuses, never accepts).
fn on_hash_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    static QUEUE: OnceLock<Option<Mutex<mpsc::Sender<Job>>>> = OnceLock::new();
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for i in 0..CONCURRENT_HASHES {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("hash-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            started += usize::from(spawned.is_ok());
        }
        (started > 0).then(|| Mutex::new(tx))
    });
    let Some(queue) = queue else {
        return Some(work());
    };
    let (done_tx, done_rx) = mpsc::sync_channel(1);
    let job: Job = Box::new(move || {
        let _ = done_tx.send(work());
    });
    let sent = queue.lock().unwrap_or_else(|e| e.into_inner()).send(job);
    sent.ok()?;
    done_rx.recv().ok()
}

/// Keeps every hashing thread busy until the returned senders are dropped: for tests in which
/// a password check must wait its turn.
#[cfg(test)]
pub(crate) fn occupy_hash_threads() -> Vec<mpsc::SyncSender<()>> {
    (0..CONCURRENT_HASHES)
        .map(|_| {
            let (release, released) = mpsc::sync_channel::<()>(0);
            let (started, running) = mpsc::sync_channel::<()>(0);
            std::thread::spawn(move || {
                on_hash_thread(move || {
                    let _ = started.send(());
                    let _ = released.recv();
                })
            });
            running
                .recv_timeout(std::time::Duration::from_secs(30))
                .expect("a hashing thread took the job");
            release
        })
        .collect()
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // SAFETY: plain syscalls on the calling thread (Linux keeps a niceness per thread).
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, HASH_NICENESS);
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

/// argon2id with the OWASP parameters (19 MiB, t=2, p=1), as a PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    let password = password.to_owned();
    on_hash_thread(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| format!("password hashing failed: {e}"))
    })
    .unwrap_or_else(|| Err("password hashing is unavailable".to_owned()))
}

pub fn verify_password(password: &str, phc: &str) -> bool {
    let (password, phc) = (password.to_owned(), phc.to_owned());
    on_hash_thread(move || match PasswordHash::new(&phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    })
    .unwrap_or(false)
}

/// A hash of a random password, verified against when an email has no account so that a wrong
/// address costs the same time as a wrong password.
pub fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password(&random_token()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_round_trip() {
        let phc = hash_password("Correct horse 1").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify_password("Correct horse 1", &phc));
        assert!(!verify_password("Correct horse 2", &phc));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn tokens_and_pins() {
        assert_eq!(random_token().len(), 64);
        assert_ne!(random_token(), random_token());
        let pin = random_digits(6);
        assert_eq!(pin.len(), 6);
        assert!(pin.chars().all(|c| c.is_ascii_digit()));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn hex_and_sha256() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

//! The main journeys of Carepost in headless Chromium: each one starts the real `carepost`
//! binary on a fresh data folder (with a real SMTP sink) and clicks and types as a person
//! would. Screenshots of the key pages go to `target/screenshots/`.
//!
//! Run with `cargo test --test browser -- [filter…]`. Without Chromium, chromedriver or axe-core
//! the journeys are skipped with a message; with CI=true that is a failure instead.

#[path = "../harness.rs"]
mod harness;
#[path = "../smtp_sink.rs"]
mod smtp_sink;

mod driver;
mod journeys;

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Instant;

type Journey = (&'static str, fn());

fn main() {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    // `cargo test -- --list` and friends: nothing to list beyond the journey names.
    if std::env::args().any(|a| a == "--list") {
        for (name, _) in journeys::ALL {
            println!("{name}: test");
        }
        return;
    }
    let selected: Vec<Journey> = journeys::ALL
        .iter()
        .copied()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f)))
        .collect();
    let missing = driver::missing_tools();
    if !missing.is_empty() {
        let why = format!(
            "browser journeys SKIPPED ({} of them): missing {}",
            selected.len(),
            missing.join(", ")
        );
        if std::env::var_os("CI").is_some() {
            eprintln!("{why}\nCI is set, so this is a failure: .ci/run installs them.");
            std::process::exit(1);
        }
        println!("\n{why}\nInstall them (see .ci/run) to run these tests.\n");
        return;
    }
    println!("\nrunning {} browser journeys", selected.len());
    let started = Instant::now();
    // Two at a time: one browser per core.
    let queue = Arc::new(Mutex::new(std::collections::VecDeque::from(
        selected.clone(),
    )));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let queue = queue.clone();
            let failed = failed.clone();
            std::thread::spawn(move || loop {
                let Some((name, journey)) = queue.lock().unwrap().pop_front() else {
                    return;
                };
                let t = Instant::now();
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(journey));
                let secs = t.elapsed().as_secs_f64();
                match outcome {
                    Ok(()) => println!("journey {name} ... ok ({secs:.1} s)"),
                    Err(_) => {
                        println!("journey {name} ... FAILED ({secs:.1} s)");
                        failed.lock().unwrap().push(name);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let failed = failed.lock().unwrap();
    println!(
        "\nbrowser journeys: {} passed, {} failed in {:.0} s; screenshots in {}\n",
        selected.len() - failed.len(),
        failed.len(),
        started.elapsed().as_secs_f64(),
        driver::screenshot_dir().display()
    );
    if !failed.is_empty() {
        eprintln!("failed: {}", failed.join(", "));
        std::process::exit(1);
    }
}

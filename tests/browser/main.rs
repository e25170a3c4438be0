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
    // Names to run, and `--skip NAME` to leave out, as libtest takes them; other flags that
    // cargo passes to test binaries are ignored.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut filters = Vec::new();
    let mut skips = Vec::new();
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--skip" {
            skips.extend(args.get(i + 1).cloned());
            i += 1;
        } else if !args[i].starts_with('-') {
            filters.push(args[i].clone());
        }
        i += 1;
    }
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
        .filter(|(name, _)| !skips.iter().any(|s| name.contains(s.as_str())))
        .collect();
    let missing = driver::missing_tools();
    if !missing.is_empty() {
        let why = format!(
            "browser journeys SKIPPED ({} of them): missing {}",
            selected.len(),
            missing.join(", ")
        );
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        if ci && !selected.is_empty() {
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

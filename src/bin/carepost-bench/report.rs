//! The report: a markdown table for people and JSON for tools, under `--out`.

use crate::load::Figures;
use crate::Args;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub struct Row {
    pub name: String,
    pub figures: Figures,
    /// Throughput as a share of its baseline (pages: the static asset; files: sha256sum + write).
    pub ratio: Option<f64>,
}

impl Row {
    pub fn new(name: &str, figures: &Figures, ratio: Option<f64>) -> Row {
        Row {
            name: name.to_owned(),
            figures: figures.clone(),
            ratio,
        }
    }
}

pub struct Goal {
    pub name: String,
    pub value: f64,
    pub limit: f64,
    pub unit: &'static str,
    pub at_most: bool,
}

impl Goal {
    pub fn at_most(name: &str, value: f64, limit: f64, unit: &'static str) -> Goal {
        Goal {
            name: name.to_owned(),
            value,
            limit,
            unit,
            at_most: true,
        }
    }

    pub fn at_least(name: &str, value: f64, limit: f64, unit: &'static str) -> Goal {
        Goal {
            at_most: false,
            ..Goal::at_most(name, value, limit, unit)
        }
    }

    pub fn met(&self) -> bool {
        if self.at_most {
            self.value <= self.limit
        } else {
            self.value >= self.limit
        }
    }
}

#[derive(Default)]
pub struct Report {
    pub machine: String,
    pub command: String,
    pub binary: String,
    pub clients: usize,
    pub seconds: f64,
    pub messages: u64,
    pub threads: u64,
    pub attachments: u64,
    pub patients: usize,
    pub staff: usize,
    pub build_seconds: f64,
    pub startup_seconds: f64,
    pub idle_mib: f64,
    pub peak_mib: f64,
    pub db_bytes_per_message: f64,
    pub binary_bytes: u64,
    pub fsyncs_per_second: f64,
    pub baseline_store_mb_s: f64,
    pub baseline_hash_mb_s: f64,
    pub rows: Vec<Row>,
    /// Each request's own work without HTTP, in µs of CPU (see `inprocess`).
    pub own_work: Vec<(String, f64)>,
    /// A thread view's write alone, in µs of CPU, many at once (see `inprocess`).
    pub view_write_us: Option<f64>,
    /// Each page with the static asset's throughput measured in turns with it, which its
    /// ratio is taken against.
    pub static_in_turns: Vec<(String, f64)>,
    /// How many turns of each the pages and the static asset took (see `static_in_turns`).
    pub turns: u32,
    pub goals: Vec<Goal>,
    pub by_size: Vec<(u64, Vec<(String, Figures)>)>,
    pub errors: u64,
}

/// CPU model, cores, memory and system, read from /proc and /etc/os-release.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let gib = mem
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_default();
    format!("{model}, {cores} cores, {gib:.0} GiB, {os}")
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.4}")
    } else {
        "null".into()
    }
}

fn json_figures(f: &Figures) -> String {
    format!(
        "{{\"requests\": {}, \"errors\": {}, \"seconds\": {}, \"per_second\": {}, \"p50_ms\": {}, \"p99_ms\": {}, \"mb_per_second\": {}, \"server_cpu_us\": {}}}",
        f.requests,
        f.errors,
        json_num(f.seconds),
        json_num(f.per_second()),
        json_num(f.p50_ms),
        json_num(f.p99_ms),
        json_num(f.mb_per_second()),
        json_num(f.server_cpu_us)
    )
}

impl Report {
    pub fn new(binary: &Path, args: &Args) -> Report {
        let mut command = String::from("cargo run --release --bin carepost-bench");
        if args.small {
            command.push_str(" -- --small");
        }
        Report {
            machine: machine(),
            command,
            binary: binary.display().to_string(),
            clients: args.clients,
            seconds: args.seconds,
            patients: args.patients,
            staff: args.staff,
            ..Report::default()
        }
    }

    fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# Carepost benchmark\n");
        let _ = writeln!(md, "- Machine: {}", self.machine);
        let _ = writeln!(
            md,
            "- Command: `{}` (measuring `{}`)",
            self.command, self.binary
        );
        let _ = writeln!(
            md,
            "- Practice: {} staff, {} patients, {} messages in {} threads, {} attachments (built in {:.0} s)",
            self.staff, self.patients, self.messages, self.threads, self.attachments, self.build_seconds
        );
        let _ = writeln!(
            md,
            "- {} concurrent clients, {:.1} s per measurement, keep-alive HTTP/1.1 on loopback",
            self.clients, self.seconds
        );
        let _ = writeln!(md, "- Request errors: {}\n", self.errors);
        let _ = writeln!(md, "## Requests at {} messages\n", self.messages);
        let _ = writeln!(
            md,
            "| Request | Throughput | p50 | p99 | Errors | × baseline | Server CPU per request |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|");
        for r in &self.rows {
            let f = &r.figures;
            let throughput = if f.bytes > 0 {
                format!("{:.0} MB/s", f.mb_per_second())
            } else {
                format!("{:.0}/s", f.per_second())
            };
            let ratio = r.ratio.map_or("—".to_owned(), |v| format!("{v:.2}"));
            let cpu = if f.server_cpu_us > 0.0 {
                format!("{:.0} µs", f.server_cpu_us)
            } else {
                "—".to_owned()
            };
            let _ = writeln!(
                md,
                "| {} | {} | {:.2} ms | {:.2} ms | {} | {} | {} |",
                r.name, throughput, f.p50_ms, f.p99_ms, f.errors, ratio, cpu
            );
        }
        let _ = writeln!(
            md,
            "\nBaselines: static asset from the same server; `sha256sum` + durable write of the same bytes {:.0} MB/s; `sha256sum` alone {:.0} MB/s; disk {:.0} fsyncs/s (4 KiB writes).\n",
            self.baseline_store_mb_s, self.baseline_hash_mb_s, self.fsyncs_per_second
        );
        if !self.static_in_turns.is_empty() {
            let around: Vec<String> = self
                .static_in_turns
                .iter()
                .map(|(name, r)| format!("{name} {r:.0}/s"))
                .collect();
            let _ = writeln!(
                md,
                "Each page's ratio is to the static asset measured in turns with it, {} turns of {:.1} s each (the page's figures above are from its turns), so that both see the same load on the machine; the static asset's throughput in those turns: {}. The mixed rows (pages in turn, pages beside sign-ins) are set against the static asset's own measurement, the first row. At the smaller sizes each page is measured in one stretch.\n",
                self.turns,
                self.seconds / f64::from(self.turns.max(1)),
                around.join("; ")
            );
        }
        self.own_work_table(&mut md);
        if self.by_size.len() > 1 {
            let _ = writeln!(md, "## Page p99 as the history grows\n");
            let mut head = String::from("| Page |");
            let mut rule = String::from("|---|");
            for (n, _) in &self.by_size {
                let _ = write!(head, " {n} messages |");
                rule.push_str("---:|");
            }
            let _ = writeln!(md, "{head}\n{rule}");
            if let Some((_, first)) = self.by_size.first() {
                for (name, _) in first {
                    let mut line = format!("| {name} |");
                    for (_, pages) in &self.by_size {
                        let f = pages.iter().find(|(n, _)| n == name).map(|(_, f)| f);
                        let _ = write!(
                            line,
                            " {} |",
                            f.map_or("—".into(), |f| format!(
                                "{:.2} ms ({:.0}/s)",
                                f.p99_ms,
                                f.per_second()
                            ))
                        );
                    }
                    let _ = writeln!(md, "{line}");
                }
            }
            md.push('\n');
        }
        let _ = writeln!(md, "## Resources\n");
        let _ = writeln!(md, "| Measure | Value |\n|---|---:|");
        let _ = writeln!(
            md,
            "| Start-up on the full folder | {:.3} s |",
            self.startup_seconds
        );
        let _ = writeln!(md, "| Resident memory idle | {:.1} MiB |", self.idle_mib);
        let _ = writeln!(
            md,
            "| Resident memory under load (peak) | {:.1} MiB |",
            self.peak_mib
        );
        let _ = writeln!(
            md,
            "| Database bytes per message | {:.0} B |",
            self.db_bytes_per_message
        );
        let _ = writeln!(
            md,
            "| Release binary | {:.1} MB |\n",
            self.binary_bytes as f64 / 1e6
        );
        let met = self.goals.iter().filter(|g| g.met()).count();
        let _ = writeln!(md, "## Goals ({met} of {} met)\n", self.goals.len());
        let _ = writeln!(md, "| Goal | Measured | Limit | |\n|---|---:|---:|---|");
        for g in &self.goals {
            let _ = writeln!(
                md,
                "| {} | {:.2} {} | {} {} {} | {} |",
                g.name,
                g.value,
                g.unit,
                if g.at_most { "≤" } else { "≥" },
                g.limit,
                g.unit,
                if g.met() { "met" } else { "**missed**" }
            );
        }
        md
    }

    /// A request's server CPU over HTTP split into its own work (the handler alone, in
    /// process, one request at a time) and the rest (parsing, the socket, tiny_http's threads,
    /// the log line, and what the page's work loses to running among concurrent requests).
    fn own_work_table(&self, md: &mut String) {
        let over_http = |name: &str| {
            self.rows
                .iter()
                .find(|r| r.name == name)
                .map(|r| r.figures.server_cpu_us)
                .filter(|&us| us > 0.0)
        };
        if self.own_work.is_empty() {
            return;
        }
        let _ = writeln!(
            md,
            "## Where a request's server CPU goes
"
        );
        let _ = writeln!(
            md,
            "| Request | Over HTTP | Its own work (handler alone, in process) | The rest (HTTP, threads, log line, concurrency) |\n|---|---:|---:|---:|"
        );
        for (name, own) in &self.own_work {
            let (http, rest) = over_http(name).map_or(("—".into(), "—".into()), |h| {
                (format!("{h:.0} µs"), format!("{:.0} µs", h - own))
            });
            let _ = writeln!(md, "| {name} | {http} | {own:.0} µs | {rest} |");
        }
        let static_us = self.own_work.first().and_then(|(n, _)| over_http(n));
        if let Some(limit) = static_us {
            let _ = writeln!(
                md,
                "\nHalf the static asset's throughput leaves a page at most {:.0} µs of server CPU (twice the static asset's).\n",
                2.0 * limit
            );
        }
        if let (Some(write), Some(served)) = (self.view_write_us, static_us) {
            let _ = writeln!(
                md,
                "A thread view's write alone (the reader's read marker and the audit entry of the read, durably committed; {} views at once, in process, sharing transactions): {write:.0} µs of CPU. A thread page costs at least that beside being answered over HTTP, which costs the static asset {served:.0} µs: so a thread page can reach at most {:.2}× the static asset's throughput, whatever it reads and draws.\n",
                self.clients,
                served / (served + write)
            );
        }
    }

    fn json(&self) -> String {
        let mut j = String::from("{\n");
        let _ = writeln!(j, "  \"machine\": {},", json_str(&self.machine));
        let _ = writeln!(j, "  \"command\": {},", json_str(&self.command));
        let _ = writeln!(
            j,
            "  \"practice\": {{\"staff\": {}, \"patients\": {}, \"messages\": {}, \"threads\": {}, \"attachments\": {}, \"build_seconds\": {}}},",
            self.staff, self.patients, self.messages, self.threads, self.attachments, json_num(self.build_seconds)
        );
        let _ = writeln!(
            j,
            "  \"clients\": {}, \"seconds\": {},",
            self.clients,
            json_num(self.seconds)
        );
        let rows: Vec<String> = self
            .rows
            .iter()
            .map(|r| {
                format!(
                    "    {{\"name\": {}, \"figures\": {}, \"ratio\": {}}}",
                    json_str(&r.name),
                    json_figures(&r.figures),
                    r.ratio.map_or("null".into(), json_num)
                )
            })
            .collect();
        let _ = writeln!(j, "  \"requests\": [\n{}\n  ],", rows.join(",\n"));
        let sizes: Vec<String> = self
            .by_size
            .iter()
            .map(|(n, pages)| {
                let pages: Vec<String> = pages
                    .iter()
                    .map(|(name, f)| format!("{}: {}", json_str(name), json_figures(f)))
                    .collect();
                format!(
                    "    {{\"messages\": {n}, \"pages\": {{{}}}}}",
                    pages.join(", ")
                )
            })
            .collect();
        let _ = writeln!(j, "  \"by_size\": [\n{}\n  ],", sizes.join(",\n"));
        let own: Vec<String> = self
            .own_work
            .iter()
            .map(|(name, us)| format!("{}: {}", json_str(name), json_num(*us)))
            .collect();
        let _ = writeln!(j, "  \"own_work_us\": {{{}}},", own.join(", "));
        if let Some(us) = self.view_write_us {
            let _ = writeln!(j, "  \"view_write_us\": {},", json_num(us));
        }
        let around: Vec<String> = self
            .static_in_turns
            .iter()
            .map(|(name, r)| format!("{}: {}", json_str(name), json_num(*r)))
            .collect();
        let _ = writeln!(
            j,
            "  \"static_in_turns_per_second\": {{{}}},",
            around.join(", ")
        );
        let _ = writeln!(
            j,
            "  \"resources\": {{\"startup_seconds\": {}, \"idle_mib\": {}, \"peak_mib\": {}, \"db_bytes_per_message\": {}, \"binary_bytes\": {}, \"fsyncs_per_second\": {}, \"baseline_store_mb_s\": {}, \"baseline_hash_mb_s\": {}}},",
            json_num(self.startup_seconds),
            json_num(self.idle_mib),
            json_num(self.peak_mib),
            json_num(self.db_bytes_per_message),
            self.binary_bytes,
            json_num(self.fsyncs_per_second),
            json_num(self.baseline_store_mb_s),
            json_num(self.baseline_hash_mb_s)
        );
        let goals: Vec<String> = self
            .goals
            .iter()
            .map(|g| {
                format!(
                    "    {{\"goal\": {}, \"value\": {}, \"limit\": {}, \"unit\": {}, \"at_most\": {}, \"met\": {}}}",
                    json_str(&g.name),
                    json_num(g.value),
                    json_num(g.limit),
                    json_str(g.unit),
                    g.at_most,
                    g.met()
                )
            })
            .collect();
        let _ = writeln!(j, "  \"goals\": [\n{}\n  ],", goals.join(",\n"));
        let _ = writeln!(j, "  \"errors\": {}", self.errors);
        j.push_str("}\n");
        j
    }

    /// Writes report.md and report.json into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf), String> {
        let md = dir.join("report.md");
        let json = dir.join("report.json");
        std::fs::write(&md, self.markdown())
            .map_err(|e| format!("cannot write {}: {e}", md.display()))?;
        std::fs::write(&json, self.json())
            .map_err(|e| format!("cannot write {}: {e}", json.display()))?;
        Ok((md, json))
    }
}

//! What the load generator measures about a server and how it reports it: CPU time and memory
//! of a process tree from /proc, latency percentiles, result records (printed, and appended as
//! JSON lines), and the Markdown table of Poplar / Dovecot ratios against issue 6's targets.
//!
//! A server is measured as its whole process tree, so that a multi-process server (Dovecot's
//! master, login, auth and pop3 processes) and a single-process one (Poplar) are counted the
//! same way: CPU includes reaped children, memory is the proportional set size (PSS), which
//! splits pages shared between processes instead of counting them once per process.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

/// CPU and memory of a process and all its descendants.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    /// User + system CPU seconds, including children already reaped.
    pub cpu_s: f64,
    /// Proportional set size in KiB.
    pub pss_kib: u64,
    /// Number of processes.
    pub processes: usize,
}

/// Measures `pid` and its descendants; `None` when the process is gone or /proc unreadable.
pub(crate) fn tree_usage(pid: u32) -> Option<Usage> {
    // Parent of every process, to find the descendants.
    let mut children: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut stats: HashMap<u64, Vec<u64>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // stat(5): fields after the command name start with state (field 3); ppid is field 4,
        // utime/stime/cutime/cstime are fields 14-17.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<u64> = rest
            .split_whitespace()
            .skip(1)
            .take(15)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        if fields.len() == 15 {
            children.entry(fields[0]).or_default().push(u64::from(p));
            stats.insert(u64::from(p), fields);
        }
    }
    let pid = u64::from(pid);
    stats.get(&pid)?;
    let mut usage = Usage::default();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Some(f) = stats.get(&p) else { continue };
        // USER_HZ is 100 on Linux.
        usage.cpu_s += (f[10] + f[11] + f[12] + f[13]) as f64 / 100.0;
        usage.pss_kib += pss_kib(p).unwrap_or(0);
        usage.processes += 1;
        todo.extend(children.get(&p).into_iter().flatten());
    }
    Some(usage)
}

fn pss_kib(pid: u64) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup
        .lines()
        .find(|l| l.starts_with("Pss:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The `p`-th percentile of sorted samples, by rank: index ceil(len * p / 100) - 1.
pub(crate) fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted.get(rank - 1).copied().unwrap_or_default()
}

/// Milliseconds, for records.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One measured figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// Which server (`poplar`, `dovecot`, `dovecot-hp`).
    pub label: String,
    /// The load, e.g. `session plain` or `retr tls`.
    pub case: String,
    /// What was measured, with its unit, e.g. `sessions/s`.
    pub metric: String,
    pub value: f64,
    /// Whether a larger value is better (throughput) or worse (time, memory).
    pub higher_is_better: bool,
}

/// Collects a run's records, prints them, and appends them to a JSON-lines file.
pub(crate) struct Report {
    label: String,
    case: String,
    records: Vec<Record>,
}

impl Report {
    pub(crate) fn new(label: &str, case: &str) -> Self {
        Report {
            label: label.to_owned(),
            case: case.to_owned(),
            records: Vec::new(),
        }
    }

    /// A figure where more is better.
    pub(crate) fn more(&mut self, metric: &str, value: f64) {
        self.push(metric, value, true);
    }

    /// A figure where less is better.
    pub(crate) fn less(&mut self, metric: &str, value: f64) {
        self.push(metric, value, false);
    }

    fn push(&mut self, metric: &str, value: f64, higher_is_better: bool) {
        self.records.push(Record {
            label: self.label.clone(),
            case: self.case.clone(),
            metric: metric.to_owned(),
            value,
            higher_is_better,
        });
    }

    /// Prints the figures and appends them to `json` when given.
    pub(crate) fn emit(&self, json: Option<&Path>) -> Result<()> {
        for r in &self.records {
            println!(
                "{:<12} {:<14} {:>12} {}",
                r.label,
                r.case,
                format_value(r.value),
                r.metric
            );
        }
        if let Some(path) = json {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            for r in &self.records {
                writeln!(f, "{}", serde_json::to_string(r)?)?;
            }
        }
        Ok(())
    }
}

/// Three significant figures, without exponent notation.
fn format_value(v: f64) -> String {
    let digits = match v.abs() {
        a if a >= 100.0 || a == 0.0 => 0,
        a if a >= 10.0 => 1,
        a if a >= 1.0 => 2,
        _ => 3,
    };
    format!("{v:.digits$}")
}

/// The server the table is about; every other label is a baseline.
const SUBJECT: &str = "poplar";

/// A target from the performance issue.
struct Target {
    case: &'static str,
    metric: &'static str,
    goal: Goal,
}

enum Goal {
    /// At least `factor` times better than the baseline with this label.
    Times(&'static str, f64),
    /// At most this value.
    AtMost(f64),
    /// At least `fraction` of another case's figure (e.g. of raw loopback TCP).
    FractionOf(&'static str, &'static str, f64),
}

const TARGETS: &[Target] = &[
    Target {
        case: "session plain",
        metric: "sessions/s",
        goal: Goal::Times("dovecot", 10.0),
    },
    Target {
        case: "session plain",
        metric: "sessions/s",
        goal: Goal::Times("dovecot-hp", 5.0),
    },
    Target {
        case: "session tls",
        metric: "sessions/s",
        goal: Goal::Times("dovecot", 4.0),
    },
    Target {
        case: "session tls",
        metric: "sessions/s",
        goal: Goal::Times("dovecot-hp", 2.0),
    },
    // Issue 19's bound (issue 6 asked for 0.5).
    Target {
        case: "session plain",
        metric: "server CPU s per 1000 sessions",
        goal: Goal::AtMost(0.2),
    },
    Target {
        case: "retr plain",
        metric: "MB/s",
        goal: Goal::FractionOf("loopback", "MB/s", 0.6),
    },
    Target {
        case: "retr tls",
        metric: "MB/s",
        goal: Goal::Times("dovecot", 5.0),
    },
    Target {
        case: "idle plain",
        metric: "KiB per session",
        goal: Goal::AtMost(16.0),
    },
    Target {
        case: "idle tls",
        metric: "KiB per session",
        goal: Goal::AtMost(48.0),
    },
    Target {
        case: "open",
        metric: "first login+UIDL ms",
        goal: Goal::AtMost(1000.0),
    },
    Target {
        case: "open",
        metric: "warm login+UIDL ms",
        goal: Goal::AtMost(50.0),
    },
    Target {
        case: "hold",
        metric: "session p99 ms",
        goal: Goal::AtMost(100.0),
    },
];

/// Renders results (JSON lines from `--json`) as Markdown: every figure per server with
/// Poplar's advantage over each baseline (above 1 means Poplar is better), then the targets.
/// When a (label, case, metric) was measured more than once, the last figure counts.
pub(crate) fn table(jsonl: &str) -> Result<String> {
    let mut labels: Vec<String> = Vec::new();
    let mut rows: Vec<(String, String, bool)> = Vec::new();
    let mut values: BTreeMap<(String, String, String), f64> = BTreeMap::new();
    for (i, line) in jsonl.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r: Record =
            serde_json::from_str(line).with_context(|| format!("results line {}", i + 1))?;
        if !labels.contains(&r.label) {
            labels.push(r.label.clone());
        }
        let row = (r.case.clone(), r.metric.clone(), r.higher_is_better);
        if !rows.iter().any(|(c, m, _)| (c, m) == (&row.0, &row.1)) {
            rows.push(row);
        }
        values.insert((r.label, r.case, r.metric), r.value);
    }
    labels.sort_by_key(|l| (l != SUBJECT, l.clone()));
    let baselines: Vec<&String> = labels.iter().filter(|l| *l != SUBJECT).collect();
    let get = |label: &str, case: &str, metric: &str| {
        values
            .get(&(label.to_owned(), case.to_owned(), metric.to_owned()))
            .copied()
    };
    let advantage = |case: &str, metric: &str, higher: bool, baseline: &str| {
        let (p, b) = (get(SUBJECT, case, metric)?, get(baseline, case, metric)?);
        let ratio = if higher { p / b } else { b / p };
        ratio.is_finite().then_some(ratio)
    };
    let mut out = String::new();
    let mut header = "| load | figure |".to_owned();
    let mut rule = "|---|---|".to_owned();
    for l in &labels {
        write!(header, " {l} |")?;
        rule.push_str("---:|");
    }
    for b in &baselines {
        write!(header, " Poplar's advantage over {b} |")?;
        rule.push_str("---:|");
    }
    writeln!(out, "{header}\n{rule}")?;
    for (case, metric, higher) in &rows {
        write!(out, "| {case} | {metric} |")?;
        for l in &labels {
            let cell = get(l, case, metric).map_or("–".to_owned(), format_value);
            write!(out, " {cell} |")?;
        }
        for b in &baselines {
            let cell = advantage(case, metric, *higher, b)
                .map_or("–".to_owned(), |r| format!("{:.2}×", r));
            write!(out, " {cell} |")?;
        }
        out.push('\n');
    }
    writeln!(out, "\n| target | measured | met |\n|---|---:|:---:|")?;
    for t in TARGETS {
        let Some(value) = get(SUBJECT, t.case, t.metric) else {
            continue;
        };
        let (what, measured, met) = match t.goal {
            Goal::Times(baseline, factor) => {
                let higher = rows
                    .iter()
                    .find(|(c, m, _)| c == t.case && m == t.metric)
                    .is_some_and(|r| r.2);
                let Some(ratio) = advantage(t.case, t.metric, higher, baseline) else {
                    continue;
                };
                (
                    format!("{} {}: ≥ {factor}× {baseline}", t.case, t.metric),
                    format!("{ratio:.2}×"),
                    ratio >= factor,
                )
            }
            Goal::AtMost(limit) => (
                format!("{} {}: ≤ {}", t.case, t.metric, format_value(limit)),
                format_value(value),
                value <= limit,
            ),
            Goal::FractionOf(case, metric, fraction) => {
                let Some(reference) = get(SUBJECT, case, metric) else {
                    continue;
                };
                (
                    format!(
                        "{} {}: ≥ {:.0}% of {case} {metric}",
                        t.case,
                        t.metric,
                        fraction * 100.0
                    ),
                    format!("{:.0}%", value / reference * 100.0),
                    value >= fraction * reference,
                )
            }
        };
        writeln!(
            out,
            "| {what} | {measured} | {} |",
            if met { "yes" } else { "**no**" }
        )?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(label: &str, case: &str, metric: &str, value: f64, higher: bool) -> String {
        serde_json::to_string(&Record {
            label: label.into(),
            case: case.into(),
            metric: metric.into(),
            value,
            higher_is_better: higher,
        })
        .unwrap()
    }

    #[test]
    fn the_table_shows_ratios_oriented_so_that_above_one_is_better_and_checks_targets() {
        let results = [
            line("dovecot", "session plain", "sessions/s", 140.0, true),
            line("poplar", "session plain", "sessions/s", 2100.0, true),
            line("dovecot-hp", "session plain", "sessions/s", 300.0, true),
            line("dovecot", "idle plain", "KiB per session", 512.0, false),
            line("poplar", "idle plain", "KiB per session", 20.0, false),
            line("poplar", "loopback", "MB/s", 3000.0, true),
            line("poplar", "retr plain", "MB/s", 1500.0, true),
        ]
        .join("\n");
        let t = table(&results).unwrap();
        assert!(
            t.contains("| load | figure | poplar | dovecot | dovecot-hp |"),
            "{t}"
        );
        assert!(
            t.contains("| session plain | sessions/s | 2100 | 140 | 300 | 15.00× | 7.00× |"),
            "{t}"
        );
        // Less memory is better: 512 / 20.
        assert!(
            t.contains("| idle plain | KiB per session | 20.0 | 512 | – | 25.60× | – |"),
            "{t}"
        );
        assert!(
            t.contains("| session plain sessions/s: ≥ 10× dovecot | 15.00× | yes |"),
            "{t}"
        );
        assert!(
            t.contains("| idle plain KiB per session: ≤ 16.0 | 20.0 | **no** |"),
            "{t}"
        );
        assert!(
            t.contains("| retr plain MB/s: ≥ 60% of loopback MB/s | 50% | **no** |"),
            "{t}"
        );
        // Targets without a measurement are left out.
        assert!(!t.contains("retr tls"), "{t}");
    }

    #[test]
    fn percentiles_are_by_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 99), Duration::from_millis(99));
        assert_eq!(percentile(&[], 99), Duration::ZERO);
    }

    #[test]
    fn this_process_is_measured() {
        let u = tree_usage(std::process::id()).unwrap();
        assert!(u.processes >= 1 && u.pss_kib > 0, "{u:?}");
    }
}

//! A run's report: parameters, counts, rates, latency summaries, notes and the violations found,
//! printed for people or as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::check::{check, Violation};
use super::history::History;
use super::scenario::{Env, Recorder};
use super::stats::{Latency, Summary};

/// Violations listed one by one (all are counted).
const MAX_LISTED: usize = 200;
/// Violations printed in the human report.
const MAX_PRINTED: usize = 20;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub target: String,
    pub run_id: String,
    pub threads: usize,
    pub concurrency: usize,
    pub params: BTreeMap<String, serde_json::Value>,
    pub counts: BTreeMap<String, u64>,
    /// Rates, ratios and other figures (names carry their unit).
    pub figures: BTreeMap<String, f64>,
    pub latencies_ms: BTreeMap<String, Summary>,
    pub notes: Vec<String>,
    pub violations_total: usize,
    pub violations_by_kind: BTreeMap<String, usize>,
    /// The first violations (all of them are counted above).
    pub violations: Vec<Violation>,
    /// Readings taken over time (the soak's samples of the server), oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<BTreeMap<String, f64>>,
}

impl Report {
    pub fn new(scenario: &str, env: &Env) -> Report {
        Report {
            scenario: scenario.to_string(),
            target: env.targets.iter().map(|t| t.http.as_str()).collect::<Vec<_>>().join(","),
            run_id: env.run_id.clone(),
            threads: env.common.threads,
            concurrency: env.common.concurrency,
            params: BTreeMap::new(),
            counts: BTreeMap::new(),
            figures: BTreeMap::new(),
            latencies_ms: BTreeMap::new(),
            notes: Vec::new(),
            violations_total: 0,
            violations_by_kind: BTreeMap::new(),
            violations: Vec::new(),
            samples: Vec::new(),
        }
    }

    /// Adds a violation found outside the history (e.g. counted by the server itself).
    pub fn violation(&mut self, v: Violation) {
        self.violations_total += 1;
        *self.violations_by_kind.entry(v.kind().to_string()).or_default() += 1;
        if self.violations.len() < MAX_LISTED {
            self.violations.push(v);
        }
    }

    pub fn param(&mut self, name: &str, value: impl Serialize) {
        self.params.insert(name.to_string(), serde_json::to_value(value).unwrap_or(serde_json::Value::Null));
    }

    pub fn count(&mut self, name: &str, n: u64) {
        self.counts.insert(name.to_string(), n);
    }

    pub fn rate(&mut self, name: &str, v: f64) {
        self.figures.insert(name.to_string(), v);
    }

    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// Adds a latency summary unless it is empty.
    pub fn latency(&mut self, name: &str, l: &Latency) {
        if l.count() > 0 {
            self.latencies_ms.insert(name.to_string(), l.summary());
        }
    }

    /// Adds every latency a recorder kept.
    pub fn latencies(&mut self, rec: &Recorder) {
        for (name, l) in &rec.latencies {
            self.latency(name, l);
        }
    }

    /// Checks the invariants over `history` and records the result.
    pub fn finish(&mut self, history: &History) {
        let violations = check(history);
        self.violations_total = violations.len();
        for v in &violations {
            *self.violations_by_kind.entry(v.kind().to_string()).or_default() += 1;
        }
        self.violations = violations.into_iter().take(MAX_LISTED).collect();
    }

    pub fn ok(&self) -> bool {
        self.violations_total == 0
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"report not encodable: {e}\"}}"))
    }

    /// The report for people.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "matchd-load {} -> {} (run {}, {} threads x {} in flight)",
            self.scenario, self.target, self.run_id, self.threads, self.concurrency
        );
        let line =
            |m: &BTreeMap<String, String>| m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
        let params = self.params.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
        let _ = writeln!(s, "  params:  {}", line(&params));
        let counts = self.counts.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
        let _ = writeln!(s, "  counts:  {}", line(&counts));
        if !self.figures.is_empty() {
            let figures = self.figures.iter().map(|(k, v)| (k.clone(), format_figure(*v))).collect();
            let _ = writeln!(s, "  figures: {}", line(&figures));
        }
        if !self.latencies_ms.is_empty() {
            let _ = writeln!(
                s,
                "  {:<30} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "latency (ms)", "count", "mean", "p50", "p90", "p99", "p99.9", "max"
            );
            for (name, l) in &self.latencies_ms {
                let _ = writeln!(
                    s,
                    "  {:<30} {:>8} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                    name, l.count, l.mean_ms, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
                );
            }
        }
        if let Some(first) = self.samples.first() {
            let cols: Vec<&String> = first.keys().collect();
            let head: Vec<String> = cols.iter().map(|c| format!("{c:>12}")).collect();
            let _ = writeln!(s, "  samples: {}", head.join(" "));
            for sample in &self.samples {
                let row: Vec<String> = cols
                    .iter()
                    .map(|c| format!("{:>12}", sample.get(*c).map_or("-".into(), |v| format_figure(*v))))
                    .collect();
                let _ = writeln!(s, "           {}", row.join(" "));
            }
        }
        for n in &self.notes {
            let _ = writeln!(s, "  note: {n}");
        }
        if self.ok() {
            let _ = writeln!(s, "  invariants: OK (no violations)");
        } else {
            let _ = writeln!(s, "  invariants: {} VIOLATIONS", self.violations_total);
            for (kind, n) in &self.violations_by_kind {
                let _ = writeln!(s, "    {kind}: {n}");
            }
            for v in self.violations.iter().take(MAX_PRINTED) {
                let _ = writeln!(s, "    - {v}");
            }
            if self.violations_total > MAX_PRINTED {
                let _ = writeln!(
                    s,
                    "    ... ({} more; --json lists up to {MAX_LISTED})",
                    self.violations_total - MAX_PRINTED
                );
            }
        }
        s
    }
}

fn format_figure(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

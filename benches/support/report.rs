//! Percentiles, number formatting, and the table printed at the end of the run.

use std::time::Duration;

/// The error text of a phase skipped because an earlier one failed; shown without details.
pub const NOT_MEASURED: &str = "not measured";

/// The `q` quantile (0.0..=1.0, nearest rank) of an ascending slice; 0 when empty.
pub fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// p50 and p99 of unsorted microsecond samples.
pub fn p50_p99(samples: &[u32]) -> (u32, u32) {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    (percentile(&sorted, 0.50), percentile(&sorted, 0.99))
}

/// Milliseconds with one decimal, e.g. `12.3 ms`.
pub fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1e3)
}

/// Microseconds as microseconds or milliseconds, whichever reads better.
pub fn us(micros: u32) -> String {
    match micros {
        0..1_000 => format!("{micros} µs"),
        1_000..10_000 => format!("{:.2} ms", f64::from(micros) / 1e3),
        _ => format!("{:.1} ms", f64::from(micros) / 1e3),
    }
}

/// KiB as MB (10^6 bytes), e.g. `9.8 MB`.
pub fn mb(kib: u64) -> String {
    format!("{:.1} MB", kib as f64 * 1024.0 / 1e6)
}

/// An integer with thousands separators, e.g. `41,230`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// One line of the table.
struct Row {
    /// What was measured.
    label: String,
    /// The figure.
    value: String,
    /// The target, empty when there is none.
    target: String,
    /// Whether the target was met; `None` when there is no target or no figure.
    met: Option<bool>,
}

/// The results table.
pub struct Table {
    /// Title line.
    title: String,
    /// Rows in order.
    rows: Vec<Row>,
    /// Phases that failed, with their errors.
    errors: Vec<(String, String)>,
    /// Remarks printed under the table.
    notes: Vec<(String, String)>,
}

impl Table {
    /// An empty table headed by `title`.
    pub fn new(title: String) -> Self {
        Table {
            title,
            rows: Vec::new(),
            errors: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A figure without a target.
    pub fn info(&mut self, label: impl Into<String>, value: impl Into<String>) {
        self.push(label.into(), value.into(), String::new(), None);
    }

    /// A figure with a target and whether it was met.
    pub fn check(
        &mut self,
        label: impl Into<String>,
        value: impl Into<String>,
        target: &str,
        met: bool,
    ) {
        self.push(label.into(), value.into(), target.to_owned(), Some(met));
    }

    /// A phase that failed: a row saying so, and the error listed under the table.
    /// A phase that was skipped ([`NOT_MEASURED`]) gets just a row saying so.
    pub fn error(&mut self, label: impl Into<String>, target: &str, error: &dyn std::fmt::Display) {
        let (label, error) = (label.into(), error.to_string());
        if error == NOT_MEASURED {
            return self.push(label, NOT_MEASURED.to_owned(), target.to_owned(), None);
        }
        self.errors.push((label.clone(), error));
        self.push(
            label,
            "error (see below)".to_owned(),
            target.to_owned(),
            None,
        );
    }

    /// A remark listed under the table, without a row of its own.
    pub fn note(&mut self, label: impl Into<String>, text: &str) {
        self.notes.push((label.into(), text.to_owned()));
    }

    /// Whether some phase failed.
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Appends a row.
    fn push(&mut self, label: String, value: String, target: String, met: Option<bool>) {
        self.rows.push(Row {
            label,
            value,
            target,
            met,
        });
    }

    /// Prints the table (and any errors) to stdout.
    pub fn print(&self) {
        let label_width = self
            .rows
            .iter()
            .map(|r| r.label.chars().count())
            .max()
            .unwrap_or(0)
            .max(self.title.chars().count())
            + 2;
        let value_width = self
            .rows
            .iter()
            .map(|r| r.value.chars().count())
            .max()
            .unwrap_or(0)
            .max(10)
            + 2;
        let target_width = self
            .rows
            .iter()
            .map(|r| r.target.chars().count())
            .max()
            .unwrap_or(0)
            .max(6)
            + 2;
        println!();
        println!(
            "{:<label_width$}{:<value_width$}{:<target_width$}",
            self.title, "value", "target"
        );
        for row in &self.rows {
            let verdict = match row.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "",
            };
            let line = format!(
                "{:<label_width$}{:<value_width$}{:<target_width$}{verdict}",
                row.label, row.value, row.target
            );
            println!("{}", line.trim_end());
        }
        for (label, note) in &self.notes {
            println!("\nnote on {label}: {note}");
        }
        for (label, error) in &self.errors {
            println!("\nerror in {label}:\n  {}", error.replace('\n', "\n  "));
        }
    }
}

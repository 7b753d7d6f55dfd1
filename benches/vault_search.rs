//! # `vault_search`: vault index build and search latency at 10,000 notes
//!
//! Generates a vault of 10,000 markdown notes (front matter, ~150 words each from a
//! 2,000-word vocabulary, 3 wikilinks each) in a temporary folder, then measures through
//! [`troupe_actors::vault::Vault`], the code behind `/api/vault/*` and the memory tools:
//!
//! 1. index build: the first reconcile of an empty index (read, parse, FTS5 insert);
//! 2. unwatched (before): search latency p50/p99 of 1- and 2-word queries when nothing
//!    changed (each search walks the folder and compares sizes and mtimes, so outside
//!    edits are seen), and right after one note was edited outside Troupe;
//! 3. watched (after, [`troupe_actors::vault::watch`]): the same searches (index only),
//!    and how long an outside edit takes to be found (debounce + reindex);
//! 4. graph build time, and the process's peak RSS and CPU time.
//!
//! It prints figures and never asserts a target.
//!
//! ```text
//! cargo bench --bench vault_search
//! ```
//!
//! `TROUPE_BENCH_QUICK=1` uses 1,000 notes. Built and run by `cargo test --benches` (no
//! `--bench` flag), it skips itself unless `TROUPE_BENCH_QUICK` is set.

use std::path::Path;
use std::time::{Duration, Instant};

use troupe_actors::vault::{Vault, WriteMode};

/// Words per note body.
const WORDS_PER_NOTE: usize = 150;
/// Vocabulary size.
const VOCABULARY: usize = 2_000;
/// Searches per measured phase.
const SEARCHES: usize = 400;

/// A small deterministic generator (no dependency, same vault every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % below
    }
}

fn word(i: usize) -> String {
    const SYLLABLES: [&str; 16] = [
        "ka", "lo", "mi", "ren", "to", "sa", "vu", "ne", "qui", "dra", "po", "lis", "em", "yor",
        "ba", "tesh",
    ];
    format!(
        "{}{}{}",
        SYLLABLES[i % 16],
        SYLLABLES[(i / 16) % 16],
        SYLLABLES[(i / 256) % 16]
    )
}

fn generate(root: &Path, notes: usize, rng: &mut Lcg) -> std::io::Result<()> {
    for i in 0..notes {
        let dir = root.join(format!("area{:02}", i % 50));
        std::fs::create_dir_all(&dir)?;
        let mut text = format!(
            "---\ntitle: Note {i}\ntags: [t{}, t{}]\n---\n# Note {i}\n",
            i % 20,
            i % 7
        );
        for w in 0..WORDS_PER_NOTE {
            text.push_str(&word(rng.next(VOCABULARY)));
            text.push(if w % 12 == 11 { '\n' } else { ' ' });
        }
        for _ in 0..3 {
            text.push_str(&format!(" [[note{}]]", rng.next(notes)));
        }
        text.push('\n');
        std::fs::write(dir.join(format!("note{i}.md")), text)?;
    }
    Ok(())
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort_unstable();
    let at = |q: f64| {
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1]
    };
    (at(0.50), at(0.99))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Peak RSS (kB) and user+system CPU seconds of this process.
fn process_figures() -> (String, String) {
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.trim_start_matches("VmHWM:").trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let fields: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
            let ticks: f64 =
                fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
            Some(format!("{:.1} s", ticks / 100.0))
        })
        .unwrap_or_else(|| "?".into());
    (rss, cpu)
}

/// p50/p99 of 1- and 2-word searches when nothing changed.
fn searches(vault: &Vault, rng: &mut Lcg, label: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut one = Vec::with_capacity(SEARCHES);
    let mut two = Vec::with_capacity(SEARCHES);
    let mut hits = 0;
    for _ in 0..SEARCHES {
        let q = word(rng.next(VOCABULARY));
        let t = Instant::now();
        hits += vault.search(&q, 20)?.len();
        one.push(t.elapsed());
        let q = format!(
            "{} {}",
            word(rng.next(VOCABULARY)),
            word(rng.next(VOCABULARY))
        );
        let t = Instant::now();
        hits += vault.search(&q, 20)?.len();
        two.push(t.elapsed());
    }
    let (p50, p99) = percentiles(one);
    println!(
        "  {label}: search, 1 word, nothing changed: p50 {} p99 {} ({SEARCHES} queries)",
        ms(p50),
        ms(p99)
    );
    let (p50, p99) = percentiles(two);
    println!(
        "  {label}: search, 2 words, nothing changed: p50 {} p99 {} ({SEARCHES} queries, {hits} hits in all)",
        ms(p50),
        ms(p99)
    );
    Ok(())
}

/// Edits notes outside Troupe; measures the search right after each edit and, when
/// `watched`, how long until the edit is found (the watcher's debounce + reindex).
fn after_edits(
    vault: &Vault,
    memory: &Path,
    first: usize,
    watched: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut edited = Vec::with_capacity(SEARCHES / 4);
    let mut visible = Vec::with_capacity(SEARCHES / 4);
    for i in first..first + SEARCHES / 4 {
        let rel = format!("area{:02}/note{}.md", i % 50, i);
        let path = memory.join(&rel);
        let text = std::fs::read_to_string(&path)?;
        let wrote = Instant::now();
        std::fs::write(&path, format!("{text}edited zeppelin{i}\n"))?;
        let t = Instant::now();
        let mut found = vault.search(&format!("zeppelin{i}"), 5)?;
        edited.push(t.elapsed());
        while watched && found.first().map(|h| h.path.as_str()) != Some(rel.as_str()) {
            if wrote.elapsed() > Duration::from_secs(30) {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
            found = vault.search(&format!("zeppelin{i}"), 5)?;
        }
        visible.push(wrote.elapsed());
        if found.first().map(|h| h.path.as_str()) != Some(rel.as_str()) {
            println!("  warning: the edited note {rel} was not found first");
        }
    }
    let (p50, p99) = percentiles(edited);
    let how = if watched {
        "watched: search right after an outside edit (index only)"
    } else {
        "unwatched: search right after an outside edit (walk + reindex 1 note)"
    };
    println!("  {how}: p50 {} p99 {}", ms(p50), ms(p99));
    if watched {
        let (p50, p99) = percentiles(visible);
        println!(
            "  watched: outside edit found by search after: p50 {} p99 {} (debounce {} ms)",
            ms(p50),
            ms(p99),
            troupe_actors::vault::watch::DEBOUNCE.as_millis()
        );
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let quick = std::env::var("TROUPE_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    if !quick && !args.iter().any(|a| a == "--bench") {
        println!(
            "vault_search: skipped; run `cargo bench --bench vault_search` or set TROUPE_BENCH_QUICK=1"
        );
        return Ok(());
    }
    let notes = if quick { 1_000 } else { 10_000 };
    let base = std::env::temp_dir().join(format!("troupe-vault-bench-{}", std::process::id()));
    let memory = base.join("memory");
    std::fs::create_dir_all(&memory)?;
    let mut rng = Lcg(42);
    let started = Instant::now();
    generate(&memory, notes, &mut rng)?;
    println!(
        "vault_search: {notes} notes ({WORDS_PER_NOTE} words each, {VOCABULARY}-word vocabulary) generated in {}",
        ms(started.elapsed())
    );
    let vault = Vault::for_memory_dir(&memory);

    let started = Instant::now();
    let listed = vault.list()?;
    println!(
        "  index build (first reconcile, {} notes): {}",
        listed.len(),
        ms(started.elapsed())
    );

    // Before: nobody watches the vault, so every search walks the folder first.
    searches(&vault, &mut rng, "unwatched (walks)")?;
    after_edits(&vault, &memory, 0, false)?;

    // After: a watch keeps the index current; searches read the index only.
    let started = Instant::now();
    let watch = troupe_actors::vault::watch::start(&vault)?;
    while !troupe_actors::vault::watch::is_current(vault.root()) {
        std::thread::sleep(Duration::from_millis(5));
    }
    println!(
        "  watch started and first reconcile done: {}",
        ms(started.elapsed())
    );
    searches(&vault, &mut rng, "watched")?;
    after_edits(&vault, &memory, SEARCHES / 4, true)?;

    let t = Instant::now();
    vault.write("bench/new.md", "a new note [[note1]]\n", WriteMode::Replace)?;
    println!("  write one note through the vault: {}", ms(t.elapsed()));
    let t = Instant::now();
    let graph = vault.graph()?;
    println!(
        "  graph: {} nodes, {} edges in {}",
        graph.nodes.len(),
        graph.edges.len(),
        ms(t.elapsed())
    );
    let (rss, cpu) = process_figures();
    println!("  process: peak RSS {rss}, CPU {cpu}");
    drop(watch);
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}

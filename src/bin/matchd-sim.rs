//! `matchd-sim`: runs the deterministic simulator over many seeds (see `matchd::sim`).
//!
//! `matchd-sim [--ops N] [--seed S] [--seeds K] [--mutant NAME] [--list-mutants] [--no-faults]`
//! Without `--seed` it runs seeds 1..=K; a failing seed replays exactly with `--seed S`. The last
//! line is `simulated N operations over S seeds: V violations`; the exit code is 1 when V > 0.

use clap::Parser;
use matchd::sim::{run, Options};

#[derive(Parser)]
#[command(about = "Deterministic simulation of matchd's swipe protocol with faults")]
struct Args {
    /// Client operations in total (split over the seeds).
    #[arg(long, default_value_t = 100_000)]
    ops: u64,
    /// Run only this seed (with all of --ops).
    #[arg(long)]
    seed: Option<u64>,
    /// How many seeds to run (1..=K) when --seed is not given.
    #[arg(long, default_value_t = 50)]
    seeds: u64,
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    #[arg(long, default_value_t = 12)]
    users: usize,
    /// Run without faults.
    #[arg(long)]
    no_faults: bool,
    /// Put back a historical bug (needs the `mutants` feature).
    #[arg(long)]
    mutant: Option<String>,
    /// Print the mutants' names, one a line.
    #[arg(long)]
    list_mutants: bool,
    /// Stop after the first seed with a violation (to show a mutant is caught).
    #[arg(long)]
    stop_at_first: bool,
}

fn main() {
    let args = Args::parse();
    if args.list_mutants {
        for name in mutants() {
            println!("{name}");
        }
        return;
    }
    if let Err(e) = select(args.mutant.as_deref()) {
        eprintln!("matchd-sim: {e}");
        std::process::exit(2);
    }
    let seeds: Vec<u64> = match args.seed {
        Some(s) => vec![s],
        None => (1..=args.seeds.max(1)).collect(),
    };
    let per_seed = (args.ops / seeds.len() as u64).max(1);
    let options =
        Options { ops: per_seed, nodes: args.nodes.max(1), users: args.users.max(2), faults: !args.no_faults };
    let started = tokio::time::Instant::now();
    let (mut ops, mut violations, mut failing) = (0u64, 0usize, Vec::new());
    let (mut matches, mut events) = (0usize, 0usize);
    for seed in &seeds {
        let outcome = run(*seed, &options);
        ops += outcome.ops;
        matches += outcome.matches;
        events += outcome.events;
        if !outcome.violations.is_empty() {
            violations += outcome.violations.len();
            failing.push(*seed);
            eprintln!(
                "seed {seed}: {} violation(s) ({} matches, {} events):",
                outcome.violations.len(),
                outcome.matches,
                outcome.events
            );
            for v in outcome.violations.iter().take(5) {
                eprintln!("  {v}");
            }
            if args.stop_at_first {
                break;
            }
        }
    }
    if !failing.is_empty() {
        eprintln!("replay a failing seed with: scripts/simulate.sh --seed {} --ops {per_seed}", failing[0]);
    }
    eprintln!("{matches} matches stored, {events} events logged, {:.1} s", started.elapsed().as_secs_f64());
    println!("simulated {ops} operations over {} seeds: {violations} violations", seeds.len());
    if violations > 0 {
        std::process::exit(1);
    }
}

#[cfg(feature = "mutants")]
fn mutants() -> &'static [&'static str] {
    matchd::mutants::ALL
}

#[cfg(not(feature = "mutants"))]
fn mutants() -> &'static [&'static str] {
    &[]
}

#[cfg(feature = "mutants")]
fn select(name: Option<&str>) -> Result<(), String> {
    matchd::mutants::select(name)
}

#[cfg(not(feature = "mutants"))]
fn select(name: Option<&str>) -> Result<(), String> {
    match name {
        None => Ok(()),
        Some(_) => Err("mutants need the `mutants` feature (scripts/simulate.sh builds with it)".into()),
    }
}

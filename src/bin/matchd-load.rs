//! `matchd-load`: load and invariant checks against a matchd server (see `matchd::load`).
//! Exit status: 0 no violations, 1 invariant violations, 2 the run could not be carried out.

use std::process::ExitCode;

use clap::Parser;
use matchd::load::{run, LoadCli};

fn main() -> ExitCode {
    let cli = LoadCli::parse();
    let json = cli.common.json;
    let system = actix_rt::System::new();
    match system.block_on(run(cli)) {
        Ok(report) => {
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.human());
            }
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("matchd-load: {e}");
            ExitCode::from(2)
        }
    }
}

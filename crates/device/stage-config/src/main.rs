//! `migration-stage-config`: one line over the library (see `lib.rs`).

use std::process::ExitCode;

fn main() -> ExitCode {
    match migration_stage_config::parse_args(std::env::args_os().skip(1)) {
        Ok(None) => {
            println!("{}", migration_stage_config::USAGE);
            ExitCode::SUCCESS
        }
        Err(usage) => {
            eprintln!("error: {usage}");
            ExitCode::from(2)
        }
        Ok(Some(request)) => match migration_stage_config::run(&request) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::FAILURE
            }
        },
    }
}

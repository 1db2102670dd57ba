//! `meshd`: reads the command line and hands over to [`meshd::cli::run`]; everything else
//! lives in the library so tests can boot the same application in-process.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    meshd::cli::run(meshd::cli::Cli::parse())
}

//! The `bitconv` command line: parses arguments and hands off to `cli`.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}

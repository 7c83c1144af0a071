//! Subcommands, one file each. Exit codes: 0 success, 1 validation failed, 2 could not run.

mod bench;
mod convert;
mod dummy;
mod fetch;
mod golden;
mod inspect;
mod progress;
mod run;
mod runopts;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code when a check ran and failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code when bitconv could not do what was asked (bad input, I/O error, …).
pub const EXIT_ERROR: u8 = 2;

#[derive(Parser)]
#[command(
    name = "bitconv",
    version,
    about = "Convert 1.58-bit (ternary) Hugging Face checkpoints to GGUF for bitnet.cpp and llama.cpp, and prove the files correct."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure prompt and generation speed (tokens/s) against the memory-bandwidth bound.
    Bench(bench::Args),
    /// Convert a Hugging Face checkpoint directory to GGUF.
    Convert(convert::Args),
    /// Generate a random model of any bitnet.cpp size and any output type.
    Dummy(dummy::Args),
    /// Download a checkpoint from the Hub (into the shared cache), convert it and validate it.
    Fetch(fetch::Args),
    /// Compute a golden file (reference logits and weight digests) from a checkpoint or a GGUF file.
    Golden(golden::Args),
    /// Describe a GGUF file or a checkpoint directory.
    Inspect(inspect::Args),
    /// Generate text from a GGUF file.
    Run(run::Args),
    /// Check a GGUF file against a golden file (exit 1 when it fails).
    Validate(validate::Args),
}

/// Result of a subcommand: `Ok(true)` success, `Ok(false)` a check failed.
pub type Outcome = anyhow::Result<bool>;

/// Runs the command line.
pub fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so a closed stdout (`bitconv inspect F | head`) made every print
    // panic; with the default action the process ends quietly, as other command-line tools do.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    bitconv::util::remove_temporaries_on_signals();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(a) => bench::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Dummy(a) => dummy::run(a),
        Command::Fetch(a) => fetch::run(a),
        Command::Golden(a) => golden::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Run(a) => run::run(a),
        Command::Validate(a) => validate::run(a),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_FAILED),
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("bitconv: error: {}", render_error(&e));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// The error and its causes on one line, each cause once: a cause whose text an outer message
/// already quotes (many of ours say `path: cause`) is not repeated.
pub fn render_error(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Sizes rayon's global pool (`-t`); the default is one thread per core.
pub fn init_threads(threads: Option<usize>) -> anyhow::Result<()> {
    if let Some(n) = threads {
        anyhow::ensure!(n > 0, "-t/--threads must be at least 1");
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| anyhow::anyhow!("cannot start {n} threads: {e}"))?;
    }
    Ok(())
}

/// Prints a JSON value to stdout, pretty.
pub fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn causes_are_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(io).context("x.gguf: No such file");
        assert_eq!(super::render_error(&e), "x.gguf: No such file");
        let e = anyhow::anyhow!("disk full").context("cannot write out.gguf");
        assert_eq!(super::render_error(&e), "cannot write out.gguf: disk full");
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}

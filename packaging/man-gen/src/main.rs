//! chorus-man: writes chorusd(8), generated from chorusd's command-line definition, or checks
//! that the committed copy is up to date.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Writes the generated chorusd(8) man page into a directory, or checks the copy there.
#[derive(Debug, Parser)]
#[command(name = "chorus-man")]
struct Cli {
    /// Directory of the man pages.
    #[arg(long, value_name = "DIR", default_value = "man")]
    out_dir: PathBuf,

    /// Compare the page in DIR with the generated one instead of writing it; exit with status 1
    /// when they differ.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = cli.out_dir.join(chorus_man::CHORUSD_PAGE);
    let page = match chorus_man::render_chorusd() {
        Ok(page) => page,
        Err(e) => {
            eprintln!("chorus-man: failed to render chorusd(8): {e}");
            return ExitCode::FAILURE;
        }
    };

    if cli.check {
        return check(&path, &page);
    }
    match std::fs::write(&path, &page) {
        Ok(()) => {
            println!("wrote {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("chorus-man: failed to write {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path, page: &[u8]) -> ExitCode {
    match std::fs::read(path) {
        Ok(existing) if existing == page => {
            println!("{} is up to date", path.display());
            ExitCode::SUCCESS
        }
        Ok(_) => {
            eprintln!(
                "chorus-man: {} is out of date; regenerate it with `cargo run -p chorus-man`",
                path.display()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("chorus-man: failed to read {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

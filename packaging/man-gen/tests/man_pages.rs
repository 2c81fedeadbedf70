//! Checks that the man pages in man/ keep step with the programs they describe.
//!
//! chorusd(8) is generated, so the committed copy must equal a fresh rendering. chorusctl(1) is
//! written by hand, so every command and flag that `chorusctl --help` lists must appear in it.
//! That test runs the chorusctl binary named by the CHORUSCTL environment variable, or the one
//! that `cargo build` left beside this test's own target directory.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read_page(name: &str) -> String {
    let path = repo_root().join("man").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Removes the roff escapes that the pages use in flags and names.
fn plain(roff: &str) -> String {
    roff.replace("\\-", "-")
        .replace("\\&", "")
        .replace("\\%", "")
}

#[test]
fn chorusd_page_matches_cli_definition() {
    let generated = String::from_utf8(chorus_man::render_chorusd().unwrap()).unwrap();
    let committed = read_page(chorus_man::CHORUSD_PAGE);
    assert!(
        generated == committed,
        "man/chorusd.8 is out of date; regenerate it with `cargo run -p chorus-man`"
    );
}

/// Returns the chorusctl binary to check, or `None` when none is built.
fn chorusctl_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHORUSCTL") {
        return Some(PathBuf::from(path));
    }
    // This test runs from target/<profile>/deps/; cargo puts binaries in target/<profile>/.
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.parent()?.join("chorusctl");
    candidate.is_file().then_some(candidate)
}

fn help(binary: &Path, args: &[&str]) -> String {
    let output = Command::new(binary)
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{} {args:?} --help failed: {output:?}",
        binary.display()
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Returns the lines of the help section that starts with `heading` (such as "Commands:").
fn help_section<'a>(help: &'a str, heading: &str) -> Vec<&'a str> {
    help.lines()
        .skip_while(|line| *line != heading)
        .skip(1)
        .take_while(|line| line.starts_with(' '))
        .collect()
}

/// Returns the subcommand names that a help text lists.
fn commands(help: &str) -> Vec<String> {
    help_section(help, "Commands:")
        .iter()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Returns every flag that a help text lists, long and short, under any heading ("Options:",
/// "TLS:"). Clap indents a flag by 2 or 6 spaces and its wrapped description by 10 or more.
fn flags(help: &str) -> Vec<String> {
    let mut flags = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if !(1..8).contains(&indent) || !trimmed.starts_with('-') {
            continue;
        }
        let spec = trimmed.split("  ").next().unwrap_or_default();
        for word in spec.split([',', ' ']) {
            if word.starts_with('-') {
                flags.push(word.to_owned());
            }
        }
    }
    flags
}

#[test]
fn help_parsers_read_clap_output() {
    let sample = "Usage: x\n\nCommands:\n  publish  Publish\n  help     Help\n\nOptions:\n      \
                  --server <SERVER>  Address\n  -h, --help             Print help\n\nTLS:\n      \
                  --ca <FILE>\n          PEM file; implies --tls\n";
    assert_eq!(commands(sample), ["publish", "help"]);
    assert_eq!(flags(sample), ["--server", "-h", "--help", "--ca"]);
}

/// Returns the words of every `.TP` entry heading of a page: the commands and flags it
/// documents, with roff escapes, quotes and commas removed.
fn entry_words(page: &str) -> Vec<String> {
    let lines: Vec<&str> = page.lines().collect();
    let mut words = Vec::new();
    for pair in lines.windows(2) {
        if pair[0] != ".TP" {
            continue;
        }
        let mut heading = pair[1].split_whitespace();
        if !matches!(heading.next(), Some(".B" | ".BI" | ".BR")) {
            continue;
        }
        for word in heading {
            let word = plain(word).replace(['"', ','], "");
            if !word.is_empty() {
                words.push(word);
            }
        }
    }
    words
}

#[test]
fn entry_words_read_tp_headings() {
    let page = ".TP\n.BR \\-h \", \" \\-\\-help\nPrint help.\n.TP\n.BI tail \" topic\"\n";
    assert_eq!(entry_words(page), ["-h", "--help", "tail", "topic"]);
}

#[test]
fn chorusctl_page_lists_every_command_and_flag() {
    let Some(binary) = chorusctl_binary() else {
        eprintln!("skipped: no chorusctl binary; run `cargo build -p chorusctl` or set CHORUSCTL");
        return;
    };
    let documented = entry_words(&read_page("chorusctl.1"));
    let top = help(&binary, &[]);
    let names = commands(&top);
    assert!(
        !names.is_empty(),
        "`chorusctl --help` lists no commands:\n{top}"
    );

    let mut missing: Vec<String> = flags(&top)
        .into_iter()
        .filter(|flag| !documented.contains(flag))
        .collect();
    for name in &names {
        if !documented.contains(name) {
            missing.push(format!("command {name}"));
        }
        if name == "help" {
            continue;
        }
        for flag in flags(&help(&binary, &[name])) {
            if !documented.contains(&flag) {
                missing.push(format!("{name} {flag}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "man/chorusctl.1 documents no entry for {missing:?}"
    );
}

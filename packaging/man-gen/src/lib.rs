//! Renders the chorusd(8) man page from chorusd's own command-line definition.
//!
//! The NAME, SYNOPSIS, DESCRIPTION and OPTIONS sections come from [`chorus_broker::cli::Args`]
//! through `clap_mangen`, so they list exactly the flags that chorusd accepts. The sections that
//! clap has no data for (files, signals, exit status, admin endpoint, see also) are hand-written
//! roff in `chorusd-sections.8.in`, appended after the options.

use std::io;

use chorus_broker::cli::Args;
use clap::CommandFactory;
use clap_mangen::Man;

/// File name of the generated page inside the man page directory.
pub const CHORUSD_PAGE: &str = "chorusd.8";

/// Hand-written sections appended to the generated part of chorusd(8).
const CHORUSD_SECTIONS: &str = include_str!("chorusd-sections.8.in");

/// Renders the complete chorusd(8) page as roff.
pub fn render_chorusd() -> io::Result<Vec<u8>> {
    // The short about is the crate description, which repeats the program name ("chorusd: ..."),
    // and the NAME section already starts with the name.
    let command = Args::command().about("the chorus live-comment broker");
    let man = Man::new(command)
        .title("CHORUSD")
        .section("8")
        .manual("System Administration");

    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    page.extend_from_slice(CHORUSD_SECTIONS.as_bytes());
    Ok(page)
}

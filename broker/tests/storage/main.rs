//! Tests of the segment log against real files in temporary directories.
//!
//! `log` covers the API, `recovery` files cut or garbled at every position, `disk_model` crash
//! images built from what reached the disk and what stayed in the page cache, `retention` the
//! deletion of segments and topics, `open_files` the budget of open segment files, and `golden`
//! the checked-in files of format version 1 in `spec/storage/`.

mod disk_model;
mod golden;
mod log;
mod open_files;
mod open_time;
mod recovery;
mod retention;
mod util;

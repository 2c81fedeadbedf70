//! The recorded YouTube live chat that replay tests publish. Its terms allow its use as test
//! input only, so the repository does not ship it, and tests skip when it is absent.

use std::path::PathBuf;

/// Returns the path of the recorded chat log, which lies outside the repository.
pub fn recorded_chat_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/chatlogs/youtube-live-hk-stream.csv")
}

/// Reads the text of the first `limit` comments of the recorded chat, or returns `None` when
/// the log is absent. The CSV header names the columns, and the text is in `message`.
pub fn recorded_chat(limit: usize) -> Option<Vec<Vec<u8>>> {
    let path = recorded_chat_path();
    if !path.exists() {
        return None;
    }
    let mut reader = csv::Reader::from_path(&path).expect("chat log opens");
    let headers = reader.headers().expect("chat log has a header").clone();
    let column = headers
        .iter()
        .position(|name| name == "message")
        .expect("chat log has a message column");
    let texts = reader
        .records()
        .take(limit)
        .map(|record| {
            let record = record.expect("chat log record parses");
            record[column].as_bytes().to_vec()
        })
        .collect();
    Some(texts)
}

/// Prints why a replay test is skipped.
pub fn print_skip(test: &str) {
    println!(
        "skipped {test}: the recorded chat log {} is missing",
        recorded_chat_path().display()
    );
}

//! The comments a run publishes, which publisher sends each one, and their payloads.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One comment to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Comment {
    /// Time of the comment relative to the first comment of the log.
    pub(crate) at: Duration,
    /// Author id; all comments of one author go through one publisher.
    pub(crate) author: String,
    /// Comment text.
    pub(crate) text: String,
}

/// Payload of a published comment as JSON, the way a platform backend would send it.
///
/// Short keys keep the overhead small: `i` is the comment's index in the run, `a` its author and
/// `t` its text. Subscribers use `i` to look up what they should have received.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Payload {
    pub(crate) i: u64,
    pub(crate) a: String,
    pub(crate) t: String,
}

/// The comments of a run with their encoded payloads and publisher assignment.
#[derive(Debug)]
pub(crate) struct Workload {
    comments: Vec<Comment>,
    /// Every payload back to back, so subscribers comparing payloads read adjacent memory.
    payloads: Vec<u8>,
    /// Start of each payload in `payloads`, and its end as one more entry.
    payload_starts: Vec<usize>,
    publisher_of: Vec<u32>,
    publishers: usize,
}

impl Workload {
    /// Encodes every payload up front, so that encoding stays out of the timed path, and deals
    /// authors to `publishers` round-robin in order of their first comment.
    pub(crate) fn new(comments: Vec<Comment>, publishers: usize) -> Workload {
        let publishers = publishers.max(1);
        let mut payloads = Vec::new();
        let mut payload_starts = Vec::with_capacity(comments.len() + 1);
        for (index, c) in comments.iter().enumerate() {
            payload_starts.push(payloads.len());
            payloads.extend_from_slice(&encode_payload(index as u64, &c.author, &c.text));
        }
        payload_starts.push(payloads.len());
        let publisher_of = assign_publishers(&comments, publishers);
        Workload {
            comments,
            payloads,
            payload_starts,
            publisher_of,
            publishers,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.comments.len()
    }

    pub(crate) fn publishers(&self) -> usize {
        self.publishers
    }

    pub(crate) fn comment(&self, index: usize) -> &Comment {
        &self.comments[index]
    }

    pub(crate) fn payload(&self, index: usize) -> &[u8] {
        &self.payloads[self.payload_starts[index]..self.payload_starts[index + 1]]
    }

    /// Returns the publisher that sends comment `index`.
    pub(crate) fn publisher_of(&self, index: usize) -> usize {
        self.publisher_of[index] as usize
    }

    /// Returns the indices that `publisher` sends, in increasing order.
    pub(crate) fn indices_of(&self, publisher: usize) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| self.publisher_of(i) == publisher)
            .collect()
    }
}

/// Encodes the payload of comment `index`.
pub(crate) fn encode_payload(index: u64, author: &str, text: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct PayloadRef<'a> {
        i: u64,
        a: &'a str,
        t: &'a str,
    }
    let payload = PayloadRef {
        i: index,
        a: author,
        t: text,
    };
    // Serializing a struct of an integer and two strings into a Vec cannot fail.
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// Decodes a received payload; `None` when it is not a payload of this bench.
pub(crate) fn decode_payload(bytes: &[u8]) -> Option<Payload> {
    serde_json::from_slice(bytes).ok()
}

fn assign_publishers(comments: &[Comment], publishers: usize) -> Vec<u32> {
    let mut by_author: HashMap<&str, u32> = HashMap::new();
    let mut next = 0usize;
    comments
        .iter()
        .map(|c| {
            *by_author.entry(c.author.as_str()).or_insert_with(|| {
                let publisher = (next % publishers) as u32;
                next += 1;
                publisher
            })
        })
        .collect()
}

#[cfg(test)]
pub(crate) fn comment(at_ms: u64, author: &str, text: &str) -> Comment {
    Comment {
        at: Duration::from_millis(at_ms),
        author: author.to_owned(),
        text: text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_unicode() {
        let bytes = encode_payload(7, "u_1", "好 \"quoted\" 👍\nline");
        let decoded = decode_payload(&bytes).unwrap();
        assert_eq!(decoded.i, 7);
        assert_eq!(decoded.a, "u_1");
        assert_eq!(decoded.t, "好 \"quoted\" 👍\nline");
    }

    #[test]
    fn payload_is_compact_json() {
        let bytes = encode_payload(3, "u_a", "hi");
        assert_eq!(&bytes[..], br#"{"i":3,"a":"u_a","t":"hi"}"#);
    }

    #[test]
    fn authors_keep_one_publisher() {
        let comments = vec![
            comment(0, "ann", "a"),
            comment(1, "bob", "b"),
            comment(2, "cat", "c"),
            comment(3, "ann", "d"),
            comment(4, "cat", "e"),
        ];
        let workload = Workload::new(comments, 2);
        let publishers: Vec<usize> = (0..5).map(|i| workload.publisher_of(i)).collect();
        assert_eq!(publishers, vec![0, 1, 0, 0, 0]);
        assert_eq!(workload.indices_of(0), vec![0, 2, 3, 4]);
        assert_eq!(workload.indices_of(1), vec![1]);
    }
}

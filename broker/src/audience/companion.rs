//! Names and payloads of the companion topics that the origin writes for each topic `T`:
//! `_viewers/T` and `_reactions/T`.

use std::collections::BTreeMap;

use chorus_protocol::Topic;
use serde_json::{Map, Value};

/// Prefix of the topic that carries a topic's viewer counts.
pub(crate) const VIEWERS_PREFIX: &str = "_viewers/";

/// Prefix of the topic that carries a topic's reactions.
pub(crate) const REACTIONS_PREFIX: &str = "_reactions/";

/// Maximum length in bytes of a topic name with companion topics, because the longer prefix,
/// `_reactions/` (11 bytes), and the name must fit the 255-byte limit of topic names.
pub(crate) const MAX_BASE_LEN: usize = 255 - REACTIONS_PREFIX.len();

/// Returns whether `topic` is reserved for streams that the broker writes: its first segment
/// starts with `_`.
pub(crate) fn is_reserved(topic: &Topic) -> bool {
    topic.as_str().starts_with('_')
}

/// Returns whether `topic` has companion topics: it is not reserved itself and its name is at
/// most [`MAX_BASE_LEN`] bytes long.
pub(crate) fn has_companions(topic: &Topic) -> bool {
    !is_reserved(topic) && topic.as_str().len() <= MAX_BASE_LEN
}

/// Returns whether `topic` is a companion topic, `_viewers/T` or `_reactions/T`.
pub(crate) fn is_companion(topic: &Topic) -> bool {
    routing_name(topic).len() < topic.as_str().len()
}

/// Returns `_viewers/T` for topic `T`, or `None` when `T` has no companion topics.
pub(crate) fn viewers_topic(topic: &Topic) -> Option<Topic> {
    companion(VIEWERS_PREFIX, topic)
}

/// Returns `_reactions/T` for topic `T`, or `None` when `T` has no companion topics.
pub(crate) fn reactions_topic(topic: &Topic) -> Option<Topic> {
    companion(REACTIONS_PREFIX, topic)
}

fn companion(prefix: &str, topic: &Topic) -> Option<Topic> {
    if !has_companions(topic) {
        return None;
    }
    Topic::new(format!("{prefix}{topic}")).ok()
}

/// Returns the name that places `topic` in the cluster's topic map. For the companion topics
/// `_viewers/T` and `_reactions/T` it is `T`, so that they live on the origin that owns and
/// counts `T`. For every other topic it is the topic's own name.
pub(crate) fn routing_name(topic: &Topic) -> &str {
    let name = topic.as_str();
    [VIEWERS_PREFIX, REACTIONS_PREFIX]
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))
        .unwrap_or(name)
}

/// Returns the payload of a `_viewers/T` record: `{"viewers":N}`.
pub(crate) fn viewers_payload(viewers: u64) -> Vec<u8> {
    let mut record = Map::new();
    record.insert("viewers".into(), Value::from(viewers));
    Value::Object(record).to_string().into_bytes()
}

/// Returns the payload of a `_reactions/T` record:
/// `{"interval_ms":250,"reactions":{"clap":3,"heart":12}}`, with the kinds in byte order.
pub(crate) fn reactions_payload(interval_ms: u64, reactions: &BTreeMap<String, u64>) -> Vec<u8> {
    let kinds: Map<String, Value> = reactions
        .iter()
        .map(|(kind, count)| (kind.clone(), Value::from(*count)))
        .collect();
    let mut record = Map::new();
    record.insert("interval_ms".into(), Value::from(interval_ms));
    record.insert("reactions".into(), Value::Object(kinds));
    Value::Object(record).to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> Topic {
        Topic::new(name).unwrap()
    }

    #[test]
    fn companion_names_prefix_the_topic() {
        let t = topic("event/2026-final");
        assert_eq!(
            viewers_topic(&t).unwrap().as_str(),
            "_viewers/event/2026-final"
        );
        assert_eq!(
            reactions_topic(&t).unwrap().as_str(),
            "_reactions/event/2026-final"
        );
    }

    /// Returns a valid topic name of `len` bytes: segments of 60 bytes, then one of 1 to 61.
    fn long_name(len: usize) -> String {
        let full = (len - 1) / 61;
        format!("{}/", "a".repeat(60)).repeat(full) + &"b".repeat(len - 61 * full)
    }

    #[test]
    fn longest_base_name_still_has_companions() {
        let name = long_name(MAX_BASE_LEN);
        assert_eq!(name.len(), MAX_BASE_LEN);
        let reactions = reactions_topic(&topic(&name)).expect("companion of a 244-byte name");
        assert_eq!(reactions.as_str().len(), 255);
    }

    /// A 245-byte name would give `_reactions/T` 256 bytes, one past the limit of topic names.
    #[test]
    fn longer_base_name_has_no_companions() {
        let name = long_name(MAX_BASE_LEN + 1);
        assert_eq!(name.len(), MAX_BASE_LEN + 1);
        assert_eq!(viewers_topic(&topic(&name)), None);
        assert_eq!(reactions_topic(&topic(&name)), None);
    }

    #[test]
    fn reserved_topics_have_no_companions() {
        assert_eq!(viewers_topic(&topic("_viewers/live")), None);
        assert_eq!(reactions_topic(&topic("_private")), None);
    }

    #[test]
    fn routing_name_strips_companion_prefix() {
        assert_eq!(routing_name(&topic("_viewers/live/a")), "live/a");
        assert_eq!(routing_name(&topic("_reactions/live/a")), "live/a");
        assert_eq!(routing_name(&topic("live/a")), "live/a");
        assert_eq!(routing_name(&topic("_other/live")), "_other/live");
    }

    #[test]
    fn viewers_payload_is_json_object() {
        assert_eq!(viewers_payload(42), br#"{"viewers":42}"#);
    }

    #[test]
    fn reactions_payload_lists_kinds() {
        let sums = BTreeMap::from([("heart".to_owned(), 12), ("clap".to_owned(), 3)]);
        let payload = reactions_payload(250, &sums);
        assert_eq!(
            payload,
            br#"{"interval_ms":250,"reactions":{"clap":3,"heart":12}}"#
        );
    }

    #[test]
    fn reactions_payload_escapes_kinds() {
        let sums = BTreeMap::from([("say \"hi\"".to_owned(), 1)]);
        let payload = reactions_payload(250, &sums);
        let parsed: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(parsed["reactions"]["say \"hi\""], 1);
    }
}

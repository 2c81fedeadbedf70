//! Loop detection in the relay tree.
//!
//! Every node has a node id. A relay sends, in the `client_name` of its HELLO upstream, the
//! token `chorus-relay/<id>,<id>,...`: its own id, then the ids of every relay connected below
//! it, which those relays sent in their own HELLOs. A node that finds its own id in that chain
//! would receive its own subscriptions and publishes back, so it rejects the connection with
//! ERROR `UNEXPECTED_FRAME` "relay loop".
//!
//! The check runs when a link connects, and the chain a link announced goes stale when relays
//! join below afterwards. So when a relay admits a chain with an id it has not yet announced
//! upstream, its links connect to their upstreams again with the longer chain (see
//! `Command::AnnounceChain`), and a loop that the join closed is caught there. NOTE: two links
//! of one loop that connect at the same moment each see a chain without the other, so such a
//! loop is caught at the next announcement or reconnect. A chain longer than `client_name`
//! allows (255 bytes) is cut, and loops through the ids cut off go undetected.

use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;
use rand::Rng;

/// Marks the relay chain inside a HELLO `client_name`.
pub(crate) const CHAIN_PREFIX: &str = "chorus-relay/";

/// Longest `client_name` that HELLO carries.
const MAX_CLIENT_NAME: usize = 255;

/// This node's id and the chains of the relays connected below it.
#[derive(Debug)]
pub(crate) struct Lineage {
    node_id: String,
    /// Relay chains by connection id.
    children: Mutex<HashMap<u64, Vec<String>>>,
    /// Ids this node has put in a HELLO upstream, those cut off for length included.
    announced: Mutex<HashSet<String>>,
}

impl Lineage {
    /// Creates the lineage of a node with `node_id`, or a random 12-hex-digit id when empty.
    pub(crate) fn new(node_id: &str) -> Lineage {
        let node_id = if node_id.is_empty() {
            format!("{:012x}", rand::thread_rng().gen::<u64>() >> 16)
        } else {
            node_id.to_owned()
        };
        Lineage {
            node_id,
            children: Mutex::new(HashMap::new()),
            announced: Mutex::new(HashSet::new()),
        }
    }

    pub(crate) fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Checks the relay chain in a HELLO's `client_name`, if it has one. Remembers the chain of
    /// an accepted relay under `conn_id`, and returns whether it holds an id that this node has
    /// not announced upstream yet; returns the rejection message for a loop.
    pub(crate) fn admit(&self, conn_id: u64, client_name: &str) -> Result<bool, String> {
        let Some(chain) = parse_chain(client_name) else {
            return Ok(false);
        };
        if chain.contains(&self.node_id.as_str()) {
            return Err(format!(
                "relay loop: this node ({}) is already in the relay chain {}",
                self.node_id,
                chain.join(",")
            ));
        }
        let announced = self.announced.lock();
        let news = chain.iter().any(|id| !announced.contains(*id));
        drop(announced);
        let chain = chain.into_iter().map(str::to_owned).collect();
        self.children.lock().insert(conn_id, chain);
        Ok(news)
    }

    /// Forgets the chain of a closed connection.
    pub(crate) fn forget(&self, conn_id: u64) {
        self.children.lock().remove(&conn_id);
    }

    /// Returns the `client_name` for a HELLO upstream: `name`, then the chain of this node and
    /// every relay below it, cut to fit the field.
    pub(crate) fn hello_name(&self, name: &str) -> String {
        let mut below: Vec<String> = self.children.lock().values().flatten().cloned().collect();
        below.sort_unstable();
        below.dedup();
        self.announced.lock().extend(below.iter().cloned());
        let mut text = format!("{name} {CHAIN_PREFIX}{}", self.node_id);
        for id in below {
            if text.len() + 1 + id.len() > MAX_CLIENT_NAME {
                tracing::warn!(
                    node = %self.node_id,
                    "relay chain too long for HELLO; loops through the relays left out go \
                     undetected"
                );
                break;
            }
            text.push(',');
            text.push_str(&id);
        }
        text
    }
}

/// Returns the ids of the relay chain in a HELLO `client_name`, or `None` when it has none.
pub(crate) fn parse_chain(client_name: &str) -> Option<Vec<&str>> {
    let token = client_name
        .split_whitespace()
        .rev()
        .find_map(|word| word.strip_prefix(CHAIN_PREFIX))?;
    Some(token.split(',').filter(|id| !id.is_empty()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_client_name_has_no_chain() {
        assert_eq!(parse_chain("chorus-client-rust/0.1.0"), None);
    }

    #[test]
    fn chain_is_read_after_the_name() {
        let chain = parse_chain("chorusd/0.1.0 chorus-relay/edge-1,edge-2");
        assert_eq!(chain, Some(vec!["edge-1", "edge-2"]));
    }

    #[test]
    fn own_id_in_chain_is_rejected() {
        let origin = Lineage::new("origin");
        let result = origin.admit(1, "chorusd chorus-relay/regional,origin");
        assert!(result.is_err());
    }

    #[test]
    fn direct_self_connection_is_rejected() {
        let relay = Lineage::new("edge");
        let name = relay.hello_name("chorusd");
        assert!(relay.admit(1, &name).is_err());
    }

    #[test]
    fn chain_carries_relays_below() {
        let regional = Lineage::new("regional");
        regional
            .admit(7, "chorusd chorus-relay/edge-1")
            .expect("edge has no loop");
        assert_eq!(
            regional.hello_name("chorusd"),
            "chorusd chorus-relay/regional,edge-1"
        );
    }

    /// A loop of two relays: the regional relay serves the edge, then the edge is configured as
    /// the regional relay's upstream. The edge sees itself in the regional relay's chain.
    #[test]
    fn two_node_loop_is_detected() {
        let edge = Lineage::new("edge");
        let regional = Lineage::new("regional");
        regional
            .admit(1, &edge.hello_name("chorusd"))
            .expect("first link is not a loop");
        let result = edge.admit(2, &regional.hello_name("chorusd"));
        assert!(result.is_err());
    }

    #[test]
    fn forgotten_child_leaves_chain() {
        let regional = Lineage::new("regional");
        regional.admit(7, "x chorus-relay/edge-1").unwrap();
        regional.forget(7);
        assert_eq!(regional.hello_name("x"), "x chorus-relay/regional");
    }

    #[test]
    fn long_chain_is_cut_to_field_size() {
        let regional = Lineage::new("regional");
        for conn in 0..40 {
            let name = format!("x chorus-relay/edge-{conn:04}");
            regional.admit(conn, &name).unwrap();
        }
        assert!(regional.hello_name("chorusd").len() <= MAX_CLIENT_NAME);
    }

    #[test]
    fn chain_with_unannounced_ids_is_news() {
        let regional = Lineage::new("regional");
        let first = regional.admit(1, "x chorus-relay/edge-1");
        regional.hello_name("chorusd");
        let again = regional.admit(2, "x chorus-relay/edge-1");
        let longer = regional.admit(3, "x chorus-relay/edge-2,edge-1");
        assert_eq!(first, Ok(true), "edge-1 before any HELLO upstream");
        assert_eq!(again, Ok(false), "edge-1 after the HELLO that carried it");
        assert_eq!(longer, Ok(true), "edge-2 not announced yet");
    }

    #[test]
    fn random_ids_differ() {
        assert_ne!(Lineage::new("").node_id(), Lineage::new("").node_id());
    }
}

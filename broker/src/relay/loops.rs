//! Loop detection in the relay tree.
//!
//! Every node has a node id. A relay sends, in the `client_name` of its HELLO upstream, the
//! token `chorus-relay/<id>,<id>,...`: its own id, then the ids of every relay connected below
//! it, which those relays sent in their own HELLOs. A node that finds its own id in that chain
//! would receive its own subscriptions and publishes back, so it rejects the connection with
//! ERROR `UNEXPECTED_FRAME` "relay loop".
//!
//! The check runs when a link connects, and the chain a link announced goes stale when relays
//! join below afterwards. So when a relay admits a chain with an id that is missing from the
//! HELLO of a link's current connection, that link connects to its upstream again with the
//! longer chain (see `Command::AnnounceChain`). The upstream then detects a loop that the join
//! closed. NOTE: two links
//! of one loop that connect at the same moment each see a chain without the other, so such a
//! loop is caught at the next announcement or reconnect. A chain longer than `client_name`
//! allows (255 bytes) is cut, and loops through the ids cut off go undetected.

use std::collections::HashMap;
use std::path::Path;

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
}

impl Lineage {
    /// Creates the lineage of a node with `node_id`, or a random 12-hex-digit id when empty.
    pub(crate) fn new(node_id: &str) -> Lineage {
        let node_id = if node_id.is_empty() {
            random_node_id()
        } else {
            node_id.to_owned()
        };
        Lineage {
            node_id,
            children: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Checks the relay chain in a HELLO's `client_name`, if it has one. Remembers the chain of
    /// an accepted relay under `conn_id` and returns its ids; returns the rejection message for
    /// a loop.
    pub(crate) fn admit(&self, conn_id: u64, client_name: &str) -> Result<Vec<String>, String> {
        let Some(chain) = parse_chain(client_name) else {
            return Ok(Vec::new());
        };
        if chain.contains(&self.node_id.as_str()) {
            return Err(format!(
                "relay loop: this node ({}) is already in the relay chain {}",
                self.node_id,
                chain.join(",")
            ));
        }
        let chain: Vec<String> = chain.into_iter().map(str::to_owned).collect();
        self.children.lock().insert(conn_id, chain.clone());
        Ok(chain)
    }

    /// Returns the ids of every relay connected below this node, sorted, each once.
    pub(crate) fn below(&self) -> Vec<String> {
        let mut below: Vec<String> = self.children.lock().values().flatten().cloned().collect();
        below.sort_unstable();
        below.dedup();
        below
    }

    /// Forgets the chain of a closed connection.
    pub(crate) fn forget(&self, conn_id: u64) {
        self.children.lock().remove(&conn_id);
    }

    /// Returns the `client_name` for a HELLO upstream: `name`, then the chain of this node and
    /// every relay below it, cut to fit the field.
    #[cfg(test)]
    pub(crate) fn hello_name(&self, name: &str) -> String {
        self.hello_chain(name).0
    }

    /// Returns [`Lineage::hello_name`] and the ids of the relays below that it stands for, the
    /// ones cut off for length included.
    pub(crate) fn hello_chain(&self, name: &str) -> (String, Vec<String>) {
        let below = self.below();
        let mut text = format!("{name} {CHAIN_PREFIX}{}", self.node_id);
        for id in &below {
            if text.len() + 1 + id.len() > MAX_CLIENT_NAME {
                tracing::warn!(
                    node = %self.node_id,
                    "relay chain too long for HELLO; loops through the relays left out go \
                     undetected"
                );
                break;
            }
            text.push(',');
            text.push_str(id);
        }
        (text, below)
    }
}

fn random_node_id() -> String {
    format!("{:012x}", rand::thread_rng().gen::<u64>() >> 16)
}

/// Name of the file in the data directory that keeps a node's random id across restarts.
const NODE_ID_FILE: &str = "node_id";

/// Returns the node id stored in `data_dir`, or a new random one that is written there. A node
/// without a configured `node_id` so keeps its id across restarts, because each new id below a
/// relay makes its links announce the chain upstream again. When the file cannot be read or
/// written, the id is random for this run and a warning is logged.
pub(crate) fn stored_node_id(data_dir: &Path) -> String {
    let path = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            if crate::relay::config::validate_node_id(id).is_ok() {
                return id.to_owned();
            }
            tracing::warn!(path = %path.display(), "ignoring an invalid stored node id; writing a new one");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the stored node id; using a random id for this run");
            return random_node_id();
        }
    }
    let id = random_node_id();
    if let Err(e) = std::fs::write(&path, format!("{id}\n")) {
        tracing::warn!(path = %path.display(), error = %e, "cannot store the node id; it changes at the next start");
    }
    id
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
    fn hello_chain_names_the_relays_below() {
        let regional = Lineage::new("regional");
        let admitted = regional.admit(1, "x chorus-relay/edge-2,edge-1");
        let (text, below) = regional.hello_chain("chorusd");
        assert_eq!(admitted, Ok(vec!["edge-2".to_owned(), "edge-1".to_owned()]));
        assert_eq!(text, "chorusd chorus-relay/regional,edge-1,edge-2");
        assert_eq!(below, vec!["edge-1".to_owned(), "edge-2".to_owned()]);
    }

    #[test]
    fn stored_node_id_survives_a_restart() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let first = stored_node_id(dir.path());
        let second = stored_node_id(dir.path());
        assert_eq!(first, second, "id after a restart");
        assert_eq!(first.len(), 12, "length of a random id");
    }

    #[test]
    fn invalid_stored_node_id_is_replaced() {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(dir.path().join(NODE_ID_FILE), "not/an id\n").expect("write the file");
        let id = stored_node_id(dir.path());
        assert_eq!(id.len(), 12, "length of the new id");
        let stored = std::fs::read_to_string(dir.path().join(NODE_ID_FILE)).expect("read");
        assert_eq!(stored.trim(), id, "stored id");
    }

    #[test]
    fn random_ids_differ() {
        assert_ne!(Lineage::new("").node_id(), Lineage::new("").node_id());
    }
}

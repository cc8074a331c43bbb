//! The advertised address of every known broker on every named listener, and the rewrite that
//! gives each client the addresses of the listener it connected to.
//!
//! Why a rewrite at the edge: the handlers answer Metadata, FindCoordinator and DescribeCluster
//! with each broker's primary address (the one its node id and its leases are keyed by). A
//! client that came in through another listener (TLS from outside the cluster, say) must be
//! sent to that listener's addresses instead, or it would connect to a port that speaks another
//! protocol. The wire server of a secondary listener calls [`readdress`] on those answers; the
//! handlers stay listener-blind. Peers publish their listener addresses in their leases, and
//! whoever reads those leases records them here.
//!
//! A broker without an address on the listener (a peer that does not have it, or one not seen
//! yet) keeps its primary address: that is what the peer itself advertises.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use kafka_protocol::messages::ResponseKind;
use kafka_protocol::protocol::StrBytes;

use crate::topic_api::{BrokerAddr, node_id_for_addr};

/// Listener name → advertised `host:port`, as published in leases.
pub type ListenerMap = BTreeMap<String, String>;

/// One broker's (host, port) by listener name.
type AddressesByListener = BTreeMap<String, (String, i32)>;

/// Known brokers' addresses per listener, by node id.
#[derive(Debug, Default)]
pub struct ListenerAddressBook {
    by_node: RwLock<HashMap<i32, AddressesByListener>>,
}

impl ListenerAddressBook {
    /// Records the listeners of the broker whose primary address is `primary`; entries that
    /// do not parse as `host:port` are left out.
    pub fn record(&self, primary: &str, listeners: &ListenerMap) {
        self.record_node(node_id_for_addr(primary), listeners);
    }

    /// Records the listeners of broker `node_id`.
    pub fn record_node(&self, node_id: i32, listeners: &ListenerMap) {
        if listeners.is_empty() {
            return;
        }
        let parsed = listeners
            .iter()
            .filter_map(|(name, addr)| {
                BrokerAddr::from_advertised(addr).map(|b| (name.clone(), (b.host, b.port)))
            })
            .collect();
        self.by_node
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node_id, parsed);
    }

    /// The address of broker `node_id` on `listener`, if known.
    pub fn address(&self, node_id: i32, listener: &str) -> Option<(String, i32)> {
        self.by_node
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&node_id)?
            .get(listener)
            .cloned()
    }
}

/// Replaces the broker addresses of a Metadata, FindCoordinator or DescribeCluster answer by
/// their addresses on `listener`, where known; other answers are left alone.
pub fn readdress(response: &mut ResponseKind, listener: &str, book: &ListenerAddressBook) {
    let on = |node_id: i32, host: &mut StrBytes, port: &mut i32| {
        if let Some((h, p)) = book.address(node_id, listener) {
            *host = StrBytes::from_string(h);
            *port = p;
        }
    };
    match response {
        ResponseKind::Metadata(r) => {
            for b in &mut r.brokers {
                on(b.node_id.0, &mut b.host, &mut b.port);
            }
        }
        ResponseKind::FindCoordinator(r) => {
            on(r.node_id.0, &mut r.host, &mut r.port);
            for c in &mut r.coordinators {
                on(c.node_id.0, &mut c.host, &mut c.port);
            }
        }
        ResponseKind::DescribeCluster(r) => {
            for b in &mut r.brokers {
                on(b.broker_id.0, &mut b.host, &mut b.port);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::find_coordinator_response::Coordinator;
    use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
    use kafka_protocol::messages::{BrokerId, FindCoordinatorResponse, MetadataResponse};

    use super::*;

    fn listeners(entries: &[(&str, &str)]) -> ListenerMap {
        entries
            .iter()
            .map(|(n, a)| (n.to_string(), a.to_string()))
            .collect()
    }

    #[test]
    fn answers_name_the_brokers_on_the_clients_listener() {
        let book = ListenerAddressBook::default();
        book.record(
            "10.0.0.1:9092",
            &listeners(&[
                ("INTERNAL", "10.0.0.1:9092"),
                ("EXTERNAL", "kafka-0.example.com:9094"),
            ]),
        );
        let known = node_id_for_addr("10.0.0.1:9092");
        let unknown = node_id_for_addr("10.0.0.2:9092");
        let broker = |node_id: i32, host: &str| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(node_id))
                .with_host(StrBytes::from_string(host.into()))
                .with_port(9092)
        };
        let mut metadata: ResponseKind = MetadataResponse::default()
            .with_brokers(vec![broker(known, "10.0.0.1"), broker(unknown, "10.0.0.2")])
            .into();
        readdress(&mut metadata, "EXTERNAL", &book);
        let ResponseKind::Metadata(m) = &metadata else {
            unreachable!()
        };
        let seen: Vec<(String, i32)> = m
            .brokers
            .iter()
            .map(|b| (b.host.to_string(), b.port))
            .collect();
        assert_eq!(
            seen,
            [
                ("kafka-0.example.com".to_string(), 9094),
                ("10.0.0.2".to_string(), 9092)
            ]
        );

        let coordinator = |node_id: i32| {
            Coordinator::default()
                .with_node_id(BrokerId(node_id))
                .with_host(StrBytes::from_static_str("10.0.0.1"))
                .with_port(9092)
        };
        let mut found: ResponseKind = FindCoordinatorResponse::default()
            .with_node_id(BrokerId(known))
            .with_host(StrBytes::from_static_str("10.0.0.1"))
            .with_port(9092)
            .with_coordinators(vec![coordinator(known), coordinator(-1)])
            .into();
        readdress(&mut found, "EXTERNAL", &book);
        let ResponseKind::FindCoordinator(f) = &found else {
            unreachable!()
        };
        assert_eq!((f.host.as_str(), f.port), ("kafka-0.example.com", 9094));
        assert_eq!(f.coordinators[0].port, 9094);
        assert_eq!(f.coordinators[1].port, 9092);

        // On the primary listener's name, or one the broker lacks: unchanged.
        let mut again = found.clone();
        readdress(&mut again, "OTHER", &book);
        let ResponseKind::FindCoordinator(g) = &again else {
            unreachable!()
        };
        assert_eq!(g.coordinators[1].port, 9092);
        assert_eq!(g.port, 9094);
    }
}

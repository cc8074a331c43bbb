//! Metrics of the Kafka listener: connections, requests and latency by API, and the Kafka
//! error codes in responses.
//!
//! Handles are resolved once per listener and API key (an array indexed by the key), so a
//! request costs two relaxed atomic adds and a histogram sample. Error codes live inside the
//! response bodies: the top-level code of every response that has one, plus the per-partition
//! codes of Produce, Fetch, ListOffsets, OffsetCommit and OffsetFetch (a walk over the
//! partitions already built, no decoding). Only codes other than NONE are counted; the
//! counter is looked up by label when an error occurs, which is rare by construction.

use std::time::Instant;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, ResponseKind};
use metrics::{Counter, Gauge, Histogram};

use crate::metrics as names;

struct ApiMetrics {
    name: String,
    requests: Counter,
    latency: Histogram,
}

/// The handles of one Kafka listener.
pub(super) struct WireMetrics {
    listener: &'static str,
    apis: Vec<Option<ApiMetrics>>,
    pub(super) accepted: Counter,
    pub(super) closed: Counter,
    pub(super) open: Gauge,
}

impl WireMetrics {
    /// Handles for `keys` (the APIs the listener serves, ApiVersions included).
    pub(super) fn new(keys: impl IntoIterator<Item = ApiKey>) -> Self {
        let listener = names::role();
        let mut apis: Vec<Option<ApiMetrics>> = Vec::new();
        for key in keys {
            let i = key as i16 as usize;
            if apis.len() <= i {
                apis.resize_with(i + 1, || None);
            }
            let name = format!("{key:?}");
            apis[i] = Some(ApiMetrics {
                requests: ::metrics::counter!(names::REQUESTS, "listener" => listener, "api" => name.clone()),
                latency: ::metrics::histogram!(names::REQUEST_DURATION, "listener" => listener, "api" => name.clone()),
                name,
            });
        }
        WireMetrics {
            listener,
            apis,
            accepted: ::metrics::counter!(names::CONNECTIONS_ACCEPTED, "listener" => listener),
            closed: ::metrics::counter!(names::CONNECTIONS_CLOSED, "listener" => listener),
            open: ::metrics::gauge!(names::CONNECTIONS_OPEN, "listener" => listener),
        }
    }

    fn api(&self, key: ApiKey) -> Option<&ApiMetrics> {
        self.apis.get(key as i16 as usize).and_then(Option::as_ref)
    }

    pub(super) fn request(&self, key: ApiKey) {
        if let Some(m) = self.api(key) {
            m.requests.increment(1);
        }
    }

    /// Records a response about to be written: its latency and its error codes.
    pub(super) fn response(&self, key: ApiKey, started: Instant, response: &ResponseKind) {
        let Some(m) = self.api(key) else { return };
        m.latency.record(started.elapsed().as_secs_f64());
        for_each_error_code(response, |code| {
            if code != 0 {
                let error = ResponseError::try_from_code(code)
                    .map_or_else(|| format!("code_{code}"), |e| format!("{e:?}"));
                ::metrics::counter!(names::RESPONSE_ERRORS, "listener" => self.listener, "api" => m.name.clone(), "error" => error)
                    .increment(1);
            }
        });
    }
}

/// Calls `f` with every error code of `response` that is cheap to find (see the module doc).
fn for_each_error_code(response: &ResponseKind, mut f: impl FnMut(i16)) {
    match response {
        ResponseKind::Produce(r) => r
            .responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .for_each(|p| f(p.error_code)),
        ResponseKind::Fetch(r) => {
            f(r.error_code);
            r.responses
                .iter()
                .flat_map(|t| &t.partitions)
                .for_each(|p| f(p.error_code));
        }
        ResponseKind::ListOffsets(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| f(p.error_code)),
        ResponseKind::OffsetCommit(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| f(p.error_code)),
        ResponseKind::OffsetFetch(r) => {
            f(r.error_code);
            r.topics
                .iter()
                .flat_map(|t| &t.partitions)
                .for_each(|p| f(p.error_code));
            r.groups.iter().for_each(|g| f(g.error_code));
        }
        ResponseKind::FindCoordinator(r) => {
            f(r.error_code);
            r.coordinators.iter().for_each(|c| f(c.error_code));
        }
        ResponseKind::JoinGroup(r) => f(r.error_code),
        ResponseKind::SyncGroup(r) => f(r.error_code),
        ResponseKind::Heartbeat(r) => f(r.error_code),
        ResponseKind::LeaveGroup(r) => f(r.error_code),
        ResponseKind::InitProducerId(r) => f(r.error_code),
        ResponseKind::ApiVersions(r) => f(r.error_code),
        ResponseKind::SaslHandshake(r) => f(r.error_code),
        ResponseKind::SaslAuthenticate(r) => f(r.error_code),
        ResponseKind::Metadata(r) => r.topics.iter().for_each(|t| f(t.error_code)),
        ResponseKind::CreateTopics(r) => r.topics.iter().for_each(|t| f(t.error_code)),
        ResponseKind::DeleteTopics(r) => r.responses.iter().for_each(|t| f(t.error_code)),
        _ => {}
    }
}

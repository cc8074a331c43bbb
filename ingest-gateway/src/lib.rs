//! The ingest gateway: the stateless produce tier.
//!
//! Produce requests from any connection and for any partition are validated (magic 2,
//! CRC-32C, size), appended to one shared [`SegmentBuffer`], and answered once the buffer has
//! been flushed as ONE segment object to the object store *and* sequenced by the indexer —
//! acks=1 and acks=all both mean "durable and has offsets"; acks=0 gets no answer. A failed
//! upload or commit is answered with a retriable Kafka error; nothing un-acked is promised.

mod buffer;
mod config;
mod delete_records;
mod error;
mod handler;
mod producer_ids;
mod remote;

pub use buffer::{FlushOutcome, SegmentBuffer};
pub use config::IngestConfig;
pub use error::IngestError;
pub use handler::{INGEST_APIS, IngestHandler};
pub use producer_ids::ProducerIds;
pub use remote::{RemoteSequencer, RemoteSequencerConfig};

//! Turns request frames recorded from real clients (`scripts/fuzz-capture.py`) into corpus
//! entries: each frame as it is for `request_frame`, and each request as an op of the target
//! that serves its API (`topics`, `produce`, `fetch`, `groups`), with what names this run's
//! cluster rewritten to what the target's cluster has: topic names to `t` and `c`, topic ids to
//! the targets' placeholders, member ids to `$<n>` (the n-th member the coordinator handed
//! out). A client's group requests are also written as one input in the order they were sent
//! (a consumer's whole life), the clock moving 512 ms after each join (past the rebalance
//! delay of the `groups` target).
//!
//!     import_frames FRAMES_DIR [CORPUS_ROOT]     (scripts/fuzz.sh --import-frames FRAMES_DIR)
//!
//! Not a fuzz target: a plain program, built by cargo-fuzz with the targets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, TopicName};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafscale_fetch::{FETCH_APIS, GROUP_APIS};
use kafscale_fuzz::{MAX_OPS, op};
use kafscale_ingest::INGEST_APIS;
use kafscale_shared::topic_handler::TOPIC_APIS;
use kafscale_shared::wire::ApiSupport;
// Links libFuzzer, whose runtime the instrumented code calls into.
use libfuzzer_sys as _;

/// Names given to topics and members as they are first seen.
#[derive(Default)]
struct Renames {
    topics: BTreeMap<String, usize>,
    members: BTreeMap<String, usize>,
}

impl Renames {
    /// `t` for the first topic seen, `c` for the second, and so on alternately.
    fn topic(&mut self, name: &mut TopicName) {
        let next = self.topics.len();
        let n = *self.topics.entry(name.0.to_string()).or_insert(next);
        *name = TopicName(StrBytes::from_static_str(if n % 2 == 0 {
            "t"
        } else {
            "c"
        }));
    }

    fn member(&mut self, id: &mut StrBytes) {
        if id.is_empty() {
            return;
        }
        let next = self.members.len();
        let n = *self.members.entry(id.to_string()).or_insert(next);
        *id = StrBytes::from_string(format!("${}", n % 10));
    }
}

/// The placeholder the fetch target reads as the id of its topic `n % 2`.
fn placeholder_id(n: u8) -> uuid::Uuid {
    uuid::Uuid::from_u128(n as u128)
}

/// Rewrites names in `request` (see the module note).
fn rewrite(request: &mut RequestKind, renames: &mut Renames) {
    match request {
        RequestKind::Produce(r) => r
            .topic_data
            .iter_mut()
            .for_each(|t| renames.topic(&mut t.name)),
        RequestKind::Fetch(r) => {
            for t in &mut r.topics {
                renames.topic(&mut t.topic);
                t.topic_id = placeholder_id(u8::from(t.topic.0.as_str() == "c"));
            }
        }
        RequestKind::ListOffsets(r) => r.topics.iter_mut().for_each(|t| renames.topic(&mut t.name)),
        RequestKind::Metadata(r) => {
            for t in r.topics.iter_mut().flatten() {
                if let Some(name) = &mut t.name {
                    renames.topic(name);
                }
            }
        }
        RequestKind::JoinGroup(r) => renames.member(&mut r.member_id),
        RequestKind::SyncGroup(r) => {
            renames.member(&mut r.member_id);
            r.assignments
                .iter_mut()
                .for_each(|a| renames.member(&mut a.member_id));
        }
        RequestKind::Heartbeat(r) => renames.member(&mut r.member_id),
        RequestKind::LeaveGroup(r) => {
            renames.member(&mut r.member_id);
            r.members
                .iter_mut()
                .for_each(|m| renames.member(&mut m.member_id));
        }
        RequestKind::OffsetCommit(r) => {
            renames.member(&mut r.member_id);
            r.topics.iter_mut().for_each(|t| renames.topic(&mut t.name));
        }
        RequestKind::OffsetFetch(r) => {
            for g in &mut r.groups {
                if let Some(id) = &mut g.member_id {
                    renames.member(id);
                }
                for t in g.topics.iter_mut().flatten() {
                    renames.topic(&mut t.name);
                }
            }
            for t in r.topics.iter_mut().flatten() {
                renames.topic(&mut t.name);
            }
        }
        _ => {}
    }
}

/// The stateful target serving `key`, with its APIs.
fn target_of(key: ApiKey) -> Option<(&'static str, &'static [ApiSupport])> {
    [
        ("topics", &TOPIC_APIS[..]),
        ("produce", &INGEST_APIS[..]),
        ("fetch", &FETCH_APIS[..]),
        ("groups", &GROUP_APIS[..]),
    ]
    .into_iter()
    .find(|(_, apis)| apis.iter().any(|a| a.key == key))
}

/// The op for `frame`'s request, rewritten, if a target serves it at its version.
fn op_of(frame: &[u8], renames: &mut Renames) -> Option<(&'static str, Vec<u8>)> {
    let key = ApiKey::try_from(i16::from_be_bytes([*frame.first()?, *frame.get(1)?])).ok()?;
    let version = i16::from_be_bytes([*frame.get(2)?, *frame.get(3)?]);
    let (target, apis) = target_of(key)?;
    if !apis.iter().any(|a| a.key == key && a.contains(version)) {
        return None;
    }
    let mut rest = Bytes::copy_from_slice(frame);
    RequestHeader::decode(&mut rest, key.request_header_version(version)).ok()?;
    let mut request = RequestKind::decode(key, &mut rest, version).ok()?;
    rewrite(&mut request, renames);
    let mut body = BytesMut::new();
    request.encode(&mut body, version).ok()?;
    // A join waits for the rebalance: the clock moves past the initial delay after it.
    let advance = if key == ApiKey::JoinGroup { 9 } else { 0 };
    (body.len() <= u16::MAX as usize).then(|| (target, op(apis, key, version, advance, &body)))
}

fn main() {
    let mut args = std::env::args_os().skip(1);
    let frames = PathBuf::from(
        args.next()
            .expect("usage: import_frames FRAMES_DIR [CORPUS_ROOT]"),
    );
    let root = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let mut names: Vec<PathBuf> = std::fs::read_dir(&frames)
        .expect("read frames dir")
        .map(|e| e.expect("frames entry").path())
        .collect();
    names.sort();
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("create corpus dir");
        std::fs::write(dir.join(format!("client-{name}")), data).expect("write corpus entry");
    };
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut lives: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    let mut renames: BTreeMap<String, Renames> = BTreeMap::new();
    for path in &names {
        let frame = std::fs::read(path).expect("read frame");
        let name = file_name(path);
        write("request_frame", &name, &frame);
        *counts.entry("request_frame").or_default() += 1;
        // `<seq>-<client>-…`: names are rewritten per client.
        let client = name.split('-').nth(1).unwrap_or("client").to_string();
        let Some((target, op)) = op_of(&frame, renames.entry(client.clone()).or_default()) else {
            continue;
        };
        write(target, &name, &op);
        *counts.entry(target).or_default() += 1;
        if target == "groups" {
            lives.entry(client).or_default().push(op);
        }
    }
    for (client, ops) in lives {
        let life: Vec<u8> = ops.into_iter().take(MAX_OPS).flatten().collect();
        write("groups", &format!("{client}-life"), &life);
    }
    for (target, n) in counts {
        println!("{target}: {n} entries");
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .expect("a file")
        .to_string_lossy()
        .into_owned()
}

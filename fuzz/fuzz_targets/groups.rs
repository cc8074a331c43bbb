//! The consumer-group coordinator, stateful: a sequence of group requests (JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, DescribeGroups, ListGroups,
//! DeleteGroups, OffsetDelete, FindCoordinator; see the input format in the harness,
//! `fuzz/src/lib.rs`) through `GroupHandler` against one `GroupService` (membership in memory,
//! offsets in the in-memory metadata store, its lease and deadline task running), fresh per
//! input. Requests run concurrently as on a connection (a join waits for its rebalance), and
//! the clock moves between them, so rebalance and session timeouts fire.
//!
//! Member ids are handed out by the coordinator; a member id `$<digit>` in a request stands
//! for the (digit mod n)-th id handed out so far, so inputs can speak for real members. At the
//! end the service shuts down (waiting members learn NOT_COORDINATOR). Must never panic,
//! every request must complete, every answer must encode at the request's version.

#![no_main]

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::{RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use kafscale_fetch::{GROUP_APIS, GroupConfig, GroupHandler, GroupService, GroupServiceConfig};
use kafscale_fuzz::{
    Started, check_sendable, context, decode_op, parse_ops, runtime, topic_settings,
};
use kafscale_shared::catalog::Catalog;
use kafscale_shared::meta_store::MemoryMetaStore;
use kafscale_shared::topic_api::TopicApi;
use kafscale_shared::wire::KafkaHandler;
use libfuzzer_sys::fuzz_target;
use tokio_util::sync::CancellationToken;

/// Member ids remembered for `$<digit>` placeholders.
const MAX_MEMBERS: usize = 8;

fn substitute(id: &mut StrBytes, members: &[String]) {
    if members.is_empty() {
        return;
    }
    if let [b'$', digit, ..] = id.as_bytes() {
        let chosen = &members[*digit as usize % members.len()];
        *id = StrBytes::from_string(chosen.clone());
    }
}

/// Puts real member ids in place of placeholders.
fn substitute_members(request: &mut RequestKind, members: &[String]) {
    match request {
        RequestKind::JoinGroup(r) => substitute(&mut r.member_id, members),
        RequestKind::SyncGroup(r) => {
            substitute(&mut r.member_id, members);
            for a in &mut r.assignments {
                substitute(&mut a.member_id, members);
            }
        }
        RequestKind::Heartbeat(r) => substitute(&mut r.member_id, members),
        RequestKind::LeaveGroup(r) => {
            substitute(&mut r.member_id, members);
            for m in &mut r.members {
                substitute(&mut m.member_id, members);
            }
        }
        RequestKind::OffsetCommit(r) => substitute(&mut r.member_id, members),
        RequestKind::OffsetFetch(r) => {
            for g in &mut r.groups {
                if let Some(id) = &mut g.member_id {
                    substitute(id, members);
                }
            }
        }
        _ => {}
    }
}

/// Remembers the member ids a JoinGroup answer hands out.
fn learn_members(response: &ResponseKind, members: &mut Vec<String>) {
    let ResponseKind::JoinGroup(r) = response else {
        return;
    };
    let ids = std::iter::once(&r.member_id)
        .chain(std::iter::once(&r.leader))
        .chain(r.members.iter().map(|m| &m.member_id));
    for id in ids {
        let id = id.to_string();
        if !id.is_empty() && !members.contains(&id) && members.len() < MAX_MEMBERS {
            members.push(id);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let ops = parse_ops(data, &GROUP_APIS);
    if ops.is_empty() {
        return;
    }
    runtime().block_on(async {
        let catalog = Arc::new(Catalog::new(Arc::new(MemoryMetaStore::new())));
        for (name, partitions) in [("t", 3), ("u", 1)] {
            catalog
                .create_topic(name, partitions, Default::default())
                .await
                .expect("create topic");
        }
        let topics = TopicApi::new(catalog, topic_settings());
        let shutdown = CancellationToken::new();
        let config = GroupServiceConfig {
            groups: GroupConfig {
                // Shorter than the default 3 s, so most inputs see a group form.
                initial_rebalance_delay: Duration::from_millis(100),
                ..GroupConfig::default()
            },
            ..GroupServiceConfig::default()
        };
        let (service, task) = GroupService::start(topics, config, shutdown.clone()).await;
        let handler = GroupHandler::new(service);
        let mut members: Vec<String> = Vec::new();
        let mut started: Vec<Started> = Vec::new();
        let mut answered = Vec::new();
        for (n, op) in ops.iter().enumerate() {
            let Some(mut request) = decode_op(op) else {
                continue;
            };
            substitute_members(&mut request, &members);
            let dispatch = handler
                .start(context(op.key, op.version, n as i32), request)
                .await;
            started.push(Started::spawn(op.key, op.version, dispatch));
            // Let the request run as far as it goes before the clock moves.
            tokio::task::yield_now().await;
            if !op.advance.is_zero() {
                tokio::time::sleep(op.advance).await;
            }
            // Collect what has completed (and the member ids it names).
            let (done, waiting): (Vec<_>, Vec<_>) =
                started.into_iter().partition(|s| s.is_finished());
            started = waiting;
            for s in done {
                let (key, version) = (s.key, s.version);
                let answer = s.finish().await;
                if let Some(Ok(response)) = &answer {
                    learn_members(response, &mut members);
                }
                answered.push((key, version, answer));
            }
        }
        // The coordinator goes away: members still waiting are answered.
        shutdown.cancel();
        for s in started {
            let (key, version) = (s.key, s.version);
            answered.push((key, version, s.finish().await));
        }
        match tokio::time::timeout(kafscale_fuzz::COMPLETION_BOUND, task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Ok(Err(e)) => panic!("group service task failed: {e}"),
            Err(_) => panic!("the group service did not stop"),
        }
        for (key, version, answer) in answered {
            match answer {
                Some(answer) => check_sendable(key, version, answer),
                None => panic!("{key:?} v{version} got no answer"),
            }
        }
    });
});

//! Tests of the group coordinator's state machine, on tokio's paused clock.
//!
//! The deadlines are the realistic ones (30 s sessions, 60 s rebalance timeouts, Kafka's 3 s
//! initial rebalance delay) and a ticker calls [`GroupCoordinator::tick`] every 100 ms as the
//! lease loop does. A test waits by letting simulated time run (tokio advances the paused clock
//! whenever every task is idle), so it never sleeps on the real clock, takes milliseconds of
//! wall time, and does not depend on the machine's speed. Every wait is bounded on the paused
//! clock: a request that never resolves fails the test instead of hanging it.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;

use super::*;

mod sim;

const SESSION_TIMEOUT: Duration = Duration::from_secs(30);
const REBALANCE_TIMEOUT: Duration = Duration::from_secs(60);
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
/// How often the owner of the coordinator calls [`GroupCoordinator::tick`].
const TICK: Duration = Duration::from_millis(100);

fn join(member_id: &str, protocols: &[&str]) -> Join {
    Join {
        member_id: member_id.into(),
        group_instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout: SESSION_TIMEOUT,
        rebalance_timeout: REBALANCE_TIMEOUT,
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|p| (p.to_string(), Bytes::from(format!("md-{p}"))))
            .collect(),
        require_known_member_id: true,
    }
}

/// A coordinator with Kafka's default settings and a ticker, as the lease loop runs it.
fn coordinator() -> Arc<GroupCoordinator> {
    let c = Arc::new(GroupCoordinator::new(GroupConfig::default()));
    let weak = Arc::downgrade(&c);
    tokio::spawn(async move {
        while let Some(c) = weak.upgrade() {
            c.tick(Instant::now());
            drop(c);
            tokio::time::sleep(TICK).await;
        }
    });
    c
}

/// `fut`, which must resolve within `bound` of simulated time.
async fn within<T>(bound: Duration, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(bound, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what} did not resolve within {bound:?} of simulated time"),
    }
}

/// Joins the way a v4+ client does: first without an id, then with the one handed out.
async fn join_new(c: &Arc<GroupCoordinator>, group: &str, protocols: &[&str]) -> Joined {
    let first = c.join(group, join("", protocols)).await;
    assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
    assert!(!first.member_id.is_empty());
    within(
        REBALANCE_TIMEOUT + TICK,
        "a join",
        c.join(group, join(&first.member_id, protocols)),
    )
    .await
}

/// Waits (bounded, on the paused clock) until `g` has the given numbers of waiting joins and
/// syncs.
async fn until_waiting(c: &GroupCoordinator, joins: usize, syncs: usize) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while c.waiters("g") != (joins, syncs) {
        assert!(
            Instant::now() < deadline,
            "expected {joins} waiting joins and {syncs} syncs, have {:?}",
            c.waiters("g")
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn m(id: &str) -> MemberRef<'_> {
    MemberRef::new(id, None)
}

fn spawn_join(c: &Arc<GroupCoordinator>, group: &str, j: Join) -> tokio::task::JoinHandle<Joined> {
    let c = c.clone();
    let group = group.to_string();
    tokio::spawn(async move { c.join(&group, j).await })
}

#[tokio::test(start_paused = true)]
async fn two_members_form_a_generation_and_get_the_leaders_assignment() {
    let c = coordinator();
    let started = Instant::now();
    let a = join_new(&c, "g", &["range"]).await;
    let initial_delay = GroupConfig::default().initial_rebalance_delay;
    assert!(
        started.elapsed() >= initial_delay && started.elapsed() <= initial_delay + TICK,
        "the first generation waits the initial rebalance delay for more members: {:?}",
        started.elapsed()
    );
    assert_eq!(a.error, None);
    assert_eq!(a.generation, 1);
    assert_eq!(a.leader, a.member_id, "the only member leads");
    assert_eq!(a.members.len(), 1);
    assert_eq!(c.state("g"), Some((GroupState::CompletingRebalance, 1)));
    let synced = c
        .sync(
            "g",
            m(&a.member_id),
            1,
            vec![(a.member_id.clone(), Bytes::from_static(b"all"))],
        )
        .await;
    assert_eq!(synced, Ok(Bytes::from_static(b"all")));
    assert_eq!(c.state("g"), Some((GroupState::Stable, 1)));
    assert_eq!(c.heartbeat("g", m(&a.member_id), 1), None);

    // A second member: the first learns of the rebalance from its heartbeat and rejoins.
    let b_id = c.join("g", join("", &["range"])).await.member_id;
    let b = spawn_join(&c, "g", join(&b_id, &["range"]));
    until_waiting(&c, 1, 0).await;
    assert_eq!(
        c.heartbeat("g", m(&a.member_id), 1),
        Some(ResponseError::RebalanceInProgress)
    );
    let a2 = c.join("g", join(&a.member_id, &["range"])).await;
    let b = within(TICK, "b's join once everyone rejoined", b)
        .await
        .expect("join task");
    assert_eq!((a2.generation, b.generation), (2, 2));
    assert_eq!(a2.leader, a.member_id, "the leader stays the leader");
    assert_eq!(b.leader, a.member_id);
    assert_eq!(
        a2.members.len(),
        2,
        "the leader sees every member's metadata"
    );
    assert!(b.members.is_empty(), "followers see none");
    assert!(
        a2.members
            .iter()
            .all(|(_, _, md)| md == &Bytes::from_static(b"md-range"))
    );

    // The follower's sync waits for the leader's.
    let follower = {
        let c = c.clone();
        let id = b.member_id.clone();
        tokio::spawn(async move { c.sync("g", m(&id), 2, Vec::new()).await })
    };
    until_waiting(&c, 0, 1).await;
    let leader = c
        .sync(
            "g",
            m(&a.member_id),
            2,
            vec![
                (a.member_id.clone(), Bytes::from_static(b"p0")),
                (b.member_id.clone(), Bytes::from_static(b"p1")),
            ],
        )
        .await;
    assert_eq!(leader, Ok(Bytes::from_static(b"p0")));
    assert_eq!(
        within(TICK, "the follower's sync", follower)
            .await
            .expect("sync task"),
        Ok(Bytes::from_static(b"p1"))
    );
    assert_eq!(c.check_commit("g", m(&b.member_id), 2), None);
    assert_eq!(
        c.check_commit("g", m(&b.member_id), 1),
        Some(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        c.sync("g", m(&b.member_id), 1, Vec::new()).await,
        Err(ResponseError::IllegalGeneration)
    );
}

#[tokio::test(start_paused = true)]
async fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
    let c = coordinator();
    let a = join_new(&c, "g", &["range"]).await;
    c.sync("g", m(&a.member_id), 1, Vec::new())
        .await
        .expect("sync");
    let b_id = c.join("g", join("", &["range"])).await.member_id;
    let rebalance_started = Instant::now();
    let mut b = spawn_join(&c, "g", join(&b_id, &["range"]));
    until_waiting(&c, 1, 0).await;
    // `a` keeps heartbeating (its session stays alive) but never rejoins, as a consumer stuck
    // in processing does; past the rebalance timeout the join completes without it.
    let b = loop {
        assert_eq!(
            c.heartbeat("g", m(&a.member_id), 1),
            Some(ResponseError::RebalanceInProgress),
            "a stays a member until the rebalance timeout"
        );
        if let Ok(b) = tokio::time::timeout(HEARTBEAT_INTERVAL, &mut b).await {
            break b.expect("join task");
        }
        assert!(
            rebalance_started.elapsed() <= REBALANCE_TIMEOUT + TICK,
            "the join did not complete at the rebalance timeout"
        );
    };
    let waited = rebalance_started.elapsed();
    assert!(
        waited >= REBALANCE_TIMEOUT && waited <= REBALANCE_TIMEOUT + TICK,
        "the join completes at the rebalance timeout, not before: {waited:?}"
    );
    assert_eq!(b.error, None);
    assert_eq!(b.generation, 2);
    assert_eq!(
        b.leader, b.member_id,
        "the new leader is the member that stayed"
    );
    assert_eq!(
        c.heartbeat("g", m(&a.member_id), 1),
        Some(ResponseError::UnknownMemberId)
    );
}

#[tokio::test(start_paused = true)]
async fn expired_sessions_and_leaves_start_a_rebalance() {
    let c = coordinator();
    let a_id = c.join("g", join("", &["range"])).await.member_id;
    let b_id = c.join("g", join("", &["range"])).await.member_id;
    let (a, b) = tokio::join!(
        c.join("g", join(&a_id, &["range"])),
        c.join("g", join(&b_id, &["range"]))
    );
    assert_eq!((a.generation, b.generation), (1, 1));
    // Both were last seen when the generation formed (the follower's sync does not wait).
    let formed = Instant::now();
    let leader = a.leader.clone();
    c.sync("g", m(&leader), 1, Vec::new()).await.expect("sync");
    assert_eq!(c.state("g"), Some((GroupState::Stable, 1)));
    // Only `a` keeps heartbeating; `b`'s session ends 30 s after it was last seen, not before.
    let members = |c: &GroupCoordinator| {
        let mut ids: Vec<String> = c
            .describe("g")
            .map(|d| d.members.into_iter().map(|m| m.member_id).collect())
            .unwrap_or_default();
        ids.sort();
        ids
    };
    let mut both = vec![a_id.clone(), b_id.clone()];
    both.sort();
    let mut beat = formed;
    while beat + HEARTBEAT_INTERVAL < formed + SESSION_TIMEOUT {
        beat += HEARTBEAT_INTERVAL;
        tokio::time::sleep_until(beat).await;
        assert_eq!(c.state("g"), Some((GroupState::Stable, 1)));
        assert_eq!(c.heartbeat("g", m(&a_id), 1), None);
    }
    tokio::time::sleep_until(formed + SESSION_TIMEOUT - TICK / 2).await;
    assert_eq!(c.state("g"), Some((GroupState::Stable, 1)));
    assert_eq!(members(&c), both, "b's session has not expired yet");
    tokio::time::sleep_until(formed + SESSION_TIMEOUT + 2 * TICK + TICK / 2).await;
    assert_eq!(members(&c), vec![a_id.clone()], "b's session expired");
    assert_eq!(
        c.heartbeat("g", m(&a_id), 1),
        Some(ResponseError::RebalanceInProgress)
    );
    assert_eq!(
        c.heartbeat("g", m(&b_id), 1),
        Some(ResponseError::UnknownMemberId)
    );
    // Now `a` stops too (it neither rejoins nor heartbeats): once its session is over the
    // group is empty.
    let last_beat = Instant::now();
    within(SESSION_TIMEOUT + 2 * TICK, "a's session expiry", async {
        while c.state("g").map(|s| s.0) != Some(GroupState::Empty) {
            tokio::time::sleep(TICK).await;
        }
    })
    .await;
    assert!(last_beat.elapsed() > SESSION_TIMEOUT);
    assert_eq!(c.state("g").map(|s| s.0), Some(GroupState::Empty));

    // Leave: the remaining member's heartbeat reports the rebalance.
    let x_id = c.join("g", join("", &["range"])).await.member_id;
    let y_id = c.join("g", join("", &["range"])).await.member_id;
    let (x, _y) = tokio::join!(
        c.join("g", join(&x_id, &["range"])),
        c.join("g", join(&y_id, &["range"]))
    );
    c.sync("g", m(&x.leader), x.generation, Vec::new())
        .await
        .expect("sync");
    assert_eq!(c.leave("g", m(&y_id)).err(), None);
    assert_eq!(
        c.leave("g", m(&y_id)).err(),
        Some(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        c.heartbeat("g", m(&x_id), x.generation),
        Some(ResponseError::RebalanceInProgress)
    );
    let x2 = c.join("g", join(&x_id, &["range"])).await;
    assert_eq!(x2.generation, x.generation + 1);
    assert_eq!(c.leave("g", m(&x_id)).err(), None);
    assert_eq!(c.state("g").map(|s| s.0), Some(GroupState::Empty));
}

#[tokio::test(start_paused = true)]
async fn the_protocol_all_members_support_wins_and_incompatible_members_are_refused() {
    let c = coordinator();
    let a_id = c
        .join("g", join("", &["range", "roundrobin"]))
        .await
        .member_id;
    let b_id = c
        .join("g", join("", &["roundrobin", "range"]))
        .await
        .member_id;
    let c_id = c.join("g", join("", &["roundrobin"])).await.member_id;
    let (a, b, d) = tokio::join!(
        c.join("g", join(&a_id, &["range", "roundrobin"])),
        c.join("g", join(&b_id, &["roundrobin", "range"])),
        c.join("g", join(&c_id, &["roundrobin"]))
    );
    for j in [&a, &b, &d] {
        assert_eq!(j.protocol_name.as_deref(), Some("roundrobin"));
        assert_eq!(j.protocol_type.as_deref(), Some("consumer"));
    }
    let stranger = c.join("g", join("", &["cooperative-sticky"])).await;
    assert_eq!(
        stranger.error,
        Some(ResponseError::InconsistentGroupProtocol)
    );
    let mut other_type = join("", &["roundrobin"]);
    other_type.protocol_type = "connect".into();
    assert_eq!(
        c.join("g", other_type).await.error,
        Some(ResponseError::InconsistentGroupProtocol)
    );
    let mut too_short = join("", &["roundrobin"]);
    too_short.session_timeout = Duration::from_millis(10);
    assert_eq!(
        c.join("g", too_short).await.error,
        Some(ResponseError::InvalidSessionTimeout)
    );
    assert_eq!(
        c.join("g", join("made-up", &["roundrobin"])).await.error,
        Some(ResponseError::UnknownMemberId)
    );
}

#[tokio::test(start_paused = true)]
async fn a_restarted_static_member_takes_its_place_without_a_rebalance() {
    let c = coordinator();
    let static_join = |instance: &str| {
        let mut j = join("", &["range"]);
        j.group_instance_id = Some(instance.into());
        j
    };
    let (a, b) = tokio::join!(
        c.join("g", static_join("pod-0")),
        c.join("g", static_join("pod-1"))
    );
    assert_eq!(
        (a.error, b.error),
        (None, None),
        "static members need no MEMBER_ID_REQUIRED round"
    );
    let (leader, follower) = if a.leader == a.member_id {
        (a, b)
    } else {
        (b, a)
    };
    let follower_instance = c
        .describe("g")
        .expect("group")
        .members
        .into_iter()
        .find(|x| x.member_id == follower.member_id)
        .and_then(|x| x.group_instance_id)
        .expect("instance id");
    let assignments = vec![
        (leader.member_id.clone(), Bytes::from_static(b"p0")),
        (follower.member_id.clone(), Bytes::from_static(b"p1")),
    ];
    let (l, f) = tokio::join!(
        c.sync("g", m(&leader.member_id), 1, assignments),
        c.sync("g", m(&follower.member_id), 1, Vec::new())
    );
    assert_eq!(
        (l, f.clone()),
        (Ok(Bytes::from_static(b"p0")), Ok(Bytes::from_static(b"p1")))
    );

    // The follower's process restarts: same instance id, no member id.
    let again = c.join("g", static_join(&follower_instance)).await;
    assert_eq!(again.error, None);
    assert_ne!(again.member_id, follower.member_id, "a new member id");
    assert_eq!(again.generation, 1, "no rebalance");
    assert_eq!(c.state("g"), Some((GroupState::Stable, 1)));
    assert_eq!(
        c.sync("g", m(&again.member_id), 1, Vec::new()).await,
        Ok(Bytes::from_static(b"p1")),
        "it keeps its assignment"
    );
    // The old incarnation is fenced.
    let old = MemberRef::new(&follower.member_id, Some(&follower_instance));
    assert_eq!(
        c.heartbeat("g", old, 1),
        Some(ResponseError::FencedInstanceId)
    );
    assert_eq!(
        c.check_commit("g", old, 1),
        Some(ResponseError::FencedInstanceId)
    );
    // Simple commits are refused while the group has members, allowed once it is empty.
    assert_eq!(
        c.check_commit("g", m(""), -1),
        Some(ResponseError::UnknownMemberId)
    );
    assert_eq!(c.delete("g"), Err(ResponseError::NonEmptyGroup));
    assert_eq!(
        c.leave("g", m(&leader.member_id)),
        Ok(leader.member_id.clone())
    );
    assert_eq!(
        c.leave("g", m(&again.member_id)),
        Ok(again.member_id.clone())
    );
    assert_eq!(c.state("g").map(|s| s.0), Some(GroupState::Empty));
    assert_eq!(c.check_commit("g", m(""), -1), None);
    assert_eq!(c.delete("g"), Ok(()));
    assert_eq!(c.state("g"), None);
}

#[tokio::test(start_paused = true)]
async fn a_lost_coordinator_answers_waiting_members_not_coordinator() {
    let c = coordinator();
    let a = join_new(&c, "g", &["range"]).await;
    let b_id = c.join("g", join("", &["range"])).await.member_id;
    let b = spawn_join(&c, "g", join(&b_id, &["range"]));
    until_waiting(&c, 1, 0).await;
    assert_eq!(
        c.heartbeat("g", m(&a.member_id), 1),
        Some(ResponseError::RebalanceInProgress)
    );
    c.forget(|g| g == "g");
    assert_eq!(
        b.await.expect("join task").error,
        Some(ResponseError::NotCoordinator)
    );
    assert_eq!(c.state("g"), None);
    assert!(c.list().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_group_empty_past_the_expiry_is_forgotten_unless_in_use() {
    let c = coordinator();
    let a = join_new(&c, "g", &["range"]).await;
    c.sync("g", m(&a.member_id), 1, Vec::new())
        .await
        .expect("sync");
    let start = Instant::now();
    let expiry = GroupConfig::default().empty_group_expiry;
    assert_eq!(c.leave("g", m(&a.member_id)), Ok(a.member_id.clone()));
    tokio::time::sleep_until(start + expiry / 2).await;
    assert_eq!(c.state("g").map(|s| s.0), Some(GroupState::Empty));
    assert_eq!(c.list().len(), 1);
    // A task holding the group (a join between lookup and lock) keeps it.
    let held = c.group("g");
    tokio::time::sleep_until(start + expiry + Duration::from_secs(1)).await;
    assert!(c.state("g").is_some());
    drop(held);
    within(2 * TICK, "the group to be forgotten", async {
        while c.state("g").is_some() {
            tokio::time::sleep(TICK / 10).await;
        }
    })
    .await;
    assert_eq!(c.state("g"), None);
    assert!(c.list().is_empty());
    // A new member recreates it from scratch.
    let again = join_new(&c, "g", &["range"]).await;
    assert_eq!(again.error, None);
    assert_eq!(again.generation, 1);
}

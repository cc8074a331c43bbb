//! Group commit on the shard log (see `sequencing/commit_queue.rs`): the commits queued for a
//! shard while its lock is held go out in one store request, planned as if one by one.

use kafscale_shared::meta_store::capacity::is_transaction;
use kafscale_shared::shard_log::shard_log_pk;

use super::shard_log::{log_indexer, logged, setup_log, setup_log_on};
use super::*;

impl TestStore {
    /// The requests that wrote to shard 0's log, in order.
    fn log_requests(&self) -> Vec<Vec<WriteOp>> {
        let pk = shard_log_pk(0);
        let writes = self.writes.lock().expect("lock");
        writes
            .iter()
            .filter(|ops| ops.iter().all(|op| op.key().pk == pk))
            .cloned()
            .collect()
    }

    /// The requests that wrote to shard 0's log, each as the sequence numbers it wrote.
    fn log_writes(&self) -> Vec<Vec<u64>> {
        self.log_requests()
            .iter()
            .map(|ops| {
                ops.iter()
                    .map(|op| op.key().sk.parse().expect("seq"))
                    .collect()
            })
            .collect()
    }
}

type Answer = Result<Vec<BatchOutcome>, String>;

fn answer_of(result: Result<CommitResponse, SequencerError>) -> Answer {
    result.map(|r| r.outcomes).map_err(|e| e.to_string())
}

/// Sends `requests` to shard 0 while its lock is held (as by a commit in progress), waits until
/// every one of them is queued, then lets them go. Answers in the order of `requests`.
async fn commit_queued(indexer: &Arc<Indexer>, requests: Vec<CommitRequest>) -> Vec<Answer> {
    let queued = requests.len() as u64;
    let held = indexer.shards[0].lock().await;
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let indexer = indexer.clone();
            tokio::spawn(async move { indexer.commit(request).await })
        })
        .collect();
    while indexer.shard_status().shards[0].queue_depth < queued {
        tokio::task::yield_now().await;
    }
    drop(held);
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(answer_of(task.await.expect("task")));
    }
    answers
}

/// A logged item as the tests compare it: sequence number, record name, entries as (partition,
/// base offset, last offset) and producer batches as (partition, producer, first sequence,
/// base offset).
type LoggedItem = (u64, String, Vec<(i32, i64, i64)>, Vec<(i32, i64, i32, i64)>);

/// What a run of a scenario left.
#[derive(Debug, PartialEq)]
struct Run {
    answers: Vec<Answer>,
    log: Vec<LoggedItem>,
    high_watermarks: Vec<Option<i64>>,
}

/// Commits `before` one at a time, then `queued` either queued behind the shard's lock
/// (`batched`) or one at a time, on a fresh store whose topic has two partitions.
async fn run(
    scenario: &impl Fn(Uuid) -> (Vec<CommitRequest>, Vec<CommitRequest>),
    batched: bool,
) -> (Run, Arc<TestStore>) {
    let store = Arc::new(TestStore::default());
    let (catalog, watermarks, indexer, id) = setup_log(store.clone(), 2).await;
    let (before, queued) = scenario(id);
    for request in before {
        indexer.commit(request).await.expect("commit");
    }
    let answers = if batched {
        commit_queued(&indexer, queued).await
    } else {
        let mut answers = Vec::new();
        for request in queued {
            answers.push(answer_of(indexer.commit(request).await));
        }
        answers
    };
    let log = logged(&catalog, 0)
        .await
        .into_iter()
        .map(|(seq, item)| {
            let entries = item.index_entries().expect("topics");
            let entries = entries
                .iter()
                .map(|(_, p, e)| (*p, e.base_offset, e.last_offset))
                .collect();
            let producers = item
                .producers
                .iter()
                .map(|d| {
                    let b = d.batch;
                    (d.partition, d.producer_id, b.first_seq, b.base_offset)
                })
                .collect();
            (seq, item.record_name(), entries, producers)
        })
        .collect();
    let high_watermarks = (0..2)
        .map(|p| watermarks.get(id, p).map(|o| o.high_watermark))
        .collect();
    let run = Run {
        answers,
        log,
        high_watermarks,
    };
    (run, store)
}

#[tokio::test]
async fn queued_commits_go_out_in_one_store_request_with_the_offsets_one_by_one_would_give() {
    let scenario = |id| {
        let before = vec![req(
            "s0",
            vec![batch(id, 0, 16, 2), idem(batch(id, 1, 16, 2), 7, 0, 0)],
        )];
        let queued = vec![
            req("s1", vec![batch(id, 0, 16, 3), batch(id, 1, 116, 1)]),
            req(
                "s2",
                vec![idem(batch(id, 1, 16, 2), 7, 0, 2), batch(id, 0, 16, 2)],
            ),
            req("s3", vec![idem(batch(id, 1, 16, 1), 7, 0, 4)]),
        ];
        (before, queued)
    };
    let (batched, store) = run(&scenario, true).await;
    let (one_by_one, _) = run(&scenario, false).await;
    assert_eq!(
        store.log_writes(),
        [vec![1], vec![2, 3, 4]],
        "the three queued commits share one request, at consecutive sequence numbers"
    );
    assert_eq!(batched, one_by_one);
    assert_eq!(
        batched.answers,
        [
            Ok(vec![appended(2), appended(2)]),
            Ok(vec![appended(3), appended(5)]),
            Ok(vec![appended(5)]),
        ]
    );
    let names: Vec<&str> = batched.log.iter().map(|l| l.1.as_str()).collect();
    assert_eq!(names, ["s0", "s1", "s2", "s3"]);
    assert_eq!(batched.high_watermarks, [Some(7), Some(6)]);
}

#[tokio::test]
async fn a_commit_refused_in_a_batch_gets_its_own_answer_and_the_others_land() {
    let expired = kafscale_shared::keys::new_segment_key(1);
    let scenario = |id| {
        let before = vec![req("s0", vec![idem(batch(id, 0, 16, 2), 7, 0, 0)])];
        let queued = vec![
            req("s1", vec![idem(batch(id, 0, 16, 2), 7, 0, 2)]),
            // A sequence gap: refused in its answer, logged like any commit.
            req("s2", vec![idem(batch(id, 0, 16, 1), 7, 0, 9)]),
            // An expired segment and another batch list under a committed key: errors.
            req(&expired, vec![batch(id, 0, 16, 1)]),
            req("s0", vec![batch(id, 0, 16, 1), batch(id, 0, 116, 1)]),
            // s1's batch again (another gateway's retry): a duplicate of what s1 just got.
            req("s3", vec![idem(batch(id, 0, 16, 2), 7, 0, 2)]),
            req(
                "s4",
                vec![idem(batch(id, 0, 16, 1), 7, 0, 4), batch(id, 5, 16, 1)],
            ),
        ];
        (before, queued)
    };
    let (batched, store) = run(&scenario, true).await;
    let (one_by_one, _) = run(&scenario, false).await;
    assert_eq!(batched, one_by_one);
    assert_eq!(store.log_writes(), [vec![1], vec![2, 3, 4, 5]]);
    let answers = &batched.answers;
    assert_eq!(answers[0], Ok(vec![appended(2)]));
    assert_eq!(
        answers[1],
        Ok(vec![BatchOutcome::Rejected(
            RejectReason::OutOfOrderSequence
        )])
    );
    assert!(answers[2].as_ref().is_err_and(|e| e.contains("too old")));
    assert!(
        answers[3]
            .as_ref()
            .is_err_and(|e| e.contains("committed with 1"))
    );
    let duplicate = BatchOutcome::Duplicate {
        base_offset: 2,
        log_start_offset: 0,
    };
    assert_eq!(answers[4], Ok(vec![duplicate]));
    let unknown = BatchOutcome::Rejected(RejectReason::UnknownTopicOrPartition);
    assert_eq!(answers[5], Ok(vec![appended(4), unknown]));
    assert_eq!(batched.high_watermarks[0], Some(5));
}

#[tokio::test]
async fn two_writers_with_batched_appends_never_hand_out_one_offset_twice() {
    let store = Arc::new(TestStore::default());
    let (catalog, watermarks, old, id) = setup_log(store.clone(), 1).await;
    let one = |key: &str, n| req(key, vec![batch(id, 0, 16, n)]);
    old.commit(one("s1", 3)).await.expect("commit");
    // A second replica takes the shard over while the first still believes it owns it.
    let new = log_indexer(&catalog, &watermarks).await;
    let by_new = commit_queued(&new, vec![one("s2", 4), one("s3", 1)]).await;
    assert_eq!(by_new, [Ok(vec![appended(3)]), Ok(vec![appended(7)])]);
    // The old owner's batch finds its first sequence number taken, reads the log and is
    // planned again after the new owner's offsets; then the same happens the other way.
    let by_old = commit_queued(&old, vec![one("s4", 2), one("s5", 2)]).await;
    assert_eq!(by_old, [Ok(vec![appended(8)]), Ok(vec![appended(10)])]);
    let by_new = commit_queued(&new, vec![one("s6", 1), one("s7", 1)]).await;
    assert_eq!(by_new, [Ok(vec![appended(12)]), Ok(vec![appended(13)])]);

    assert_eq!(
        store.log_writes(),
        [
            vec![1],
            vec![2, 3],
            vec![2, 3],
            vec![4, 5],
            vec![4, 5],
            vec![6, 7]
        ],
        "each batch is one request, retried whole after a conflict"
    );
    let mut offsets = Vec::new();
    let mut names = Vec::new();
    for (_, item) in logged(&catalog, 0).await {
        for (_, _, e) in item.index_entries().expect("topics") {
            offsets.extend(e.base_offset..=e.last_offset);
        }
        names.push(item.record_name());
    }
    assert_eq!(offsets, (0..14).collect::<Vec<_>>());
    assert_eq!(names, ["s1", "s2", "s3", "s4", "s5", "s6", "s7"]);
}

#[tokio::test]
async fn a_lone_commit_is_one_plain_put_whether_or_not_it_waited() {
    let store = Arc::new(TestStore::default());
    let (_catalog, _watermarks, indexer, id) = setup_log(store.clone(), 1).await;
    indexer
        .commit(req("s1", vec![batch(id, 0, 16, 3)]))
        .await
        .expect("commit");
    let waited = commit_queued(&indexer, vec![req("s2", vec![batch(id, 0, 16, 1)])]).await;
    assert_eq!(waited, [Ok(vec![appended(3)])]);
    let requests = store.log_requests();
    assert_eq!(requests.len(), 2);
    for ops in requests {
        let [op] = ops.as_slice() else {
            panic!("one item per request: {ops:?}");
        };
        assert!(matches!(
            op,
            WriteOp::Put {
                condition: Condition::Absent,
                ..
            }
        ));
        assert!(!is_transaction(&[op]), "a single-item request");
    }
}

#[tokio::test]
async fn a_batch_takes_at_most_what_one_store_write_holds() {
    let store = Arc::new(TestStore::over(MemoryMetaStore::with_max_batch_ops(100)));
    let (_catalog, _watermarks, indexer, id) = setup_log(store.clone(), 1).await;
    let requests = (0..102)
        .map(|k| req(&format!("s{k}"), vec![batch(id, 0, 16, 1)]))
        .collect();
    let answers = commit_queued(&indexer, requests).await;
    let expected: Vec<Answer> = (0..102).map(|k| Ok(vec![appended(k)])).collect();
    assert_eq!(answers, expected);
    let sizes: Vec<usize> = store.log_writes().iter().map(Vec::len).collect();
    assert_eq!(sizes, [100, 2]);
}

#[tokio::test]
async fn a_batch_stays_under_the_stores_transaction_size() {
    use kafscale_shared::meta_store::dynamodb::{MAX_TRANSACTION_BYTES, item_size};
    let store = Arc::new(TestStore::default());
    let layout_2 = kafscale_shared::shards::LAYOUT_SHARD_LOG;
    let (_catalog, _watermarks, indexer, id) = setup_log_on(store.clone(), 1, layout_2).await;
    // Batches with gaps between them: one index entry each, so every item is large (about
    // 135 KB): 40 of them are more than one request holds.
    let large = |key: String| {
        let batches = (0..BATCHES_PER_LOG_ITEM as u64)
            .map(|k| batch(id, 0, 1_000 * k, 1))
            .collect();
        req(&key, batches)
    };
    let requests = (0..40).map(|k| large(format!("s{k}"))).collect();
    let answers = commit_queued(&indexer, requests).await;
    for (k, answer) in answers.iter().enumerate() {
        let first = answer.as_ref().expect("commit").first().copied();
        assert_eq!(first, Some(appended(2_000 * k as i64)));
    }
    let requests = store.log_requests();
    let sizes: Vec<(usize, usize)> = requests
        .iter()
        .map(|ops| {
            let bytes = ops.iter().map(|op| match op {
                WriteOp::Put { key, value, .. } => item_size(key, value.len()),
                _ => 0,
            });
            (ops.len(), bytes.sum())
        })
        .collect();
    assert!(sizes.len() > 1, "{sizes:?}");
    assert_eq!(sizes.iter().map(|s| s.0).sum::<usize>(), 40);
    assert!(
        sizes.iter().all(|s| s.1 <= MAX_TRANSACTION_BYTES),
        "{sizes:?}"
    );
    let (full, _) = sizes[0];
    assert!(full > 1, "the first request is as full as the limit allows");
}

#[tokio::test]
async fn a_commit_split_into_log_chunks_is_never_batched_with_others() {
    let store = Arc::new(TestStore::default());
    let (catalog, _watermarks, indexer, id) = setup_log(store.clone(), 1).await;
    let big = (0..=BATCHES_PER_LOG_ITEM as u64)
        .map(|k| batch(id, 0, 16 + 100 * k, 1))
        .collect();
    let requests = vec![
        req("s1", vec![batch(id, 0, 16, 1)]),
        req("s2", vec![batch(id, 0, 16, 1)]),
        req("big", big),
        req("s3", vec![batch(id, 0, 16, 1)]),
        req("s4", vec![batch(id, 0, 16, 1)]),
    ];
    let answers = commit_queued(&indexer, requests).await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    assert_eq!(
        store.log_writes(),
        [vec![1, 2], vec![3], vec![4], vec![5, 6]]
    );
    let names: Vec<String> = logged(&catalog, 0)
        .await
        .iter()
        .map(|(_, item)| item.record_name())
        .collect();
    assert_eq!(names, ["s1", "s2", "big~0000", "big~0001", "s3", "s4"]);
}

/// Queues s1, s2 and s3 on a shard whose log holds s0 (offset 0); s1 takes the lock and runs
/// the queue, whose one request is sent; then s1's caller goes away before the answer. The
/// request lands if `lands`, else never. Returns the tasks of s2 and s3.
async fn cancel_a_taker_mid_write(
    store: &HeldAnswers,
    indexer: &Arc<Indexer>,
    queued: Vec<CommitRequest>,
    lands: bool,
) -> Vec<tokio::task::JoinHandle<Result<CommitResponse, SequencerError>>> {
    let held = indexer.shards[0].lock().await;
    let mut tasks = Vec::new();
    let count = queued.len() as u64;
    for request in queued {
        let indexer = indexer.clone();
        tasks.push(tokio::spawn(async move { indexer.commit(request).await }));
    }
    while indexer.shard_status().shards[0].queue_depth < count {
        tokio::task::yield_now().await;
    }
    let hold = if lands {
        &store.hold
    } else {
        &store.hold_unapplied
    };
    hold.store(true, std::sync::atomic::Ordering::SeqCst);
    drop(held);
    store.landed.notified().await;
    hold.store(false, std::sync::atomic::Ordering::SeqCst);
    let taker = tasks.remove(0);
    taker.abort();
    assert!(taker.await.is_err(), "the taker was cancelled");
    tasks
}

async fn record_names(catalog: &Catalog) -> Vec<String> {
    let log = logged(catalog, 0).await;
    log.iter().map(|(_, item)| item.record_name()).collect()
}

#[tokio::test]
async fn commits_taken_by_a_cancelled_commit_are_answered_from_the_log() {
    let store = Arc::new(HeldAnswers::default());
    let (catalog, _watermarks, indexer, id) = setup_log(store.clone(), 1).await;
    let one = |key: &str, n| req(key, vec![batch(id, 0, 16, n)]);
    // The first commit opens the shard's log (a write of its own).
    indexer.commit(one("s0", 1)).await.expect("commit");
    let queued = vec![one("s1", 1), one("s2", 2), one("s3", 3)];
    let others = cancel_a_taker_mid_write(&store, &indexer, queued, true).await;
    // The others queue again and are answered from the log, appending nothing twice.
    let mut answers = Vec::new();
    for task in others {
        answers.push(answer_of(task.await.expect("task")));
    }
    assert_eq!(answers, [Ok(vec![appended(2)]), Ok(vec![appended(4)])]);
    let next = indexer.commit(one("s4", 1)).await.expect("commit");
    assert_eq!(next.outcomes, vec![appended(7)]);
    assert_eq!(record_names(&catalog).await, ["s0", "s1", "s2", "s3", "s4"]);
}

#[tokio::test]
async fn a_batch_cancelled_before_it_landed_leaves_nothing_it_planned_in_the_cache() {
    let store = Arc::new(HeldAnswers::default());
    let (catalog, watermarks, indexer, id) = setup_log(store.clone(), 1).await;
    let first = |key: &str| req(key, vec![idem(batch(id, 0, 16, 1), 7, 0, 0)]);
    let plain = |key: &str, n| req(key, vec![batch(id, 0, 16, n)]);
    indexer.commit(plain("s0", 1)).await.expect("commit");
    let queued = vec![first("s1"), plain("s2", 2), plain("s3", 3)];
    let others = cancel_a_taker_mid_write(&store, &indexer, queued, false).await;
    // Nothing of the batch is in the store: s2 and s3 queue again and are planned anew
    // right after s0, as if s1 had never been planned.
    let mut answers = Vec::new();
    for task in others {
        answers.push(answer_of(task.await.expect("task")));
    }
    assert_eq!(answers, [Ok(vec![appended(1)]), Ok(vec![appended(3)])]);
    // Producer 7's first batch, retried, is appended (not taken for a duplicate of the batch
    // that was planned but never written).
    let retry = indexer.commit(first("s4")).await.expect("commit");
    assert_eq!(retry.outcomes, vec![appended(6)]);
    assert_eq!(watermarks.get(id, 0).map(|o| o.high_watermark), Some(7));
    assert_eq!(record_names(&catalog).await, ["s0", "s2", "s3", "s4"]);
    assert_eq!(indexer.fold_shard(0).await.expect("fold").items, 4);
    let (row, _) = catalog.partition(id, 0).await.expect("read").expect("row");
    assert_eq!(row.next_offset, 7);
}

#[tokio::test]
async fn a_failed_batch_answers_each_of_its_commits_with_a_retriable_error() {
    let store = Arc::new(TestStore::default());
    let (catalog, _watermarks, indexer, id) = setup_log(store.clone(), 1).await;
    let one = |key: &str, n| req(key, vec![batch(id, 0, 16, n)]);
    *store.failing_prefix.lock().expect("lock") = Some(shard_log_pk(0));
    let answers = commit_queued(&indexer, vec![one("s1", 1), one("s2", 2)]).await;
    assert!(
        answers
            .iter()
            .all(|a| a.as_ref().is_err_and(|e| e.contains("unavailable"))),
        "{answers:?}"
    );
    *store.failing_prefix.lock().expect("lock") = None;
    // The gateways retry: the offsets the failed batch planned are handed out again.
    let answers = commit_queued(&indexer, vec![one("s2", 2), one("s1", 1)]).await;
    assert_eq!(answers, [Ok(vec![appended(0)]), Ok(vec![appended(2)])]);
    assert_eq!(logged(&catalog, 0).await.len(), 2);
}

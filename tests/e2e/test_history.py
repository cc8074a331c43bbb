"""The history checker (history.py) on small made-up histories: a clean one passes, and each
broken promise is reported as such."""

from __future__ import annotations

import history


def clean() -> list[dict]:
    """Two producers on two partitions, everything acked and read back once."""
    events = []
    for i in range(4):
        p, o = i % 2, i // 2
        events.append({"ev": "ack", "topic": "t", "producer": "idem", "idempotent": True,
                       "seq": i, "value": f"idem-{i}", "p": p, "o": o})
        events.append({"ev": "consumed", "topic": "t", "p": p, "o": o, "value": f"idem-{i}"})
    events.append({"ev": "unacked", "topic": "t", "producer": "idem", "idempotent": True,
                   "seq": 4, "value": "idem-4", "error": "timed out"})
    events.append({"ev": "committed", "group": "g", "topic": "t", "t": 1.0,
                   "offsets": {"0": 1, "1": 1}})
    events.append({"ev": "committed", "group": "g", "topic": "t", "t": 2.0,
                   "offsets": {"0": 2, "1": 2}})
    events.append({"ev": "owned", "group": "g", "topic": "t", "partitions": 2,
                   "members": {"a": [0], "b": [1]}})
    return events


def test_a_clean_history_has_no_violation(tmp_path):
    log = history.HistoryWriter(tmp_path / "h.jsonl")
    for e in clean():
        log.event(**e)
    log.close()
    report = history.check(history.read(tmp_path / "h.jsonl"))
    assert report.violations() == []
    assert (report.acknowledged, report.unacknowledged, report.consumed) == (4, 1, 4)
    assert history.main(["history.py", str(tmp_path / "h.jsonl")]) == 0


def test_each_broken_promise_is_reported():
    events = clean()
    # An ack naming an offset its record is not at ...
    events[2]["o"] = 9
    # ... an offset read twice, a second copy of an idempotent record, a gap, ...
    events.append({"ev": "consumed", "topic": "t", "p": 0, "o": 0, "value": "idem-0"})
    events.append({"ev": "consumed", "topic": "t", "p": 0, "o": 2, "value": "idem-0"})
    events.append({"ev": "consumed", "topic": "t", "p": 1, "o": 5, "value": "x"})
    # ... a committed offset going back and a partition owned twice.
    events.append({"ev": "committed", "group": "g", "topic": "t", "t": 3.0,
                   "offsets": {"0": 1}})
    events.append({"ev": "owned", "group": "g", "topic": "t", "partitions": 2,
                   "members": {"a": [0, 1], "b": [1]}})
    report = history.check(events)
    assert [(x["producer"], x["seq"]) for x in report.lost] == [("idem", 1)]
    assert report.offsets_twice == [["t", 0, 0]]
    assert report.gaps == {"t/1": 3}
    assert report.idempotent_duplicates == 1
    assert report.committed_backwards == {"g/t/0": [(2, 1)]}
    assert report.ownership == ["group g: partitions [1] owned twice"]
    assert len(report.violations()) == 6


def test_duplicates_of_a_plain_producer_are_counted_not_violations():
    events = [{"ev": "ack", "topic": "t", "producer": "plain", "idempotent": False,
               "seq": 0, "value": "plain-0", "p": 0, "o": 1},
              {"ev": "consumed", "topic": "t", "p": 0, "o": 0, "value": "plain-0"},
              {"ev": "consumed", "topic": "t", "p": 0, "o": 1, "value": "plain-0"}]
    report = history.check(events)
    assert report.duplicated == {"plain": 1}
    assert report.violations() == []


def test_an_ack_without_an_offset_needs_its_record_stored_in_its_partition():
    """librdkafka acks an idempotent producer's batch whose answer was lost without an offset
    once a later batch of the partition succeeds ("implicitly acked"): such a record must be
    stored in its partition (the seed-3 chaos run had 4), and is lost if it is not."""
    events = clean()
    events[0]["o"] = None  # idem-0, stored at partition 0 offset 0
    report = history.check(events)
    assert report.violations() == []
    assert report.acked_without_offset == 1
    events[2]["o"] = None  # idem-1 ...
    events[3]["value"] = "other"  # ... whose stored copy is gone
    report = history.check(events)
    assert [(x["producer"], x["seq"]) for x in report.lost] == [("idem", 1)]


def test_distributed_checker_takes_an_ack_without_an_offset_when_its_record_is_in_its_partition():
    """The distributed tests' checker (distributed.assert_acks_consumed) follows the same rule
    as the history checker for librdkafka's acks without an offset (seen in
    test_store_outages_are_survived): stored in its partition passes, stored nowhere fails."""
    import pytest as _pytest

    import distributed as dist
    import kafka_helpers as kh

    consumed = [kh.Consumed(0, 0, None, b"t-0"), kh.Consumed(0, 1, None, b"t-1")]
    dist.assert_acks_consumed({"t": [(0, 0), (0, None)]}, consumed, 1)
    with _pytest.raises(AssertionError):
        dist.assert_acks_consumed({"t": [(0, 0), (0, None)]},
                                  [kh.Consumed(0, 0, None, b"t-0")], 1)


def test_the_crash_audit_takes_an_ack_without_an_offset_when_its_record_is_in_its_partition():
    """test_distributed_chaos.audit follows the same rule."""
    import kafka_helpers as kh
    from test_distributed_chaos import audit

    consumed = [kh.Consumed(0, 0, None, b"t-0"), kh.Consumed(0, 1, None, b"t-1")]
    assert "misplaced_acks" not in {k for k, v in audit({"t": [(0, 0), (0, None)]}, consumed).items() if v}
    assert audit({"t": [(0, 0), (1, None)]}, consumed)["misplaced_acks"][0]["record"] == "t-1"

"""A produce/consume history and the checker of Kafka's durability promises on it.

A test (tests/e2e/test_chaos.py) records, as JSON lines: every record a producer sent and what
it was told (`ack` with partition and offset, or `unacked` with the error), every record read
back (`consumed`), samples of a consumer group's committed offsets (`committed`), and which
member owned which partitions once the group settled (`owned`). `check` verifies:

- every acknowledged record is read back at exactly its acknowledged offset (else `lost`); a
  record acknowledged without an offset (librdkafka acks an idempotent batch whose answer was
  lost that way once a later batch of its partition succeeds) must be read back in its
  partition (counted in `acked_without_offset`);
- no offset holds two records, and each partition's offsets run from its first to its last
  without a gap;
- a producer marked idempotent has no record stored twice (others may, after a lost answer,
  as with Kafka: counted, not an error);
- a group's committed offset of a partition never moves backwards between samples;
- the settled group owns every partition exactly once.

The checker is a tool as well as a module, so a long run's history can be checked offline:

    python3 tests/e2e/history.py HISTORY.jsonl      # prints the report; exit 1 on a violation
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional


class HistoryWriter:
    """Appends events to a JSON-lines file."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = open(self.path, "w")

    def event(self, **fields) -> None:
        self._file.write(json.dumps(fields, separators=(",", ":")) + "\n")

    def produced(self, topic: str, producer: str, idempotent: bool, seq: int, value: bytes,
                 delivery) -> None:
        """One sent record; `delivery` is (partition, offset) if acknowledged, else the error."""
        base = {"topic": topic, "producer": producer, "idempotent": idempotent, "seq": seq,
                "value": value.decode()}
        if isinstance(delivery, tuple):
            self.event(ev="ack", p=delivery[0], o=delivery[1], **base)
        else:
            self.event(ev="unacked", error=str(delivery), **base)

    def consumed(self, topic: str, partition: int, offset: int, value: Optional[bytes]) -> None:
        self.event(ev="consumed", topic=topic, p=partition, o=offset,
                   value=None if value is None else value.decode(errors="replace"))

    def committed(self, group: str, topic: str, offsets: dict[int, int], at: float) -> None:
        self.event(ev="committed", group=group, topic=topic, t=at,
                   offsets={str(p): o for p, o in offsets.items()})

    def owned(self, group: str, topic: str, partitions: int, by_member: dict[str, list[int]]) -> None:
        self.event(ev="owned", group=group, topic=topic, partitions=partitions, members=by_member)

    def close(self) -> None:
        self._file.close()


@dataclass
class Report:
    acknowledged: int = 0
    unacknowledged: int = 0
    consumed: int = 0
    lost: list = field(default_factory=list)
    acked_without_offset: int = 0
    offsets_twice: list = field(default_factory=list)
    gaps: dict = field(default_factory=dict)
    duplicated: dict = field(default_factory=dict)  # producer -> extra copies
    idempotent_duplicates: int = 0
    committed_samples: int = 0
    committed_backwards: dict = field(default_factory=dict)
    ownership: list = field(default_factory=list)  # problems of settled groups

    def violations(self) -> list[str]:
        out = []
        if self.lost:
            out.append(f"{len(self.lost)} acknowledged records not at their offsets")
        if self.offsets_twice:
            out.append(f"{len(self.offsets_twice)} offsets hold two records")
        if self.gaps:
            out.append(f"gaps in {self.gaps}")
        if self.idempotent_duplicates:
            out.append(f"{self.idempotent_duplicates} duplicates from idempotent producers")
        if self.committed_backwards:
            out.append(f"committed offsets moved back: {self.committed_backwards}")
        out.extend(self.ownership)
        return out

    def summary(self) -> dict:
        return {"acknowledged": self.acknowledged, "unacknowledged": self.unacknowledged,
                "consumed": self.consumed, "lost": len(self.lost),
                "acked_without_offset": self.acked_without_offset,
                "offsets_twice": len(self.offsets_twice), "gaps": self.gaps,
                "duplicated": self.duplicated,
                "idempotent_duplicates": self.idempotent_duplicates,
                "committed_samples": self.committed_samples,
                "committed_backwards": self.committed_backwards,
                "violations": self.violations(), "first_lost": self.lost[:10]}


def read(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def check(events: Iterable[dict]) -> Report:
    report = Report()
    stored: dict[tuple[str, int, int], str] = {}
    sent: list[dict] = []
    committed: dict[tuple[str, str, int], list[int]] = defaultdict(list)
    for e in events:
        kind = e["ev"]
        if kind in ("ack", "unacked"):
            sent.append(e)
        elif kind == "consumed":
            report.consumed += 1
            key = (e["topic"], e["p"], e["o"])
            if key in stored:
                report.offsets_twice.append(list(key))
            stored[key] = e["value"]
        elif kind == "committed":
            report.committed_samples += 1
            for p, o in e["offsets"].items():
                committed[(e["group"], e["topic"], int(p))].append(o)
        elif kind == "owned":
            report.ownership.extend(_ownership_problems(e))
    _check_gaps(report, stored)
    copies = Counter((topic, value) for (topic, _, _), value in stored.items())
    stored_in_partition = {(topic, p, value) for (topic, p, _), value in stored.items()}
    extra: Counter = Counter()
    for e in sent:
        if copies[(e["topic"], e["value"])] > 1:
            extra[(e["producer"], e["idempotent"])] += copies[(e["topic"], e["value"])] - 1
        if e["ev"] == "unacked":
            report.unacknowledged += 1
            continue
        report.acknowledged += 1
        if e["o"] is None:
            report.acked_without_offset += 1
            found = (e["topic"], e["p"], e["value"]) in stored_in_partition
            at = e["value"] if found else None
        else:
            at = stored.get((e["topic"], e["p"], e["o"]))
        if at != e["value"]:
            report.lost.append({"producer": e["producer"], "seq": e["seq"], "p": e["p"],
                                "o": e["o"], "found": at})
    report.duplicated = {producer: n for (producer, _), n in extra.items()}
    report.idempotent_duplicates = sum(n for (_, idem), n in extra.items() if idem)
    for (group, topic, p), seq in committed.items():
        back = [(a, b) for a, b in zip(seq, seq[1:]) if b < a]
        if back:
            report.committed_backwards[f"{group}/{topic}/{p}"] = back[:5]
    return report


def _check_gaps(report: Report, stored: dict) -> None:
    by_partition: dict[tuple[str, int], list[int]] = defaultdict(list)
    for topic, p, o in stored:
        by_partition[(topic, p)].append(o)
    for (topic, p), offsets in by_partition.items():
        offsets.sort()
        missing = (offsets[-1] - offsets[0] + 1) - len(offsets)
        if missing:
            report.gaps[f"{topic}/{p}"] = missing


def _ownership_problems(e: dict) -> list[str]:
    owners: Counter = Counter()
    for parts in e["members"].values():
        owners.update(parts)
    problems = []
    unowned = sorted(set(range(e["partitions"])) - set(owners))
    twice = sorted(p for p, n in owners.items() if n > 1)
    if unowned:
        problems.append(f"group {e['group']}: partitions {unowned} owned by nobody")
    if twice:
        problems.append(f"group {e['group']}: partitions {twice} owned twice")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    report = check(read(Path(argv[1])))
    print(json.dumps(report.summary(), indent=1))
    return 1 if report.violations() else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

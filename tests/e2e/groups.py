"""Consumer-group members as child processes (tests/e2e/group_member.py) and
the checks the group tests share: exclusive ownership of partitions, waiting
for a rebalance to settle, and what was delivered and committed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

import kafka_helpers as kh

MEMBER_SCRIPT = Path(__file__).with_name("group_member.py")


class GroupMember:
    """One member process; its stdout events are collected by a thread."""

    def __init__(self, client: str, bootstrap: str, group: str, topic: str, name: str,
                 workdir: Path, strategy: str = "range", session_ms: int = 6000,
                 heartbeat_ms: int = 1000, instance_id: Optional[str] = None,
                 max_seconds: float = 240, debug: Optional[str] = None,
                 metadata_refresh_ms: Optional[int] = None):
        self.name = name
        cmd = [sys.executable, str(MEMBER_SCRIPT), "--client", client, "--bootstrap", bootstrap,
               "--group", group, "--topic", topic, "--strategy", strategy,
               "--session-ms", str(session_ms), "--heartbeat-ms", str(heartbeat_ms),
               "--max-seconds", str(max_seconds)]
        if instance_id:
            cmd += ["--instance-id", instance_id]
        if debug:
            cmd += ["--debug", debug]
        if metadata_refresh_ms:
            cmd += ["--metadata-refresh-ms", str(metadata_refresh_ms)]
        self.stderr_path = Path(workdir) / f"{name}.stderr"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr,
                                     stdin=subprocess.DEVNULL)
        kh.register_child(self.proc)
        self.events: list[dict] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name=f"member-{name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                self.events.append(ev)

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self.events)

    def owned(self) -> set[int]:
        for ev in reversed(self.snapshot()):
            if ev["ev"] in ("assign", "revoke", "lost"):
                return set(ev["owned"])
        return set()

    def records(self, since: float = 0.0) -> list[tuple[int, int]]:
        return [(e["p"], e["o"]) for e in self.snapshot() if e["ev"] == "rec" and e["t"] >= since]

    def committed(self, before: float = float("inf")) -> dict[int, int]:
        out: dict[int, int] = {}
        for e in self.snapshot():
            if e["ev"] == "committed" and e["t"] < before:
                out[e["p"]] = max(out.get(e["p"], 0), e["o"])
        return out

    def rebalance_events(self) -> list[dict]:
        return [e for e in self.snapshot() if e["ev"] in ("assign", "revoke", "lost")]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> float:
        self.proc.send_signal(signal.SIGKILL)
        at = time.time()
        self.proc.wait(timeout=10)
        return at

    def stop(self, timeout: float = 30.0) -> float:
        """SIGTERM: the member closes its consumer (leaving the group) and exits."""
        at = time.time()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=timeout)
        assert self.proc.returncode == 0, f"{self.name} exited {self.proc.returncode}: {self.stderr_tail()}"
        return at

    def stderr_tail(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        kh.unregister_child(self.proc)
        self._stderr.close()


def exclusive(members: Sequence[GroupMember], partitions: int) -> bool:
    """Every partition owned by exactly one of `members`, each owning some."""
    owned = [m.owned() for m in members]
    if any(not o for o in owned):
        return False
    union: set[int] = set()
    for o in owned:
        if union & o:
            return False
        union |= o
    return union == set(range(partitions))


def wait_exclusive(members: Sequence[GroupMember], partitions: int, timeout: float) -> float:
    """Waits until ownership is exclusive and complete (and stays so for 1 s, so
    a rebalance still in progress does not count); returns when it first held."""
    deadline = kh.Deadline(timeout)
    since: Optional[float] = None
    while not deadline.expired():
        if exclusive(members, partitions):
            since = since or time.time()
            if time.time() - since >= 1.0:
                return since
        else:
            since = None
        time.sleep(0.05)
    details = {m.name: {"owned": sorted(m.owned()), "alive": m.alive(),
                        "rebalances": m.rebalance_events()[-4:]} for m in members}
    stderr = {m.name: m.stderr_tail()[-800:] for m in members}
    raise AssertionError(f"partitions not exclusively owned within {timeout}s: {details}\n{stderr}\n"
                         f"(whole stderr of each member: {[str(m.stderr_path) for m in members]})")


def assert_all_consumed(members: Sequence[GroupMember], expected: dict[int, int],
                        start: int = 0) -> None:
    """Every offset from `start` below expected[p] was delivered to some member."""
    got: dict[int, set[int]] = {}
    for m in members:
        for p, o in m.records():
            got.setdefault(p, set()).add(o)
    for p, end in expected.items():
        missing = set(range(start, end)) - got.get(p, set())
        assert not missing, f"partition {p}: {len(missing)} offsets never delivered, e.g. {sorted(missing)[:5]}"


def wait_consumed(members: Sequence[GroupMember], expected: dict[int, int], timeout: float,
                  start: int = 0) -> None:
    def done() -> bool:
        got: dict[int, set[int]] = {}
        for m in members:
            for p, o in m.records():
                got.setdefault(p, set()).add(o)
        return all(len(got.get(p, set()) & set(range(start, end))) == end - start
                   for p, end in expected.items())

    kh.wait_for(done, timeout, interval=0.1, what="every produced record delivered")
    assert_all_consumed(members, expected, start)


def wait_committed(members: Sequence[GroupMember], expected: dict[int, int], timeout: float) -> None:
    def done() -> bool:
        best: dict[int, int] = {}
        for m in members:
            for p, o in m.committed().items():
                best[p] = max(best.get(p, 0), o)
        return all(best.get(p, 0) >= end for p, end in expected.items())

    kh.wait_for(done, timeout, interval=0.1, what="every produced record committed")

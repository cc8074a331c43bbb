"""No password or token a test of this run used appears in any server log of the run.

Runs last (pytest collects files in name order). Every test that gives a server or a client
a password or a token registers it with `kafka_helpers.secret`; this test reads every log
under the run's temporary directory (each server writes its stdout and stderr to
`<test tmp>/<server>/server.log`) and fails on any line that carries one. The harness's own
`=== [e2e ...]` lines (the command lines it started) are not the servers' words and are
skipped. Run alone (no secret registered) it skips.
"""

from __future__ import annotations

import pytest

import kafka_helpers as kh

HARNESS_PREFIX = "=== [e2e"


def test_no_server_log_of_this_run_carries_a_secret(tmp_path_factory):
    if not kh.SECRETS:
        pytest.skip("no test of this run gave a server a secret")
    logs = sorted(tmp_path_factory.getbasetemp().rglob("*.log"))
    assert logs, "the run left no server logs to read"
    leaks = []
    for path in logs:
        text = path.read_text(errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            if line.startswith(HARNESS_PREFIX):
                continue
            leaks += [f"{path}:{number} carries a secret starting {s[:3]!r}"
                      for s in kh.SECRETS if s in line]
    print(f"read {len(logs)} logs for {len(kh.SECRETS)} secrets")
    assert not leaks, "\n".join(leaks[:20])

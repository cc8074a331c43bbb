#!/usr/bin/env python3
"""Runs librdkafka's own integration test suite against `kafscale standalone`.

The suite is librdkafka's `tests/test-runner` (built by scripts/install-librdkafka-suite.sh).
Its tests are C/C++ functions such as `0045_subscribe_update`, declared in `tests/test.c`
with flags (local, sockem, manual, ...) and a test scenario (`default`, or `noautocreate` for a
cluster without topic auto-creation). The test-runner selects tests by number (`TESTS=0045`
runs every `0045_*` function of the current scenario), so this script:

  1. reads the test list from test.c and keeps the candidates: every function that needs a
     broker (not `TEST_F_LOCAL`, not `TEST_F_MANUAL`), minus those in skip.txt;
  2. starts one `kafscale standalone` per scenario on a fresh data directory and a free
     127.0.0.1 port (auto-created topics get 4 partitions, as in librdkafka's scenarios; the
     `noautocreate` server has auto-creation off);
  3. runs `test-runner -L -p1` once per (test number, scenario), each under a wall-clock
     limit, a few at a time (`--jobs`), and reads each function's state from the runner's
     JSON report (TEST_REPORT);
  4. compares the outcome with allowlist.txt: the run fails if an allowed test does not pass,
     and also if a test that is not on the list passes (the list only grows), or if a name in
     the lists is not a candidate.

Results, per-test logs and the server logs are written under --workdir.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
READY_RE = re.compile(r"^kafscale standalone listening kafka=(?P<kafka>\S+) http=(?P<http>\S+)")
# The broker version the tests assume (some skip themselves on older brokers).
KAFKA_VERSION = "4.0.0"
# Tests that need longer than --test-timeout on a 2-core machine: number -> seconds.
# 0113_cooperative_rebalance runs some twenty incremental-rebalance sub-tests one after the
# other (eight to ten minutes on the 2-core CI machine).
LONG_TESTS = {"0113": 900.0}
# Scenarios this script can serve, and the extra server flags each needs.
SCENARIO_FLAGS = {
    "default": [],
    "noautocreate": ["--auto-create-topics", "false"],
}


@dataclasses.dataclass
class TestDecl:
    name: str  # e.g. 0045_subscribe_update
    number: str  # e.g. 0045
    flags: set[str]
    scenarios: list[str]

    @property
    def scenario(self) -> str:
        """The scenario this script runs the test in (the first one it can serve)."""
        for s in self.scenarios:
            if s in SCENARIO_FLAGS:
                return s
        return self.scenarios[0]


def parse_test_list(test_c: Path) -> list[TestDecl]:
    """Every `_TEST(NAME, FLAGS, ...)` entry of test.c's `tests[]` array."""
    src = test_c.read_text(encoding="utf-8", errors="replace")
    start = src.index("struct test tests[] = {")
    end = src.index("{NULL}", start)
    body = src[start:end]
    entries = re.split(r"\b_TEST\(", body)[1:]
    tests = []
    for entry in entries:
        m = re.match(r"\s*(\w+)\s*,\s*([^,)]*)", entry)
        if not m:
            raise SystemExit(f"run_suite: cannot parse test entry: _TEST({entry[:80]!r}")
        name, flags_src = m.group(1), m.group(2)
        flags = set(re.findall(r"TEST_F_\w+", flags_src))
        sm = re.search(r'\.scenario\s*=\s*"([^"]*)"', entry)
        scenarios = sm.group(1).split(",") if sm else ["default"]
        tests.append(TestDecl(name, name.split("_", 1)[0], flags, scenarios))
    if len(tests) < 100:
        raise SystemExit(f"run_suite: only {len(tests)} tests found in {test_c}")
    return tests


def read_list(path: Path) -> dict[str, str]:
    """`name  # comment` lines (blank lines and full-line comments ignored) -> {name: comment}."""
    entries: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text, _, comment = line.partition("#")
        text = text.strip()
        if not text:
            continue
        if " " in text or text in entries:
            raise SystemExit(f"run_suite: {path}:{lineno}: bad or duplicate entry {text!r}")
        entries[text] = comment.strip()
    return entries


class Server:
    """One `kafscale standalone` on a fresh data dir and free ports."""

    def __init__(self, binary: Path, workdir: Path, scenario: str, extra_args: list[str]):
        self.binary = binary
        self.scenario = scenario
        self.dir = workdir / f"server-{scenario}"
        self.dir.mkdir(parents=True)
        self.log_path = self.dir / "server.log"
        self.cmd = [
            str(binary), "standalone",
            "--data-dir", str(self.dir / "data"),
            "--kafka-addr", "127.0.0.1:0",
            "--http-addr", "127.0.0.1:0",
            "--default-partitions", "4",
            *SCENARIO_FLAGS[scenario],
            *extra_args,
        ]
        self.proc: Optional[subprocess.Popen] = None
        self.bootstrap: Optional[str] = None

    def start(self, timeout: float = 60.0) -> None:
        log = open(self.log_path, "ab")
        log.write(("=== " + " ".join(self.cmd) + "\n").encode())
        log.flush()
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=log, cwd=self.dir, start_new_session=True)
        log.close()
        ready = threading.Event()

        def reader() -> None:
            assert self.proc and self.proc.stdout
            with open(self.log_path, "ab") as out:
                for raw in self.proc.stdout:
                    out.write(b"[stdout] " + raw)
                    out.flush()
                    m = READY_RE.match(raw.decode("utf-8", "replace").strip())
                    if m and not ready.is_set():
                        self.bootstrap = m.group("kafka")
                        ready.set()
            ready.set()

        threading.Thread(target=reader, daemon=True).start()
        ready.wait(timeout)
        if not self.bootstrap:
            self.stop()
            raise SystemExit(f"run_suite: kafscale ({self.scenario}) did not become ready:\n"
                             + self.log_tail())

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if not self.proc or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            data = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(data[-lines:])


@dataclasses.dataclass
class RunResult:
    number: str
    scenario: str
    seconds: float
    exit_code: Optional[int]  # None: killed at the time limit
    states: dict[str, str]  # test name -> PASSED/FAILED/SKIPPED/...
    reasons: dict[str, str]  # test name -> failure or skip text
    log_path: Path


def run_number(build_tests: Path, number: str, scenario: str, conf: Path, workdir: Path,
               names: list[str], time_limit: float, runner_args: list[str]) -> RunResult:
    log_path = workdir / "logs" / f"{number}-{scenario}.log"
    report = workdir / "reports" / f"{number}-{scenario}.json"
    env = dict(os.environ)
    for var in ("TESTS_SKIP", "TESTS_SKIP_BEFORE", "SUBTESTS", "TEST_DEBUG", "KAFKA_PATH",
                "TEST_CONSUMER_GROUP_PROTOCOL", "KAFKA_VERSION"):
        env.pop(var, None)
    env.update({
        "TESTS": number,
        "TEST_REPORT": str(report),
        "TEST_KAFKA_VERSION": KAFKA_VERSION,
        "RDKAFKA_TEST_CONF": str(conf),
        "LD_LIBRARY_PATH": f"{build_tests.parent / 'src'}:{build_tests.parent / 'src-cpp'}",
        # librdkafka's CI mode, whatever the caller's environment: test timeouts x3 and the
        # client-side timing checks that a loaded 2-core machine cannot meet are relaxed
        # (0053's stats interval, 0055's latency bounds), so outcomes do not depend on where
        # the suite runs.
        "CI": "true",
    })
    # Run from the work dir, not the (cached) build: tests write statistics files to their
    # current directory. Some read files next to it (../src/statistics_schema.json), hence the
    # links made by main().
    cwd = workdir / "tests"
    cmd = [str(build_tests / "test-runner"), "-L", "-p1", "-s", scenario, *runner_args]
    started = time.monotonic()
    with open(log_path, "wb") as log:
        log.write(f"=== TESTS={number} {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            exit_code: Optional[int] = proc.wait(timeout=time_limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            exit_code = None
    seconds = time.monotonic() - started
    states, reasons = read_report(report)
    output = log_path.read_text(encoding="utf-8", errors="replace")
    for name in names:
        if name in states and states[name] not in ("RUNNING", "DNS"):
            continue
        # No report (killed or crashed) or the test was still running: the runner prints
        # "Test NAME PASSED" as each test ends.
        if re.search(rf"Test {re.escape(name)} PASSED", output):
            states[name] = "PASSED"
        elif exit_code is None:
            states[name] = "TIMEOUT"
            reasons[name] = f"killed after the {time_limit:.0f}s limit"
        else:
            states[name] = "CRASHED" if name not in states else "FAILED"
            reasons[name] = f"test-runner exited with {exit_code} without reporting the test"
    return RunResult(number, scenario, seconds, exit_code, states, reasons, log_path)


def read_report(report: Path) -> tuple[dict[str, str], dict[str, str]]:
    states: dict[str, str] = {}
    reasons: dict[str, str] = {}
    try:
        raw = report.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return states, reasons
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        # Unescaped text in a report entry: fall back to the name/state pairs.
        for m in re.finditer(r'"name": "(\w+)", "state": "(\w+)"', raw):
            states[m.group(1)] = m.group(2)
        return states, reasons
    for name, entry in data.get("tests", {}).items():
        states[name] = entry.get("state", "?")
    return states, reasons


def failure_reasons(log_path: Path) -> dict[str, str]:
    """Per test, the first failure the runner printed ("### Test "NAME (sub-test)" failed at
    FILE:LINE:func() at DATE: ###" and the message line after it), else the summary table's
    skip text ("| NAME | SKIPPED | 0.0s | reason")."""
    out: dict[str, str] = {}
    text = re.sub(r"\x1b\[[0-9;]*m", "", log_path.read_text(encoding="utf-8", errors="replace"))
    for m in re.finditer(r'^### Test "(\w+)([^"]*)" failed at (\S+) at [^\n]*###\n([^\n]*)',
                         text, re.M):
        name, sub, where, message = m.groups()
        out.setdefault(name, f"{where}{sub}: {message.strip()}")
    for m in re.finditer(r"^\|\s*(\w+)\s*\|\s*(\w+)\s*\|\s*[\d.]+s\s*\|\s*(.*)$", text, re.M):
        if m.group(3).strip():
            out.setdefault(m.group(1), m.group(3).strip())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build-dir", required=True, type=Path,
                    help="librdkafka source folder with a built tests/test-runner")
    ap.add_argument("--kafscale-bin", type=Path, required=True)
    ap.add_argument("--workdir", type=Path, help="where logs and data go (default: a temp dir)")
    ap.add_argument("--allowlist", type=Path, default=HERE / "allowlist.txt")
    ap.add_argument("--skiplist", type=Path, default=HERE / "skip.txt")
    ap.add_argument("--jobs", type=int, default=2, help="test numbers run at the same time")
    ap.add_argument("--test-timeout", type=float, default=240.0,
                    help="wall-clock limit of one test number (seconds)")
    ap.add_argument("--total-timeout", type=float, default=1800.0,
                    help="wall-clock limit of the whole run (seconds): later tests are not started")
    ap.add_argument("--quick", action="store_true",
                    help="run the tests in librdkafka's quick mode (-Q), which also leaves out "
                    "every sub-test not marked quick: faster, but much is then not tested")
    ap.add_argument("--only", help="comma-separated test numbers to run (e.g. 0001,0030); "
                    "the allow-list is then checked for these only")
    ap.add_argument("--server-arg", action="append", default=[],
                    help="extra flag for kafscale standalone (repeatable)")
    args = ap.parse_args()

    build_tests = args.build_dir.resolve() / "tests"
    if not os.access(build_tests / "test-runner", os.X_OK):
        raise SystemExit(f"run_suite: {build_tests}/test-runner is missing")
    if not os.access(args.kafscale_bin, os.X_OK):
        raise SystemExit(f"run_suite: kafscale binary {args.kafscale_bin} is missing")
    tests = parse_test_list(build_tests / "test.c")
    by_name = {t.name: t for t in tests}
    allow = read_list(args.allowlist)
    skip = read_list(args.skiplist)

    broker_tests = [t for t in tests
                    if not t.flags & {"TEST_F_LOCAL", "TEST_F_MANUAL"}]
    candidates = [t for t in broker_tests if t.name not in skip]
    candidate_names = {t.name for t in candidates}
    problems: list[str] = []
    for name in allow:
        if name in skip:
            problems.append(f"{name}: on both the allow-list and the skip list")
        elif name not in candidate_names:
            problems.append(f"{name}: on the allow-list but not a broker test of this suite")
    for name in skip:
        if name not in by_name:
            problems.append(f"{name}: on the skip list but not a test of this suite")
    unservable = [t.name for t in candidates if t.scenario not in SCENARIO_FLAGS]
    if unservable:
        problems.append(f"tests of scenarios this script cannot serve: {unservable}")
    if args.only:
        wanted = set(args.only.split(","))
        candidates = [t for t in candidates if t.number in wanted]

    # One test-runner invocation per (number, scenario), in test order.
    groups: dict[tuple[str, str], list[str]] = {}
    for t in candidates:
        groups.setdefault((t.number, t.scenario), []).append(t.name)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="librdkafka-suite-"))
    if workdir.exists() and any(workdir.iterdir()):
        shutil.rmtree(workdir)
    for sub in ("logs", "reports", "tests"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("src", "src-cpp"):
        (workdir / sub).symlink_to(build_tests.parent / sub)
    print(f"librdkafka suite: {len(candidates)} broker tests in {len(groups)} runs, "
          f"{len(allow)} allowed, {len(skip)} skipped, work dir {workdir}", flush=True)

    servers: dict[str, Server] = {}
    confs: dict[str, Path] = {}
    try:
        for scenario in sorted({s for _, s in groups}):
            server = Server(args.kafscale_bin.resolve(), workdir, scenario, args.server_arg)
            server.start()
            servers[scenario] = server
            conf = workdir / f"test-{scenario}.conf"
            conf.write_text(
                f"bootstrap.servers={server.bootstrap}\n"
                # Unique topic names in every run: one server serves every test.
                "test.topic.random=true\n",
                encoding="utf-8")
            confs[scenario] = conf
            print(f"kafscale standalone ({scenario}) on {server.bootstrap}", flush=True)

        deadline = time.monotonic() + args.total_timeout
        results: list[RunResult] = []
        not_started: list[str] = []
        lock = threading.Lock()

        def job(key: tuple[str, str]) -> None:
            number, scenario = key
            if time.monotonic() > deadline:
                with lock:
                    not_started.extend(groups[key])
                return
            if not servers[scenario].alive():
                with lock:
                    not_started.extend(groups[key])
                return
            limit = max(args.test_timeout, LONG_TESTS.get(number, 0.0))
            res = run_number(build_tests, number, scenario, confs[scenario], workdir,
                             groups[key], limit, ["-Q"] if args.quick else [])
            res.reasons.update({k: v for k, v in failure_reasons(res.log_path).items()
                                if k not in res.reasons})
            with lock:
                results.append(res)
                for name in groups[key]:
                    state = res.states.get(name, "?")
                    mark = "allowed" if name in allow else "not allowed"
                    extra = f": {res.reasons[name]}" if state != "PASSED" and name in res.reasons else ""
                    print(f"[{res.seconds:6.1f}s] {name:<48} {state:<8} ({mark}){extra}",
                          flush=True)

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            list(pool.map(job, list(groups)))

        dead = [s for s, srv in servers.items() if not srv.alive()]
    finally:
        for server in servers.values():
            server.stop()

    states: dict[str, str] = {}
    reasons: dict[str, str] = {}
    logs: dict[str, Path] = {}
    for res in results:
        for name in groups[(res.number, res.scenario)]:
            states[name] = res.states.get(name, "?")
            if name in res.reasons:
                reasons[name] = res.reasons[name]
            logs[name] = res.log_path

    checked = {t.name for t in candidates}
    passed = sorted(n for n, s in states.items() if s == "PASSED")
    regressions = sorted(n for n in allow if n in checked and states.get(n) != "PASSED")
    new_passes = sorted(n for n in passed if n not in allow)
    for name in regressions:
        problems.append(f"{name}: allowed but {states.get(name, 'NOT RUN')}"
                        + (f" ({reasons[name]})" if name in reasons else ""))
    for name in new_passes:
        problems.append(f"{name}: PASSED but is not on the allow-list: add it to {args.allowlist.name}")
    for scenario in dead:
        problems.append(f"kafscale standalone ({scenario}) exited during the run:\n"
                        + servers[scenario].log_tail())
    if not_started:
        problems.append(f"not started (total time limit or dead server): {sorted(not_started)}")

    by_state: dict[str, int] = {}
    for s in states.values():
        by_state[s] = by_state.get(s, 0) + 1
    summary = {
        "passed": passed,
        "states": dict(sorted(states.items())),
        "reasons": reasons,
        "regressions": regressions,
        "new_passes": new_passes,
        "problems": problems,
    }
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")

    print("\n========== librdkafka suite summary ==========")
    print(f"runs: {len(results)}, tests: {len(states)}, by state: "
          + ", ".join(f"{k} {v}" for k, v in sorted(by_state.items())))
    print(f"passed: {len(passed)} (allow-list: {len(allow)})")
    for name in regressions:
        print(f"\n--- {name} ({states.get(name, 'NOT RUN')}): last lines of {logs.get(name)} ---")
        if name in logs:
            text = logs[name].read_text(encoding="utf-8", errors="replace").splitlines()
            print("\n".join(text[-30:]))
    if regressions:
        for scenario, server in servers.items():
            print(f"\n--- last lines of the kafscale ({scenario}) log {server.log_path} ---")
            print(server.log_tail(20))
    if problems:
        print("\nFAILED:")
        for p in problems:
            print(f"  - {p}")
        return 1
    # The logs stay; the servers' data (hundreds of MB) goes.
    for server in servers.values():
        shutil.rmtree(server.dir / "data", ignore_errors=True)
    print(f"\nOK: every allowed test passed and no other test did ({workdir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

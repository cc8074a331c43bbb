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

That is the plain pass. The security pass then does the same against a kafscale standalone
with TLS and SASL on its Kafka listener (librdkafka's SASL_SSL with SCRAM-SHA-512, a user
created through the admin API before the tests, sessions re-authenticated per KIP-368): it runs
the tests of security-tests.txt (the suite's SASL and SSL tests that apply, and a sample of
the regular ones) and checks them against security-allowlist.txt with the same two rules.

Results, per-test logs and the server logs are written under --workdir.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional

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

# The security pass: the SASL user the tests log in as, and the mechanism they use (the server
# enables the three kafscale offers; the suite's configuration takes one).
SECURITY_USER = "librdkafka-suite"
SECURITY_MECHANISM = "SCRAM-SHA-512"
SECURITY_SERVER_MECHANISMS = "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN"
# Every SASL session of the security pass lasts this long (KIP-368's connections.max.reauth.ms),
# so librdkafka re-authenticates its connections while the regular tests run, and
# 0142_reauthentication has a lifetime to cross (about 1.2 of it per sub-test).
SECURITY_SESSION_LIFETIME_MS = 10_000
# Test numbers the security pass runs in parts, one runner invocation per SUBTESTS filter (a
# substring of the sub-test names, which start with the function's name): the test passes
# only if every part does.
SECURITY_SUBTEST_RUNS = {
    # 0142's transactional sub-tests need a transactional producer (a non-goal: refused with
    # TRANSACTIONAL_ID_AUTHORIZATION_FAILED), and its OAUTHBEARER ones skip themselves: run
    # the consumer and producer sub-tests and the re-authentication with a wrong password.
    "0142": ["message loss while reauthenticating", "do_test_reauth_failure"],
}
# The variables through which trivup, the cluster tool of librdkafka's own CI, tells
# 0097_ssl_verify where its client certificates and keys are.
TRIVUP_SSL_VARS = ("SSL_pkcs", "SSL_password", "SSL_pub_der", "SSL_pub_pem", "SSL_priv_der",
                   "SSL_priv_pem", "SSL_ca_der", "SSL_all_cas_pem", "SSL_intermediate_pub_pem",
                   "SSL_client_auth")
# Test numbers whose bootstrap connections the security pass sends through a proxy that holds
# each connection's first bytes (the ClientHello) for this many seconds.
SECURITY_DELAYED_BOOTSTRAP = {
    # 0097 expects a handshake that its verification callback fails to be reported as an SSL
    # error (ERR__SSL). librdkafka reports it as a transport error (ERR__TRANSPORT) instead when
    # the failure comes inside the handshake's first call (SSL_connect, which writes the
    # ClientHello and reads at once) rather than a later one, that is when the server's answer
    # is already readable by then: on loopback that is most connections, with kafscale as with
    # `openssl s_server`, but not with the Java brokers the test is written for. Its failing
    # handshakes all go to the bootstrap address (the certificate is refused before any
    # Metadata), so delaying the ClientHello there restores the later call. (The suite's
    # sockem, TEST_SOCKEM, is not applied to C++ tests such as this one.)
    "0097": 0.02,
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


class ServerStartError(Exception):
    """A kafscale server of a pass could not be started or prepared (the message says why)."""


class Server:
    """One `kafscale standalone` on a fresh data dir and free ports."""

    def __init__(self, binary: Path, workdir: Path, label: str, scenario: str,
                 extra_args: list[str], extra_env: Optional[dict[str, str]] = None):
        self.binary = binary
        self.label = label
        self.dir = workdir / f"server-{label}"
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
        self.env = {**os.environ, **(extra_env or {})}
        self.proc: Optional[subprocess.Popen] = None
        self.bootstrap: Optional[str] = None
        self.http: Optional[str] = None

    def start(self, timeout: float = 60.0) -> None:
        log = open(self.log_path, "ab")
        log.write(("=== " + " ".join(self.cmd) + "\n").encode())
        log.flush()
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=log, cwd=self.dir, env=self.env,
                                     start_new_session=True)
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
                        self.http = m.group("http")
                        self.bootstrap = m.group("kafka")
                        ready.set()
            ready.set()

        threading.Thread(target=reader, daemon=True).start()
        ready.wait(timeout)
        if not self.bootstrap:
            self.stop()
            raise ServerStartError(f"kafscale ({self.label}) did not become ready:\n"
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


class FirstBytesDelayProxy:
    """A TCP proxy on 127.0.0.1 in front of `target` ("host:port") that holds the first bytes
    each client sends for `delay` seconds, then forwards both ways as data comes."""

    def __init__(self, target: str, delay: float):
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.delay = delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # stopped
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        threading.Thread(target=self._pipe, args=(upstream, client, 0.0), daemon=True).start()
        self._pipe(client, upstream, self.delay)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, first_delay: float) -> None:
        try:
            while data := src.recv(65536):
                if first_delay:
                    time.sleep(first_delay)
                    first_delay = 0.0
                dst.sendall(data)
        except OSError:
            pass
        # Either side closing ends the connection; shutdown() also wakes the other direction's
        # thread, blocked in recv().
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def stop(self) -> None:
        self.listener.close()


class SecurityFixtures:
    """The security pass's key material and credentials, made fresh in every run (nothing secret
    is committed) with the openssl CLI, as tests/e2e/test_tls.py does: a CA, the server's
    certificate for 127.0.0.1, and a client certificate in every form 0097_ssl_verify loads
    (PEM, DER, PKCS#12; it finds them through the SSL_* variables that trivup, the cluster
    tool of librdkafka's own CI, sets up)."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True)
        # One password for the SASL user, the client key and the client keystore, as trivup
        # does; random, so the files of one run are no use in another.
        self.password = secrets.token_urlsafe(18)
        self.admin_token = secrets.token_urlsafe(24)
        self.ca = self._self_signed("ca", "/CN=kafscale librdkafka-suite CA")
        # A second, unrelated CA: SSL_all_cas_pem is a bundle of several.
        other_ca = self._self_signed("other-ca", "/CN=kafscale librdkafka-suite other CA")
        self.all_cas = root / "all-cas.pem"
        self.all_cas.write_bytes(other_ca.read_bytes() + self.ca.read_bytes())
        self.server_cert, self.server_key = self._issue(
            "server", "/CN=localhost",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth")
        self.client_cert, client_key = self._issue(
            "client", "/O=kafscale/CN=librdkafka-suite", "extendedKeyUsage=clientAuth")
        # The client key as librdkafka's ssl.key.location usually is: encrypted, opened with
        # ssl.key.password.
        self.client_key = root / "client-encrypted.key"
        self._openssl("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", client_key,
                      "-out", self.client_key, "-passout", "env:SUITE_KEY_PASSWORD")
        self.ca_der = root / "ca.der"
        self._openssl("x509", "-in", self.ca, "-outform", "DER", "-out", self.ca_der)
        self.client_cert_der = root / "client.der"
        self._openssl("x509", "-in", self.client_cert, "-outform", "DER",
                      "-out", self.client_cert_der)
        self.client_key_der = root / "client-key.der"
        self._openssl("pkey", "-in", client_key, "-outform", "DER", "-out", self.client_key_der)
        # Key, certificate and CA in one keystore, as 0097 loads all three from it.
        self.client_keystore = root / "client.p12"
        self._openssl("pkcs12", "-export", "-inkey", client_key, "-in", self.client_cert,
                      "-certfile", self.ca, "-name", "client", "-out", self.client_keystore,
                      "-passout", "env:SUITE_KEY_PASSWORD")

    def _openssl(self, *args) -> None:
        env = {**os.environ, "SUITE_KEY_PASSWORD": self.password}
        done = subprocess.run(["openssl", *map(str, args)], capture_output=True, timeout=60,
                              env=env, cwd=self.root)
        if done.returncode:
            raise SystemExit(f"run_suite: openssl {args[0]} failed: "
                             + done.stderr.decode(errors="replace"))

    def _self_signed(self, name: str, subject: str) -> Path:
        cert, key = self.root / f"{name}.pem", self.root / f"{name}.key"
        self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", subject)
        return cert

    def _issue(self, name: str, subject: str, extensions: str) -> tuple[Path, Path]:
        cert, key, csr, ext = (self.root / f"{name}.{s}" for s in ("pem", "key", "csr", "ext"))
        ext.write_text(extensions + "\n")
        self._openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                      "-keyout", key, "-out", csr, "-subj", subject)
        self._openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.root / "ca.key",
                      "-set_serial", str(1000 + secrets.randbelow(10**9)), "-days", "2",
                      "-out", cert, "-extfile", ext)
        return cert, key

    def server_args(self) -> list[str]:
        # No --kafka-tls-client-ca: on SASL_SSL the client authenticates with SASL, and 0097
        # expects its untrusted client certificates to connect there.
        return [
            "--kafka-tls-cert", str(self.server_cert),
            "--kafka-tls-key", str(self.server_key),
            "--sasl-mechanisms", SECURITY_SERVER_MECHANISMS,
            "--sasl-session-lifetime-ms", str(SECURITY_SESSION_LIFETIME_MS),
        ]

    def server_env(self) -> dict[str, str]:
        return {
            # The admin API accepts mutations (creating the user) only with a token.
            "KAFSCALE_ADMIN_TOKEN": self.admin_token,
            # Every SASL exchange in the server log (debug), to count the re-authentications.
            "KAFSCALE_LOG": "info,kafscale_shared::wire::sasl=debug",
        }

    def conf_lines(self) -> list[str]:
        return [
            "security.protocol=SASL_SSL",
            f"sasl.mechanisms={SECURITY_MECHANISM}",
            f"sasl.username={SECURITY_USER}",
            f"sasl.password={self.password}",
            f"ssl.ca.location={self.ca}",
            # A client certificate, which the server does not ask for: 0097 swaps it for
            # other forms and for untrusted ones, and skips itself without one.
            f"ssl.certificate.location={self.client_cert}",
            f"ssl.key.location={self.client_key}",
            f"ssl.key.password={self.password}",
        ]

    def runner_env(self) -> dict[str, str]:
        """The variables trivup sets for 0097_ssl_verify."""
        return {
            "SSL_pkcs": str(self.client_keystore),
            "SSL_password": self.password,
            "SSL_pub_der": str(self.client_cert_der),
            "SSL_pub_pem": str(self.client_cert),
            "SSL_priv_der": str(self.client_key_der),
            "SSL_priv_pem": str(self.client_key),
            "SSL_ca_der": str(self.ca_der),
            "SSL_all_cas_pem": str(self.all_cas),
        }

    @staticmethod
    def count_logins(server: Server) -> str:
        """How many SASL logins and re-authentications the server logged."""
        try:
            text = server.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "no server log"
        logins = [line for line in text.splitlines() if "sasl authenticated" in line]
        again = sum("reauthentication=true" in line for line in logins)
        failed = text.count("sasl authentication failed")
        return (f"SASL: {len(logins) - again} logins, {again} re-authentications, "
                f"{failed} failed authentications")

    def create_user(self, server: Server) -> None:
        """The tests' SASL user, through the admin API as an operator would (with SASL on, a
        Kafka client must already be a user to create one)."""
        cmd = [str(server.binary), "admin", "users", "set", SECURITY_USER,
               "--password-env", "SUITE_SASL_PASSWORD", "--url", f"http://{server.http}"]
        env = {**os.environ, "KAFSCALE_ADMIN_TOKEN": self.admin_token,
               "SUITE_SASL_PASSWORD": self.password}
        env.pop("KAFSCALE_ADMIN_URL", None)
        done = subprocess.run(cmd, capture_output=True, timeout=60, env=env,
                              stdin=subprocess.DEVNULL)
        if done.returncode:
            raise ServerStartError(f"creating the SASL user failed ({' '.join(cmd)}):\n"
                                   + done.stdout.decode(errors="replace")
                                   + done.stderr.decode(errors="replace"))


@dataclasses.dataclass
class SuitePass:
    """One kafscale configuration the suite runs against, with its tests and allow-list."""
    name: str  # "plain" or "security"
    title: str
    tests: list[TestDecl]
    allow: dict[str, str]
    allowlist_path: Path
    total_timeout: float
    server_args: list[str] = dataclasses.field(default_factory=list)
    server_env: dict[str, str] = dataclasses.field(default_factory=dict)
    conf_lines: list[str] = dataclasses.field(default_factory=list)
    runner_env: dict[str, str] = dataclasses.field(default_factory=dict)
    delayed_bootstrap: dict[str, float] = dataclasses.field(default_factory=dict)
    subtest_runs: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    # Called once a server of the pass is ready, before any test (e.g. to create users).
    prepare_server: Optional[Callable[[Server], None]] = None
    # A line about each server for the pass's summary, once it has stopped.
    describe_server: Optional[Callable[[Server], str]] = None


@dataclasses.dataclass
class RunResult:
    number: str
    scenario: str
    subtests: Optional[str]  # the SUBTESTS filter, None for all sub-tests
    seconds: float
    exit_code: Optional[int]  # None: killed at the time limit
    states: dict[str, str]  # test name -> PASSED/FAILED/SKIPPED/...
    reasons: dict[str, str]  # test name -> failure or skip text
    log_path: Path


def run_number(build_tests: Path, label: str, number: str, scenario: str,
               subtests: Optional[str], conf: Path, workdir: Path, names: list[str],
               time_limit: float, runner_args: list[str],
               runner_env: dict[str, str]) -> RunResult:
    log_path = workdir / "logs" / f"{label}.log"
    report = workdir / "reports" / f"{label}.json"
    env = dict(os.environ)
    for var in ("TESTS_SKIP", "TESTS_SKIP_BEFORE", "SUBTESTS", "TEST_DEBUG", "KAFKA_PATH",
                "TEST_CONSUMER_GROUP_PROTOCOL", "KAFKA_VERSION"):
        env.pop(var, None)
    # trivup's variables come only from the pass that sets them.
    for var in TRIVUP_SSL_VARS:
        env.pop(var, None)
    env.update(runner_env)
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
    if subtests is not None:
        env["SUBTESTS"] = subtests
    # Run from the work dir, not the (cached) build: tests write statistics files to their
    # current directory. Some read files next to it (../src/statistics_schema.json,
    # ./fixtures/ssl/), hence the links made by main().
    cwd = workdir / "tests"
    cmd = [str(build_tests / "test-runner"), "-L", "-p1", "-s", scenario, *runner_args]
    started = time.monotonic()
    with open(log_path, "wb") as log:
        shown = f" SUBTESTS={subtests!r}" if subtests is not None else ""
        log.write(f"=== TESTS={number}{shown} {' '.join(cmd)}\n".encode())
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
    return RunResult(number, scenario, subtests, seconds, exit_code, states, reasons, log_path)


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


@dataclasses.dataclass
class PassOutcome:
    suite_pass: SuitePass
    seconds: float
    runs: int
    states: dict[str, str]
    reasons: dict[str, str]
    logs: dict[str, list[Path]]
    passed: list[str]
    regressions: list[str]
    new_passes: list[str]
    problems: list[str]
    servers: dict[str, Server]


def run_pass(sp: SuitePass, args: argparse.Namespace, build_tests: Path,
             workdir: Path) -> PassOutcome:
    """Starts the pass's servers, runs its tests and compares the outcome with its allow-list."""
    started = time.monotonic()
    # One test-runner invocation per (number, scenario, sub-test filter), in test order.
    groups: dict[tuple[str, str, Optional[str]], list[str]] = {}
    for t in sp.tests:
        for subtests in sp.subtest_runs.get(t.number, [None]):
            groups.setdefault((t.number, t.scenario, subtests), []).append(t.name)
    print(f"\n========== {sp.name} pass: {sp.title} ==========\n"
          f"{len(sp.tests)} tests in {len(groups)} runs, {len(sp.allow)} allowed "
          f"({sp.allowlist_path.name})", flush=True)

    servers: dict[str, Server] = {}
    proxies: list[FirstBytesDelayProxy] = []
    # The runner's test.conf per scenario, and per (number, scenario) where it differs.
    confs: dict[str, Path] = {}
    number_confs: dict[tuple[str, str], Path] = {}
    results: list[RunResult] = []
    not_started: list[str] = []
    problems: list[str] = []
    dead: list[str] = []

    def write_conf(path: Path, bootstrap: str) -> Path:
        path.write_text(
            "\n".join([
                f"bootstrap.servers={bootstrap}",
                # Unique topic names in every run: one server serves every test.
                "test.topic.random=true",
                *sp.conf_lines,
            ]) + "\n",
            encoding="utf-8")
        return path

    try:
        for scenario in sorted({s for _, s, _ in groups}):
            server = Server(args.kafscale_bin.resolve(), workdir, f"{sp.name}-{scenario}",
                            scenario, [*sp.server_args, *args.server_arg], sp.server_env)
            servers[scenario] = server
            server.start()
            if sp.prepare_server:
                sp.prepare_server(server)
            assert server.bootstrap
            confs[scenario] = write_conf(workdir / f"test-{sp.name}-{scenario}.conf",
                                         server.bootstrap)
            print(f"kafscale standalone ({sp.name}, {scenario}) on {server.bootstrap}",
                  flush=True)
            for number, delay in sp.delayed_bootstrap.items():
                if not any(n == number and s == scenario for n, s, _ in groups):
                    continue
                proxy = FirstBytesDelayProxy(server.bootstrap, delay)
                proxies.append(proxy)
                number_confs[(number, scenario)] = write_conf(
                    workdir / f"test-{sp.name}-{scenario}-{number}.conf", proxy.address)

        deadline = time.monotonic() + sp.total_timeout
        lock = threading.Lock()

        def job(key: tuple[str, str, Optional[str]]) -> None:
            number, scenario, subtests = key
            if time.monotonic() > deadline or not servers[scenario].alive():
                with lock:
                    not_started.extend(groups[key])
                return
            limit = max(args.test_timeout, LONG_TESTS.get(number, 0.0))
            label = f"{sp.name}-{number}-{scenario}"
            if subtests is not None:
                label += f"-part{sp.subtest_runs[number].index(subtests) + 1}"
            conf = number_confs.get((number, scenario), confs[scenario])
            res = run_number(build_tests, label, number, scenario, subtests, conf,
                             workdir, groups[key], limit, ["-Q"] if args.quick else [],
                             sp.runner_env)
            res.reasons.update({k: v for k, v in failure_reasons(res.log_path).items()
                                if k not in res.reasons})
            with lock:
                results.append(res)
                part = f" [SUBTESTS={subtests!r}]" if subtests is not None else ""
                for name in groups[key]:
                    state = res.states.get(name, "?")
                    mark = "allowed" if name in sp.allow else "not allowed"
                    extra = (f": {res.reasons[name]}"
                             if state != "PASSED" and name in res.reasons else "")
                    print(f"[{res.seconds:6.1f}s] {sp.name:<8} {name:<40} {state:<8} "
                          f"({mark}){part}{extra}", flush=True)

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            list(pool.map(job, list(groups)))

        dead = [s for s, srv in servers.items() if not srv.alive()]
    except ServerStartError as e:
        problems.append(str(e))
        not_started.extend(n for names in groups.values() for n in names)
    finally:
        for proxy in proxies:
            proxy.stop()
        for server in servers.values():
            server.stop()

    # A test run in parts is as good as its worst part.
    states: dict[str, str] = {}
    reasons: dict[str, str] = {}
    logs: dict[str, list[Path]] = {}
    for res in results:
        part = f"[SUBTESTS={res.subtests!r}] " if res.subtests is not None else ""
        for name in groups[(res.number, res.scenario, res.subtests)]:
            state = res.states.get(name, "?")
            logs.setdefault(name, []).append(res.log_path)
            if states.get(name, "PASSED") != "PASSED":
                continue
            states[name] = state
            if name in res.reasons:
                reasons[name] = part + res.reasons[name]

    checked = {t.name for t in sp.tests}
    passed = sorted(n for n, s in states.items() if s == "PASSED")
    regressions = sorted(n for n in sp.allow if n in checked and states.get(n) != "PASSED")
    new_passes = sorted(n for n in passed if n not in sp.allow)
    for name in regressions:
        problems.append(f"{name}: allowed but {states.get(name, 'NOT RUN')}"
                        + (f" ({reasons[name]})" if name in reasons else ""))
    for name in new_passes:
        problems.append(f"{name}: PASSED but is not on the allow-list: "
                        f"add it to {sp.allowlist_path.name}")
    for scenario in dead:
        problems.append(f"kafscale standalone ({sp.name}, {scenario}) exited during the run:\n"
                        + servers[scenario].log_tail())
    if not_started:
        problems.append("not started (time limit of the pass, or no server): "
                        f"{sorted(set(not_started))}")
    return PassOutcome(sp, time.monotonic() - started, len(results), states, reasons, logs,
                       passed, regressions, new_passes, problems, servers)


def print_outcome(o: PassOutcome) -> None:
    by_state: dict[str, int] = {}
    for s in o.states.values():
        by_state[s] = by_state.get(s, 0) + 1
    print(f"\n========== {o.suite_pass.name} pass summary ==========")
    print(f"runs: {o.runs}, tests: {len(o.states)}, by state: "
          + ", ".join(f"{k} {v}" for k, v in sorted(by_state.items())))
    print(f"passed: {len(o.passed)} (allow-list: {len(o.suite_pass.allow)}), "
          f"wall time {o.seconds:.0f}s")
    if o.suite_pass.describe_server:
        for server in o.servers.values():
            print(f"kafscale ({server.label}): {o.suite_pass.describe_server(server)}")
    for name in o.regressions:
        for log in o.logs.get(name, []):
            print(f"\n--- {name} ({o.states.get(name, 'NOT RUN')}): last lines of {log} ---")
            text = log.read_text(encoding="utf-8", errors="replace").splitlines()
            print("\n".join(text[-30:]))
    if o.regressions:
        for server in o.servers.values():
            print(f"\n--- last lines of the kafscale ({server.label}) log {server.log_path} ---")
            print(server.log_tail(20))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build-dir", required=True, type=Path,
                    help="librdkafka source folder with a built tests/test-runner")
    ap.add_argument("--kafscale-bin", type=Path, required=True)
    ap.add_argument("--workdir", type=Path, help="where logs and data go (default: a temp dir)")
    ap.add_argument("--allowlist", type=Path, default=HERE / "allowlist.txt")
    ap.add_argument("--skiplist", type=Path, default=HERE / "skip.txt")
    ap.add_argument("--security-tests", type=Path, default=HERE / "security-tests.txt",
                    help="the tests the security pass runs")
    ap.add_argument("--security-allowlist", type=Path, default=HERE / "security-allowlist.txt")
    ap.add_argument("--passes", default="plain,security",
                    help="comma-separated passes to run: plain (no TLS, no SASL), security "
                    "(SASL_SSL with SCRAM-SHA-512)")
    ap.add_argument("--jobs", type=int, default=2, help="test numbers run at the same time")
    ap.add_argument("--test-timeout", type=float, default=240.0,
                    help="wall-clock limit of one test number (seconds)")
    ap.add_argument("--total-timeout", type=float, default=1800.0,
                    help="wall-clock limit of the plain pass (seconds): later tests are not "
                    "started")
    ap.add_argument("--security-timeout", type=float, default=600.0,
                    help="wall-clock limit of the security pass (seconds)")
    ap.add_argument("--quick", action="store_true",
                    help="run the tests in librdkafka's quick mode (-Q), which also leaves out "
                    "every sub-test not marked quick: faster, but much is then not tested")
    ap.add_argument("--only", help="comma-separated test numbers to run (e.g. 0001,0030); "
                    "the allow-lists are then checked for these only")
    ap.add_argument("--server-arg", action="append", default=[],
                    help="extra flag for kafscale standalone (repeatable, every pass)")
    args = ap.parse_args()

    build_tests = args.build_dir.resolve() / "tests"
    if not os.access(build_tests / "test-runner", os.X_OK):
        raise SystemExit(f"run_suite: {build_tests}/test-runner is missing")
    if not os.access(args.kafscale_bin, os.X_OK):
        raise SystemExit(f"run_suite: kafscale binary {args.kafscale_bin} is missing")
    pass_names = [p for p in args.passes.split(",") if p]
    if not pass_names or set(pass_names) - {"plain", "security"}:
        raise SystemExit(f"run_suite: --passes takes plain and/or security, not {args.passes!r}")
    tests = parse_test_list(build_tests / "test.c")
    by_name = {t.name: t for t in tests}
    allow = read_list(args.allowlist)
    skip = read_list(args.skiplist)
    security_tests = read_list(args.security_tests)
    security_allow = read_list(args.security_allowlist)

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
    for name in security_tests:
        if name in skip:
            problems.append(f"{name}: in {args.security_tests.name} and on the skip list")
        elif name not in candidate_names:
            problems.append(f"{name}: in {args.security_tests.name} but not a broker test "
                            "of this suite")
    for name in security_allow:
        if name not in security_tests:
            problems.append(f"{name}: on {args.security_allowlist.name} but not in "
                            f"{args.security_tests.name}")
    unservable = [t.name for t in candidates if t.scenario not in SCENARIO_FLAGS]
    if unservable:
        problems.append(f"tests of scenarios this script cannot serve: {unservable}")
    wanted = set(args.only.split(",")) if args.only else None

    def selected(decls: list[TestDecl]) -> list[TestDecl]:
        return [t for t in decls if wanted is None or t.number in wanted]

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="librdkafka-suite-"))
    if workdir.exists() and any(workdir.iterdir()):
        shutil.rmtree(workdir)
    for sub in ("logs", "reports", "tests"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("src", "src-cpp"):
        (workdir / sub).symlink_to(build_tests.parent / sub)
    # 0097_ssl_verify's untrusted client certificates (./fixtures/ssl/ from the tests' folder).
    (workdir / "tests" / "fixtures").symlink_to(build_tests / "fixtures")
    print(f"librdkafka suite: passes {', '.join(pass_names)}, {len(skip)} tests skipped, "
          f"work dir {workdir}", flush=True)

    passes: list[SuitePass] = []
    if "plain" in pass_names:
        passes.append(SuitePass(
            name="plain", title="kafscale standalone, plaintext, no SASL",
            tests=selected(candidates), allow=allow, allowlist_path=args.allowlist,
            total_timeout=args.total_timeout))
    if "security" in pass_names:
        fixtures = SecurityFixtures(workdir / "security-pki")
        passes.append(SuitePass(
            name="security",
            title=f"kafscale standalone, SASL_SSL with {SECURITY_MECHANISM}, sessions of "
                  f"{SECURITY_SESSION_LIFETIME_MS} ms",
            tests=selected([t for t in candidates if t.name in security_tests]),
            allow=security_allow, allowlist_path=args.security_allowlist,
            total_timeout=args.security_timeout,
            server_args=fixtures.server_args(), server_env=fixtures.server_env(),
            conf_lines=fixtures.conf_lines(), runner_env=fixtures.runner_env(),
            delayed_bootstrap=SECURITY_DELAYED_BOOTSTRAP, subtest_runs=SECURITY_SUBTEST_RUNS,
            prepare_server=fixtures.create_user, describe_server=fixtures.count_logins))

    outcomes = [run_pass(sp, args, build_tests, workdir) for sp in passes]

    summary = {}
    for o in outcomes:
        summary[o.suite_pass.name] = {
            "seconds": round(o.seconds, 1),
            "passed": o.passed,
            "states": dict(sorted(o.states.items())),
            "reasons": o.reasons,
            "regressions": o.regressions,
            "new_passes": o.new_passes,
            "problems": o.problems,
        }
        problems.extend(f"{o.suite_pass.name} pass: {p}" for p in o.problems)
    summary["problems"] = problems
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")

    for o in outcomes:
        print_outcome(o)
    if problems:
        print("\nFAILED:")
        for p in problems:
            print(f"  - {p}")
        return 1
    # The logs stay; the servers' data (hundreds of MB) goes.
    for o in outcomes:
        for server in o.servers.values():
            shutil.rmtree(server.dir / "data", ignore_errors=True)
    print(f"\nOK: in every pass, every allowed test passed and no other test did ({workdir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

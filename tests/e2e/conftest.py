"""Fixtures for the kafscale end-to-end suite.

The server under test is `$KAFSCALE_BIN standalone ...` (default:
`<CARGO_TARGET_DIR or repo/target>/release/kafscale`).  Each server gets a fresh
data dir under pytest's tmp dir, listens on 127.0.0.1, and logs its stdout and
stderr to `<tmp>/server.log`; the tail of that log is attached to the report of
any failing test that used it.

Every test is bounded in time by a watchdog (default 300 s, override with
`@pytest.mark.deadline(seconds)`): on expiry it dumps all thread stacks, kills
every child process (servers, kcat) and fails the test with DeadlineExceeded;
if the test cannot be interrupted, it ends the pytest process 30 s later.
"""

from __future__ import annotations

import faulthandler
import gc
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from pathlib import Path
from typing import Optional, Sequence

import pytest

import kafka_helpers as kh

REPO_ROOT = Path(__file__).resolve().parents[2]
# The line every serving mode prints on stdout once it listens (ingest, fetch: no data_dir;
# indexer: no kafka listener, its lease id instead).
READY_RE = re.compile(
    r"^kafscale (?P<mode>standalone|ingest|fetch|indexer) listening"
    r"(?: kafka=(?P<kafka>\S+))? http=(?P<http>\S+)"
    r"(?: data_dir=(?P<data_dir>.*))?(?: id=(?P<id>\S+))?$")
START_TIMEOUT_S = float(os.environ.get("KAFSCALE_E2E_START_TIMEOUT", "60"))
STOP_TIMEOUT_S = 30.0
DEFAULT_TEST_DEADLINE_S = float(os.environ.get("KAFSCALE_E2E_TEST_DEADLINE", "300"))
WATCHDOG_GRACE_S = 30.0


def kafscale_binary() -> Path:
    env = os.environ.get("KAFSCALE_BIN")
    if env:
        p = Path(env)
        if not p.is_absolute() and not p.exists():
            p = REPO_ROOT / p
        return p
    target = Path(os.environ.get("CARGO_TARGET_DIR") or (REPO_ROOT / "target"))
    if not target.is_absolute():
        target = REPO_ROOT / target
    return target / "release" / "kafscale"


class ServerStartError(RuntimeError):
    pass


class KafscaleServer:
    """One `kafscale standalone` process (restartable on the same data dir and
    Kafka port), or with `mode` one process of distributed mode (`ingest`,
    `fetch`, `indexer`), whose storage settings come in `extra_args`/`env`."""

    def __init__(self, binary: Path, workdir: Path, extra_args: Sequence[str] = (),
                 kafka_port: int = 0, env: Optional[dict] = None, name: str = "kafscale",
                 config_via_env: bool = False, mode: str = "standalone"):
        self.mode = mode
        self.binary = Path(binary)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.log_path = self.workdir / "server.log"
        self.extra_args = list(extra_args)
        self.env = env
        self.name = name
        self.config_via_env = config_via_env  # pass data dir / addresses as KAFSCALE_* env vars
        self.kafka_port = kafka_port  # 0 until the first start picks one
        self.proc: Optional[subprocess.Popen] = None
        self.bootstrap: Optional[str] = None
        self.http: Optional[str] = None
        self.ready_line: Optional[str] = None
        self.ready_data_dir: Optional[str] = None
        self.ready_id: Optional[str] = None
        self.stdout_lines: list[str] = []
        self.starts = 0
        self._reader: Optional[threading.Thread] = None

    # -- lifecycle ---------------------------------------------------------

    def base_config(self) -> dict[str, str]:
        config = {"http-addr": "127.0.0.1:0"}
        if self.mode == "standalone":
            config["data-dir"] = str(self.data_dir)
        # Named listeners (--listeners) replace --kafka-addr; the ready line's kafka= is then
        # the first listener's address.
        if self.mode != "indexer" and "--listeners" not in self.extra_args:
            config["kafka-addr"] = f"127.0.0.1:{self.kafka_port}"
        return config

    def command(self) -> list[str]:
        if self.config_via_env:
            return [str(self.binary), self.mode, *self.extra_args]
        flags = [arg for flag, value in self.base_config().items() for arg in (f"--{flag}", value)]
        return [str(self.binary), self.mode, *flags, *self.extra_args]

    def _log(self, msg: str) -> None:
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(f"=== [e2e {time.strftime('%H:%M:%S')}] {msg}\n")

    def _spawn_once(self, deadline: kh.Deadline) -> bool:
        """Start the process; return True once the ready line was seen, False if
        the process exited before printing it (e.g. port still in use)."""
        cmd = self.command()
        self.starts += 1
        self._log(f"start #{self.starts}: {' '.join(cmd)}")
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("RUST_BACKTRACE", "1")
        if self.config_via_env:
            for flag, value in self.base_config().items():
                env["KAFSCALE_" + flag.upper().replace("-", "_")] = value
            self._log("env: " + " ".join(f"{k}={v}" for k, v in sorted(env.items()) if k.startswith("KAFSCALE_")))
        logf = open(self.log_path, "ab")
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=logf, env=env, cwd=str(self.workdir))
        finally:
            logf.close()
        self.proc = proc
        kh.register_child(proc)
        ready = threading.Event()
        info: dict = {}

        def reader():
            with open(self.log_path, "ab") as out:
                for raw in proc.stdout:  # type: ignore[union-attr]
                    out.write(b"[stdout] " + raw)
                    out.flush()
                    line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                    self.stdout_lines.append(line)
                    if not ready.is_set():
                        m = READY_RE.match(line)
                        if m and m["mode"] == self.mode:
                            info.update(m.groupdict(), line=line)
                            ready.set()
            ready.set()  # EOF: process exited (or closed stdout)

        self._reader = threading.Thread(target=reader, name=f"{self.name}-stdout", daemon=True)
        self._reader.start()
        ready.wait(deadline.remaining())
        if info:
            self.ready_line = info["line"]
            self.ready_data_dir = info["data_dir"]
            self.ready_id = info["id"]
            self.bootstrap = info["kafka"]
            self.http = info["http"]
            if self.bootstrap is not None:
                host, port = kh.split_addr(self.bootstrap)
                if port == 0:
                    raise ServerStartError(f"ready line reports port 0: {self.ready_line!r}")
                self.kafka_port = port
            return True
        if proc.poll() is None and deadline.expired():
            self._kill_proc()
            raise ServerStartError(
                f"kafscale did not print its ready line within {START_TIMEOUT_S}s\n{self.log_tail()}")
        # exited before becoming ready
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._kill_proc()
        self._log(f"exited before ready with code {proc.returncode}")
        return False

    def start(self, timeout: float = START_TIMEOUT_S) -> "KafscaleServer":
        assert not self.running, "server already running"
        if not self.binary.exists():
            pytest.fail(f"kafscale binary not found at {self.binary}: build it with "
                        "`cargo build --release --locked` or set KAFSCALE_BIN", pytrace=False)
        deadline = kh.Deadline(timeout)
        fixed_port = self.kafka_port != 0
        while True:
            if self._spawn_once(deadline):
                return self
            # A restart on a fixed port may race with the old socket going away:
            # retry until the deadline.  A first start on port 0 has no excuse.
            if not fixed_port or deadline.expired():
                raise ServerStartError(
                    f"kafscale exited with code {self.proc.returncode if self.proc else None} "
                    f"before printing its ready line\n{self.log_tail()}")
            time.sleep(0.5)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _kill_proc(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._finish_proc()

    def _finish_proc(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self.proc is not None:
            kh.unregister_child(self.proc)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int:
        """Send SIGTERM (or `sig`), wait, and assert a clean exit (code 0)."""
        assert self.proc is not None, "server was never started"
        if self.proc.poll() is None:
            self._log(f"sending {signal.Signals(sig).name}")
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill_proc()
                raise AssertionError(
                    f"kafscale did not exit within {timeout}s of {signal.Signals(sig).name}\n"
                    f"{self.log_tail()}")
        self._finish_proc()
        rc = self.proc.returncode
        self._log(f"exited with code {rc}")
        assert rc == 0, f"kafscale exited with code {rc} after {signal.Signals(sig).name}\n{self.log_tail()}"
        return rc

    def restart(self) -> "KafscaleServer":
        """Graceful stop (SIGTERM, exit 0 asserted) then start on the same data
        dir and Kafka port."""
        self.stop()
        return self.start()

    def kill9(self, restart: bool = True) -> "KafscaleServer":
        """SIGKILL, then (by default) start again on the same Kafka port and data dir."""
        assert self.proc is not None
        self._log("sending SIGKILL")
        self._kill_proc()
        self._log(f"killed, code {self.proc.returncode}")
        if restart:
            self.start()
        return self

    def close(self) -> None:
        """Best-effort cleanup: SIGTERM, then SIGKILL after 10 s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.terminate()
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            except OSError:
                pass
        self._finish_proc()

    # -- diagnostics ---------------------------------------------------------

    def http_get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        import urllib.error

        try:
            with urllib.request.urlopen(f"http://{self.http}{path}", timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def rss_kib(self) -> dict[str, int]:
        """VmRSS / VmHWM of the server process, in KiB (Linux only)."""
        out = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    k, v = line.split(":", 1)
                    out[k] = int(v.split()[0])
        return out

    def log_tail(self, lines: int = 80) -> str:
        try:
            data = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return f"(no server log at {self.log_path})"
        return f"--- last {min(lines, len(data))} lines of {self.log_path} ---\n" + "\n".join(data[-lines:])

    def __repr__(self) -> str:
        return f"<KafscaleServer {self.name} kafka={self.bootstrap} http={self.http} pid={self.proc and self.proc.pid}>"


class ServerFactory:
    """Starts servers on demand; closes them all at teardown."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.servers: list[KafscaleServer] = []

    def __call__(self, extra_args: Sequence[str] = (), kafka_port: int = 0, env: Optional[dict] = None,
                 name: Optional[str] = None, start: bool = True, config_via_env: bool = False,
                 mode: str = "standalone") -> KafscaleServer:
        name = name or f"server{len(self.servers)}"
        srv = KafscaleServer(kafscale_binary(), self.root / name, extra_args, kafka_port, env, name,
                             config_via_env, mode)
        self.servers.append(srv)
        if start:
            srv.start()
        return srv

    def close(self) -> None:
        for s in self.servers:
            s.close()


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


@pytest.fixture
def kafscale_factory(tmp_path):
    """Call it to start additional servers, e.g. with extra flags:
    `kafscale_factory(["--auto-create-topics", "false"])`."""
    factory = ServerFactory(tmp_path)
    yield factory
    factory.close()


@pytest.fixture
def kafscale(kafscale_factory) -> KafscaleServer:
    """A fresh server for this test (function scope)."""
    return kafscale_factory(name="kafscale")


@pytest.fixture(scope="module")
def kafscale_module(tmp_path_factory):
    """One server shared by all tests of a module."""
    factory = ServerFactory(tmp_path_factory.mktemp("kafscale-module"))
    srv = factory(name="kafscale")
    yield srv
    factory.close()


# ---------------------------------------------------------------------------
# Reporting: attach server log tails to failing tests
# ---------------------------------------------------------------------------


def _servers_of(item) -> list[KafscaleServer]:
    found = []
    for v in getattr(item, "funcargs", {}).values():
        if isinstance(v, KafscaleServer):
            found.append(v)
        elif isinstance(v, ServerFactory):
            found.extend(v.servers)
    uniq = []
    for s in found:
        if s not in uniq:
            uniq.append(s)
    return uniq


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for srv in _servers_of(item):
            report.sections.append((f"kafscale server log ({srv.name}, {srv.log_path})", srv.log_tail(120)))
    # The failure is rendered by now.  Free the locals of the failed frames:
    # pytest keeps the traceback (sys.last_traceback), which would keep Kafka
    # clients of a failed test alive, reconnecting and logging in the background
    # during the following tests.
    if call.excinfo is not None and not item.config.getoption("usepdb", False):
        tb = call.excinfo.tb
        while tb is not None:
            try:
                tb.tb_frame.f_locals.clear()  # the snapshot dict taken while rendering
            except Exception:  # noqa: BLE001 - best effort
                pass
            tb = tb.tb_next
        traceback.clear_frames(call.excinfo.tb)
        gc.collect()


# ---------------------------------------------------------------------------
# Per-test watchdog
# ---------------------------------------------------------------------------


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "deadline(seconds): hard per-test time limit enforced by the e2e watchdog")


class DeadlineExceeded(BaseException):
    """Raised in the main thread when a test overruns its deadline.  A
    BaseException so that `except Exception` retry loops cannot swallow it."""


def _dump_and_kill(reason: str) -> None:
    sys.__stderr__.write(f"\n!!! e2e watchdog: {reason}; dumping stacks, killing child processes\n")
    faulthandler.dump_traceback(file=sys.__stderr__, all_threads=True)
    kh.kill_all_children()
    sys.__stderr__.flush()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Bound setup + call + teardown of every test.  At the deadline SIGALRM
    raises DeadlineExceeded in the main thread (the test fails with a traceback
    at the blocking call) after all child processes were killed; if the test
    is stuck where Python cannot run the handler, a watchdog thread ends the
    pytest process WATCHDOG_GRACE_S later."""
    marker = item.get_closest_marker("deadline")
    seconds = float(marker.args[0]) if marker else DEFAULT_TEST_DEADLINE_S
    use_alarm = hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    old_handler = None
    if use_alarm:
        def on_alarm(signum, frame):
            _dump_and_kill(f"{item.nodeid} exceeded its {seconds:.0f}s deadline")
            raise DeadlineExceeded(f"{item.nodeid} exceeded its {seconds:.0f}s deadline")

        old_handler = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)

    def abort():
        _dump_and_kill(f"{item.nodeid} still running {WATCHDOG_GRACE_S:.0f}s after its {seconds:.0f}s deadline")
        os._exit(3)

    hard = threading.Timer(seconds + WATCHDOG_GRACE_S, abort)
    hard.daemon = True
    hard.start()
    try:
        yield
    finally:
        hard.cancel()
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_handler)

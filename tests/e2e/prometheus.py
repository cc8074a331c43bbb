"""A real Prometheus server for the metrics tests: Debian's `prometheus` package
(installed by scripts/install-test-deps.sh), started on a free 127.0.0.1 port
with a generated configuration that scrapes the given kafscale processes every
second, storage in a temporary directory, stopped (and its data removed with
the directory) at the end. Queries go through its HTTP API."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Optional

import kafka_helpers as kh

SCRAPE_INTERVAL_S = 1


def binary(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} not found: install the Debian package prometheus (scripts/install-test-deps.sh)"
    return path


def promtool_check(page: bytes) -> str:
    """`promtool check metrics` over one /metrics page: '' when it reports no problem."""
    out = subprocess.run([binary("promtool"), "check", "metrics"], input=page,
                         capture_output=True, timeout=60)
    problems = (out.stdout + out.stderr).decode(errors="replace").strip()
    if out.returncode != 0 and not problems:
        problems = f"promtool exited with {out.returncode}"
    return problems


class Prometheus:
    """`prometheus` scraping `targets`: {job: [host:port, ...]}; `labels` adds target labels
    per address ({host:port: {label: value}}), e.g. the namespace and pod labels a Kubernetes
    ServiceMonitor would attach."""

    def __init__(self, workdir: Path, targets: dict[str, list[str]],
                 labels: Optional[dict[str, dict[str, str]]] = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = kh.free_port()
        self.targets = targets
        self.labels = labels or {}
        self.log_path = self.workdir / "prometheus.log"
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        lines = ["global:", f"  scrape_interval: {SCRAPE_INTERVAL_S}s",
                 f"  scrape_timeout: {SCRAPE_INTERVAL_S}s", "scrape_configs:"]
        for job, addrs in self.targets.items():
            lines += [f"  - job_name: {job}", "    static_configs:"]
            plain = [a for a in addrs if a not in self.labels]
            if plain:
                lines.append("      - targets: [" + ", ".join(f"'{a}'" for a in plain) + "]")
            for a in addrs:
                if a in self.labels:
                    lines += [f"      - targets: ['{a}']", "        labels:"]
                    lines += [f"          {k}: '{v}'" for k, v in self.labels[a].items()]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 60.0) -> "Prometheus":
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(self.config())
        cmd = [binary("prometheus"), f"--config.file={cfg}",
               f"--storage.tsdb.path={self.workdir / 'data'}",
               f"--web.listen-address=127.0.0.1:{self.port}",
               "--storage.tsdb.retention.time=1h", "--log.level=warn"]
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=str(self.workdir))
        finally:
            log.close()
        kh.register_child(self.proc)

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        kh.wait_for(ready, timeout, what="prometheus to be ready")
        return self

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no prometheus log)"

    def api(self, path: str, **params) -> object:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        assert body.get("status") == "success", body
        return body["data"]

    def query(self, promql: str, at: Optional[float] = None) -> list[dict]:
        """Instant vector: [{'metric': {...}, 'value': [ts, 'v']}, ...]."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        assert data["resultType"] == "vector", data
        return data["result"]

    def scalar(self, promql: str, at: Optional[float] = None) -> Optional[float]:
        """The single value of `promql`, or None when the result is empty."""
        result = self.query(promql, at)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def range_values(self, promql: str, start: float, end: float, step: float = 1.0) -> list[float]:
        data = self.api("query_range", query=promql, start=f"{start:.3f}", end=f"{end:.3f}",
                        step=str(step))
        assert len(data["result"]) <= 1, data["result"]
        return [float(v) for _, v in data["result"][0]["values"]] if data["result"] else []

    def wait_targets_up(self, timeout: float = 60.0) -> None:
        want = sum(len(a) for a in self.targets.values())

        def all_up():
            active = self.api("targets")["activeTargets"]
            return len(active) == want and all(t["health"] == "up" for t in active)

        kh.wait_for(all_up, timeout, interval=0.5, what=f"prometheus: {want} targets up")

    def wait_scraped_after(self, moment: float, timeout: float = 30.0) -> None:
        """Waits until every target was scraped after `moment` (time.time())."""
        def scraped():
            active = self.api("targets")["activeTargets"]
            return all(_parse_ts(t["lastScrape"]) > moment for t in active)

        kh.wait_for(scraped, timeout, interval=0.5, what="a scrape of every target")

    def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        kh.unregister_child(self.proc)


def _parse_ts(s: str) -> float:
    """Prometheus's RFC 3339 timestamps (nanoseconds, 'Z' or an offset) as epoch seconds."""
    from datetime import datetime

    main, _, frac = s.partition(".")
    tz = "+00:00"
    if frac:
        for i, ch in enumerate(frac):
            if not ch.isdigit():
                tz = frac[i:].replace("Z", "+00:00")
                frac = frac[:i]
                break
    else:
        if main.endswith("Z"):
            main = main[:-1]
    dt = datetime.fromisoformat(main + tz)
    return dt.timestamp() + (float("0." + frac) if frac else 0.0)


def median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def steady_rate(prom: Prometheus, promql: str, start: float, end: float) -> float:
    """The steady value of a rate series over a paced run: the median of the samples
    that are at least half the peak (the ramp up and down at the edges drop out)."""
    values = prom.range_values(promql, start, end)
    assert values and max(values) > 0, f"{promql}: no samples between {start} and {end}: {values}"
    peak = max(values)
    return median([v for v in values if v >= peak / 2])


def wait_value(prom: Prometheus, promql: str, predicate, timeout: float, what: str) -> float:
    """Polls `promql` until predicate(value) holds (value None: no series yet)."""
    seen: list = []

    def check():
        v = prom.scalar(promql)
        seen.append(v)
        return (v,) if v is not None and predicate(v) else None

    try:
        return kh.wait_for(check, timeout, interval=0.5, what=what)[0]
    except AssertionError as e:
        raise AssertionError(f"{e}; last values of {promql}: {seen[-5:]}") from None


def now() -> float:
    return time.time()

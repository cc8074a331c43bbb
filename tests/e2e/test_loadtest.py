"""kafscale-loadtest against standalone: short, bounded runs that must report
zero lost, duplicated or misplaced records, with the JSON fields other tools
read. (Throughput figures come from the benchmarks in docs/benchmarks.md, not
from here.)"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import kafka_helpers as kh

pytestmark = pytest.mark.deadline(180)


def loadtest_binary() -> Path:
    from conftest import kafscale_binary

    path = kafscale_binary().with_name("kafscale-loadtest")
    assert path.exists(), f"{path} missing: cargo build --release --workspace"
    return path


def run_loadtest(args: list[str], out: Path, timeout: float = 120) -> dict:
    cmd = [str(loadtest_binary()), *args, "--json", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    kh.register_child(proc)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        kh.unregister_child(proc)
    assert proc.returncode == 0, f"loadtest exited {proc.returncode}:\n{stdout.decode()}\n{stderr.decode()[-3000:]}"
    return json.loads(out.read_text())


@pytest.mark.parametrize("acks,compression", [("all", "none"), ("1", "lz4"), ("all", "zstd")])
def test_every_acknowledged_record_is_consumed_once_at_its_offset(kafscale, tmp_path, acks, compression):
    r = run_loadtest(["--bootstrap", kafscale.bootstrap, "--topic", f"lt-{acks}-{compression}",
                      "--records", "20000", "--record-size", "200", "--partitions", "4",
                      "--producers", "2", "--consumers", "2", "--acks", acks,
                      "--compression", compression, "--consume"], tmp_path / "r.json")
    assert r["records_acked"] == 20000, r
    assert r["records_consumed"] == 20000, r
    assert (r["lost"], r["duplicates"], r["offset_mismatches"]) == (0, 0, 0), r
    for key in ("produce_mib_per_s", "consume_mib_per_s"):
        assert r[key] > 0, (key, r)
    for key in ("produce_latency_ms", "e2e_latency_ms"):
        p = r[key]
        assert 0 < p["p50"] <= p["p99"] <= p["p999"] <= p["max"], (key, p)


def test_a_paced_run_with_keys_and_a_restart_in_between(kafscale, tmp_path):
    """Two runs on one topic (the second after a SIGKILL restart): each checks
    only its own records, from where the log ended."""
    args = ["--bootstrap", kafscale.bootstrap, "--topic", "lt-paced", "--records", "3000",
            "--record-size", "100", "--partitions", "3", "--rate", "3000", "--keys", "50",
            "--consume"]
    png = tmp_path / "a.png"  # --plot: the latency spectrum, drawn after the JSON
    first = run_loadtest([*args, "--plot", str(png)], tmp_path / "a.json")
    assert png.exists(), png
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    kafscale.kill9()
    second = run_loadtest(args, tmp_path / "b.json")
    for r in (first, second):
        assert (r["records_acked"], r["records_consumed"], r["lost"], r["duplicates"]) == \
            (3000, 3000, 0, 0), r
    # Paced at 3000/s, 3000 records take about a second.
    assert second["produce_seconds"] >= 0.9, second


def test_a_run_started_while_its_gateway_is_down_waits_for_it(kafscale, tmp_path):
    """The run's setup (topic, end offsets) retries a refused or lost connection for
    --setup-timeout-s, so a run started while the gateway restarts (the chaos test starts
    one while it kills gateways) runs once the gateway is back."""
    kafscale.kill9(restart=False)
    stderr = tmp_path / "stderr"
    cmd = [str(loadtest_binary()), "--bootstrap", kafscale.bootstrap, "--topic", "lt-late",
           "--records", "500", "--record-size", "100", "--partitions", "2", "--consume",
           "--setup-timeout-s", "60", "--json", str(tmp_path / "r.json")]
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err,
                                stdin=subprocess.DEVNULL)
    kh.register_child(proc)
    try:
        kh.wait_for(lambda: b"retrying" in stderr.read_bytes(), timeout=30,
                    what="the loadtest to retry its setup")
        kafscale.start()
        assert proc.wait(timeout=120) == 0, stderr.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        kh.unregister_child(proc)
    r = json.loads((tmp_path / "r.json").read_text())
    assert (r["records_acked"], r["records_consumed"], r["lost"], r["duplicates"]) == \
        (500, 500, 0, 0), r


@pytest.mark.parametrize("block_cache", ["default", "tiny"])
def test_a_catch_up_read_of_everything_produced(kafscale_factory, tmp_path, block_cache):
    """`--catch-up`: consumers start only after producing ended. With a block cache too small
    to hold what was produced, the read comes from the local object store (direct-I/O block
    reads) instead of the segments cached as they were written; either way every record
    arrives once at its offset."""
    extra = ["--fetch-block-cache-bytes", "1048576", "--fetch-block-bytes", "65536"] \
        if block_cache == "tiny" else []
    server = kafscale_factory(extra, name=f"kafscale-{block_cache}")
    r = run_loadtest(["--bootstrap", server.bootstrap, "--topic", "catch-up",
                      "--records", "20000", "--record-size", "512", "--partitions", "4",
                      "--consume", "--catch-up"], tmp_path / "r.json")
    assert r["records_acked"] == 20000, r
    assert r["records_consumed"] == 20000, r
    assert (r["lost"], r["duplicates"], r["offset_mismatches"]) == (0, 0, 0), r
    assert r["consume_mib_per_s"] > 0, r

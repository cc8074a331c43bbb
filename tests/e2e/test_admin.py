"""The admin HTTP API and the `kafscale admin` CLI against a live standalone
server, with real Kafka clients (kcat, confluent-kafka) producing and consuming:
create a topic with the CLI, produce with kcat, see the high watermark in
`topics describe`; consume in a group and commit, see lag 0; reset the stopped
group's offsets to the earliest and see it consume everything again; an active
group's reset is refused; mutations without or with a wrong token get 401/403
and change nothing.

The API's conformance to its own OpenAPI document is checked by schemathesis
in test_admin_openapi.py."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request

import pytest

import kafka_helpers as kh
from conftest import kafscale_binary

pytestmark = pytest.mark.deadline(240)

TOKEN = kh.secret("e2e-admin-token")
RECORDS = 30
PARTITIONS = 3
SERVER_ARGS = ["--group-initial-rebalance-delay-ms", "500"]


@pytest.fixture
def server(kafscale_factory):
    env = dict(os.environ, KAFSCALE_ADMIN_TOKEN=TOKEN)
    return kafscale_factory(SERVER_ARGS, env=env, name="kafscale")


def admin(server, *args: str, token: str | None = TOKEN, output: str = "json",
          check: bool = True) -> subprocess.CompletedProcess:
    """Runs `kafscale admin ARGS --output OUTPUT` against `server`."""
    env = dict(os.environ, KAFSCALE_ADMIN_URL=f"http://{server.http}")
    env.pop("KAFSCALE_ADMIN_TOKEN", None)
    if token is not None:
        env["KAFSCALE_ADMIN_TOKEN"] = token
    res = subprocess.run([str(kafscale_binary()), "admin", *args, "--output", output],
                         env=env, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    if check:
        assert res.returncode == 0, (args, res.stdout.decode(), res.stderr.decode())
    return res


def admin_json(server, *args: str, **kw) -> dict:
    return json.loads(admin(server, *args, **kw).stdout)


def http(server, method: str, path: str, body: dict | None = None,
         token: str | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{server.http}{path}", data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else {}


def produce_with_kcat(server, topic: str, tmp_path, n: int, tag: str) -> None:
    path = tmp_path / f"{tag}.txt"
    path.write_text("".join(f"k{i}:{tag}-{i}\n" for i in range(n)))
    kh.run_kcat(["-P", "-b", server.bootstrap, "-t", topic, "-K:"], stdin_path=str(path))


def consume_in_group(server, topic: str, group: str, n: int, commit: bool = True) -> list:
    """Subscribes as `group`, reads `n` records, commits them (sync) and leaves."""
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": server.bootstrap, "group.id": group,
                  "enable.auto.commit": False, "auto.offset.reset": "latest",
                  "session.timeout.ms": 6000})
    got = []
    try:
        c.subscribe([topic])
        deadline = kh.Deadline(60)
        while len(got) < n and not deadline.expired():
            for m in c.consume(num_messages=n - len(got), timeout=0.5):
                if m.error() is None:
                    got.append((m.partition(), m.offset(), m.value()))
        if commit and got:
            c.commit(asynchronous=False)
    finally:
        c.close()
    return got


def test_cli_topics_groups_lag_and_reset(server, tmp_path):
    topic, group = "admin-e2e", "admin-e2e-group"
    created = admin_json(server, "topics", "create", topic, "--partitions", str(PARTITIONS),
                         "--config", "retention.ms=3600000")
    assert created["partitions"] == PARTITIONS
    produce_with_kcat(server, topic, tmp_path, RECORDS, "a")

    def described():
        d = admin_json(server, "topics", "describe", topic)
        return d if sum(p["high_watermark"] for p in d["partitions"]) == RECORDS else None
    d = kh.wait_for(described, timeout=30)
    assert d["records"] == RECORDS and d["configs"] == {"retention.ms": "3600000"}
    assert all(p["index_entries"] >= 1 and p["last_append_ms"] for p in d["partitions"]
               if p["high_watermark"] > 0)
    table = admin(server, "topics", "describe", topic, output="table").stdout.decode()
    assert "HIGH-WATERMARK" in table and topic in table
    listed = admin_json(server, "topics", "list")
    assert {"name": topic, "partitions": PARTITIONS, "records": RECORDS} \
        .items() <= next(t for t in listed["topics"] if t["name"] == topic).items()
    p0 = next(p for p in d["partitions"] if p["high_watermark"] > 0)
    segs = admin_json(server, "segments", topic, str(p0["partition"]))
    assert segs["entries"] and segs["entries"][-1]["last_offset"] == p0["high_watermark"] - 1
    assert admin_json(server, "topics", "config", topic)["configs"] == {"retention.ms": "3600000"}

    # A group that has never committed starts at the end (auto.offset.reset=latest): reset it
    # to the earliest offsets first, so the first consumer reads everything.
    plan = admin_json(server, "groups", "reset-offsets", group, "--topic", topic, "--to-earliest")
    assert plan["dry_run"] and len(plan["partitions"]) == PARTITIONS
    assert http(server, "GET", f"/v1/groups/{group}/offsets")[0] == 404, "a dry run stores nothing"
    admin(server, "groups", "reset-offsets", group, "--topic", topic, "--to-earliest", "--execute")
    first = consume_in_group(server, topic, group, RECORDS)
    assert len(first) == RECORDS

    lag = admin_json(server, "groups", "lag", group)
    assert lag["total_lag"] == 0 and len(lag["partitions"]) == PARTITIONS, lag
    assert all(p["committed_offset"] == p["high_watermark"] for p in lag["partitions"])
    lag_table = admin(server, "groups", "lag", group, output="table").stdout.decode()
    assert "TOTAL" in lag_table and "LAG" in lag_table
    listed = {g["group_id"]: g["state"] for g in admin_json(server, "groups", "list")["groups"]}
    assert listed.get(group) == "Empty", listed

    # The stopped group, reset to the earliest offsets, consumes everything again.
    reset = admin_json(server, "groups", "reset-offsets", group, "--all-topics", "--to-earliest",
                       "--execute")
    assert not reset["dry_run"] and all(p["new_offset"] == 0 for p in reset["partitions"])
    assert admin_json(server, "groups", "lag", group)["total_lag"] == RECORDS
    again = consume_in_group(server, topic, group, RECORDS)
    assert sorted(again) == sorted(first)
    assert admin_json(server, "groups", "lag", group)["total_lag"] == 0

    cluster = admin_json(server, "cluster")
    assert cluster["mode"] == "standalone" and cluster["shards"][0]["live"]
    # The in-process indexer's figures: it sequenced the produced segments.
    [shard] = admin_json(server, "shards")["shards"]
    assert shard["figures"] == "ok" and shard["queue_depth"] == 0, shard
    latency = shard["commit_latency"]
    assert latency["commits"] >= 1 and latency["p99_seconds"] >= latency["p50_seconds"] > 0, shard
    shards_table = admin(server, "shards", output="table").stdout.decode()
    assert "SHARD" in shards_table and "P99-MS" in shards_table and "unknown" not in shards_table

    admin(server, "groups", "delete", group)
    assert http(server, "GET", f"/v1/groups/{group}/offsets")[0] == 404
    admin(server, "topics", "delete", topic)
    assert http(server, "GET", f"/v1/topics/{topic}")[0] == 404


def test_an_active_group_cannot_be_reset_or_deleted(server, tmp_path):
    from confluent_kafka import Consumer

    topic, group = "admin-active", "admin-active-group"
    admin(server, "topics", "create", topic, "--partitions", "2")
    produce_with_kcat(server, topic, tmp_path, 10, "b")
    c = Consumer({"bootstrap.servers": server.bootstrap, "group.id": group,
                  "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    try:
        c.subscribe([topic])

        def stable():
            c.poll(0.2)
            d = admin_json(server, "groups", "describe", group)
            return d if d["state"] == "Stable" and d["members"] else None
        d = kh.wait_for(stable, timeout=30, what="a stable group")
        assert d["coordinated_here"] and d["protocol_type"] == "consumer"
        [member] = d["members"]
        assert member["client_host"]
        assert [(a["topic"], sorted(a["partitions"])) for a in member["assignment"]] == \
            [(topic, [0, 1])]
        res = admin(server, "groups", "reset-offsets", group, "--all-topics", "--to-latest",
                    "--execute", check=False)
        assert res.returncode != 0 and b"group_not_empty" in res.stderr, res.stderr
        res = admin(server, "groups", "delete", group, check=False)
        assert res.returncode != 0 and b"group_not_empty" in res.stderr, res.stderr
    finally:
        c.close()


def test_mutations_without_or_with_a_wrong_token_change_nothing(server, kafscale_factory):
    admin(server, "topics", "create", "keep-me", "--partitions", "1")
    attempts = [
        ("POST", "/v1/topics", {"name": "sneaky", "partitions": 1}),
        ("DELETE", "/v1/topics/keep-me", None),
        ("POST", "/v1/groups/g/offsets/reset", {"all_topics": True, "strategy": "earliest"}),
        ("DELETE", "/v1/groups/g", None),
    ]
    for method, path, body in attempts:
        status, err = http(server, method, path, body)
        assert (status, err["code"]) == (401, "unauthorized"), (method, path, err)
        status, err = http(server, method, path, body, token="wrong")
        assert (status, err["code"]) == (403, "forbidden"), (method, path, err)
    names = {t["name"] for t in http(server, "GET", "/v1/topics")[1]["topics"]}
    assert names == {"keep-me"}
    res = admin(server, "topics", "delete", "keep-me", token="wrong", check=False)
    assert res.returncode != 0 and b"403 forbidden" in res.stderr
    res = admin(server, "topics", "delete", "keep-me", token=None, check=False)
    assert res.returncode != 0 and b"401 unauthorized" in res.stderr
    assert http(server, "GET", "/v1/topics/keep-me")[0] == 200

    # Without a token configured the API is read-only, whatever is presented.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFSCALE_ADMIN")}
    read_only = kafscale_factory(env=env, name="read-only")
    status, err = http(read_only, "POST", "/v1/topics", {"name": "x"}, token=TOKEN)
    assert (status, err["code"]) == (403, "mutations_disabled")
    assert http(read_only, "GET", "/v1/topics")[1] == {"topics": []}

    # The token from --admin-token-file (its trailing newline ignored), and reads that need it.
    token_file = read_only.workdir / "admin-token"
    token_file.write_text(kh.secret("from-a-file") + "\n")
    strict = kafscale_factory(["--admin-token-file", str(token_file), "--admin-auth-reads", "true"],
                              env=env, name="strict")
    assert http(strict, "GET", "/v1/topics")[0] == 401
    assert http(strict, "GET", "/v1/topics", token=TOKEN)[0] == 403
    assert http(strict, "POST", "/v1/topics", {"name": "y"}, token="from-a-file")[0] == 201
    assert http(strict, "GET", "/v1/topics/y", token="from-a-file")[1]["name"] == "y"



def test_a_read_only_token_reads_everything_and_changes_nothing(kafscale_factory, tmp_path):
    """A dashboard's token: with --admin-auth-reads, the read-only token (from its file) is
    accepted for every read, the API and the CLI alike, and every mutation presenting it gets
    403 read_only_token and changes nothing; the admin token still mutates."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFSCALE_ADMIN")}
    env["KAFSCALE_ADMIN_TOKEN"] = TOKEN
    read_token = kh.secret("dashboard-read-token")
    token_file = tmp_path / "dashboard.token"
    token_file.write_text(read_token + "\n")
    srv = kafscale_factory(["--admin-auth-reads", "true", "--admin-read-token-file", str(token_file)],
                           env=env, name="read-token")
    assert http(srv, "POST", "/v1/topics", {"name": "kept", "partitions": 2}, token=TOKEN)[0] == 201
    assert http(srv, "GET", "/v1/topics")[0] == 401
    assert http(srv, "GET", "/v1/topics", token="not-the-read-token")[0] == 403
    status, body = http(srv, "GET", "/v1/topics/kept", token=read_token)
    assert (status, body["name"]) == (200, "kept")
    assert admin_json(srv, "cluster", token=read_token)["mode"] == "standalone"
    attempts = [
        ("POST", "/v1/topics", {"name": "sneaky", "partitions": 1}),
        ("DELETE", "/v1/topics/kept", None),
        ("DELETE", "/v1/groups/g", None),
    ]
    for method, path, body in attempts:
        status, err = http(srv, method, path, body, token=read_token)
        assert (status, err["code"]) == (403, "read_only_token"), (method, path, err)
    res = admin(srv, "topics", "delete", "kept", token=read_token, check=False)
    assert res.returncode != 0 and b"read_only_token" in res.stderr, res.stderr
    names = {t["name"] for t in http(srv, "GET", "/v1/topics", token=read_token)[1]["topics"]}
    assert names == {"kept"}

    # Refused at startup: a read-only token while reads are open, or one equal to the admin token.
    for args, extra_env in [([], {}), (["--admin-auth-reads", "true"], {"KAFSCALE_ADMIN_READ_TOKEN": TOKEN})]:
        bad_env = dict(env, **extra_env)
        if not extra_env:
            bad_env["KAFSCALE_ADMIN_READ_TOKEN"] = read_token
        res = subprocess.run([str(kafscale_binary()), "standalone", "--kafka-addr", "127.0.0.1:0",
                              "--http-addr", "127.0.0.1:0", "--data-dir", str(tmp_path / "refused"),
                              *args], env=bad_env, capture_output=True, timeout=60,
                             stdin=subprocess.DEVNULL)
        assert res.returncode != 0, res.stderr
        assert b"read-only admin token" in res.stderr, res.stderr

def test_every_cli_command_prints_a_table_for_people(server, tmp_path):
    """Each command of the issue's list, in table form: its header, and the value a person
    looks for, in aligned columns (each header starts where its values start)."""
    topic, group = "admin-tables", "admin-tables-group"
    admin(server, "topics", "create", topic, "--partitions", "2", "--config", "retention.ms=1000",
          output="table")
    produce_with_kcat(server, topic, tmp_path, 10, "t")
    kh.wait_for(lambda: admin_json(server, "topics", "describe", topic)["records"] == 10,
                timeout=30, what="the produced records")
    admin(server, "groups", "reset-offsets", group, "--topic", f"{topic}:0,1", "--to-earliest",
          "--execute")

    def table(*args: str) -> str:
        return admin(server, *args, output="table").stdout.decode()

    def column_values(text: str, header: str) -> list[str]:
        lines = text.strip().splitlines()
        at = next(i for i, line in enumerate(lines) if header in line.split())
        start = lines[at].index(header)
        return [line[start:].split()[0] for line in lines[at + 1:] if len(line) > start
                and line[start:].strip()]

    cases = [
        (("cluster",), "ROLE", "fetch"),
        (("shards",), "QUEUE", "0"),
        (("topics", "list"), "TOPIC", topic),
        (("topics", "describe", topic), "HIGH-WATERMARK", None),
        (("topics", "config", topic), "CONFIG", "retention.ms"),
        (("segments", topic, "0"), "SEGMENT", None),
        (("groups", "list"), "GROUP", group),
        (("groups", "describe", group), None, f"group: {group}"),
        (("groups", "lag", group), "LAG", "10"),
        (("groups", "reset-offsets", group, "--all-topics", "--to-latest"), "NEW-OFFSET", None),
    ]
    for args, header, wanted in cases:
        text = table(*args)
        if header is None:
            assert wanted in text, (args, text)
            continue
        values = column_values(text, header)
        assert values, (args, text)
        if wanted is not None:
            assert wanted in values, (args, header, values, text)
    assert "TOTAL" in table("groups", "lag", group)
    assert "dry run" in table("groups", "reset-offsets", group, "--all-topics", "--to-latest")
    assert f"deleted group {group}" in table("groups", "delete", group)
    assert f"deleted topic {topic}" in table("topics", "delete", topic)

"""The `kafscale standalone` process contract: ready line, HTTP health
endpoints, configuration by flags and by KAFSCALE_* environment variables,
clean exit on SIGTERM / SIGINT, the advertised API versions, topic admin."""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

import kafka_helpers as kh

CONTRACT_APIS = {
    # api key: (name, a version the server must support)
    kh.API_PRODUCE: ("Produce", 3),
    kh.API_FETCH: ("Fetch", 4),
    kh.API_LIST_OFFSETS: ("ListOffsets", 1),
    kh.API_METADATA: ("Metadata", None),
    kh.API_API_VERSIONS: ("ApiVersions", 4),
    kh.API_CREATE_TOPICS: ("CreateTopics", None),
    kh.API_DELETE_TOPICS: ("DeleteTopics", None),
    kh.API_INIT_PRODUCER_ID: ("InitProducerId", None),
}


def test_ready_line_health_endpoints_and_sigterm(kafscale):
    srv = kafscale
    host, port = kh.split_addr(srv.bootstrap)
    http_host, http_port = kh.split_addr(srv.http)
    assert host == "127.0.0.1" and port > 0, srv.ready_line
    assert http_host == "127.0.0.1" and http_port > 0 and http_port != port, srv.ready_line
    assert os.path.realpath(srv.ready_data_dir) == os.path.realpath(srv.data_dir), srv.ready_line
    for path in ("/healthz", "/readyz"):
        status, body = srv.http_get(path)
        assert status == 200, f"GET {path} -> {status} {body[:200]!r}"
    kh.assert_server_serves(srv.bootstrap)
    time.sleep(0.2)
    assert srv.stdout_lines == [srv.ready_line], (
        f"stdout must carry exactly the ready line (logs belong on stderr), got {srv.stdout_lines[:5]}")
    srv.stop(signal.SIGTERM)  # asserts exit code 0


def test_api_versions_cover_the_contract(kafscale):
    v0 = kh.api_versions_v0(kafscale.bootstrap)
    with kh.RawConnection(kafscale.bootstrap) as conn:
        v3 = kh.decode_api_versions_v3(conn.request(kh.API_API_VERSIONS, 3, kh.api_versions_request_body(3)))
    for res, label in ((v0, "v0"), (v3, "v3")):
        assert res.error_code == kh.ERR_NONE, f"ApiVersions {label}: error_code {res.error_code}"
        for key, (name, must) in CONTRACT_APIS.items():
            assert key in res.api_keys, f"ApiVersions {label}: {name} ({key}) not advertised: {res.api_keys}"
            lo, hi = res.api_keys[key]
            assert 0 <= lo <= hi, f"{name}: bad range {lo}..{hi}"
            if must is not None:
                assert lo <= must <= hi, f"{name}: v{must} not within advertised {lo}..{hi}"
    assert v0.api_keys == v3.api_keys, "ApiVersions v0 and v3 disagree"
    assert v0.api_keys[kh.API_API_VERSIONS][0] == 0


def test_configuration_by_environment_variables(kafscale_factory):
    """Every flag also works as KAFSCALE_<FLAG>: data dir, addresses and
    --auto-create-topics false given only through the environment."""
    env = dict(os.environ, KAFSCALE_AUTO_CREATE_TOPICS="false")
    srv = kafscale_factory(name="env-config", config_via_env=True, env=env)
    assert os.path.realpath(srv.ready_data_dir) == os.path.realpath(srv.data_dir), srv.ready_line
    kh.assert_server_serves(srv.bootstrap)
    topic = f"env-unknown-{uuid.uuid4().hex[:8]}"
    batch = kh.build_record_batch([kh.BatchRecord(b"k", b"v")])
    with kh.RawConnection(srv.bootstrap) as conn:
        (res,) = kh.decode_produce_response_v3(
            conn.request(kh.API_PRODUCE, 3, kh.produce_request_body_v3(topic, 0, batch)))
    assert res.error_code == kh.ERR_UNKNOWN_TOPIC_OR_PARTITION, (
        f"KAFSCALE_AUTO_CREATE_TOPICS=false ignored? error_code {res.error_code}")
    srv.stop()


def test_sigint_exits_zero_and_keeps_data(kafscale):
    srv = kafscale
    topic = f"sigint-{uuid.uuid4().hex[:8]}"
    kh.confluent_create_topic(srv.bootstrap, topic, 1)
    items = [{"key": b"k", "value": f"v{i}".encode()} for i in range(200)]
    deliveries = kh.confluent_produce(srv.bootstrap, topic, items)
    assert all(d.error is None for d in deliveries)
    srv.stop(signal.SIGINT)  # asserts exit code 0
    srv.start()
    got = kh.confluent_consume_all(srv.bootstrap, topic, [0], expected=200, timeout=60)
    assert [r.value for r in got] == [it["value"] for it in items]
    assert [r.offset for r in got] == list(range(200))


def test_auto_create_with_default_partitions_and_flush_flags(kafscale_factory):
    """--auto-create-topics true + --default-partitions N: a producer's
    Metadata request for an unknown topic creates it with N partitions.  The
    flush flags are accepted and data written under them reads back."""
    srv = kafscale_factory(["--auto-create-topics", "true", "--default-partitions", "2",
                            "--flush-interval-ms", "50", "--flush-bytes", "65536"], name="auto-create")
    topic = f"auto-{uuid.uuid4().hex[:8]}"
    items = [{"key": f"k{i % 10}".encode(), "value": f"v{i:04d}".encode()} for i in range(1000)]
    deliveries = kh.confluent_produce(srv.bootstrap, topic, items, timeout=60)
    assert all(d.error is None for d in deliveries), [d for d in deliveries if d.error][:3]
    kh.wait_confluent_metadata(srv.bootstrap, topic, 2, timeout=30)
    assert {d.partition for d in deliveries} == {0, 1}
    got = kh.confluent_consume_all(srv.bootstrap, topic, [0, 1], expected=1000, timeout=60)
    assert sorted(r.value for r in got) == sorted(it["value"] for it in items)
    kh.assert_contiguous_offsets(got)


def test_create_and_delete_topics(kafscale):
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    boot = kafscale.bootstrap
    admin = AdminClient({"bootstrap.servers": boot})
    topic = f"admin-{uuid.uuid4().hex[:8]}"
    kh.confluent_create_topic(boot, topic, 2)

    # creating it again fails with TOPIC_ALREADY_EXISTS
    fut = admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)],
                              operation_timeout=30)[topic]
    with pytest.raises(KafkaException) as exc:
        fut.result(timeout=30)
    assert exc.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS, exc.value

    deliveries = kh.confluent_produce(boot, topic, [{"key": b"k", "value": b"x"}] * 10)
    assert all(d.error is None for d in deliveries)

    admin.delete_topics([topic], operation_timeout=30)[topic].result(timeout=30)
    kh.wait_for(lambda: topic not in kh.confluent_list_topics(boot), 30, what=f"{topic} to disappear")

    # re-created under the same name it starts empty
    kh.confluent_create_topic(boot, topic, 1)
    assert kh.confluent_watermarks(boot, topic, [0]) == {0: (0, 0)}
    (d,) = kh.confluent_produce(boot, topic, [{"key": b"k", "value": b"fresh"}])
    assert (d.error, d.partition, d.offset) == (None, 0, 0)

"""Topic configs in a distributed cluster (DynamoDB Local and moto's S3, see
distributed.py): alters sent at once through two ingest gateways — two
processes with their own topic caches, racing on the same DynamoDB item — all
land, and every gateway describes the same configs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

# The distributed suite's fixtures (DynamoDB Local, moto, a cluster factory).
from test_distributed import cluster, ddb_endpoint, moto  # noqa: F401
from test_topic_configs import DEFAULTS, VALUES, create, describe, incremental, topic_name

pytestmark = pytest.mark.deadline(300)


def test_alters_through_two_gateways_lose_no_update(cluster):  # noqa: F811
    from confluent_kafka.admin import AdminClient

    c = cluster(shards=1).start(indexers=1, ingests=2, fetches=1)
    gateways = [*c.ingests, *c.fetches]
    admins = [AdminClient({"bootstrap.servers": g.bootstrap}) for g in gateways]
    name = topic_name("cfg-dist")
    create(admins[0], name)
    keys = [k for k in VALUES if k not in DEFAULTS or VALUES[k] != DEFAULTS[k]]

    def alter(i_key):
        i, key = i_key
        gateway = c.ingests[i % 2]
        client = AdminClient({"bootstrap.servers": gateway.bootstrap})
        incremental(client, name, [(key, "SET", VALUES[key])]).result(timeout=30)

    with ThreadPoolExecutor(max_workers=len(keys)) as pool:
        list(pool.map(alter, enumerate(keys)))
    want = {k: VALUES[k] for k in keys}
    for admin in admins:
        configs = describe(admin, name)
        assert {k: configs[k] for k in keys} == want


def test_an_alter_through_one_gateway_is_described_at_once_by_another(cluster):  # noqa: F811
    from confluent_kafka.admin import AdminClient

    c = cluster(shards=1).start(indexers=1, ingests=2, fetches=0)
    first, second = (AdminClient({"bootstrap.servers": g.bootstrap}) for g in c.ingests)
    name = topic_name("cfg-rw")
    create(first, name)
    for value in ("1000", "2000", "3000"):
        assert describe(first, name)["retention.ms"] != value  # the topic is in first's cache
        incremental(second, name, [("retention.ms", "SET", value)]).result(timeout=30)
        assert describe(first, name)["retention.ms"] == value

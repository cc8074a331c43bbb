"""SCRAM credential management through confluent-kafka's AdminClient (librdkafka):
AlterUserScramCredentials (upsertions and deletions; librdkafka salts the password itself
and sends only the SaltedPassword) and DescribeUserScramCredentials (all users, named
users), Kafka's per-user error codes for refused alterations and unknown users, and the
credentials surviving a restart (they live in the metadata store); in a distributed
cluster on DynamoDB, every gateway sees the same users.
"""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

# The distributed suite's fixtures (DynamoDB Local, moto, a cluster factory).
from test_distributed import cluster, ddb_endpoint, moto  # noqa: F401

SHA256 = ScramMechanism.SCRAM_SHA_256
SHA512 = ScramMechanism.SCRAM_SHA_512
TIMEOUT_S = 30


def admin_for(server) -> AdminClient:
    return AdminClient({"bootstrap.servers": server.bootstrap})


def upsert(user: str, mechanism: ScramMechanism, iterations: int, password: bytes = b"pw",
           salt: bytes | None = None) -> UserScramCredentialUpsertion:
    return UserScramCredentialUpsertion(user, ScramCredentialInfo(mechanism, iterations),
                                        password, salt)


def alter(admin: AdminClient, alterations) -> dict[str, int]:
    """Each user's outcome: 0 or the Kafka error code."""
    outcomes = {}
    for user, future in admin.alter_user_scram_credentials(alterations).items():
        try:
            future.result(timeout=TIMEOUT_S)
            outcomes[user] = 0
        except KafkaException as e:
            outcomes[user] = e.args[0].code()
    return outcomes


def described(admin: AdminClient) -> dict[str, list[tuple[ScramMechanism, int]]]:
    """Every user's (mechanism, iterations), as DescribeUserScramCredentials lists them."""
    every = admin.describe_user_scram_credentials().result(timeout=TIMEOUT_S)
    return {user: sorted((i.mechanism, i.iterations) for i in d.scram_credential_infos)
            for user, d in every.items()}


def test_upsert_describe_delete_and_restart(kafscale):
    admin = admin_for(kafscale)
    assert described(admin) == {}
    outcomes = alter(admin, [
        upsert("alice", SHA256, 4096),
        upsert("alice", SHA512, 8192, salt=b"0123456789abcdef"),
        upsert("bob", SHA512, 16384),
    ])
    assert outcomes == {"alice": 0, "bob": 0}
    everyone = {"alice": [(SHA256, 4096), (SHA512, 8192)], "bob": [(SHA512, 16384)]}
    assert described(admin) == everyone

    named = admin.describe_user_scram_credentials(["bob", "nobody"])
    bob = named["bob"].result(timeout=TIMEOUT_S)
    assert bob.user == "bob"
    assert [(i.mechanism, i.iterations) for i in bob.scram_credential_infos] == [(SHA512, 16384)]
    with pytest.raises(KafkaException) as missing:
        named["nobody"].result(timeout=TIMEOUT_S)
    assert missing.value.args[0].code() == KafkaError.RESOURCE_NOT_FOUND

    kafscale.restart()
    admin = admin_for(kafscale)
    assert described(admin) == everyone

    # A new password replaces the old credential of that mechanism.
    assert alter(admin, [upsert("bob", SHA512, 4096, password=b"new")]) == {"bob": 0}
    assert alter(admin, [UserScramCredentialDeletion("alice", SHA256)]) == {"alice": 0}
    assert described(admin) == {"alice": [(SHA512, 8192)], "bob": [(SHA512, 4096)]}
    assert alter(admin, [UserScramCredentialDeletion("alice", SHA512),
                         UserScramCredentialDeletion("bob", SHA512)]) == {"alice": 0, "bob": 0}
    assert described(admin) == {}


def test_refused_alterations_change_nothing_for_their_user(kafscale):
    admin = admin_for(kafscale)
    assert alter(admin, [upsert("carol", SHA256, 4096)]) == {"carol": 0}
    outcomes = alter(admin, [
        upsert("few", SHA256, 4095),
        upsert("many", SHA512, 16385),
        UserScramCredentialDeletion("ghost", SHA256),
        # One user and mechanism twice in one request: the user's other change is refused too.
        upsert("carol", SHA512, 4096),
        UserScramCredentialDeletion("carol", SHA512),
        upsert("dave", SHA256, 4096),
    ])
    assert outcomes == {
        "few": KafkaError.UNACCEPTABLE_CREDENTIAL,
        "many": KafkaError.UNACCEPTABLE_CREDENTIAL,
        "ghost": KafkaError.RESOURCE_NOT_FOUND,
        "carol": KafkaError.DUPLICATE_RESOURCE,
        "dave": 0,
    }
    assert described(admin) == {"carol": [(SHA256, 4096)], "dave": [(SHA256, 4096)]}


def test_credentials_are_shared_by_every_gateway_of_a_cluster(cluster):  # noqa: F811
    """On DynamoDB: a user created through one ingest gateway is described by the other
    gateways at once, and deleted through a fetch gateway."""
    c = cluster(shards=1).start(indexers=1, ingests=2, fetches=1)
    admins = [admin_for(g) for g in (*c.ingests, *c.fetches)]
    assert alter(admins[0], [upsert("erin", SHA512, 4096)]) == {"erin": 0}
    for admin in admins:
        assert described(admin) == {"erin": [(SHA512, 4096)]}
    assert alter(admins[2], [UserScramCredentialDeletion("erin", SHA512)]) == {"erin": 0}
    for admin in admins:
        assert described(admin) == {}

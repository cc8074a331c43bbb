"""The Terraform module (infra/terraform), offline: every .tf file parses with python-hcl2
(checkov alone exits 0 on a syntax error); the table is the one the DynamoDB backend creates;
the bucket never expires data; and each tier's IAM policy grants exactly the S3 and DynamoDB
actions that tier's code sends.

How the last one is derived, from the code rather than from a list kept beside it:
1. The AWS SDK requests each backend sends are read from its source
   (shared/src/object_store/s3.rs, shared/src/meta_store/dynamodb.rs: `client.<op>()`, and
   the item kinds of TransactWriteItems); each must have an entry in SDK_TO_IAM, so a new
   request cannot slip in unmapped.
2. Which store operations a tier's code calls is found in that tier's sources: object-store
   calls (`store.put(`, `.get_range(`, ...) and metadata writes (`WriteOp::Put/Delete/Check`,
   directly or through the catalog methods it calls, transitively).
3. Store operation -> SDK requests (TRAIT_TO_SDK, checked against step 1) -> IAM actions
   must equal iam.tf's local.tier_actions for that tier.
"""

from __future__ import annotations

import re
from pathlib import Path

import hcl2
import pytest

import tools

REPO = tools.REPO
TF = tools.TERRAFORM
S3_RS = REPO / "shared/src/object_store/s3.rs"
DYNAMO_RS = REPO / "shared/src/meta_store/dynamodb.rs"
CATALOG_RS = REPO / "shared/src/catalog.rs"

# Every request the backends can send, and the IAM action that authorises it.
SDK_TO_IAM = {
    # S3
    "put_object": "s3:PutObject",
    "create_multipart_upload": "s3:PutObject",
    "upload_part": "s3:PutObject",
    "complete_multipart_upload": "s3:PutObject",
    "abort_multipart_upload": "s3:AbortMultipartUpload",
    "get_object": "s3:GetObject",
    "head_object": "s3:GetObject",
    "list_objects_v2": "s3:ListBucket",
    "delete_object": "s3:DeleteObject",
    "delete_objects": "s3:DeleteObject",
    "head_bucket": "s3:ListBucket",
    "create_bucket": "s3:CreateBucket",
    # DynamoDB (TransactWriteItems has no action of its own: its items are authorised one by one)
    "get_item": "dynamodb:GetItem",
    "query": "dynamodb:Query",
    "update_item": "dynamodb:UpdateItem",
    "delete_item": "dynamodb:DeleteItem",
    "transact.update": "dynamodb:UpdateItem",
    "transact.delete": "dynamodb:DeleteItem",
    "transact.condition_check": "dynamodb:ConditionCheckItem",
    "describe_table": "dynamodb:DescribeTable",
    "create_table": "dynamodb:CreateTable",
}

# What each operation of the ObjectStore trait sends in the S3 backend (put: one PutObject,
# or a multipart upload above the threshold, aborted on failure; a retried put that finds an
# object reads it back to see whether it is its own; a refused range read HEADs the object).
TRAIT_TO_SDK = {
    "put": {"put_object", "create_multipart_upload", "upload_part", "complete_multipart_upload",
            "abort_multipart_upload", "get_object"},
    "get": {"get_object"},
    "get_range": {"get_object", "head_object"},
    "get_range_capped": {"get_object", "head_object"},
    "head": {"head_object"},
    "list": {"list_objects_v2"},
    "delete": {"delete_object"},
    "delete_many": {"delete_objects"},
    "create_bucket_if_missing": {"head_bucket", "create_bucket"},
    # MetaStore
    "meta.get": {"get_item"},
    "meta.query": {"query"},
    "meta.Put": {"update_item", "transact.update"},
    "meta.Delete": {"delete_item", "transact.delete"},
    "meta.Check": {"transact.condition_check"},
    "create_table_if_missing": {"describe_table", "create_table"},
}

# The code each tier runs (beside shared's catalog, followed through its method calls).
# ingest and fetch are one code path (src/gateway.rs + src/tiers.rs: both serve every API).
GATEWAY_SOURCES = ["src/gateway.rs", "src/tiers.rs", "src/admin_api", "ingest-gateway/src",
                   "fetch-gateway/src", "shared/src/topic_api.rs", "shared/src/topic_handler.rs",
                   "shared/src/segment.rs", "shared/src/shards.rs"]
TIER_SOURCES = {
    "ingest": GATEWAY_SOURCES,
    "fetch": GATEWAY_SOURCES,
    "indexer": ["src/indexer.rs", "compactor-free-indexer/src", "shared/src/shards.rs"],
    "init": ["src/admin.rs", "shared/src/shards.rs"],
}


def plain(node):
    """python-hcl2 8 keeps string literals quoted ('"pk"') and marks blocks; unquote the
    strings and drop the markers, leaving interpolations ("${var.x}") as they are."""
    if isinstance(node, dict):
        return {plain(k): plain(v) for k, v in node.items() if k not in ("__is_block__", "__comments__")}
    if isinstance(node, list):
        return [plain(v) for v in node]
    if isinstance(node, str) and len(node) >= 2 and node[0] == node[-1] == '"':
        return node[1:-1]
    return node


def load_tf() -> dict[str, dict]:
    return {str(p.relative_to(TF)): plain(hcl2.load(p.open())) for p in sorted(TF.rglob("*.tf"))}


def blocks(parsed: dict, section: str) -> dict[tuple[str, str], dict]:
    """(type, name) -> body of every `resource` or `data` block of one parsed file."""
    out = {}
    for entry in parsed.get(section, []):
        for kind, named in entry.items():
            for name, body in named.items():
                out[(kind, name)] = body
    return out


def non_test(path: Path) -> str:
    """A Rust file without its test modules (which follow the first #[cfg(test)])."""
    return path.read_text().split("#[cfg(test)]", 1)[0]


def tier_code(tier: str) -> str:
    parts = []
    for rel in TIER_SOURCES[tier]:
        p = REPO / rel
        files = sorted(p.rglob("*.rs")) if p.is_dir() else [p]
        # Test modules in files of their own: tests.rs, *_tests.rs.
        parts += [non_test(f) for f in files
                  if not (f.stem == "tests" or f.stem.endswith("_tests"))]
    return "\n".join(parts)


def sdk_requests() -> set[str]:
    s3 = set(re.findall(r"client\s*\.\s*([a-z0-9_]+)\(\)", non_test(S3_RS))) - {"clone"}
    dynamo = set(re.findall(r"client\s*\.\s*([a-z0-9_]+)\(\)", non_test(DYNAMO_RS))) - {"clone"}
    dynamo.discard("transact_write_items")
    dynamo |= {f"transact.{k}" for k in
               re.findall(r"TransactWriteItem::builder\(\)\s*\.\s*([a-z_]+)\(", non_test(DYNAMO_RS))}
    return s3 | dynamo


def catalog_methods() -> dict[str, str]:
    """Catalog method name -> its body (up to the next method)."""
    text = non_test(CATALOG_RS)
    pieces = re.split(r"\n    pub(?:\(crate\))? (?:async )?fn ", text)
    return {p.split("(", 1)[0].split("<", 1)[0]: p for p in pieces[1:]}


def meta_writes(code: str) -> set[str]:
    """WriteOp kinds the code builds, directly or through the catalog methods it calls."""
    methods = catalog_methods()
    kinds = set(re.findall(r"WriteOp::(Put|Delete|Check)\b", code))
    todo = [m for m in methods if re.search(rf"\.{m}\(", code)]
    seen = set()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        kinds |= set(re.findall(r"WriteOp::(Put|Delete|Check)\b", methods[m]))
        todo += [n for n in methods if n not in seen and re.search(rf"\.{n}\(", methods[m])]
    return kinds


def object_store_ops(code: str) -> set[str]:
    ops = set(re.findall(r"\b(?:store|objects)\s*\.\s*(put|get|get_range|get_range_capped|head|list|delete|delete_many)\(", code))
    ops |= set(re.findall(r"\.(get_range|get_range_capped|delete_many|create_bucket_if_missing)\(", code))
    return ops


def expected_actions(tier: str) -> tuple[set[str], set[str]]:
    code = tier_code(tier)
    trait_ops = object_store_ops(code)
    # Every tier reads the catalog (cluster settings: get; leases, topics: query) except init,
    # which only reads and writes the cluster settings item.
    trait_ops |= {"meta.get"} | ({"meta.query"} if tier != "init" else set())
    trait_ops |= {f"meta.{k}" for k in meta_writes(code)}
    if "create_table_if_missing" in code:
        # The table exists (Terraform made it): admin init only describes it.
        trait_ops.add("create_table_if_missing")
    sdk = set().union(*(TRAIT_TO_SDK[o] for o in trait_ops))
    sdk -= {"create_table", "create_bucket", "head_bucket"}  # owned by Terraform, withheld
    actions = {SDK_TO_IAM[r] for r in sdk}
    return ({a for a in actions if a.startswith("s3:")}, {a for a in actions if a.startswith("dynamodb:")})


def test_every_tf_file_parses():
    files = load_tf()
    assert {"main.tf", "iam.tf", "variables.tf", "outputs.tf", "versions.tf",
            "examples/eks/main.tf"} <= set(files)


def test_hcl_parser_rejects_broken_files(tmp_path):
    bad = tmp_path / "bad.tf"
    bad.write_text('resource "aws_s3_bucket" "x" {\n  bucket = "a"\n')
    with pytest.raises(Exception):
        hcl2.load(bad.open())


def test_every_sdk_request_is_mapped():
    found = sdk_requests()
    assert {"put_object", "get_object", "update_item", "transact.condition_check"} <= found, found
    assert found <= set(SDK_TO_IAM), f"unmapped SDK requests: {found - set(SDK_TO_IAM)}"
    assert set().union(*TRAIT_TO_SDK.values()) <= set(SDK_TO_IAM)
    assert found == set().union(*TRAIT_TO_SDK.values()), \
        f"TRAIT_TO_SDK vs the backends: {found ^ set().union(*TRAIT_TO_SDK.values())}"


def test_each_tier_policy_grants_exactly_what_its_code_calls():
    tier_actions = next(b["locals"] for b in [load_tf()["iam.tf"]] if "locals" in b)[0]["tier_actions"]
    assert set(tier_actions) == set(TIER_SOURCES)
    report = {}
    for tier in TIER_SOURCES:
        s3, dynamo = expected_actions(tier)
        granted = tier_actions[tier]
        assert set(granted["s3"]) == s3, (tier, sorted(granted["s3"]), sorted(s3))
        assert set(granted["dynamodb"]) == dynamo, (tier, sorted(granted["dynamodb"]), sorted(dynamo))
        report[tier] = sorted(s3 | dynamo)
    # The facts the README states, as derived from the code:
    assert report["indexer"] == ["dynamodb:ConditionCheckItem", "dynamodb:DeleteItem",
                                 "dynamodb:GetItem", "dynamodb:Query", "dynamodb:UpdateItem",
                                 "s3:DeleteObject", "s3:ListBucket"]
    assert report["ingest"] == report["fetch"]
    print(report)


def test_policies_use_only_the_tier_table():
    """The policy documents take their actions from local.tier_actions and nothing else
    (besides KMS through S3/DynamoDB when a key is given); local.bucket_actions only sorts
    them into the bucket statement (ListBucket, limited to the segment prefix) and the
    objects statement."""
    iam = load_tf()["iam.tf"]
    tier = blocks(iam, "data")[("aws_iam_policy_document", "tier")]
    text = repr(tier)
    literal_actions = set(re.findall(r"'((?:s3|dynamodb):[A-Z*][A-Za-z*]*)'", text))
    assert not literal_actions, literal_actions
    assert "each.value.s3" in text and "each.value.dynamodb" in text
    # Listing is granted on the bucket and only under the segment prefix.
    statements = {plain(st["content"][0]["sid"]): st["content"][0]
                  for st in tier["dynamic"] for st in [st["statement"]]}
    listing = statements["ListSegments"]
    assert listing["resources"] == ["${aws_s3_bucket.segments.arn}"]
    assert listing["condition"][0]["variable"] == "s3:prefix"
    assert listing["condition"][0]["values"] == ["${var.s3_prefix}segments/*"]
    assert statements["SegmentObjects"]["resources"] == ["${local.objects_arn}"]


def test_table_matches_the_backend():
    code = DYNAMO_RS.read_text()
    pk = re.search(r'const PK: &str = "([^"]+)"', code).group(1)
    sk = re.search(r'const SK: &str = "([^"]+)"', code).group(1)
    assert "ScalarAttributeType::S" in code and "BillingMode::PayPerRequest" in code
    assert 'format!("{prefix}kafscale")' in code
    main = load_tf()["main.tf"]
    table = blocks(main, "resource")[("aws_dynamodb_table", "meta")]
    assert table["hash_key"] == pk and table["range_key"] == sk
    assert sorted((a["name"], a["type"]) for a in table["attribute"]) == [(pk, "S"), (sk, "S")]
    assert table["billing_mode"] == "PAY_PER_REQUEST"
    assert table["point_in_time_recovery"][0]["enabled"] is True
    assert table["deletion_protection_enabled"] == "${var.deletion_protection}"
    assert "global_secondary_index" not in table and "local_secondary_index" not in table
    assert table["name"] == "${local.table_name}"
    assert '"${var.table_prefix}kafscale"' in (TF / "main.tf").read_text()


def test_bucket_never_expires_data_and_is_locked_down():
    main = load_tf()["main.tf"]
    res = blocks(main, "resource")
    lifecycle = res[("aws_s3_bucket_lifecycle_configuration", "segments")]
    [rule] = lifecycle["rule"]
    assert set(rule) - {"id", "status", "filter"} == {"abort_incomplete_multipart_upload"}, rule
    pab = res[("aws_s3_bucket_public_access_block", "segments")]
    assert all(pab[k] is True for k in ("block_public_acls", "block_public_policy",
                                        "ignore_public_acls", "restrict_public_buckets"))
    assert ("aws_s3_bucket_server_side_encryption_configuration", "segments") in res
    assert ("aws_s3_bucket_versioning", "segments") not in res
    [stmt] = blocks(main, "data")[("aws_iam_policy_document", "tls_only")]["statement"]
    assert stmt["effect"] == "Deny" and stmt["condition"][0]["variable"] == "aws:SecureTransport"
    assert stmt["condition"][0]["values"] == ["false"]


def test_roles_trust_the_charts_service_accounts():
    """IRSA subjects are system:serviceaccount:<namespace>:<the chart's SA name>, and the
    defaults equal what the chart renders for release "kafscale"."""
    iam = (TF / "iam.tf").read_text()
    assert "system:serviceaccount:${var.kubernetes_namespace}:${var.service_accounts[each.key]}" in iam
    variables = {list(v)[0]: list(v.values())[0] for v in load_tf()["variables.tf"]["variable"]}
    defaults = variables["service_accounts"]["default"]
    objs = tools.render(tools.CHART / "ci" / "hpa-values.yaml")
    rendered = {o["metadata"]["name"] for o in tools.by_kind(objs, "ServiceAccount")}
    assert set(defaults.values()) == rendered, (defaults, rendered)


def test_example_installs_this_chart_with_the_modules_values():
    """examples/eks points the helm provider at the chart in this repository, passes the
    module's helm_values, and names the ServiceAccounts as the chart does for its release."""
    example = load_tf()["examples/eks/main.tf"]
    release = blocks(example, "resource")[("helm_release", "kafscale")]
    chart = release["chart"].replace("${path.module}", str(TF / "examples" / "eks"))
    assert (Path(chart).resolve() / "Chart.yaml").exists(), chart
    assert Path(chart).resolve() == tools.CHART
    assert "${yamlencode(module.kafscale.helm_values)}" in release["values"]
    module = example["module"][0]["kafscale"]
    assert module["source"] == "../.." and module["service_accounts"] == "${local.service_accounts}"
    text = (TF / "examples" / "eks" / "main.tf").read_text()
    assert '"${var.release_name}-${tier}"' in text
    variables = {list(v)[0]: list(v.values())[0] for v in load_tf()["examples/eks/variables.tf"]["variable"]}
    release_name = variables["release_name"]["default"]
    objs = tools.render(tools.CHART / "ci" / "hpa-values.yaml")  # release "kafscale"
    assert release_name == tools.RELEASE
    assert {f"{release_name}-{t}" for t in ("ingest", "fetch", "indexer", "init")} == \
        {o["metadata"]["name"] for o in tools.by_kind(objs, "ServiceAccount")}

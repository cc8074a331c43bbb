"""The Helm chart (infra/helm/kafscale), offline: `helm lint` and `helm template` with the
default values and every values file in the chart's ci/ folder (HPA form, KEDA form, fixed
replicas, standalone); every rendered manifest validated by `kubernetes-validate --strict`
against Kubernetes 1.35, and the custom resources (KEDA ScaledObject, ServiceMonitor,
PrometheusRule) by their projects' own schemas (types and required fields: validate_crs.mjs;
unknown fields: crd_fields.py); then what the chart promises: one
autoscaler per tier on that tier's own exported metric, never more indexers than shards, the
fetch pods' own addresses for FindCoordinator, hardened pods."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

import crd_fields
import tools

CORE_KINDS = {"Deployment", "StatefulSet", "Job", "Service", "ServiceAccount", "ConfigMap",
              "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy"}
CUSTOM_KINDS = {"ScaledObject", "ServiceMonitor", "PrometheusRule"}
SIGNALS = {"ingest": "kafscale_produce_bytes_total", "fetch": "kafscale_fetch_bytes_total",
           "indexer": "kafscale_indexer_commit_queue_depth"}


def exported_metric_names() -> set[str]:
    """Every metric the code exports (docs/operations.md's table, which a unit test in
    shared/src/metrics.rs keeps complete), with a histogram's _bucket/_sum/_count series."""
    text = (tools.REPO / "docs" / "operations.md").read_text()
    names = set()
    for name, kind in re.findall(r"^\| `(kafscale_[a-z0-9_]+)` \| (\w+) \|", text, re.M):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    assert "kafscale_produce_bytes_total" in names, "docs/operations.md's metrics table moved"
    return names


@pytest.fixture(scope="module", params=tools.CI_VALUES, ids=lambda p: p.stem)
def rendered(request):
    return request.param, tools.render(request.param)


def test_lint_default_and_every_values_file():
    tools.run([tools.helm(), "lint", str(tools.CHART), "--strict", "--set", "storage.s3.bucket=b"])
    for values in tools.CI_VALUES:
        tools.run([tools.helm(), "lint", str(tools.CHART), "--strict", "-f", str(values)])


def test_default_values_need_a_bucket():
    out = tools.template(check=False)
    assert out.returncode != 0 and "storage.s3.bucket is required" in out.stderr, out.stderr


def test_manifests_validate_strictly(rendered, tmp_path):
    values, objects = rendered
    kinds = {o["kind"] for o in objects}
    assert kinds <= CORE_KINDS | CUSTOM_KINDS, kinds - CORE_KINDS - CUSTOM_KINDS
    core = [o for o in objects if o["kind"] in CORE_KINDS]
    files = []
    for i, obj in enumerate(core):
        path = tmp_path / f"{i:02d}-{obj['kind']}.yaml"
        path.write_text(yaml.safe_dump(obj))
        files.append(str(path))
    out = tools.run([*tools.KUBERNETES_VALIDATE, "-k", tools.KUBERNETES_VERSION, "--strict", *files],
                    check=False)
    assert out.returncode == 0, f"{values.name}:\n{out.stdout}\n{out.stderr}"
    assert out.stdout.count(" passed for resource ") == len(files), out.stdout


def test_strict_validation_catches_a_misspelt_field(tmp_path):
    """The validator is not a no-op: an unknown field in a Deployment fails --strict."""
    deploy = tools.one(tools.render(tools.CHART / "ci" / "default-values.yaml"), "Deployment",
                       "kafscale-ingest")
    deploy["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(deploy))
    out = tools.run([*tools.KUBERNETES_VALIDATE, "-k", tools.KUBERNETES_VERSION, "--strict", str(path)],
                    check=False)
    assert out.returncode != 0 and "livenessprobe" in out.stdout + out.stderr, out.stdout


def validate_custom(objects: list[dict]) -> subprocess.CompletedProcess:
    return subprocess.run(["node", str(tools.REPO / "tests" / "infra" / "validate_crs.mjs"),
                           str(tools.models_dir())], input=json.dumps(objects),
                          capture_output=True, text=True, timeout=120)


def test_custom_resources_match_their_schemas(rendered):
    values, objects = rendered
    custom = [o for o in objects if o["kind"] in CUSTOM_KINDS]
    if not custom:
        # Without monitoring and KEDA the chart needs no CRDs at all.
        assert values.stem in ("default-values", "fixed-values"), values.name
        return
    out = validate_custom(custom)
    assert out.returncode == 0, f"{values.name}:\n{out.stdout}\n{out.stderr}"
    assert out.stdout.count("OK ") == len(custom), out.stdout
    for obj in custom:
        assert crd_fields.unknown_fields(obj, tools.models_dir()) == [], obj["metadata"]["name"]


def test_custom_resource_validation_catches_errors():
    keda = tools.render(tools.CHART / "ci" / "keda-values.yaml")
    so = tools.one(keda, "ScaledObject", "kafscale-indexer")
    so["spec"]["minReplicaCount"] = "two"
    del so["spec"]["triggers"][0]["type"]
    out = validate_custom([so])
    assert out.returncode == 1 and "INVALID ScaledObject" in out.stdout, out.stdout
    # Unknown fields, as kubectl --validate=strict would report them.
    rule = tools.one(keda, "PrometheusRule", "kafscale")
    rule["spec"]["groups"][0]["rules"][0]["expression"] = rule["spec"]["groups"][0]["rules"][0].pop("expr")
    so = tools.one(keda, "ScaledObject", "kafscale-fetch")
    so["spec"]["pollingIntervall"] = 30
    assert crd_fields.unknown_fields(rule, tools.models_dir()) == [
        "PrometheusRule.spec.groups[0].rules[0].expression: not a field of "
        "IComGithubPrometheusOperatorPrometheusOperatorPkgApisMonitoringV1Rule"]
    assert crd_fields.unknown_fields(so, tools.models_dir()) == [
        "ScaledObject.spec.pollingIntervall: not a field of "
        "IComGithubKedacoreKedaV2ApisKedaV1alpha1ScaledObjectSpec"]


def test_render_sets():
    """Which objects each form renders."""
    def kinds(values):
        objs = tools.render(tools.CHART / "ci" / values)
        return sorted({(o["kind"], o["metadata"]["name"]) for o in objs})

    hpa = kinds("hpa-values.yaml")
    for tier in ("ingest", "fetch", "indexer"):
        assert ("Deployment", f"kafscale-{tier}") in hpa
        assert ("HorizontalPodAutoscaler", f"kafscale-{tier}") in hpa
        assert ("PodDisruptionBudget", f"kafscale-{tier}") in hpa
        assert ("ServiceAccount", f"kafscale-{tier}") in hpa
    for svc in ("kafscale-ingest", "kafscale-fetch", "kafscale-fetch-headless", "kafscale-indexer"):
        assert ("Service", svc) in hpa
    assert ("Job", "kafscale-init") in hpa and ("ConfigMap", "kafscale-adapter-rules") in hpa
    assert not [k for k in hpa if k[0] == "ScaledObject"]
    keda = kinds("keda-values.yaml")
    assert [k for k in keda if k[0] == "ScaledObject"] == [
        ("ScaledObject", f"kafscale-{t}") for t in ("fetch", "indexer", "ingest")]
    assert not [k for k in keda if k[0] in ("HorizontalPodAutoscaler", "ConfigMap")]
    fixed = tools.render(tools.CHART / "ci" / "fixed-values.yaml")
    assert not tools.by_kind(fixed, "HorizontalPodAutoscaler")
    assert tools.one(fixed, "Deployment", "kafscale-ingest")["spec"]["replicas"] == 3
    standalone = kinds("standalone-values.yaml")
    assert ("StatefulSet", "kafscale") in standalone
    assert not [k for k in standalone if k[0] in ("Deployment", "Job", "HorizontalPodAutoscaler")]
    sts = tools.one(tools.render(tools.CHART / "ci" / "standalone-values.yaml"), "StatefulSet", "kafscale")
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "50Gi"


def test_each_tier_scales_on_its_own_exported_metric():
    exported = exported_metric_names()
    hpa = tools.render(tools.CHART / "ci" / "hpa-values.yaml")
    rules = yaml.safe_load(tools.one(hpa, "ConfigMap", "kafscale-adapter-rules")["data"]["config.yaml"])["rules"]
    served = {}
    for rule in rules:
        series = rule["seriesQuery"].split("{")[0]
        assert series in exported, series
        assert re.fullmatch(rf"\^{series}\$", rule["name"]["matches"])
        served[rule["name"]["as"]] = series
    for tier, series in SIGNALS.items():
        h = tools.one(hpa, "HorizontalPodAutoscaler", f"kafscale-{tier}")
        assert h["spec"]["scaleTargetRef"]["name"] == f"kafscale-{tier}"
        [metric] = [m for m in h["spec"]["metrics"] if m["type"] != "Resource"]
        assert metric["type"] == "Pods" and metric["pods"]["target"]["type"] == "AverageValue"
        # Besides the tier's own signal, at most CPU as a fallback (ci/hpa-values: ingest).
        fallback = [m for m in h["spec"]["metrics"] if m["type"] == "Resource"]
        assert [m["resource"]["name"] for m in fallback] == (["cpu"] if tier == "ingest" else [])
        assert served[metric["pods"]["metric"]["name"]] == series, (tier, metric)
        behavior = h["spec"]["behavior"]
        assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300
        assert behavior["scaleUp"]["stabilizationWindowSeconds"] > 0

    keda = tools.render(tools.CHART / "ci" / "keda-values.yaml")
    for tier, series in SIGNALS.items():
        so = tools.one(keda, "ScaledObject", f"kafscale-{tier}")
        [trigger] = [t for t in so["spec"]["triggers"] if t["type"] != "cpu"]
        assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
        cpu = [t for t in so["spec"]["triggers"] if t["type"] == "cpu"]
        assert [t["metadata"]["value"] for t in cpu] == (["75"] if tier == "fetch" else [])
        names = set(re.findall(r"kafscale_[a-z0-9_]+", trigger["metadata"]["query"]))
        assert names == {series}, (tier, trigger["metadata"]["query"])
        assert f'job="{tier}"' in trigger["metadata"]["query"]
        assert float(trigger["metadata"]["threshold"]) > 0


def test_indexer_never_scales_above_the_shard_count():
    out = tools.template(tools.CHART / "ci" / "keda-values.yaml", "indexer.autoscaling.maxReplicas=9",
                         check=False)
    assert out.returncode != 0 and "must not exceed storage.shards" in out.stderr, out.stderr
    out = tools.template(tools.CHART / "ci" / "fixed-values.yaml", "indexer.replicas=5", check=False)
    assert out.returncode != 0 and "must not exceed storage.shards" in out.stderr, out.stderr
    for values in tools.CI_VALUES:
        objs = tools.render(values)
        shards = yaml.safe_load(values.read_text()).get("storage", {}).get("shards", 16)
        for o in objs:
            if o["metadata"]["name"].endswith("-indexer") and o["kind"] == "HorizontalPodAutoscaler":
                assert o["spec"]["maxReplicas"] <= shards
            if o["metadata"]["name"].endswith("-indexer") and o["kind"] == "ScaledObject":
                assert o["spec"]["maxReplicaCount"] <= shards


def test_schema_refuses_unknown_and_mistyped_values():
    for bad in ("ingest.replicass=2", "autoscaling.mode=cpu", "indexer.autoscaling.targetPerPod=-1"):
        out = tools.template(tools.CHART / "ci" / "default-values.yaml", bad, check=False)
        assert out.returncode != 0 and "schema" in out.stderr, (bad, out.stderr)


def test_client_services_prefer_the_clients_zone():
    """Kafka clients reach the gateways through the ingest and fetch Services; connections
    that cross zones cost $0.02 per GiB (docs/cost.md), so those Services ask for endpoints
    in the client's zone. An empty value leaves the cluster's default; others are refused."""
    values = tools.CHART / "ci" / "default-values.yaml"
    objs = tools.render(values)
    for tier in ("ingest", "fetch"):
        assert tools.one(objs, "Service", f"kafscale-{tier}")["spec"]["trafficDistribution"] == "PreferClose"
    for headless in ("kafscale-fetch-headless", "kafscale-indexer"):
        assert "trafficDistribution" not in tools.one(objs, "Service", headless)["spec"]
    objs = tools.render(values, "ingest.service.trafficDistribution=")
    assert "trafficDistribution" not in tools.one(objs, "Service", "kafscale-ingest")["spec"]
    assert tools.one(objs, "Service", "kafscale-fetch")["spec"]["trafficDistribution"] == "PreferClose"
    out = tools.template(values, "fetch.service.trafficDistribution=Anywhere", check=False)
    assert out.returncode != 0 and "schema" in out.stderr, out.stderr


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_addresses_and_probes():
    objs = tools.render(tools.CHART / "ci" / "hpa-values.yaml")
    fetch = tools.one(objs, "Deployment", "kafscale-fetch")["spec"]["template"]["spec"]["containers"][0]
    env = env_of(fetch)
    assert env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    # FindCoordinator names this pod; Metadata names the Service.
    assert env["KAFSCALE_COORDINATOR_ADDR"] == "$(POD_IP):9092"
    assert env["KAFSCALE_ADVERTISED_ADDR"] == "kafscale-fetch.kafscale.svc:9092"
    headless = tools.one(objs, "Service", "kafscale-fetch-headless")["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    ingest = tools.one(objs, "Deployment", "kafscale-ingest")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(ingest)["KAFSCALE_ADVERTISED_ADDR"] == "kafscale-ingest.kafscale.svc:9092"
    indexer = tools.one(objs, "Deployment", "kafscale-indexer")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(indexer)["KAFSCALE_ADVERTISED_ADDR"] == "$(POD_IP):9094"
    for c in (fetch, ingest, indexer):
        # $(POD_IP) expands only if POD_IP is defined earlier in the list.
        names = [e["name"] for e in c["env"]]
        assert names.index("POD_IP") == 0
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["readinessProbe"]["httpGet"]["port"] == "http"
        assert env_of(c)["KAFSCALE_S3_BUCKET"] == "kafscale-prod"
        assert "@sha256:" in c["image"]


# The admin CLI's connection flags, whose variables do not follow the KAFSCALE_FLAG rule.
ADMIN_CLI_FLAGS = {"KAFSCALE_ADMIN_URL": "--url", "KAFSCALE_ADMIN_TOKEN": "--token",
                   "KAFSCALE_ADMIN_TLS_CA": "--tls-ca"}


def test_flags_exist_in_the_binary():
    """Every KAFSCALE_* variable the chart sets, with every values file, is a flag of that
    command (`kafscale <mode> --help` lists `--flag` for KAFSCALE_FLAG; the admin CLI's
    connection variables are --url, --token and --tls-ca); skipped without a built binary."""
    import os

    binary = os.environ.get("KAFSCALE_BIN")
    if not binary or not os.path.exists(binary):
        pytest.skip("KAFSCALE_BIN not set")
    for values in tools.CI_VALUES:
        for o in tools.render(values):
            if o["kind"] not in ("Deployment", "StatefulSet", "Job"):
                continue
            spec = o["spec"]["template"]["spec"]
            for c in spec.get("initContainers", []) + spec["containers"]:
                args = c["args"]
                command = args[:1] if args[0] != "admin" else args[:3] if args[1] == "users" else args[:2]
                helptext = tools.run([binary, *command, "--help"]).stdout
                for name in env_of(c):
                    if name.startswith("KAFSCALE_"):
                        flag = ADMIN_CLI_FLAGS.get(name) if args[0] == "admin" else None
                        flag = flag or "--" + name.removeprefix("KAFSCALE_").lower().replace("_", "-")
                        assert flag in helptext, f"{o['metadata']['name']}: {name} is not a flag ({flag})"


def test_topic_defaults_reach_every_process_alike():
    """topicDefaults gives every process the same cluster-level retention (the gateways
    describe it, the indexers enforce it); unset, no variable is set and Kafka's defaults
    apply."""
    def envs(values):
        return [(o["metadata"]["name"], env_of(o["spec"]["template"]["spec"]["containers"][0]))
                for o in tools.render(tools.CHART / "ci" / values)
                if o["kind"] in ("Deployment", "StatefulSet")]
    hpa = envs("hpa-values.yaml")
    assert len(hpa) == 3
    for name, env in hpa:
        assert env["KAFSCALE_DEFAULT_RETENTION_MS"] == "259200000", name
        assert env["KAFSCALE_DEFAULT_RETENTION_BYTES"] == "10737418240", name
    [(name, env)] = envs("standalone-values.yaml")
    assert env["KAFSCALE_DEFAULT_RETENTION_MS"] == "-1", name
    assert "KAFSCALE_DEFAULT_RETENTION_BYTES" not in env, name
    for name, env in envs("default-values.yaml"):
        assert not any(k.startswith("KAFSCALE_DEFAULT_RETENTION") for k in env), name


def test_traces_are_exported_only_when_a_collector_is_set():
    """tracing.otlpEndpoint switches every tier's OTLP export on, with the sampler; without it
    no OTEL_ variable is set (the default values)."""
    def tiers(values):
        return [o for o in tools.render(tools.CHART / "ci" / values)
                if o["kind"] in ("Deployment", "StatefulSet")]
    on = tiers("hpa-values.yaml")
    assert len(on) == 3
    for o in on:
        env = env_of(o["spec"]["template"]["spec"]["containers"][0])
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4318", o["metadata"]["name"]
        assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    for o in tiers("default-values.yaml"):
        env = env_of(o["spec"]["template"]["spec"]["containers"][0])
        assert not any(k.startswith("OTEL_") for k in env), o["metadata"]["name"]


def test_pods_are_hardened():
    for values in tools.CI_VALUES:
        for o in tools.render(values):
            if o["kind"] not in ("Deployment", "StatefulSet", "Job"):
                continue
            spec = o["spec"]["template"]["spec"]
            assert spec["securityContext"]["runAsNonRoot"] is True
            assert spec["securityContext"]["runAsUser"] == 65532
            assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
            assert spec["automountServiceAccountToken"] is False
            for c in spec["containers"]:
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True
                assert sc["allowPrivilegeEscalation"] is False
                assert sc["capabilities"]["drop"] == ["ALL"]
                assert c["resources"]["requests"] and c["resources"]["limits"]
            if o["kind"] == "Deployment" and tools.yaml.safe_load(values.read_text()).get("topologySpread", {}).get("enabled", True):
                keys = [t["topologyKey"] for t in spec["topologySpreadConstraints"]]
                assert keys == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]


def test_irsa_annotations_and_hook_order():
    objs = tools.render(tools.CHART / "ci" / "hpa-values.yaml")
    for tier in ("ingest", "fetch", "indexer", "init"):
        sa = tools.one(objs, "ServiceAccount", f"kafscale-{tier}")
        assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(f"kafscale-prod-{tier}")
    job = tools.one(objs, "Job", "kafscale-init")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["admin", "init"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    init_sa = tools.one(objs, "ServiceAccount", "kafscale-init")
    # The Job's account is a hook created before the Job.
    assert int(init_sa["metadata"]["annotations"]["helm.sh/hook-weight"]) < \
        int(job["metadata"]["annotations"]["helm.sh/hook-weight"])


def test_tool_versions():
    """The tools are the versions the docs name: helm v4 and kubectl v1.35 (kubectl is not
    used by these checks: each of its validations needs an API server)."""
    assert tools.run([tools.helm(), "version", "--short"]).stdout.startswith("v4.")
    assert "v1.35." in tools.run([tools.kubectl(), "version", "--client"]).stdout

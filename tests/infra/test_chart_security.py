"""TLS and SASL in the Helm chart (infra/helm/kafscale, values tls.* and sasl.*), rendered with
real helm: certificates and client CAs come from Secrets mounted as directories (so renewals
reach the pods), every flag points at a file inside such a mount, the probes and the
ServiceMonitor follow the HTTP listeners to HTTPS (the gateways' with tls.http, the indexers'
with tls.internal, which the gateways then call over HTTPS), SASL users are set by a hook Job
whose passwords and token come only from Secrets and which trusts only the gateways' CA over
HTTPS, nothing secret is ever written into a manifest, and the chart's defaults render none
of it. The ci/ files tls-values, https-values, sasl-users-values and standalone-tls-values
also go through test_chart.py's strict validation and checkov."""

from __future__ import annotations

import re

import pytest
import yaml

import tools

CI = tools.CHART / "ci"
TLS = CI / "tls-values.yaml"
USERS = CI / "sasl-users-values.yaml"
HTTPS = CI / "https-values.yaml"
STANDALONE_TLS = CI / "standalone-tls-values.yaml"
KAFKA_TIERS = ("ingest", "fetch")


def workloads(objects: list[dict]) -> dict[str, dict]:
    """Deployments and StatefulSets by name."""
    return {o["metadata"]["name"]: o for o in objects if o["kind"] in ("Deployment", "StatefulSet")}


def pod(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def env_values(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def secret_file(spec: dict, container: dict, path: str) -> tuple[str, str]:
    """(Secret name, key) of the file at `path` in `container`: the mount whose directory
    holds it, that mount's Secret volume, and the item projected to the file's name. Fails if
    the path is not a file of a mounted Secret, or the mount is a subPath (not updated when
    the Secret changes)."""
    mounts = [m for m in container.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert len(mounts) == 1, (path, container.get("volumeMounts"))
    mount = mounts[0]
    assert "subPath" not in mount and "subPathExpr" not in mount, mount
    assert mount.get("readOnly") is True, mount
    [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    secret = volume["secret"]
    rest = path[len(mount["mountPath"].rstrip("/")) + 1:]
    [item] = [i for i in secret["items"] if i["path"] == rest]
    return secret["secretName"], item["key"]


def render_fails(values, *sets: str) -> str:
    out = tools.template(values, *sets, check=False)
    assert out.returncode != 0, f"rendered although it should not: {sets}"
    return out.stderr


def test_kafka_and_http_tls_files_come_from_mounted_secrets():
    objs = workloads(tools.render(TLS))
    for tier in KAFKA_TIERS:
        spec = pod(objs[f"kafscale-{tier}"])
        [c] = spec["containers"]
        env = env_values(c)
        assert secret_file(spec, c, env["KAFSCALE_KAFKA_TLS_CERT"]) == ("kafscale-kafka-tls", "tls.crt"), tier
        assert secret_file(spec, c, env["KAFSCALE_KAFKA_TLS_KEY"]) == ("kafscale-kafka-tls", "tls.key"), tier
        assert secret_file(spec, c, env["KAFSCALE_KAFKA_TLS_CLIENT_CA"]) == ("kafscale-kafka-client-ca", "ca.crt"), tier
        assert secret_file(spec, c, env["KAFSCALE_HTTP_TLS_CERT"]) == ("kafscale-http-tls", "tls.crt"), tier
        assert secret_file(spec, c, env["KAFSCALE_HTTP_TLS_KEY"]) == ("kafscale-http-tls", "tls.key"), tier
        assert env["KAFSCALE_TLS_RELOAD_INTERVAL_MS"] == "30000"
        # No mount of the pod is a subPath: every Secret is a directory the kubelet updates.
        assert all("subPath" not in m for m in c["volumeMounts"]), c["volumeMounts"]
    # Keys of another name (server.pem) are mapped to the same files.
    objs = workloads(tools.render(USERS))
    for tier in KAFKA_TIERS:
        spec = pod(objs[f"kafscale-{tier}"])
        [c] = spec["containers"]
        env = env_values(c)
        assert secret_file(spec, c, env["KAFSCALE_KAFKA_TLS_CERT"]) == ("kafscale-kafka-tls", "server.pem")
        assert secret_file(spec, c, env["KAFSCALE_KAFKA_TLS_KEY"]) == ("kafscale-kafka-tls", "server-key.pem")
        assert "KAFSCALE_KAFKA_TLS_CLIENT_CA" not in env and "KAFSCALE_HTTP_TLS_CERT" not in env
        assert "KAFSCALE_TLS_RELOAD_INTERVAL_MS" not in env


def test_standalone_gets_the_same_tls_and_sasl():
    objs = tools.render(STANDALONE_TLS)
    sts = tools.one(objs, "StatefulSet", "kafscale")
    spec = pod(sts)
    [c] = spec["containers"]
    env = env_values(c)
    assert secret_file(spec, c, env["KAFSCALE_KAFKA_TLS_CERT"]) == ("kafscale-tls", "tls.crt")
    assert secret_file(spec, c, env["KAFSCALE_HTTP_TLS_KEY"]) == ("kafscale-tls", "tls.key")
    assert env["KAFSCALE_SASL_MECHANISMS"] == "SCRAM-SHA-256"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["scheme"] == "HTTPS", probe
    [port] = [p for p in tools.one(objs, "Service", "kafscale")["spec"]["ports"] if p["port"] == 9093]
    assert port["name"] == "https" and port["targetPort"] == "http"
    # caKey "" : Prometheus verifies with its system roots, against the name given.
    [endpoint] = [e for e in tools.one(objs, "ServiceMonitor", "kafscale")["spec"]["endpoints"] if e["port"] == "https"]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"] == {"serverName": "kafscale.example.com"}


def test_probes_services_and_scraping_follow_https():
    objs = tools.render(TLS)
    tiers = workloads(objs)
    for tier in KAFKA_TIERS:
        [c] = pod(tiers[f"kafscale-{tier}"])["containers"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert c[probe]["httpGet"]["scheme"] == "HTTPS", (tier, probe)
            assert c[probe]["httpGet"]["port"] == "http"
    for svc in ("kafscale-ingest", "kafscale-fetch", "kafscale-fetch-headless"):
        ports = {p["port"]: p for p in tools.one(objs, "Service", svc)["spec"]["ports"]}
        assert ports[9093]["name"] == "https" and ports[9093]["targetPort"] == "http", svc
        assert ports[9092]["name"] == "kafka", svc
    # Without tls.internal the indexers keep plain HTTP, whatever tls.http says: no TLS at all.
    indexer = tiers["kafscale-indexer"]
    [c] = pod(indexer)["containers"]
    assert not [n for n in env_values(c) if "TLS" in n or "SASL" in n], env_values(c)
    assert {v["name"] for v in pod(indexer)["volumes"]} == {"tmp", "internal-token"}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert "scheme" not in c[probe]["httpGet"], probe
    assert [p["name"] for p in tools.one(objs, "Service", "kafscale-indexer")["spec"]["ports"]] == ["http"]
    # Prometheus: the indexers on the plain endpoint, the gateways on the HTTPS one, verified
    # with the CA of the serving Secret against the ingest Service's name.
    endpoints = {e["port"]: e for e in tools.one(objs, "ServiceMonitor", "kafscale")["spec"]["endpoints"]}
    assert set(endpoints) == {"http", "https"}
    assert "scheme" not in endpoints["http"]
    assert endpoints["https"]["scheme"] == "https" and endpoints["https"]["path"] == "/metrics"
    assert endpoints["https"]["tlsConfig"] == {"ca": {"secret": {"name": "kafscale-http-tls", "key": "ca.crt"}},
                                               "serverName": "kafscale-ingest.kafscale.svc"}


def test_sasl_settings_reach_every_kafka_listener_alike():
    tiers = workloads(tools.render(TLS))
    envs = [env_values(pod(tiers[f"kafscale-{t}"])["containers"][0]) for t in KAFKA_TIERS]
    for env in envs:
        assert env["KAFSCALE_SASL_MECHANISMS"] == "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN"
        assert env["KAFSCALE_SASL_SESSION_LIFETIME_MS"] == "3600000"
        # PLAIN behind TLS needs no exception; kafscale's default failure delay stays.
        assert "KAFSCALE_SASL_ALLOW_PLAIN_WITHOUT_TLS" not in env
        assert "KAFSCALE_SASL_FAILURE_DELAY_MS" not in env
        assert "KAFSCALE_SASL_AUTHENTICATION_TIMEOUT_MS" not in env
    sasl = [{k: v for k, v in e.items() if "SASL" in k or "TLS" in k} for e in envs]
    assert sasl[0] == sasl[1]
    tiers = workloads(tools.render(USERS))
    for t in KAFKA_TIERS:
        env = env_values(pod(tiers[f"kafscale-{t}"])["containers"][0])
        assert env["KAFSCALE_SASL_MECHANISMS"] == "SCRAM-SHA-512"
        assert env["KAFSCALE_SASL_FAILURE_DELAY_MS"] == "500"
        assert env["KAFSCALE_SASL_AUTHENTICATION_TIMEOUT_MS"] == "5000"
        assert "KAFSCALE_SASL_SESSION_LIFETIME_MS" not in env


def test_plain_without_tls_is_refused_unless_allowed():
    err = render_fails(CI / "default-values.yaml", "sasl.mechanisms={PLAIN}")
    assert "sasl.mechanisms includes PLAIN" in err and "sasl.allowPlainWithoutTls" in err, err
    tiers = workloads(tools.render(CI / "default-values.yaml", "sasl.mechanisms={PLAIN}",
                                   "sasl.allowPlainWithoutTls=true"))
    for t in KAFKA_TIERS:
        env = env_values(pod(tiers[f"kafscale-{t}"])["containers"][0])
        assert env["KAFSCALE_SASL_MECHANISMS"] == "PLAIN"
        assert env["KAFSCALE_SASL_ALLOW_PLAIN_WITHOUT_TLS"] == "true"
        assert "KAFSCALE_KAFKA_TLS_CERT" not in env
    # A client CA without a server certificate would stop kafscale at startup.
    err = render_fails(CI / "default-values.yaml", "tls.kafka.clientCa.secretName=ca")
    assert "tls.kafka.clientCa.secretName needs tls.kafka.secretName" in err, err


def test_users_job_is_a_hook_reading_passwords_and_token_from_secrets():
    objs = tools.render(USERS)
    job = tools.one(objs, "Job", "kafscale-users")
    ann = job["metadata"]["annotations"]
    assert ann["helm.sh/hook"] == "post-install,post-upgrade"
    assert ann["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    spec = pod(job)
    assert spec["restartPolicy"] == "OnFailure" and spec["automountServiceAccountToken"] is False
    sets = spec["initContainers"]
    assert [c["args"][:4] for c in sets] == [["admin", "users", "set", "orders-service"],
                                              ["admin", "users", "set", "billing"]]
    assert sets[0]["args"][4:] == ["--password-file", "/var/run/kafscale/users/0/password",
                                   "--mechanism", "SCRAM-SHA-512", "--iterations", "8192"]
    assert sets[1]["args"][4:] == ["--password-file", "/var/run/kafscale/users/1/password"]
    expected = [("kafscale-user-orders", "password"), ("kafscale-users", "billing-password")]
    for c, secret in zip(sets, expected):
        assert secret_file(spec, c, c["args"][5]) == secret, c["name"]
    assert spec["containers"][0]["args"] == ["admin", "users", "list"]
    for c in containers(spec):
        env = env_values(c)
        assert env["KAFSCALE_ADMIN_URL"] == "http://kafscale-ingest.kafscale.svc:9093", c["name"]
        assert env["KAFSCALE_ADMIN_TOKEN"] == {"secretKeyRef": {"name": "kafscale-admin-token", "key": "token"}}
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert c["resources"]["requests"] and c["resources"]["limits"]
    # Its ServiceAccount is a hook created before it; its NetworkPolicy admits nothing.
    sa = tools.one(objs, "ServiceAccount", "kafscale-users")
    assert spec["serviceAccountName"] == "kafscale-users"
    assert sa["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    assert int(sa["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(ann["helm.sh/hook-weight"])
    assert tools.one(objs, "NetworkPolicy", "kafscale-users")["spec"]["ingress"] == []
    # Standalone: the Job talks to the standalone Service.
    objs = tools.render(CI / "standalone-values.yaml", "adminToken.secretName=admin",
                        "sasl.users[0].name=alice", "sasl.users[0].secretName=alice-pw")
    job = tools.one(objs, "Job", "kafscale-users")
    assert env_values(pod(job)["containers"][0])["KAFSCALE_ADMIN_URL"] == "http://kafscale.kafscale.svc:9093"


def test_users_job_refuses_what_cannot_work():
    user = ("sasl.users[0].name=alice", "sasl.users[0].secretName=alice-pw")
    err = render_fails(CI / "default-values.yaml", *user)
    assert "sasl.users needs adminToken.secretName" in err, err
    # With tls.http the Job must trust one CA: an empty caKey would mean system roots.
    err = render_fails(USERS, "tls.http.secretName=http-tls", "tls.http.caKey=")
    assert "sasl.users with tls.http needs tls.http.caKey" in err, err
    # The old refusal of sasl.users with tls.http is gone.
    out = tools.template(USERS, "tls.http.secretName=http-tls")
    assert "cannot be combined" not in out.stdout + out.stderr
    err = render_fails(USERS, "sasl.users[1].name=orders-service")
    assert 'sasl.users names "orders-service" twice' in err, err


def test_users_job_speaks_https_trusting_only_the_http_ca():
    """With tls.http the Job's admin CLI connects over HTTPS to the name the certificate
    carries (tls.http.serverName, else the gateways' Service) and trusts only the CA under
    tls.http.caKey: a file of the serving Secret, mounted as a directory, without its key."""
    def job_spec(values, *sets):
        return pod(tools.one(tools.render(values, *sets), "Job", "kafscale-users"))

    spec = job_spec(HTTPS)
    [ca_volume] = [v for v in spec["volumes"] if v["name"] == "http-ca"]
    # Only the CA is projected: the Job never sees the gateways' private key.
    assert ca_volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    assert len(containers(spec)) == 2
    for c in containers(spec):
        env = env_values(c)
        assert env["KAFSCALE_ADMIN_URL"] == "https://kafscale-ingest.kafscale.svc:9093", c["name"]
        assert secret_file(spec, c, env["KAFSCALE_ADMIN_TLS_CA"]) == ("kafscale-http-tls", "ca.crt"), c["name"]
    # serverName: the URL's host, the name Prometheus checks too; another CA key follows.
    spec = job_spec(HTTPS, "tls.http.serverName=kafscale-admin.example.internal", "tls.http.caKey=root.pem")
    for c in containers(spec):
        env = env_values(c)
        assert env["KAFSCALE_ADMIN_URL"] == "https://kafscale-admin.example.internal:9093", c["name"]
        assert secret_file(spec, c, env["KAFSCALE_ADMIN_TLS_CA"]) == ("kafscale-http-tls", "root.pem")
    # Standalone: its own Service, or the serverName given.
    standalone = (STANDALONE_TLS, "adminToken.secretName=admin", "sasl.users[0].name=alice",
                  "sasl.users[0].secretName=alice-pw", "tls.http.caKey=ca.crt")
    env = env_values(job_spec(*standalone)["containers"][0])
    assert env["KAFSCALE_ADMIN_URL"] == "https://kafscale.example.com:9093"
    env = env_values(job_spec(*standalone, "tls.http.serverName=")["containers"][0])
    assert env["KAFSCALE_ADMIN_URL"] == "https://kafscale.kafscale.svc:9093"
    # Without tls.http: plain HTTP, no CA.
    spec = job_spec(USERS)
    assert "http-ca" not in {v["name"] for v in spec["volumes"]}
    for c in containers(spec):
        assert "KAFSCALE_ADMIN_TLS_CA" not in env_values(c), c["name"]
        assert env_values(c)["KAFSCALE_ADMIN_URL"].startswith("http://")


def test_indexers_serve_https_and_the_gateways_trust_only_its_ca():
    """tls.internal: the indexers' HTTP listener, probes and scraping on HTTPS with the
    certificate of a Secret mounted as a directory; the gateways get only its CA and check
    every indexer against one name, by default the indexers' own Service."""
    objs = tools.render(HTTPS)
    tiers = workloads(objs)
    spec = pod(tiers["kafscale-indexer"])
    [c] = spec["containers"]
    env = env_values(c)
    assert secret_file(spec, c, env["KAFSCALE_HTTP_TLS_CERT"]) == ("kafscale-internal-tls", "tls.crt")
    assert secret_file(spec, c, env["KAFSCALE_HTTP_TLS_KEY"]) == ("kafscale-internal-tls", "tls.key")
    assert env["KAFSCALE_TLS_RELOAD_INTERVAL_MS"] == "30000"
    # The indexers call nobody and serve no Kafka: no client or Kafka TLS settings.
    assert not [n for n in env if n.startswith(("KAFSCALE_INTERNAL_TLS", "KAFSCALE_KAFKA_TLS"))], env
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": c[probe]["httpGet"]["path"], "port": "http", "scheme": "HTTPS"}, probe
    assert [p["name"] for p in c["ports"]] == ["http"]  # the NetworkPolicy's port stays valid
    indexer_svc = tools.one(objs, "Service", "kafscale-indexer")
    assert [(p["name"], p["port"], p["targetPort"]) for p in indexer_svc["spec"]["ports"]] == [
        ("indexer-https", 9094, "http")]
    default_name = f"{indexer_svc['metadata']['name']}.{indexer_svc['metadata']['namespace']}.svc"
    assert default_name == "kafscale-indexer.kafscale.svc"
    for tier in KAFKA_TIERS:
        spec = pod(tiers[f"kafscale-{tier}"])
        [c] = spec["containers"]
        env = env_values(c)
        assert secret_file(spec, c, env["KAFSCALE_INTERNAL_TLS_CA"]) == ("kafscale-internal-tls", "ca.crt"), tier
        assert env["KAFSCALE_INTERNAL_TLS_SERVER_NAME"] == default_name, tier
        # The gateways' own HTTPS stays tls.http's.
        assert secret_file(spec, c, env["KAFSCALE_HTTP_TLS_CERT"]) == ("kafscale-http-tls", "tls.crt"), tier
        # Of the indexers' Secret the gateways get the CA only, never the key.
        internal = [v["secret"] for v in spec["volumes"]
                    if v.get("secret", {}).get("secretName") == "kafscale-internal-tls"]
        assert internal == [{"secretName": "kafscale-internal-tls", "defaultMode": 0o400,
                             "items": [{"key": "ca.crt", "path": "ca.crt"}]}], tier
    # Prometheus: the indexers over HTTPS with the internal CA and name, the gateways with theirs.
    endpoints = {e["port"]: e for e in tools.one(objs, "ServiceMonitor", "kafscale")["spec"]["endpoints"]}
    assert endpoints["indexer-https"]["scheme"] == "https" and endpoints["indexer-https"]["path"] == "/metrics"
    assert endpoints["indexer-https"]["tlsConfig"] == {
        "ca": {"secret": {"name": "kafscale-internal-tls", "key": "ca.crt"}}, "serverName": default_name}
    assert endpoints["https"]["tlsConfig"]["serverName"] == "kafscale-ingest.kafscale.svc"


def test_internal_tls_keys_and_server_name():
    """Keys of other names map to the same files; serverName replaces the Service's name
    everywhere it is checked; the default follows the release's full name."""
    objs = tools.render(HTTPS, "tls.internal.certKey=server.pem", "tls.internal.keyKey=server-key.pem",
                        "tls.internal.caKey=root.pem", "tls.internal.serverName=indexers.kafscale.internal")
    tiers = workloads(objs)
    spec = pod(tiers["kafscale-indexer"])
    [c] = spec["containers"]
    env = env_values(c)
    assert secret_file(spec, c, env["KAFSCALE_HTTP_TLS_CERT"]) == ("kafscale-internal-tls", "server.pem")
    assert secret_file(spec, c, env["KAFSCALE_HTTP_TLS_KEY"]) == ("kafscale-internal-tls", "server-key.pem")
    for tier in KAFKA_TIERS:
        spec = pod(tiers[f"kafscale-{tier}"])
        [c] = spec["containers"]
        env = env_values(c)
        assert secret_file(spec, c, env["KAFSCALE_INTERNAL_TLS_CA"]) == ("kafscale-internal-tls", "root.pem")
        assert env["KAFSCALE_INTERNAL_TLS_SERVER_NAME"] == "indexers.kafscale.internal"
    [endpoint] = [e for e in tools.one(objs, "ServiceMonitor", "kafscale")["spec"]["endpoints"]
                  if e["port"] == "indexer-https"]
    assert endpoint["tlsConfig"] == {"ca": {"secret": {"name": "kafscale-internal-tls", "key": "root.pem"}},
                                     "serverName": "indexers.kafscale.internal"}
    objs = tools.render(HTTPS, "fullnameOverride=events")
    tools.one(objs, "Service", "events-indexer")
    env = env_values(pod(tools.one(objs, "Deployment", "events-ingest"))["containers"][0])
    assert env["KAFSCALE_INTERNAL_TLS_SERVER_NAME"] == "events-indexer.kafscale.svc"


def test_internal_tls_refuses_an_empty_ca_and_means_nothing_in_standalone():
    err = render_fails(HTTPS, "tls.internal.caKey=")
    assert "tls.internal.caKey must name the key" in err and "never system roots" in err, err
    # Standalone makes no internal calls: like internalToken, tls.internal changes nothing there.
    plain = tools.template(CI / "standalone-values.yaml").stdout
    assert tools.template(CI / "standalone-values.yaml", "tls.internal.secretName=internal-tls",
                          "tls.internal.caKey=").stdout == plain


@pytest.mark.parametrize("bad", [
    "sasl.users[0].password=hunter2",          # no place for a password in values
    "sasl.users[0].iterations=100",
    "sasl.users[0].mechanisms={PLAIN}",
    "sasl.mechanisms={GSSAPI}",
    "sasl.sessionLifetimeMs=500",
    "tls.kafka.certKey=",
    "tls.reloadIntervalMs=10",
    "tls.http.clientCa=x",
    "tls.internal.certKey=",
    "tls.internal.keyKey=",
    "tls.internal.clientCa=x",                 # the gateways present no client certificate
])
def test_schema_refuses_bad_security_values(bad):
    out = tools.template(USERS, bad, check=False)
    assert out.returncode != 0 and "schema" in out.stderr, (bad, out.stderr)


SECRET_LIKE = re.compile(r"TOKEN|PASSWORD|SECRET|KEY$")
# TLS settings that are not files (every other *_TLS_* variable names a certificate, key or CA).
TLS_NON_FILES = {"KAFSCALE_TLS_RELOAD_INTERVAL_MS", "KAFSCALE_INTERNAL_TLS_SERVER_NAME"}


def test_no_secret_is_written_into_any_manifest():
    """Over every ci/ values file: the chart renders no Secret and no PEM block; every
    variable that carries a token or password takes it from a Secret (secretKeyRef) or names
    a file inside a mounted Secret, and so does every certificate, key and CA setting; no
    argument carries one."""
    seen_refs = 0
    seen_files = set()
    for values in tools.CI_VALUES:
        text = tools.template(values).stdout
        assert "-----BEGIN" not in text, values.name
        for o in [d for d in yaml.safe_load_all(text) if d]:
            assert o["kind"] != "Secret", values.name
            if o["kind"] not in ("Deployment", "StatefulSet", "Job"):
                continue
            spec = pod(o)
            for c in containers(spec):
                for e in c.get("env", []):
                    name = e["name"]
                    if name.endswith("_FILE") or ("_TLS_" in name and name not in TLS_NON_FILES):
                        secret_file(spec, c, e["value"])
                        seen_files.add(name)
                    elif SECRET_LIKE.search(name):
                        assert set(e) == {"name", "valueFrom"} and "secretKeyRef" in e["valueFrom"], (values.name, e)
                        seen_refs += 1
                for a in c.get("args", []):
                    assert not re.match(r"--(token|password|password-env)(=|$)", a), (values.name, a)
    assert seen_refs >= 3  # the users Job's containers in sasl-users-values
    # Every kind of file the chart points at was checked by some ci/ file.
    assert {"KAFSCALE_KAFKA_TLS_KEY", "KAFSCALE_KAFKA_TLS_CLIENT_CA", "KAFSCALE_HTTP_TLS_KEY",
            "KAFSCALE_INTERNAL_TLS_CA", "KAFSCALE_ADMIN_TLS_CA", "KAFSCALE_ADMIN_TOKEN_FILE",
            "KAFSCALE_INTERNAL_TOKEN_FILE"} <= seen_files, seen_files


def test_defaults_render_no_tls_sasl_or_users():
    """Without tls.* and sasl.*, nothing of it is rendered: plain HTTP probes, ports named
    http (the indexers' too), no extra volumes, no users Job, one ServiceMonitor endpoint."""
    for values in ("default-values.yaml", "hpa-values.yaml", "standalone-values.yaml"):
        objs = tools.render(CI / values)
        assert not [o for o in objs if o["metadata"]["name"].endswith("-users")], values
        for o in workloads(objs).values():
            [c] = pod(o)["containers"]
            assert not [n for n in env_values(c) if "TLS" in n or "SASL" in n], values
            names = {v["name"] for v in pod(o)["volumes"]}
            assert names <= {"tmp", "admin-token", "internal-token"}, (values, names)
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert set(c[probe]["httpGet"]) == {"path", "port"}, (values, probe)
        for svc in tools.by_kind(objs, "Service"):
            names = [p["name"] for p in svc["spec"]["ports"]]
            assert "https" not in names and "indexer-https" not in names, svc["metadata"]["name"]
        for sm in tools.by_kind(objs, "ServiceMonitor"):
            assert [e["port"] for e in sm["spec"]["endpoints"]] == ["http"]
    # tls.http alone leaves the indexers' port as it was.
    ports = tools.one(tools.render(TLS), "Service", "kafscale-indexer")["spec"]["ports"]
    assert [(p["name"], p["port"]) for p in ports] == [("http", 9094)]

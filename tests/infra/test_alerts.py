"""The chart's alerts (PrometheusRule, rendered with ci/hpa-values.yaml) through promtool
(Debian's prometheus package): `promtool check rules` accepts them, every metric they read
is one the code exports, and `promtool test rules` (alerts_test.yml) fires each alert on
series that cross its threshold and keeps it quiet on series that do not."""

from __future__ import annotations

import re
import shutil

import yaml

import tools
from test_chart import exported_metric_names

ALERTS = {"KafscaleConsumerLagHigh", "KafscaleObjectStoreErrors", "KafscaleMetaStoreErrors",
          "KafscaleCommitLatencyHigh", "KafscaleShardWithoutOwner"}


def rule_groups() -> dict:
    objs = tools.render(tools.CHART / "ci" / "hpa-values.yaml")
    rule = tools.one(objs, "PrometheusRule", "kafscale")
    return {"groups": rule["spec"]["groups"]}


def test_rules_check_and_read_exported_metrics(tmp_path):
    groups = rule_groups()
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(groups))
    out = tools.run([tools.system_tool("promtool", "Debian package prometheus"), "check", "rules", str(path)])
    assert "SUCCESS" in out.stdout, out.stdout
    rules = [r for g in groups["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} == ALERTS
    exported = exported_metric_names()
    for r in rules:
        names = set(re.findall(r"\bkafscale_[a-z0-9_]+", r["expr"]))
        assert names and names <= exported, (r["alert"], names - exported)


def test_every_alert_fires_in_promtool_unit_tests(tmp_path):
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rule_groups()))
    spec = tools.REPO / "tests" / "infra" / "alerts_test.yml"
    shutil.copy(spec, tmp_path / "alerts_test.yml")
    tested = {t["alertname"] for case in yaml.safe_load(spec.read_text())["tests"]
              for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert tested == ALERTS, ALERTS - tested
    out = tools.run([tools.system_tool("promtool", "Debian package prometheus"), "test", "rules",
                     str(tmp_path / "alerts_test.yml")], check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr

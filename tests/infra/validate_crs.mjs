// Validates the chart's custom resources against the schemas of the projects that define them:
// KEDA's ScaledObject and the Prometheus Operator's ServiceMonitor and PrometheusRule, with the
// validators that the npm packages @kubernetes-models/keda and
// @kubernetes-models/prometheus-operator generate from those projects' API types
// (scripts/install-infra-tools.sh installs them). They check types, enums and required fields.
//
//   node validate_crs.mjs <node_modules dir> < objects.json     (a JSON array of objects)
// Prints one line per object; exits 1 if any is invalid or of an unknown kind.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { join } from "node:path";

const modules = process.argv[2];
const models = {
  "keda.sh/v1alpha1/ScaledObject": ["@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject.js", "ScaledObject"],
  "monitoring.coreos.com/v1/ServiceMonitor": ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor.js", "ServiceMonitor"],
  "monitoring.coreos.com/v1/PrometheusRule": ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule.js", "PrometheusRule"],
};

const objects = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;
for (const obj of objects) {
  const key = `${obj.apiVersion}/${obj.kind}`;
  const what = `${obj.kind}/${obj.metadata?.name}`;
  const model = models[key];
  if (!model) {
    console.log(`UNKNOWN ${what}: no schema for ${key}`);
    failed++;
    continue;
  }
  const mod = await import(pathToFileURL(join(modules, model[0])).href);
  try {
    new mod[model[1]](obj).validate();
    console.log(`OK ${what}`);
  } catch (e) {
    console.log(`INVALID ${what}: ${e.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);

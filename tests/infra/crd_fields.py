"""Unknown-field check for custom resources (what `kubectl apply --validate=strict` would
report): the validators in @kubernetes-models/* check types and required fields but accept
any extra key, so a misspelt `pollingIntervall` would pass them. This walks an object along
the TypeScript declarations (.d.ts) the same packages ship, which list every field of every
type, and reports each key that its type does not declare."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

# A member line, 4 spaces in: `"name"?: Type;`, or `"name"?: {` opening a map type.
PROP = re.compile(r'^    "([^"]+)"\??: (.+?);?$')
INTERFACE = re.compile(r"^export interface (\w+)(?: extends ([^{]+))? \{\n(.*?)^\}", re.M | re.S)
ALIASES = re.compile(r"^export type \{([^}]*)\}", re.M)

TOP = {"ScaledObject": "IComGithubKedacoreKedaV2ApisKedaV1alpha1ScaledObject",
       "ServiceMonitor": "IComGithubPrometheusOperatorPrometheusOperatorPkgApisMonitoringV1ServiceMonitor",
       "PrometheusRule": "IComGithubPrometheusOperatorPrometheusOperatorPkgApisMonitoringV1PrometheusRule"}


@lru_cache(maxsize=None)
def declarations(node_modules: str) -> dict[str, dict[str, str]]:
    """Interface name (short and fully qualified) -> {field: type}, with the fields of the
    interfaces it extends (a ServiceMonitor endpoint's tlsConfig is declared on its base)."""
    types: dict[str, dict[str, str]] = {}
    bases: dict[str, list[str]] = {}
    root = Path(node_modules)
    for pkg in ("@kubernetes-models/keda", "@kubernetes-models/prometheus-operator",
                "@kubernetes-models/apimachinery", "kubernetes-models"):
        for path in (root / pkg).rglob("*.d.ts"):
            text = path.read_text()
            local = {}
            for name, extends, body in INTERFACE.findall(text):
                local[name] = {m.group(1): m.group(2) for line in body.splitlines()
                               if (m := PROP.match(line))}
                bases[name] = [b.strip() for b in extends.split(",") if b.strip()]
            types.update(local)
            for group in ALIASES.findall(text):
                for part in group.split(","):
                    if " as " in part:
                        short, long = (s.strip() for s in part.split(" as "))
                        if short in local:
                            types[long] = local[short]
                            bases[long] = bases[short]

    def inherited(name: str, seen: frozenset = frozenset()) -> dict[str, str]:
        fields: dict[str, str] = {}
        for base in bases.get(name, []):
            if base in types and base not in seen:
                fields.update(inherited(base, seen | {name}))
        fields.update(types.get(name, {}))
        return fields

    return {name: inherited(name) for name in types}


def unknown_fields(obj: dict, node_modules: str) -> list[str]:
    types = declarations(str(node_modules))
    top = TOP.get(obj.get("kind"))
    assert top in types, f"no declaration for {obj.get('kind')} ({top})"
    problems: list[str] = []

    def walk(value, type_name: str, path: str) -> None:
        type_name = type_name.strip()
        m = re.fullmatch(r"Array<(.+)>", type_name)
        if m:
            if isinstance(value, list):
                for i, item in enumerate(value):
                    walk(item, m.group(1), f"{path}[{i}]")
            return
        fields = types.get(type_name)
        if fields is None or not isinstance(value, dict):
            return  # a primitive, a map ({ [key: string]: ... }) or an alias: nothing to check
        for key, sub in value.items():
            if key not in fields:
                problems.append(f"{path}.{key}: not a field of {type_name}")
            else:
                walk(sub, fields[key], f"{path}.{key}")

    walk(obj, top, obj["kind"])
    return problems

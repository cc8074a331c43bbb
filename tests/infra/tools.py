"""The deployment files and the tools that check them offline, shared by tests/infra and the
scaling proof in tests/e2e: where scripts/install-infra-tools.sh put helm, kubectl, checkov
and the KEDA / Prometheus Operator validators, and `helm template` of the chart.

Every tool runs as a subprocess with a timeout, so a hung tool fails its test instead of
the run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "infra" / "helm" / "kafscale"
TERRAFORM = REPO / "infra" / "terraform"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
NAMESPACE = "kafscale"
RELEASE = "kafscale"
KUBERNETES_VERSION = "1.35.0"
# kubernetes-validate of the interpreter running the tests (its script may not be on PATH).
KUBERNETES_VALIDATE = [sys.executable, "-m", "kubernetes_validate"]

# Keep in step with scripts/install-infra-tools.sh.
LAYER_VERSION = "2.2.2"
CHECKOV_VERSION = "3.3.30"


def tools_dir() -> Path:
    env = os.environ.get("KAFSCALE_INFRA_TOOLS")
    if env:
        return Path(env)
    default = Path("/var/cache/kafscale-ci/infra-tools")
    return default if default.is_dir() else Path.home() / ".cache" / "kafscale-infra-tools"


def _tool(path: Path) -> str:
    assert path.exists(), f"{path} missing: run scripts/install-infra-tools.sh"
    return str(path)


def helm() -> str:
    return _tool(tools_dir() / f"kubectl-layer-{LAYER_VERSION}" / "helm" / "helm")


def kubectl() -> str:
    return _tool(tools_dir() / f"kubectl-layer-{LAYER_VERSION}" / "kubectl" / "kubectl")


def checkov() -> str:
    return _tool(tools_dir() / f"checkov-{CHECKOV_VERSION}" / "bin" / "checkov")


def models_dir() -> Path:
    return Path(_tool(tools_dir() / "k8s-models" / "node_modules"))


def system_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} not found: install {package}"
    return path


def run(cmd: list[str], timeout: float = 120, check: bool = True, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {out.returncode}:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
    return out


def template(values: Optional[Path] = None, *sets: str, check: bool = True) -> subprocess.CompletedProcess:
    """`helm template` of the chart as release `kafscale` in namespace `kafscale`."""
    cmd = [helm(), "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if values is not None:
        cmd += ["-f", str(values)]
    for s in sets:
        cmd += ["--set", s]
    return run(cmd, check=check)


def render(values: Optional[Path] = None, *sets: str) -> list[dict]:
    """The rendered objects (empty documents dropped)."""
    return [d for d in yaml.safe_load_all(template(values, *sets).stdout) if d]


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str, name: str) -> dict:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found among {[(o['kind'], o['metadata']['name']) for o in objects]}"
    return found[0]

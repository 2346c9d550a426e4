"""Static checks of the deployment files (`make docker-check`); no Docker engine or cluster needed.

    .venv/bin/python docker/check.py [--dir docker] [--only hadolint k8s ...]

Real tools, installed by `make setup` from requirements.lock:
  hadolint            the Dockerfiles
  yamllint            every YAML file, strict (warnings fail), with docker/.yamllint.yaml
  compose             check-jsonschema: compose.yaml against the Compose Specification (vendored by the tool)
  schemas             check-jsonschema: dashboards and prometheus.yml against the schemas in docker/schemas/
  k8s                 kubernetes-validate --strict: every manifest under k8s/ against Kubernetes KUBERNETES_VERSION
Then what no single tool sees (`consistency`): metric names in the dashboard and the adapter rules exist
(adaptive_core.metrics, whose names tests/functional/test_metrics.py checks against a live server), the HPA's metric is
served by an adapter rule, probes hit Triton's health endpoints, GPU requests, Service selectors and ports,
the Prometheus target is the compose Triton service's metrics port, and published ports stay on 127.0.0.1.
Exit code 1 when any check fails.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import yaml

from adaptive_core.metrics import KNOWN_METRICS

DOCKER_DIR = Path(__file__).resolve().parent
KUBERNETES_VERSION = "1.33.0"
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"  # tritonserver 2.51.0, the local server's version
HEALTH = {"livenessProbe": "/v2/health/live", "readinessProbe": "/v2/health/ready", "startupProbe": "/v2/health/ready"}
METRIC_NAME = re.compile(r"\b(?:nv|adaptive)_[a-z0-9_]+\b")


def _tool(name: str) -> str:
    """A tool from this environment's bin folder (where `make setup` installs them), else from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def _run(cmd: Sequence[str]) -> list[str]:
    """Run a checker; its output lines are the errors when it exits non-zero."""
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True)
    except FileNotFoundError:
        return [f"{cmd[0]} not found: run `make setup`"]
    out = (proc.stdout + proc.stderr).strip().splitlines()
    return [] if proc.returncode == 0 else (out or [f"{Path(cmd[0]).name} exited with code {proc.returncode}"])


def _yaml_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def check_hadolint(root: Path) -> list[str]:
    return _run([_tool("hadolint"), "--no-color", *map(str, sorted(root.glob("Dockerfile*")))])


def check_yamllint(root: Path) -> list[str]:
    return _run([_tool("yamllint"), "--strict", "-f", "parsable", "-c", str(root / ".yamllint.yaml"), str(root)])


def check_compose(root: Path) -> list[str]:
    return _run([_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(root / "compose.yaml")])


def check_schemas(root: Path) -> list[str]:
    schemas = root / "schemas"
    return (
        _run([_tool("check-jsonschema"), "--check-metaschema", *map(str, sorted(schemas.glob("*.json")))])
        + _run(
            [
                _tool("check-jsonschema"),
                "--schemafile",
                str(schemas / "grafana-dashboard.schema.json"),
                *map(str, sorted((root / "grafana" / "dashboards").glob("*.json"))),
            ]
        )
        + _run(
            [
                _tool("check-jsonschema"),
                "--schemafile",
                str(schemas / "prometheus-config.schema.json"),
                str(root / "prometheus" / "prometheus.yml"),
            ]
        )
    )


def check_k8s(root: Path) -> list[str]:
    return _run(
        [
            _tool("kubernetes-validate"),
            "--strict",
            "--quiet",
            "-k",
            KUBERNETES_VERSION,
            *map(str, sorted((root / "k8s").glob("*.yaml"))),
        ]
    )


def _unknown_metrics(where: str, expr: str) -> Iterator[str]:
    names = METRIC_NAME.findall(expr)
    if not names:
        yield f"{where}: names no nv_* or adaptive_* metric: {expr!r}"
    for name in sorted(set(names) - KNOWN_METRICS):
        yield f"{where}: unknown metric {name!r} (known: adaptive_core.metrics.KNOWN_METRICS)"


def _dashboard_errors(root: Path) -> Iterator[str]:
    uids = {
        d["uid"]
        for f in (root / "grafana" / "provisioning" / "datasources").glob("*.yml")
        for doc in _yaml_docs(f)
        for d in doc.get("datasources", [])
    }
    for path in sorted((root / "grafana" / "dashboards").glob("*.json")):
        dash = json.loads(path.read_text())
        ids = [p["id"] for p in dash["panels"]]
        if len(ids) != len(set(ids)):
            yield f"{path.name}: panel ids repeat: {sorted(ids)}"
        for panel in dash["panels"]:
            where = f"{path.name} panel {panel['id']} ({panel['title']})"
            if panel["gridPos"]["x"] + panel["gridPos"]["w"] > 24:
                yield f"{where}: gridPos x + w exceeds the 24-column grid"
            for target in panel["targets"]:
                if target["datasource"]["uid"] not in uids:
                    yield f"{where}: datasource uid {target['datasource']['uid']!r} is not provisioned ({sorted(uids)})"
                yield from _unknown_metrics(f"{where} target {target['refId']}", target["expr"])


def _compose_errors(root: Path) -> Iterator[str]:
    compose = yaml.safe_load((root / "compose.yaml").read_text())
    services = compose["services"]
    container_ports = {
        name: {int(str(p).rsplit(":", 1)[-1]) for p in svc.get("ports", [])} for name, svc in services.items()
    }
    for name, svc in services.items():
        for port in svc.get("ports", []):
            if not str(port).startswith("127.0.0.1:"):
                yield f"compose.yaml service {name}: port {port!r} is not published on 127.0.0.1"
    prom = yaml.safe_load((root / "prometheus" / "prometheus.yml").read_text())
    for job in prom["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                if host not in services:
                    yield f"prometheus.yml job {job['job_name']}: target host {host!r} is not a compose service"
                elif int(port) not in container_ports[host]:
                    yield (
                        f"prometheus.yml job {job['job_name']}: {host} has no port {port} "
                        f"({sorted(container_ports[host])})"
                    )
    provider_paths = {
        p["options"]["path"]
        for f in (root / "grafana" / "provisioning" / "dashboards").glob("*.yml")
        for doc in _yaml_docs(f)
        for p in doc.get("providers", [])
    }
    grafana_volumes = services.get("grafana", {}).get("volumes", [])
    mounts = {v.split(":")[1] for v in grafana_volumes if "dashboards" in v.split(":")[0]}
    if not provider_paths <= mounts:
        yield (
            f"grafana dashboards provider reads {sorted(provider_paths)}, compose mounts dashboards at {sorted(mounts)}"
        )
    dockerfile = (root / "Dockerfile").read_text()
    if not re.search(rf"^FROM {re.escape(TRITON_IMAGE)}\s*$", dockerfile, re.M):
        yield f"Dockerfile: the image must build FROM {TRITON_IMAGE} (the local server's tritonserver 2.51.0)"
    yield from _build_context_errors(root)


def _build_context_errors(root: Path) -> Iterator[str]:
    """Every folder a Dockerfile COPYs from the repository must be let through by .dockerignore (which ignores all
    but what it names): a package missing there fails `docker build`, which no test here can run."""
    ignore = root.parent / ".dockerignore"
    allowed = {line[1:].strip().rstrip("/") for line in ignore.read_text().splitlines() if line.startswith("!")}
    for dockerfile in sorted(root.glob("Dockerfile*")):
        for line in dockerfile.read_text().splitlines():
            parts = line.split()
            if not parts or parts[0] != "COPY" or any(p.startswith("--from") for p in parts):
                continue
            for src in parts[1:-1]:
                if src.startswith("$") or src.startswith("--"):
                    continue
                if not any(src == a or src.startswith(a + "/") or _glob_match(src, a) for a in allowed):
                    yield f"{dockerfile.name}: COPY {src} is not let through by .dockerignore"


def _glob_match(src: str, pattern: str) -> bool:
    import fnmatch

    return fnmatch.fnmatch(src, pattern)


def _k8s_errors(root: Path) -> Iterator[str]:
    objects = [doc for path in sorted((root / "k8s").glob("*.yaml")) for doc in _yaml_docs(path)]
    by_kind: dict[str, list[dict]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
    served = set()
    for cm in by_kind.get("ConfigMap", []):
        if "config.yaml" in cm.get("data", {}):
            for i, rule in enumerate(yaml.safe_load(cm["data"]["config.yaml"]).get("rules", [])):
                served.add(rule["name"]["as"])
                for key in ("seriesQuery", "metricsQuery"):
                    yield from _unknown_metrics(f"adapter rule {i} {key}", rule[key])
    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        for c in pod["spec"]["containers"]:
            where = f"Deployment {name} container {c['name']}"
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            for kind in ("requests", "limits"):
                if str(c.get("resources", {}).get(kind, {}).get("nvidia.com/gpu")) != "1":
                    yield f"{where}: resources.{kind} must ask for nvidia.com/gpu: 1"
            for probe, path in HEALTH.items():
                get = c.get(probe, {}).get("httpGet", {})
                if get.get("path") != path:
                    yield f"{where}: {probe} must GET {path}, has {get.get('path')!r}"
                elif get.get("port") not in ports and get.get("port") not in ports.values():
                    yield f"{where}: {probe} port {get.get('port')!r} is not a container port ({sorted(ports)})"
            shm = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/dev/shm"]
            if not shm or volumes.get(shm[0]["name"], {}).get("emptyDir", {}).get("medium") != "Memory":
                yield f"{where}: /dev/shm must be an emptyDir with medium Memory (the Python backend's shared memory)"
            scrape_port = pod["metadata"].get("annotations", {}).get("prometheus.io/port")
            if scrape_port and int(scrape_port) != ports.get("metrics"):
                yield f"{where}: prometheus.io/port {scrape_port} is not the metrics port {ports.get('metrics')}"
        labels = pod["metadata"]["labels"]
        for svc in by_kind.get("Service", []):
            if svc["spec"]["selector"].items() <= labels.items():
                names = {p.get("name") for c in pod["spec"]["containers"] for p in c.get("ports", [])}
                for port in svc["spec"]["ports"]:
                    if isinstance(port.get("targetPort"), str) and port["targetPort"] not in names:
                        yield (
                            f"Service {svc['metadata']['name']}: targetPort {port['targetPort']!r} "
                            f"is not a port of {name}"
                        )
    if deployments and not any(
        s["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        for s in by_kind.get("Service", [])
        for d in deployments.values()
    ):
        yield "no Service selects the Deployment's pods"
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        ref = hpa["spec"]["scaleTargetRef"]
        if ref["kind"] != "Deployment" or ref["name"] not in deployments:
            yield f"HPA {hpa['metadata']['name']}: scaleTargetRef {ref['kind']}/{ref['name']} is not in k8s/"
        for metric in hpa["spec"].get("metrics", []):
            spec = metric.get("pods") or metric.get("object")
            if spec and spec["metric"]["name"] not in served:
                yield (
                    f"HPA {hpa['metadata']['name']}: metric {spec['metric']['name']!r} is served by no "
                    f"adapter rule ({sorted(served)})"
                )


def check_consistency(root: Path) -> list[str]:
    errors = []
    for part, find in (("dashboards", _dashboard_errors), ("compose", _compose_errors), ("k8s", _k8s_errors)):
        try:
            errors += list(find(root))
        except (KeyError, TypeError, ValueError, AttributeError, OSError, yaml.YAMLError) as e:
            errors.append(f"{part}: files too broken to cross-check ({type(e).__name__}: {e}); see the checks above")
    return errors


CHECKS: dict[str, Callable[[Path], list[str]]] = {
    "hadolint": check_hadolint,
    "yamllint": check_yamllint,
    "compose": check_compose,
    "schemas": check_schemas,
    "k8s": check_k8s,
    "consistency": check_consistency,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="docker/check.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=DOCKER_DIR, help="the deployment folder to check")
    parser.add_argument("--only", nargs="+", choices=list(CHECKS), default=list(CHECKS), help="run only these checks")
    args = parser.parse_args(argv)
    failed = 0
    for name in args.only:
        errors = CHECKS[name](args.dir)
        print(f"{name:<12} {'ok' if not errors else 'FAILED'}")
        for line in errors:
            print(f"    {line}")
        failed += bool(errors)
    print(f"docker-check: {len(args.only) - failed}/{len(args.only)} checks passed ({args.dir})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

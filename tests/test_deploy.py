"""The deployment kit in deploy/ is valid: amtool, promtool, our own check-config, and the rules'
runbook links point at runbooks that exist."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from router.cli import main
from router.config import load_config

from .helpers import ROOT, require_binary

DEPLOY = ROOT / "deploy"
RULES = sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
RULE_TESTS = sorted((DEPLOY / "prometheus" / "tests").glob("*.yml"))
RUNBOOKS = "https://runbooks.example.com/alert-router/"  # the documented base of runbook_url


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def test_compose_stack_passes_debians_docker_compose() -> None:
    """Debian's docker-compose (1.29, which refuses a top-level `name`) validates the stack;
    the project name comes from deploy/.env."""
    compose = require_binary("docker-compose")
    file = str(DEPLOY / "docker-compose.yml")
    done = run(compose, "-f", file, "config", "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    done = run(compose, "-f", file, "config", "--services")
    assert set(done.stdout.split()) == {"alert-router", "alertmanager", "prometheus", "grafana"}
    assert "COMPOSE_PROJECT_NAME=alert-router" in (DEPLOY / ".env").read_text().splitlines()


def test_alertmanager_config_passes_amtool() -> None:
    done = run(
        require_binary("amtool"), "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml")
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_prometheus_config_and_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    done = run(promtool, "check", "rules", *map(str, RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    done = run(promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def shipped_alerts() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def test_every_rule_links_an_existing_runbook() -> None:
    alerts = shipped_alerts()
    assert {a["alert"] for a in alerts} >= {
        "AlertRouterDown",
        "AlertRouterDeliveryFailing",
        "AlertRouterPlanningBehind",
        "AlertRouterOutboxBacklog",
        "AlertRouterDeadLetters",
        "AlertRouterConfigReloadFailed",
        "AlertRouterWebhookRejected",
    }
    for a in alerts:
        url = a["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOKS), url
        assert (ROOT / "docs" / "runbooks" / url.removeprefix(RUNBOOKS)).is_file(), url


def test_rule_unit_tests_pass_and_make_every_rule_fire() -> None:
    """promtool test rules over deploy/prometheus/tests/: each shipped alert has a case in which
    it fires (a case expecting nothing alone proves nothing)."""
    done = run(require_binary("promtool"), "test", "rules", *map(str, RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    fired = {
        case["alertname"]
        for path in RULE_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert fired == {a["alert"] for a in shipped_alerts()}


KIT_CONFIGS = [
    (DEPLOY / "alert-router" / "routes.yaml", "/run/secrets/alert_router_token"),
    (DEPLOY / "kubernetes" / "routes.yaml", "/run/secrets/alert-router/alert_router_token"),
]


@pytest.mark.parametrize(("path", "token_path"), KIT_CONFIGS, ids=["compose", "kubernetes"])
def test_router_config_of_the_kit_is_valid(
    path: Path, token_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The token file exists only inside the container: point that one path at a temporary file.
    token = tmp_path / "alert_router_token"
    token.write_text("kit-token\n")
    for name, value in CHANNEL_SECRETS.items():  # as the Secret alert-router-channels sets them
        monkeypatch.setenv(name, value)
    text = path.read_text()
    assert token_path in text
    copy = tmp_path / "routes.yaml"
    copy.write_text(text.replace(token_path, str(token)))
    assert main(["check-config", str(copy)]) == 0
    config = load_config(copy)
    assert config.server.auth.bearer_token is not None
    assert config.server.auth.bearer_token.get_secret_value() == "kit-token"


def kustomize_build() -> list[dict[str, Any]]:
    """`kubectl kustomize deploy/kubernetes`, as `kubectl apply -k` builds it."""
    kubectl = require_binary("kubectl")  # its built-in kustomize
    done = run(kubectl, "kustomize", str(DEPLOY / "kubernetes"))
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


CHANNEL_SECRETS = next(
    d["stringData"]
    for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "secret.yaml").read_text())
    if d["metadata"]["name"] == "alert-router-channels"
)


@pytest.fixture(scope="module")
def kit() -> dict[tuple[str, str], dict[str, Any]]:
    """The built objects by (kind, name)."""
    return {(d["kind"], d["metadata"]["name"]): d for d in kustomize_build()}


# The Kustomization fields that kustomize 2.0 (inside Debian 12's kubectl 1.20, what `make deps`
# installs where no kubectl is on PATH) reads; it refuses others ('json: unknown field "labels"').
KUSTOMIZE_2_FIELDS = {
    "apiVersion",
    "kind",
    "namespace",
    "namePrefix",
    "nameSuffix",
    "commonLabels",
    "commonAnnotations",
    "resources",
    "images",
    "configMapGenerator",
    "secretGenerator",
    "generatorOptions",
    "patchesStrategicMerge",
    "patchesJson6902",
}


def test_kustomization_builds_with_debians_kubectl_too() -> None:
    """Only fields Debian 12's kubectl 1.20 knows: with `labels:` instead of `commonLabels:` it
    refused the whole base, so CI on a fresh Debian machine could not build it."""
    kustomization = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    assert set(kustomization) - KUSTOMIZE_2_FIELDS == set()


def test_kustomize_builds_objects_valid_for_kubernetes() -> None:
    """Every object against Kubernetes' own OpenAPI schema (strict: no unknown field), for the
    oldest and newest versions kubernetes-validate ships."""
    docs = kustomize_build()
    assert {d["kind"] for d in docs} == {
        "Namespace",
        "ConfigMap",
        "Secret",
        "Service",
        "PersistentVolumeClaim",
        "Deployment",
    }
    versions = sorted(
        set(kubernetes_validate.utils.all_versions()), key=lambda v: tuple(map(int, v.split(".")))
    )
    for version in (versions[0], versions[-1]):
        for doc in docs:
            kubernetes_validate.validate(doc, version, strict=True)


def test_kustomize_output_runs_as_documented(kit: dict[tuple[str, str], dict[str, Any]]) -> None:
    assert ("Namespace", "monitoring") in kit
    deployment = kit["Deployment", "alert-router"]
    assert deployment["metadata"]["namespace"] == "monitoring"
    assert (
        deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    )
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == "alert-router:latest"  # README: docker build -t alert-router .
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}

    # The config: the generated ConfigMap (name with its hash) holds the kit's routes.yaml.
    [config_map] = [d for (kind, _), d in kit.items() if kind == "ConfigMap"]
    assert (
        volumes[mounts["/etc/alert-router"]["name"]]["configMap"]["name"]
        == (config_map["metadata"]["name"])
    )
    routes = config_map["data"]["routes.yaml"]
    assert routes == (DEPLOY / "kubernetes" / "routes.yaml").read_text()
    assert container["args"][:2] == ["--config", "/etc/alert-router/routes.yaml"]

    # The token: a folder mount (no subPath, which never sees a rotated Secret), and the
    # config's bearer_token_file is the Secret's key inside it.
    assert not any("subPath" in m for m in container["volumeMounts"])
    token_dir = next(p for p, m in mounts.items() if "secret" in volumes[m["name"]])
    secret = kit["Secret", volumes[mounts[token_dir]["name"]]["secret"]["secretName"]]
    [key] = secret["stringData"]
    token_file = yaml.safe_load(routes)["server"]["auth"]["bearer_token_file"]
    assert token_file == f"{token_dir}/{key}"
    env_secret = container["envFrom"][0]["secretRef"]["name"]
    assert kit["Secret", env_secret]["stringData"] == CHANNEL_SECRETS

    # Temporary files (tempfile's default, /tmp) go to an emptyDir, not the state volume.
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert "persistentVolumeClaim" in volumes[mounts["/var/lib/alert-router"]["name"]]

    # The memory limit is above the README's own peak RSS (the router, one process), with margin.
    readme = (ROOT / "README.md").read_text()
    peak = re.search(r"Peak RSS ([\d,]+) MiB \(router\)", readme)
    assert peak is not None, "the README's benchmark section no longer gives the peak RSS"
    peak_mib = int(peak.group(1).replace(",", ""))
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Gi") or limit.endswith("Mi"), limit
    limit_mib = int(limit[:-2]) * (1024 if limit.endswith("Gi") else 1)
    assert limit_mib >= 1.2 * peak_mib, (limit, peak_mib)

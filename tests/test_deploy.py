"""The deployment kit in deploy/ is valid: amtool, promtool, our own check-config, and the rules'
runbook links point at runbooks that exist."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from router.cli import main
from router.config import load_config

from .helpers import ROOT, require_binary

DEPLOY = ROOT / "deploy"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def test_alertmanager_config_passes_amtool() -> None:
    done = run(
        require_binary("amtool"), "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml")
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_prometheus_config_and_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    done = run(
        promtool, "check", "rules", *map(str, (DEPLOY / "prometheus" / "rules").glob("*.yml"))
    )
    assert done.returncode == 0, done.stdout + done.stderr
    done = run(promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_rule_links_an_existing_runbook() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules" / "alert-router.rules.yml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    assert {a["alert"] for a in alerts} >= {
        "AlertRouterDown",
        "AlertRouterDeliveryFailing",
        "AlertRouterOutboxBacklog",
        "AlertRouterDeadLetters",
        "AlertRouterConfigReloadFailed",
    }
    for a in alerts:
        url = a["annotations"]["runbook_url"]
        assert url.startswith(
            "https://github.com/alert-router/alert-router/blob/main/docs/runbooks/"
        )
        assert (ROOT / "docs" / "runbooks" / url.rsplit("/", 1)[1]).is_file(), url


def test_router_config_of_the_kit_is_valid(tmp_path: Path) -> None:
    # The token file exists only inside the container: point that one path at a temporary file.
    token = tmp_path / "alert_router_token"
    token.write_text("kit-token\n")
    text = (DEPLOY / "alert-router" / "routes.yaml").read_text()
    assert "/run/secrets/alert_router_token" in text
    copy = tmp_path / "routes.yaml"
    copy.write_text(text.replace("/run/secrets/alert_router_token", str(token)))
    assert main(["check-config", str(copy)]) == 0
    config = load_config(copy)
    assert config.server.auth.bearer_token is not None
    assert config.server.auth.bearer_token.get_secret_value() == "kit-token"


def test_kubernetes_base_probes_and_manifests() -> None:
    docs = [
        d
        for f in sorted((DEPLOY / "kubernetes").glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
    ]
    kinds = {d["kind"] for d in docs if d}
    assert {"Kustomization", "Deployment", "Service", "PersistentVolumeClaim", "Secret"} <= kinds
    deployment = next(d for d in docs if d and d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert (
        deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    )

"""The deployment kit in deploy/ is valid: amtool, promtool, our own check-config, and the rules'
runbook links point at runbooks that exist."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

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

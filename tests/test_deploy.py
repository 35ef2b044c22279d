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


COMPOSE_STACKS = [
    ("docker-compose.yml", {"alert-router"}),
    ("docker-compose.ha.yml", {"alert-router-1", "alert-router-2", "postgres"}),
]


@pytest.mark.parametrize(("name", "routers"), COMPOSE_STACKS, ids=["one", "ha"])
def test_compose_stack_passes_debians_docker_compose(name: str, routers: set[str]) -> None:
    """Debian's docker-compose (1.29, which refuses a top-level `name`) validates the stack;
    the project name comes from deploy/.env."""
    compose = require_binary("docker-compose")
    file = str(DEPLOY / name)
    done = run(compose, "-f", file, "config", "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    done = run(compose, "-f", file, "config", "--services")
    assert set(done.stdout.split()) == {"alertmanager", "prometheus", "grafana"} | routers
    assert "COMPOSE_PROJECT_NAME=alert-router" in (DEPLOY / ".env").read_text().splitlines()


def compose_config(name: str) -> dict[str, Any]:
    """The stack as docker-compose resolves it (extension fields merged, paths absolute)."""
    done = run(require_binary("docker-compose"), "-f", str(DEPLOY / name), "config")
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def test_ha_compose_stack_sends_every_payload_to_every_replica() -> None:
    """Two routers on the one PostgreSQL, each with the HA config and the database password;
    Alertmanager has one webhook_configs entry per replica and Prometheus scrapes each."""
    services = compose_config("docker-compose.ha.yml")["services"]
    replicas = sorted(s for s in services if s.startswith("alert-router"))
    assert len(replicas) == 2
    for name in replicas:
        router = services[name]
        assert router["command"][:2] == ["--config", "/etc/alert-router/routes-ha.yaml"]
        assert {s["source"] for s in router["secrets"]} == {
            "alert_router_token",
            "alert_router_db_password",
        }
        assert router["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert not any("/var/lib/alert-router" in v for v in router.get("volumes", []))
    assert len({services[n]["ports"][0]["published"] for n in replicas}) == 2
    routes = yaml.safe_load((DEPLOY / "alert-router" / "routes-ha.yaml").read_text())
    assert routes["storage"]["url"].startswith("postgresql://alert_router@postgres:5432/")
    assert routes["storage"]["password_file"] == "/run/secrets/alert_router_db_password"
    assert services["postgres"]["environment"]["POSTGRES_USER"] == "alert_router"

    am = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager-ha.yml").read_text())
    [receiver] = am["receivers"]
    assert [c["url"] for c in receiver["webhook_configs"]] == [
        f"http://{n}:9095/webhook" for n in replicas
    ]
    assert (
        "--config.file=/etc/alertmanager/alertmanager-ha.yml"
        in (services["alertmanager"]["command"])
    )
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus-ha.yml").read_text())
    [job] = [j for j in prometheus["scrape_configs"] if j["job_name"] == "alert-router"]
    assert job["static_configs"][0]["targets"] == [f"{n}:9095" for n in replicas]


@pytest.mark.parametrize("name", ["alertmanager.yml", "alertmanager-ha.yml"])
def test_alertmanager_config_passes_amtool(name: str) -> None:
    done = run(require_binary("amtool"), "check-config", str(DEPLOY / "alertmanager" / name))
    assert done.returncode == 0, done.stdout + done.stderr


def test_prometheus_config_and_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    done = run(promtool, "check", "rules", *map(str, RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("prometheus.yml", "prometheus-ha.yml"):
        done = run(promtool, "check", "config", str(DEPLOY / "prometheus" / name))
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


KIT_CONFIGS = {
    "compose": DEPLOY / "alert-router" / "routes.yaml",
    "compose-ha": DEPLOY / "alert-router" / "routes-ha.yaml",
    "kubernetes": DEPLOY / "kubernetes" / "routes.yaml",
    "kubernetes-ha": DEPLOY / "kubernetes-ha" / "routes.yaml",
}
SECRET_FILE = re.compile(r"/run/secrets/[\w/-]+")  # a file only the container has


@pytest.mark.parametrize("path", KIT_CONFIGS.values(), ids=KIT_CONFIGS.keys())
def test_router_config_of_the_kit_is_valid(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The secret files exist only inside the container: point each path at a temporary file.
    for name, value in CHANNEL_SECRETS.items():  # as the Secret alert-router-channels sets them
        monkeypatch.setenv(name, value)
    text = path.read_text()
    secrets = sorted(set(SECRET_FILE.findall(text)))
    assert secrets, "the kit's config reads no secret file"
    for i, secret in enumerate(secrets):
        (tmp_path / f"secret-{i}").write_text(f"kit-secret-{i}\n")
        text = text.replace(secret, str(tmp_path / f"secret-{i}"))
    copy = tmp_path / "routes.yaml"
    copy.write_text(text)
    assert main(["check-config", str(copy)]) == 0
    config = load_config(copy)
    assert config.server.auth.bearer_token is not None
    token = secrets.index(yaml.safe_load(path.read_text())["server"]["auth"]["bearer_token_file"])
    assert config.server.auth.bearer_token.get_secret_value() == f"kit-secret-{token}"
    if path.parent.name.endswith("-ha") or path.name.endswith("-ha.yaml"):
        assert config.storage.url is not None and config.storage.password is not None
        assert config.storage.password.get_secret_value().startswith("kit-secret-")
    else:
        assert config.storage.url is None


def kustomize_build(folder: str = "kubernetes") -> list[dict[str, Any]]:
    """`kubectl kustomize deploy/<folder>`, as `kubectl apply -k` builds it."""
    kubectl = require_binary("kubectl")  # its built-in kustomize
    done = run(kubectl, "kustomize", str(DEPLOY / folder))
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


CHANNEL_SECRETS = next(
    d["stringData"]
    for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "secret.yaml").read_text())
    if d["metadata"]["name"] == "alert-router-channels"
)


def by_kind_and_name(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The built objects by (kind, name)."""
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


@pytest.fixture(scope="module")
def kit() -> dict[tuple[str, str], dict[str, Any]]:
    """The base's built objects by (kind, name)."""
    return by_kind_and_name(kustomize_build())


# The Kustomization fields that kustomize 2.0 (inside Debian 12's kubectl 1.20, what `make deps`
# installs where no kubectl is on PATH) reads; it refuses others ('json: unknown field "labels"').
KUSTOMIZE_2_FIELDS = {
    "apiVersion",
    "kind",
    "bases",
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


KUSTOMIZATIONS = ["kubernetes", "kubernetes-ha"]
KINDS = {"Namespace", "ConfigMap", "Secret", "Service", "Deployment"}


@pytest.mark.parametrize("folder", KUSTOMIZATIONS)
def test_kustomization_builds_with_debians_kubectl_too(folder: str) -> None:
    """Only fields Debian 12's kubectl 1.20 knows: with `labels:` instead of `commonLabels:` it
    refused the whole base, so CI on a fresh Debian machine could not build it."""
    kustomization = yaml.safe_load((DEPLOY / folder / "kustomization.yaml").read_text())
    assert set(kustomization) - KUSTOMIZE_2_FIELDS == set()
    # kustomize 2.0 takes a folder in `bases` only: `resources` are files
    assert all((DEPLOY / folder / r).is_file() for r in kustomization["resources"])


@pytest.mark.parametrize(
    ("folder", "kinds"),
    [
        ("kubernetes", KINDS | {"PersistentVolumeClaim"}),
        ("kubernetes-ha", KINDS | {"PodDisruptionBudget"}),
    ],
)
def test_kustomize_builds_objects_valid_for_kubernetes(folder: str, kinds: set[str]) -> None:
    """Every object against Kubernetes' own OpenAPI schema (strict: no unknown field), for the
    oldest and newest versions kubernetes-validate ships; every one in the namespace."""
    docs = kustomize_build(folder)
    assert {d["kind"] for d in docs} == kinds
    assert all(
        d["metadata"].get("namespace") == "monitoring" for d in docs if d["kind"] != "Namespace"
    )
    versions = sorted(
        set(kubernetes_validate.utils.all_versions()), key=lambda v: tuple(map(int, v.split(".")))
    )
    for version in (versions[0], versions[-1]):
        for doc in docs:
            kubernetes_validate.validate(doc, version, strict=True)


def mounted_routes(
    built: dict[tuple[str, str], dict[str, Any]],
    volumes: dict[str, dict[str, Any]],
    mounts: dict[str, dict[str, Any]],
    folder: str,
) -> str:
    """The routes.yaml the pod reads: the generated ConfigMap (its name with a hash) mounted at
    /etc/alert-router, holding deploy/<folder>/routes.yaml as it is."""
    [config_map] = [d for (kind, _), d in built.items() if kind == "ConfigMap"]
    mounted = volumes[mounts["/etc/alert-router"]["name"]]["configMap"]["name"]
    assert mounted == config_map["metadata"]["name"]
    routes: str = config_map["data"]["routes.yaml"]
    assert routes == (DEPLOY / folder / "routes.yaml").read_text()
    return routes


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
    routes = mounted_routes(kit, volumes, mounts, "kubernetes")
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


def test_kustomize_ha_overlay_runs_two_replicas_on_postgresql() -> None:
    """Two replicas rolled one at a time, no state volume, a PodDisruptionBudget that keeps one
    up, and the database password from the Secret in the file routes.yaml reads."""
    ha = by_kind_and_name(kustomize_build("kubernetes-ha"))
    deployment = ha["Deployment", "alert-router"]
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    [container] = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert not any("persistentVolumeClaim" in v for v in volumes.values())
    assert "/var/lib/alert-router" not in mounts

    pdb = ha["PodDisruptionBudget", "alert-router"]
    labels = spec["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert 1 <= pdb["spec"]["minAvailable"] < spec["replicas"]  # a drain can evict one

    routes = mounted_routes(ha, volumes, mounts, "kubernetes-ha")
    storage = yaml.safe_load(routes)["storage"]
    assert storage["url"].startswith("postgresql://") and "path" not in storage
    folder, key = storage["password_file"].rsplit("/", 1)
    secret = ha["Secret", volumes[mounts[folder]["name"]]["secret"]["secretName"]]
    assert set(secret["stringData"]) == {key}
    assert not any("subPath" in m for m in container["volumeMounts"])

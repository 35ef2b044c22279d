"""The package as users install it: the wheel, in a fresh virtual environment, serving.

The wheel is built once per session from a copy of the files the build reads, installed with
its dependencies into a new virtual environment (no source tree on its path: every command runs
in a temporary folder), and `alert-router serve --dry-run` with the shipped routes.yaml renders
a payload with the templates inside the wheel. Everything is removed at the end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from .helpers import ROOT, fixture_json, free_port, planned_outcome, wait_http

pytestmark = pytest.mark.slow
BUILD_INPUTS = ["pyproject.toml", "setup.py", "README.md", "router", "templates"]
TOKEN = "package-test-token-123"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
KINDS = {"telegram", "slack", "email", "pagerduty"}


class Installed:
    """The built wheel and the virtual environment it is installed in."""

    def __init__(self, wheel: Path, venv: Path) -> None:
        self.wheel = wheel
        self.venv = venv
        self.bin = venv / "bin"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without anything that would put the checkout on a Python path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, **extra}


def run(*cmd: str | Path, cwd: Path) -> str:
    done = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=clean_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, f"{cmd} exited with {done.returncode}:\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("package")
    try:
        src = root / "src"
        src.mkdir()
        for name in BUILD_INPUTS:  # a copy: building in the checkout would leave build/ there
            if (ROOT / name).is_dir():
                shutil.copytree(
                    ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                shutil.copy(ROOT / name, src / name)
        run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", root, src, cwd=root)
        (wheel,) = root.glob("alert_router-*.whl")
        run(sys.executable, "-m", "venv", root / "venv", cwd=root)
        run(root / "venv/bin/pip", "install", "-q", "--disable-pip-version-check", wheel, cwd=root)
        yield Installed(wheel, root / "venv")
    finally:
        shutil.rmtree(root)


def test_the_wheel_holds_every_module_and_template(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "router").rglob("*.py")}
    templates = {
        "router/" + p.relative_to(ROOT).as_posix() for p in (ROOT / "templates").rglob("*.j2")
    }
    assert modules and templates
    assert modules - names == set()
    assert templates - names == set()


def test_the_installed_package_is_the_wheel_not_the_checkout(
    installed: Installed, tmp_path: Path
) -> None:
    out = run(
        installed.bin / "python",
        "-c",
        "import router.render as r; print(r.__file__); print(r.default_template_dir())",
        cwd=tmp_path,
    )
    module, templates = (Path(line) for line in out.splitlines())
    site = installed.venv.resolve()
    assert module.is_relative_to(site), module
    assert templates == module.parent / "templates"
    assert (templates / "telegram" / "message.html.j2").is_file()


def security_page() -> bytes:
    """One critical alert of team security: the shipped routes.yaml sends it to every kind."""
    data: dict[str, Any] = fixture_json("firing-group-3-alerts")
    alert = data["alerts"][0]
    alert["labels"].update(alertname="WheelServes", team="security", severity="critical")
    alert["annotations"]["summary"] = "served from the installed wheel"
    data["alerts"] = [alert]
    data["groupKey"] = '{}:{alertname="WheelServes"}'
    data["commonLabels"] = alert["labels"]
    data["groupLabels"] = {"alertname": "WheelServes"}
    return orjson.dumps(data)


def shipped_parts(kind: str) -> set[str]:
    """The parts of a message of `kind`: its template files' names up to the first dot."""
    return {p.name.split(".", 1)[0] for p in (ROOT / "templates" / kind).glob("*.j2")}


def dry_run_notifications(log: bytes) -> dict[str, dict[str, Any]]:
    """Channel kind -> the first dry_run_notification in a JSON log."""
    found: dict[str, dict[str, Any]] = {}
    for line in log.splitlines():
        record = orjson.loads(line) if line.startswith(b"{") else {}
        if record.get("event") == "dry_run_notification":
            found.setdefault(record["channel"].split("[")[0], record)
    return found


async def page_every_kind(base: str, read_log: Callable[[], bytes]) -> dict[str, dict[str, Any]]:
    """POST security_page() to a router serving the shipped routes.yaml in --dry-run; returns
    the dry_run_notification logged for each channel kind (waits up to 30 s for all four)."""
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/webhook", data=security_page(), headers=HEADERS) as r:
            assert r.status == 200, await r.text()
            cid = (await r.json())["correlation_id"]
        outcome = await planned_outcome(session, base, cid, HEADERS)
    assert set(outcome["decisions"]) == {"security", "oncall-pager"}, outcome
    for _ in range(300):  # delivered in the background: bounded, 30 s
        sent = dry_run_notifications(await asyncio.to_thread(read_log))
        if set(sent) >= KINDS:
            break
        await asyncio.sleep(0.1)
    assert set(sent) >= KINDS, sent
    return sent


def assert_rendered_with_the_shipped_templates(sent: dict[str, dict[str, Any]]) -> None:
    for kind in KINDS:
        parts = {k: v for k, v in sent[kind].items() if k in shipped_parts(kind)}
        assert set(parts) == shipped_parts(kind), sent[kind]
        assert all(parts.values()), sent[kind]
    assert "served from the installed wheel" in sent["telegram"]["message"]
    assert "<b>" in sent["telegram"]["message"]  # HTML, as telegram/message.html.j2 writes it
    assert "WheelServes" in sent["pagerduty"]["summary"]
    assert "served from the installed wheel" in sent["email"]["text"]


async def test_the_installed_wheel_serves_and_renders_with_its_templates(
    installed: Installed, tmp_path: Path
) -> None:
    port = free_port()
    shutil.copy(ROOT / "routes.yaml", tmp_path / "routes.yaml")
    env = clean_env(
        ALERT_ROUTER_LISTEN=f"127.0.0.1:{port}",
        ALERT_ROUTER_TOKEN=TOKEN,
        ALERT_ROUTER_DB=str(tmp_path / "state" / "alert-router.db"),
    )
    cmd = ["serve", "--config", "routes.yaml", "--dry-run", "--log-format", "json"]
    log = tmp_path / "router.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [installed.bin / "alert-router", *cmd],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_http(f"{base}/healthz", proc, timeout_s=30)
        sent = await page_every_kind(base, log.read_bytes)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0
    assert_rendered_with_the_shipped_templates(sent)


# The image, built from the Dockerfile and run with Debian's podman: `make image-test` (root, a
# few minutes; deselected from `make test` by the `image` marker).
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


class Podman:
    """podman commands; runc where installed (crun refuses a host with hybrid cgroups)."""

    def __init__(self) -> None:
        missing = [t for t in ("podman", "mmdebstrap") if shutil.which(t) is None]
        if missing:
            pytest.fail(f"{missing} not found: apt-get install podman buildah mmdebstrap runc")
        self.cmd = ["podman", *(["--runtime", "runc"] if shutil.which("runc") else [])]

    def __call__(self, *args: str | Path, cwd: Path = ROOT, check: bool = True) -> str:
        done = subprocess.run([*self.cmd, *map(str, args)], cwd=cwd, capture_output=True, text=True)
        if check:
            assert done.returncode == 0, f"podman {args} exited {done.returncode}:\n{done.stderr}"
        return done.stdout.strip()


def bootstrap_base(podman: Podman, tmp_path: Path, name: str) -> None:
    """A Debian 12 image with Python 3.11 and its venv module (python:3.11-slim's Debian and
    Python), made with mmdebstrap from Debian's archive: the base image cannot be pulled here."""
    tar = tmp_path / "base.tar"
    packages = "python3,python3-venv,ca-certificates"
    run("mmdebstrap", "--variant=minbase", f"--include={packages}", "bookworm", tar, cwd=tmp_path)
    podman("import", tar, name)
    tar.unlink()


@pytest.mark.image
async def test_the_image_serves_in_dry_run_as_the_readme_runs_it(tmp_path: Path) -> None:
    podman = Podman()
    tag = f"alert-router-image-test-{os.getpid()}"
    given_base = os.environ.get("ALERT_ROUTER_IMAGE_BASE")
    base, image, volume = given_base or f"localhost/{tag}-base", f"localhost/{tag}", f"{tag}-state"
    port = free_port()
    try:
        if not given_base:
            bootstrap_base(podman, tmp_path, base)
        trust = []
        if CA_BUNDLE.is_file():  # pip in the build trusts what this host trusts (a TLS proxy's CA)
            (tmp_path / "pip.conf").write_text(f"[global]\ncert = {CA_BUNDLE}\n")
            trust = [
                "-v",
                f"{CA_BUNDLE}:{CA_BUNDLE}:ro",
                "-v",
                f"{tmp_path}/pip.conf:/etc/pip.conf:ro",
            ]
        podman("build", "--format", "docker", "--layers=false", "--build-arg", f"BASE={base}",
               *trust, "-t", image, ROOT)  # fmt: skip
        # As README.md "Running in a container" runs it; podman's default ulimits (1048576 open
        # files) exceed what a sandboxed host grants, so these are set low.
        podman("run", "-d", "--name", tag, "--ulimit", "nofile=4096:4096", "--ulimit",
               "nproc=4096:4096", "-p", f"127.0.0.1:{port}:9095", "-v",
               f"{volume}:/var/lib/alert-router", "-e", f"ALERT_ROUTER_TOKEN={TOKEN}", "-v",
               f"{ROOT / 'routes.yaml'}:/etc/alert-router/routes.yaml:ro", image)  # fmt: skip
        base_url = f"http://127.0.0.1:{port}"
        await wait_http(f"{base_url}/healthz", timeout_s=60)

        def logs() -> bytes:
            done = subprocess.run([*podman.cmd, "logs", tag], capture_output=True, check=True)
            return done.stdout + done.stderr

        sent = await page_every_kind(base_url, logs)
        assert podman("exec", tag, "id", "-u") == "10001"
        assert podman("image", "inspect", image, "--format", "{{.Config.User}}") == "10001:10001"
        podman("healthcheck", "run", tag)  # the image's HEALTHCHECK passes
        podman("stop", "-t", "30", tag)
        assert podman("inspect", tag, "--format", "{{.State.ExitCode}}") == "0"
        records = [orjson.loads(line) for line in logs().splitlines() if line.startswith(b"{")]
        assert not [r for r in records if r["level"] == "error"], records
        assert_rendered_with_the_shipped_templates(sent)
    finally:
        podman("rm", "-f", tag, check=False)
        podman("volume", "rm", "-f", volume, check=False)
        podman("rmi", "-f", image, *([] if given_base else [base]), check=False)

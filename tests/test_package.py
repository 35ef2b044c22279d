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
from collections.abc import Iterator
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


def dry_run_notifications(log: Path) -> dict[str, dict[str, Any]]:
    """Channel kind -> the first dry_run_notification logged for it."""
    found: dict[str, dict[str, Any]] = {}
    for line in log.read_bytes().splitlines():
        record = orjson.loads(line) if line.startswith(b"{") else {}
        if record.get("event") == "dry_run_notification":
            found.setdefault(record["channel"].split("[")[0], record)
    return found


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
    with open(tmp_path / "router.log", "wb") as log:
        proc = subprocess.Popen(
            [installed.bin / "alert-router", *cmd],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_http(f"{base}/healthz", proc, timeout_s=30)
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base}/webhook", data=security_page(), headers=HEADERS) as r:
                assert r.status == 200, await r.text()
                cid = (await r.json())["correlation_id"]
            outcome = await planned_outcome(session, base, cid, HEADERS)
        assert set(outcome["decisions"]) == {"security", "oncall-pager"}, outcome
        kinds = {"telegram", "slack", "email", "pagerduty"}
        for _ in range(300):  # delivered in the background: bounded, 30 s
            sent = dry_run_notifications(tmp_path / "router.log")
            if set(sent) >= kinds:
                break
            await asyncio.sleep(0.1)
        assert set(sent) >= kinds
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0
    for kind in kinds:
        parts = {k: v for k, v in sent[kind].items() if k in shipped_parts(kind)}
        assert set(parts) == shipped_parts(kind), sent[kind]
        assert all(parts.values()), sent[kind]
    assert "served from the installed wheel" in sent["telegram"]["message"]
    assert "<b>" in sent["telegram"]["message"]  # HTML, as telegram/message.html.j2 writes it
    assert "WheelServes" in sent["pagerduty"]["summary"]
    assert "served from the installed wheel" in sent["email"]["text"]

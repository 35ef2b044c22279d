"""`bench/bench.py --quick` runs every phase against the real router (and its replicas on
PostgreSQL) and reports every figure and every floor (the figures themselves are not asserted:
they depend on the machine)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from .postgres import binaries

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_the_quick_bench_reports_every_figure_and_floor(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=540,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    figures = json.loads(out.read_text())
    numbers = {
        ("capacity", "router", "accepted_per_s"),
        ("capacity", "bare", "accepted_per_s"),
        ("capacity", "ratio_to_bare"),
        ("sustained", "accepted_per_s"),
        ("sustained", "answered_503"),
        ("sustained", "delivered_per_s"),
        ("steady", "webhook_p99_ms"),
        ("steady", "e2e_p99_ms"),
        ("disk", "bytes_per_incident"),
        ("idle_memory", "idle_rss_all_channels_mib"),
        ("many_alerts", "rss_per_10k_firing_alerts_mib"),
        ("many_alerts", "startup_s"),
        ("storm", "last_delivered_s"),
    }
    for path in sorted(numbers):
        value = figures
        for key in path:
            value = value[key]
        assert isinstance(value, int | float) and math.isfinite(value), (path, value)
    # Everything sent was answered, planned and delivered (a phase that gave up says so here).
    assert figures["sustained"]["all_delivered"], figures["sustained"]
    assert figures["disk"]["resolved"] == figures["disk"]["incidents"], figures["disk"]
    assert figures["steady"]["e2e_measured"] == figures["steady"]["accepted"] > 0
    # The replicas phase (--quick: SQLite beside three replicas on PostgreSQL; the full run
    # adds one and two), each setup with every incident delivered, none twice.
    setups = figures["replicas"]["setups"]
    expected = [("sqlite", 1), ("postgresql", 3)]
    if binaries() is None:  # the phase says so and measures SQLite alone
        expected = expected[:1]
    assert [(s["engine"], s["replicas"]) for s in setups] == expected, setups
    for setup in setups:
        for key in ("accepted_per_s", "delivered_per_s", "e2e_p99_ms"):
            assert math.isfinite(setup[key]), (setup, key)
        assert setup["all_delivered"] and setup["sent_twice"] == 0, setup
        assert setup["e2e_measured"] == setup["steady_accepted"] > 0, setup
    floors = [line for line in run.stdout.splitlines() if line.startswith(("  met ", "  NOT MET"))]
    assert len(floors) == len(figures["floors"]) == 7, run.stdout

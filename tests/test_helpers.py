"""The suite's own helpers: what a missing tool's skip message tells the reader to install."""

from __future__ import annotations

import pytest

from .helpers import require_binary


@pytest.mark.parametrize(
    ("binary", "package"),
    [
        ("amtool", "prometheus-alertmanager"),
        ("prometheus-alertmanager", "prometheus-alertmanager"),
        ("promtool", "prometheus"),
        ("docker-compose", "docker-compose"),
        ("kubectl", "kubernetes-client"),
    ],
)
def test_a_missing_binary_names_its_debian_package(
    binary: str, package: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        require_binary(binary)
    assert str(skipped.value) == (
        f"{binary} not found: install Debian's {package} (make deps, or apt-get install {package})"
    )

"""One `pagerduty_configs` entry of routes.yaml: the Events API v2 routing key and event fields."""

from __future__ import annotations

from pydantic import SecretStr

from router.config.types import TemplateStr, WithSecrets


class PagerDutyConfig(WithSecrets):
    """One `pagerduty_configs` entry: the Events API v2 routing key, URL, severity and source.

    `routing_key` or `routing_key_file`; `severity` and `source` are Jinja2 strings over the
    first alert's `labels` and `annotations`, compiled at load.
    """

    secret_keys = ("routing_key",)

    routing_key: SecretStr
    url: str = "https://events.pagerduty.com/v2/enqueue"
    severity: TemplateStr | None = None
    source: TemplateStr | None = None
    send_resolved: bool | None = None

"""routes.yaml -> validated pydantic models; every error names file:line and the key path.

load.py reads the YAML (line marks, ${VAR}, alias-bomb guard), problems.py words what is wrong,
types.py holds the shared field types, model.py the schema. The public names are here.
"""

from __future__ import annotations

from router.config.load import MAX_YAML_NODES, load_config, parse_config
from router.config.model import (
    AuthConfig,
    ChatopsConfig,
    EmailConfig,
    InhibitRuleConfig,
    PagerDutyConfig,
    ReceiverConfig,
    RouteConfig,
    RouterConfig,
    RunbookConfig,
    SlackChatops,
    SlackConfig,
    TelegramChatops,
    TelegramConfig,
)
from router.config.problems import config_notes, format_path
from router.config.types import TEMPLATE_STRINGS, Duration, parse_duration, secret_values

__all__ = [
    "MAX_YAML_NODES",
    "TEMPLATE_STRINGS",
    "AuthConfig",
    "ChatopsConfig",
    "Duration",
    "EmailConfig",
    "InhibitRuleConfig",
    "PagerDutyConfig",
    "ReceiverConfig",
    "RouteConfig",
    "RouterConfig",
    "RunbookConfig",
    "SlackChatops",
    "SlackConfig",
    "TelegramChatops",
    "TelegramConfig",
    "config_notes",
    "format_path",
    "load_config",
    "parse_config",
    "parse_duration",
    "secret_values",
]

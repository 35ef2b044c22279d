"""routes.yaml -> validated pydantic models; every error names file:line and the key path.

load.py reads the YAML (line marks, ${VAR}, alias-bomb guard) and validates it, problems.py
words what is wrong, types.py holds the shared field types, model.py the schema. Each channel's
config model lives with its channel (router/channels/<kind>/config.py), the chatops sections
with chatops (router/chatops/config.py); they are imported from there.

The public names below are imported from here, each when first asked for (PEP 562): a channel's
config module imports router.config.types, which runs this file first, and the model imports
that channel's config module back; loaded at once here, the model would find it half-made.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from router.config.load import MAX_YAML_NODES as MAX_YAML_NODES
    from router.config.load import load_config as load_config
    from router.config.load import parse_config as parse_config
    from router.config.model import AuthConfig as AuthConfig
    from router.config.model import ChatopsConfig as ChatopsConfig
    from router.config.model import InhibitRuleConfig as InhibitRuleConfig
    from router.config.model import ReceiverConfig as ReceiverConfig
    from router.config.model import RouteConfig as RouteConfig
    from router.config.model import RouterConfig as RouterConfig
    from router.config.model import RunbookConfig as RunbookConfig
    from router.config.problems import config_notes as config_notes
    from router.config.problems import format_path as format_path
    from router.config.types import TEMPLATE_STRINGS as TEMPLATE_STRINGS
    from router.config.types import Duration as Duration
    from router.config.types import parse_duration as parse_duration
    from router.config.types import secret_values as secret_values

_MODULES = (
    "router.config.load",
    "router.config.model",
    "router.config.problems",
    "router.config.types",
)


def __getattr__(name: str) -> Any:
    """`from router.config import X`: X from the first submodule that has it."""
    if not name.startswith("_"):
        for module in _MODULES:
            found = getattr(importlib.import_module(module), name, None)
            if found is not None:
                return found
    raise AttributeError(f"module 'router.config' has no attribute {name!r}")

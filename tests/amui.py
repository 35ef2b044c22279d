"""How the Alertmanager UI reads a silence link's ``filter``, in both of its generations.

A model of ui/app/src/Utils/Filter.elm (`parseFilter`): ``{`` matchers separated by ``,`` ``}``,
each a label name, an operator (``=~``, ``!~``, ``=``, ``!=``) and a double-quoted string
whose body is any run of ``\\`` + one character or of characters other than ``\\`` and ``"``.
The 0.25-0.31 UIs keep that body as is ("Remove quotes": drop the first and last character);
later ones JSON-decode the quoted string (JSON.parse: refuses raw control characters).
"""

from __future__ import annotations

import json
import re
from urllib.parse import unquote

_ITEM = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)(=~|!~|=|!=)("(?:\\.|[^\\"])*")\s*', re.DOTALL)


def filter_of(link: str) -> str:
    """The percent-decoded ``filter`` parameter of a ``…/#/silences/new?filter=…`` link."""
    _, _, query = link.partition("#/silences/new?")
    params = dict(p.split("=", 1) for p in query.split("&"))
    return unquote(params["filter"], errors="strict")


def parse_filter(text: str, json_strings: bool) -> list[dict[str, object]]:
    """API v2 matchers as the silence form fills them; ValueError where the UI refuses.

    json_strings: False for the 0.25-0.31 UIs, True for the later ones.
    """
    if not (text.startswith("{") and text.endswith("}")):
        raise ValueError(f"not a filter: {text!r}")
    body, pos, matchers = text[1:-1], 0, []
    while pos < len(body):
        m = _ITEM.match(body, pos)
        if m is None:
            raise ValueError(f"cannot parse at {pos}: {body[pos:]!r}")
        name, op, quoted = m.groups()
        value = json.loads(quoted) if json_strings else quoted[1:-1]  # strict: no raw controls
        matchers.append(
            {"name": name, "value": value, "isRegex": "~" in op, "isEqual": op in ("=", "=~")}
        )
        pos = m.end()
        if pos < len(body):
            if body[pos] != ",":
                raise ValueError(f"expected ',' at {pos}: {body[pos:]!r}")
            pos += 1
    return matchers

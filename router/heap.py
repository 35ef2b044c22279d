"""Python's garbage collector, set for a server that keeps its working set in memory.

A full (generation 2) collection walks every tracked object: with the modules loaded and a
state of 100,000 alerts that is 50-400 ms during which no webhook is answered. Objects that
survived a full collection are moved to the permanent generation (`gc.freeze`), so the next
one walks only what came since; once an hour they are handed back (`gc.unfreeze`) so that a
reference cycle that died meanwhile is still reclaimed.
"""

from __future__ import annotations

import gc
from typing import Any


def _after_collection(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info["generation"] == 2:
        gc.freeze()


def install() -> None:
    """Freeze what lives now (code, config, loaded state); freeze after each full collection."""
    gc.collect()
    gc.freeze()
    if _after_collection not in gc.callbacks:
        gc.callbacks.append(_after_collection)


def release() -> None:
    """Let the next full collection walk everything again (called hourly)."""
    gc.unfreeze()

"""Python's cyclic garbage collector, set for a server that keeps its working set in memory.

A full (generation 2) collection walks every tracked object and touches what each refers to:
with the state of a few thousand open incidents that stops the event loop, so every webhook
waits, for hundreds of milliseconds, and it comes back each time the heap has grown by a
quarter (CPython's rule for full collections). So, while the router serves, what survived a
full collection is moved to the permanent generation (`gc.freeze`): the next one walks only
what came since. Once every RELEASE_INTERVAL the frozen objects are handed back
(`gc.unfreeze`), so that a reference cycle that died meanwhile is still reclaimed; objects
that are not in a cycle are freed by reference counting whether frozen or not.

Source: the gc module's documentation ("gc.freeze ... useful for long-lived processes"), and
CPython's Modules/gcmodule.c for the full-collection rule (long_lived_pending >
long_lived_total / 4).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

RELEASE_INTERVAL = timedelta(hours=1)


def _after_collection(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info["generation"] == 2:
        gc.freeze()


def install() -> None:
    """Collect, freeze what lives now (code, config, the loaded state), and freeze the
    survivors of every full collection from now on."""
    gc.collect()
    gc.freeze()
    if _after_collection not in gc.callbacks:
        gc.callbacks.append(_after_collection)


def uninstall() -> None:
    """Stop freezing and hand every frozen object back to the collector."""
    if _after_collection in gc.callbacks:
        gc.callbacks.remove(_after_collection)
    gc.unfreeze()


def release() -> None:
    """Hand the frozen objects back: the next full collection walks everything again, then
    freezes its survivors anew."""
    gc.unfreeze()


async def frozen_while_serving(interval: timedelta = RELEASE_INTERVAL) -> AsyncIterator[None]:
    """An aiohttp cleanup context: install() at start, release() every `interval` while the
    app serves, uninstall() at the end. serve() adds it after the store's, so the state is
    loaded (and frozen with the rest) when it starts."""
    install()

    async def release_forever() -> None:
        while True:
            await asyncio.sleep(interval.total_seconds())
            release()

    task = asyncio.create_task(release_forever(), name="heap release")
    try:
        yield
    finally:
        task.cancel()
        uninstall()

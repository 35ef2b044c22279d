"""router/heap.py: survivors of full collections are frozen; release() hands them back."""

from __future__ import annotations

import asyncio
import gc
import weakref
from datetime import timedelta

import pytest

from router import heap


class Node:
    """A tracked object in a reference cycle."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def collector():  # type: ignore[no-untyped-def]
    """Leave the test process's collector as it found it."""
    yield
    heap.uninstall()


def test_install_freezes_what_lives_and_each_full_collection_freezes_its_survivors(
    collector: None,
) -> None:
    heap.install()
    assert _after(heap._after_collection)
    frozen = gc.get_freeze_count()
    assert frozen > 0
    keep = [Node() for _ in range(1000)]
    gc.collect(2)
    assert gc.get_freeze_count() >= frozen + len(keep)


def test_release_hands_frozen_objects_back_so_dead_cycles_are_reclaimed(collector: None) -> None:
    heap.install()
    cycles = [Node() for _ in range(100)]
    refs = [weakref.ref(n) for n in cycles]
    gc.collect(2)  # survivors: frozen
    del cycles
    gc.collect(2)
    assert all(r() is not None for r in refs)  # dead cycles, frozen: not walked, not freed
    heap.release()
    assert gc.get_freeze_count() == 0
    gc.collect(2)
    assert all(r() is None for r in refs)
    assert gc.get_freeze_count() > 0  # the survivors of that collection are frozen again


def test_uninstall_stops_freezing(collector: None) -> None:
    heap.install()
    heap.uninstall()
    assert not _after(heap._after_collection)
    assert gc.get_freeze_count() == 0
    gc.collect(2)
    assert gc.get_freeze_count() == 0


def test_frozen_while_serving_releases_every_interval_and_uninstalls_at_the_end() -> None:
    async def scenario() -> None:
        ctx = heap.frozen_while_serving(timedelta(milliseconds=1))
        await ctx.__anext__()
        assert gc.get_freeze_count() > 0
        async with asyncio.timeout(10):
            while gc.get_freeze_count():  # released by the task; nothing collects meanwhile
                await asyncio.sleep(0.001)
        with pytest.raises(StopAsyncIteration):
            await ctx.__anext__()
        assert not _after(heap._after_collection)

    asyncio.run(scenario())


def _after(callback: object) -> bool:
    return callback in gc.callbacks

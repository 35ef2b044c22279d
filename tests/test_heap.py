"""router/heap.py: survivors of a full collection are frozen, and handed back on release."""

from __future__ import annotations

import gc

from router import heap


def test_full_collections_freeze_survivors_and_release_hands_them_back() -> None:
    heap.install()
    try:
        assert gc.get_freeze_count() > 0  # code, config: frozen at install
        gc.unfreeze()
        kept = [[n] for n in range(1000)]  # tracked objects that survive
        gc.collect()
        assert gc.get_freeze_count() >= len(kept)  # frozen after the full collection
        heap.release()
        assert gc.get_freeze_count() == 0
        gc.collect(1)  # a young collection does not freeze
        assert gc.get_freeze_count() == 0
    finally:
        gc.callbacks.remove(heap._after_collection)
        gc.unfreeze()

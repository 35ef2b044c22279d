"""Which store engine a config selects: SQLite at `storage.path` (the default) or PostgreSQL
at `storage.url`."""

from __future__ import annotations

from router.config import RouterConfig
from router.store import Store
from router.store.postgres import PostgresStore
from router.store.sqlite import SqliteStore


def store_for(config: RouterConfig) -> Store:
    """The store (not open yet) that `config.storage` selects."""
    storage = config.storage
    if storage.url is not None:
        password = storage.password.get_secret_value() if storage.password else None
        return PostgresStore(storage.url, password)
    return SqliteStore(config.resolve_path(storage.path), synchronous=storage.synchronous)


def where(config: RouterConfig) -> str:
    """Where the state is kept, for logs: the SQLite file or the URL (without its password)."""
    return config.storage.url or str(config.resolve_path(config.storage.path))

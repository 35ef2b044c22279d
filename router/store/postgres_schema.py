"""The store's PostgreSQL schema, version by version, and its upgrade under an advisory lock.

The tables and columns are SQLite's (router/store/schema.py, version 8), in the same order, so
that router/store/rows.py maps rows of both engines. Times are ISO 8601 text in UTC as in
SQLite; the columns compared or sorted use the "C" collation, so that they order as SQLite
orders them whatever the database's locale.
"""

from __future__ import annotations

import asyncpg

from router.errors import StoreError

# pg_advisory_xact_lock key held while migrating: one replica upgrades, the others wait.
MIGRATION_LOCK = 0x616C_6572_7401  # "alert" + 1
# NOTIFY channel on which a replica that queued a chat command wakes the planner.
COMMANDS_CHANNEL = "alert_router_commands"
# pg_advisory_xact_lock key held by each inbox insert: ids commit in id order across replicas.
INBOX_LOCK = 0x616C_6572_7403

SCHEMA = [
    # version 1: SQLite's version 8
    """
    CREATE TABLE alerts (
        fingerprint TEXT COLLATE "C" PRIMARY KEY,
        labels TEXT NOT NULL,
        annotations TEXT NOT NULL,
        status TEXT NOT NULL,
        starts_at TEXT NOT NULL,
        ends_at TEXT,
        generator_url TEXT NOT NULL,
        first_seen TEXT NOT NULL,
        last_seen TEXT COLLATE "C" NOT NULL,
        inhibited_by TEXT,
        receivers TEXT NOT NULL
    );
    CREATE INDEX alerts_status ON alerts(status);
    CREATE TABLE incidents (
        id TEXT COLLATE "C" PRIMARY KEY,
        receiver TEXT NOT NULL,
        am_receiver TEXT NOT NULL,
        group_key TEXT NOT NULL,
        status TEXT NOT NULL,
        opened_at TEXT COLLATE "C" NOT NULL,
        resolved_at TEXT COLLATE "C",
        alerts TEXT NOT NULL,
        notified TEXT,
        last_notified_at TEXT,
        group_labels TEXT NOT NULL,
        common_labels TEXT NOT NULL,
        common_annotations TEXT NOT NULL,
        external_url TEXT NOT NULL,
        truncated_alerts INTEGER NOT NULL,
        acked_by TEXT,
        acked_at TEXT,
        ack_via TEXT NOT NULL DEFAULT '',
        ack_comment TEXT NOT NULL DEFAULT '',
        silence_id TEXT NOT NULL DEFAULT '',
        escalated_at TEXT,
        escalated_to TEXT NOT NULL DEFAULT ''
    );
    CREATE UNIQUE INDEX incidents_open ON incidents(receiver, am_receiver, group_key)
        WHERE status = 'firing';
    CREATE INDEX incidents_opened ON incidents(opened_at, id);
    CREATE TABLE views (id BIGSERIAL PRIMARY KEY, view TEXT NOT NULL);
    CREATE TABLE outbox (
        id BIGSERIAL PRIMARY KEY,
        incident_id TEXT COLLATE "C" NOT NULL REFERENCES incidents(id),
        receiver TEXT NOT NULL,
        channel TEXT NOT NULL,
        channel_index INTEGER NOT NULL,
        reason TEXT NOT NULL,
        view_id BIGINT NOT NULL REFERENCES views(id),
        correlation_id TEXT NOT NULL,
        created_at TEXT COLLATE "C" NOT NULL,
        state TEXT NOT NULL DEFAULT 'queued',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT COLLATE "C" NOT NULL,
        last_error TEXT,
        sent_at TEXT,
        message_ref TEXT
    );
    CREATE INDEX outbox_due ON outbox(state, next_attempt_at);
    CREATE INDEX outbox_incident ON outbox(incident_id);
    CREATE TABLE messages (
        incident_id TEXT COLLATE "C" NOT NULL REFERENCES incidents(id),
        receiver TEXT NOT NULL,
        channel TEXT NOT NULL,
        channel_index INTEGER NOT NULL,
        ref TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (incident_id, receiver, channel, channel_index)
    );
    CREATE INDEX messages_ref ON messages(channel, ref);
    CREATE TABLE inbox (
        id BIGSERIAL PRIMARY KEY,
        body BYTEA NOT NULL,
        correlation_id TEXT NOT NULL,
        received_at TEXT NOT NULL
    );
    CREATE INDEX inbox_correlation ON inbox(correlation_id);
    CREATE TABLE planner (watermark BIGINT NOT NULL);
    INSERT INTO planner VALUES (0);
    CREATE TABLE set_aside (
        id BIGSERIAL PRIMARY KEY,
        body BYTEA NOT NULL,
        correlation_id TEXT NOT NULL,
        received_at TEXT NOT NULL,
        error TEXT NOT NULL
    );
    CREATE TABLE moved_chats (
        channel TEXT NOT NULL,
        old_id TEXT NOT NULL,
        new_id TEXT NOT NULL,
        moved_at TEXT NOT NULL,
        PRIMARY KEY (channel, old_id)
    );
    """,
    # version 2: a group key or receiver of any length (a btree entry holds at most 2704 bytes)
    """
    DROP INDEX incidents_open;
    CREATE UNIQUE INDEX incidents_open ON incidents(md5(receiver), md5(am_receiver), md5(group_key))
        WHERE status = 'firing';
    """,
    # version 3: delivery on every replica. A claimed (state 'sending') outbox row names the
    # replica that holds it and until when (the database's clock); a destination is worked by
    # the replica that holds its row in destination_leases, until lease_until.
    """
    ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
    ALTER TABLE outbox ADD COLUMN lease_until TIMESTAMPTZ;
    CREATE TABLE destination_leases (
        receiver TEXT NOT NULL,
        channel TEXT NOT NULL,
        channel_index INTEGER NOT NULL,
        claimed_by TEXT NOT NULL,
        lease_until TIMESTAMPTZ NOT NULL
    );
    CREATE UNIQUE INDEX destination_leases_key
        ON destination_leases(md5(receiver), channel, channel_index);
    """,
    # version 4: /ack and /unack taken by any replica, applied by the planner (router/chatops)
    """
    CREATE TABLE commands (
        id BIGSERIAL PRIMARY KEY,
        name TEXT NOT NULL,
        incident_id TEXT NOT NULL,
        actor TEXT NOT NULL,
        duration_s DOUBLE PRECISION,
        comment TEXT NOT NULL,
        created_at TEXT NOT NULL,
        silence_id TEXT NOT NULL DEFAULT '',
        result TEXT,
        applied_at TEXT
    );
    CREATE INDEX commands_pending ON commands(id) WHERE result IS NULL;
    """,
    # version 5: several replicas; one planner at a time, holding the lease (router/roles.py).
    # The epoch of the lease is recorded with the watermark and on every notification queued.
    """
    CREATE TABLE planner_lease (
        epoch BIGINT NOT NULL,
        holder TEXT NOT NULL,
        lease_until TIMESTAMPTZ NOT NULL
    );
    INSERT INTO planner_lease VALUES (0, '', '-infinity');
    ALTER TABLE planner ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE outbox ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
    """,
    # version 6: the ids of the last Telegram webhook updates, seen by any replica (Telegram
    # may send an update again, to another replica behind a load balancer)
    """
    CREATE TABLE telegram_updates (
        update_id BIGINT PRIMARY KEY,
        seen_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE INDEX telegram_updates_seen_at ON telegram_updates(seen_at);
    """,
    # version 7: a claim walks the queued rows in id order and stops at its limit (not every
    # due row, nor the sent ones before them in the primary key)
    """
    CREATE INDEX outbox_queued ON outbox(id) WHERE state = 'queued';
    """,
]
SCHEMA_VERSION = len(SCHEMA)


async def migrate(conn: asyncpg.Connection, where: str) -> None:
    """Bring the database to SCHEMA_VERSION in one transaction under MIGRATION_LOCK.

    Replicas starting together wait for the lock: the first upgrades, the others find the
    version done. The version is the one row of `schema_version`. Raises StoreError (naming
    `where`, the URL without its password) if the database is of a newer version than this
    alert-router knows: an older replica must not write a schema it does not know.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        version = await conn.fetchval("SELECT version FROM schema_version")
        if version is None:
            version = 0
            await conn.execute("INSERT INTO schema_version VALUES (0)")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{where}: schema version {version} is newer than this alert-router knows "
                f"({SCHEMA_VERSION}); upgrade alert-router or use another database"
            )
        for script in SCHEMA[version:]:
            await conn.execute(script)
        await conn.execute("UPDATE schema_version SET version=$1", SCHEMA_VERSION)

"""Per-receiver allow-lists: who may ack one team's incidents, by ids, with the global lists as
the default; a refused ack changes nothing and sends PagerDuty nothing."""

from __future__ import annotations

import asyncio
from typing import Any

from ..harness import Fakes, firing_payload, post, settled
from .test_slack import SIGNING_SECRET, acked_by, command, slash

RECEIVERS = """
  - name: main
    pagerduty_configs: [{routing_key: R0UTINGKEY0000000000000000000000, url: PAGERDUTY}]
  - name: db
    pagerduty_configs: [{routing_key: DBR0UTINGKEY000000000000000000000, url: PAGERDUTY}]
"""
CHATOPS = f"""
route:
  receiver: main
  routes:
    - matchers: ['group=~"db.*"']
      receiver: db
chatops:
  slack:
    signing_secret: {SIGNING_SECRET}
    team_id: T000
    allowed_channels: [C0ALERTS, C0DB]
    receivers:
      db: {{allowed_channels: [C0DB], allowed_users: [U0DBA]}}
"""


async def test_a_receivers_incidents_are_acked_only_by_its_people(
    fakes: Fakes, make_client: Any
) -> None:
    client = await make_client(fakes, RECEIVERS, CHATOPS)
    db = (await post(client, firing_payload(1, "db-disk")))["incidents"][0]
    main = (await post(client, firing_payload(1, "web-latency")))["incidents"][0]
    await settled(client)

    refused = [
        slash(db, user="bob", channel_id="C0DB"),  # not a DBA
        slash(db, user="dba", user_id="U0DBA", channel_id="C0ALERTS"),  # a DBA, not in #db
    ]
    answers = [(await command(client, body))[1] for body in refused]
    assert [a["text"] for a in answers] == [
        "Sorry, @bob (user id UBOB) may not acknowledge incidents of receiver 'db' from here.",
        "Sorry, @dba (user id U0DBA) may not acknowledge incidents of receiver 'db' from here.",
    ]
    assert all(a["response_type"] == "ephemeral" for a in answers)
    assert await acked_by(client, db) is None
    # The unack of someone else's team is refused too; /alerts and /help stay open to all.
    _, answer = await command(client, slash(db, user="dba", user_id="U0DBA", channel_id="C0DB"))
    assert answer["text"].startswith(f"✅ #{db} acknowledged by @dba.")
    _, answer = await command(
        client, slash(db, user="bob", channel_id="C0DB").replace(b"%2Fack", b"%2Funack")
    )
    assert answer["text"].startswith("Sorry, @bob (user id UBOB) may not acknowledge")
    assert await acked_by(client, db) == "@dba"

    # Receivers without a list of their own take the global one: anyone in an allowed channel.
    _, answer = await command(client, slash(main, user="bob", channel_id="C0DB"))
    assert answer["text"].startswith(f"✅ #{main} acknowledged by @bob.")
    await settled(client)
    acks = [e["routing_key"] for e in fakes.pagerduty.events if e["event_action"] == "acknowledge"]
    assert sorted(acks) == ["DBR0UTINGKEY000000000000000000000", "R0UTINGKEY0000000000000000000000"]


async def test_refused_attempts_in_flight_do_not_hold_up_an_allowed_ack(
    fakes: Fakes, make_client: Any
) -> None:
    # A refused user's /ack used to mark the incident busy while it was looked up, so the DBA
    # acking at that moment was told "#id is being acknowledged by @bob just now".
    client = await make_client(fakes, RECEIVERS, CHATOPS)
    db = (await post(client, firing_payload(1, "db-busy")))["incidents"][0]
    await settled(client)
    refused = [slash(db, user=f"bob{n}", channel_id="C0DB") for n in range(6)]
    allowed = slash(db, user="dba", user_id="U0DBA", channel_id="C0DB")
    answers = await asyncio.gather(*(command(client, body) for body in [*refused, allowed]))
    texts = [a["text"] for _, a in answers]
    assert all(t.startswith("Sorry, @bob") for t in texts[:-1]), texts
    assert texts[-1].startswith(f"✅ #{db} acknowledged by @dba."), texts[-1]
    assert await acked_by(client, db) == "@dba"

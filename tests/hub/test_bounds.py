"""What one client can make the hub keep is bounded (HubConfig): retained messages per client and
in total, subscriptions per session, offline sessions per identity, session expiry.

Conversations over the in-memory transport; the same rules run over TCP in tests/security.
"""

from __future__ import annotations

import pytest
from _wire import (
    PUBACK,
    HubFactory,
    ack,
    expect,
    expect_ack5,
    expect_silence,
    leave,
    open_client,
    prop,
    publish,
    read_packets,
    start_hub,
    suback,
    subscribe,
    sync,
    without_suback,
)

from enos_lab.clock import Clock, SimulatedClock
from enos_lab.errors import InvalidArgument, LimitExceeded
from enos_lab.hub import AuthResult, ConnectRequest, Hub, HubConfig, Message

pytestmark = pytest.mark.anyio


async def test_retained_messages_of_one_client_are_bounded_in_count(make_hub: HubFactory) -> None:
    hub = await start_hub(make_hub, max_retained_per_client=3)
    conn = await open_client(hub, "flooder")
    for n in range(5):
        await conn.send(publish(f"r/{n}", b"x", qos=1, pid=n + 1, retain=True))
        await expect(conn, ack(PUBACK, n + 1))  # 3.1.1 has no negative acknowledgement
    await sync(conn)
    assert hub.stats.retained == 3
    # replacing one of its own topics stays within the budget
    await conn.send(publish("r/0", b"new", qos=1, pid=9, retain=True))
    await expect(conn, ack(PUBACK, 9))
    # another client has a budget of its own
    other = await open_client(hub, "other")
    await other.send(publish("o/1", b"y", qos=1, pid=1, retain=True))
    await expect(other, ack(PUBACK, 1))
    await sync(other)
    assert hub.stats.retained == 4
    watch = await open_client(hub, "watch")
    await watch.send(subscribe(1, ("r/#", 0)))
    packets = without_suback(await read_packets(watch, 4), suback(1, 0))
    assert sorted(packets) == sorted(
        [b"\x31\x08\x00\x03r/0new", b"\x31\x06\x00\x03r/1x", b"\x31\x06\x00\x03r/2x"]
    )
    for c in (conn, other, watch):
        await leave(c)


async def test_a_refused_retained_message_is_not_delivered_and_5_0_gets_quota_exceeded(
    make_hub: HubFactory,
) -> None:
    hub = await start_hub(make_hub, max_retained_bytes_per_client=100)
    watch = await open_client(hub, "watch")
    await watch.send(subscribe(1, ("big/#", 0)))
    await expect(watch, suback(1, 0))
    conn = await open_client(hub, "five", level=5)
    await conn.send(publish("big/1", b"x" * 200, qos=1, pid=1, retain=True, level=5))
    await expect_ack5(conn, PUBACK, 1, 0x97)
    await expect_silence(watch)
    assert hub.stats.retained == 0
    await conn.send(publish("big/2", b"x" * 10, qos=1, pid=2, retain=True, level=5))
    await expect_ack5(conn, PUBACK, 2, 0)
    assert hub.stats.retained == 1
    assert hub.stats.retained_bytes == 10 + len("big/2")


async def test_retained_messages_are_bounded_in_total(make_hub: HubFactory) -> None:
    hub = await start_hub(make_hub, max_retained_messages=4)
    for n in range(6):
        conn = await open_client(hub, f"c{n}")
        await conn.send(publish(f"t/{n}", b"x", qos=1, pid=1, retain=True))
        await expect(conn, ack(PUBACK, 1))
        await leave(conn)
    assert hub.stats.retained == 4
    with pytest.raises(LimitExceeded, match="max_retained"):
        await hub.publish(Message("t/server", b"x", retain=True))
    # clearing a topic frees room
    await hub.publish(Message("t/0", b"", retain=True))
    await hub.publish(Message("t/server", b"x", retain=True))
    assert hub.stats.retained == 4


async def test_subscriptions_per_session_are_bounded(make_hub: HubFactory) -> None:
    hub = await start_hub(make_hub, max_subscriptions=2)
    conn = await open_client(hub, "subs")
    await conn.send(subscribe(1, ("a", 0), ("b", 1), ("c", 0)))
    await expect(conn, suback(1, 0, 1, 0x80))
    await conn.send(subscribe(2, ("a", 1)))  # the same filter again: replaced, not counted
    await expect(conn, suback(2, 1))
    five = await open_client(hub, "subs5", level=5)
    await five.send(subscribe(1, ("a", 0), ("b", 0), ("c", 0), level=5))
    await expect(five, suback(1, 0, 0, 0x97, level=5))


class _Devices:
    """An authenticator giving every client the identity named by its username."""

    def authenticate(self, request: ConnectRequest) -> AuthResult:
        return AuthResult(True, identity=request.username)


async def _identity_hub(*, clock: Clock | None = None, **config: object) -> Hub:
    hub = Hub(HubConfig(**config), authenticator=_Devices(), clock=clock)  # type: ignore[arg-type]
    await hub.start()
    return hub


async def test_offline_sessions_per_identity_are_bounded() -> None:
    hub = await _identity_hub(max_offline_sessions=2)
    try:
        for n in range(5):
            conn = await open_client(hub, f"ghost{n}", username="dev", clean=False)
            await conn.send(subscribe(1, ("x", 1)))
            await expect(conn, suback(1, 1))
            await leave(conn)
        for n in range(3):
            conn = await open_client(hub, f"other{n}", username="dev2", clean=False)
            await leave(conn)
        assert hub.stats.sessions == 4
        # the two kept are the newest of each identity
        conn = await open_client(hub, "ghost4", username="dev", clean=False, session_present=True)
        await leave(conn)
        conn = await open_client(hub, "ghost0", username="dev", clean=False, session_present=False)
        await leave(conn)
    finally:
        await hub.stop()


async def test_the_same_client_id_of_two_identities_are_two_sessions() -> None:
    hub = await _identity_hub()
    try:
        first = await open_client(hub, "same", username="a", clean=False)
        second = await open_client(hub, "same", username="b", clean=False)
        assert set(hub.clients) == {("a", "same"), ("b", "same")}
        await sync(first)  # not taken over
        assert await hub.deliver(("a", "same"), Message("cmd", b"1")) is True
        await expect(first, b"\x30\x06\x00\x03cmd1")
        await expect_silence(second)
        assert hub.end_identity("a") == 1
        assert set(hub.clients) == {("b", "same")}
        assert hub.stats.sessions == 1
        await leave(second)
    finally:
        await hub.stop()


async def test_3_1_1_sessions_expire_after_session_expiry_v311(clock: SimulatedClock) -> None:
    hub = await _identity_hub(clock=clock, session_expiry_v311=1, connect_timeout=0.4)
    try:
        conn = await open_client(hub, "p", username="dev", clean=False)
        await leave(conn)
        assert hub.stats.sessions == 1
        await clock.advance_async(0.9)
        assert hub.stats.sessions == 1
        await clock.advance_async(0.1)
        assert hub.stats.sessions == 0
    finally:
        await hub.stop()


@pytest.mark.parametrize(
    "field",
    ["max_offline_sessions", "max_subscriptions", "max_retained_messages", "max_retained_bytes"],
)
def test_bounds_must_be_positive(field: str) -> None:
    with pytest.raises(InvalidArgument, match=field):
        HubConfig(**{field: 0})  # type: ignore[arg-type]


async def test_a_session_discarded_at_the_offline_bound_publishes_its_delayed_will() -> None:
    """5.0 3.1.3.2.2: a delayed will is published when the session ends; discarding the
    session at the per-identity bound ends it, so the will goes out then, not at its delay."""
    hub = await _identity_hub(max_offline_sessions=1)
    try:
        sub = await open_client(hub, "watch", username="watcher")
        await sub.send(subscribe(1, ("w/#", 0)))
        await expect(sub, suback(1, 0))
        owner = await open_client(
            hub,
            "first",
            level=5,
            username="dev",
            clean=False,
            will=("w/first", b"gone", 0, False),
            will_properties=prop(0x18, 600),  # will delay 600 s
            properties=prop(0x11, 3600),  # session expiry 3600 s
        )
        owner.close()  # no DISCONNECT: the will is due after its delay
        await expect_silence(sub)
        second = await open_client(
            hub, "second", level=5, username="dev", clean=False, properties=prop(0x11, 3600)
        )
        await second.send(b"\xe0\x00")  # its session goes offline: "first" is discarded
        await expect(sub, b"\x30\x0d\x00\x07w/firstgone")
        assert hub.stats.sessions == 2  # "second" and the watcher's
    finally:
        await hub.stop()

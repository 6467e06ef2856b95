"""What a session may receive follows the device's permissions as they change, and what a
device can make the hub remember of its subscriptions is bounded (issue "Close the holes",
items 4, 6 and 10), over real TCP.

The attacks: a gateway that keeps receiving a sub-device's replies after the sub-device moved to
another gateway; subscriptions that outlive a disabled device; retained requests; a connection
that subscribes to thousands of foreign reply topics so that every later SUBSCRIBE (and the
loop with it) gets slower.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time

from _attack_kit import RawDevice, credentials, sub_device_login

from enos_lab import Lab


def reply_topic(product_key: str, device_key: str) -> str:
    return f"/sys/{product_key}/{device_key}/thing/measurepoint/post_reply"


def post_topic(product_key: str, device_key: str) -> str:
    return f"/sys/{product_key}/{device_key}/thing/measurepoint/post"


class Site:
    """Gateways g1, g2 and sub-device s1 (attached to g1) of one lab."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.gw = lab.create_product("Gateways", node_type="gateway").product_key
        self.sub = lab.create_product("Meters", node_type="sub_device").product_key
        self.secrets = {
            "g1": lab.register_device(self.gw, device_key="g1").device_secret,
            "g2": lab.register_device(self.gw, device_key="g2").device_secret,
            "s1": lab.register_device(self.sub, device_key="s1").device_secret,
        }
        lab.registry.attach((self.gw, "g1"), (self.sub, "s1"))

    async def gateway(self, key: str) -> RawDevice:
        device, ack = await RawDevice.connect(
            self.lab.port, *credentials(self.gw, key, self.secrets[key]), clean=False
        )
        assert ack.reason_code == 0
        return device

    async def log_in_s1(self, gateway: RawDevice, key: str) -> None:
        reply = await gateway.request(
            f"/ext/session/{self.gw}/{key}/combine/login",
            sub_device_login(self.sub, "s1", self.secrets["s1"]),
        )
        assert reply["code"] == 200, reply

    async def log_out_s1(self, gateway: RawDevice, key: str) -> None:
        reply = await gateway.request(
            f"/ext/session/{self.gw}/{key}/combine/logout",
            {"productKey": self.sub, "deviceKey": "s1"},
        )
        assert reply["code"] == 200, reply


def test_a_gateway_stops_receiving_a_sub_device_that_moved_to_another_gateway(lab: Lab) -> None:
    site = Site(lab)
    s1_replies = reply_topic(site.sub, "s1")

    async def body() -> None:
        g1 = await site.gateway("g1")
        await site.log_in_s1(g1, "g1")
        assert await g1.subscribe(s1_replies) == (1,)
        await site.log_out_s1(g1, "g1")
        lab.registry.detach((site.gw, "g1"), (site.sub, "s1"))
        lab.registry.attach((site.gw, "g2"), (site.sub, "s1"))
        g2 = await site.gateway("g2")
        await site.log_in_s1(g2, "g2")
        reply = await g2.request(post_topic(site.sub, "s1"), {"measurepoints": {"p": 1.5}})
        assert reply["code"] == 200
        assert await g1.quiet(topic=s1_replies), "g1 still receives s1's replies"
        # from the hub side too: the message reaches g2's session only
        assert await asyncio.to_thread(lab.publish, s1_replies, b"x", qos=1) == 1
        assert (await g2.read_publish(s1_replies)).payload == b"x"
        assert await g1.quiet(topic=s1_replies)
        # g1's persistent session, offline, does not collect them either
        await g1.disconnect()
        assert await asyncio.to_thread(lab.publish, s1_replies, b"y", qos=1) == 1
        g1 = await site.gateway("g1")
        assert await g1.quiet(topic=s1_replies)
        await g1.disconnect()
        await g2.disconnect()

    asyncio.run(body())


def test_subscriptions_to_a_disabled_sub_device_stop_delivering(lab: Lab) -> None:
    site = Site(lab)
    s1_replies = reply_topic(site.sub, "s1")

    async def body() -> None:
        g1 = await site.gateway("g1")
        await site.log_in_s1(g1, "g1")
        assert await g1.subscribe(s1_replies) == (1,)
        assert await asyncio.to_thread(lab.publish, s1_replies, b"before", qos=1) == 1
        assert (await g1.read_publish(s1_replies)).payload == b"before"
        await asyncio.to_thread(lab.disable_device, site.sub, "s1")
        assert await asyncio.to_thread(lab.publish, s1_replies, b"after", qos=1) == 0
        assert await g1.quiet(topic=s1_replies)
        await g1.disconnect()

    asyncio.run(body())


def test_a_disabled_devices_persistent_session_is_ended(lab: Lab) -> None:
    pk = lab.create_product("Meters").product_key
    secret = lab.register_device(pk, device_key="d1").device_secret
    topic = reply_topic(pk, "d1")

    async def body() -> None:
        login = credentials(pk, "d1", secret)
        device, _ = await RawDevice.connect(lab.port, *login, clean=False)
        assert await device.subscribe(topic) == (1,)
        await device.disconnect()
        assert lab.hub.stats.sessions == 1
        await asyncio.to_thread(lab.disable_device, pk, "d1")
        assert lab.hub.stats.sessions == 0
        assert await asyncio.to_thread(lab.publish, topic, b"queued?", qos=1) == 0
        await asyncio.to_thread(lab.enable_device, pk, "d1")
        device, ack = await RawDevice.connect(lab.port, *login, clean=False)
        assert (ack.reason_code, ack.session_present) == (0, False)
        assert await device.quiet(topic=topic)
        await device.disconnect()

    asyncio.run(body())


def test_retained_messages_are_refused_on_enos_topics(lab: Lab) -> None:
    pk = lab.create_product("Meters").product_key
    secret = lab.register_device(pk, device_key="d1").device_secret
    lab.register_device(pk, device_key="d2")
    request = {"id": "1", "version": "1.0", "method": "x", "params": {"measurepoints": {"p": 1}}}

    async def body() -> None:
        device, _ = await RawDevice.connect(lab.port, *credentials(pk, "d1", secret))
        await device.subscribe(reply_topic(pk, "d1"))
        for topic in (post_topic(pk, "d1"), post_topic(pk, "d2"), reply_topic(pk, "d2")):
            await device.publish(topic, json.dumps(request).encode(), retain=True)
        assert await device.quiet(topic=reply_topic(pk, "d1"))
        # the connection is still served
        reply = await device.request(post_topic(pk, "d1"), {"measurepoints": {"p": 2}})
        assert reply["code"] == 200
        await device.disconnect()

    asyncio.run(body())
    assert lab.hub.stats.retained == 0


def test_refused_reply_filters_do_not_slow_later_subscribes(lab: Lab) -> None:
    # 40 SUBSCRIBEs of 500 foreign reply topics each; what the hub remembers per connection
    # is bounded, so the last SUBSCRIBEs cost what the first ones did (they were quadratic:
    # 132 ms per SUBSCRIBE after 20,000 refused filters)
    pk = lab.create_product("Meters").product_key
    secret = lab.register_device(pk, device_key="d1").device_secret

    async def body() -> list[float]:
        device, _ = await RawDevice.connect(lab.port, *credentials(pk, "d1", secret))
        times = []
        for batch in range(40):
            filters = [reply_topic(pk, f"other{batch}x{i}") for i in range(500)]
            started = time.perf_counter()
            codes = await device.subscribe(*filters)
            times.append(time.perf_counter() - started)
            assert set(codes) == {0x80}
        reply = await device.request(post_topic(pk, "d1"), {"measurepoints": {"p": 2}})
        assert reply["code"] == 200
        await device.disconnect()
        return times

    times = asyncio.run(body())
    first, last = statistics.median(times[1:6]), statistics.median(times[-5:])
    assert last < 4 * first, (
        f"SUBSCRIBE took {first * 1e3:.1f} ms at first, {last * 1e3:.1f} ms last"
    )

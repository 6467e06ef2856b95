"""Sessions belong to the authenticated device, and what one device can make the hub keep of
them is bounded (issue "Close the holes", items 1 and 4), over real TCP.

The attacks: a device that signs its own CONNECT correctly but uses another device's client id
(hijacking that device's persistent session and its queued messages, and kicking it); two honest
devices whose client ids happen to be equal (same device key in two products, the C SDK's
constant timestamp); a device opening persistent sessions under ever new client ids.
"""

from __future__ import annotations

import asyncio

from _attack_kit import MakeLab, RawDevice, credentials

from enos_lab import Lab
from enos_lab.hub import HubConfig

C_SDK_TIMESTAMP = "2524608000000"  # the C SDK signs every login with this constant (year 2050)


def reply_topic(product_key: str, device_key: str) -> str:
    return f"/sys/{product_key}/{device_key}/thing/measurepoint/post_reply"


def post_topic(product_key: str, device_key: str) -> str:
    return f"/sys/{product_key}/{device_key}/thing/measurepoint/post"


def test_another_devices_client_id_reaches_neither_its_session_nor_its_connection(
    lab: Lab,
) -> None:
    pk = lab.create_product("Meters").product_key
    victim = lab.register_device(pk, device_key="meter-01")
    attacker = lab.register_device(pk, device_key="evil")
    topic = reply_topic(pk, "meter-01")

    async def body() -> None:
        cid, user, password = credentials(pk, "meter-01", victim.device_secret)
        device, ack = await RawDevice.connect(lab.port, cid, user, password, clean=False)
        assert (ack.reason_code, ack.session_present) == (0, False)
        assert await device.subscribe(topic) == (1,)
        await device.disconnect()
        # queued for the victim while it is offline
        await asyncio.to_thread(lab.publish, topic, b"set-point for meter-01", qos=1)

        # the attacker signs its own CONNECT correctly, with the victim's client id
        a_cid, a_user, a_password = credentials(
            pk, "evil", attacker.device_secret, sign_client_id="meter-01"
        )
        assert a_cid == cid
        evil, ack = await RawDevice.connect(lab.port, a_cid, a_user, a_password, clean=False)
        assert (ack.reason_code, ack.session_present) == (0, False)
        assert await evil.quiet(), "the victim's queued message reached the attacker"

        # the victim comes back to its own session, queued message included ...
        device, ack = await RawDevice.connect(lab.port, cid, user, password, clean=False)
        assert (ack.reason_code, ack.session_present) == (0, True)
        assert (await device.read_publish(topic)).payload == b"set-point for meter-01"
        # ... and neither connection took the other over: both are served
        reply = await device.request(post_topic(pk, "meter-01"), {"measurepoints": {"p": 1}})
        assert reply["code"] == 200
        reply = await evil.request(post_topic(pk, "evil"), {"measurepoints": {"p": 2}})
        assert reply["code"] == 200
        await device.disconnect()
        await evil.disconnect()

    asyncio.run(body())
    assert lab.is_online(pk, "meter-01") is False
    reasons = list(lab.presence(pk, "meter-01")["reason"])
    assert "taken over" not in reasons


def test_equal_client_ids_of_two_devices_do_not_kick_each_other(lab: Lab) -> None:
    # the same device key in two products, both signing with the C SDK's constant timestamp
    # and the device key as the client id: their client id strings are equal
    first = lab.create_product("Site A meters").product_key
    second = lab.create_product("Site B meters").product_key
    secrets = {
        pk: lab.register_device(pk, device_key="dev1").device_secret for pk in (first, second)
    }

    async def body() -> None:
        devices = []
        for pk in (first, second):
            cid, user, password = credentials(pk, "dev1", secrets[pk], timestamp=C_SDK_TIMESTAMP)
            device, ack = await RawDevice.connect(lab.port, cid, user, password, clean=False)
            assert ack.reason_code == 0
            devices.append((pk, cid, device))
        assert devices[0][1] == devices[1][1]
        for _round in range(3):
            for pk, _cid, device in devices:
                reply = await device.request(post_topic(pk, "dev1"), {"measurepoints": {"p": 1}})
                assert reply["code"] == 200
        for _pk, _cid, device in devices:
            await device.disconnect()

    asyncio.run(body())
    for pk in (first, second):
        assert list(lab.presence(pk, "dev1")["reason"]) == ["connected", "disconnected"]


def test_persistent_sessions_of_one_device_are_bounded(lab: Lab) -> None:
    # a device opens persistent sessions under freshly signed client ids, each subscribed to
    # its reply topic: the hub keeps HubConfig.max_offline_sessions of them (1 by default)
    pk = lab.create_product("Meters").product_key
    secret = lab.register_device(pk, device_key="ghost").device_secret
    topic = reply_topic(pk, "ghost")
    assert lab.hub.config.max_offline_sessions == 1

    async def body() -> None:
        for n in range(40):
            cid, user, password = credentials(pk, "ghost", secret, timestamp=str(1700000000000 + n))
            device, ack = await RawDevice.connect(lab.port, cid, user, password, clean=False)
            assert ack.reason_code == 0
            await device.subscribe(topic)
            await device.disconnect()

    asyncio.run(body())
    assert lab.hub.stats.sessions == 1
    # the replies of later posts are queued once, not once per ghost session
    assert lab.publish(topic, b"reply", qos=1) == 1


def test_a_new_client_id_of_the_same_device_discards_its_older_offline_session(
    lab: Lab,
) -> None:
    pk = lab.create_product("Meters").product_key
    secret = lab.register_device(pk, device_key="d1").device_secret
    topic = reply_topic(pk, "d1")

    async def body() -> None:
        old = credentials(pk, "d1", secret, timestamp="1")
        new = credentials(pk, "d1", secret, timestamp="2")
        device, _ = await RawDevice.connect(lab.port, *old, clean=False)
        await device.subscribe(topic)
        await device.disconnect()
        device, _ = await RawDevice.connect(lab.port, *new, clean=False)
        await device.disconnect()
        # the session of the first client id was discarded when the second one went offline
        device, ack = await RawDevice.connect(lab.port, *old, clean=False)
        assert ack.session_present is False
        await device.disconnect()

    asyncio.run(body())


def test_persistent_3_1_1_sessions_expire(make_lab: MakeLab) -> None:
    lab = make_lab(hub_config=HubConfig(session_expiry_v311=1))
    pk = lab.create_product("Meters").product_key
    secret = lab.register_device(pk, device_key="d1").device_secret

    async def body() -> None:
        login = credentials(pk, "d1", secret)
        device, _ = await RawDevice.connect(lab.port, *login, clean=False)
        await device.subscribe(reply_topic(pk, "d1"))
        await device.disconnect()
        assert lab.hub.stats.sessions == 1
        async with asyncio.timeout(5):
            while lab.hub.stats.sessions:
                await asyncio.sleep(0.1)
        device, ack = await RawDevice.connect(lab.port, *login, clean=False)
        assert ack.session_present is False
        await device.disconnect()

    asyncio.run(body())

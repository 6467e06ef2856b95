"""Floods that try to make the hub keep memory without bound (issue "Close the holes", item 4),
over real TCP: retained messages from one client and from many, persistent sessions are in
test_session_attacks.py.
"""

from __future__ import annotations

import asyncio

from _attack_kit import MakeLab, RawDevice

from enos_lab.hub import HubConfig

MB = 1 << 20


def test_one_client_cannot_fill_the_hub_with_retained_messages(make_lab: MakeLab) -> None:
    # a plain MQTT broker (anonymous): 100 retained messages of 1 MB from one client
    lab = make_lab(anonymous=True)
    bound = lab.hub.config.max_retained_bytes_per_client

    async def body() -> None:
        flooder, _ = await RawDevice.connect(lab.port, "flooder", None, None)
        for n in range(100):
            await flooder.publish(f"flood/{n}", b"x" * (MB - 64), retain=True)
        honest, _ = await RawDevice.connect(lab.port, "honest", None, None)
        await honest.publish("status/honest", b"online", retain=True)
        watcher, _ = await RawDevice.connect(lab.port, "watcher", None, None)
        await watcher.subscribe("status/#")
        assert (await watcher.read_publish("status/honest")).payload == b"online"
        for device in (flooder, honest, watcher):
            await device.disconnect()

    asyncio.run(body())
    stats = lab.hub.stats
    assert stats.retained_bytes <= bound + len(b"online") + len("status/honest")
    assert stats.retained < 10


def test_many_clients_cannot_fill_the_hub_with_retained_messages(make_lab: MakeLab) -> None:
    config = HubConfig(max_retained_bytes=4 * MB, max_retained_bytes_per_client=MB)
    lab = make_lab(anonymous=True, hub_config=config)

    async def body() -> None:
        for c in range(12):
            device, _ = await RawDevice.connect(lab.port, f"flooder{c}", None, None)
            for n in range(4):
                await device.publish(f"flood/{c}/{n}", b"x" * (MB // 3), retain=True)
            await device.disconnect()

    asyncio.run(body())
    stats = lab.hub.stats
    assert stats.retained_bytes <= 4 * MB
    assert stats.retained <= 4 * MB // (MB // 3)

"""The IoT hub's own work: its timers on the lab's clock, and IotHub.stop() ending its tasks.

A ``SimulatedClock`` drives activation re-sends and command timeouts: they happen when the
clock is advanced past their time, not before, whatever real time passes. ``IotHub.stop()``
(after the hub's) commits and answers the measurepoints already received, cancels the services'
tasks and fails the commands still waiting; nothing of the services is left on the loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _iothub_kit import Env

from enos_lab.clock import SimulatedClock
from enos_lab.enos import SecureMode, TopicKind
from enos_lab.errors import ClosedError
from enos_lab.iothub import IotHubConfig

CONFIG = IotHubConfig(activation_delay=5.0, activation_resend=60.0, activation_timeout=600.0)


@pytest.fixture
async def clocked(tmp_path: Path) -> AsyncIterator[tuple[Env, SimulatedClock]]:
    """An Env whose registry, store and IoT hub run on a SimulatedClock."""
    clock = SimulatedClock()
    made = Env(tmp_path, CONFIG, clock=clock)
    await made.hub.start()
    try:
        yield made, clock
    finally:
        await made.hub.stop()
        await made.iothub.stop()
        made.store.close()
        made.registry.close()


async def test_activation_pushes_follow_the_simulated_clock(
    clocked: tuple[Env, SimulatedClock],
) -> None:
    env, clock = clocked
    env.registry.register_device("dynP", device_key="v1")
    client, connack = await env.login(
        "dynP", "v1", env.dyn.product_secret, mode=SecureMode.DYNAMIC_ACTIVATION
    )
    assert connack.reason_code == 0
    # activation_delay is 5 s of the lab's clock: nothing in real time
    assert await client.quiet(0.2)
    await clock.advance_async(4.9)
    assert await client.quiet(0.05)
    await clock.advance_async(0.1)
    first = await client.read_publish(timeout=1.0)
    assert first.topic == "/ext/session/dynP/v1/thing/activate/info"
    # the re-send comes 60 s of the lab's clock later, not before
    await clock.advance_async(59.0)
    assert await client.quiet(0.05)
    await clock.advance_async(1.0)
    second = await client.read_publish(timeout=1.0)
    assert second.payload == first.payload
    body = json.loads(first.payload)
    ack = {"id": body["id"], "code": 200, "data": None, "message": "device activate success"}
    await client.publish("/ext/session/dynP/v1/thing/activate/info_reply", json.dumps(ack).encode())
    await clock.advance_async(80.0)  # confirmed: no more pushes (and keep alive 60 s holds)
    assert await client.quiet(0.05)
    await client.close()


async def test_a_command_times_out_on_the_simulated_clock(
    clocked: tuple[Env, SimulatedClock],
) -> None:
    env, clock = clocked
    client = await env.device("dirP", "d1")
    waiting = asyncio.create_task(
        env.iothub.send_command("dirP", "d1", TopicKind.MEASUREPOINT_SET, {"x": 1}, timeout=30)
    )
    await client.read_publish()
    await asyncio.sleep(0.1)  # real time does not count
    await clock.advance_async(29.0)
    assert not waiting.done()
    await clock.advance_async(1.0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(waiting, 1.0)
    await client.close()


async def test_stop_ends_the_services_work_and_keeps_what_was_received(tmp_path: Path) -> None:
    before = asyncio.all_tasks()  # the test runner's
    env = Env(tmp_path, CONFIG)
    await env.hub.start()
    try:
        env.registry.register_device("dynP", device_key="v1")
        _activating, _ = await env.login(  # its activation push is pending at the stop
            "dynP", "v1", env.dyn.product_secret, mode=SecureMode.DYNAMIC_ACTIVATION
        )
        client = await env.device("dirP", "d1")
        waiting = asyncio.create_task(
            env.iothub.send_command("dirP", "d1", TopicKind.SERVICE_INVOKE, {}, item_id="mul")
        )
        await client.read_publish()  # the command arrived; no reply will come
        topic = "/sys/dirP/d1/thing/measurepoint/post"
        for n in range(20):
            body = {
                "id": str(n),
                "method": "thing.measurepoint.post",
                "params": {"measurepoints": {"temp": float(n)}, "time": 1_700_000_000_000 + n},
            }
            await client.publish(topic, json.dumps(body).encode(), qos=1)  # PUBACK: received
    finally:
        await env.hub.stop()
        await env.iothub.stop()
    # the command waiting for its reply failed with a clear error
    with pytest.raises(ClosedError, match="stopped"):
        await waiting
    # nothing of the services (activation pushes, commits) is left on the loop
    assert [t for t in asyncio.all_tasks() - before if not t.done()] == []
    # every acknowledged point is stored
    frame = env.store.query_points("d1", "temp", product_key="dirP")
    assert sorted(frame["value"]) == [float(n) for n in range(20)]
    assert not env.registry.get_device("dirP", "d1").online
    await env.iothub.stop()  # idempotent
    env.store.close()
    env.registry.close()

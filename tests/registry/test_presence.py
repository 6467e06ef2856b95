"""Presence changes queued by the hub: written in batches by the registry's writer thread."""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
from pathlib import Path

import pytest

from enos_lab.clock import SimulatedClock
from enos_lab.errors import NotFound
from enos_lab.registry import DeviceState, Registry


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock()


def _registry(path: Path | str, clock: SimulatedClock, devices: int = 3) -> Registry:
    registry = Registry(path, clock=clock, rng=random.Random(7))
    registry.create_product("Meter", product_key="meterP")
    for i in range(devices):
        registry.register_device("meterP", device_key=f"m{i}")
    return registry


def _logged(path: Path) -> int:
    """Presence rows in the file, read by a connection of the test's own."""
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM presence").fetchone()[0])


def test_flush_hands_the_batch_to_the_writer_thread(tmp_path: Path, clock: SimulatedClock) -> None:
    path = tmp_path / "registry.sqlite3"
    registry = _registry(path, clock)
    assert registry._writer is None  # started with the first batch
    registry.queue_presence("meterP", "m0", True, "connected")
    registry.flush_presence()
    writer = registry._writer
    assert writer is not None
    assert writer._thread.name == "enos-lab-presence" and writer._thread.is_alive()
    with writer.lock:  # the writer thread cannot write while the test holds its lock
        registry.queue_presence("meterP", "m0", False, "disconnected")
        registry.flush_presence()  # returns without writing
        assert _logged(path) <= 1
    # a reader waits for the batch: nothing is read late
    assert registry.get_device("meterP", "m0").state is DeviceState.OFFLINE
    assert _logged(path) == 2
    registry.close()
    assert not writer._thread.is_alive()


def test_batches_keep_the_order_of_the_changes(tmp_path: Path, clock: SimulatedClock) -> None:
    registry = _registry(tmp_path / "registry.sqlite3", clock)
    times = []
    for online, reason in [(True, "connected"), (False, "kicked"), (True, "connected")]:
        clock.advance(1)
        times.append(clock.now())
        registry.queue_presence("meterP", "m1", online, reason)
        registry.flush_presence()
    clock.advance(1)
    times.append(clock.now())
    # a device that comes and goes within one batch, and one that does not exist
    registry.queue_presence("meterP", "m1", False, "keep-alive timeout")
    registry.queue_presence("meterP", "ghost", True, "connected")
    registry.queue_presence("meterP", "m2", True, "connected")
    registry.queue_presence("meterP", "m2", False, "disconnected")
    registry.flush_presence()
    log = registry.presence_log("meterP", "m1")
    assert [(at, online, why) for at, _, _, online, why in log] == [
        (times[0], True, "connected"),
        (times[1], False, "kicked"),
        (times[2], True, "connected"),
        (times[3], False, "keep-alive timeout"),
    ]
    m1 = registry.get_device("meterP", "m1")
    assert m1.state is DeviceState.OFFLINE
    assert m1.activated_at == times[0]  # the first login activated it
    assert m1.last_online_at == times[2] and m1.last_offline_at == times[3]
    assert registry.get_device("meterP", "m2").state is DeviceState.OFFLINE
    assert registry.presence_log("meterP", "ghost") == []
    assert registry.get_device("meterP", "m0").state is DeviceState.INACTIVE
    registry.close()


def test_close_writes_every_submitted_batch(tmp_path: Path, clock: SimulatedClock) -> None:
    path = tmp_path / "registry.sqlite3"
    registry = _registry(path, clock, devices=50)
    for i in range(50):
        registry.queue_presence("meterP", f"m{i}", True, "connected")
        if i % 7 == 0:
            registry.flush_presence()
    registry.flush_presence()
    registry.close()
    again = Registry(path, clock=clock)
    assert len(again.presence_log("meterP")) == 50
    assert all(again.get_device("meterP", f"m{i}").online for i in range(50))
    again.close()


def test_registry_writes_and_presence_batches_run_side_by_side(
    tmp_path: Path, clock: SimulatedClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Batches written by the thread while the registry's own connection registers devices:
    neither waits on SQLite's busy handler, nothing is lost."""
    registry = _registry(tmp_path / "registry.sqlite3", clock, devices=20)
    failures: list[BaseException] = []

    def come_and_go() -> None:
        try:
            for round_ in range(100):
                for i in range(20):
                    registry.queue_presence("meterP", f"m{i}", round_ % 2 == 0, "connected")
                registry.flush_presence()
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    caplog.set_level(logging.WARNING, logger="enos_lab.registry")
    worker = threading.Thread(target=come_and_go)
    worker.start()
    for i in range(100):
        registry.register_device("meterP", device_key=f"new{i}")
        assert registry.get_device("meterP", f"new{i}").state is DeviceState.INACTIVE
    worker.join(timeout=60)
    assert not worker.is_alive() and not failures
    assert len(registry.presence_log("meterP")) == 100 * 20
    assert all(not registry.get_device("meterP", f"m{i}").online for i in range(20))
    assert not [r for r in caplog.records if "not recorded" in r.getMessage()]
    registry.close()


def test_a_memory_registry_writes_on_the_calling_thread(clock: SimulatedClock) -> None:
    registry = _registry(":memory:", clock)
    assert registry._writer is None
    registry.queue_presence("meterP", "m0", True, "connected")
    registry.flush_presence()
    assert registry.get_device("meterP", "m0").online
    with pytest.raises(NotFound, match="meterP/nope"):
        registry.record_presence("meterP", "nope", True, "connected")
    registry.close()


def test_a_file_without_the_presence_trigger_gets_it(tmp_path: Path, clock: SimulatedClock) -> None:
    """Files written before the trigger existed are brought up to date when opened."""
    path = tmp_path / "registry.sqlite3"
    _registry(path, clock).close()
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER presence_sets_device")
    registry = Registry(path, clock=clock)
    assert registry.set_online("meterP", "m0").state is DeviceState.ONLINE
    registry.close()


def test_close_open_presence_records_an_offline_row_for_every_online_device(
    tmp_path: Path, clock: SimulatedClock
) -> None:
    path = tmp_path / "registry.sqlite3"
    registry = _registry(path, clock)
    registry.queue_presence("meterP", "m0", True, "connected")
    registry.queue_presence("meterP", "m1", True, "connected")
    registry.queue_presence("meterP", "m1", False, "disconnected")
    registry.queue_presence("meterP", "m2", True, "connected")
    registry.flush_presence()
    clock.advance(60)
    restarted = registry._now()

    assert registry.close_open_presence("hub restarted") == 2
    for key in ("m0", "m2"):
        device = registry.get_device("meterP", key)
        assert device.online is False and device.state is DeviceState.OFFLINE
        assert device.last_offline_at == restarted
        assert registry.presence_log("meterP", key)[-1][1:] == (
            "meterP",
            key,
            False,
            "hub restarted",
        )
        assert registry.presence_log("meterP", key)[-1][0] == restarted
    # a device already offline gets no second offline row
    assert [row[4] for row in registry.presence_log("meterP", "m1")] == [
        "connected",
        "disconnected",
    ]
    assert registry.close_open_presence("hub restarted") == 0
    assert _logged(path) == 6
    registry.close()

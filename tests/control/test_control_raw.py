"""Raw down, ``send_command`` and purge through the command records, over real TCP: raw bytes
to a custom-format device answered by the official SDK's raw handler, refused for a JSON
product; every ``send_command`` recorded; a purged deletion removes a device's command records
and cached commands, a kept one keeps them."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from enos.message.downstream.tsl.MeasurepointSetCommand import MeasurepointSetCommand
from enos.message.downstream.tsl.MeasurepointSetReply import MeasurepointSetReply
from enos.message.downstream.tsl.ModelDownRawCommand import ModelDownRawCommand
from enos.message.downstream.tsl.ModelDownRawReply import ModelDownRawReply
from enos_sdk_helpers import SDK_WARNINGS, WAIT, running_lab, sdk_device, sdk_product

from enos_lab.control import CommandHandle, CommandStatus
from enos_lab.enos import TopicKind
from enos_lab.errors import DeviceOffline, InvalidArgument, NotFound

pytestmark = [SDK_WARNINGS]


def test_raw_bytes_round_trip_with_the_official_sdk(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=161) as lab:
        pk = lab.create_product("Raw meter", data_format="custom").product_key
        secret = lab.register_device(pk, device_key="r1").device_secret
        received: list[bytes] = []

        def on_raw(command: Any, topic_args: list[str]) -> Any:
            payload = bytes(command.get_payload())
            received.append(payload)
            return ModelDownRawReply(b"\x02" + payload[::-1])

        with sdk_device(lab, pk, "r1", device_secret=secret) as sdk:
            sdk.client.register_arrived_message_handler(ModelDownRawCommand.get_class(), on_raw)
            sdk.connect()
            assert lab.send_raw(pk, "r1", b"\x01\x00\xff") == b"\x02\xff\x00\x01"
            handle = lab.send_raw(pk, "r1", bytearray(b"ab"), wait=False)
            assert isinstance(handle, CommandHandle)
            assert handle.result(WAIT) == b"\x02ba"
        assert received == [b"\x01\x00\xff", b"ab"]
        frame = lab.commands(pk, "r1")
        assert frame["kind"].tolist() == ["raw", "raw"]
        assert frame["status"].tolist() == ["replied", "replied"]
        assert frame["params"].tolist() == ["0100ff", "6162"]  # bytes as hex text
        assert frame["data"].tolist() == ["02ff0001", "026261"]
        with pytest.raises(DeviceOffline):
            lab.send_raw(pk, "r1", b"\x00")

        json_pk = sdk_product(lab).product_key
        lab.register_device(json_pk, device_key="j1")
        with pytest.raises(InvalidArgument, match="json data format"):
            lab.send_raw(json_pk, "j1", b"\x00")
        with pytest.raises(InvalidArgument, match="payload must be bytes"):
            lab.send_raw(pk, "r1", "text")  # type: ignore[arg-type]
        with pytest.raises(NotFound):
            lab.send_raw(pk, "nobody", b"\x00")


def test_send_command_is_recorded(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=162) as lab:
        pk = sdk_product(lab).product_key
        secret = lab.register_device(pk, device_key="c1").device_secret
        arrived = threading.Event()

        def on_set(command: Any, topic_args: list[str]) -> Any:
            arrived.set()
            return MeasurepointSetReply.builder().set_code(200).build()

        with sdk_device(lab, pk, "c1", device_secret=secret) as sdk:
            sdk.client.register_arrived_message_handler(MeasurepointSetCommand.get_class(), on_set)
            sdk.connect()
            reply = lab.send_command(pk, "c1", TopicKind.MEASUREPOINT_SET, {"temp": 25.0})
            assert reply is not None and reply.ok
            arrived.clear()
            assert (
                lab.send_command(pk, "c1", TopicKind.MEASUREPOINT_SET, {"temp": 1}, wait=False)
                is None
            )
            assert arrived.wait(WAIT)
        with pytest.raises(DeviceOffline):
            lab.send_command(pk, "c1", TopicKind.MEASUREPOINT_SET, {"temp": 2.0})
        with pytest.raises(InvalidArgument, match="not a command topic"):
            lab.send_command(pk, "c1", TopicKind.MEASUREPOINT_POST, {})
        frame = lab.commands(pk, "c1")
        assert frame["kind"].tolist() == ["measurepoint.set"] * 3
        assert frame["status"].iloc[0] == "replied" and frame["status"].iloc[2] == "failed"
        assert frame["params"].iloc[0] == {"temp": 25.0}
        # the one sent without waiting is answered, or failed when the device went away first
        assert frame["status"].iloc[1] in ("replied", "failed", "sent")


def test_purge_deletes_command_records_and_cached_commands(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=163) as lab:
        pk = sdk_product(lab).product_key
        for key in ("k1", "k2"):
            lab.register_device(pk, device_key=key)
        kept = lab.set_measurepoints(pk, "k1", {"temp": 1.0}, wait=False, pending_ttl=600)
        purged = lab.set_measurepoints(pk, "k2", {"temp": 2.0}, wait=False, pending_ttl=600)
        assert isinstance(kept, CommandHandle) and isinstance(purged, CommandHandle)
        with pytest.raises(DeviceOffline):
            lab.set_measurepoints(pk, "k2", {"temp": 3.0})  # instant, recorded as failed
        assert len(lab.commands(pk, "k2")) == 2
        lab.delete_device(pk, "k1", purge=False)
        lab.delete_device(pk, "k2", purge=True)
        assert lab.commands(pk, "k2").empty
        with pytest.raises(DeviceOffline, match="deleted"):
            purged.result(WAIT)
        with pytest.raises(NotFound):
            lab.command(purged.id)
        assert lab.command(kept.id).status is CommandStatus.QUEUED
        assert len(lab.commands(pk, "k1")) == 1

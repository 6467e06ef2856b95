"""Legacy RRPC service calls from the cloud side (protocol reference 9.4) over real TCP:
``invoke_service(..., rrpc=True)`` answered by the lab's device SDK (sync and async, outputs
checked against the model, a device error code, a timeout on the simulated clock), another
device's answer on the first device's ``rrpc/response`` topic refused, and the official EnOS
Python SDK, which has no RRPC handler, receiving an RRPC request."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from enos.message.downstream.tsl.ServiceInvocationCommand import ServiceInvocationCommand
from enos.message.downstream.tsl.ServiceInvocationReply import ServiceInvocationReply
from enos_sdk_helpers import SDK_WARNINGS, WAIT, running_lab, sdk_device
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from enos_lab.clock import SimulatedClock
from enos_lab.control import CommandHandle, CommandStatus
from enos_lab.device import Device
from enos_lab.enos import TopicKind, encode_reply, login_credentials
from enos_lab.errors import CommandError, CommandFailed, InvalidArgument, ValidationError
from enos_lab.lab import Lab
from enos_lab.tap import CommandReplied, CommandSent

pytestmark = [SDK_WARNINGS]

SERVICE = "set_power_limit"


def _inverter(lab: Lab, *device_keys: str) -> tuple[str, list[str]]:
    pk = lab.create_product("Inverter", model_id="pv_inverter").product_key
    return pk, [lab.register_device(pk, device_key=dk).device_secret for dk in device_keys]


class Sent:
    """The commands the lab hands to connections (``CommandSent``) and the replies it hears
    (``CommandReplied``), from the tap."""

    def __init__(self, lab: Lab) -> None:
        self.sent: list[CommandSent] = []
        self.replied: list[CommandReplied] = []
        self.arrived = threading.Event()

        def heard(event: Any) -> None:
            if isinstance(event, CommandSent):
                self.sent.append(event)
                self.arrived.set()
            else:
                self.replied.append(event)

        async def add() -> Any:
            return lab.tap.add_callback(heard, kinds=(CommandSent, CommandReplied))

        self.handle = lab.run(add())


def _answer(params: dict[str, Any]) -> dict[str, Any]:
    """The lab-SDK inverter's service handler: limits up to 50 accepted, above: code 2001."""
    if params["limit"] > 50:
        raise CommandError(2001, "limit above rating")
    return {"accepted": True}


def test_rrpc_round_trips_sync_and_async_with_outputs_checked(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=1461) as lab:
        pk, (secret,) = _inverter(lab, "inv1")
        sent = Sent(lab)
        seen: list[Any] = []
        with Device(lab.host, lab.port, pk, "inv1", secret, timeout=WAIT) as device:

            def handler(params: dict[str, Any]) -> Any:
                seen.append(params)
                if params["limit"] == 42:
                    return {"accepted": "maybe"}  # not a BOOL: fails the model's output check
                return _answer(params)

            device.on_service(SERVICE, handler)
            assert lab.invoke_service(pk, "inv1", SERVICE, {"limit": 30}, rrpc=True) == {
                "accepted": True
            }
            handle = lab.invoke_service(pk, "inv1", SERVICE, {"limit": 20}, rrpc=True, wait=False)
            assert isinstance(handle, CommandHandle)
            assert handle.result(WAIT) == {"accepted": True}
            assert handle.status is CommandStatus.REPLIED

            async def awaited() -> Any:
                handle = await lab.ainvoke_service(
                    pk, "inv1", SERVICE, {"limit": 10}, rrpc=True, wait=False
                )
                return await handle

            assert asyncio.run(awaited()) == {"accepted": True}

            with pytest.raises(CommandFailed, match="code 2001: limit above rating") as failed:
                lab.invoke_service(pk, "inv1", SERVICE, {"limit": 80}, rrpc=True)
            assert (failed.value.code, failed.value.command) == (2001, f"RRPC service {SERVICE!r}")
            with pytest.raises(ValidationError, match="does not fit its model"):
                lab.invoke_service(pk, "inv1", SERVICE, {"limit": 42}, rrpc=True)
            # inputs are checked before anything is sent
            with pytest.raises(ValidationError, match="limit"):
                lab.invoke_service(pk, "inv1", SERVICE, {}, rrpc=True)
            with pytest.raises(InvalidArgument, match="rrpc must be True or False"):
                lab.invoke_service(pk, "inv1", SERVICE, {"limit": 1}, rrpc="yes")  # type: ignore[arg-type]
            # a plain service call still goes on thing/service/{id}
            assert lab.invoke_service(pk, "inv1", SERVICE, {"limit": 5}) == {"accepted": True}
        sent.handle.cancel()

    assert [params["limit"] for params in seen] == [30, 20, 10, 80, 42, 5]
    rrpc = [event for event in sent.sent if event.command == "RRPC_REQUEST"]
    assert len(rrpc) == 5
    # every RRPC request has a fresh rrpc id in its topic; replies come on rrpc/response
    assert len({event.item_id for event in rrpc}) == 5
    answered = [event for event in sent.replied if event.command == "RRPC_REQUEST"]
    assert [event.item_id for event in answered] == [event.item_id for event in rrpc]
    assert [event.code for event in answered] == [200, 200, 200, 2001, 200]
    assert [event.command for event in sent.sent][-1] == "SERVICE_INVOKE"

    with running_lab(tmp_path / "lab", seed=1461) as lab:  # the records outlive the run
        frame = lab.commands(pk, "inv1")
    assert list(frame["kind"]) == [f"rrpc:{SERVICE}"] * 5 + [SERVICE]
    assert list(frame["status"]) == ["replied"] * 3 + ["failed", "replied", "replied"]
    assert list(frame["code"]) == [200, 200, 200, 2001, 200, 200]
    assert frame["params"].iloc[0] == {"limit": 30.0}
    assert frame["data"].iloc[0] == {"accepted": True}


def test_an_rrpc_call_without_an_answer_times_out(tmp_path: Path) -> None:
    clock = SimulatedClock(datetime.now(UTC))
    with running_lab(tmp_path / "lab", seed=1462, clock=clock) as lab:
        pk, (secret,) = _inverter(lab, "slow")
        arrived = threading.Event()
        release = threading.Event()

        async def held(params: dict[str, Any]) -> dict[str, Any]:
            arrived.set()
            await asyncio.to_thread(release.wait, WAIT)  # answers after the timeout
            return {"accepted": True}

        with Device(lab.host, lab.port, pk, "slow", secret, timeout=WAIT) as device:
            device.on_service(SERVICE, held)
            handle = lab.invoke_service(
                pk, "slow", SERVICE, {"limit": 5}, rrpc=True, timeout=10, wait=False
            )
            assert isinstance(handle, CommandHandle)
            assert arrived.wait(WAIT)
            assert handle.status is CommandStatus.SENT
            lab.run(asyncio.sleep(0))  # the IoT hub waits for the reply by now
            clock.advance(11)
            with pytest.raises(TimeoutError, match="did not answer command"):
                handle.result(WAIT)
            release.set()
            # the late answer changes nothing; the device goes on
            assert lab.invoke_service(pk, "slow", SERVICE, {"limit": 6}, rrpc=True) == {
                "accepted": True
            }
        record = lab.command(handle.id)
        assert (record.status, record.kind, record.reason) == (
            CommandStatus.TIMED_OUT,
            f"rrpc:{SERVICE}",
            "no reply in time",
        )


@contextmanager
def _paho_device(lab: Lab, pk: str, dk: str, secret: str) -> Iterator[mqtt.Client]:
    """A bare MQTT client logged in as the device ``pk/dk`` (publishes anything it likes)."""
    client_id, username, password = login_credentials(
        pk, dk, secret, timestamp=str(int(datetime.now(UTC).timestamp() * 1000))
    )
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv311
    )
    client.username_pw_set(username, password)
    connected = threading.Event()
    client.on_connect = lambda *args: connected.set()
    client.connect("127.0.0.1", lab.port)
    client.loop_start()
    try:
        assert connected.wait(WAIT)
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


def test_another_device_cannot_answer_an_rrpc_request(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=1463) as lab:
        pk, (secret, intruder_secret) = _inverter(lab, "target", "intruder")
        sent = Sent(lab)
        arrived = threading.Event()
        release = threading.Event()

        async def held(params: dict[str, Any]) -> dict[str, Any]:
            arrived.set()
            await asyncio.to_thread(release.wait, WAIT)
            return {"accepted": True}

        with (
            Device(lab.host, lab.port, pk, "target", secret, timeout=WAIT) as device,
            _paho_device(lab, pk, "intruder", intruder_secret) as intruder,
        ):
            device.on_service(SERVICE, held)
            handle = lab.invoke_service(pk, "target", SERVICE, {"limit": 5}, rrpc=True, wait=False)
            assert isinstance(handle, CommandHandle)
            assert arrived.wait(WAIT)
            (request,) = sent.sent
            forged = encode_reply(request.request_id, 200, {"accepted": False}, "")
            # on the target's response topic: refused (no write permission); on its own
            # response topic with the same rrpc id: allowed, but it answers nothing pending
            for owner in ("target", "intruder"):
                topic = f"/sys/{pk}/{owner}/rrpc/response/{request.item_id}"
                info = intruder.publish(topic, forged, qos=1)
                info.wait_for_publish(WAIT)
                assert info.is_published()
            assert intruder.is_connected()
            # the hub handled both publishes (one connection, in order); neither completed it
            lab.run(asyncio.sleep(0))
            assert not handle.done()
            assert [(event.device_key, event.item_id) for event in sent.replied] == [
                ("intruder", request.item_id)
            ]
            release.set()
            assert handle.result(WAIT) == {"accepted": True}
        sent.handle.cancel()
        record = lab.command(handle.id)
        assert (record.status, record.data) == (CommandStatus.REPLIED, {"accepted": True})


class SdkInverter:
    """An inverter written with the official SDK: it answers service invocations."""

    def __init__(self) -> None:
        self.limits: list[float] = []

    def on_service(self, command: Any, topic_args: list[str]) -> Any:
        self.limits.append(command.get_params().get("limit", 0))
        return (
            ServiceInvocationReply.builder().set_code(200).add_output_data("accepted", True).build()
        )


def test_the_official_sdk_ignores_an_rrpc_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = SimulatedClock(datetime.now(UTC))
    caplog.set_level(logging.ERROR, logger="enos.core.internal.DefaultProcessor")
    with running_lab(tmp_path / "lab", seed=1464, clock=clock) as lab:
        pk, (secret,) = _inverter(lab, "sdk")
        sent = Sent(lab)
        inverter = SdkInverter()
        with sdk_device(lab, pk, "sdk", device_secret=secret) as sdk:
            sdk.client.register_arrived_message_handler(
                ServiceInvocationCommand.get_class(), inverter.on_service
            )
            sdk.connect()
            handle = lab.invoke_service(
                pk, "sdk", SERVICE, {"limit": 7}, rrpc=True, timeout=10, wait=False
            )
            assert isinstance(handle, CommandHandle)
            # a service call on thing/service after it: the SDK reads one connection in order,
            # so once this one is answered it has dealt with the RRPC request
            assert lab.invoke_service(pk, "sdk", SERVICE, {"limit": 8}) == {"accepted": True}
            assert not handle.done()
            assert inverter.limits == [8]  # its service handler never saw the RRPC request
            rrpc_topic = f"/sys/{pk}/sdk/rrpc/request/{sent.sent[0].item_id}"
            assert any(rrpc_topic in record.getMessage() for record in caplog.records)
            lab.run(asyncio.sleep(0))
            clock.advance(11)
            with pytest.raises(TimeoutError, match="did not answer command"):
                handle.result(WAIT)
            assert sdk.client.is_connected()
            assert lab.invoke_service(pk, "sdk", SERVICE, {"limit": 9}) == {"accepted": True}
        sent.handle.cancel()
        assert [event.command for event in sent.replied] == ["SERVICE_INVOKE"] * 2
        record = lab.command(handle.id)
        assert (record.status, record.kind) == (CommandStatus.TIMED_OUT, f"rrpc:{SERVICE}")


def test_send_command_names_the_rrpc_service_apart_from_its_id(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=1465) as lab:
        pk, (secret,) = _inverter(lab, "inv")
        sent = Sent(lab)
        iothub = lab.iothub
        assert iothub is not None
        with Device(lab.host, lab.port, pk, "inv", secret, timeout=WAIT) as device:
            device.on_service(SERVICE, _answer)
            device.on_service("rr-9", lambda params: {"id": "rr-9"})
            # the rrpc id given, the service named by service_id
            reply = lab.run(
                iothub.send_command(
                    pk,
                    "inv",
                    TopicKind.RRPC_REQUEST,
                    {"limit": 3},
                    item_id="rr-1",
                    service_id=SERVICE,
                    timeout=WAIT,
                )
            )
            assert reply is not None and (reply.code, reply.data) == (200, {"accepted": True})
            # the same through the facade, with a fresh rrpc id
            reply = lab.send_command(
                pk, "inv", TopicKind.RRPC_REQUEST, {"limit": 4}, service_id=SERVICE
            )
            assert reply is not None and (reply.code, reply.data) == (200, {"accepted": True})
            # without service_id the id names the service too (the topic's id, as before)
            reply = lab.send_command(pk, "inv", TopicKind.RRPC_REQUEST, {}, item_id="rr-9")
            assert reply is not None and (reply.code, reply.data) == (200, {"id": "rr-9"})
            with pytest.raises(InvalidArgument, match="needs the service_id"):
                lab.run(iothub.send_command(pk, "inv", TopicKind.RRPC_REQUEST, {}))
            with pytest.raises(InvalidArgument, match="service_id must be a non-empty string"):
                lab.run(
                    iothub.send_command(
                        pk, "inv", TopicKind.RRPC_REQUEST, {}, item_id="rr-2", service_id=""
                    )
                )
        sent.handle.cancel()
        first, fresh, last = (event.item_id for event in sent.sent)
        assert (first, last) == ("rr-1", "rr-9") and fresh not in {"", first, last}
        assert [event.item_id for event in sent.replied] == [first, fresh, last]

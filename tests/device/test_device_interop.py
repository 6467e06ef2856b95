"""Interoperability proof: one scenario (login, measurepoint posts, a refused post, an event,
an attribute update, a service call answered, a command nobody handles, logout) run by the
official ``enos-mqtt-sdk-python`` and by this SDK, as two devices of one product, leaves the
same records in the lab: presence, stored points and events with the same values and times,
attributes, and the same reply codes both ways."""

from __future__ import annotations

from typing import Any, Protocol

from enos.message.downstream.tsl.ServiceInvocationCommand import ServiceInvocationCommand
from enos.message.downstream.tsl.ServiceInvocationReply import ServiceInvocationReply
from enos.message.upstream.tsl.AttributeUpdateRequest import AttributeUpdateRequest
from enos.message.upstream.tsl.EventPostRequest import EventPostRequest
from enos.message.upstream.tsl.MeasurepointPostRequest import MeasurepointPostRequest
from enos_sdk_helpers import SDK_WARNINGS, WAIT, SdkDevice, sdk_device, sdk_product

from enos_lab import Lab, TopicKind
from enos_lab.clock import from_epoch_ms
from enos_lab.device import Device
from enos_lab.errors import RequestFailed
from enos_lab.tap import CommandReplied, PresenceChanged, TapSubscription

pytestmark = [SDK_WARNINGS]

T0 = 1_700_000_000_000  # [ms]
KEYS = ("official", "ours")


class Driver(Protocol):
    """What the scenario asks of a device, whichever SDK drives it; returns reply codes."""

    def post(self, values: dict[str, Any], time: int, quality: dict[str, int]) -> int: ...

    def event(self, event_id: str, values: dict[str, Any], time: int) -> int: ...

    def attributes(self, values: dict[str, Any]) -> int: ...


class Official:
    """The official SDK, used as its samples use it."""

    def __init__(self, sdk: SdkDevice) -> None:
        self.sdk = sdk

        def multiply(command: Any, topic_args: list[str]) -> Any:
            params = command.get_params()
            reply = ServiceInvocationReply.builder().set_code(200)
            return reply.add_output_data("result", params["left"] * params["right"]).build()

        sdk.client.register_arrived_message_handler(ServiceInvocationCommand.get_class(), multiply)

    def post(self, values: dict[str, Any], time: int, quality: dict[str, int]) -> int:
        points = {
            point: {"value": value, "quality": quality[point]} if point in quality else value
            for point, value in values.items()
        }
        request = MeasurepointPostRequest.builder().add_measurepoints(points)
        return int(self.sdk.publish(request.set_timestamp(time).build()).get_code())

    def event(self, event_id: str, values: dict[str, Any], time: int) -> int:
        request = EventPostRequest.builder().set_event_identifier(event_id).add_values(values)
        return int(self.sdk.publish(request.set_timestamp(time).build()).get_code())

    def attributes(self, values: dict[str, Any]) -> int:
        request = AttributeUpdateRequest.builder().add_attributes(values).build()
        return int(self.sdk.publish(request).get_code())


class Ours:
    """This SDK's synchronous device."""

    def __init__(self, device: Device) -> None:
        self.device = device
        device.on_service("multiply", lambda p: {"result": p["left"] * p["right"]})

    def _code(self, call: Any, *args: Any, **kwargs: Any) -> int:
        try:
            return int(call(*args, **kwargs).code)
        except RequestFailed as exc:
            return exc.code

    def post(self, values: dict[str, Any], time: int, quality: dict[str, int]) -> int:
        return self._code(self.device.post_measurepoints, values, time, quality=quality)

    def event(self, event_id: str, values: dict[str, Any], time: int) -> int:
        return self._code(self.device.post_event, event_id, values, time)

    def attributes(self, values: dict[str, Any]) -> int:
        return self._code(self.device.update_attributes, values)


def scenario(lab: Lab, driver: Driver, product_key: str, device_key: str) -> list[Any]:
    """The scenario's steps; returns what each step was answered, in order."""
    codes: list[Any] = [
        driver.post({"temp": 21.5, "state": 1}, T0, {}),
        driver.post({"power": 3.25}, T0 + 1000, {"power": 9}),
        driver.post({"temp": 22.0, "no_such_point": 1}, T0 + 2000, {}),  # 1204
        driver.event("overheat", {"temp": 95.5}, T0 + 3000),
        driver.attributes({"site": "north", "rated_power": 5.0}),
    ]
    service = lab.send_command(
        product_key,
        device_key,
        TopicKind.SERVICE_INVOKE,
        {"left": 6, "right": 7},
        item_id="multiply",
    )
    unhandled = lab.send_command(product_key, device_key, TopicKind.MEASUREPOINT_GET, ["temp"])
    assert service is not None and unhandled is not None
    codes += [(service.code, service.data), unhandled.code]
    return codes


def collect(sub: TapSubscription, wanted: dict[tuple[type, str], int]) -> list[Any]:
    """Tap events until ``wanted[(kind, device_key)]`` of each have come (waits for them)."""
    seen: list[Any] = []

    def missing() -> bool:
        return any(
            sum(isinstance(e, kind) and e.device_key == key for e in seen) < count
            for (kind, key), count in wanted.items()
        )

    while missing():
        seen.append(sub.get(timeout=WAIT))
    return seen


def records(lab: Lab, product_key: str, device_key: str) -> dict[str, Any]:
    """What the lab keeps about a device, without what differs by nature (keys, receive
    times)."""
    points = lab.store.query_points(device_key, product_key=product_key)
    events = lab.store.query_events(device_key, product_key=product_key)
    return {
        "points": [  # quality -1: none
            (r.point_id, r.time, r.value, int(r.quality), r.resume)
            for r in points.fillna({"quality": -1}).itertuples()
        ],
        "events": [(r.event_id, r.time, r.severity, r.outputs) for r in events.itertuples()],
        "attributes": lab.device(product_key, device_key).attributes,
        "presence": list(
            lab.presence(product_key, device_key)[["online", "reason"]].itertuples(index=False)
        ),
    }


def test_the_official_sdk_and_this_sdk_leave_the_same_records(lab: Lab) -> None:
    product = sdk_product(lab, "Interop meter")
    pk = product.product_key
    official_secret = lab.register_device(pk, device_key="official").device_secret
    ours_secret = lab.register_device(pk, device_key="ours").device_secret
    with lab.subscribe([PresenceChanged, CommandReplied], product_key=pk) as tap:
        with sdk_device(lab, pk, "official", device_secret=official_secret) as sdk:
            driver = Official(sdk)
            sdk.connect()
            official_codes = scenario(lab, driver, pk, "official")
        with Device(lab.host, lab.port, pk, "ours", ours_secret, timeout=WAIT) as device:
            ours_codes = scenario(lab, Ours(device), pk, "ours")
        wanted = {(kind, key): 2 for kind in (PresenceChanged, CommandReplied) for key in KEYS}
        seen = collect(tap, wanted)  # presence: connected, disconnected; two replies each
    replies = {
        key: [
            (e.command, e.code, e.data)
            for e in seen
            if isinstance(e, CommandReplied) and e.device_key == key
        ]
        for key in KEYS
    }

    assert official_codes == [200, 200, 1204, 200, 200, (200, {"result": 42}), 1101]
    assert ours_codes == official_codes
    assert replies["ours"] == replies["official"]
    official, ours = records(lab, pk, "official"), records(lab, pk, "ours")
    assert [point[:4] for point in official["points"]] == [
        ("power", from_epoch_ms(T0 + 1000), 3.25, 9),
        ("state", from_epoch_ms(T0), 1, -1),
        ("temp", from_epoch_ms(T0), 21.5, -1),
    ]
    assert official["events"] == [("overheat", from_epoch_ms(T0 + 3000), "WARN", {"temp": 95.5})]
    assert official["attributes"] == {"site": "north", "rated_power": 5.0}
    assert official["presence"] == [(True, "connected"), (False, "disconnected")]
    assert ours == official

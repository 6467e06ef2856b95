"""Applications over MQTT in a real lab on real TCP: paho clients (3.1.1 and 5.0) log in with an
application credential, read the device topics of their grants as official-SDK devices post,
and can never write: subscriptions outside the grants, publishes to device topics, wrong
secrets and revoked applications are refused."""

from __future__ import annotations

import contextlib
import json
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from enos.message.downstream.tsl.MeasurepointSetCommand import MeasurepointSetCommand
from enos.message.downstream.tsl.MeasurepointSetReply import MeasurepointSetReply
from enos.message.upstream.tsl.MeasurepointPostRequest import MeasurepointPostRequest
from enos_sdk_helpers import SDK_WARNINGS, WAIT, SdkDevice, running_lab, sdk_device, sdk_product
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from enos_lab import Lab
from enos_lab.apps import Application, Grant, filter_within, grant_patterns
from enos_lab.errors import InvalidArgument, NotFound
from enos_lab.lab import APPLICATION_COLUMNS
from enos_lab.tap import PointStored

pytestmark = [SDK_WARNINGS]

PROTOCOLS = [
    pytest.param(MQTTProtocolVersion.MQTTv311, id="3.1.1"),
    pytest.param(MQTTProtocolVersion.MQTTv5, id="5.0"),
]
T0 = 1_700_000_000_000  # [ms]


@dataclass
class AppClient:
    """A paho client logged in (or refused) as an application, with queues fed by its
    callbacks."""

    client: mqtt.Client
    protocol: MQTTProtocolVersion
    messages: queue.Queue[mqtt.MQTTMessage] = field(default_factory=queue.Queue)
    subacks: queue.Queue[list[int]] = field(default_factory=queue.Queue)
    pubacks: queue.Queue[tuple[int, int]] = field(default_factory=queue.Queue)
    connack: queue.Queue[int] = field(default_factory=queue.Queue)
    disconnected: threading.Event = field(default_factory=threading.Event)

    def subscribe(self, topic: str) -> int:
        """Subscribe at QoS 1; the SUBACK's code (1: granted; 0x80 / 0x87: refused)."""
        rc, _mid = self.client.subscribe(topic, 1)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        (code,) = self.subacks.get(timeout=WAIT)
        return code

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish at QoS 1 and return the PUBACK's reason code (3.1.1: always 0)."""
        info = self.client.publish(topic, payload, qos=1)
        mid, code = self.pubacks.get(timeout=WAIT)
        assert mid == info.mid
        return code

    def next(self) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=WAIT)

    def nothing(self, seconds: float = 0.3) -> None:
        with contextlib.suppress(queue.Empty):
            extra = self.messages.get(timeout=seconds)
            pytest.fail(f"unexpected message on {extra.topic!r}: {extra.payload!r}")


@contextlib.contextmanager
def app_client(
    lab: Lab,
    username: str,
    password: str | None,
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
    client_id: str = "app-client",
    *,
    tls: bool = False,
) -> Iterator[AppClient]:
    """A paho client connecting to the lab as ``username``; yields once the CONNACK came
    (``me.connack`` holds its code: 0 accepted)."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        reconnect_on_failure=False,
    )
    client.username_pw_set(username, password)
    me = AppClient(client, protocol)

    def on_connect(_c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        me.connack.put(reason.value)

    def on_message(_c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        me.messages.put(message)

    def on_subscribe(_c: Any, _u: Any, _mid: int, codes: list[ReasonCode], _p: Any) -> None:
        me.subacks.put([code.value for code in codes])

    def on_publish(_c: Any, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        me.pubacks.put((mid, reason.value))

    def on_disconnect(_c: Any, _u: Any, _f: Any, _reason: ReasonCode, _p: Any) -> None:
        me.disconnected.set()

    client.on_connect = on_connect
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.on_publish = on_publish
    client.on_disconnect = on_disconnect
    if tls:
        client.tls_set_context(lab.tls_context())
    client.connect("127.0.0.1", lab.tls_port if tls else lab.port, keepalive=30)
    client.loop_start()
    try:
        me.connack.put(me.connack.get(timeout=WAIT))  # wait for the CONNACK, keep it
        yield me
    finally:
        client.disconnect()
        client.loop_stop()


def _post(sdk: SdkDevice, at: int, as_device: tuple[str, str] | None = None, **points: Any) -> Any:
    builder = MeasurepointPostRequest.builder().add_measurepoints(points).set_timestamp(at)
    if as_device is not None:  # the request names another device
        builder = builder.set_product_key(as_device[0]).set_device_key(as_device[1])
    return sdk.publish(builder.build())


@contextlib.contextmanager
def meters(tmp_path: Path, seed: int) -> Iterator[tuple[Lab, str, dict[str, str], str]]:
    """A lab with a product of two meters (m1, m2) and another product (o1); yields the lab,
    the product key, the meters' secrets and the other product's key."""
    with running_lab(tmp_path / "lab", seed=seed) as lab:
        pk = sdk_product(lab).product_key
        secrets = {dk: lab.register_device(pk, device_key=dk).device_secret for dk in ("m1", "m2")}
        other = sdk_product(lab, "Other").product_key
        lab.register_device(other, device_key="o1")
        yield lab, pk, secrets, other


def test_grants_cover_exactly_their_topics() -> None:
    patterns = grant_patterns([Grant("pk"), Grant("pk2", ("d1",), ("event", "ota"))])
    assert "/sys/pk/+/thing/measurepoint/post" in patterns
    assert "/sys/pk2/d1/ota/device/progress" in patterns
    within = [
        "/sys/pk/+/thing/measurepoint/post",
        "/sys/pk/d9/thing/measurepoint/resume",
        "/sys/pk/+/thing/event/+/post",
        "/sys/pk/d1/thing/event/overheat/post",
        "/sys/pk2/d1/thing/event/+/post",
    ]
    outside = [
        "#",
        "/sys/pk/#",
        "/sys/pk/+/thing/#",
        "/sys/+/+/thing/measurepoint/post",  # any product
        "/sys/pk/+/thing/+/post",  # '+' where the grant has a literal level
        "/sys/pk/+/thing/measurepoint/post/batch",
        "/sys/pk/+/thing/service/measurepoint/set",  # commands are never granted
        "/sys/pk2/+/thing/event/+/post",  # all devices; the grant names d1
        "/sys/pk2/d1/thing/measurepoint/post",  # a kind it does not name
        "$share/g/sys/pk/+/thing/measurepoint/post",
    ]
    assert all(filter_within(f, patterns) for f in within)
    assert not any(filter_within(f, patterns) for f in outside)


@pytest.mark.parametrize(
    "grant",
    ["", "p+k", {"product_key": "pk", "kinds": ["commands"]}, {"device_keys": ["a"]}, 3],
)
def test_bad_grants_are_refused_naming_the_value(grant: Any) -> None:
    with pytest.raises(InvalidArgument):
        Grant.of(grant)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_application_reads_the_posts_of_its_product_and_nothing_else(
    tmp_path: Path, protocol: MQTTProtocolVersion
) -> None:
    with meters(tmp_path, seed=1) as (lab, pk, secrets, other):
        app = lab.register_application("dashboard", grants=pk)
        assert isinstance(app, Application) and app.username == f"%app%&{app.access_key}"
        assert app.access_secret is not None and app.access_secret not in repr(app)
        refused = 0x87 if protocol == MQTTProtocolVersion.MQTTv5 else 0x80
        with app_client(lab, app.username, app.access_secret, protocol) as reader:
            assert reader.connack.get() == 0
            assert reader.subscribe(f"/sys/{pk}/+/thing/measurepoint/post") == 1
            for topic in (
                f"/sys/{other}/+/thing/measurepoint/post",  # another product
                f"/sys/{pk}/#",  # '#' reaches every topic of the product
                f"/sys/{pk}/m1/thing/service/measurepoint/set",  # its commands
                f"/sys/{pk}/+/thing/measurepoint/post/batch",
            ):
                assert reader.subscribe(topic) == refused, topic
            with (
                sdk_device(lab, pk, "m1", device_secret=secrets["m1"]) as m1,
                sdk_device(lab, pk, "m2", device_secret=secrets["m2"]) as m2,
            ):
                m1.connect()
                m2.connect()
                assert _post(m1, T0, temp=21.5).get_code() == 200
                assert _post(m2, T0 + 1, power=3.0).get_code() == 200
                got = {reader.next().topic: None for _ in range(2)}
                assert set(got) == {
                    f"/sys/{pk}/m1/thing/measurepoint/post",
                    f"/sys/{pk}/m2/thing/measurepoint/post",
                }
                # a device posting on another device's topic is answered 1009 and never
                # reaches the application (nor the store)
                assert _post(m2, T0 + 2, (pk, "m1"), temp=99.0).get_code() == 1009
                assert _post(m1, T0 + 3, temp=22.5).get_code() == 200
                message = reader.next()
                assert message.topic == f"/sys/{pk}/m1/thing/measurepoint/post"
                assert json.loads(message.payload)["params"]["measurepoints"] == {"temp": 22.5}
                reader.nothing()
        temps = lab.store.query_points("m1", "temp", product_key=pk)
        assert sorted(temps["value"]) == [21.5, 22.5]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_application_can_never_publish_to_a_device(
    tmp_path: Path, protocol: MQTTProtocolVersion
) -> None:
    with meters(tmp_path, seed=2) as (lab, pk, secrets, _other):
        app = lab.register_application("writer", grants={"product_key": pk, "device_keys": ["m1"]})
        arrived = threading.Event()

        def on_set(_command: Any, _args: list[str]) -> Any:
            arrived.set()
            return MeasurepointSetReply.builder().set_code(200).build()

        with (
            sdk_device(lab, pk, "m1", device_secret=secrets["m1"]) as m1,
            lab.subscribe(PointStored) as points,
        ):
            m1.client.register_arrived_message_handler(MeasurepointSetCommand.get_class(), on_set)
            m1.connect()
            with app_client(lab, app.username, app.access_secret, protocol) as writer:
                assert writer.subscribe(f"/sys/{pk}/m1/thing/measurepoint/post") == 1
                command = {
                    "id": "1",
                    "version": "1.0",
                    "method": "thing.service.measurepoint.set",
                    "params": {"temp": 1.0},
                }
                post = {
                    "id": "2",
                    "version": "1.0",
                    "method": "thing.measurepoint.post",
                    "params": {"measurepoints": {"temp": 66.0}, "time": T0},
                }
                expected = 0x87 if protocol == MQTTProtocolVersion.MQTTv5 else 0
                for topic, payload in (
                    (f"/sys/{pk}/m1/thing/service/measurepoint/set", command),
                    (f"/sys/{pk}/m1/thing/measurepoint/post", post),  # as if it were m1
                    ("/anything/else", post),
                ):
                    assert writer.publish(topic, json.dumps(payload).encode()) == expected
                # nothing reached the device, the store, the tap or the application itself
                assert _post(m1, T0 + 1, temp=20.0).get_code() == 200
                assert json.loads(writer.next().payload)["params"]["measurepoints"] == {
                    "temp": 20.0
                }
                writer.nothing()
                assert [e.value for e in points.drain() if isinstance(e, PointStored)] == [20.0]
                assert not arrived.is_set()
                assert not writer.disconnected.is_set()  # refused, not disconnected


def test_wrong_secrets_are_refused_and_a_revoked_application_is_kicked(tmp_path: Path) -> None:
    with meters(tmp_path, seed=3) as (lab, pk, _secrets, _other):
        app = lab.register_application("ops", grants=[pk])
        for username, password in (
            (app.username, "wrong"),
            (app.username, None),
            ("%app%&appUnknown", app.access_secret),
            (f"{app.access_key}&{pk}", app.access_secret),  # not a device
        ):
            with app_client(lab, username, password) as refused:
                assert refused.connack.get() == 0x87, username  # 3.1.1 code 5, as paho shows it
        refusals = lab.refused_logins()
        assert len(refusals) == 4
        assert "wrong secret" in refusals["reason"].iloc[0]
        assert refusals["product_key"].iloc[:3].isna().all()  # applications have no device keys

        with app_client(lab, app.username, app.access_secret, MQTTProtocolVersion.MQTTv5) as ok:
            assert ok.connack.get() == 0
            assert ok.subscribe(f"/sys/{pk}/+/thing/measurepoint/post") == 1
            revoked = lab.revoke_application(app.access_key)
            assert revoked.revoked and revoked.revoked_at is not None
            assert ok.disconnected.wait(WAIT)
        with app_client(lab, app.username, app.access_secret, MQTTProtocolVersion.MQTTv5) as again:
            assert again.connack.get() == 0x87
        assert lab.revoke_application(app.access_key).revoked_at == revoked.revoked_at

        frame = lab.applications()
        assert list(frame.columns) == list(APPLICATION_COLUMNS)
        assert frame["access_key"].tolist() == [app.access_key]
        assert str(frame["revoked_at"].dt.tz) == "UTC" and frame["revoked_at"].notna().all()
        assert frame["grants"].iloc[0] == [
            {
                "product_key": pk,
                "device_keys": None,
                "kinds": ["measurepoint", "event", "attribute"],
            }
        ]
        assert lab.application(app.access_key).access_secret is None
        with pytest.raises(NotFound):
            lab.revoke_application("appNone")
        with pytest.raises(NotFound):
            lab.register_application("x", grants={"product_key": pk, "device_keys": ["nope"]})
        with pytest.raises(NotFound):
            lab.register_application("x", grants="no-such-product")


def test_applications_survive_a_restart_and_keep_no_secret(tmp_path: Path) -> None:
    data = tmp_path / "lab"
    with running_lab(data, seed=4) as lab:
        pk = sdk_product(lab).product_key
        app = lab.register_application("kept", grants=pk)
    database = (data / "applications.sqlite3").read_bytes()
    assert app.access_secret is not None and app.access_secret.encode() not in database
    assert (data / "applications.sqlite3").stat().st_mode & 0o077 == 0
    with running_lab(data, seed=4) as lab:
        assert lab.application(app.access_key).name == "kept"
        with app_client(lab, app.username, app.access_secret) as reader:
            assert reader.connack.get() == 0


def test_an_application_reads_over_tls(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=5, tls_port=0) as lab:
        pk = sdk_product(lab).product_key
        secret = lab.register_device(pk, device_key="m1").device_secret
        app = lab.register_application("tls", grants={"product_key": pk, "kinds": "measurepoint"})
        with app_client(lab, app.username, app.access_secret, tls=True) as reader:
            assert reader.connack.get() == 0
            # '+' over post and resume would also match measurepoint/get_reply, ...: refused
            assert reader.subscribe(f"/sys/{pk}/m1/thing/measurepoint/+") == 0x80
            assert reader.subscribe(f"/sys/{pk}/m1/thing/measurepoint/post") == 1
            assert reader.subscribe(f"/sys/{pk}/m1/thing/event/+/post") == 0x80  # not granted
            with sdk_device(lab, pk, "m1", device_secret=secret) as m1:
                m1.connect()
                assert _post(m1, T0, temp=1.0).get_code() == 200
                assert reader.next().topic == f"/sys/{pk}/m1/thing/measurepoint/post"

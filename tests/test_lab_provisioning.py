"""The Lab's provisioning facade: models, products, devices, credentials, presence, commands.

Every facade method is exercised in its synchronous and its ``a``-prefixed coroutine form, on a
real lab (its own loop thread, a real SQLite registry and DuckDB store in a temporary directory).
Tests that need the EnOS IoT hub connect real devices over TCP with the official EnOS SDK.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from enos.message.upstream.tsl.MeasurepointPostRequest import MeasurepointPostRequest
from enos_sdk_helpers import SDK_WARNINGS, SdkDevice, sdk_device, sdk_log

from enos_lab import Lab
from enos_lab.enos import TopicKind
from enos_lab.errors import (
    AlreadyExists,
    ClosedError,
    InvalidArgument,
    ModelError,
    NotFound,
    RegistryError,
)
from enos_lab.model import ThingModel, library_model, model_from_json, model_to_json
from enos_lab.registry import BulkResult, DeviceState, NodeType

PUMP_MODEL: dict[str, Any] = {
    "modelId": "lab_pump",
    "name": {"defaultValue": "Pump"},
    "attributes": {},
    "measurepoints": {
        "flow": {
            "identifier": "flow",
            "name": {"defaultValue": "Flow rate"},
            "dataType": "DOUBLE",
            "dataDefinition": None,
            "hasQuality": False,
            "signalType": "AI",
            "unit": {"unitId": "m3/h", "multiplier": "ONE"},
        }
    },
    "services": {},
    "events": {},
}


def _pump_child(model_id: str = "lab_pump_v2") -> dict[str, Any]:
    """A child of PUMP_MODEL that adds one measurepoint."""
    doc = json.loads(json.dumps(PUMP_MODEL))
    doc["modelId"] = model_id
    doc["parentModelId"] = "lab_pump"
    doc["measurepoints"] = {
        "pressure": {
            "identifier": "pressure",
            "name": {"defaultValue": "Pressure"},
            "dataType": "DOUBLE",
            "dataDefinition": None,
            "hasQuality": False,
            "signalType": "AI",
            "unit": None,
        }
    }
    return doc


@pytest.fixture
def lab(make_lab: Callable[..., Lab]) -> Lab:
    """An anonymous lab (no IoT hub services) with seeded keys."""
    return make_lab(anonymous=True, rng=random.Random(1))


# -- thing models ---------------------------------------------------------------------------------


def test_library_models_are_preloaded(lab: Lab) -> None:
    assert "energy_meter" in lab.models
    assert lab.models.get("energy_meter") == library_model("energy_meter")


def test_add_model_accepts_every_form(lab: Lab, tmp_path: Path) -> None:
    added = lab.add_model(PUMP_MODEL)
    assert isinstance(added, ThingModel) and added.model_id == "lab_pump"
    assert "flow" in lab.models.get("lab_pump").measurepoints

    text = json.dumps({**PUMP_MODEL, "modelId": "from_text"})
    assert lab.add_model(text).model_id == "from_text"

    path = tmp_path / "pump.json"
    path.write_text(json.dumps({**PUMP_MODEL, "modelId": "from_path"}))
    assert lab.add_model(path).model_id == "from_path"
    path2 = tmp_path / "pump2.json"
    path2.write_text(json.dumps({**PUMP_MODEL, "modelId": "from_str_path"}))
    assert lab.add_model(str(path2)).model_id == "from_str_path"

    model = model_from_json({**PUMP_MODEL, "modelId": "from_object"})
    assert lab.add_model(model) is lab.models.get("from_object")


def test_a_child_model_is_resolved_against_its_parent(lab: Lab) -> None:
    lab.add_model(PUMP_MODEL)
    child = lab.add_model(_pump_child())
    assert set(child.measurepoints) == {"flow", "pressure"}
    assert child.parent_id == "lab_pump"


def test_add_model_refuses_taken_ids_and_bad_documents(lab: Lab) -> None:
    lab.add_model(PUMP_MODEL)
    with pytest.raises(AlreadyExists, match="lab_pump"):
        lab.add_model(PUMP_MODEL)
    with pytest.raises(AlreadyExists, match="energy_meter"):
        lab.add_model({**PUMP_MODEL, "modelId": "energy_meter"})
    with pytest.raises(ModelError, match="no_such_parent"):
        lab.add_model({**_pump_child("orphan"), "parentModelId": "no_such_parent"})
    with pytest.raises(ModelError):
        lab.add_model({**PUMP_MODEL, "modelId": "broken", "measurepoints": {"x": {}}})
    with pytest.raises(InvalidArgument, match="int"):
        lab.add_model(42)  # type: ignore[arg-type]
    # a refused model is neither in the catalog nor kept
    assert "orphan" not in lab.models and "broken" not in lab.models
    assert [d["modelId"] for d in lab.registry.model_documents()] == ["lab_pump"]


def test_user_models_survive_a_restart_in_order(tmp_path: Path) -> None:
    with Lab(tmp_path, port=0, anonymous=True) as lab:
        lab.add_model(PUMP_MODEL)
        lab.add_model(_pump_child())
        before = lab.models.get("lab_pump_v2")
        library_count = len(lab.models)
    with Lab(tmp_path, port=0, anonymous=True) as lab:
        assert lab.models.get("lab_pump_v2") == before
        assert lab.models.ids()[-2:] == ["lab_pump", "lab_pump_v2"]
        assert len(lab.models) == library_count
        assert model_to_json(lab.models.get("lab_pump"))["modelId"] == "lab_pump"


def test_a_kept_model_that_no_longer_loads_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Lab(tmp_path, port=0, anonymous=True) as lab:
        lab.registry.save_model({**PUMP_MODEL, "modelId": "energy_meter"})  # clashes
        lab.registry.save_model(PUMP_MODEL)
    with (
        caplog.at_level("WARNING", logger="enos_lab.lab"),
        Lab(tmp_path, port=0, anonymous=True) as lab,
    ):
        assert "lab_pump" in lab.models
        assert lab.models.get("energy_meter") == library_model("energy_meter")
    assert any("energy_meter" in r.getMessage() for r in caplog.records)


# -- products -------------------------------------------------------------------------------------


def test_create_product_with_a_model_and_list_products(lab: Lab) -> None:
    meter = lab.create_product("Meters", model_id="energy_meter", description="kWh meters")
    free = lab.create_product(
        "Anything",
        product_key="free",
        node_type="gateway",
        dynamic_activation=True,
        custom_topics={"/{productKey}/{deviceKey}/user/update": "publish"},
    )
    assert meter.model_id == "energy_meter" and len(meter.product_secret) == 16
    assert free.product_key == "free" and free.node_type is NodeType.GATEWAY
    assert lab.product("free") == free
    lab.register_device("free", device_key="d1")

    frame = lab.products()
    assert frame["product_key"].tolist() == [meter.product_key, "free"]
    assert list(frame.columns) == [
        "product_key",
        "name",
        "model_id",
        "node_type",
        "dynamic_activation",
        "data_format",
        "certificate_required",
        "description",
        "custom_topics",
        "created_at",
        "devices",
    ]
    assert "product_secret" not in frame.columns
    assert str(frame["created_at"].dt.tz) == "UTC"
    assert frame["devices"].tolist() == [0, 1]
    assert frame.loc[1, "custom_topics"] == {"/{productKey}/{deviceKey}/user/update": "publish"}
    assert frame.loc[1, "node_type"] == "gateway" and bool(frame.loc[1, "dynamic_activation"])


def test_create_product_refuses_unknown_models_and_bad_values(lab: Lab) -> None:
    with pytest.raises(NotFound, match="no_such_model"):
        lab.create_product("X", model_id="no_such_model")
    with pytest.raises(InvalidArgument, match="node_type"):
        lab.create_product("X", node_type="toaster")
    with pytest.raises(InvalidArgument, match="name"):
        lab.create_product("  ")
    lab.create_product("X", product_key="px")
    with pytest.raises(AlreadyExists, match="px"):
        lab.create_product("Y", product_key="px")
    with pytest.raises(NotFound, match="nope"):
        lab.product("nope")
    assert lab.products()["product_key"].tolist() == ["px"]


def test_an_empty_lab_has_typed_empty_frames(lab: Lab) -> None:
    products = lab.products()
    assert products.empty and str(products["created_at"].dt.tz) == "UTC"
    presence = lab.presence()
    assert presence.empty and list(presence.columns) == [
        "time",
        "product_key",
        "device_key",
        "online",
        "reason",
    ]
    assert str(presence["time"].dt.tz) == "UTC" and presence["online"].dtype == bool
    assert lab.devices().empty and lab.export_credentials().empty


def test_seeded_rng_makes_keys_and_secrets_reproducible(tmp_path: Path) -> None:
    made = []
    for name in ("a", "b"):
        with Lab(tmp_path / name, port=0, anonymous=True, rng=random.Random(42)) as lab:
            product = lab.create_product("P")
            device = lab.register_device(product.product_key)
            made.append((product.product_key, product.product_secret, device.device_secret))
    assert made[0] == made[1]


# -- devices --------------------------------------------------------------------------------------


def test_register_and_look_up_devices(lab: Lab) -> None:
    product = lab.create_product("Meters", model_id="energy_meter")
    pk = product.product_key
    device = lab.register_device(
        pk, device_key="m1", name="Meter 1", timezone="+08:00", tags={"site": "north"}
    )
    assert device.state is DeviceState.INACTIVE and device.tags == {"site": "north"}
    assert lab.device(pk, "m1") == device
    other = lab.register_device(pk)
    frame = lab.devices(pk)
    assert frame["device_key"].tolist() == ["m1", other.device_key]
    assert frame["state"].tolist() == ["inactive", "inactive"]
    assert str(frame["created_at"].dt.tz) == "UTC"
    assert lab.devices()["device_key"].tolist() == frame["device_key"].tolist()
    with pytest.raises(AlreadyExists, match="m1"):
        lab.register_device(pk, device_key="m1")
    with pytest.raises(NotFound, match="nope"):
        lab.register_device("nope")
    with pytest.raises(NotFound, match="m9"):
        lab.device(pk, "m9")
    with pytest.raises(NotFound, match="nope"):
        lab.devices("nope")
    with pytest.raises(InvalidArgument, match="timezone"):
        lab.register_device(pk, timezone="CET")


def test_register_devices_from_rows_frames_and_csv(lab: Lab, tmp_path: Path) -> None:
    pk = lab.create_product("Meters", product_key="meters").product_key
    result = lab.register_devices(
        [{"product_key": pk, "device_key": f"r{i}"} for i in range(3)], progress=False
    )
    assert isinstance(result, BulkResult)
    assert result.registered["device_key"].tolist() == ["r0", "r1", "r2"]
    assert result.errors.empty

    frame = pd.DataFrame(
        {
            "product_key": [pk, pk, "nope"],
            "device_key": ["f0", "r0", "f2"],
            "tags": ['{"site": "a"}', "", ""],
        }
    )
    result = lab.register_devices(frame, progress=False)
    assert result.registered["device_key"].tolist() == ["f0"]
    assert result.errors["row"].tolist() == [1, 2]
    assert "AlreadyExists" in result.errors.loc[0, "error"]
    assert "NotFound" in result.errors.loc[1, "error"]
    assert lab.device(pk, "f0").tags == {"site": "a"}

    csv = tmp_path / "fleet.csv"
    csv.write_text(f"product_key,device_key,timezone\n{pk},c0,+01:00\n{pk},c1,+01:00\n")
    result = lab.register_devices(csv)  # with the default progress bar
    assert result.registered["device_key"].tolist() == ["c0", "c1"]
    assert len(lab.devices(pk)) == 6


def test_concurrent_registrations_from_many_threads(lab: Lab) -> None:
    pk = lab.create_product("Meters").product_key
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(10):
                lab.register_device(pk, device_key=f"t{n}-{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(lab.devices(pk)) == 40


def test_lifecycle_without_the_iot_hub(lab: Lab) -> None:
    pk = lab.create_product("Meters").product_key
    lab.register_device(pk, device_key="m1")
    assert lab.disable_device(pk, "m1").state is DeviceState.DISABLED
    assert lab.enable_device(pk, "m1").state is DeviceState.INACTIVE
    assert not lab.is_online(pk, "m1")
    deleted = lab.delete_device(pk, "m1")
    assert deleted.state is DeviceState.DELETED
    assert lab.devices(pk).empty
    for call in (lab.enable_device, lab.disable_device, lab.delete_device, lab.is_online):
        with pytest.raises(NotFound, match="m1"):
            call(pk, "m1")


def test_export_credentials(lab: Lab) -> None:
    product = lab.create_product("Meters", dynamic_activation=True)
    device = lab.register_device(product.product_key, device_key="m1")
    lab.create_product("Other", product_key="other")
    lab.register_device("other", device_key="o1")
    creds = lab.export_credentials(product.product_key)
    assert creds.to_dict(orient="records") == [
        {
            "product_key": product.product_key,
            "device_key": "m1",
            "device_secret": device.device_secret,
            "product_secret": product.product_secret,
            "asset_id": device.asset_id,
            "dynamic_activation": True,
        }
    ]
    assert lab.export_credentials()["device_key"].tolist() == ["m1", "o1"]


def test_presence_reads_the_registry_log(lab: Lab) -> None:
    pk = lab.create_product("Meters").product_key
    lab.register_device(pk, device_key="m1")
    lab.register_device(pk, device_key="m2")
    lab.registry.set_online(pk, "m1")
    lab.registry.set_online(pk, "m2")
    lab.registry.set_offline(pk, "m1", "keep-alive timeout")
    frame = lab.presence()
    assert frame[["device_key", "online", "reason"]].values.tolist() == [
        ["m1", True, "connected"],
        ["m2", True, "connected"],
        ["m1", False, "keep-alive timeout"],
    ]
    assert str(frame["time"].dt.tz) == "UTC"
    assert lab.presence(pk, "m1")["reason"].tolist() == ["connected", "keep-alive timeout"]
    assert lab.presence("other").empty


def test_an_anonymous_lab_has_no_iot_hub(lab: Lab) -> None:
    assert lab.iothub is None and lab.anonymous
    pk = lab.create_product("Meters").product_key
    lab.register_device(pk, device_key="m1")
    with pytest.raises(InvalidArgument, match="anonymous"):
        lab.send_command(pk, "m1", TopicKind.SERVICE_INVOKE, {}, item_id="x")
    with pytest.raises(InvalidArgument, match="anonymous"):
        lab.create_product("Raw", data_format="custom", codec=object())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="anonymous"):
        lab.register_codec(pk, object())  # type: ignore[arg-type]


def test_everything_needs_a_running_lab(tmp_path: Path) -> None:
    lab = Lab(tmp_path, port=0, anonymous=True)
    for name in ("registry", "models", "iothub", "store", "hub"):
        with pytest.raises(ClosedError):
            getattr(lab, name)
    with pytest.raises(ClosedError):
        lab.products()
    with pytest.raises(ClosedError):
        lab.register_device("pk")
    with pytest.raises(ClosedError):
        lab.send_command("pk", "dk", TopicKind.SERVICE_INVOKE, {})
    with lab:
        lab.create_product("P", product_key="pk")
    with pytest.raises(ClosedError):
        lab.add_model(PUMP_MODEL)
    with pytest.raises(ClosedError):
        lab.device("pk", "dk")


def test_the_registry_survives_a_restart(tmp_path: Path) -> None:
    with Lab(tmp_path, port=0, anonymous=True) as lab:
        lab.add_model(PUMP_MODEL)
        product = lab.create_product("Pumps", model_id="lab_pump")
        device = lab.register_device(product.product_key, device_key="p1")
        assert (tmp_path / "registry.sqlite3").is_file()
    with Lab(tmp_path, port=0, anonymous=True) as lab:
        assert lab.product(product.product_key) == product
        assert lab.device(product.product_key, "p1") == device
        assert lab.products()["devices"].tolist() == [1]
        lab.create_product("More pumps", model_id="lab_pump")


# -- async forms ----------------------------------------------------------------------------------


def test_async_forms_of_every_registry_method(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Lab(tmp_path, port=0, anonymous=True) as lab:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0)

            task = asyncio.create_task(ticker())
            model = await lab.aadd_model(PUMP_MODEL)
            assert model.model_id == "lab_pump"
            product = await lab.acreate_product("Pumps", model_id="lab_pump", product_key="pp")
            assert await lab.aproduct("pp") == product
            device = await lab.aregister_device("pp", device_key="p1")
            assert await lab.adevice("pp", "p1") == device
            bulk = await lab.aregister_devices(
                [{"product_key": "pp", "device_key": "p2"}], progress=False
            )
            assert bulk.registered["device_key"].tolist() == ["p2"]
            assert (await lab.aproducts())["devices"].tolist() == [2]
            assert (await lab.adevices("pp"))["device_key"].tolist() == ["p1", "p2"]
            assert (await lab.aexport_credentials("pp"))["device_secret"].tolist()[0] == (
                device.device_secret
            )
            assert (await lab.adisable_device("pp", "p1")).state is DeviceState.DISABLED
            assert (await lab.aenable_device("pp", "p1")).state is DeviceState.INACTIVE
            assert not await lab.ais_online("pp", "p1")
            assert (await lab.adelete_device("pp", "p2")).state is DeviceState.DELETED
            assert (await lab.apresence("pp")).empty
            with pytest.raises(NotFound, match="nope"):
                await lab.acreate_product("X", model_id="nope")
            with pytest.raises(InvalidArgument, match="anonymous"):
                await lab.asend_command("pp", "p1", TopicKind.SERVICE_INVOKE, {})
            with pytest.raises(InvalidArgument, match="anonymous"):
                await lab.aregister_codec("pp", object())  # type: ignore[arg-type]
            task.cancel()
            assert ticks > 0  # the caller's loop kept running while the facade worked

    asyncio.run(scenario())


def test_registry_errors_are_enos_lab_errors(lab: Lab) -> None:
    pk = lab.create_product("P", product_key="p").product_key
    lab.register_device(pk, device_key="d")
    with pytest.raises(RegistryError):
        lab.registry.delete_product(pk)


# -- with the IoT hub: real devices over TCP, driven by the official EnOS SDK ---------------------

SDK_WAIT = 10.0  # [s] bound of the waits for an activation and for the SDK's automatic reconnect


def _post(sdk: SdkDevice, **points: float) -> int:
    """Post measurepoints (event time 2023-11-14T22:13:20Z); returns the hub's reply code."""
    builder = MeasurepointPostRequest.builder()
    for point_id, value in points.items():
        builder.add_measurepoint(point_id, value)
    return int(sdk.publish(builder.set_timestamp(1_700_000_000_000).build()).get_code())


@pytest.fixture
def hub_lab(make_lab: Callable[..., Lab]) -> Lab:
    """A lab with EnOS authentication and the IoT hub services, seeded keys."""
    return make_lab(rng=random.Random(5))


def test_an_authenticating_lab_wires_the_iot_hub(hub_lab: Lab) -> None:
    from enos_lab.iothub import IotHub

    assert isinstance(hub_lab.iothub, IotHub) and not hub_lab.anonymous
    # no CONNACK delay for everybody: the IoT hub delays Python-SDK-shaped logins only
    assert hub_lab.hub.config.connack_delay == 0.0
    assert hub_lab.iothub.config.python_sdk_connack_delay == pytest.approx(0.05)
    assert hub_lab.iothub.models is hub_lab.models
    assert hub_lab.iothub.registry is hub_lab.registry
    assert hub_lab.iothub.store is hub_lab.store


def test_hub_and_iothub_settings_are_passed_through(tmp_path: Path) -> None:
    from enos_lab.hub import HubConfig
    from enos_lab.iothub import IotHubConfig

    config = IotHubConfig(command_timeout=3.0)
    with Lab(
        tmp_path, port=0, hub_config=HubConfig(connack_delay=0.2), iothub_config=config
    ) as lab:
        assert lab.hub.config.connack_delay == pytest.approx(0.2)
        assert not lab.hub.config.anonymous
        assert lab.iothub is not None and lab.iothub.config is config
    with Lab(tmp_path, port=0, anonymous=True, hub_config=HubConfig(connack_delay=0.2)) as lab:
        assert lab.hub.config.anonymous and lab.hub.config.connack_delay == pytest.approx(0.2)


@SDK_WARNINGS
def test_device_by_secret_posts_data_is_disabled_and_comes_back(hub_lab: Lab) -> None:
    lab = hub_lab
    product = lab.create_product("Meters", model_id="energy_meter")
    pk = product.product_key
    device = lab.register_device(pk, device_key="meter-01")
    with (
        sdk_log() as log,
        sdk_device(lab, pk, "meter-01", device_secret=device.device_secret) as sdk,
    ):
        sdk.connect()
        log.wait_connects(1)
        assert lab.is_online(pk, "meter-01")
        assert lab.device(pk, "meter-01").state is DeviceState.ONLINE
        assert _post(sdk, active_power=12.5) == 200
        points = lab.store.query_points("meter-01", "active_power", product_key=pk)
        assert points["value"].tolist() == [12.5]
        assert _post(sdk, no_such_point=1.0) == 1204  # refused by the thing model

        disabled = lab.disable_device(pk, "meter-01")
        # the facade returns once the hub has dropped the connection
        assert disabled.state is DeviceState.DISABLED and not disabled.online
        assert not lab.is_online(pk, "meter-01")
        assert lab.presence(pk, "meter-01")["reason"].tolist() == ["connected", "disabled"]
        assert lab.devices(pk).loc[0, "state"] == "disabled"

        # the SDK keeps reconnecting; once the device is enabled again it gets in
        assert lab.enable_device(pk, "meter-01").enabled
        log.wait_connects(2, timeout=SDK_WAIT)
        assert lab.is_online(pk, "meter-01")
        assert lab.presence(pk, "meter-01")["online"].tolist() == [True, False, True]


@SDK_WARNINGS
def test_dynamic_activation_then_login_with_the_issued_secret(hub_lab: Lab) -> None:
    lab = hub_lab
    product = lab.create_product("Rooms", dynamic_activation=True)
    pk = product.product_key
    lab.register_device(pk, device_key="room-01")
    with sdk_device(lab, pk, "room-01", product_secret=product.product_secret) as activation:
        activation.connect()
        assert activation.activated.wait(SDK_WAIT)
    issued = activation.issued_secret
    assert issued and lab.device(pk, "room-01").device_secret == issued
    assert lab.export_credentials(pk).loc[0, "device_secret"] == issued

    with sdk_log() as log, sdk_device(lab, pk, "room-01", device_secret=issued) as device:
        device.connect()
        log.wait_connects(1)
        assert _post(device, temperature=4.5) == 200  # no model: any measurepoint passes
        assert lab.device(pk, "room-01").state is DeviceState.ONLINE


@SDK_WARNINGS
def test_send_command_reaches_the_device_and_returns_its_reply(hub_lab: Lab) -> None:
    from enos.message.downstream.tsl.ServiceInvocationCommand import ServiceInvocationCommand
    from enos.message.downstream.tsl.ServiceInvocationReply import ServiceInvocationReply

    lab = hub_lab
    pk = lab.create_product("Calculators").product_key
    device = lab.register_device(pk, device_key="calc-01")

    def multiply(message: Any, args: list[str]) -> Any:
        params = message.get_params()
        return (
            ServiceInvocationReply.builder()
            .add_output_data("result", params["left"] * params["right"])
            .set_code(200)
            .build()
        )

    with (
        sdk_log() as log,
        sdk_device(lab, pk, "calc-01", device_secret=device.device_secret) as sdk,
    ):
        sdk.client.register_arrived_message_handler(ServiceInvocationCommand.get_class(), multiply)
        sdk.connect()
        log.wait_connects(1)
        reply = lab.send_command(
            pk, "calc-01", TopicKind.SERVICE_INVOKE, {"left": 6, "right": 7}, item_id="multiply"
        )
        assert reply is not None and reply.ok and reply.data == {"result": 42}

        async def from_asyncio() -> Any:
            return await lab.asend_command(
                pk, "calc-01", TopicKind.SERVICE_INVOKE, {"left": 2, "right": 3}, item_id="multiply"
            )

        reply = asyncio.run(from_asyncio())
        assert reply is not None and reply.data == {"result": 6}
        sent = lab.send_command(
            pk,
            "calc-01",
            TopicKind.SERVICE_INVOKE,
            {"left": 1, "right": 1},
            item_id="multiply",
            wait=False,
        )
        assert sent is None
    with pytest.raises(NotFound, match="nope"):
        lab.send_command(pk, "nope", TopicKind.SERVICE_INVOKE, {}, item_id="multiply")


@SDK_WARNINGS
def test_delete_drops_a_connected_device(hub_lab: Lab) -> None:
    lab = hub_lab
    pk = lab.create_product("Meters").product_key
    device = lab.register_device(pk, device_key="gone")
    with sdk_log() as log, sdk_device(lab, pk, "gone", device_secret=device.device_secret) as sdk:
        sdk.connect()
        log.wait_connects(1)

        async def delete() -> Any:
            return await lab.adelete_device(pk, "gone")

        deleted = asyncio.run(delete())
        assert deleted.state is DeviceState.DELETED
        assert not lab.is_online(pk, "gone")
        assert lab.presence(pk, "gone")["reason"].tolist() == ["connected", "deleted"]
        assert lab.devices(pk).empty


@SDK_WARNINGS
def test_async_disable_and_enable_with_a_connected_device(hub_lab: Lab) -> None:
    lab = hub_lab
    pk = lab.create_product("Meters").product_key
    device = lab.register_device(pk, device_key="m1")
    with sdk_log() as log, sdk_device(lab, pk, "m1", device_secret=device.device_secret) as sdk:
        sdk.connect()
        log.wait_connects(1)

        async def cycle() -> tuple[Any, Any, bool]:
            disabled = await lab.adisable_device(pk, "m1")
            online = await lab.ais_online(pk, "m1")
            enabled = await lab.aenable_device(pk, "m1")
            return disabled, enabled, online

        disabled, enabled, online = asyncio.run(cycle())
        assert disabled.state is DeviceState.DISABLED and not online
        assert enabled.enabled
        assert (asyncio.run(lab.apresence(pk, "m1")))["reason"].tolist()[:2] == [
            "connected",
            "disabled",
        ]


def test_custom_products_take_a_codec(hub_lab: Lab) -> None:
    class Identity:
        def decode_upstream(self, payload: bytes) -> bytes:
            return payload

        def encode_downstream(self, envelope: bytes) -> bytes:
            return envelope

        def encode_reply(self, reply: bytes) -> bytes:
            return reply

    with pytest.raises(InvalidArgument, match="custom"):
        hub_lab.create_product("Raw", codec=Identity())
    product = hub_lab.create_product("Raw", data_format="custom", codec=Identity())
    assert product.data_format.value == "custom"
    hub_lab.register_codec(product.product_key, Identity())
    with pytest.raises(NotFound, match="nope"):
        hub_lab.register_codec("nope", Identity())

"""The edge gateway against a real lab over TCP and real pymodbus field devices: edges
registered by serial number, refused when unknown or revoked, sub-devices set up as EnOS Edge
does, and the upload modes."""

from __future__ import annotations

import pytest
from _edge_kit import INVERTER_VALUES
from _gateway_kit import INTERVAL, START, WAIT, Site, Stored, quick, run_slots, slot_of

from enos_lab import Backoff, Lab, LoginRefused
from enos_lab.edge import (
    Edge,
    EdgeConfig,
    EdgeState,
    FieldDevice,
    SubDeviceState,
    UploadMode,
)
from enos_lab.errors import AlreadyExists, InvalidArgument, NotFound
from enos_lab.lab import EDGE_COLUMNS, EDGE_PRODUCT_KEY
from enos_lab.registry import NodeType


def test_an_edge_is_a_gateway_registered_by_serial_number(lab: Lab) -> None:
    record = lab.register_edge("SN-0001", name="roof edge")
    assert (record.product_key, record.device_key) == (EDGE_PRODUCT_KEY, "SN-0001")
    product = lab.product(EDGE_PRODUCT_KEY)  # the default edge product, made on first use
    assert product.node_type is NodeType.GATEWAY and product.model_id == "gateway"
    with pytest.raises(AlreadyExists, match="SN-0001"):
        lab.register_edge("SN-0001")

    own = lab.create_product("Site gateways", model_id="gateway", node_type="gateway")
    lab.register_edge("SN-0001", product_key=own.product_key)  # another product: fine
    direct = lab.create_product("Meters")
    with pytest.raises(InvalidArgument, match="gateway product"):
        lab.register_edge("SN-0002", product_key=direct.product_key)
    with pytest.raises(NotFound):
        lab.register_edge("SN-0002", product_key="nope")
    with pytest.raises(InvalidArgument):
        lab.register_edge("..")

    edges = lab.edges()
    assert list(edges.columns) == list(EDGE_COLUMNS)
    assert edges["serial_number"].tolist() == ["SN-0001", "SN-0001"]
    first = edges.iloc[0]
    assert (first["product_key"], first["name"], first["state"]) == (
        EDGE_PRODUCT_KEY,
        "roof edge",
        "inactive",
    )
    assert not first["online"] and not first["revoked"] and first["sub_devices"] == 0
    assert first["registered_at"] == START
    assert len(lab.edges(own.product_key)) == 1
    with pytest.raises(InvalidArgument, match="give product_key"):
        lab.edge_cache_dir("SN-0001")
    assert lab.edge_cache_dir("SN-0001", product_key=own.product_key) == (
        lab.data_dir / "edges" / own.product_key / "SN-0001"
    )


async def test_the_coroutine_forms_register_and_list_edges(lab: Lab) -> None:
    record = await lab.aregister_edge("SN-7")
    assert record.device_key == "SN-7"
    assert (await lab.aedges())["serial_number"].tolist() == ["SN-7"]


async def test_an_edge_with_an_unknown_serial_number_is_refused_at_login(site: Site) -> None:
    edge = site.make_edge([site.inverter()], serial_number="SN-9999", secret="guessed")
    with pytest.raises(LoginRefused) as refused:
        await edge.start()
    assert refused.value.code == 5
    assert edge.state is EdgeState.STOPPED and edge.stats.login_refusals == 1
    rows = await site.lab.arefused_logins(EDGE_PRODUCT_KEY, "SN-9999")
    assert rows["reason"].tolist() == [f"device {EDGE_PRODUCT_KEY}/SN-9999 does not exist"]


async def test_a_revoked_edge_is_disconnected_and_refused_from_then_on(site: Site) -> None:
    lab = site.lab
    config = quick(reconnect=Backoff(initial=1.0, maximum=5.0))
    edge = site.make_edge([site.inverter()], config=config)
    await edge.start()
    try:
        await edge.idle()
        assert edge.state is EdgeState.ONLINE
        assert await lab.ais_online(site.inverter_product, "inv1")

        record = await lab.arevoke_edge("SN-0001")
        assert record.state.value == "disabled"
        assert not await lab.ais_online(site.inverter_product, "inv1")  # offline with it
        assert await edge.wait_state(EdgeState.OFFLINE, WAIT) or edge.state is EdgeState.REFUSED
        await edge.advance(30)  # reconnect attempts on the clock
        assert await edge.wait_state(EdgeState.REFUSED, WAIT)
        assert edge.stats.login_refusals >= 1 and edge.stats.disconnects == 1

        reasons = (await lab.arefused_logins(EDGE_PRODUCT_KEY, "SN-0001"))["reason"].tolist()
        revoked = (
            f"device {EDGE_PRODUCT_KEY}/SN-0001 is disabled: edge revoked at "
            f"{START.isoformat(timespec='seconds')}"
        )
        assert reasons[0] == revoked  # then the login throttle blocks the address a while
        assert all(r == revoked or r.startswith("blocked after") for r in reasons)
        row = (await lab.aedges()).iloc[0]
        assert row["revoked"] and row["state"] == "disabled" and row["revoked_at"] == START
        # meanwhile it keeps collecting, into its cache
        status = (await edge.status()).iloc[0]
        assert status["cached"] >= 3 and status["uploaded"] == 1
    finally:
        await edge.stop()


async def test_the_edge_registers_attaches_and_logs_in_its_sub_devices(site: Site) -> None:
    lab = site.lab
    meter = await lab.aregister_device(site.meter_product, device_key="meter1")
    stored = Stored(lab)
    # the inverter is registered by the edge itself; the meter was registered with a secret
    edge = site.make_edge([site.inverter(), site.meter(secret=meter.device_secret)])
    await edge.start()
    try:
        assert edge.device_state("inverter") is SubDeviceState.ONLINE
        assert edge.device_state("meter") is SubDeviceState.ONLINE
        inverter = await lab.adevice(site.inverter_product, "inv1")
        assert inverter.gateway == (EDGE_PRODUCT_KEY, "SN-0001") and inverter.online
        assert (await lab.adevice(site.meter_product, "meter1")).gateway == inverter.gateway
        assert (await lab.aedges()).iloc[0]["sub_devices"] == 2

        await run_slots(site, [edge], 1, 6)
        stored.take()
        assert stored.counts("inv1") == dict.fromkeys(range(7), 1)  # the first poll and 6
        assert [e.value for e in stored.of("inv1")][1:] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        assert [e.value for e in stored.of("meter1")][1:] == [k + 0.5 for k in range(1, 7)]
        frame = lab.store.latest(["inv1"], None, product_key=site.inverter_product)
        values = dict(zip(frame["point_id"], frame["value"], strict=True))
        assert values["total_energy"] == INVERTER_VALUES["total_energy"]

        status = await edge.status()
        assert status["device"].tolist() == ["inverter", "meter"]
        assert status["state"].tolist() == ["online", "online"]
        assert status["polls"].tolist() == [7, 7] and status["uploaded"].tolist() == [7, 7]
        assert status[["cached", "lost", "dropped", "rejected"]].to_numpy().sum() == 0
        assert edge.stats.live_posts >= 7 and edge.stats.failed_posts == 0
    finally:
        await edge.stop()
        stored.close()
    # a second start finds them registered and attached: it only logs them in
    again = site.make_edge(
        [site.inverter(secret=inverter.device_secret), site.meter(secret=meter.device_secret)]
    )
    await again.start()
    try:
        assert again.device_state("inverter") is SubDeviceState.ONLINE
    finally:
        await again.stop()


async def test_interval_uploads_send_the_latest_sample_of_each_period(site: Site) -> None:
    stored = Stored(site.lab)
    config = quick(upload=UploadMode.INTERVAL, period=60.0)
    edge = site.make_edge([site.inverter()], config=config)
    await edge.start()
    try:
        await run_slots(site, [edge], 1, 18)  # three minutes of polls every 10 s
    finally:
        await edge.stop()  # sends the period held last
        stored.take()
        stored.close()
    assert [slot_of(e.time) for e in stored.of("inv1")] == [5, 11, 17, 18]
    assert [e.value for e in stored.of("inv1")] == [5.0, 11.0, 17.0, 18.0]


async def test_on_change_uploads_send_only_points_that_moved_beyond_their_deadband(
    site: Site,
) -> None:
    stored = Stored(site.lab)
    config = quick(upload=UploadMode.ON_CHANGE, deadbands={"active_power": 1.0})
    edge = site.make_edge([site.inverter()], config=config)
    await edge.start()
    try:
        await edge.idle()  # the first poll, of the values the field had
        for power in (10.0, 10.5, 10.9, 11.2, 11.5, 30.0):
            site.field.set_model_values(1, INVERTER_VALUES | {"active_power": power})
            await edge.advance(INTERVAL)
    finally:
        await edge.stop()
        stored.take()
        stored.close()
    # the first sample, then changes of more than 1 kW from the last value sent
    assert [e.value for e in stored.of("inv1")] == [
        INVERTER_VALUES["active_power"],
        10.0,
        11.2,
        30.0,
    ]
    rows = site.lab.store.query_points(
        ["inv1"], ["total_energy"], product_key=site.inverter_product
    )
    assert len(rows) == 1  # a point that never changes is sent once


async def test_edge_settings_and_mappings_are_checked(site: Site) -> None:
    with pytest.raises(InvalidArgument, match="interval"):
        EdgeConfig(interval=0)
    with pytest.raises(InvalidArgument, match="batch_size"):
        EdgeConfig(batch_size=0)
    with pytest.raises(InvalidArgument, match="resume_pause"):
        EdgeConfig(resume_pause=-1)
    with pytest.raises(InvalidArgument, match="product key"):
        type(site.inverter())(site.inverter().field, "", "inv1")
    lone = FieldDevice("inverter", "127.0.0.1", site.field.port, 1, site.inverter_map)
    with pytest.raises(InvalidArgument, match="named 'inverter'"):
        site.make_edge([site.inverter(), type(site.inverter())(lone, site.meter_product, "x")])
    with pytest.raises(InvalidArgument, match="mapped to field device"):
        meter = site.meter(device_key="inv1")
        meter = type(meter)(meter.field, site.inverter_product, "inv1")
        site.make_edge([site.inverter(), meter])
    assert isinstance(site.make_edge([]), Edge)

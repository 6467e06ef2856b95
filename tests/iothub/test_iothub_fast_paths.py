"""CONNACK delay for Python-SDK-shaped logins only; the measurepoint fast path and its batching."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from pathlib import Path
from typing import Any, cast

import pytest
from _iothub_kit import LEVEL, Env

from enos_lab.clock import SimulatedClock
from enos_lab.enos import TopicKind, login_credentials
from enos_lab.errors import InvalidArgument
from enos_lab.hub import ClientConnected, ClientInfo, Hub, Message
from enos_lab.iothub import IotHubConfig
from enos_lab.iothub._logins import python_sdk_login
from enos_lab.iothub._measurepoints import Measurepoints, PointBatcher
from enos_lab.iothub._requests import Requests
from enos_lab.iothub._routes import Routes
from enos_lab.iothub._sessions import Sessions
from enos_lab.mqtt import ConnAck, Connect, PubAck, Publish, encode
from enos_lab.store import MAX_EVENT_MS, MIN_EVENT_MS, PointRow, StoreConfig, TimeSeriesStore
from enos_lab.tap import RequestRefused

DELAY = 0.3  # [s] long enough to tell apart from an immediate CONNACK on a busy machine
PY_TIMESTAMP = "1700000000000.123"  # str(time.time() * 1000) as the Python SDK sends it
INT_TIMESTAMP = "1700000000000"  # Java, Node, C


@pytest.fixture
def iothub_config() -> IotHubConfig:
    return IotHubConfig(python_sdk_connack_delay=DELAY)


async def _timed_login(env: Env, timestamp: str, secret: str | None = None) -> tuple[float, int]:
    """(seconds from CONNECT to CONNACK on the loop clock, CONNACK code)."""
    if env.registry.find_device("dirP", "d1") is None:
        env.registry.register_device("dirP", device_key="d1")
    secret = secret or env.registry.get_device("dirP", "d1").device_secret
    loop = asyncio.get_running_loop()
    start = loop.time()
    client, connack = await env.login("dirP", "d1", secret, timestamp=timestamp)
    elapsed = loop.time() - start
    if connack.reason_code == 0:
        await client.close()
    return elapsed, connack.reason_code


def test_python_sdk_logins_are_told_apart_by_the_timestamp() -> None:
    assert python_sdk_login(PY_TIMESTAMP)
    assert not python_sdk_login(INT_TIMESTAMP)
    assert not python_sdk_login("2524608000000")  # the C SDK's constant


async def test_connack_of_python_sdk_login_is_delayed(env: Env) -> None:
    elapsed, code = await _timed_login(env, PY_TIMESTAMP)
    assert code == 0
    assert elapsed >= DELAY


async def test_connack_of_other_logins_is_immediate(env: Env) -> None:
    elapsed, code = await _timed_login(env, INT_TIMESTAMP)
    assert code == 0
    assert elapsed < DELAY * 0.8
    assert env.hub.config.connack_delay == 0.0


async def test_refused_python_sdk_login_keeps_its_code(env: Env) -> None:
    elapsed, code = await _timed_login(env, PY_TIMESTAMP, secret="wrong-secret")
    assert code == 5
    assert elapsed >= DELAY


async def test_packets_after_a_delayed_connect_wait_for_the_connack(env: Env) -> None:
    """A PUBLISH sent right behind the CONNECT is handled after the login was accepted."""
    device = env.registry.register_device("dirP", device_key="d1")
    client_id, username, password = login_credentials(
        "dirP", "d1", device.device_secret, timestamp=PY_TIMESTAMP
    )
    conn = await env.hub.connect_memory()
    post = json.dumps(
        {
            "id": "p1",
            "method": "thing.measurepoint.post",
            "params": {"measurepoints": {"temp": 1.5}},
        }
    ).encode()
    topic = "/sys/dirP/d1/thing/measurepoint/post"
    await conn.send(
        encode(Connect(client_id, LEVEL, "MQTT", True, 60, username, password.encode()), LEVEL)
        + encode(Publish(topic, post, 1, packet_id=7), LEVEL)
    )
    connack = await conn.read_packet(LEVEL, 5.0)
    assert isinstance(connack, ConnAck) and connack.reason_code == 0
    puback = await conn.read_packet(LEVEL, 5.0)
    assert isinstance(puback, PubAck) and puback.packet_id == 7
    assert len(env.store.query_points(["d1"], product_key="dirP")) == 1
    await conn.send(b"\xe0\x00")
    await conn.wait_closed()


async def test_posts_of_many_devices_are_stored_and_replied(env: Env) -> None:
    """Posts of several connections in flight at once: every reply echoes its id exactly."""
    clients = [await env.device("dirP", f"d{i}") for i in range(5)]
    topic = "/sys/dirP/{}/thing/measurepoint/post"
    for i, client in enumerate(clients):
        assert await client.subscribe(topic.format(f"d{i}") + "_reply") == 1
    ids: list[object] = ["a", 42, 'q"\\é', None, "e"]
    for i, client in enumerate(clients):
        body = {"id": ids[i], "params": {"measurepoints": {"temp": float(i)}, "time": 1000 + i}}
        await client.conn.send(
            encode(Publish(topic.format(f"d{i}"), json.dumps(body).encode(), 1, packet_id=1), LEVEL)
        )
    for i, client in enumerate(clients):
        reply = await client.read_publish(topic=topic.format(f"d{i}") + "_reply")
        document = json.loads(reply.payload)
        assert document == {"id": ids[i], "code": 200, "data": {}, "message": ""}
    points = env.store.query_points([f"d{i}" for i in range(5)], product_key="dirP")
    assert len(points) == 5


async def test_invalid_post_takes_the_general_path(env: Env) -> None:
    client = await env.device("dirP", "d1")
    reply = await client.request(
        "/sys/dirP/d1/thing/measurepoint/post",
        {"measurepoints": {"temp": "not a number"}},
        request_id="bad",
    )
    assert reply["id"] == "bad" and reply["code"] == 1204


async def test_post_beyond_the_store_time_range_is_refused_at_the_edge(env: Env) -> None:
    """An event time the store cannot keep (beyond 64 bits) never reaches the store: 1206 from
    the general path, with the request id."""
    client = await env.device("plainP", "p1")
    reply = await client.request(
        "/sys/plainP/p1/thing/measurepoint/post",
        {"measurepoints": {"x": 1}, "time": 2**70},
        request_id="big",
    )
    assert reply["id"] == "big" and reply["code"] == 1206
    assert "time must be epoch milliseconds" in reply["message"]
    assert env.store.stats().rows == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    "store_config", [StoreConfig(max_series_per_device=1)], ids=["one series per device"]
)
async def test_rows_the_store_refuses_fail_alone(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """Defence in depth: rows that pass the edge checks but that the store refuses (here: a
    device's second series beyond ``max_series_per_device``) fail only their own request, even
    when they share a batch with other devices' rows. Fast-path posts of two devices in one
    event-loop iteration, then batch requests (general path) of two more: the good ones are
    stored and answered 200, the bad ones get the store's error with their own id; the refused
    fast-path post is logged at ERROR. Both refusals are told on the tap (``RequestRefused``)."""
    refused: list[tuple[tuple[str, str], str, int]] = []
    env.iothub.tap.add_callback(
        lambda e: refused.append(((e.product_key, e.device_key), e.request, e.code)),
        kinds=RequestRefused,
    )
    clients = [await env.device("dirP", f"d{i}") for i in range(4)]
    topic = "/sys/dirP/{}/thing/measurepoint/post"
    for i, client in enumerate(clients):
        reply_topic = topic.format(f"d{i}") + ("_reply" if i < 2 else "/batch_reply")
        assert await client.subscribe(reply_topic) == 1

    def publish(i: int, points: dict[str, float]) -> bytes:
        body: dict[str, object] = {"id": f"p{i}", "params": {"measurepoints": points, "time": 1}}
        name = topic.format(f"d{i}")
        if i >= 2:  # the batch topic: the general path
            body["params"] = [body["params"]]
            name += "/batch"
        return encode(Publish(name, json.dumps(body).encode(), 1, packet_id=1), LEVEL)

    with caplog.at_level(logging.WARNING, logger="enos_lab.iothub"):
        # one event-loop iteration: the in-memory transport hands each PUBLISH over at once
        await clients[0].conn.send(publish(0, {"temp": 1.5}))
        await clients[1].conn.send(publish(1, {"temp": 1.5, "status": 7}))  # 2 new series
        await clients[2].conn.send(publish(2, {"temp": 2.5}))
        await clients[3].conn.send(publish(3, {"temp": 2.5, "status": 8}))
        replies = {}
        for i, client in enumerate(clients):
            reply_topic = topic.format(f"d{i}") + ("_reply" if i < 2 else "/batch_reply")
            document = json.loads((await client.read_publish(topic=reply_topic)).payload)
            replies[document["id"]] = document
    assert replies["p0"]["code"] == replies["p2"]["code"] == 200
    for bad in ("p1", "p3"):
        assert replies[bad]["code"] == 1200
        assert "max_series_per_device" in replies[bad]["message"]
    points = env.store.query_points(["d0", "d2"], product_key="dirP")
    assert sorted(points["value"]) == [1.5, 2.5]
    # each pair shared one append: the combined append failed and each was stored alone
    retried = [r for r in caplog.records if "storing each alone" in r.getMessage()]
    assert len(retried) == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "/sys/dirP/d1/thing/measurepoint/post:" in errors[0].getMessage()
    assert sorted(refused) == [
        (("dirP", "d1"), "MEASUREPOINT_POST", 1200),
        (("dirP", "d3"), "MEASUREPOINT_POST_BATCH", 1200),
    ]


async def test_the_batcher_fails_each_request_alone(tmp_path: Path) -> None:
    """Both kinds of callers of one batch (general-path appends and fast-path posts): what the
    store refuses fails its own request; the rest is stored and answered."""
    store = TimeSeriesStore(tmp_path / "store")
    answered: list[tuple[list[Any], list[int | BaseException] | None]] = []

    def answer(posts: list[Any], results: list[int | BaseException] | None, replied: Any) -> None:
        answered.append((posts, results))
        replied.set_result(None)

    batcher = PointBatcher(answer, store)
    refused = PointRow("P", "d0", "temp", 2**70, 1.0)  # beyond the store's event times
    try:
        # one event-loop iteration: one batch
        stored = batcher.add([PointRow("P", "d1", "status", 1000, 7)])
        failed = batcher.add([refused])
        replied = batcher.add_post(("t1", b"ok", "p1", 1, [PointRow("P", "d2", "temp", 1000, 2)]))
        assert batcher.add_post(("t2", b"ok", "p2", 1, [refused])) is replied
        assert await stored == 1
        with pytest.raises(InvalidArgument, match="event time"):
            await failed
        await replied
        ((posts, results),) = answered
        assert [post[2] for post in posts] == ["p1", "p2"]
        assert results is not None and results[0] == 1
        assert isinstance(results[1], InvalidArgument)
        frame = store.query_points(["d1", "d2"], product_key="P")
        assert sorted(frame["point_id"]) == ["status", "temp"]
    finally:
        store.close()


class _Recorder:
    """The store and the hub as the measurepoint paths use them: appended rows and published
    replies, recorded in order."""

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.replies: list[tuple[str, bytes, int]] = []

    async def append_points_async(self, rows: list[Any]) -> int:
        self.rows.extend(tuple(row) for row in rows)
        return len(rows)

    def publish_nowait(self, message: Message) -> int:
        self.replies.append((message.topic, message.payload, message.qos))
        return 1

    async def publish(self, message: Message) -> int:
        return self.publish_nowait(message)

    async def deliver(self, key: object, message: Message) -> bool:
        return self.publish_nowait(message) == 1


async def _through(
    env: Env, fast: bool, config: IotHubConfig, messages: list[Message]
) -> tuple[_Recorder, list[bool]]:
    """Handle ``messages`` (of dirP/d1 and plainP/p1) as the IoT hub does, with the
    measurepoint fast path (``fast``) or the general path only; returns what was stored and
    replied, and per message whether the fast path took it."""
    recorder = _Recorder()
    clock = SimulatedClock()
    sessions = Sessions(env.registry, env.models, config, itertools.count(1), set(), clock=clock)
    points = Measurepoints(cast(TimeSeriesStore, recorder), sessions, config, clock)
    points.hub = cast(Hub, recorder)
    taken: list[bool] = []

    def fast_post(conn: Any, route: Any, message: Message) -> Any:
        done = points.fast_post(conn, route, message) if fast else None
        taken.append(done is not None)
        return done

    handlers = {
        TopicKind.MEASUREPOINT_POST: points.post,
        TopicKind.MEASUREPOINT_RESUME: points.post,
    }
    requests = Requests(sessions, Routes(handlers), fast_post, lambda *_: None, {}, config)
    requests.hub = cast(Hub, recorder)
    clients = {}
    for pk, dk in (("dirP", "d1"), ("plainP", "p1")):
        if env.registry.find_device(pk, dk) is None:
            env.registry.register_device(pk, device_key=dk)
        username = f"{dk}&{pk}"
        identity = {"product_key": pk, "device_key": dk, "secure_mode": 2}
        info = ClientInfo(dk, LEVEL, username, "memory", True, 60, identity, (username, dk))
        sessions.on_event(ClientConnected(info, False))  # an EnOS identity, as the hub says
        clients[pk] = info
    for message in messages:
        done = requests.on_message(clients[message.topic.split("/")[2]], message)
        if done is not None:
            await done
    return recorder, taken


# (topic kind, params or the whole payload as bytes) for dirP (thing model "meter": temp FLOAT
# with quality, status INT) and plainP (no model: passthrough)
_SAME_INPUTS: list[tuple[str, str, Any]] = [
    ("dirP", "post", {"measurepoints": {"temp": 1.5, "status": 2}, "time": 1700000000000}),
    ("dirP", "resume", {"measurepoints": {"temp": 1.5}, "time": 1700000000000}),
    ("dirP", "post", {"measurepoints": {"temp": {"value": 1.5, "quality": 9}}, "time": 5}),
    ("dirP", "post", {"measurepoints": {"temp": {"value": 1.5, "quality": 10}}, "time": 5}),
    ("dirP", "post", {"measurepoints": {"temp": 1}}),  # receive time
    ("dirP", "post", {"measurepoints": {"temp": 1}, "time": None}),
    ("dirP", "post", {"measurepoints": {"temp": 1}, "time": ""}),
    ("dirP", "post", {"measurepoints": {"temp": 1}, "time": MIN_EVENT_MS}),
    ("dirP", "post", {"measurepoints": {"temp": 1}, "time": MAX_EVENT_MS}),
    ("dirP", "post", {"measurepoints": {"temp": 1}, "time": MAX_EVENT_MS + 1}),
    ("dirP", "post", {"measurepoints": {"temp": 1}, "time": MIN_EVENT_MS - 1}),
    ("dirP", "post", {"measurepoints": {"temp": 1}, "time": 1.7e12}),
    ("dirP", "post", {"measurepoints": {"temp": 1}, "time": 1700000000000.75}),
    ("dirP", "post", {"measurepoints": {"temp": 1}, "time": " 1700000000000 "}),
    ("dirP", "post", {"measurepoints": {"temp": 1}, "time": "1e3"}),
    ("dirP", "post", {"measurepoints": {"temp": 1}, "time": "²"}),
    ("dirP", "post", {"measurepoints": {"temp": 1}, "time": True}),
    ("dirP", "post", {"measurepoints": {"temp": 1}, "time": [1]}),
    ("dirP", "post", {"measurepoints": {"temp": "warm"}, "time": 5}),
    ("dirP", "post", {"measurepoints": {"status": 1.5}, "time": 5}),
    ("dirP", "post", {"measurepoints": {"nope": 1}, "time": 5}),
    ("dirP", "post", {"measurepoints": {}, "time": 5}),
    ("dirP", "post", {"measurepoints": [1], "time": 5}),
    ("dirP", "post", {"time": 5}),
    ("dirP", "post", [{"measurepoints": {"temp": 1}}]),
    ("dirP", "post", None),
    ("plainP", "post", {"measurepoints": {"x": 1, "y": "text"}, "time": 5}),
    ("plainP", "post", {"measurepoints": {"x": {"value": 2, "quality": 3}}, "time": 5}),
    ("plainP", "post", {"measurepoints": {"x": {"value": 2, "quality": 10}}, "time": 5}),
    ("plainP", "post", {"measurepoints": {"x": {"value": 2, "quality": True}}, "time": 5}),
    ("plainP", "post", {"measurepoints": {"bad id!": 1}, "time": 5}),
    ("plainP", "post", {"measurepoints": {"x": {"quality": 3}}, "time": 5}),
    ("dirP", "post", b'{"id":"raw","params":{"measurepoints":{"temp":1},"time":5}}'),
    ("dirP", "post", b'{"id":7,"params":{"measurepoints":{"temp":1},"time":5}}'),
    ("dirP", "post", b'{"id":null,"params":{"measurepoints":{"temp":1},"time":5}}'),
    ("dirP", "post", b'{"id":"q\\"\\\\\\u00e9\\u2028","params":{"measurepoints":{"temp":1}}}'),
    ("dirP", "post", b'{"id":1.5e300,"params":{"measurepoints":{"temp":1}}}'),
    ("dirP", "post", b'{"params":{"measurepoints":{"temp":1}}}'),
    ("dirP", "post", b'{"id":"dup","params":{"measurepoints":{"temp":1},"time":1,"time":2}}'),
    ("dirP", "post", b'{"id":"big","params":{"measurepoints":{"temp":1e400}}}'),
    ("dirP", "post", b'{"id":"nan","params":{"measurepoints":{"temp":NaN}}}'),
    ("dirP", "post", b'{"id":"trail","params":{"measurepoints":{"temp":1}}} x'),
    ("dirP", "post", b"[]"),
    ("dirP", "post", b""),
    ("dirP", "post", b"\xff"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("strict", [False, True], ids=["lenient", "strict methods"])
async def test_fast_and_general_paths_accept_the_same_inputs(env: Env, strict: bool) -> None:
    """The measurepoint fast path takes exactly the posts the general path stores, and for
    every input the device gets the same reply, byte for byte, and the store the same rows."""
    config = IotHubConfig(strict_methods=strict)
    messages = []
    for index, (pk, kind, params) in enumerate(_SAME_INPUTS):
        dk = "d1" if pk == "dirP" else "p1"
        topic = f"/sys/{pk}/{dk}/thing/measurepoint/{kind}"
        if isinstance(params, bytes):
            payload = params
        else:
            method = f"thing.measurepoint.{kind}" if index % 3 else "any"  # some do not fit
            body = {"id": f"r{index}", "version": "1.0", "method": method, "params": params}
            payload = json.dumps(body).encode()
        messages.append(Message(topic, payload, index % 2))
    fast, taken = await _through(env, True, config, messages)
    general, _ = await _through(env, False, config, messages)
    assert fast.replies == general.replies
    assert fast.rows == general.rows
    assert len(general.replies) == len(messages)
    for message, took, (_, reply, _) in zip(messages, taken, general.replies, strict=True):
        document = json.loads(reply)
        # the fast path takes a post exactly when the general path stores points for it
        storing = document["code"] == 200 and _points_of(message) > 0
        assert took == storing, (message.payload, document)
    assert 0 < sum(taken) < len(messages)
    assert len(general.rows) > sum(taken)  # posts of several points


def _points_of(message: Message) -> int:
    try:
        params = json.loads(message.payload).get("params")
    except (ValueError, AttributeError):
        return 0
    points = params.get("measurepoints") if isinstance(params, dict) else None
    return len(points) if isinstance(points, dict) else 0

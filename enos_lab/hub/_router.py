"""Routing: in-process handlers, subscriptions, who receives a topic, and delivery to each
receiving session (in-flight window and queue); retained messages through the
:class:`~enos_lab.hub._retained.RetainedStore`.

Theory of operation
-------------------
An accepted PUBLISH goes to the in-process message handlers (:meth:`Router.call_handlers`,
called by the PUBLISH handler, which waits for what they return before acknowledging) and then
to :meth:`Router.route`. Subscriptions are kept in two topic trees (plain and shared,
:class:`~enos_lab.mqtt.TopicTree`, the one matcher also used for access control). Who receives
a topic (per session the matching subscriptions with the highest QoS, retain-as-published and
all subscription identifiers; the shared subscription groups) is worked out once per topic and
cached; the cache is cleared whenever any subscription changes, and when the authoriser's read
permissions may have changed (:meth:`Router.permissions_changed`): the read permission
(``authorise_receive``) is asked when the route is built, for offline sessions too.

A PUBLISH is encoded once per variant (protocol family, QoS, retain flag, subscription
identifiers) per message and the bytes are shared by every receiver; for QoS > 0 only the packet
identifier is patched in (the wire shortcuts of :mod:`enos_lab.mqtt._wire`). :meth:`Router.send`
delivers to one session; :meth:`Router.route` inlines it for the two commonest deliveries, QoS 0
and QoS 1 to a 3.1.1 connection, and writes straight into the connection's output list.

QoS 1/2 to a session: at most its connection's window is in flight (``HubConfig.max_inflight``,
capped by a 5.0 client's receive maximum); the rest waits in the session queue, encoded if it
can be (``HubConfig.max_queued_messages``; also while the client is offline, QoS 0 is not kept).
Acknowledgements free in-flight slots and :meth:`Router.pump` moves queued messages into them
(inlining :meth:`Router._transmit` for the pre-encoded ones); :meth:`Router.resume` resends the
in-flight messages of a resumed session (DUP set, MQTT-4.4.0-1). A message with a message
expiry interval is not delivered once expired and is sent with what remains of its interval
(MQTT-3.3.2-5/6); expiry and the age of retained messages are on the hub's clock
(:meth:`Clock.monotonic <enos_lab.clock.Clock.monotonic>`), looked at when a message is sent,
so they need no timer.

Bounds: QoS 0 output to a connection whose unsent output exceeds ``max_buffered_bytes``, or
larger than the client's maximum packet size (MQTT-3.1.2-25), is dropped; a full queue drops
the new message; everything dropped is counted (:attr:`Router.dropped`, ``HubStats.dropped``).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeAlias

from enos_lab.errors import TopicError
from enos_lab.hub._retained import RetainedStore
from enos_lab.hub._state import CONNECTED, RELEASED, SENT, MessageLike, Out, Session, Sub
from enos_lab.hub._types import Message
from enos_lab.mqtt._codec import encode
from enos_lab.mqtt._packets import MQTT_5, NO_PROPERTIES, Publish, PubRel
from enos_lab.mqtt._topics import TopicTree, parse_shared
from enos_lab.mqtt._wire import publish_311, split_publish

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from enos_lab.clock import Clock
    from enos_lab.hub._config import HubConfig
    from enos_lab.hub._output import Output
    from enos_lab.hub._state import Link
    from enos_lab.hub._tasks import Tasks
    from enos_lab.hub._types import Authoriser, ClientInfo, Decision, MessageHandler, SessionKey

__all__ = ["ROUTE_CACHE_MAX", "Router"]

log = logging.getLogger("enos_lab.hub")

ROUTE_CACHE_MAX = 10_000
"""Topics whose route is cached (the cache is cleared when it is full)."""

# An encoded PUBLISH as (prefix, suffix): for QoS > 0 the packet id goes between the two (one
# copy per receiver: prefix + packet id + suffix); for QoS 0 the prefix is the whole packet.
_Variant: TypeAlias = tuple[bytes, bytes]
# who receives a topic: per session (session, qos, retain as published, subscription ids, the
# subscriptions if one has no local), and the shared groups ((group, filter), members)
_RouteEntry: TypeAlias = tuple[
    tuple[tuple[Session, int, bool, tuple[int, ...], "list[Sub] | None"], ...],
    tuple[tuple[tuple[str, str], list[Sub]], ...],
]


class Router:
    """Routes a hub's messages to its in-process handlers and to its subscribed sessions.

    ``authoriser`` (may be ``None``) is also asked by the PUBLISH and SUBSCRIBE handlers and for
    wills; ``handlers`` are the in-process message handlers (:meth:`Hub.add_handler
    <enos_lab.hub.Hub.add_handler>`); ``tasks`` run what they return; ``clock`` times message
    expiry and the age of retained messages. The counters ``messages_in`` / ``messages_out`` /
    ``dropped`` are those of :class:`~enos_lab.hub.HubStats`.
    """

    __slots__ = (
        "_cache",
        "_loop",
        "_monotonic",
        "_receive_check",
        "_rr",
        "_shared",
        "_to_flush",
        "_tree",
        "authoriser",
        "config",
        "dropped",
        "handlers",
        "messages_in",
        "messages_out",
        "retained",
        "tasks",
    )

    def __init__(
        self,
        config: HubConfig,
        authoriser: Authoriser | None,
        output: Output,
        tasks: Tasks,
        clock: Clock,
    ) -> None:
        self.config = config
        self.authoriser = authoriser
        # asked when a route is built: may a subscribed session receive the topic?
        self._receive_check: Callable[[ClientInfo, str], Decision] | None = getattr(
            authoriser, "authorise_receive", None
        )
        self.tasks = tasks
        self._to_flush = output.to_flush
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._monotonic = clock.monotonic  # the hub's clock [s]
        self.handlers: tuple[MessageHandler, ...] = ()
        self._tree: TopicTree[SessionKey, Sub] = TopicTree()
        self._shared: TopicTree[tuple[str, SessionKey], Sub] = TopicTree()
        self._cache: dict[str, _RouteEntry] = {}
        self._rr: dict[tuple[str, str], int] = {}  # next member of each shared group
        self.retained = RetainedStore(
            max_messages=config.max_retained_messages,
            max_bytes=config.max_retained_bytes,
            max_messages_per_owner=config.max_retained_per_client,
            max_bytes_per_owner=config.max_retained_bytes_per_client,
        )
        self.messages_in = 0
        self.messages_out = 0
        self.dropped = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run on ``loop`` from now on."""
        self._loop = loop

    # -- in-process handlers --------------------------------------------------------------
    def call_handlers(self, info: ClientInfo | None, msg: Message) -> list[Awaitable[None]] | None:
        """Call every handler; returns what must be awaited before the message is acknowledged.

        A handler that raises is turned into a failed future, so that the caller treats it like
        a failed awaitable (logged, and the message not acknowledged as a success).
        """
        pending: list[Awaitable[None]] | None = None
        for handler in self.handlers:
            try:
                result = handler(info, msg)
            except Exception as exc:
                failed: asyncio.Future[None] = self._loop.create_future()
                failed.set_exception(exc)
                result = failed
            if result is not None:
                if pending is None:
                    pending = []
                pending.append(result)
        return pending

    # -- subscriptions ---------------------------------------------------------------------
    def subscribe(
        self, session: Session, topic_filter: str, group: str | None, inner: str, sub: Sub
    ) -> bool:
        """Add (or replace) ``session``'s subscription to ``topic_filter`` (``group`` and
        ``inner`` from :func:`~enos_lab.mqtt.parse_shared`); True if it replaced one."""
        key = session.key
        if group is None:
            old = self._tree.insert(inner, key, sub)
        else:
            old = self._shared.insert(inner, (group, key), sub)
        if session.subs is None:
            session.subs = {}
        session.subs[topic_filter] = sub
        self._cache.clear()
        return old is not None

    def unsubscribe(self, session: Session, topic_filter: str) -> bool:
        """Remove ``session``'s subscription to ``topic_filter``; False if it had none."""
        subs = session.subs
        if not subs or topic_filter not in subs:
            return False
        del subs[topic_filter]
        try:
            group, inner = parse_shared(topic_filter)
        except TopicError:
            return False
        if group is None:
            self._tree.remove(inner, session.key)
        else:
            self._shared.remove(inner, (group, session.key))
        self._cache.clear()
        return True

    def permissions_changed(self) -> None:
        """The authoriser's read permissions may have changed: work routes out again."""
        self._cache.clear()

    # -- retained --------------------------------------------------------------------------
    def retain(self, msg: Message, info: ClientInfo | None) -> bool:
        """Keep ``msg`` as its topic's retained message (an empty payload clears it,
        MQTT-3.3.1-10); False when a bound refuses it: what the publisher (``info``; ``None``
        for the hub itself) keeps, or the hub's total. A client's retained messages count
        against its identity, else its session key."""
        owner: SessionKey | None = None
        if info is not None:
            identity = info.identity
            owner = info.session_key if identity is None else identity
        return self.retained.store(msg, owner, self._monotonic())

    def send_retained(self, session: Session, topic_filter: str, sub: Sub) -> None:
        """Send ``session`` the retained messages ``topic_filter`` matches (on subscribe)."""
        now = self._monotonic()
        sub_ids = (sub.sub_id,) if sub.sub_id is not None else ()
        # expired messages are not returned (MQTT-3.3.2-5)
        for stored_msg, stored in self.retained.matching(topic_filter, now):
            msg = stored_msg
            expires_at = None
            mei = msg.properties.message_expiry_interval
            if mei is not None:
                expires_at = stored + mei
                # MQTT-3.3.2-6: the interval sent is what remains of it
                props = replace(msg.properties, message_expiry_interval=math.ceil(expires_at - now))
                msg = Message(msg.topic, msg.payload, msg.qos, msg.retain, props)
            # MQTT-3.3.1-8: retained messages sent on subscribe have RETAIN set
            self.send(session, msg, min(msg.qos, sub.qos), True, sub_ids, {}, expires_at)

    # -- routing ---------------------------------------------------------------------------
    def _may_receive(self, session: Session, topic: str) -> bool:
        """The authoriser's read permission of ``session`` for ``topic`` (at route building)."""
        check = self._receive_check
        info = session.info
        if check is None or info is None:
            return True
        try:
            decision = check(info, topic)
        except Exception:
            log.exception("authoriser failed on the read permission of %r", session.client_id)
            return False
        if not decision.allowed:
            log.debug(
                "session %r may not receive %r: %s", session.client_id, topic, decision.reason
            )
        return bool(decision.allowed)

    def _build_route(self, topic: str) -> _RouteEntry:
        """Who receives ``topic``: the matching subscriptions of sessions that may read it,
        per session, and the shared subscription groups (cached per topic; cleared whenever a
        subscription or a permission changes)."""
        per: dict[Session, list[Sub]] = {}
        for _f, _k, sub in self._tree.match(topic):
            subs = per.get(sub.session)
            if subs is None:
                per[sub.session] = [sub]
            else:
                subs.append(sub)
        may_receive = self._may_receive
        normal = []
        for session, subs in per.items():
            if not may_receive(session, topic):
                continue
            raw = subs if any(s.no_local for s in subs) else None
            qos, rap, sub_ids = _aggregate(subs)
            normal.append((session, qos, rap, sub_ids, raw))
        shared: dict[tuple[str, str], list[Sub]] = {}
        for topic_filter, (group, _key), sub in self._shared.match(topic):
            if may_receive(sub.session, topic):
                shared.setdefault((group, topic_filter), []).append(sub)
        for members in shared.values():
            members.sort(key=lambda s: (s.session.identity or "", s.session.client_id))
        entry: _RouteEntry = (tuple(normal), tuple(shared.items()))
        cache = self._cache
        if len(cache) >= ROUTE_CACHE_MAX:
            cache.clear()
        cache[topic] = entry
        return entry

    def route(self, msg: MessageLike, publisher: Session | None) -> int:
        """Deliver ``msg`` to every matching subscription; returns the sessions reached.

        ``publisher`` is the session that published it (``None``: the hub, a will), for the
        5.0 no local option (MQTT-3.8.3-3).
        """
        entry = self._cache.get(msg.topic)
        if entry is None:
            entry = self._build_route(msg.topic)
        normal, shared = entry
        if not normal and not shared:
            return 0
        props = msg.properties
        expires_at = None
        if props is not NO_PROPERTIES:
            mei = props.message_expiry_interval
            if mei is not None:
                expires_at = self._monotonic() + mei
        cache: dict[Any, _Variant] = {}
        msg_qos = msg.qos
        reached = 0
        bound = self.config.max_buffered_bytes
        for session, qos, rap, sub_ids, raw in normal:
            if raw is not None and session is publisher:
                subs = [s for s in raw if not s.no_local]  # MQTT-3.8.3-3
                if not subs:
                    continue
                qos, rap, sub_ids = _aggregate(subs)  # noqa: PLW2901
            conn = session.conn
            data: bytes | None = None
            if (
                (qos == 0 or msg_qos == 0)
                and conn is not None
                and conn.level != MQTT_5
                and not (rap and msg.retain)
                and conn.state == CONNECTED
                and not conn.write_paused  # (a 3.1.1 connection has no maximum packet size)
                and conn.out_size <= bound
            ):
                # inlines send() for the common case: QoS 0 to a 3.1.1 connection
                variant = cache.get(0)  # the key of _variant: qos * 2 + retain
                if variant is None:
                    variant = cache[0] = publish_311(msg.topic, msg.payload, 0, False)
                data = variant[0]
            elif (
                qos == 1
                and msg_qos == 1
                and expires_at is None
                and conn is not None
                and conn.level != MQTT_5
                and not (rap and msg.retain)
                and conn.state == CONNECTED
            ):
                # inlines send() and _transmit(): QoS 1 to a 3.1.1 connection, sent if its
                # in-flight window has room, else queued encoded (pump() sends it)
                prefix, suffix = cache.get(2) or self._variant(msg, False, 1, False, (), cache)
                out_msg = Out(msg, 1, False, sub_ids, None)
                inflight = session.inflight
                if inflight is None:
                    inflight = session.inflight = {}
                queue = session.queue
                if not queue and len(inflight) < conn.window:
                    pid = session.next_pid
                    if pid in inflight:
                        pid = session.allocate_pid()
                    else:
                        session.next_pid = pid + 1 if pid < 65535 else 1
                    out_msg.packet_id = pid
                    out_msg.state = SENT
                    inflight[pid] = out_msg
                    data = b"".join((prefix, pid.to_bytes(2, "big"), suffix))
                else:
                    out_msg.prefix = prefix
                    out_msg.suffix = suffix
                    out_msg.level5 = False
                    self._enqueue(session, out_msg)
                    reached += 1
                    continue
            if data is not None:
                assert conn is not None
                out = conn.out  # inlines Connection.write()
                if out is None:
                    conn.out = [data]
                    self._to_flush(conn)
                else:
                    out.append(data)
                conn.out_size += len(data)
                self.messages_out += 1
                reached += 1
                continue
            # MQTT-3.3.1-9: RETAIN is cleared for normal delivery unless retain-as-published
            self.send(
                session,
                msg,
                qos if qos < msg_qos else msg_qos,
                rap and msg.retain,
                sub_ids,
                cache,
                expires_at,
            )
            reached += 1
        if not shared:
            return reached
        for key, members in shared:
            sub = self._pick_shared(key, members)
            sub_ids = (sub.sub_id,) if sub.sub_id is not None else ()
            self.send(
                sub.session,
                msg,
                min(sub.qos, msg_qos),
                sub.retain_as_published and msg.retain,
                sub_ids,
                cache,
                expires_at,
            )
            reached += 1
        return reached

    def _pick_shared(self, key: tuple[str, str], members: list[Sub]) -> Sub:
        """Round robin among the group members, preferring connected ones."""
        n = len(members)
        start = self._rr.get(key, 0) % n
        for i in range(n):
            index = (start + i) % n
            sub = members[index]
            conn = sub.session.conn
            if conn is not None and conn.state == CONNECTED:
                self._rr[key] = index + 1
                return sub
        self._rr[key] = start + 1
        return members[start]

    # -- delivery to one session -------------------------------------------------------------
    def _variant(  # noqa: PLR0917
        self,
        msg: MessageLike,
        level5: bool,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...],
        cache: dict[Any, _Variant],
    ) -> _Variant:
        """``msg`` encoded for one kind of receiver, once per ``cache`` (one message)."""
        key = (qos, retain, sub_ids) if level5 else qos * 2 + retain
        variant = cache.get(key)
        if variant is None:
            if level5:
                props = msg.properties
                if sub_ids:
                    props = replace(props, subscription_identifiers=sub_ids)
                data = encode(
                    Publish(msg.topic, msg.payload, qos, retain, False, 1 if qos else 0, props),
                    MQTT_5,
                )
                variant = split_publish(data) if qos else (data, b"")
            else:
                variant = publish_311(msg.topic, msg.payload, qos, retain)
            cache[key] = variant
        return variant

    def send(  # noqa: PLR0917
        self,
        session: Session,
        msg: MessageLike,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...],
        cache: dict[Any, _Variant],
        expires_at: float | None,
    ) -> None:
        """Send (or queue) one message to one session.

        ``cache`` holds the encodings of ``msg`` made so far (a new dict per message);
        ``expires_at`` is the time it expires at on the hub's clock [s] (``None``: never).
        """
        conn = session.conn
        if qos == 0:
            if conn is None or conn.state != CONNECTED:
                return  # QoS 0 is not queued for offline sessions
            if conn.level == MQTT_5:
                data = self._variant(msg, True, 0, retain, sub_ids, cache)[0]
            else:
                variant = cache.get(retain)  # same key as _variant: qos * 2 + retain
                data = (variant or self._variant(msg, False, 0, retain, (), cache))[0]
            bound = self.config.max_buffered_bytes
            if (conn.max_out and len(data) > conn.max_out) or (
                conn.out_size > bound or (conn.write_paused and conn.buffered() > bound)
            ):
                self.dropped += 1  # MQTT-3.1.2-25: never exceed the client's maximum
                return
            conn.write(data)
            self.messages_out += 1
            return
        out = Out(msg, qos, retain, sub_ids, expires_at)
        if conn is None or conn.state != CONNECTED:
            self._enqueue(session, out)
            return
        level5 = conn.level == MQTT_5
        if expires_at is None:
            variant = None if level5 else cache.get(qos * 2 + retain)
            prefix, suffix = variant or self._variant(msg, level5, qos, retain, sub_ids, cache)
        else:
            prefix, suffix = self._variant(msg, level5, qos, retain, sub_ids, {})
        inflight = session.inflight
        queue = session.queue
        if not queue and (inflight is None or len(inflight) < conn.window):
            self._transmit(session, conn, out, prefix, suffix)
            return
        if expires_at is None:
            out.prefix = prefix  # encoded once for every subscriber; only the packet id differs
            out.suffix = suffix
            out.level5 = level5
        if queue is not None and len(queue) < self.config.max_queued_messages:
            queue.append(out)
        else:
            self._enqueue(session, out)

    def _enqueue(self, session: Session, out: Out) -> None:
        queue = session.queue
        if queue is None:
            queue = session.queue = deque()
        if len(queue) >= self.config.max_queued_messages:
            self.dropped += 1
            return
        queue.append(out)

    def _transmit(
        self, session: Session, conn: Link, out: Out, prefix: bytes, suffix: bytes
    ) -> None:
        """Send an encoded QoS 1/2 message in a free in-flight slot of ``session``."""
        if conn.max_out and len(prefix) + 2 + len(suffix) > conn.max_out:
            self.dropped += 1
            return
        inflight = session.inflight
        if inflight is None:
            inflight = session.inflight = {}
        pid = session.next_pid
        if pid in inflight:
            pid = session.allocate_pid()
        else:
            session.next_pid = pid + 1 if pid < 65535 else 1
        out.packet_id = pid
        out.state = SENT
        inflight[pid] = out
        conn.write(b"".join((prefix, pid.to_bytes(2, "big"), suffix)))
        self.messages_out += 1

    def pump(self, session: Session, conn: Link) -> None:
        """Move queued messages into free in-flight slots."""
        queue = session.queue
        if not queue or conn.state != CONNECTED:
            return
        now = self._monotonic()
        level5 = conn.level == MQTT_5
        window = conn.window
        if session.inflight is None:
            session.inflight = {}
        inflight = session.inflight
        transmit = self._transmit
        max_out = conn.max_out
        chunks: list[bytes] = []
        add = chunks.append
        pid = session.next_pid
        sent = 0
        while queue and len(inflight) < window:
            out = queue.popleft()
            prefix = out.prefix
            if prefix is not None and out.level5 == level5 and not max_out:
                # inlines _transmit() for the common case (pre-encoded, no size limit)
                if pid in inflight:
                    session.next_pid = pid
                    pid = session.allocate_pid()
                out.packet_id = pid
                out.state = SENT
                inflight[pid] = out
                add(prefix)
                add(pid.to_bytes(2, "big"))
                add(out.suffix)
                pid = pid + 1 if pid < 65535 else 1
                sent += 1
                continue
            if chunks:  # keep the order: what was collected goes out first
                conn.write(b"".join(chunks))
                chunks.clear()
                self.messages_out += sent
                sent = 0
            session.next_pid = pid
            if prefix is not None and out.level5 == level5:
                transmit(session, conn, out, prefix, out.suffix)
            else:
                self._transmit_fresh(session, conn, out, now, level5)
            pid = session.next_pid
        session.next_pid = pid
        if chunks:
            conn.write(b"".join(chunks))
            self.messages_out += sent

    def _transmit_fresh(
        self, session: Session, conn: Link, out: Out, now: float, level5: bool
    ) -> None:
        """Encode a queued message now (expiry decremented) and transmit it."""
        msg = out.message
        if out.expires_at is not None:
            remaining = out.expires_at - now
            if remaining <= 0:
                self.dropped += 1  # 5.0 3.3.2.3.3: expired messages are not delivered
                return
            # decrement the message expiry interval by the time spent waiting
            msg = Message(
                msg.topic,
                msg.payload,
                msg.qos,
                msg.retain,
                replace(msg.properties, message_expiry_interval=math.ceil(remaining)),
            )
        prefix, suffix = self._variant(msg, level5, out.qos, out.retain, out.sub_ids, {})
        self._transmit(session, conn, out, prefix, suffix)

    def resume(self, session: Session, conn: Link) -> None:
        """Resend ``session``'s unacknowledged messages on its new connection (DUP set,
        MQTT-4.4.0-1) and drain its queue."""
        inflight = session.inflight
        if inflight:
            level = conn.level
            for pid, out in inflight.items():
                if out.state == RELEASED:
                    conn.write(encode(PubRel(pid), level))
                else:
                    msg = out.message
                    props = msg.properties if level == MQTT_5 else NO_PROPERTIES
                    if level == MQTT_5 and out.sub_ids:
                        props = replace(props, subscription_identifiers=out.sub_ids)
                    if level == MQTT_5 and out.expires_at is not None:
                        # MQTT-3.3.2-6: the interval minus the time the message has waited
                        remaining = max(1, math.ceil(out.expires_at - self._monotonic()))
                        props = replace(props, message_expiry_interval=remaining)
                    pub = Publish(msg.topic, msg.payload, out.qos, out.retain, True, pid, props)
                    conn.write(encode(pub, level if level == MQTT_5 else 4))
                    self.messages_out += 1
        if session.queue:
            self.pump(session, conn)


def _aggregate(subs: list[Sub]) -> tuple[int, bool, tuple[int, ...]]:
    """Overlapping subscriptions of one session: highest QoS, all subscription ids."""
    if len(subs) == 1:
        s = subs[0]
        return s.qos, s.retain_as_published, (s.sub_id,) if s.sub_id is not None else ()
    qos = max(s.qos for s in subs)
    rap = any(s.retain_as_published for s in subs)
    sub_ids = tuple(sorted({s.sub_id for s in subs if s.sub_id is not None}))
    return qos, rap, sub_ids

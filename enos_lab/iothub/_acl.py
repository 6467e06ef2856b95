"""Access control: which EnOS topics a connection may publish on, subscribe to and receive.

Theory of operation
-------------------
Deny by default. A device may use its own ``/sys/{pk}/{dk}/...`` and
``/ext/session/{pk}/{dk}/...`` topics, those of sub-devices logged in through it, the
integration topics of its product (secure mode 4) and its product's custom topics. A mode-3
activation session may only read and answer ``activate/info``.

:class:`Acl` is the hub's Authoriser. Upstream *request* topics pass the MQTT layer
(:meth:`Acl.authorise_publish` reads the cached route, one dict lookup per message) so that the
request handler can answer a violation with code 1009 on ``T_reply`` echoing the request id (the
authoriser cannot see the payload): :func:`may_request` is that check, and
:func:`subscribed` whether the 1009 answer goes out at all (only to a publisher that asked for
the reply topic, even by a refused SUBSCRIBE). Retained messages are refused on every EnOS
topic. Read permission is checked again per topic when the hub works out who receives it
(:meth:`Acl.authorise_receive`): a gateway reads its sub-devices' topics only while they are
logged in through it. Publishes to ``/sys/`` and ``/ext/`` topics outside the catalogue are
dropped and logged at WARNING: the first few of each connection, then a count at every power
of ten.

Applications (:mod:`~enos_lab.iothub._apps`) are not EnOS device connections: they may
subscribe to and receive the device topics their grants name, and never publish. Once one has
logged in (:meth:`Acl.check_requests`), a request its publisher may not send is kept from the
subscribers (``Decision.forward`` False: to the request handler only, for its 1009 answer).
"""

from __future__ import annotations

import logging

from ..enos import REPLY_SUFFIX, Direction, TopicKind, TopicMatch, filter_matches_request
from ..hub import ClientInfo, Decision
from ..mqtt import topic_matches
from ._apps import AppConn, Applications
from ._checks import shown
from ._config import IotHubConfig
from ._routes import DEVICE_REPLY, RAW_REQUEST, REQUEST, SCOPE_GATEWAY, SCOPE_INTEGRATION, Routes
from ._sessions import Conn, Sessions, custom_topics

__all__ = ["MAX_FILTERS", "Acl", "may_request", "subscribed"]

log = logging.getLogger("enos_lab.iothub")

_ALLOW = Decision(True)
_HANDLER_ONLY = Decision(True, forward=False)  # a request the publisher may not send
_NO_APP_PUBLISH = Decision(False, 0x87, "applications may not publish")
MAX_FILTERS = 128  # subscriptions remembered per connection for the 1009 answer


class Acl:
    """The hub's Authoriser for EnOS connections (see the module docstring)."""

    __slots__ = ("_apps", "_check_requests", "_conns", "_parse", "_route", "_unknown", "config")

    def __init__(
        self, sessions: Sessions, routes: Routes, config: IotHubConfig, apps: Applications
    ) -> None:
        self.config = config
        self._apps = apps
        self._check_requests = False  # see check_requests
        # the collaborators' tables and lookups, held here: one attribute per message
        self._conns = sessions.conns
        self._unknown = sessions.unknown_topics
        self._route = routes.route
        self._parse = routes.parse

    def authorise_publish(self, client: ClientInfo, topic: str, qos: int, retain: bool) -> Decision:
        """May ``client`` publish on ``topic``? (hub Authoriser protocol).

        Retained messages are refused on every EnOS topic (requests, replies, commands): the
        SDKs never retain, and a retained request would be kept by the hub for nothing.
        """
        conn = self._conns.get(client.session_key)
        if conn is None:
            if type(client.attributes) is AppConn:
                return _NO_APP_PUBLISH
            return Decision(False, 0x87, "not an EnOS session")
        route = self._route(topic)
        if route is not None:
            if retain:
                return Decision(False, 0x87, f"retained messages are refused on {topic!r}")
            action = route.action
            if action in (REQUEST, RAW_REQUEST):
                # checked by the request handler (EnOS 1009 with the request id); kept from
                # subscribers (applications) when the publisher may not send it
                if self._check_requests and not may_request(conn, route.match, route.scope):
                    return _HANDLER_ONLY
                return _ALLOW
            match = route.match
            if match.is_reply:
                # a device answers commands sent to itself or to its logged-in sub-devices
                if action == DEVICE_REPLY and _may_answer(conn, match):
                    return _ALLOW
                return Decision(False, 0x87, f"no permission to reply on {topic!r}")
            return Decision(False, 0x87, f"{topic!r} is a command topic")
        for custom, can_publish, _ in conn.custom:
            if can_publish and topic_matches(custom, topic):
                return _ALLOW
        for target in conn.subs.values():
            for custom, can_publish, _ in custom_topics(target.product, target.ident[1]):
                if can_publish and topic_matches(custom, topic):
                    return _ALLOW
        if topic.startswith(("/sys/", "/ext/")):
            self._unknown_topic(conn, topic)
        return Decision(False, 0x87, f"no write permission on {topic!r}")

    def check_requests(self) -> None:
        """From now on keep the requests a device may not send from the subscribers (called
        at the first application login: until then no subscriber could read them)."""
        self._check_requests = True

    def _unknown_topic(self, conn: Conn, topic: str) -> None:
        """Log a publish to a topic outside the EnOS catalogue (dropped): the first
        ``config.logged_unknown_topics`` of a connection, then the count at 10, 100, ..."""
        # counted per connection in a dict of the few that do this (not a slot of every one)
        key = conn.key
        count = self._unknown.get(key, 0) + 1
        self._unknown[key] = count
        if count <= self.config.logged_unknown_topics:
            log.warning(
                "client %r: %s is not an EnOS topic; message dropped",
                conn.client_id,
                shown(topic),
            )
        elif str(count).rstrip("0") == "1":
            log.warning(
                "client %r: %d messages to topics outside the EnOS catalogue dropped so far",
                conn.client_id,
                count,
            )

    def authorise_subscribe(self, client: ClientInfo, topic_filter: str, qos: int) -> Decision:
        """May ``client`` subscribe to ``topic_filter``? (hub Authoriser protocol)."""
        conn = self._conns.get(client.session_key)
        if conn is None:
            app = client.attributes
            if type(app) is AppConn:
                if self._apps.may_subscribe(app, topic_filter):
                    return _ALLOW
                why = f"{topic_filter!r} is outside application {app.access_key}'s grants"
                return Decision(False, 0x87, why)
            return Decision(False, 0x87, "not an EnOS session")
        if self._may_subscribe(conn, topic_filter):
            _remember_filter(conn, topic_filter)
            return _ALLOW
        if topic_filter.endswith(REPLY_SUFFIX):
            # remembered although refused: SDKs subscribe to the reply topic of a request for
            # a foreign device without checking the SUBACK, and expect the 1009 answer there
            _remember_filter(conn, topic_filter)
        return Decision(False, 0x87, f"no read permission on {topic_filter!r}")

    def authorise_receive(self, client: ClientInfo, topic: str) -> Decision:
        """May ``client``'s session receive ``topic``? (hub Authoriser protocol).

        The same rule as for subscribing, with what the connection may read now: a gateway
        reads its sub-devices' topics only while they are logged in through it, and a session
        whose connection ended reads only its own device's topics (its sub-devices went offline
        with it). The hub asks when it works out a topic's receivers; the services tell it
        (:meth:`~enos_lab.hub.Hub.permissions_changed`) when a login, logout, move or
        disconnection changes the answers.
        """
        conn = client.attributes
        if type(conn) is not Conn:
            if type(conn) is AppConn:
                if self._apps.may_receive(conn, topic):
                    return _ALLOW
                return Decision(False, 0x87, f"{topic!r} is outside the application's grants")
            found = self._conns.get(client.session_key)
            if found is None:
                return Decision(False, 0x87, "not an EnOS session")
            conn = found
        if self._may_subscribe(conn, topic):
            return _ALLOW
        return Decision(False, 0x87, f"no read permission on {topic!r}")

    def _may_subscribe(self, conn: Conn, topic_filter: str) -> bool:
        wildcard = "+" in topic_filter or "#" in topic_filter
        if conn.integration:
            prefix = f"/sys/{conn.product_key}/integration/"
            if wildcard:
                return topic_filter.startswith(prefix) and not filter_matches_request(
                    topic_filter, conn.product_key, "x"
                )
            return topic_filter.startswith(prefix) and topic_filter.endswith(REPLY_SUFFIX)
        if conn.activation:
            prefix = f"/ext/session/{conn.product_key}/{conn.device_key}/thing/activate/"
            return topic_filter.startswith(prefix)
        if not wildcard:
            match = self._parse(topic_filter)
            if match is not None:
                keys = (match.product_key, match.device_key)
                if conn.target(keys) is None:
                    return False
                # replies to its requests, and commands (the C SDK subscribes to them)
                return match.is_reply or match.kind.direction is Direction.DOWN
        else:
            targets = [conn.own] if conn.own is not None else []
            targets.extend(conn.subs.values())
            for target in targets:
                pk, dk = target.ident
                if topic_filter.startswith(
                    (f"/sys/{pk}/{dk}/", f"/ext/session/{pk}/{dk}/")
                ) and not filter_matches_request(topic_filter, pk, dk):
                    # never a filter that matches request topics: a request refused with
                    # 1009 still passes the MQTT layer and must not reach such a subscriber
                    return True
        targets = [conn.own] if conn.own is not None else []
        targets.extend(conn.subs.values())
        for target in targets:
            custom = (
                conn.custom
                if target is conn.own
                else custom_topics(target.product, target.ident[1])
            )
            for topic, _, can_subscribe in custom:
                if can_subscribe and topic_matches(topic, topic_filter):
                    return True
        return False


def _may_answer(conn: Conn, match: TopicMatch) -> bool:
    """May ``conn`` reply on the reply topic of the command ``match``?"""
    keys = (match.product_key, match.device_key)
    if conn.activation:
        return match.kind is TopicKind.ACTIVATE_INFO and keys == (
            conn.product_key,
            conn.device_key,
        )
    if conn.integration:
        return False
    return conn.target(keys) is not None


def may_request(conn: Conn, match: TopicMatch, scope: int) -> bool:
    """May ``conn`` send the request ``match`` of a route with ``scope``? (EnOS 1009 if not)."""
    if conn.activation:
        return False  # only activate/info replies (section 3)
    if scope == SCOPE_INTEGRATION:
        return conn.integration and match.product_key == conn.product_key
    if conn.integration:
        return False
    keys = (match.product_key, match.device_key)
    if scope == SCOPE_GATEWAY:
        return keys == (conn.product_key, conn.device_key)
    return conn.target(keys) is not None


def subscribed(conn: Conn, topic: str) -> bool:
    """Whether ``conn`` asked for ``topic`` (a reply topic) by one of its remembered
    subscriptions."""
    filters = conn.filters
    if topic in filters:
        return True
    return any(topic_matches(f, topic) for f in filters if "+" in f or "#" in f)


def _remember_filter(conn: Conn, topic_filter: str) -> None:
    """Remember a subscription for :func:`subscribed`; beyond :data:`MAX_FILTERS` the oldest
    is forgotten: however many filters a client sends, what is kept and the cost of its next
    SUBSCRIBE stay bounded (they grew with every refused filter, quadratically)."""
    filters = conn.filters
    if topic_filter not in filters:
        conn.filters = (*filters[-(MAX_FILTERS - 1) :], topic_filter)

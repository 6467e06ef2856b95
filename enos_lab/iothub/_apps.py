"""Applications over MQTT: their logins and what they may read (never write).

Theory of operation
-------------------
An application logs in with the user name ``%app%&{access_key}`` and its access secret as the
password (:mod:`enos_lab.apps`), over TCP or TLS. :meth:`Applications.login` decides such a
CONNECT from the application store (``None`` when the lab has none: every application login is
refused); the login throttle and the login log treat it like a device's. An accepted login's
identity is an :class:`AppConn` (``ClientInfo.attributes``) holding the topic patterns of its
grants, made once at login; the session belongs to the application (its user name).

The access control (:class:`~enos_lab.iothub._acl.Acl`) asks :class:`Applications` about a
client that is not an EnOS device connection:

- SUBSCRIBE: a filter within the grants (:func:`~enos_lab.apps.filter_within`) is accepted;
  any other is refused (SUBACK 0x80; 5.0: 0x87);
- receive: the hub asks per topic when it works out who receives it, for a connected and an
  offline session alike (:func:`~enos_lab.apps.topic_granted`);
- PUBLISH: always refused, on every topic (5.0: PUBACK/PUBREC 0x87; 3.1.1, which has no reason
  codes: acknowledged and dropped, as for a device's publish without permission): its messages
  reach no device, no subscriber and no request handler.

Devices publish requests; those they may not send (EnOS 1009: another device's topic) still
pass the MQTT layer so that the request handler can answer them. Once an application has
logged in, the access control checks that permission at the MQTT layer too and keeps such a
request from the subscribers (``Decision.forward``), so that no device can put words in
another's mouth for an application; until then (no subscriber could read a request topic)
the per-message path stays as it was.

:meth:`Applications.revoke` refuses the application from then on and ends its sessions
(connected clients are disconnected, 5.0 with 0x87; persistent sessions forgotten).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping

from ..apps import Application, ApplicationStore, filter_within, grant_patterns, topic_granted
from ..hub import ConnectRequest, Hub

__all__ = ["APP_PREFIX", "AppConn", "Applications"]

log = logging.getLogger("enos_lab.iothub")

APP_PREFIX = "%app%&"
"""The start of an application's MQTT user name (then its access key)."""

_KEYS = ("access_key", "name")


class AppConn(Mapping[str, object]):
    """An application's connection (``ClientInfo.attributes``): its ``access_key``, ``name``
    and the topic ``patterns`` it may read."""

    __slots__ = ("access_key", "name", "patterns")

    def __init__(self, access_key: str, name: str, patterns: tuple[str, ...]) -> None:
        self.access_key = access_key
        self.name = name
        self.patterns = patterns

    def __getitem__(self, key: str) -> object:
        if key in _KEYS:
            return getattr(self, key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(_KEYS)

    def __len__(self) -> int:
        return len(_KEYS)

    def __repr__(self) -> str:
        return f"AppConn({self.access_key!r}, {self.name!r})"


class Applications:
    """Application logins and permissions (see the module docstring). ``store`` is the
    application store (``None``: none, all refused); ``hub`` is set by ``IotHub.attach``."""

    __slots__ = ("hub", "logged_in", "on_first_login", "store")

    def __init__(self) -> None:
        self.store: ApplicationStore | None = None
        self.hub: Hub | None = None
        self.on_first_login: Callable[[], None] | None = None
        """Called once, at the first accepted login (the access control then starts keeping
        the requests a device may not send from the subscribers)."""
        self.logged_in = 0
        """Application logins accepted."""

    def login(self, request: ConnectRequest) -> AppConn | str:
        """The identity of an application's CONNECT, or the reason it is refused."""
        username = request.username or ""
        access_key = username[len(APP_PREFIX) :]
        store = self.store
        if store is None:
            return "the lab has no applications"
        password = request.password
        if password is None:
            return f"application {access_key!r}: no password (its access secret)"
        try:
            secret = password.decode()
        except UnicodeDecodeError:
            return f"application {access_key!r}: the password is not UTF-8"
        app = store.check(access_key, secret)
        if app is None:
            return f"application {access_key!r}: unknown, revoked or wrong secret"
        first, self.on_first_login = self.on_first_login, None
        if first is not None:
            first()
        self.logged_in += 1
        return _conn(app)

    @staticmethod
    def may_subscribe(app: AppConn, topic_filter: str) -> bool:
        """Whether ``topic_filter`` is within the application's grants."""
        return filter_within(topic_filter, app.patterns)

    @staticmethod
    def may_receive(app: AppConn, topic: str) -> bool:
        """Whether the application may read ``topic``."""
        return topic_granted(topic, app.patterns)

    def revoke(self, access_key: str) -> int:
        """End the application's sessions (its connected clients disconnected); returns how
        many. Call on the hub's loop, once the store refuses it."""
        hub = self.hub
        if hub is None:
            return 0
        ended = hub.end_identity(APP_PREFIX + access_key)
        hub.permissions_changed()
        if ended:
            log.info("application %s revoked: %d session(s) ended", access_key, ended)
        return ended


def _conn(app: Application) -> AppConn:
    return AppConn(app.access_key, app.name, grant_patterns(app.grants))

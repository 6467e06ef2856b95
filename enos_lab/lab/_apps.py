"""Subscriptions from the facade: callbacks on the lab's events, the recent event view, and
applications that read device data over MQTT.

- :meth:`Subscriptions.on` calls a function with the tap's events that pass a filter (kind
  names such as ``"presence"`` or ``"measurepoint"``, products, devices, points), in a thread of
  its own, off the lab's loop (:class:`~enos_lab.monitor.EventCallback`);
  :meth:`~enos_lab.lab.Lab.subscribe` gives the same events to an iterator.
- :meth:`Subscriptions.events` is the lab's recent event stream as a DataFrame: the newest
  events the lab keeps in a bounded ring from its creation on (connects, disconnects with their
  reason, logins and sub-device logins, activations, commands sent and replied, OTA reports,
  alerts, attribute and tag changes, device events; not stored points, which are in the store:
  :meth:`Subscriptions.configure_events` turns them on and sizes the ring).
- :meth:`Subscriptions.register_application` makes an application credential: user name
  ``%app%&{access_key}``, its access secret as the password, over the lab's TCP or TLS
  listener; it may subscribe to the device topics of its grants and never publish
  (:mod:`enos_lab.apps`). :meth:`~Subscriptions.revoke_application` refuses it and
  disconnects it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pandas as pd

from ..apps import Application, ApplicationStore, Grant
from ..errors import InvalidArgument
from ..monitor import EventCallback, describe
from ..store import TimeLike, as_ms
from ..tap import DEFAULT_MAXSIZE, Keys, Kinds, TapEvent, TapFilter
from ._core import LabCore, coroutine_form_of, plain_call

__all__ = ["APPLICATION_COLUMNS", "DEFAULT_EVENT_LIMIT", "EVENT_COLUMNS", "Subscriptions"]

EVENT_COLUMNS = (
    "time", "kind", "product_key", "device_key", "what", "detail", "code", "event",
)  # fmt: skip
"""Columns of :meth:`Subscriptions.events`: ``time`` (tz-aware UTC: the event time of points,
device events and alerts, the time the lab recorded it for the rest), ``kind`` (a kind name of
:data:`enos_lab.tap.KINDS`), the device's keys, ``what`` happened in a word or two
(``online``/``offline``, ``login``/``sub-device login``, ``activated``, ``sent``/``replied``,
``inform``/``progress``, ``opened``/``recovered``/``escalated``, ``changed by device``/
``changed by cloud``, the event id), ``detail`` a short text (the disconnect's reason, the
command and its request id, ...), ``code`` a command reply's code (Int64, NA otherwise) and
``event`` the tap's event object itself."""

APPLICATION_COLUMNS = (
    "name", "access_key", "username", "grants", "created_at", "revoked_at",
)  # fmt: skip
"""Columns of :meth:`Subscriptions.applications`: ``grants`` a list of dicts (product_key,
device_keys, kinds), times tz-aware UTC (``revoked_at`` NaT while it is valid)."""

DEFAULT_EVENT_LIMIT = 1000
"""Rows :meth:`Subscriptions.events` returns by default (the newest)."""


class Subscriptions(LabCore):
    """Event callbacks, the recent event view and applications over MQTT (mixed into
    :class:`~enos_lab.lab.Lab`; see the module docstring)."""

    # -- callbacks ------------------------------------------------------------------------

    def on(
        self,
        kinds: Kinds,
        callback: Callable[[TapEvent], Any],
        *,
        product_key: Keys = None,
        device_key: Keys = None,
        point_id: Keys = None,
        maxsize: int = DEFAULT_MAXSIZE,
    ) -> EventCallback:
        """Call ``callback(event)`` for each of the lab's events that passes the filter, in
        order, in a thread of its own (it may take its time: it never holds up the devices).

        ``kinds`` as for :meth:`subscribe`: kind names (``"measurepoint"``, ``"event"``,
        ``"attribute"``, ``"tag"``, ``"presence"``, ``"login"``, ``"activation"``,
        ``"command"``, ``"ota"``, ``"alert"``) or event classes, one or several (``None``:
        all); ``product_key``, ``device_key`` and ``point_id`` one key or several. At most
        ``maxsize`` events wait for a slow callback (then the oldest are dropped, counted in
        ``handle.dropped``); an exception it raises is logged and counted
        (``handle.errors``). Returns the :class:`~enos_lab.monitor.EventCallback`: call its
        ``cancel()`` (or use it in a ``with`` block) to stop. Works before :meth:`start` and
        across restarts, like :meth:`subscribe`.
        """
        if not callable(callback):
            raise InvalidArgument(f"callback must be callable, got {callback!r}")
        subscription = self.subscribe(
            kinds,
            product_key=product_key,
            device_key=device_key,
            point_id=point_id,
            maxsize=maxsize,
        )
        return EventCallback(subscription, callback)

    aon = coroutine_form_of(on)

    # -- the recent event view -----------------------------------------------------------------

    def events(
        self,
        *,
        kinds: Kinds = None,
        product_key: Keys = None,
        device_key: Keys = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        limit: int | None = DEFAULT_EVENT_LIMIT,
    ) -> pd.DataFrame:
        """The lab's recent events, oldest first, one row per event, columns
        :data:`EVENT_COLUMNS`: of ``kinds`` (kind names or event classes, as for
        :meth:`subscribe`), of one product or several, one device key or several, with
        ``time`` in ``[start, end)``, the newest ``limit`` of them (``None``: all kept).

        The lab keeps its newest events from its creation on, across restarts, in a ring of
        10,000 (:meth:`configure_events`); stored points only when turned on there (they are
        in the store: ``lab.store.query_points``). An anonymous lab has no events.
        """
        filt = TapFilter.of(kinds, product_key, device_key)
        lo = None if start is None else as_ms(start, "start")
        hi = None if end is None else as_ms(end, "end")
        if limit is not None and (
            not isinstance(limit, int) or isinstance(limit, bool) or limit < 0
        ):
            raise InvalidArgument(f"limit must be an int >= 0 or None, got {limit!r}")
        rows = []
        for item in self._event_log.events():
            row = describe(item)
            event = row[-1]
            if not filt.matches(event):
                continue
            if lo is not None or hi is not None:
                at_ms = int(event.time.timestamp() * 1000)
                if (lo is not None and at_ms < lo) or (hi is not None and at_ms >= hi):
                    continue
            rows.append(row)
        if limit is not None:
            rows = rows[len(rows) - limit :] if limit else []
        frame = pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
        frame["time"] = pd.to_datetime(frame["time"], utc=True)
        frame["code"] = frame["code"].astype("Int64")
        return frame

    aevents = coroutine_form_of(events)

    def configure_events(
        self, *, capacity: int | None = None, points: bool | None = None
    ) -> dict[str, Any]:
        """Set what :meth:`events` keeps: ``capacity`` events at most (the newest; default
        10,000), and stored ``points`` too (default ``False``: they are in the store, and a
        busy fleet would push every other event out of the ring; on, ingest pays for keeping
        them). ``None`` leaves a setting as it is. Returns the settings and counts:
        ``capacity``, ``points``, ``kept`` (events now) and ``seen`` (since the lab was
        made)."""
        log = self._event_log
        if capacity is not None:
            log.capacity = capacity
        if points is not None:
            if not isinstance(points, bool):
                raise InvalidArgument(f"points must be True, False or None, got {points!r}")
            log.attach(self._tap, points=points)
        return {"capacity": log.capacity, "points": log.points, "kept": len(log), "seen": log.seen}

    aconfigure_events = coroutine_form_of(configure_events)

    # -- applications over MQTT ------------------------------------------------------------------

    def _application_store(self) -> ApplicationStore:
        self._require_iothub("applications")
        store = self._running().applications
        assert store is not None  # set with the IoT hub services
        return store

    def register_application(
        self,
        name: str,
        *,
        grants: Iterable[Grant | str | Mapping[str, Any]] | Grant | str | Mapping[str, Any],
    ) -> Application:
        """Register an application that may read device data over MQTT, and return it with
        its access secret (shown this once: the lab keeps a digest only).

        ``grants``: what it may read, one grant or several, each a
        :class:`~enos_lab.apps.Grant`, a product key (every device of it; measurepoints,
        events, attributes) or a dict ``{"product_key": ..., "device_keys": [...], "kinds":
        [...]}`` (kinds among ``measurepoint``, ``event``, ``attribute``, ``tag``, ``ota``).
        Products and devices must be registered (:class:`~enos_lab.errors.NotFound`
        otherwise).

        It logs in to :attr:`url` (or :attr:`tls_url`) with the user name
        ``app.username`` (``%app%&{access_key}``) and ``app.access_secret`` as the password,
        any client id; subscribes to topic filters within its grants (``+`` allowed,
        for instance ``/sys/{pk}/+/thing/measurepoint/post``; ``#`` never: refused as
        any filter outside them, SUBACK 0x80 / 5.0 0x87) and receives what the devices
        publish there. Its publishes are refused (5.0: 0x87; 3.1.1: dropped).
        """
        store = self._application_store()
        if isinstance(grants, (Grant, str, Mapping)):
            grants = [grants]
        chosen = [Grant.of(g) for g in grants]
        for grant in chosen:
            self.registry.get_product(grant.product_key)
            for device_key in grant.device_keys or ():
                self.registry.get_device(grant.product_key, device_key)
        return store.register(name, chosen)

    aregister_application = coroutine_form_of(register_application)

    def application(self, access_key: str) -> Application:
        """The application ``access_key`` (without its secret);
        :class:`~enos_lab.errors.NotFound` if none."""
        return self._application_store().get(access_key)

    aapplication = coroutine_form_of(application)

    def applications(self) -> pd.DataFrame:
        """Every application registered, revoked ones too, in the order registered; columns
        :data:`APPLICATION_COLUMNS`."""
        rows = [
            (
                app.name,
                app.access_key,
                app.username,
                [g.to_json() for g in app.grants],
                app.created_at,
                app.revoked_at,
            )
            for app in self._application_store().applications()
        ]
        frame = pd.DataFrame(rows, columns=list(APPLICATION_COLUMNS))
        for column in ("created_at", "revoked_at"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
        return frame

    aapplications = coroutine_form_of(applications)

    def revoke_application(self, access_key: str) -> Application:
        """Refuse the application's logins from now on and disconnect it (5.0: DISCONNECT
        0x87; its persistent sessions are forgotten); idempotent.
        :class:`~enos_lab.errors.NotFound` for an unknown access key."""
        iothub = self._require_iothub("applications")
        app = self._application_store().revoke(access_key)
        self.run(plain_call(iothub.revoke_application, access_key))
        return app

    arevoke_application = coroutine_form_of(revoke_application)

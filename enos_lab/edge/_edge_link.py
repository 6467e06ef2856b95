"""An edge's connection to the hub: logins, reconnection, and keeping its sub-devices set up.

:class:`Supervision` is the part of :class:`~enos_lab.edge.Edge` that owns the link to the hub
(the edge reconnects itself, so that it knows when it is trying: ``DeviceClient(reconnect=None)``).
One task, the supervisor, runs while the edge does:

- when the connection drops (``on_disconnect``), it waits the backoff's delay on the clock
  (``EdgeConfig.reconnect``, full jitter) and logs in again, counting the logins the hub
  refuses (an unknown or revoked serial number: state ``REFUSED``) and trying again; the client
  logs the remembered sub-devices in again itself, and those it could not are marked
  ``LOGIN_FAILED``;
- after each login it sets up the field devices that need it (:mod:`._edge_setup`), then wakes
  the drain, so that a backlog is resumed once its sub-devices are attached again;
- while some device's setup or login failed, it tries them again every ``relogin_interval``,
  and at once when the cloud enables a sub-device (``combine.enable``); ``combine.disable`` and
  ``delete`` mark the sub-device ``LOGIN_FAILED``.

Every wait is on the edge's clock and recorded (``_attempt_due``, ``_relogin_due``), so that
:func:`~enos_lab.edge.advance_edges` can step a simulated clock to each attempt.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING

from ..clock import Clock
from ..device import DeviceClient, Notification
from ..enos import TopicKind
from ..errors import DeviceError, LoginRefused
from ._edge_config import EdgeConfig
from ._edge_setup import Entry, LinkLost, Setup
from ._edge_stats import EdgeErrorKind, EdgeState, SubDeviceState

__all__ = ["RETRIED", "Supervision"]

log = logging.getLogger("enos_lab.edge")

RETRIED = frozenset(
    {SubDeviceState.PENDING, SubDeviceState.LOGIN_FAILED, SubDeviceState.SETUP_FAILED}
)
"""The states of the devices the supervisor sets up (again)."""


class Supervision:
    """The connection part of :class:`~enos_lab.edge.Edge` (see the module docstring)."""

    if TYPE_CHECKING:  # provided by Edge
        _client: DeviceClient
        _config: EdgeConfig
        _clock: Clock
        _rng: random.Random
        _entries: dict[str, Entry]
        _by_keys: dict[tuple[str, str], str]
        _setup: Setup
        _state: EdgeState
        _running: bool
        _wakeup: asyncio.Event
        _retry_asked: bool
        _busy: int
        _connects: int
        _disconnects: int
        _refusals: int
        _attempt_due: float | None
        _relogin_due: float | None

        @property
        def _who(self) -> str: ...

        def _changed(self) -> None: ...

        def _fail(
            self, entry: Entry, kind: EdgeErrorKind, message: str, code: int | None
        ) -> None: ...

        def _wake_drain(self) -> None: ...

        async def _repoll(self, *, first: bool = False) -> None: ...

    async def _connect(self) -> None:
        try:
            await self._client.connect()
        except LoginRefused as exc:
            self._refusals += 1
            self._state = EdgeState.REFUSED
            log.warning("edge %s: login refused by the hub: %s", self._who, exc)
            raise
        except (DeviceError, OSError):
            self._state = EdgeState.OFFLINE
            raise
        self._connects += 1
        self._state = EdgeState.ONLINE
        log.info("edge %s: online", self._who)
        client = self._client
        for entry in self._entries.values():
            logged_in = client.sub_device(*entry.keys).logged_in
            if entry.state is SubDeviceState.ONLINE and not logged_in:
                entry.state = SubDeviceState.LOGIN_FAILED
                self._fail(
                    entry,
                    EdgeErrorKind.LOGIN,
                    f"{entry.name}: the hub refused its login after the edge reconnected",
                    None,
                )

    def _connection_lost(self) -> None:
        self._disconnects += 1
        if self._running:
            self._state = EdgeState.OFFLINE
            log.warning("edge %s: connection to the hub lost; caching", self._who)
        self._wakeup.set()
        self._changed()

    async def _supervise(self) -> None:
        """Reconnect when the connection drops; set up the devices that need it, at once after
        a login and every ``relogin_interval`` while some still fail."""
        retry_now = False
        while True:
            if not self._client.connected:
                await self._reconnect()
                await self._set_up(self._needing_setup())
                self._wake_drain()  # the backlog, once its sub-devices are attached again
                continue
            todo = self._needing_setup()
            if todo and retry_now:
                retry_now = False
                await self._set_up(todo)
                continue
            self._wakeup.clear()
            if todo:
                interval = self._config.relogin_interval
                self._relogin_due = self._clock.monotonic() + interval
                try:
                    await self._clock.wait_for(self._wakeup.wait(), interval)
                except TimeoutError:
                    retry_now = True
                    continue
                finally:
                    self._relogin_due = None
            else:
                await self._wakeup.wait()
            retry_now, self._retry_asked = self._retry_asked, False

    async def _set_up(self, entries: list[Entry]) -> None:
        """Set ``entries`` up (when there are any), then poll what should be polled."""
        if entries:
            self._busy += 1
            try:
                await self._run_setup(entries)
            finally:
                self._busy -= 1
                self._changed()
        await self._repoll()

    async def _reconnect(self) -> None:
        policy, attempt = self._config.reconnect, 0
        while True:
            delay = policy.delay(attempt, self._rng)
            self._attempt_due = self._clock.monotonic() + delay
            try:
                await self._clock.sleep(delay)
            finally:
                self._attempt_due = None
            self._busy += 1
            try:
                await self._connect()
                return
            except (DeviceError, OSError) as exc:
                log.debug("edge %s: reconnect attempt %d failed: %s", self._who, attempt + 1, exc)
            finally:
                self._busy -= 1
                self._changed()
            attempt += 1

    def _needing_setup(self) -> list[Entry]:
        return [
            e for e in self._entries.values() if e.state in RETRIED and not e.busy and not e.leaving
        ]

    async def _run_setup(self, entries: list[Entry]) -> None:
        if not entries:
            return
        for entry in entries:
            entry.busy = True
        try:
            await self._setup.run(entries)
        except LinkLost as exc:
            log.info("edge %s: setting up sub-devices interrupted: %s", self._who, exc)
        finally:
            for entry in entries:
                entry.busy = False

    def _notified(self, notification: Notification) -> None:
        """A sub-device was enabled, disabled or deleted in the cloud."""
        kind = notification.kind
        for keys in notification.devices:
            name = self._by_keys.get(keys)
            entry = self._entries.get(name) if name is not None else None
            if entry is None:
                continue
            if kind in (TopicKind.SUB_DEVICE_DISABLE, TopicKind.SUB_DEVICE_DELETE):
                what = "disabled" if kind is TopicKind.SUB_DEVICE_DISABLE else "deleted"
                if entry.state is SubDeviceState.ONLINE:
                    entry.state = SubDeviceState.LOGIN_FAILED
                self._fail(
                    entry,
                    EdgeErrorKind.LOGIN,
                    f"{entry.name}: sub-device {keys[0]}/{keys[1]} was {what} in the cloud",
                    None,
                )
            elif kind is TopicKind.SUB_DEVICE_ENABLE:
                self._retry_asked = True
                self._wakeup.set()

"""Operations from the facade: presence, the login log, commands and raw publishes."""

from __future__ import annotations

import pandas as pd

from ..control import CommandHandle
from ..enos import Direction, Reply, TopicKind
from ..errors import InvalidArgument
from ..hub import Message
from ..iothub import logins_frame
from ..mqtt import NO_PROPERTIES, Properties
from ._core import LabCore, coroutine_form_of, plain_call

__all__ = ["Operations"]


class Operations(LabCore):
    """Presence, logins, commands and raw publishes (mixed into :class:`~enos_lab.lab.Lab`)."""

    def presence(
        self, product_key: str | None = None, device_key: str | None = None
    ) -> pd.DataFrame:
        """Online/offline transitions, oldest first, optionally for one product or device.

        Columns: ``time`` (tz-aware UTC), ``product_key, device_key, online`` (bool),
        ``reason`` (connected, disconnected, kicked, keep-alive timeout, gateway offline,
        logged out, disabled, deleted, taken over, hub restarted: the lab started and found the
        device still marked online by a hub that ended without closing its sessions, a crash).
        """
        rows = self.registry.presence_log(product_key, device_key)
        frame = pd.DataFrame(rows, columns=list(_PRESENCE_COLUMNS))
        frame["time"] = pd.to_datetime(frame["time"], utc=True)
        frame["online"] = frame["online"].astype(bool)
        return frame

    apresence = coroutine_form_of(presence)

    def refused_logins(
        self, product_key: str | None = None, device_key: str | None = None
    ) -> pd.DataFrame:
        """The login log: the refused login attempts, oldest first (the latest
        ``IotHubConfig.login_log_size``), optionally of one product or device. Accepted logins
        are in :meth:`presence` ("connected").

        Columns: ``time`` (tz-aware UTC), ``source`` (the client's address), ``client_id,
        product_key, device_key``, ``reason`` (why the registry refused it, or ``blocked after N
        failed logins until T``) and ``blocked_until`` (tz-aware UTC: set on the failure that
        started a block and on the attempts it refused). Failed logins block a device's logins
        from that address only (4 within 120 s: 300 s, ``IotHubConfig``); :meth:`unblock_login`
        lifts a block.
        """
        iothub = self._require_iothub("the login log")
        rows = self.run(plain_call(iothub.login_log.rows, product_key, device_key))
        return logins_frame(rows)

    arefused_logins = coroutine_form_of(refused_logins)

    def unblock_login(self, product_key: str, device_key: str, source: str | None = None) -> int:
        """Lift the login throttle's blocks of a device from ``source`` (the address as in
        :meth:`refused_logins`, e.g. ``"127.0.0.1"``; ``None``: every address) and forget its
        failed logins there, so that its next correct login is accepted at once. Returns how many
        blocks were lifted.
        """
        iothub = self._require_iothub("unblock_login")
        return self.run(plain_call(iothub.unblock_login, product_key, device_key, source))

    aunblock_login = coroutine_form_of(unblock_login)

    def is_online(self, product_key: str, device_key: str) -> bool:
        """Whether the device has a live session on the hub now (always False when anonymous)."""
        iothub = self._running().iothub
        if iothub is None:
            self.registry.get_device(product_key, device_key)
            return False
        return self.run(plain_call(iothub.is_online, product_key, device_key))

    ais_online = coroutine_form_of(is_online)

    # -- commands ----------------------------------------------------------------------------

    def send_command(
        self,
        product_key: str,
        device_key: str,
        kind: TopicKind,
        params: object,
        *,
        item_id: str = "",
        wait: bool = True,
        timeout: float | None = None,
        service_id: str | None = None,
    ) -> Reply | None:
        """Send a downstream command (service invocation, measurepoint set, ...) to a device.

        ``kind`` is the command's :class:`~enos_lab.enos.TopicKind` and ``item_id`` the service
        or similar id in its topic; ``service_id`` names the service of a legacy RRPC request
        (``RRPC_REQUEST``, whose topic carries its rrpc id ``item_id``, a fresh one if empty).
        The device needs no subscription. With ``wait=True`` the device's reply is returned as
        it is, whatever its code (:class:`TimeoutError` after
        ``timeout`` [s], default the IoT hub's ``command_timeout``); with ``wait=False`` it
        returns ``None`` once the command is on its way. Raises
        :class:`~enos_lab.errors.NotFound` for an unknown device and
        :class:`~enos_lab.errors.DeviceOffline` when it is offline.

        Nothing is checked against the thing model (see :meth:`invoke_service` and friends for
        that), but the command is recorded like theirs (:meth:`commands`): it is an instant
        command through the lab's :class:`~enos_lab.control.CommandService`, which waits for
        the reply (and records it, or the timeout) even when the caller does not.
        """
        iothub = self._require_iothub("commands")
        service = self._running().control
        if service is None:  # no tap: nothing to record on
            return self.run(
                iothub.send_command(
                    product_key,
                    device_key,
                    kind,
                    params,
                    item_id=item_id,
                    wait=wait,
                    timeout=timeout,
                    service_id=service_id,
                )
            )
        if kind.direction is not Direction.DOWN:
            raise InvalidArgument(f"{kind.name} is not a command topic")
        self.registry.get_device(product_key, device_key)  # NotFound first, as before

        async def submit() -> CommandHandle:
            return service.submit(
                product_key,
                device_key,
                kind,
                params,
                item_id=item_id,
                timeout=timeout,
                convert=_as_is,
                service_id=service_id,
            )

        handle = self.run(submit())
        return handle.result() if wait else None

    asend_command = coroutine_form_of(send_command)

    # -- raw hub operations ------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 0,
        retain: bool = False,
        properties: Properties = NO_PROPERTIES,
    ) -> int:
        """Publish a message from the hub side; returns how many sessions it reached.

        ``payload`` may be ``str`` (sent as UTF-8).
        """
        message = _message(topic, payload, qos, retain, properties)
        return self.run(self.hub.publish(message))

    apublish = coroutine_form_of(publish)


_PRESENCE_COLUMNS = ("time", "product_key", "device_key", "online", "reason")


def _as_is(reply: Reply) -> Reply:
    return reply


def _message(
    topic: str, payload: bytes | str, qos: int, retain: bool, properties: Properties
) -> Message:
    if qos not in (0, 1, 2):
        raise InvalidArgument(f"qos must be 0, 1 or 2, got {qos!r}")
    data = payload.encode() if isinstance(payload, str) else bytes(payload)
    return Message(topic=topic, payload=data, qos=qos, retain=retain, properties=properties)

"""The device SDK: EnOS devices, gateways and sub-devices written in Python.

:class:`DeviceClient` is an asyncio device on gmqtt (MQTT 3.1.1, as the official EnOS SDKs):
login by device secret or by dynamic activation, requests with correlation ids and timeouts,
handlers for every downstream command, gateway operations, reconnection with exponential
backoff and full jitter, long-connection and short-connection mode. :class:`Device` is the
same device for scripts and notebooks: blocking methods, the client running on a private
event loop thread. Both speak through :mod:`enos_lab.enos` (topics, envelopes, signatures,
codes), the code the hub uses.

Errors (:mod:`enos_lab.errors`): :class:`~enos_lab.errors.LoginRefused`,
:class:`~enos_lab.errors.RequestFailed`, :class:`~enos_lab.errors.RequestTimeout`,
:class:`~enos_lab.errors.NotConnected` (all :class:`~enos_lab.errors.DeviceError`), and
:class:`~enos_lab.errors.CommandError`, which a command handler raises to answer with a code.

Example (asyncio)::

    async with DeviceClient(lab.host, lab.port, pk, dk, secret) as device:
        device.on_service("reset", lambda params: {"ok": True})
        await device.post_measurepoints({"temp": 21.5})
"""

from ._client import DEFAULT_BACKOFF, DeviceClient
from ._endpoint import Endpoint
from ._gateway import BatchLoginResult, SubDevice
from ._policy import Backoff, ConnectionMode
from ._sync import Device, SyncSubDevice
from ._types import ClientStats, Notification, PointsEntry, SubDeviceCredentials, SubDeviceSpec

__all__ = [
    "DEFAULT_BACKOFF",
    "Backoff",
    "BatchLoginResult",
    "ClientStats",
    "ConnectionMode",
    "Device",
    "DeviceClient",
    "Endpoint",
    "Notification",
    "PointsEntry",
    "SubDevice",
    "SubDeviceCredentials",
    "SubDeviceSpec",
    "SyncSubDevice",
]

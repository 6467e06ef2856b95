"""EnOS IoT Hub services: authentication, sessions, topics, replies and ACL for EnOS devices.

:class:`IotHub` turns a :class:`~enos_lab.hub.Hub` into an EnOS IoT Hub that the official EnOS
device SDKs connect to unchanged: logins (secure modes 2, 3 and 4), dynamic activation, one
connection per device, presence, measurepoints, events, attributes, tags, thing model
templates, raw (custom format) payloads, gateways and sub-devices, OTA hooks, the message
integration channel, commands to devices, and a login log with the refused logins and why
(:meth:`IotHub.refused_logins`)::

    iothub = IotHub(registry, models, store)
    hub = Hub(HubConfig(), authenticator=iothub, authoriser=iothub)
    iothub.attach(hub)

No hub-wide CONNACK delay is needed: the IoT hub delays the CONNACK of logins shaped like the
official Python SDK's by ``IotHubConfig.python_sdk_connack_delay`` (protocol reference 4.9).
"""

from __future__ import annotations

from ..errors import DeviceOffline
from ._config import IotHubConfig, OtaHandler, RawCodec
from ._iothub import IotHub
from ._logins import LOGIN_COLUMNS, LoginLog, login_source, logins_frame
from ._ota import MemoryOta

__all__ = [
    "LOGIN_COLUMNS",
    "DeviceOffline",
    "IotHub",
    "IotHubConfig",
    "LoginLog",
    "MemoryOta",
    "OtaHandler",
    "RawCodec",
    "login_source",
    "logins_frame",
]

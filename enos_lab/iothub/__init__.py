"""EnOS IoT Hub services: authentication, sessions, topics, replies and ACL for EnOS devices.

:class:`IotHub` turns a :class:`~enos_lab.hub.Hub` into an EnOS IoT Hub that the official EnOS
device SDKs connect to unchanged: logins (secure modes 2, 3 and 4), dynamic activation, one
connection per device, presence, measurepoints, events, attributes, tags, thing model
templates, raw (custom format) payloads, gateways and sub-devices, OTA hooks, the message
integration channel, commands to devices, and a login log with the refused logins and why
(:meth:`IotHub.refused_logins`). What it keeps it reports to the device-data tap
(:attr:`IotHub.tap`, :mod:`enos_lab.tap`) once it is kept::

    iothub = IotHub(registry, models, store, tap=tap)   # tap=None: a tap of its own
    hub = Hub(HubConfig(), authenticator=iothub, authoriser=iothub)
    iothub.attach(hub)

No hub-wide CONNACK delay is needed: the IoT hub delays the CONNACK of logins shaped like the
official Python SDK's by ``IotHubConfig.python_sdk_connack_delay`` (protocol reference 4.9).

One module per area of the protocol, composed by :class:`IotHub` (``_iothub.py``, which also
holds the handler table: which part answers which topic):

=====================  ==========================================================================
``_logins.py``         logins: the authenticator, the login throttle, the login log
``_sessions.py``       the connection records and tables, presence, dynamic activation (3)
``_acl.py``            access control: publish, subscribe and receive permissions, the 1009 rule
``_routes.py``         the route table (topic -> action, scope, handler) and the error replies
``_requests.py``       every accepted PUBLISH: requests, replies, raw (custom format) payloads
``_measurepoints.py``  measurepoints (7.1, 7.2): general path, fast path, the batcher
``_events.py``         events (7.3)
``_attributes.py``     attributes and tags (7.4), the thing model template
``_gateways.py``       gateways (8): registration, topology, sub-device login and logout
``_commands.py``       commands to devices (9), their replies, gateway notifications
``_ota.py``            OTA (10): the replaceable handler and its requests
``_integration.py``    the message integration channel (11)
``_checks.py``         what the store can keep, checked at the edge (times, identifiers)
``_emit.py``           what the parts tell the tap, each event once what it describes is kept
``_config.py``         :class:`IotHubConfig`; the :class:`RawCodec`, :class:`OtaHandler` protocols
=====================  ==========================================================================
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

"""enos_lab: a local, notebook-first laboratory for IoT device provisioning.

Modelled on the Envision EnOS IoT Hub: an in-process MQTT 3.1.1/5.0 hub, a device registry,
thing models, a time-series store and tutorials. Start with :class:`Lab`; the README has a tour.

What ``import enos_lab`` gives by name (``__all__``, sorted):

- ``AlertChanged``: tap event: an alert fired, recovered or escalated (``Lab.alerts``).
- ``AlertRule``: an alert rule (``Lab.add_alert_rule``; severities and the rest: :mod:`.alerts`).
- ``AlreadyExists``: an id (product, device, model) that is already taken.
- ``AttributesChanged``: tap event (all of them: ``Lab.subscribe``): a device's attributes changed.
- ``AuthenticationError``: credentials were refused.
- ``Backoff``: reconnect policy of a device client (exponential backoff, full jitter).
- ``Clock``: what the lab asks about time (``SystemClock`` and ``SimulatedClock`` are clocks).
- ``ClosedError``: the lab, hub, store or a device client is not running.
- ``CommandError``: raised by a device's command handler to reply with a code.
- ``CommandExpired``: a cached command (``pending_ttl``) was not sent before it expired.
- ``CommandFailed``: a device answered a command (``Lab.invoke_service``, ...) with a code not 200.
- ``CommandReplied``: tap event: a device answered a command.
- ``CommandSent``: tap event: a command reached the device's connection.
- ``ConnectionMode``: LONG (kept, reconnecting) or SHORT (per operation) connections.
- ``Device``: a device (or gateway) for scripts and notebooks; the blocking ``DeviceClient``.
- ``DeviceActivated``: tap event: a device received its secret by dynamic activation.
- ``DeviceClient``: an EnOS device (or gateway) on asyncio: the device SDK (:mod:`.device`).
- ``DeviceError``: a fault seen by the device SDK (refused login, failed request, ...).
- ``DeviceLoggedIn``: tap event: a device's login was accepted (directly or through a gateway).
- ``DeviceOffline``: a command went to a device that has no live connection.
- ``EnosLabError``: the root of every exception enos_lab raises (the tree: :mod:`.errors`).
- ``EventPosted``: tap event: a device event is stored.
- ``Fleet``: simulated devices posting a profile's values on a clock (``Lab.simulate`` runs one).
- ``HubConfig``: settings of the MQTT hub (``Lab(hub_config=...)``).
- ``InvalidArgument``: a caller passed a bad value (also a ``ValueError``).
- ``IotHubConfig``: settings of the EnOS IoT hub services (``Lab(iothub_config=...)``).
- ``Lab``: the laboratory; hub, registry, store and services behind a synchronous facade.
- ``LimitExceeded``: a bound on what the hub keeps was reached.
- ``Link``: a fault-injecting TCP proxy between MQTT clients and the hub (drop, delay, ...).
- ``LoginRefused``: the hub refused a device's CONNECT (``code``: the return code).
- ``ModelError``: a thing model is invalid or cannot be used.
- ``NotConnected``: a device client has no connection to the hub (yet, or any more).
- ``NotFound``: an id that does not exist (also a ``KeyError``).
- ``OtaError``: a firmware upgrade that cannot be done as asked (``DigestMismatch``: a
  firmware file whose digest is not the one given).
- ``OtaReported``: tap event: a device reported its firmware version or upgrade progress.
- ``OtaStateChanged``: tap event: a device's firmware upgrade changed state.
- ``PointStored``: tap event: a measurepoint value is stored.
- ``PresenceChanged``: tap event: a device went online or offline, and why.
- ``ProtocolError``: a fault in an MQTT conversation.
- ``RegistryError``: a fault in the device registry.
- ``Reply``: a device's reply to a command (``Lab.send_command``), or the hub's to a request.
- ``RequestFailed``: the hub answered a device's request with a code other than 200.
- ``RequestRefused``: tap event: the hub answered a device's request with an error code.
- ``RequestTimeout``: no reply to a device's request in time (also a ``TimeoutError``).
- ``RuleError``: a rule, alert or stream definition is invalid or failed.
- ``SecretsError``: the lab key or a sealed secret cannot be used (wrong key file, altered value).
- ``SimulatedClock``: a clock that moves only when told to (deterministic runs).
- ``StoreConfig``: settings of the time-series store (``Lab(store_config=...)``).
- ``StoreError``: a fault in the time-series store.
- ``SystemClock``: the real clock (the default).
- ``TagsChanged``: tap event: a device's tags changed.
- ``TopicKind``: every EnOS topic; the command kinds of ``Lab.send_command`` among them.
- ``ValidationError``: a value does not fit its thing model.
- ``__version__``: the installed version.
- ``datasets``: the tutorials' datasets (``datasets.load(name)``).
- ``profile_for``: the profile of a library thing model (what a simulated device measures).
- ``errors``: the exception tree, every class.

The subpackages (``enos_lab.hub``, ``.iothub``, ``.registry``, ``.store``, ``.model``,
``.mqtt``, ``.enos``, ``.tap``, ``.device``, ``.sim``, ``.edge``, ``.scenarios``, ``.ca``,
``.vault``, ``.alerts``, ``.streams``, ``.rules`` and ``.monitor``) hold the rest.
"""

from __future__ import annotations

from . import datasets, errors
from .alerts import AlertRule
from .clock import Clock, SimulatedClock, SystemClock
from .device import Backoff, ConnectionMode, Device, DeviceClient
from .enos import Reply, TopicKind
from .errors import (
    AlreadyExists,
    AuthenticationError,
    ClosedError,
    CommandError,
    CommandExpired,
    CommandFailed,
    DeviceError,
    DeviceOffline,
    EnosLabError,
    InvalidArgument,
    LimitExceeded,
    LoginRefused,
    ModelError,
    NotConnected,
    NotFound,
    OtaError,
    ProtocolError,
    RegistryError,
    RequestFailed,
    RequestTimeout,
    RuleError,
    SecretsError,
    StoreError,
    ValidationError,
)
from .hub import HubConfig
from .iothub import IotHubConfig
from .lab import Lab
from .sim import Fleet, Link, profile_for
from .store import StoreConfig
from .tap import (
    AlertChanged,
    AttributesChanged,
    CommandReplied,
    CommandSent,
    DeviceActivated,
    DeviceLoggedIn,
    EventPosted,
    OtaReported,
    OtaStateChanged,
    PointStored,
    PresenceChanged,
    RequestRefused,
    TagsChanged,
)

__version__ = "0.1.0"

__all__ = [
    "AlertChanged",
    "AlertRule",
    "AlreadyExists",
    "AttributesChanged",
    "AuthenticationError",
    "Backoff",
    "Clock",
    "ClosedError",
    "CommandError",
    "CommandExpired",
    "CommandFailed",
    "CommandReplied",
    "CommandSent",
    "ConnectionMode",
    "Device",
    "DeviceActivated",
    "DeviceClient",
    "DeviceError",
    "DeviceLoggedIn",
    "DeviceOffline",
    "EnosLabError",
    "EventPosted",
    "Fleet",
    "HubConfig",
    "InvalidArgument",
    "IotHubConfig",
    "Lab",
    "LimitExceeded",
    "Link",
    "LoginRefused",
    "ModelError",
    "NotConnected",
    "NotFound",
    "OtaError",
    "OtaReported",
    "OtaStateChanged",
    "PointStored",
    "PresenceChanged",
    "ProtocolError",
    "RegistryError",
    "Reply",
    "RequestFailed",
    "RequestRefused",
    "RequestTimeout",
    "RuleError",
    "SecretsError",
    "SimulatedClock",
    "StoreConfig",
    "StoreError",
    "SystemClock",
    "TagsChanged",
    "TopicKind",
    "ValidationError",
    "__version__",
    "datasets",
    "errors",
    "profile_for",
]

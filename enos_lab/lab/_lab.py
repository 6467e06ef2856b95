"""The :class:`Lab` facade, composed of its core and its parts."""

from __future__ import annotations

from ._alerts import Alerts
from ._apps import Subscriptions
from ._certificates import Certificates
from ._config import Configuration
from ._control import Control
from ._edges import Edges
from ._monitor import Monitoring
from ._operations import Operations
from ._ota import Ota
from ._provisioning import Provisioning
from ._rules import Rules
from ._simulation import Simulation
from ._streams import Streams

__all__ = ["Lab"]


class Lab(
    Provisioning,
    Operations,
    Control,
    Configuration,
    Ota,
    Monitoring,
    Subscriptions,
    Edges,
    Simulation,
    Certificates,
    Alerts,
    Streams,
    Rules,
):
    """A running laboratory: the hub on a background event loop, with a synchronous facade.

    Parameters
    ----------
    data_dir:
        Directory for everything the lab keeps (registry, thing models, time series); ``None``
        uses a temporary directory that :meth:`stop` removes.
    host:
        Address the MQTT listener binds. Loopback by default.
    port:
        TCP port of the plain MQTT listener; ``0`` picks a free one (read it back from
        :attr:`port`); ``None`` switches plain TCP off (then a ``tls_port`` is needed).
        Defaults to the conventional EnOS port 11883.
    tls_port:
        TCP port of the MQTT listener over TLS (``DEFAULT_TLS_PORT``, EnOS's 18883, or ``0``
        for a free one: read it back from :attr:`tls_port`); ``None`` (the default): no TLS
        listener. Its server certificate comes from the lab's CA (:attr:`ca`, created in the
        data directory on first use); devices verify it with :meth:`ca_certificate` or
        :meth:`tls_context`, and may present a device certificate the lab issued
        (:meth:`apply_certificate`) for mutual TLS, which products created with
        ``certificate_required=True`` must. TLS 1.2 and 1.3 only.
    tls_hosts:
        Host names or addresses the server certificate names besides localhost, 127.0.0.1,
        ::1 and ``host`` (those devices on other machines use to reach the lab).
    anonymous:
        ``True`` turns the hub into a plain MQTT broker that accepts every client without
        authentication and has no IoT hub services (the registry is still available). Insecure:
        for generic MQTT tooling and conformance tests only.
    hub_config:
        Advanced hub settings; ``anonymous`` above overrides its ``anonymous`` field. Default:
        :class:`~enos_lab.hub.HubConfig` without CONNACK delay (``DEFAULT_CONNACK_DELAY``); the
        IoT hub services delay the CONNACK of Python-SDK-shaped logins only (see
        ``IotHubConfig.python_sdk_connack_delay``).
    clock:
        Time source of the registry, the store and the IoT hub services (default: the system
        clock); a :class:`~enos_lab.clock.SimulatedClock` makes runs deterministic.
    rng:
        Random source for generated keys and secrets (default: the OS's secure source);
        ``random.Random(seed)`` makes tutorials reproducible. Never use a seeded source for
        real credentials.
    iothub_config:
        Settings of the IoT hub services (activation timing, limits, command timeout).
    store_config:
        Settings of the time-series store (default :class:`~enos_lab.store.StoreConfig`):
        among them DuckDB's memory limit (default 256 MiB, so that the lab's memory stays
        bounded however much data it stores), its threads and the group commit.
    key_file:
        The lab key file (default: ``lab.key`` in the data directory), created 0600 when
        missing: a 256-bit key that seals the device and product secrets in the registry and
        encrypts the CA's keys (:mod:`enos_lab.vault`). Keep it elsewhere (another disk, a
        secrets mount) so that a copy of the data directory alone opens no secret; keep it
        safe: a lab whose key is lost cannot open its secrets. A key file readable by others,
        of the wrong length, or not the key the data was sealed under is refused
        (:class:`~enos_lab.errors.LabKeyError`, :class:`~enos_lab.errors.WrongLabKey`).

    Use it as a context manager (``with Lab(port=0) as lab: ...``) or call :meth:`start` and
    :meth:`stop`; from asyncio, ``async with Lab(port=0) as lab: ...``. Everything but the
    constructor needs a running lab (:class:`~enos_lab.errors.ClosedError` otherwise).
    """

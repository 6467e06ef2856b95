"""The composition root: a :class:`Lab` owns the event loop thread and everything on it.

Theory of operation
-------------------
The hub and every long-running service run on one asyncio event loop in a background thread that
the lab starts and stops (:class:`~enos_lab._loop.LoopThread`). Notebook cells and scripts call
the synchronous, thread-safe facade
(``lab.start()``, ``lab.register_device(...)``, ``lab.stop()``); calls that touch the hub or the
IoT hub services schedule a coroutine on the lab's loop with
:func:`asyncio.run_coroutine_threadsafe` and wait for its result, while registry calls (SQLite,
thread-safe) run in the caller's thread. asyncio users get every operation as an ``a``-prefixed
coroutine (``await lab.astart()``, ``await lab.aregister_device(...)``) that waits without blocking
their own loop. Nothing here ever calls :func:`asyncio.run` inside a running loop, so the official
EnOS SDK (which blocks in ``connect()`` until CONNACK) works from a notebook cell.

What :meth:`Lab.start` builds, in the data directory (:class:`~enos_lab._services.Services`
starts them in order, and :meth:`Lab.stop` stops them in the reverse order, each part ending
its own work):

- the lab key (``lab.key``, or the file ``key_file`` names; :mod:`enos_lab.vault`), loaded
  or created first: the registry's secrets are sealed under it and the CA's keys encrypted
  with a passphrase derived from it;
- the device registry (``registry.sqlite3``): products, devices, credentials (sealed), presence
  log and the user's thing models;
- the thing model catalog: the shipped library (:func:`enos_lab.model.load_library`) plus the
  user's models kept in the registry, so a restart keeps them;
- the time-series store (DuckDB);
- unless ``anonymous``: the EnOS IoT hub services (:class:`~enos_lab.iothub.IotHub`:
  authentication, access control, measurepoints into the store, commands), plugged into the MQTT
  hub as its authenticator and authoriser. ``anonymous=True`` makes a plain MQTT broker; the
  registry is still there to be filled.

The lab owns one device-data tap (:attr:`Lab.tap`, made with the lab and kept across restarts):
the IoT hub services report to it what they kept, and :meth:`Lab.subscribe` reads it from any
thread or event loop.

``Lab(data_dir=...)`` keeps everything in that directory; without one a temporary directory is
created by :meth:`Lab.start` and removed by :meth:`Lab.stop`.

The facade is split by concern: ``_core`` (lifecycle, properties, the tap, running coroutines
on the loop), ``_provisioning`` (models, products, devices, credentials), ``_operations``
(presence, logins, commands, raw publishes), ``_control`` (service invocation and measurepoint
set/get checked against the thing model, raw down, the command records), ``_config``
(attributes and tags set from the cloud, one device or many, pushed to online devices, and
the history of every change in ``config.sqlite3``), ``_ota`` (firmware upgrade: the
firmware registry and its HTTP server, campaigns, one-device upgrades, kept in
``ota.sqlite3``), ``_edges`` (edges registered by serial number,
revoked, listed), ``_simulation`` (simulated fleets: :meth:`Lab.simulate` and the
:class:`LabFleet` it returns, stopped before the lab stops) and ``_certificates`` (the lab's
certificate authority in the data directory's ``ca/``: device certificates applied for,
revoked and listed, the CA certificate and the CRL), ``_alerts`` (alert rules kept in
``alert_rules.json`` and evaluated by the alert engine on the tap, alert records in
``alerts.sqlite3``: searched, acknowledged, shelved, closed, created and explained),
``_streams`` (stream computing: streams defined, listed, removed and counted, kept in
``streams.json``), ``_monitor`` (fleet monitoring: per-device presence, traffic, errors
and latest values, counted from the first monitoring call on), ``_apps`` (event callbacks,
the recent event view, applications reading device data over MQTT) and ``_rules`` (the rule
engine's rule set, kept in ``rules.json``: changed, loaded, saved, dry-run, counted);
:class:`Lab` composes them.
"""

from .._services import REGISTRY_FILE
from ._alerts import ALERT_RULE_COLUMNS
from ._apps import APPLICATION_COLUMNS, EVENT_COLUMNS
from ._certificates import CERTIFICATE_COLUMNS
from ._config import CONFIG_BULK_COLUMNS
from ._core import CA_DIR, CA_PASSPHRASE_PURPOSE, DEFAULT_PORT, DEFAULT_TLS_PORT, plain_tcp_warning
from ._edges import EDGE_COLUMNS, EDGE_MODEL_ID, EDGE_PRODUCT_KEY
from ._lab import Lab
from ._monitor import FLEET_COLUMNS, FLEET_SUMMARY_COLUMNS
from ._rules import RULE_COLUMNS, RULE_STATS_COLUMNS
from ._simulation import LabFleet
from ._streams import STREAM_COLUMNS, STREAM_STATS_COLUMNS

__all__ = [
    "ALERT_RULE_COLUMNS",
    "APPLICATION_COLUMNS",
    "CA_DIR",
    "CA_PASSPHRASE_PURPOSE",
    "CERTIFICATE_COLUMNS",
    "CONFIG_BULK_COLUMNS",
    "DEFAULT_PORT",
    "DEFAULT_TLS_PORT",
    "EDGE_COLUMNS",
    "EDGE_MODEL_ID",
    "EDGE_PRODUCT_KEY",
    "EVENT_COLUMNS",
    "FLEET_COLUMNS",
    "FLEET_SUMMARY_COLUMNS",
    "REGISTRY_FILE",
    "RULE_COLUMNS",
    "RULE_STATS_COLUMNS",
    "STREAM_COLUMNS",
    "STREAM_STATS_COLUMNS",
    "Lab",
    "LabFleet",
    "plain_tcp_warning",
]

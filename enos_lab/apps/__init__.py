"""Applications: credentials that read device data over MQTT, and never write it.

An application registered in the lab (:class:`ApplicationStore`, ``applications.sqlite3`` in
the data directory; the secret kept as a salted digest only) logs in to the lab's MQTT
listeners (TCP or TLS) with the user name ``%app%&{access_key}`` and its access secret as the
password: a form no device can have (a device's user name is ``{deviceKey}&{productKey}``,
and a key never holds ``%``; the integration channel's is ``%channel%&{productKey}``). It may
subscribe to the device topics its grants name (:class:`Grant`: a product, optionally some of
its devices, kinds of uplink data), ``+`` wildcards allowed inside them, and receives what the
devices publish there; it may never publish (see :mod:`enos_lab.iothub`). See
:mod:`enos_lab.apps._grants` for what a grant covers.
"""

from __future__ import annotations

from ._grants import (
    APP_KINDS,
    DEFAULT_APP_KINDS,
    Grant,
    filter_within,
    grant_patterns,
    topic_granted,
)
from ._store import APPLICATIONS_FILE, Application, ApplicationStore

__all__ = [
    "APPLICATIONS_FILE",
    "APP_KINDS",
    "DEFAULT_APP_KINDS",
    "Application",
    "ApplicationStore",
    "Grant",
    "filter_within",
    "grant_patterns",
    "topic_granted",
]

"""The one wrapper of the official EnOS Python device SDK for tests (integration tests, the lab's
facade tests): every test that drives the hub with the SDK goes through it.

The SDK (``enos-mqtt-sdk-python``, import package ``enos``) is used exactly as a device engineer
uses it: a :class:`~enos.core.internal.Profile.Profile` with the device triplet (or the product
secret for dynamic activation), :class:`~enos.core.MqttClient.MqttClient`, ``connect()``, request
builders and ``publish()``. Three things the SDK does not offer are supplied here:

``SdkLog``
    The SDK reports a refused CONNACK and a lost connection only through its logger
    (``bad connection, error code: N`` / ``bad disconnection, error code: N``), never through
    an exception or a callback. ``SdkLog`` turns those records into events a test can await.
``HubWatch``
    The hub's view: a lifecycle listener on the lab's hub that records ``ClientConnected`` /
    ``ClientDisconnected`` per device (from the identity the authenticator attached) and lets a
    test wait for them.
``SdkDevice.close``
    ``MqttClient.close()`` stops the network thread only while the client is connected; after a
    refusal or a kick paho's reconnect loop would keep running. ``close`` stops it as well and
    checks that none of the SDK's threads outlive the client.

Every wait is bounded; nothing polls with ``sleep``.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from enos.core.internal.Profile import Profile
from enos.core.message.IConnectCallback import IConnectCallback
from enos.core.MqttClient import MqttClient

from enos_lab.errors import NotFound
from enos_lab.hub import ClientConnected, ClientDisconnected, Hub, HubEvent
from enos_lab.lab import Lab
from enos_lab.registry import Product

SDK_WARNINGS = pytest.mark.filterwarnings(
    # paho-mqtt >= 2.1 warns when a client is built with the version 1 callback API, which
    # is what enos-mqtt-sdk-python 0.1.1 does (protocol section 15.1).
    "ignore:Callback API version 1 is deprecated, update to latest version:DeprecationWarning"
)
"""Mark for every test that builds an SDK client: ignore exactly paho's VERSION1 warning."""

WAIT = 5.0  # [s] upper bound of every wait for something the hub or the SDK does
OPERATION_TIMEOUT = 5.0  # [s] the SDK's wait for a reply (its default is 30 s)
SDK_LOGGER = "enos.core.internal.MqttConnection"

# A small thing model in the EnOS REST JSON form (protocol section 12.2 a).
SDK_MODEL: dict[str, Any] = {
    "modelId": "sdk_meter",
    "name": {"defaultValue": "SDK test meter", "i18nValue": {"en_US": "SDK test meter"}},
    "desc": {"defaultValue": "Model used by the SDK integration tests."},
    "category": "Test",
    "attributes": {
        "rated_power": {
            "identifier": "rated_power",
            "name": {"defaultValue": "Rated power"},
            "dataType": "DOUBLE",
            "dataDefinition": None,
            "isRequired": False,
            "defaultValue": None,
            "unit": {"unitId": "kW", "multiplier": "ONE"},
        },
        "site": {
            "identifier": "site",
            "name": {"defaultValue": "Site"},
            "dataType": "STRING",
            "dataDefinition": None,
            "isRequired": False,
            "defaultValue": None,
            "unit": None,
        },
    },
    "measurepoints": {
        "temp": {
            "identifier": "temp",
            "name": {"defaultValue": "Temperature"},
            "dataType": "DOUBLE",
            "dataDefinition": None,
            "hasQuality": False,
            "signalType": "AI",
            "unit": {"unitId": "Cel", "multiplier": "ONE"},
        },
        "power": {
            "identifier": "power",
            "name": {"defaultValue": "Active power"},
            "dataType": "DOUBLE",
            "dataDefinition": None,
            "hasQuality": True,
            "signalType": "AI",
            "unit": {"unitId": "kW", "multiplier": "ONE"},
        },
        "state": {
            "identifier": "state",
            "name": {"defaultValue": "State"},
            "dataType": "INT",
            "dataDefinition": None,
            "hasQuality": False,
            "signalType": "DI",
            "unit": None,
        },
    },
    "services": {},
    "events": {
        "overheat": {
            "identifier": "overheat",
            "name": {"defaultValue": "Overheat"},
            "eventType": "WARN",
            "outputData": [
                {
                    "identifier": "temp",
                    "name": {"defaultValue": "Temperature"},
                    "dataType": "DOUBLE",
                    "dataDefinition": None,
                    "unit": None,
                    "required": True,
                }
            ],
        }
    },
    "allowAdditionalMeasurepoint": False,
    "allowAdditionalAttribute": False,
}


# --- the lab --------------------------------------------------------------------------------


@contextlib.contextmanager
def running_lab(data_dir: Path, seed: int, **lab_kwargs: Any) -> Iterator[Lab]:
    """A started lab on 127.0.0.1 (free port) with seeded keys; stopped afterwards.
    ``lab_kwargs`` go to :class:`Lab` (``store_config=...``, ``iothub_config=...``).

    On a clean exit it also checks that every thread started inside the block (the SDK's
    network and executor threads, the lab's loop) has ended, so nothing leaks into the next
    test.
    """
    before = set(threading.enumerate())
    lab = Lab(data_dir, port=0, rng=random.Random(seed), **lab_kwargs)
    lab.start()
    try:
        yield lab
    finally:
        lab.stop()
    leaked = [t for t in threading.enumerate() if t not in before]
    for thread in leaked:
        thread.join(2.0)
    names = sorted(t.name for t in leaked if t.is_alive())
    assert not names, f"threads still running after the test: {names}"


def sdk_product(lab: Lab, name: str = "SDK meter", **kwargs: Any) -> Product:
    """Add the test model (once) and create a product that uses it."""
    try:
        lab.models.get(SDK_MODEL["modelId"])
    except NotFound:
        lab.add_model(SDK_MODEL)
    return lab.create_product(name, model_id=SDK_MODEL["modelId"], **kwargs)


def last_presence(lab: Lab, product_key: str, device_key: str) -> pd.Series:
    """The newest presence row of a device (columns time, online, reason ...)."""
    frame = lab.presence(product_key, device_key)
    assert len(frame), f"no presence rows for {product_key}/{device_key}"
    return frame.iloc[-1]


def stored_devices(lab: Lab) -> set[tuple[str, str]]:
    """(product_key, device_key) of every device that has measurepoints in the store."""
    frame = lab.store.devices()
    if frame.empty:
        return set()
    return set(zip(frame["product_key"], frame["device_key"], strict=True))


# --- the SDK's log --------------------------------------------------------------------------

_BAD_CONNECTION = re.compile(r"bad connection, error code: (\d+)")
_BAD_DISCONNECTION = re.compile(r"bad disconnection, error code: (\d+)")
_CONNECT_TIMEOUT = re.compile(r"connect timeout")
_CONNECT_SUCCESS = re.compile(r"connect success")


class SdkLog(logging.Handler):
    """Refusals, lost connections and connect stalls as the SDK logs them (see module doc)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._cond = threading.Condition()
        self.refusals: list[int] = []  # CONNACK return codes of refused connects
        self.drops: list[int] = []  # paho error codes of lost connections
        self.connect_timeouts = 0  # "connect timeout": connect() waited its full 10 s
        self.connects = 0  # accepted CONNACKs (first connect and automatic reconnects)

    def emit(self, record: logging.LogRecord) -> None:
        """Record the SDK's connection-state messages; ignore everything else."""
        text = record.getMessage()
        with self._cond:
            if match := _BAD_CONNECTION.search(text):
                self.refusals.append(int(match[1]))
            elif match := _BAD_DISCONNECTION.search(text):
                self.drops.append(int(match[1]))
            elif _CONNECT_TIMEOUT.search(text):
                self.connect_timeouts += 1
            elif _CONNECT_SUCCESS.search(text):
                self.connects += 1
            else:
                return
            self._cond.notify_all()

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float) -> None:
        with self._cond:
            if not self._cond.wait_for(ready, timeout):
                raise AssertionError(f"the SDK did not log {what} within {timeout} s")

    def wait_refusals(self, count: int = 1, timeout: float = WAIT) -> list[int]:
        """Wait until ``count`` refused CONNACKs were logged; returns their return codes."""
        self._wait(lambda: len(self.refusals) >= count, f"{count} refused connect(s)", timeout)
        return list(self.refusals)

    def wait_connects(self, count: int = 1, timeout: float = WAIT) -> None:
        """Wait until ``count`` accepted CONNACKs were logged."""
        self._wait(lambda: self.connects >= count, f"{count} accepted connect(s)", timeout)

    def wait_drops(self, count: int = 1, timeout: float = WAIT) -> list[int]:
        """Wait until ``count`` lost connections were logged; returns paho's error codes."""
        self._wait(lambda: len(self.drops) >= count, f"{count} lost connection(s)", timeout)
        return list(self.drops)


@contextlib.contextmanager
def sdk_log() -> Iterator[SdkLog]:
    """Capture the SDK connection's log records for the duration of the block."""
    logger = logging.getLogger(SDK_LOGGER)
    handler = SdkLog()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# --- the hub's view -------------------------------------------------------------------------


class HubWatch:
    """Lifecycle events of the lab's hub, per device identity, for the test to await."""

    def __init__(self, lab: Lab) -> None:
        self._cond = threading.Condition()
        self.events: list[tuple[tuple[str, str], HubEvent]] = []
        lab.run(self._attach(lab.hub))

    async def _attach(self, hub: Hub) -> None:
        hub.add_listener(self._on_event)

    def _on_event(self, event: HubEvent) -> None:
        attrs = event.client.attributes
        key = (str(attrs.get("product_key", "")), str(attrs.get("device_key", "")))
        with self._cond:
            self.events.append((key, event))
            self._cond.notify_all()

    def of(self, product_key: str, device_key: str) -> list[HubEvent]:
        """Every event recorded for one device so far."""
        with self._cond:
            return [e for k, e in self.events if k == (product_key, device_key)]

    def _wait(self, kind: type, product_key: str, device_key: str, count: int) -> Any:
        def ready() -> bool:
            return (
                len([e for e in self.of(product_key, device_key) if isinstance(e, kind)]) >= count
            )

        with self._cond:
            if not self._cond.wait_for(ready, WAIT):
                raise AssertionError(
                    f"the hub reported no {kind.__name__} #{count} for {product_key}/{device_key}"
                    f" within {WAIT} s; events: {self.of(product_key, device_key)}"
                )
        return [e for e in self.of(product_key, device_key) if isinstance(e, kind)][count - 1]

    def wait_connected(self, product_key: str, device_key: str, count: int = 1) -> ClientConnected:
        """The ``count``-th ClientConnected of this device (waits for it)."""
        event: ClientConnected = self._wait(ClientConnected, product_key, device_key, count)
        return event

    def wait_disconnected(
        self, product_key: str, device_key: str, count: int = 1
    ) -> ClientDisconnected:
        """The ``count``-th ClientDisconnected of this device (waits for it)."""
        event: ClientDisconnected = self._wait(ClientDisconnected, product_key, device_key, count)
        return event


# --- the SDK client -------------------------------------------------------------------------


class SdkDevice:
    """One official SDK client pointed at the lab (``tcp://127.0.0.1:<port>``; ``port``
    overrides the lab's, e.g. a fault-injecting link in front of it). With ``tls`` (the CA
    file, and the device's certificate chain and key files or ``None``) it connects to the
    lab's TLS listener (``ssl://127.0.0.1:<tls port>``) as the SDK's ``secure_login`` sample
    does: ``Profile.set_ssl_context(ca, certificate, key)``."""

    def __init__(
        self,
        lab: Lab,
        product_key: str,
        device_key: str,
        *,
        device_secret: str | None = None,
        product_secret: str | None = None,
        port: int | None = None,
        operation_timeout: float = OPERATION_TIMEOUT,
        tls: tuple[Path, Path | None, Path | None] | None = None,
    ) -> None:
        if tls is None:
            self.url = f"tcp://127.0.0.1:{port or lab.port}"
        else:
            self.url = f"ssl://127.0.0.1:{port or lab.tls_port}"
        profile = Profile(self.url, product_key, device_key, device_secret, product_secret)
        if tls is not None:
            ca_file, cert_file, key_file = tls
            profile.set_ssl_context(
                str(ca_file),
                None if cert_file is None else str(cert_file),
                None if key_file is None else str(key_file),
            )
        profile.set_operation_timeout(operation_timeout)
        self.client = MqttClient(profile=profile)
        self.activated = threading.Event()
        self.issued_secret: str | None = None
        self.client.on_device_dynamic_active = self._on_activated

    def _on_activated(self, device_secret: str) -> None:
        self.issued_secret = device_secret
        self.activated.set()

    def connect(self) -> None:
        """Synchronous connect, as in the SDK's samples (returns after CONNACK)."""
        self.client.connect()

    def connect_async(self) -> None:
        """Asynchronous connect (the SDK's ``connect(callback)``); returns at once."""
        callback = IConnectCallback()
        callback.on_connect = lambda: None  # type: ignore[method-assign]
        callback.on_disconnect = lambda: None  # type: ignore[method-assign]
        callback.on_connect_failed = lambda: None  # type: ignore[method-assign]
        self.client.connect(callback)

    def publish(self, request: Any) -> Any:
        """Publish a request and return the SDK's decoded response (waits for it)."""
        return self.client.publish(request)

    def _paho(self) -> Any:
        connection = self.client._MqttClient__connection  # type: ignore[attr-defined]
        return connection._MqttConnection__paho_client

    def close(self) -> None:
        """Close the client and stop paho's network thread, whatever state it is in.

        ``client.close()`` disconnects and stops the thread only while paho is connected; a
        refused or kicked client would keep reconnecting (and a reconnect landing after
        ``close()`` crashes in the SDK's callback). So a client that is not connected first
        gets paho's ``disconnect()`` (which ends its reconnect loop) and ``loop_stop()``.
        """
        paho = self._paho()
        thread = getattr(paho, "_thread", None)
        if paho is not None and not paho.is_connected():
            paho.disconnect()
            paho.loop_stop()
        self.client.close()
        if paho is not None:
            paho.loop_stop()
        if thread is not None:
            thread.join(2.0)
            assert not thread.is_alive(), f"paho thread {thread.name} did not stop"


@contextlib.contextmanager
def sdk_device(
    lab: Lab,
    product_key: str,
    device_key: str,
    *,
    device_secret: str | None = None,
    product_secret: str | None = None,
    port: int | None = None,
    operation_timeout: float = OPERATION_TIMEOUT,
    tls: tuple[Path, Path | None, Path | None] | None = None,
) -> Iterator[SdkDevice]:
    """An SDK client that is always closed (and its threads stopped) at the end of the block
    (``port``, ``operation_timeout`` and ``tls`` as for :class:`SdkDevice`)."""
    device = SdkDevice(
        lab,
        product_key,
        device_key,
        device_secret=device_secret,
        product_secret=product_secret,
        port=port,
        operation_timeout=operation_timeout,
        tls=tls,
    )
    try:
        yield device
    finally:
        device.close()


@contextlib.contextmanager
def connected_meter(
    tmp_path: Path, seed: int, device_key: str = "meter", **lab_kwargs: Any
) -> Iterator[tuple[Lab, str, SdkDevice]]:
    """A lab (``lab_kwargs`` as for :func:`running_lab`) with one registered device of the SDK
    test model, connected through the SDK; yields the lab, the product key and the device."""
    with running_lab(tmp_path / "lab", seed=seed, **lab_kwargs) as lab:
        product = sdk_product(lab)
        device = lab.register_device(product.product_key, device_key=device_key)
        with sdk_device(
            lab, product.product_key, device_key, device_secret=device.device_secret
        ) as sdk:
            sdk.connect()
            assert sdk.client.is_connected()
            yield lab, product.product_key, sdk

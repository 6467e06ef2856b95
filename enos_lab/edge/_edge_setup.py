"""Setting up an edge's sub-devices in the cloud, as EnOS Edge does (protocol reference 8),
and where each field device stands (:class:`Entry`, :func:`status_frame`).

For the field devices it is given, the edge (a gateway) registers those it has no secret for
(``thing.device.register``; the hub issues the secret), attaches those not in its topology
(``thing.topo.add``, each proven by its own secret), logs them in with one batch login per 200
(``combine.login.batch``), and checks, once per product, that the thing model a field device's
point table feeds is the model of its sub-device's product (``thing.tsltemplate.get``).

Each step refuses devices one by one: a batch the hub refuses is sent again per device, so
that a refusal (702 the key exists, 1255 attached to another gateway, 742 a secret that stopped
working, ...) is counted on its device only, with the hub's code, and the others go on. A lost
connection ends the setup early (:class:`LinkLost`); the devices not done keep their state and
the edge tries again once it is back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..device import DeviceClient, SubDeviceCredentials, SubDeviceSpec
from ..errors import ClosedError, NotConnected, RequestFailed, RequestTimeout
from ._edge_config import EdgeDevice
from ._edge_stats import EdgeErrorKind, SubDeviceState, SubDeviceStats
from ._poller import DeviceStats, PollErrorKind

__all__ = ["LOGIN_BATCH", "STATUS_COLUMNS", "Entry", "LinkLost", "Setup", "status_frame"]

LOGIN_BATCH = 200
"""Sub-devices per batch login (EnOS lets a gateway have 200 online)."""

LinkLost = (NotConnected, RequestTimeout, ClosedError)
"""What a request raises when the link to the hub fails: the setup stops there."""

Fail = Callable[["Entry", EdgeErrorKind, str, "int | None"], None]


@dataclass(slots=True)
class Entry:
    """One field device on an edge: its mapping, where it stands, its counters."""

    mapping: EdgeDevice
    state: SubDeviceState = SubDeviceState.PENDING
    secret: str | None = None
    stats: SubDeviceStats = field(default_factory=SubDeviceStats)
    polls: DeviceStats = field(default_factory=DeviceStats)
    """Poll counters of the pollers that are gone (the current poller adds its own)."""
    last_error: object = None
    busy: bool = False  # being set up now
    leaving: bool = False  # being taken off the edge: no longer polled
    warned: set[EdgeErrorKind] = field(default_factory=set)

    @property
    def name(self) -> str:
        """The field device's name."""
        return self.mapping.name

    @property
    def keys(self) -> tuple[str, str]:
        """The sub-device's keys."""
        return self.mapping.keys

    def credentials(self) -> SubDeviceCredentials:
        """Its keys and secret (only once it has a secret)."""
        assert self.secret is not None
        return SubDeviceCredentials(self.mapping.product_key, self.mapping.device_key, self.secret)


STATUS_COLUMNS = (
    "device",
    "product_key",
    "device_key",
    "state",
    "polls",
    "samples",
    "timeouts",
    "exceptions",
    "connection_errors",
    "decode_errors",
    "uploaded",
    "resumed",
    "cached",
    "lost",
    "dropped",
    "rejected",
    "login_failures",
    "last_error",
)
"""Columns of :meth:`Edge.status`: the field device's name, its sub-device's keys, its
:class:`~enos_lab.edge.SubDeviceState` (value), poll counters (polls begun, samples, errors by
kind), sample counters (:class:`~enos_lab.edge.SubDeviceStats`) and the message of its last
error (``None`` if none)."""


def status_frame(entries: Iterable[tuple[Entry, DeviceStats]]) -> pd.DataFrame:
    """The status rows (:data:`STATUS_COLUMNS`) of field devices and their poll counters."""
    rows: list[dict[str, Any]] = []
    for entry, polls in entries:
        stats = entry.stats
        rows.append(
            {
                "device": entry.name,
                "product_key": entry.keys[0],
                "device_key": entry.keys[1],
                "state": entry.state.value,
                "polls": polls.polls,
                "samples": polls.samples,
                "timeouts": polls.errors[PollErrorKind.TIMEOUT],
                "exceptions": polls.errors[PollErrorKind.EXCEPTION],
                "connection_errors": polls.errors[PollErrorKind.CONNECTION],
                "decode_errors": polls.errors[PollErrorKind.DECODE],
                "uploaded": stats.uploaded,
                "resumed": stats.resumed,
                "cached": stats.cached,
                "lost": stats.lost,
                "dropped": stats.dropped,
                "rejected": stats.rejected,
                "login_failures": stats.login_failures,
                "last_error": getattr(entry.last_error, "message", None),
            }
        )
    return pd.DataFrame(rows, columns=list(STATUS_COLUMNS))


class Setup:
    """The setup steps of one edge (see the module docstring): ``client`` is the edge's
    gateway, ``timeout`` each request's [s], ``fail`` records a refusal on its device."""

    def __init__(self, client: DeviceClient, timeout: float, fail: Fail) -> None:
        self._client = client
        self._timeout = timeout
        self._fail = fail
        self._models: dict[str, str | None] = {}  # product key -> its model id (None: none)

    async def run(self, entries: Sequence[Entry]) -> list[Entry]:
        """Set ``entries`` up; returns those logged in (now ONLINE). Raises one of
        :data:`LinkLost` when the connection fails on the way."""
        await self._register([e for e in entries if e.secret is None])
        ready = [e for e in entries if e.secret is not None]
        ready = await self._attach(ready)
        logged = await self._login(ready)
        return await self._check_models(logged)

    # -- registration (8.1) --------------------------------------------------------------------

    async def _register(self, entries: list[Entry]) -> None:
        if not entries:
            return
        specs = [
            SubDeviceSpec(
                e.mapping.product_key,
                e.mapping.display_name or e.name,
                device_key=e.mapping.device_key,
                timezone=e.mapping.timezone,
            )
            for e in entries
        ]
        try:
            issued = await self._client.register_sub_devices(specs, timeout=self._timeout)
        except RequestFailed as exc:
            if len(entries) == 1:
                self._failed(entries[0], EdgeErrorKind.REGISTRATION, "registering it", exc)
                return
            for entry in entries:
                await self._register([entry])
            return
        by_keys = {cred.keys: cred for cred in issued}
        for entry in entries:
            cred = by_keys.get(entry.keys)
            if cred is None or not cred.device_secret:
                entry.state = SubDeviceState.SETUP_FAILED
                self._fail(
                    entry,
                    EdgeErrorKind.REGISTRATION,
                    f"{entry.name}: the hub registered {entry.keys[0]}/{entry.keys[1]} without "
                    "issuing its secret",
                    None,
                )
            else:
                entry.secret = cred.device_secret

    # -- topology (8.2) ------------------------------------------------------------------------

    async def _attach(self, entries: list[Entry]) -> list[Entry]:
        if not entries:
            return []
        attached = set(await self._client.get_topology(timeout=self._timeout))
        missing = [e for e in entries if e.keys not in attached]
        added = await self._add_topology(missing)
        return [e for e in entries if e.keys in attached or id(e) in added]

    async def _add_topology(self, entries: list[Entry]) -> set[int]:
        if not entries:
            return set()
        try:
            await self._client.add_topology(
                [e.credentials() for e in entries], timeout=self._timeout
            )
        except RequestFailed as exc:
            if len(entries) == 1:
                self._failed(entries[0], EdgeErrorKind.TOPOLOGY, "attaching it", exc)
                return set()
            added: set[int] = set()
            for entry in entries:
                added |= await self._add_topology([entry])
            return added
        return {id(e) for e in entries}

    # -- login (8.3) ---------------------------------------------------------------------------

    async def _login(self, entries: list[Entry]) -> list[Entry]:
        logged: list[Entry] = []
        client = self._client
        for start in range(0, len(entries), LOGIN_BATCH):
            chunk = entries[start : start + LOGIN_BATCH]
            try:
                result = await client.login_sub_devices(
                    [e.credentials() for e in chunk], timeout=self._timeout
                )
                accepted = set(result.logged_in)
            except RequestFailed:
                accepted = set()
            for entry in chunk:
                if entry.keys in accepted:
                    logged.append(entry)
                    continue
                try:  # alone, for its own code
                    await client.login_sub_device(*entry.keys, entry.secret, timeout=self._timeout)
                except RequestFailed as exc:
                    entry.stats.login_failures += 1
                    self._failed(entry, EdgeErrorKind.LOGIN, "logging it in", exc)
                    entry.state = SubDeviceState.LOGIN_FAILED
                else:
                    logged.append(entry)
        for entry in logged:
            entry.state = SubDeviceState.ONLINE
            entry.warned.clear()
        return logged

    # -- the thing model (12) ------------------------------------------------------------------

    async def _check_models(self, entries: list[Entry]) -> list[Entry]:
        fitting: list[Entry] = []
        for entry in entries:
            product_key = entry.mapping.product_key
            if product_key not in self._models:
                self._models[product_key] = await self._model_of(entry)
            cloud = self._models[product_key]
            table = entry.mapping.field.table
            if cloud is None or cloud == table.model.model_id:
                fitting.append(entry)
                continue
            entry.state = SubDeviceState.MODEL_MISMATCH
            self._fail(
                entry,
                EdgeErrorKind.MODEL,
                f"{entry.name}: point table {table.source!r} feeds thing model "
                f"{table.model.model_id!r}, but product {product_key!r} of sub-device "
                f"{entry.keys[1]!r} has model {cloud!r}; the device is not polled",
                None,
            )
            # refused: it stays logged in, without data, until the edge reconnects
            with contextlib.suppress(RequestFailed):
                await self._client.logout_sub_device(*entry.keys, timeout=self._timeout)
        return fitting

    async def _model_of(self, entry: Entry) -> str | None:
        """The model id of the entry's product as the hub tells its (logged-in) sub-device."""
        try:
            template = await self._client.sub_device(*entry.keys).get_tsl_template(
                timeout=self._timeout
            )
        except RequestFailed:  # 1200: the product has no model (passthrough): anything fits
            return None
        model_id = template.get("tslModelId")
        return model_id if isinstance(model_id, str) and model_id else None

    def _failed(self, entry: Entry, kind: EdgeErrorKind, doing: str, exc: RequestFailed) -> None:
        if kind is not EdgeErrorKind.LOGIN:
            entry.state = SubDeviceState.SETUP_FAILED
        pk, dk = entry.keys
        self._fail(
            entry,
            kind,
            f"{entry.name}: {doing} as sub-device {pk}/{dk} failed with code {exc.code}"
            + (f": {exc.message}" if exc.message else ""),
            exc.code,
        )

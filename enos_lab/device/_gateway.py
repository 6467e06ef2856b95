"""Gateways and sub-devices (protocol reference 8): registration, topology, sub-device login.

A gateway's requests about itself carry its own keys (register, topology, ``combine.*`` login
and logout); what it sends for a logged-in sub-device carries the sub-device's keys in the
topic (6). :class:`Gateway` holds the operations of a gateway client; :class:`SubDevice` is
one sub-device, with the same posting methods and command handlers as a device, sent through
the gateway. The gateway remembers the secrets of the sub-devices it logged in and logs them in
again (one batch login per 200) after each reconnection, as the official SDKs do (2.7); a
sub-device logged out, or disabled or deleted in the cloud (``combine.disable`` /
``delete``), is forgotten.

Sub-device signatures (:func:`~enos_lab.enos.sub_device_proof`,
:func:`~enos_lab.enos.sign_params`) cover the client id, the keys and the timestamp, never the
secure mode or the clean-session flag (8.3).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from ..clock import Clock
from ..enos import (
    Reply,
    SecureMode,
    SignMethod,
    TopicKind,
    encode_request,
    sign,
    sign_params,
    sub_device_proof,
)
from ..errors import DeviceError, InvalidArgument, RequestFailed
from ._endpoint import Endpoint, event_time, point_values
from ._types import PointsEntry, SubDeviceCredentials, SubDeviceSpec

if TYPE_CHECKING:
    from ._client import DeviceClient

__all__ = ["RELOGIN_BATCH", "BatchLoginResult", "Gateway", "SubDevice"]

log = logging.getLogger("enos_lab.device")

RELOGIN_BATCH = 200
"""Sub-devices per batch login when a gateway logs them in again (EnOS lets a gateway have
200 online)."""
BATCH_CLIENT_ID = "login.batch"
"""The shared client id of a batch login's signatures (as the docs' example sends it)."""

Keys = tuple[str, str]
_BATCH_LOGIN: TopicKind = TopicKind.SUB_DEVICE_LOGIN_BATCH


class SubDevice(Endpoint):
    """A device behind a gateway: the posting methods and command handlers of a device, sent
    through the gateway's connection with the sub-device's keys (get it from
    :meth:`Gateway.sub_device` or :meth:`Gateway.login_sub_device`).

    ``device_secret`` is its secret when the gateway knows it (given, or issued by a dynamic
    activation through :meth:`Gateway.login_sub_device`). Commands addressed to it reach the
    handlers registered here.
    """

    def __init__(self, gateway: DeviceClient, product_key: str, device_key: str) -> None:
        super().__init__(product_key, device_key)
        self._gateway = gateway
        self.device_secret: str | None = None

    @property
    def gateway(self) -> DeviceClient:
        """The gateway client this sub-device speaks through."""
        return self._gateway

    @property
    def clock(self) -> Clock:
        """The gateway's clock."""
        return self._gateway.clock

    @property
    def logged_in(self) -> bool:
        """Whether the gateway logged it in (and will log it in again after a reconnect)."""
        return self.keys in self._gateway._logged_in

    async def logout(self, *, timeout: float | None = None) -> None:
        """Log this sub-device out of its gateway (``combine.logout``)."""
        await self._gateway.logout_sub_device(self.product_key, self.device_key, timeout=timeout)

    async def _send(
        self,
        kind: TopicKind,
        params: Any,
        *,
        item_id: str = "",
        extra: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Reply:
        return await self._gateway.request(
            kind,
            params,
            product_key=self.product_key,
            device_key=self.device_key,
            item_id=item_id,
            extra=extra,
            timeout=timeout,
        )

    async def _send_raw(self, payload: bytes, timeout: float | None) -> bytes:
        return await self._gateway._raw_request(self.product_key, self.device_key, payload, timeout)

    def __repr__(self) -> str:
        state = "logged in" if self.logged_in else "logged out"
        return (
            f"<SubDevice {self.product_key}/{self.device_key} via {self._gateway.device} {state}>"
        )


@dataclass(frozen=True, slots=True)
class BatchLoginResult:
    """The outcome of :meth:`Gateway.login_sub_devices`: the keys of the sub-devices logged in
    (their objects: :meth:`Gateway.sub_device`) and of those refused, and the hub's code (200
    when none was refused; otherwise the code of the first refusal, e.g. 723 disabled or 742
    sign check failed) and message."""

    logged_in: tuple[Keys, ...]
    failed: tuple[Keys, ...]
    code: int
    message: str = ""


class Gateway:
    """The gateway operations of a :class:`~enos_lab.device.DeviceClient` (see the module
    docstring)."""

    if TYPE_CHECKING:  # provided by DeviceClient
        product_key: str
        device_key: str
        sign_method: SignMethod

        @property
        def clock(self) -> Clock: ...

        @property
        def device(self) -> str: ...

        async def request(
            self,
            kind: TopicKind,
            params: Any,
            *,
            product_key: str | None = None,
            device_key: str | None = None,
            item_id: str = "",
            extra: Mapping[str, Any] | None = None,
            timeout: float | None = None,
        ) -> Reply: ...

        async def _ask(  # noqa: PLR0917
            self,
            kind: TopicKind,
            params: Any,
            product_key: str,
            device_key: str,
            item_id: str,
            extra: Mapping[str, Any] | None,
            timeout: float | None,
            check: bool = True,
        ) -> Reply: ...

        async def _exchange(
            self, topic: str, request_id: str, payload: bytes, timeout: float | None
        ) -> Reply: ...

        async def _raw_request(
            self, product_key: str, device_key: str, payload: bytes, timeout: float | None
        ) -> bytes: ...

        def _next_id(self) -> str: ...

    def __init__(self) -> None:
        self._sub_devices: dict[Keys, SubDevice] = {}
        self._logged_in: dict[Keys, str] = {}  # sub-device -> secret, in login order

    # -- sub-device objects ------------------------------------------------------------------------

    def sub_device(self, product_key: str, device_key: str) -> SubDevice:
        """The :class:`SubDevice` object of these keys (made on first use, then the same):
        register its command handlers here, post through it once logged in."""
        keys = (product_key, device_key)
        sub = self._sub_devices.get(keys)
        if sub is None:
            sub = SubDevice(self._client(), product_key, device_key)
            self._sub_devices[keys] = sub
        return sub

    @property
    def logged_in_sub_devices(self) -> list[Keys]:
        """The sub-devices this gateway logged in (and logs in again after a reconnect)."""
        return list(self._logged_in)

    def _client(self) -> DeviceClient:
        return cast("DeviceClient", self)  # Gateway is a part of DeviceClient only

    # -- registration and topology (8.1, 8.2) ------------------------------------------------------

    async def register_sub_devices(
        self, specs: Sequence[SubDeviceSpec], *, timeout: float | None = None
    ) -> list[SubDeviceCredentials]:
        """Register devices of sub-device products (``thing.device.register``); returns their
        keys and secrets. Registering does not attach them (:meth:`add_topology`)."""
        if not specs:
            return []
        reply = await self.request(
            TopicKind.DEVICE_REGISTER, [spec.params() for spec in specs], timeout=timeout
        )
        data = reply.data if isinstance(reply.data, list) else []
        return [
            SubDeviceCredentials(
                str(item.get("productKey", "")),
                str(item.get("deviceKey", "")),
                str(item.get("deviceSecret", "")),
                str(item["assetId"]) if item.get("assetId") else None,
            )
            for item in data
            if isinstance(item, dict)
        ]

    async def add_topology(
        self, sub_devices: Sequence[SubDeviceCredentials], *, timeout: float | None = None
    ) -> None:
        """Attach sub-devices to this gateway (``thing.topo.add``), each proven by a signature
        with its own secret."""
        timestamp = str(self.clock.time_ms())
        params = [
            sub_device_proof(
                sub.product_key,
                sub.device_key,
                sub.device_secret,
                timestamp=timestamp,
                sign_method=self.sign_method,
            )
            for sub in sub_devices
        ]
        await self.request(TopicKind.TOPO_ADD, params, timeout=timeout)

    async def delete_topology(self, keys: Sequence[Keys], *, timeout: float | None = None) -> None:
        """Detach sub-devices ``[(product_key, device_key), ...]`` (``thing.topo.delete``;
        the hub refuses, 1256, while one is logged in)."""
        params = [{"productKey": pk, "deviceKey": dk} for pk, dk in keys]
        await self.request(TopicKind.TOPO_DELETE, params, timeout=timeout)

    async def get_topology(self, *, timeout: float | None = None) -> list[Keys]:
        """The sub-devices attached to this gateway (``thing.topo.get``)."""
        reply = await self.request(TopicKind.TOPO_GET, {}, timeout=timeout)
        data = reply.data if isinstance(reply.data, list) else []
        return [
            (str(item.get("productKey", "")), str(item.get("deviceKey", "")))
            for item in data
            if isinstance(item, dict)
        ]

    # -- sub-device login and logout (8.3) --------------------------------------------------------

    async def login_sub_device(
        self,
        product_key: str,
        device_key: str,
        device_secret: str | None = None,
        *,
        product_secret: str | None = None,
        clean_session: bool = False,
        timeout: float | None = None,
    ) -> SubDevice:
        """Log a sub-device in through this gateway (``combine.login``) with its secret, or
        with its product's secret for dynamic activation (the issued secret is kept in
        ``SubDevice.device_secret``); returns its :class:`SubDevice`. Raises
        :class:`~enos_lab.errors.RequestFailed` with the hub's code (705 unknown, 723
        disabled, 740 not under this gateway, 742 sign check failed, 770 activation not
        allowed)."""
        if device_secret:
            mode, secret = SecureMode.SECRET_PER_DEVICE, device_secret
        elif product_secret:
            mode, secret = SecureMode.DYNAMIC_ACTIVATION, product_secret
        else:
            raise InvalidArgument(
                f"sub-device {product_key}/{device_key} needs a device_secret or a product_secret"
            )
        params: dict[str, Any] = sub_device_proof(
            product_key,
            device_key,
            secret,
            timestamp=str(self.clock.time_ms()),
            sign_method=self.sign_method,
        )
        params["secureMode"] = str(int(mode))
        params["cleanSession"] = "true" if clean_session else "false"
        reply = await self.request(TopicKind.SUB_DEVICE_LOGIN, params, timeout=timeout)
        sub = self.sub_device(product_key, device_key)
        issued = reply.data.get("deviceSecret") if isinstance(reply.data, dict) else None
        sub.device_secret = issued if isinstance(issued, str) and issued else device_secret
        if sub.device_secret:
            self._logged_in[sub.keys] = sub.device_secret
        return sub

    async def login_sub_devices(
        self, credentials: Sequence[SubDeviceCredentials], *, timeout: float | None = None
    ) -> BatchLoginResult:
        """Log sub-devices in with one request (``combine.login.batch``). Refusals do not
        raise: they are in ``result.failed`` with the first refusal's code; a request the hub
        cannot read at all raises :class:`~enos_lab.errors.RequestFailed`."""
        secrets = {(c.product_key, c.device_key): c.device_secret for c in credentials}
        reply = await self._ask(
            TopicKind.SUB_DEVICE_LOGIN_BATCH,
            self._batch_login_params(secrets),
            self.product_key,
            self.device_key,
            "",
            None,
            timeout,
            check=False,
        )
        return self._batch_outcome(reply, secrets)

    async def logout_sub_device(
        self, product_key: str, device_key: str, *, timeout: float | None = None
    ) -> None:
        """Log a sub-device out (``combine.logout``); the gateway stops logging it in again."""
        self._logged_in.pop((product_key, device_key), None)
        params = {"productKey": product_key, "deviceKey": device_key}
        await self.request(TopicKind.SUB_DEVICE_LOGOUT, params, timeout=timeout)

    def _batch_login_params(self, secrets: Mapping[Keys, str]) -> dict[str, Any]:
        timestamp = str(self.clock.time_ms())
        method = self.sign_method
        subs = []
        for (pk, dk), secret in secrets.items():
            signed = sign_params(
                client_id=BATCH_CLIENT_ID, product_key=pk, device_key=dk, timestamp=timestamp
            )
            subs.append(
                {
                    "productKey": pk,
                    "deviceKey": dk,
                    "secureMode": str(int(SecureMode.SECRET_PER_DEVICE)),
                    "sign": sign(signed, secret, method),
                }
            )
        return {
            "clientId": BATCH_CLIENT_ID,
            "timestamp": timestamp,
            "signMethod": method.value,
            "subDevices": subs,
        }

    def _batch_outcome(self, reply: Reply, secrets: Mapping[Keys, str]) -> BatchLoginResult:
        data = reply.data if isinstance(reply.data, dict) else {}
        logged: list[Keys] = []
        for item in _entries(data.get("loginedSubDevices")):
            keys = (str(item.get("productKey", "")), str(item.get("deviceKey", "")))
            secret = secrets.get(keys)
            if secret is None:
                continue
            sub = self.sub_device(*keys)
            sub.device_secret = secret
            self._logged_in[keys] = secret
            logged.append(keys)
        failed = tuple(
            (str(item.get("productKey", "")), str(item.get("deviceKey", "")))
            for item in _entries(data.get("failedSubDevices"))
        )
        if not reply.ok and not logged and not failed:
            raise RequestFailed(
                reply.code,
                reply.message,
                reply.data,
                topic=_BATCH_LOGIN.format(self.product_key, self.device_key),
                request_id=str(reply.id),
            )
        return BatchLoginResult(tuple(logged), failed, reply.code, reply.message)

    async def _relogin_sub_devices(self) -> None:
        """Log the remembered sub-devices in again on a new connection (batches of
        :data:`RELOGIN_BATCH`); those refused are forgotten and logged."""
        remembered = list(self._logged_in.items())
        for start in range(0, len(remembered), RELOGIN_BATCH):
            secrets = dict(remembered[start : start + RELOGIN_BATCH])
            topic = _BATCH_LOGIN.format(self.product_key, self.device_key)
            request_id = self._next_id()
            payload = encode_request(
                request_id,
                TopicKind.SUB_DEVICE_LOGIN_BATCH.method_for(),
                self._batch_login_params(secrets),
            )
            try:
                reply = await self._exchange(topic, request_id, payload, None)
                result = self._batch_outcome(reply, secrets)
            except DeviceError as exc:
                log.warning(
                    "gateway %s: logging %d sub-device(s) in again failed: %s",
                    self.device,
                    len(secrets),
                    exc,
                )
                return
            for keys in result.failed:
                self._logged_in.pop(keys, None)
            if result.failed:
                log.warning(
                    "gateway %s: %d sub-device(s) refused on re-login (code %d: %s); forgotten",
                    self.device,
                    len(result.failed),
                    result.code,
                    result.message,
                )

    # -- batch posts (7.2) -------------------------------------------------------------------------

    async def post_measurepoints_batch(
        self,
        entries: Sequence[PointsEntry],
        *,
        resume: bool = False,
        allow_offline_sub_devices: bool = False,
        skip_invalid: bool = False,
        timeout: float | None = None,
    ) -> Reply:
        """Post the measurepoints of several devices or times in one request
        (``thing.measurepoint.post.batch``; with ``resume=True`` ``...resume.batch``): entries
        for this gateway and its logged-in sub-devices (with ``allow_offline_sub_devices``,
        attached ones that are offline too). By default one bad entry or point rejects the
        whole request; ``skip_invalid`` drops invalid points instead."""
        clock = self.clock
        params = []
        for entry in entries:
            item: dict[str, Any] = {
                "measurepoints": point_values(entry.values, entry.quality),
                "time": event_time(entry.time, clock),
            }
            if entry.product_key is not None or entry.device_key is not None:
                item["productKey"] = entry.product_key or self.product_key
                item["deviceKey"] = entry.device_key or self.device_key
            params.append(item)
        kind = TopicKind.MEASUREPOINT_RESUME_BATCH if resume else TopicKind.MEASUREPOINT_POST_BATCH
        extra = {
            "allowOfflineSubDevice": allow_offline_sub_devices,
            "skipInvalidMeasurepoints": skip_invalid,
        }
        return await self.request(kind, params, extra=extra, timeout=timeout)


def _entries(value: object) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []

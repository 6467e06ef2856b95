"""Gateways (protocol reference 8): registering sub-devices, topology, sub-device login.

A gateway registers devices of sub-device products (``thing.device.register``, bounded by the
product's device quota and ``max_register_entries`` per request), adds and removes them from its
topology (``topo.add`` with each sub-device's signature, ``topo.delete``, ``topo.get``) and logs
them in and out (``combine.login``, ``combine.login.batch``, ``combine.logout``). Every
sub-device signature is the registry's decision
(:func:`~enos_lab.registry.authenticate_sub_device`); the state checks of a login come first,
each with its EnOS code: the connection is a gateway's (740), the device exists (705), TLS for
certificate-only products (746), enabled (723), attached to this gateway (740); then the
signature (742, 770) and the gateway's bound on online sub-devices. A sub-device logged in
through a gateway is online while the gateway is; the gateway's session reads its topics only
while it is logged in there (``Sessions.login_sub`` / ``logout_sub``). The tap hears of each
accepted sub-device login (``DeviceLoggedIn`` with the gateway, with its presence change) and of
the secret a dynamic activation issued (``DeviceActivated``).
"""

from __future__ import annotations

from typing import Any

from ..enos import ReplyCode, Request, TopicMatch
from ..errors import AlreadyExists, RegistryError
from ..registry import NodeType, Registry, authenticate_sub_device
from ._checks import shown
from ._config import IotHubConfig
from ._emit import Emitter
from ._routes import OK, Result
from ._sessions import Conn, Sessions

__all__ = ["Gateways"]


class Gateways:
    """The gateway request handlers."""

    __slots__ = ("_emit", "_registry", "_sessions", "config")

    def __init__(
        self, registry: Registry, sessions: Sessions, config: IotHubConfig, emit: Emitter
    ) -> None:
        self._registry = registry
        self._sessions = sessions
        self.config = config
        self._emit = emit

    async def register(self, conn: Conn, match: TopicMatch, request: Request) -> Result:
        """``thing.device.register`` (8.1): a gateway registers devices of sub-device products.

        Refused, before anything is registered, with 1200 and details when the connection is
        not a gateway's or an entry's product is not a sub-device product: 1200 with details is
        what EnOS answers a gateway operation it cannot apply (section 5.1: ``topo.get`` from a
        non-gateway); the registration codes 702 / 714 / 739 are about keys and the product's
        quota, and 1009 about the topic, which is the device's own. (Activation sessions and
        integration channels get 1009: they may send no gateway request at all.)
        """
        if not _is_gateway(conn) or conn.own is None:
            return (
                ReplyCode.PARSE_ERROR,
                None,
                f"device {conn.product_key}/{conn.device_key} is not a gateway; only gateways "
                "register (sub-)devices",
            )
        params = request.params
        if not isinstance(params, list) or not all(isinstance(e, dict) for e in params):
            return (ReplyCode.PARSE_ERROR, None, "params must be a list of device objects")
        limit = self.config.max_register_entries
        if len(params) > limit:
            return (
                ReplyCode.PARSE_ERROR,
                None,
                f"{len(params)} devices in one request; at most {limit} may be registered at once",
            )
        # EnOS 702 and 739 before anything is registered
        adding: dict[str, int] = {}
        for entry in params:
            pk, dk = entry.get("productKey"), entry.get("deviceKey")
            product = self._registry.find_product(pk) if isinstance(pk, str) else None
            if product is None:
                return (ReplyCode.PARSE_ERROR, None, f"product {shown(pk)} does not exist")
            if product.node_type is not NodeType.SUB_DEVICE:
                return (
                    ReplyCode.PARSE_ERROR,
                    None,
                    f"product {pk} is a {product.node_type.value} product; a gateway "
                    "registers devices of sub-device products only",
                )
            if isinstance(dk, str) and dk and self._registry.find_device(pk, dk) is not None:
                return (ReplyCode.DEVICE_KEY_EXISTS, None, f"device {pk}/{dk} already exists")
            adding[pk] = adding.get(pk, 0) + 1
        quota = self.config.product_device_quota
        for pk, count in adding.items():
            held = self._registry.device_count(pk)
            if held + count > quota:
                return (
                    ReplyCode.DEVICE_QUOTA_EXCEEDED,
                    None,
                    f"product {pk} holds {held} devices; {count} more would pass its quota of "
                    f"{quota} (IotHubConfig.product_device_quota)",
                )
        data = []
        for entry in params:
            name = entry.get("deviceName")
            i18n: dict[str, str] = {}
            if isinstance(name, dict):
                raw_i18n = name.get("i18nValue")
                if isinstance(raw_i18n, dict):
                    i18n = {str(k): str(v) for k, v in raw_i18n.items()}
                name = name.get("defaultValue")
            attributes = entry.get("deviceAttributes")
            try:
                device = self._registry.register_device(
                    entry["productKey"],
                    device_key=entry.get("deviceKey") or None,
                    name=name if isinstance(name, str) and name else None,
                    name_i18n=i18n,
                    description=str(entry.get("deviceDesc") or ""),
                    timezone=str(entry.get("timezone") or "+00:00"),
                    attributes=attributes if isinstance(attributes, dict) else None,
                )
            except AlreadyExists as exc:
                return (ReplyCode.DEVICE_KEY_EXISTS, None, str(exc))
            if device.attributes and device.created_at is not None:  # reported with it
                at_ms = round(device.created_at.timestamp() * 1000)
                keys = (device.product_key, device.device_key)
                self._emit.attributes(keys, at_ms, device.attributes)
            data.append(
                {
                    "assetId": device.asset_id,
                    "productKey": device.product_key,
                    "deviceKey": device.device_key,
                    "deviceSecret": device.device_secret,
                }
            )
        return (ReplyCode.SUCCESS, data, None)

    async def topo_add(self, conn: Conn, match: TopicMatch, request: Request) -> Result:
        """``thing.topo.add`` (8.2): attach sub-devices, each proven by its signature (1255)."""
        code = ReplyCode.TOPO_ADD_FAILED
        if not _is_gateway(conn) or conn.own is None:
            return (code, None, "add topo failure, the device is not a gateway")
        params = request.params
        if not isinstance(params, list):
            return (code, None, "add topo failure, params must be a list")
        for entry in params:
            if not isinstance(entry, dict):
                return (code, None, "add topo failure, entries must be objects")
            pk, dk = str(entry.get("productKey", "")), str(entry.get("deviceKey", ""))
            sub = self._registry.find_device(pk, dk) if pk and dk else None
            if sub is None:
                return (code, None, f"add topo failure, sub-device {pk}/{dk} does not exist")
            proof = authenticate_sub_device(
                sub,
                self._registry.get_product(pk),
                client_id=entry.get("clientId"),
                timestamp=entry.get("timestamp"),
                sign_method=entry.get("signMethod", entry.get("signmethod")),
                sign=entry.get("sign"),
            )
            if not proof.accepted:
                return (code, None, f"add topo failure, sign check failed for {pk}/{dk}")
            try:
                self._registry.attach(conn.own.ident, (pk, dk))
            except RegistryError as exc:
                return (code, None, f"add topo failure, {exc}")
        return OK

    async def topo_delete(self, conn: Conn, match: TopicMatch, request: Request) -> Result:
        """``thing.topo.delete`` (8.2): detach sub-devices that are not logged in (1256)."""
        code = ReplyCode.TOPO_DELETE_FAILED
        if not _is_gateway(conn) or conn.own is None:
            return (code, None, "remove topo failure, the device is not a gateway")
        params = request.params
        if not isinstance(params, list) or not all(isinstance(e, dict) for e in params):
            return (code, None, "remove topo failure, params must be a list of objects")
        for entry in params:
            keys = (str(entry.get("productKey", "")), str(entry.get("deviceKey", "")))
            if keys in self._sessions.gateway_of:
                return (code, None, f"remove topo failure, {keys[0]}/{keys[1]} is online")
            try:
                self._registry.detach(conn.own.ident, keys)
            except RegistryError as exc:
                return (code, None, f"remove topo failure, {exc}")
        return OK

    async def topo_get(self, conn: Conn, match: TopicMatch, request: Request) -> Result:
        """``thing.topo.get`` (8.2): the gateway's sub-devices."""
        if not _is_gateway(conn) or conn.own is None:
            return (ReplyCode.PARSE_ERROR, None, "the device is not a gateway")
        data = [
            {"productKey": d.product_key, "deviceKey": d.device_key}
            for d in self._registry.sub_devices(conn.own.ident)
        ]
        return (ReplyCode.SUCCESS, data, None)

    # -- sub-device login / logout (8.3) -------------------------------------------------

    def _login_one(  # noqa: PLR0917
        self,
        conn: Conn,
        pk: str,
        dk: str,
        client_id: object,
        timestamp: object,
        method_name: object,
        signature: object,
        secure_mode: object,
    ) -> tuple[int, dict[str, Any], str]:
        """Log one sub-device in through ``conn``: (code, data, message). The signature is the
        registry's decision (:func:`~enos_lab.registry.authenticate_sub_device`); ``client_id``
        and the fields after it are the request's values as decoded."""
        keys = (pk, dk)
        failed: dict[str, Any] = {"productKey": pk, "deviceKey": dk}
        if conn.own is None or not _is_gateway(conn):
            return (ReplyCode.SUB_DEVICE_NOT_UNDER_GATEWAY, failed, "the device is not a gateway")
        device = self._registry.find_device(pk, dk) if pk and dk else None
        if device is None:
            return (ReplyCode.SUB_DEVICE_NOT_FOUND, failed, f"{pk}&{dk} does not exist")
        product = self._registry.get_product(pk)
        if product.certificate_required and not conn.tls:
            return (ReplyCode.SUB_DEVICE_MUST_USE_SSL, failed, ReplyCode(746).message)
        if not device.enabled:
            return (ReplyCode.SUB_DEVICE_DISABLED, failed, ReplyCode(723).message)
        if device.gateway != conn.own.ident:
            return (ReplyCode.SUB_DEVICE_NOT_UNDER_GATEWAY, failed, ReplyCode(740).message)
        decision = authenticate_sub_device(
            device,
            product,
            client_id=client_id,
            timestamp=timestamp,
            sign_method=method_name,
            sign=signature,
            secure_mode=secure_mode,
        )
        if not decision.accepted:
            return (decision.code, failed, decision.reason)
        if keys not in conn.subs and len(conn.subs) >= self.config.max_online_sub_devices:
            return (
                ReplyCode.PARSE_ERROR,
                failed,
                f"gateway has {len(conn.subs)} online sub-devices, the limit is "
                f"{self.config.max_online_sub_devices}",
            )
        data: dict[str, Any] = {"productKey": pk, "deviceKey": dk, "assetId": device.asset_id}
        if decision.activation:
            device = self._registry.activate(pk, dk)
            data["deviceSecret"] = device.device_secret
            self._emit.activated(keys)
        self._emit.logged_in(
            keys,
            client_id if isinstance(client_id, str) else "",
            3 if decision.activation else 2,
            conn.own.ident,
        )
        self._sessions.login_sub(conn, keys, self._sessions.target_for(device, product))
        return (ReplyCode.SUCCESS, data, "")

    async def sub_login(self, conn: Conn, match: TopicMatch, request: Request) -> Result:
        """``combine.login`` (8.3): log one sub-device in."""
        p = request.params
        if not isinstance(p, dict):
            return (ReplyCode.INVALID_JSON, None, "params must be a JSON object")
        code, data, text = self._login_one(
            conn,
            str(p.get("productKey") or ""),
            str(p.get("deviceKey") or ""),
            p.get("clientId"),
            p.get("timestamp"),
            p.get("signMethod", p.get("signmethod")),
            p.get("sign"),
            p.get("secureMode", p.get("securemode")),
        )
        return (code, data, text or None)

    async def sub_login_batch(self, conn: Conn, match: TopicMatch, request: Request) -> Result:
        """``combine.login.batch`` (8.3): log sub-devices in; the first failure's code."""
        p = request.params
        empty: dict[str, list[Any]] = {"loginedSubDevices": [], "failedSubDevices": []}
        subs = p.get("subDevices") if isinstance(p, dict) else None
        if not isinstance(p, dict) or not isinstance(subs, list):
            return (ReplyCode.INVALID_JSON, empty, "params.subDevices must be a list")
        client_id = p.get("clientId")
        timestamp = p.get("timestamp")
        method = p.get("signMethod", p.get("signmethod"))
        logined: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        first_code = 0
        messages = []
        for entry in subs:
            if not isinstance(entry, dict):
                return (ReplyCode.INVALID_JSON, empty, "subDevices entries must be objects")
            pk, dk = str(entry.get("productKey") or ""), str(entry.get("deviceKey") or "")
            code, data, text = self._login_one(
                conn,
                pk,
                dk,
                client_id,
                timestamp,
                entry.get("signMethod", entry.get("signmethod", method)),
                entry.get("sign"),
                entry.get("secureMode", entry.get("securemode")),
            )
            if code == ReplyCode.SUCCESS:
                logined.append(data)
            else:
                failed.append({"productKey": pk, "deviceKey": dk})
                first_code = first_code or code
                messages.append(f"{pk}&{dk} has error: {text};")
        result = {"loginedSubDevices": logined, "failedSubDevices": failed}
        if first_code:
            return (first_code, result, "".join(messages))
        return (ReplyCode.SUCCESS, result, None)

    async def sub_logout(self, conn: Conn, match: TopicMatch, request: Request) -> Result:
        """``combine.logout`` (8.3): log one sub-device out."""
        p = request.params
        if not isinstance(p, dict):
            return (ReplyCode.PARSE_ERROR, None, "params must be a JSON object")
        keys = (str(p.get("productKey") or ""), str(p.get("deviceKey") or ""))
        self._sessions.logout_sub(conn, keys, "logged out")
        return (ReplyCode.SUCCESS, {"productKey": keys[0], "deviceKey": keys[1]}, None)


def _is_gateway(conn: Conn) -> bool:
    return conn.product.node_type is NodeType.GATEWAY

"""Edges from the facade: gateways registered by serial number, revoked, listed.

An edge (EnOS Edge, protocol reference 14) is a gateway device whose device key is its serial
number, in an edge product: the lab's default one (product key :data:`EDGE_PRODUCT_KEY`, the
library thing model ``gateway``, created on first use) or a gateway product the user names.
The lab keeps the list of its edges in ``edges.json`` in the data directory (0600;
devices cannot change it, unlike their own tags); each edge keeps its local cache in
:meth:`Edges.edge_cache_dir`.

An edge whose serial number the registry does not know is refused at login like any unknown
device; :meth:`Edges.revoke_edge` disables the edge's device with a reason the registry keeps
(``Registry.disable_device(..., reason)``, out of the device's reach), so that every later login
is refused with ``device .../SN is disabled: edge revoked at <time>`` in
:meth:`~enos_lab.lab.Lab.refused_logins`, and closes its live connection (its sub-devices go
offline with it).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .._files import private_dir, write_private
from ..clock import from_epoch_ms, to_epoch_ms
from ..errors import AlreadyExists, InvalidArgument, NotFound
from ..registry import Device, NodeType, Product
from ._core import LabCore, coroutine_form_of

__all__ = ["EDGE_COLUMNS", "EDGE_MODEL_ID", "EDGE_PRODUCT_KEY", "Edges"]

EDGE_PRODUCT_KEY = "edge"
"""Product key of the lab's default edge product (created on first use). [-]"""
EDGE_MODEL_ID = "gateway"
"""The library thing model of the default edge product."""
EDGE_COLUMNS = (
    "product_key",
    "serial_number",
    "asset_id",
    "name",
    "state",
    "online",
    "revoked",
    "sub_devices",
    "registered_at",
    "revoked_at",
    "last_online_at",
)
"""Columns of :meth:`Edges.edges`: keys, the registry's ``state`` (inactive, online, offline,
disabled) and ``online``, ``revoked`` (bool), ``sub_devices`` attached (count), times tz-aware
UTC (``revoked_at`` NaT unless revoked)."""

_BOOK = Path("edges.json")
_BOOK_LOCK = threading.Lock()  # the book of every lab of the process: its writes are rare


class Edges(LabCore):
    """Edges registered by serial number (mixed into :class:`~enos_lab.lab.Lab`)."""

    if TYPE_CHECKING:  # provided by Provisioning

        def disable_device(
            self, product_key: str, device_key: str, *, reason: str | None = None
        ) -> Device: ...

    def register_edge(
        self,
        serial_number: str,
        *,
        product_key: str | None = None,
        name: str | None = None,
        description: str = "",
        timezone: str = "+00:00",
        tags: Mapping[str, object] | None = None,
        attributes: Mapping[str, Any] | None = None,
        device_secret: str | None = None,
    ) -> Device:
        """Register an edge: a gateway device whose device key is ``serial_number``, in the
        edge product ``product_key`` (a gateway product) or the lab's default one (created on
        first use). Returns its record (with its secret). Raises
        :class:`~enos_lab.errors.AlreadyExists` for a serial number registered in that product
        already, :class:`~enos_lab.errors.NotFound` for an unknown product and
        :class:`~enos_lab.errors.InvalidArgument` for a product that is not a gateway
        product."""
        if not isinstance(serial_number, str) or not serial_number.strip("."):
            raise InvalidArgument(f"an edge needs a serial number, got {serial_number!r}")
        product = self._edge_product(product_key)
        registry = self.registry
        if registry.find_device(product.product_key, serial_number) is not None:
            raise AlreadyExists(
                f"edge {serial_number!r} is registered in product {product.product_key!r} already"
            )
        device = registry.register_device(
            product.product_key,
            device_key=serial_number,
            name=name or f"Edge {serial_number}",
            description=description,
            timezone=timezone,
            tags=tags,
            attributes=attributes,
            device_secret=device_secret,
        )
        with _BOOK_LOCK:
            book = self._read_book()
            book[_key(device)] = {
                "product_key": device.product_key,
                "serial_number": device.device_key,
                "registered_at": _ms(device),
                "revoked_at": None,
            }
            self._write_book(book)
        return device

    aregister_edge = coroutine_form_of(register_edge)

    def revoke_edge(self, serial_number: str, *, product_key: str | None = None) -> Device:
        """Revoke an edge: its logins are refused from now on, with the reason ``edge revoked
        at <time>`` in :meth:`refused_logins`, and its live connection is closed (its
        sub-devices go offline). ``product_key`` is needed only when two edge products have
        the serial number. Returns its record (state ``disabled``)."""
        entry = self._find_edge(serial_number, product_key)
        pk, sn = entry["product_key"], entry["serial_number"]
        now = self.clock.now()
        when = now.isoformat(timespec="seconds")
        with _BOOK_LOCK:
            book = self._read_book()
            book[f"{pk}/{sn}"] = {**entry, "revoked_at": to_epoch_ms(now)}
            self._write_book(book)
        # the facade's disable closes the connection and waits for the hub to see it gone
        return self.disable_device(pk, sn, reason=f"edge revoked at {when}")

    arevoke_edge = coroutine_form_of(revoke_edge)

    def edges(self, product_key: str | None = None) -> pd.DataFrame:
        """The registered edges (of one edge product if given), in registration order, one row
        each (:data:`EDGE_COLUMNS`); an edge whose device was deleted is left out."""
        registry = self.registry
        with _BOOK_LOCK:
            book = self._read_book()
        rows = []
        for entry in book.values():
            pk, sn = entry["product_key"], entry["serial_number"]
            if product_key is not None and pk != product_key:
                continue
            device = registry.find_device(pk, sn)
            if device is None:
                continue
            revoked_at = entry.get("revoked_at")
            rows.append(
                {
                    "product_key": pk,
                    "serial_number": sn,
                    "asset_id": device.asset_id,
                    "name": device.name,
                    "state": device.state.value,
                    "online": device.online,
                    "revoked": revoked_at is not None and not device.enabled,
                    "sub_devices": len(registry.sub_devices((pk, sn))),
                    "registered_at": device.created_at,
                    "revoked_at": from_epoch_ms(revoked_at) if revoked_at is not None else None,
                    "last_online_at": device.last_online_at,
                }
            )
        frame = pd.DataFrame(rows, columns=list(EDGE_COLUMNS))
        for column in ("registered_at", "revoked_at", "last_online_at"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
        for column in ("online", "revoked"):
            frame[column] = frame[column].astype(bool)
        frame["sub_devices"] = frame["sub_devices"].astype("int64")
        return frame

    aedges = coroutine_form_of(edges)

    def edge_cache_dir(self, serial_number: str, *, product_key: str | None = None) -> Path:
        """The folder of an edge's local cache in the data directory
        (``edges/<product_key>/<serial_number>``; created by the edge)."""
        entry = self._find_edge(serial_number, product_key)
        return self.data_dir / "edges" / str(entry["product_key"]) / str(entry["serial_number"])

    # -- internals -------------------------------------------------------------------------

    def _edge_product(self, product_key: str | None) -> Product:
        registry = self.registry
        if product_key is not None:
            product = registry.get_product(product_key)
        else:
            found = registry.find_product(EDGE_PRODUCT_KEY)
            if found is None:
                try:
                    found = registry.create_product(
                        "Edge gateways",
                        product_key=EDGE_PRODUCT_KEY,
                        model_id=EDGE_MODEL_ID,
                        node_type=NodeType.GATEWAY,
                        description="EnOS Edge gateways, registered by serial number",
                    )
                except AlreadyExists:  # made meanwhile by another thread
                    found = registry.get_product(EDGE_PRODUCT_KEY)
            assert found is not None
            product = found
        if product.node_type is not NodeType.GATEWAY:
            raise InvalidArgument(
                f"product {product.product_key!r} is a {product.node_type.value} product; an "
                "edge needs a gateway product (node_type='gateway')"
            )
        return product

    def _find_edge(self, serial_number: str, product_key: str | None) -> dict[str, Any]:
        with _BOOK_LOCK:
            book = self._read_book()
        found = [
            entry
            for entry in book.values()
            if entry["serial_number"] == serial_number
            and (product_key is None or entry["product_key"] == product_key)
            and self.registry.find_device(entry["product_key"], serial_number) is not None
        ]
        if not found:
            where = f" in product {product_key!r}" if product_key is not None else ""
            raise NotFound(f"no edge with serial number {serial_number!r}{where}")
        if len(found) > 1:
            products = ", ".join(repr(e["product_key"]) for e in found)
            raise InvalidArgument(
                f"edges with serial number {serial_number!r} are in products {products}: "
                "give product_key"
            )
        return found[0]

    def _read_book(self) -> dict[str, dict[str, Any]]:
        path = self.data_dir / _BOOK
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise InvalidArgument(f"the edge list {str(path)!r} cannot be read: {exc}") from exc
        edges = document.get("edges") if isinstance(document, dict) else None
        if not isinstance(edges, dict):
            raise InvalidArgument(f"the edge list {str(path)!r} is not one the lab wrote")
        return edges

    def _write_book(self, book: dict[str, dict[str, Any]]) -> None:
        path = self.data_dir / _BOOK
        private_dir(path.parent)
        write_private(path, json.dumps({"version": 1, "edges": book}, indent=1).encode())


def _key(device: Device) -> str:
    return f"{device.product_key}/{device.device_key}"


def _ms(device: Device) -> int | None:
    return to_epoch_ms(device.created_at) if device.created_at is not None else None

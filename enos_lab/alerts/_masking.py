"""Root alerts masking derivative alerts (EnOS ``isRoot`` / ``maskedBy``).

A root rule's active alert on a gateway masks the alerts of the devices behind it: an alert
that opens on a sub-device while the root alert is active is opened masked (``masked_by`` the
root's event id), and the sub-devices' alerts already active are masked when the root alert
fires. When the root alert recovers, the alerts it masked that are still active are unmasked.
Masking is a mark on the records (``lab.alerts()`` leaves masked alerts out by default), never
a change of what the alert engine evaluates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ._record import AlertRecord
from ._records import AlertRecords

__all__ = ["RootMasking"]


class RootMasking:
    """The topology root alerts mask along: ``gateway_of(product_key, device_key)`` (a
    device's gateway or None) and ``sub_devices(gateway)`` (the devices behind it); without
    them nothing is masked."""

    __slots__ = ("_gateway_of", "_records", "_sub_devices")

    def __init__(
        self,
        records: AlertRecords,
        gateway_of: Callable[[str, str], tuple[str, str] | None] | None,
        sub_devices: Callable[[tuple[str, str]], Iterable[tuple[str, str]]] | None,
    ) -> None:
        self._records = records
        self._gateway_of = gateway_of
        self._sub_devices = sub_devices

    def over(self, product_key: str, device_key: str, root_ids: list[str]) -> str | None:
        """The event id of an active alert of one of ``root_ids`` on the device's gateway."""
        if self._gateway_of is None or not root_ids:
            return None
        gateway = self._gateway_of(product_key, device_key)
        if gateway is None:
            return None
        active = self._records.active(gateway[1], root_ids, product_key=gateway[0])
        return None if active.empty else str(active["event_id"].iloc[0])

    def below(self, root: AlertRecord) -> int:
        """Mask the active, unmasked alerts of the devices behind the root alert's device;
        returns how many."""
        masked = 0
        for event_id, masked_by in self._active_below(root):
            if not isinstance(masked_by, str):  # None (or NaN)
                self._records.set_masked(event_id, root.event_id)
                masked += 1
        return masked

    def lift(self, root: AlertRecord) -> int:
        """Unmask the still active alerts the (recovered) root alert masked; returns how
        many."""
        lifted = 0
        for event_id, masked_by in self._active_below(root):
            if masked_by == root.event_id:
                self._records.set_masked(event_id, None)
                lifted += 1
        return lifted

    def _active_below(self, root: AlertRecord) -> list[tuple[str, object]]:
        if self._sub_devices is None:
            return []
        found: list[tuple[str, object]] = []
        for sub_pk, sub_dk in self._sub_devices((root.product_key, root.device_key)):
            active = self._records.active(sub_dk, product_key=sub_pk)
            found.extend(zip(active["event_id"], active["masked_by"], strict=True))
        return found

"""The login log: the refused login attempts and why, kept in a bounded ring.

The IoT hub records one row per CONNECT it refuses (:meth:`LoginLog.record`, a tuple appended
to a :class:`collections.deque` with a maximum length, so that a flood of attempts keeps only the
newest ``size``); :meth:`LoginLog.rows` copies the rows of a product or device and
:func:`logins_frame` turns them into a DataFrame with tz-aware UTC times. Refused logins and their
reasons are otherwise logged at INFO only, which a device engineer rarely sees. Accepted logins
are not kept here (the presence log has them as "connected"): a row per connected device would
cost every idle connection a few hundred bytes.
"""

from __future__ import annotations

from collections import deque
from typing import TypeAlias

import pandas as pd

from ..clock import Clock
from ..errors import InvalidArgument

__all__ = ["LOGIN_COLUMNS", "LoginLog", "login_source", "logins_frame", "username_keys"]

LOGIN_COLUMNS = (
    "time",
    "source",
    "client_id",
    "product_key",
    "device_key",
    "reason",
    "blocked_until",
)
"""Columns of :func:`logins_frame`: ``time`` (tz-aware UTC) of the attempt, ``source`` (the
client's address, without the port), ``client_id``, ``product_key`` and ``device_key`` from the
user name (``None`` when it has none), ``reason`` (the registry's words, or
``blocked after N failed logins until T``) and ``blocked_until`` (tz-aware UTC; set on the
failure that started a block and on the attempts refused by it, NaT otherwise)."""

LoginRow: TypeAlias = tuple[
    int, str, str, str | None, str | None, str, int | None
]  # time [ms], source, client id, product key, device key, reason, blocked until [ms]


def login_source(peer: str) -> str:
    """The address part of a connection's ``peer`` (``"host:port"``; IPv6 as ``"::1:port"``
    or ``"[::1]:port"``); a peer without a port (``"memory"``) is returned as it is."""
    host, colon, port = peer.rpartition(":")
    if not colon or not port.isdigit():
        return peer
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host


def username_keys(username: str | None) -> tuple[str | None, str | None]:
    """``(product_key, device_key)`` from an EnOS user name ``deviceKey&productKey``;
    ``(None, None)`` when there is none."""
    if not username or "&" not in username:
        return None, None
    device_key, _, product_key = username.partition("&")
    return product_key, device_key


class LoginLog:
    """The latest ``size`` refused login attempts, oldest first (see the module docstring).

    ``clock`` stamps the rows. Not thread-safe: the hub records from its event loop, and
    readers in other threads ask for :meth:`rows` on that loop.
    """

    def __init__(self, size: int, clock: Clock) -> None:
        if size < 0:
            raise InvalidArgument(f"the login log size must be >= 0, got {size!r}")
        self._rows: deque[LoginRow] = deque(maxlen=size)
        self._clock = clock

    @property
    def size(self) -> int:
        """Most rows kept."""
        return self._rows.maxlen or 0

    def __len__(self) -> int:
        """Rows kept now."""
        return len(self._rows)

    def record(
        self,
        source: str,
        client_id: str,
        product_key: str | None,
        device_key: str | None,
        *,
        reason: str,
        blocked_until_ms: int | None = None,
    ) -> None:
        """Add one refused attempt (the oldest row goes when the log is full);
        ``blocked_until_ms`` is the end of the block that refused it or that it started. [ms
        since the epoch]"""
        self._rows.append(
            (
                self._clock.time_ms(),
                source,
                client_id,
                product_key,
                device_key,
                reason,
                blocked_until_ms,
            )
        )

    def rows(self, product_key: str | None = None, device_key: str | None = None) -> list[LoginRow]:
        """A copy of the rows, oldest first, of one product and/or device key if given."""
        if product_key is None and device_key is None:
            return list(self._rows)
        return [
            row
            for row in self._rows
            if (product_key is None or row[3] == product_key)
            and (device_key is None or row[4] == device_key)
        ]


def logins_frame(rows: list[LoginRow]) -> pd.DataFrame:
    """The refused login attempts ``rows`` as a DataFrame with :data:`LOGIN_COLUMNS`."""
    frame = pd.DataFrame(rows, columns=list(LOGIN_COLUMNS))
    frame["time"] = pd.to_datetime(frame["time"].astype("int64"), unit="ms", utc=True)
    until = frame["blocked_until"].astype("Float64")  # None -> NaT
    frame["blocked_until"] = pd.to_datetime(until, unit="ms", utc=True)
    return frame

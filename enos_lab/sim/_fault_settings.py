"""The fault settings of a :class:`~enos_lab.sim.Link`: what each scope asks for, the calls that
set it, and the counters (the relay itself, and the theory of operation, are in
:mod:`enos_lab.sim._faults` and :mod:`enos_lab.sim._relay`).

A setting is made on a scope: the whole link, one device or client id (a :class:`LinkScope`),
or one connection; ``None`` means "not set here". A connection applies, per setting and
direction, the value of the most specific scope that has one (connection, then the matching
device and client scopes, then the link), resolved again whenever any setting changes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument
from ..mqtt import DEFAULT_MAX_PACKET_SIZE

if TYPE_CHECKING:
    from ._faults import Link
    from ._relay import LinkConnection

__all__ = [
    "Direction",
    "FlowStats",
    "LinkConfig",
    "LinkScope",
    "LinkStats",
    "PartitionMode",
]

UP, DOWN = 0, 1
"""Indexes of the two directions in per-direction settings and counters."""


class Direction(Enum):
    """Which way packets travel through a :class:`Link`."""

    UP = "up"
    """From the client to the hub."""
    DOWN = "down"
    """From the hub to the client."""
    BOTH = "both"
    """Both ways."""


class PartitionMode(Enum):
    """What a partition does to the connections that exist when it starts."""

    BLACKHOLE = "blackhole"
    """They stay open; every packet is lost; a side that gives up is hidden from the other
    until the partition heals."""
    CUT = "cut"
    """They are reset at once."""


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """Bounds of a :class:`Link`.

    ``max_connections`` open at once (more are refused) [-]; ``max_packet_size`` largest packet
    relayed, fixed header included (a larger one ends its connection) [bytes];
    ``max_queued_bytes`` packets a connection may have waiting (delayed or held for
    reordering) per direction before the link stops reading from the sender [bytes];
    ``max_reorder_window`` [packets]; ``read_size`` of one socket read [bytes];
    ``connect_timeout``: longest wait for a client's CONNECT and for reaching the hub, in real
    time (a client that sends nothing is closed, counted as refused) [s].
    """

    max_connections: int = 10_000
    max_packet_size: int = DEFAULT_MAX_PACKET_SIZE
    max_queued_bytes: int = 1 << 20
    max_reorder_window: int = 1_000
    read_size: int = 1 << 16
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if value <= 0:
                raise InvalidArgument(f"LinkConfig.{item.name} must be > 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class FlowStats:
    """What a link did to the packets of one direction.

    ``packets`` and ``bytes`` received from the sender [-, bytes]; ``publishes`` among them;
    ``dropped``, ``duplicated`` (extra copies sent) and ``reordered`` (PUBLISH packets released
    out of their arrival order) by the PUBLISH faults; ``delayed`` packets that waited for a
    delay; ``blackholed`` packets lost to a partition; ``stalls``: times a full queue stopped
    reading from the sender; ``queued``: bytes waiting in the link now (delayed or held for
    reordering) [bytes].
    """

    packets: int = 0
    bytes: int = 0
    publishes: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    delayed: int = 0
    blackholed: int = 0
    stalls: int = 0
    queued: int = 0


@dataclass(frozen=True, slots=True)
class LinkStats:
    """Counters of a :class:`Link` since it started.

    ``accepted`` connections relayed to the hub; ``refused`` connections never relayed
    (partitioned, over the limit, no CONNECT in time, the hub unreachable); ``cut``
    connections reset by ``cut()`` or a ``CUT`` partition; ``active`` open now; ``up`` and
    ``down``: :class:`FlowStats` per direction.
    """

    accepted: int
    refused: int
    cut: int
    active: int
    up: FlowStats
    down: FlowStats


class Counts:
    """The counters of :class:`FlowStats`, mutable."""

    __slots__ = tuple(f.name for f in fields(FlowStats) if f.name != "queued")

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name``."""
        setattr(self, name, getattr(self, name) + n)

    def snapshot(self, queued: int = 0) -> FlowStats:
        """The counters now, with the ``queued`` gauge. [bytes]"""
        counters = {name: getattr(self, name) for name in self.__slots__}
        return FlowStats(**counters, queued=queued)


def _ways(direction: Direction | str) -> tuple[int, ...]:
    try:
        way = Direction(direction)
    except ValueError:
        raise InvalidArgument(
            f"direction must be 'up', 'down' or 'both', got {direction!r}"
        ) from None
    return {Direction.UP: (UP,), Direction.DOWN: (DOWN,), Direction.BOTH: (UP, DOWN)}[way]


def _rate(rate: float, what: str) -> float:
    if not (isinstance(rate, int | float) and 0.0 <= rate <= 1.0):
        raise InvalidArgument(f"{what} rate must be between 0 and 1, got {rate!r}")
    return float(rate)


class Faults:
    """The fault settings of one scope; ``None``: not set here (a wider scope decides)."""

    __slots__ = ("delay", "drop", "duplicate", "hold", "partition", "reorder")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Unset everything."""
        self.drop: list[float | None] = [None, None]
        self.duplicate: list[float | None] = [None, None]
        self.delay: list[float | None] = [None, None]
        self.reorder: list[int | None] = [None, None]
        self.hold: list[float | None] = [None, None]
        self.partition: PartitionMode | None = None


class Effective:
    """The settings a connection applies now (resolved over its scopes)."""

    __slots__ = ("delay", "drop", "duplicate", "hold", "partition", "reorder")

    def __init__(self, layers: list[Faults]) -> None:
        def pick(name: str, way: int, default: Any) -> Any:
            for layer in layers:
                value = getattr(layer, name)[way]
                if value is not None:
                    return value
            return default

        self.drop = [pick("drop", w, 0.0) for w in (UP, DOWN)]
        self.duplicate = [pick("duplicate", w, 0.0) for w in (UP, DOWN)]
        self.delay = [pick("delay", w, 0.0) for w in (UP, DOWN)]
        self.reorder = [pick("reorder", w, 1) for w in (UP, DOWN)]
        self.hold = [pick("hold", w, 0.5) for w in (UP, DOWN)]
        self.partition = next((x.partition for x in layers if x.partition is not None), None)


class Controls:
    """The fault calls, shared by a link, a scope and a connection (see the module docstring)."""

    __slots__ = ()
    _faults: Faults
    _link: Link

    def drop(self, rate: float, direction: Direction | str = Direction.BOTH) -> None:
        """Lose each PUBLISH with probability ``rate`` [0..1]."""
        self._set(_ways(direction), drop=_rate(rate, "drop"))

    def duplicate(self, rate: float, direction: Direction | str = Direction.BOTH) -> None:
        """Send each PUBLISH twice with probability ``rate`` [0..1]."""
        self._set(_ways(direction), duplicate=_rate(rate, "duplicate"))

    def delay(self, seconds: float, direction: Direction | str = Direction.BOTH) -> None:
        """Hold every packet ``seconds`` on the link's clock before sending it on. [s]"""
        if not (isinstance(seconds, int | float) and seconds >= 0):
            raise InvalidArgument(f"delay must be >= 0 s, got {seconds!r}")
        self._set(_ways(direction), delay=float(seconds))

    def reorder(
        self, window: int, direction: Direction | str = Direction.BOTH, *, hold: float = 0.5
    ) -> None:
        """Shuffle PUBLISH packets in groups of ``window`` (1: no reordering); a group not
        full ``hold`` seconds after its last packet goes as it is. [packets, s]"""
        limit = self._link.config.max_reorder_window
        if not (isinstance(window, int) and 1 <= window <= limit):
            raise InvalidArgument(f"reorder window must be an int 1..{limit}, got {window!r}")
        if not (isinstance(hold, int | float) and hold > 0):
            raise InvalidArgument(f"reorder hold must be > 0 s, got {hold!r}")
        self._set(_ways(direction), reorder=window, hold=float(hold))

    def partition(self, mode: PartitionMode | str = PartitionMode.BLACKHOLE) -> None:
        """Cut off the connections in scope and refuse new ones until :meth:`heal`
        (``BLACKHOLE``: existing connections lose every packet; ``CUT``: they are reset)."""
        try:
            chosen = PartitionMode(mode)
        except ValueError:
            raise InvalidArgument(
                f"partition mode must be 'blackhole' or 'cut', got {mode!r}"
            ) from None

        def apply() -> None:
            self._faults.partition = chosen
            self._link._changed()
            if chosen is PartitionMode.CUT:
                for connection in self._in_scope():
                    connection._abort(count=True)

        self._link._on_loop(apply)

    def heal(self) -> None:
        """End the partition of this scope; blackholed connections whose other side has given
        up are reset now."""

        def apply() -> None:
            for faults in self._healed():
                faults.partition = None
            self._link._changed()

        self._link._on_loop(apply)

    def cut(self) -> int:
        """Reset every connection in scope now (both sides, no DISCONNECT); returns how many."""

        def apply() -> int:
            victims = list(self._in_scope())
            for connection in victims:
                connection._abort(count=True)
            return len(victims)

        return self._link._on_loop(apply)

    def clear(self) -> None:
        """Remove every fault setting of this scope (a partition heals)."""

        def apply() -> None:
            for faults in self._healed():
                faults.reset()
            self._link._changed()

        self._link._on_loop(apply)

    # -- scope ----------------------------------------------------------------------------

    def _set(self, ways: tuple[int, ...], **values: Any) -> None:
        def apply() -> None:
            for name, value in values.items():
                setting = getattr(self._faults, name)
                for way in ways:
                    setting[way] = value
            self._link._changed()

        self._link._on_loop(apply)

    def _in_scope(self) -> list[LinkConnection]:
        raise NotImplementedError

    def _healed(self) -> list[Faults]:
        """The settings that heal / clear touches."""
        return [self._faults]


class LinkScope(Controls):
    """The connections of one device (EnOS ``product_key`` and ``device_key`` of the CONNECT
    username) or one MQTT client id, present and future; made by :meth:`Link.device` and
    :meth:`Link.client`. Has the fault calls of the module docstring."""

    __slots__ = ("_faults", "_link", "client_id", "device_key", "product_key")

    def __init__(
        self,
        link: Link,
        product_key: str | None = None,
        device_key: str | None = None,
        client_id: str | None = None,
    ) -> None:
        self._link = link
        self._faults = Faults()
        self.product_key = product_key
        """The product key matched (``None``: any)."""
        self.device_key = device_key
        """The device key matched (``None``: any)."""
        self.client_id = client_id
        """The MQTT client id matched (``None``: any)."""

    def matches(self, connection: LinkConnection) -> bool:
        """Whether ``connection`` belongs to this scope (known once its CONNECT arrived)."""
        return (
            (self.product_key is None or self.product_key == connection.product_key)
            and (self.device_key is None or self.device_key == connection.device_key)
            and (self.client_id is None or self.client_id == connection.client_id)
            and connection.client_id is not None
        )

    def _in_scope(self) -> list[LinkConnection]:
        return [c for c in self._link._connections if self.matches(c)]

    def __repr__(self) -> str:
        return (
            f"LinkScope(product_key={self.product_key!r}, device_key={self.device_key!r}, "
            f"client_id={self.client_id!r})"
        )

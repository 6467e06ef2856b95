"""What an edge is told: its field devices mapped to sub-devices, and its settings."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..device import Backoff
from ..errors import InvalidArgument
from ._poller import FieldDevice
from ._upload import UploadMode

__all__ = ["EdgeConfig", "EdgeDevice"]


@dataclass(frozen=True, slots=True)
class EdgeDevice:
    """A field device behind an edge and the sub-device it is in the cloud.

    ``field`` is what the edge polls (its ``name`` names it in samples, errors and status);
    ``product_key`` / ``device_key`` are the sub-device's keys (a product of node type
    ``sub_device`` whose thing model the field device's point table feeds). With
    ``device_secret`` the sub-device must be registered already; without one the edge
    registers it through its gateway (``thing.device.register``) and keeps the secret the hub
    issues. ``display_name`` and ``timezone`` (an offset such as ``"+08:00"``) are used for
    that registration.
    """

    field: FieldDevice
    product_key: str
    device_key: str
    device_secret: str | None = None
    display_name: str | None = None
    timezone: str = "+00:00"

    def __post_init__(self) -> None:
        if not self.product_key or not self.device_key:
            raise InvalidArgument(
                f"field device {self.field.name!r} needs the sub-device's product key and "
                f"device key, got {self.product_key!r} and {self.device_key!r}"
            )

    @property
    def name(self) -> str:
        """The field device's name."""
        return self.field.name

    @property
    def keys(self) -> tuple[str, str]:
        """``(product_key, device_key)`` of the sub-device."""
        return (self.product_key, self.device_key)


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    """Settings of an :class:`~enos_lab.edge.Edge`.

    Collection: the field devices are polled every ``interval`` on the edge's clock, on
    epoch-aligned slots when ``align`` (a 60 s interval polls on the minute), with Modbus
    requests that time out after ``timeout`` wall-clock seconds.

    Upload: ``upload`` (real time, interval with ``period``, or on change with ``deadbands``
    and ``default_deadband``; see :class:`~enos_lab.edge.UploadFilter`); live samples go out in
    batch posts of at most ``batch_size`` samples; at most ``max_queue`` wait for their post
    (beyond that the oldest go to the cache). Each request waits ``request_timeout`` for the
    hub's reply.

    Cache and resume: while the hub is away samples go to the local cache (at most
    ``cache_max_samples`` samples and ``cache_max_bytes`` bytes; oldest evicted first, counted
    as lost per device); once back, the backlog is sent oldest first in resume batches of
    ``resume_batch`` samples, ``resume_pause`` apart on the clock (0: as fast as the hub
    answers).

    Connection: ``reconnect`` is the backoff between reconnect attempts; sub-devices whose
    login failed are tried again every ``relogin_interval``; ``keepalive`` is the MQTT keep
    alive (``None``: 60 s on a system clock, 0 on a simulated one, whose hub would time out
    an edge idle in simulated time).
    """

    interval: float = 10.0
    """Time between polls of a field device, on the edge's clock. [s]"""
    timeout: float = 1.0
    """Modbus request timeout, wall clock. [s]"""
    align: bool = True
    """Poll on multiples of ``interval`` since the epoch."""
    upload: UploadMode = UploadMode.REALTIME
    """Which samples are uploaded."""
    period: float | None = None
    """The period of :attr:`UploadMode.INTERVAL` uploads. [s]"""
    deadbands: Mapping[str, float] = field(default_factory=dict)
    """:attr:`UploadMode.ON_CHANGE`: point -> deadband, in the point's unit."""
    default_deadband: float = 0.0
    """:attr:`UploadMode.ON_CHANGE`: the deadband of points without one. [point's unit]"""
    batch_size: int = 100
    """Most samples per live batch post. [-]"""
    max_queue: int = 10_000
    """Most live samples waiting for their post; beyond, the oldest go to the cache. [-]"""
    request_timeout: float = 10.0
    """Wait for the hub's reply to a request, on the clock. [s]"""
    cache_max_samples: int = 1_000_000
    """Most samples the local cache holds. [-]"""
    cache_max_bytes: int = 256 * 1024 * 1024
    """Most bytes the local cache holds (as :class:`~enos_lab.edge.SampleCache` counts). [bytes]"""
    resume_batch: int = 100
    """Most cached samples per resume batch. [-]"""
    resume_pause: float = 0.0
    """Pause between resume batches, on the clock. [s]"""
    reconnect: Backoff = field(default_factory=Backoff)
    """Backoff between reconnect attempts to the hub (delays on the clock; default 1 s doubling
    to 60 s, full jitter, forever)."""
    relogin_interval: float = 60.0
    """Time between login attempts of sub-devices whose login failed, on the clock. [s]"""
    keepalive: int | None = None
    """MQTT keep alive (``None``: 60 s, or 0 on a simulated clock). [s]"""

    def __post_init__(self) -> None:
        for name in ("interval", "timeout", "request_timeout", "relogin_interval"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0 and math.isfinite(value)):
                raise InvalidArgument(
                    f"EdgeConfig.{name} must be a finite time > 0 s, got {value!r}"
                )
        if not (self.resume_pause >= 0 and math.isfinite(self.resume_pause)):
            raise InvalidArgument(
                f"EdgeConfig.resume_pause must be a finite time >= 0 s, got {self.resume_pause!r}"
            )
        for name in ("batch_size", "max_queue", "resume_batch", "cache_max_samples"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise InvalidArgument(f"EdgeConfig.{name} must be an int >= 1, got {value!r}")
        if self.keepalive is not None and self.keepalive < 0:
            raise InvalidArgument(f"EdgeConfig.keepalive must be >= 0, got {self.keepalive!r}")
        object.__setattr__(self, "upload", UploadMode(self.upload))
        object.__setattr__(self, "deadbands", dict(self.deadbands))

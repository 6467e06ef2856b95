"""How a device client connects: the reconnect policy and the connection mode."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import Enum

from ..errors import InvalidArgument

__all__ = ["Backoff", "ConnectionMode"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect policy: exponential backoff with full jitter.

    Before reconnect attempt ``n`` (0 for the first after a lost connection) the client waits
    :meth:`delay`: ``min(maximum, initial * multiplier ** n)``, or with ``jitter`` a uniform
    draw between 0 and that cap ("full jitter"), so that a fleet dropped at once does not come
    back at once. ``retries`` bounds the attempts after one loss (``None``: forever); a
    successful login starts the count again. Delays run on the client's clock.
    """

    initial: float = 1.0
    """Cap of the first delay. [s]"""
    maximum: float = 60.0
    """Largest cap of any delay. [s]"""
    multiplier: float = 2.0
    """Growth of the cap from one attempt to the next (>= 1)."""
    jitter: bool = True
    """Draw each delay uniformly in [0, cap] (full jitter) instead of waiting the cap."""
    retries: int | None = None
    """Most reconnect attempts after one lost connection; ``None``: no bound."""

    def __post_init__(self) -> None:
        if not (self.initial >= 0 and math.isfinite(self.initial)):
            raise InvalidArgument(
                f"Backoff.initial must be a finite delay >= 0, got {self.initial}"
            )
        if not (self.maximum >= self.initial and math.isfinite(self.maximum)):
            raise InvalidArgument(
                f"Backoff.maximum must be finite and >= initial ({self.initial}), "
                f"got {self.maximum}"
            )
        if not (self.multiplier >= 1 and math.isfinite(self.multiplier)):
            raise InvalidArgument(f"Backoff.multiplier must be >= 1, got {self.multiplier}")
        if self.retries is not None and self.retries < 0:
            raise InvalidArgument(f"Backoff.retries must be >= 0 or None, got {self.retries}")

    def cap(self, attempt: int) -> float:
        """The largest delay before attempt ``attempt`` (0-based). [s]"""
        if attempt < 0:
            raise InvalidArgument(f"attempt must be >= 0, got {attempt}")
        try:
            grown = self.initial * self.multiplier**attempt
        except OverflowError:
            return self.maximum
        return min(self.maximum, grown)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The wait before reconnect attempt ``attempt`` (0-based), drawn from ``rng`` with
        jitter. [s]"""
        cap = self.cap(attempt)
        return rng.uniform(0.0, cap) if self.jitter else cap

    def gives_up(self, attempt: int) -> bool:
        """Whether attempt ``attempt`` (0-based) is beyond ``retries``."""
        return self.retries is not None and attempt >= self.retries


class ConnectionMode(Enum):
    """How long a device client keeps its connection."""

    LONG = "long"
    """Connected from :meth:`~enos_lab.device.DeviceClient.connect` until
    :meth:`~enos_lab.device.DeviceClient.disconnect`, reconnecting when the connection drops
    (real-time devices)."""
    SHORT = "short"
    """Each operation connects, sends its requests, waits for their replies and disconnects
    (low-power devices). Commands reach the device only while an operation runs."""

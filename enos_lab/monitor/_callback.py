"""A function called with the tap's events, in a thread of its own (off the lab's loop).

:class:`EventCallback` reads a :class:`~enos_lab.tap.TapSubscription` in a daemon thread and
calls the function with each event, in order. The function may take its time (it never holds
up the lab's loop or the devices): while it works, events wait in the subscription's bounded
buffer, and when it falls more than ``maxsize`` behind the oldest are dropped (counted in
:attr:`EventCallback.dropped`). An exception it raises is logged and counted; the callback
goes on with the next event. :meth:`EventCallback.cancel` (or leaving the ``with`` block) stops
it: the events already buffered are still handed over first unless ``drain=False``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from ..errors import ClosedError
from ..tap import TapEvent, TapSubscription

__all__ = ["EventCallback"]

log = logging.getLogger("enos_lab.monitor")


class EventCallback:
    """Calls ``callback(event)`` for each event of ``subscription`` in a thread of its own
    (see the module docstring); the subscription belongs to it from now on."""

    def __init__(self, subscription: TapSubscription, callback: Callable[[TapEvent], Any]) -> None:
        self.subscription = subscription
        self.callback = callback
        self.calls = 0
        """Events handed to the callback."""
        self.errors = 0
        """Exceptions the callback raised (each logged)."""
        self._drain = True
        name = getattr(callback, "__name__", type(callback).__name__)
        self._thread = threading.Thread(target=self._run, name=f"enos-lab-on-{name}", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Events dropped because the callback fell behind by more than the buffer."""
        return self.subscription.dropped

    @property
    def active(self) -> bool:
        """Whether the thread still runs."""
        return self._thread.is_alive()

    def _run(self) -> None:
        subscription = self.subscription
        while True:
            try:
                event = subscription.get()
            except ClosedError:
                return
            if subscription.closed and not self._drain:
                return
            try:
                self.callback(event)
            except Exception:
                self.errors += 1
                log.exception("event callback %r failed on %r", self.callback, event)
            self.calls += 1

    def cancel(self, *, drain: bool = True, timeout: float | None = 10.0) -> None:
        """Stop: no new events; those buffered are handed over first (``drain``), then the
        thread ends (waited for at most ``timeout`` seconds; not when called from the
        callback itself). Idempotent. [s]"""
        self._drain = drain
        self.subscription.close()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def __enter__(self) -> EventCallback:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()

    def __repr__(self) -> str:
        state = "running" if self.active else "stopped"
        return f"<EventCallback {self.callback!r} {state}, calls={self.calls} errors={self.errors}>"

"""Stream definitions: what a stream reads, how it windows, and which derived point it writes.

A :class:`StreamDefinition` is checked on its own when it is made (names, window, aggregate,
group settings, lateness); what needs the thing models and the registry (the models and points
exist, the input is numeric, the output point is in the output device's model, no cycle) is
checked by :meth:`~enos_lab.streams.StreamEngine.check` when the stream is added. Definitions
round-trip through JSON (:meth:`StreamDefinition.to_json`, :func:`load_definitions`,
:func:`save_definitions`), which is how a lab keeps them (``streams.json`` in its data
directory).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from .._files import write_private
from ..errors import InvalidArgument
from ._window import ACROSS, Aggregate, Window

__all__ = ["STREAMS_FILE", "StreamDefinition", "load_definitions", "save_definitions"]

STREAMS_FILE = "streams.json"
"""File name of a lab's stream definitions inside its data directory."""

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}\Z")
_FORMAT = 1  # version of the JSON file


def _fail(name: object, what: str, problem: str) -> InvalidArgument:
    return InvalidArgument(f"stream {name!r}: {what} {problem}")


def _text(name: object, what: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise _fail(name, what, f"must be a non-empty string, not {value!r}")


@dataclass(frozen=True)
class StreamDefinition:
    """A windowed computation on one measurepoint of a set of devices, written back as a
    derived measurepoint (see :mod:`enos_lab.streams`).

    The input is ``point_id`` of the devices of ``model_id`` and/or ``product_key`` (both
    given: the product's devices, whose model must be ``model_id``), narrowed to
    ``device_keys`` when given. Per device (``group=False``) each device gets its own windows
    and its own derived point ``output_point`` (a point of its model). Across the group
    (``group=True``) all selected devices share the windows and the result is written to
    ``output_point`` of the one ``output_device`` ``(product_key, device_key)``, e.g. a site
    device; ``across`` combines the devices' own aggregates (``"sum"`` of each inverter's
    ``"avg"`` is the fleet's power), without it the points are pooled.
    """

    name: str
    """The stream's name: 1..64 letters, digits, ``_``, ``-``, ``.``."""
    point_id: str
    """The input measurepoint."""
    window: Window
    """The window shape (:meth:`Window.tumbling`, :meth:`Window.sliding`)."""
    aggregate: Aggregate
    """What each window computes (a name such as ``"avg"`` is accepted)."""
    output_point: str
    """The derived measurepoint written with each closed window's result."""
    model_id: str | None = None
    """Devices of this thing model (``None``: those of ``product_key``)."""
    product_key: str | None = None
    """Devices of this product (``None``: every product of ``model_id``)."""
    device_keys: tuple[str, ...] = ()
    """Only these devices (empty: all selected by model/product)."""
    group: bool = False
    """Across the selected devices (one result per window) instead of per device."""
    across: Aggregate | None = None
    """How a group combines its devices' aggregates (avg, min, max, sum, count), or ``None``:
    the group's points are pooled."""
    output_device: tuple[str, str] | None = None
    """The ``(product_key, device_key)`` a group's result is written to; only for groups."""
    lateness: float = 0.0
    """How far behind the newest point (and behind the lab clock) points are still taken. [s]"""
    description: str = ""
    """Free text."""

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidArgument(
                f"stream name must be 1..64 letters, digits, '_', '-' or '.', not {name!r}"
            )
        _text(name, "point_id", self.point_id)
        _text(name, "output_point", self.output_point)
        _text(name, "model_id", self.model_id, optional=True)
        _text(name, "product_key", self.product_key, optional=True)
        if self.model_id is None and self.product_key is None:
            raise _fail(name, "input", "needs a model_id or a product_key (or both)")
        if not isinstance(self.window, Window):
            raise _fail(name, "window", f"must be a Window, not {self.window!r}")
        object.__setattr__(self, "aggregate", _aggregate(name, "aggregate", self.aggregate))
        keys: object = self.device_keys
        if isinstance(keys, str) or not isinstance(keys, Iterable):
            raise _fail(name, "device_keys", f"must be a list of device keys, not {keys!r}")
        keys = tuple(keys)
        for key in keys:
            _text(name, "device_keys", key)
        if len(set(keys)) != len(keys):
            raise _fail(name, "device_keys", f"name a device twice: {list(keys)!r}")
        object.__setattr__(self, "device_keys", keys)
        if not isinstance(self.group, bool):
            raise _fail(name, "group", f"must be True or False, not {self.group!r}")
        if self.across is not None:
            across = _aggregate(name, "across", self.across)
            if across not in ACROSS:
                names = ", ".join(sorted(a.value for a in ACROSS))
                raise _fail(name, "across", f"must be one of {names}, not {self.across!r}")
            if not self.group:
                raise _fail(name, "across", "is only for a group (group=True)")
            object.__setattr__(self, "across", across)
        self._check_output()
        object.__setattr__(self, "lateness", _seconds(name, self.lateness))
        if not isinstance(self.description, str):
            raise _fail(name, "description", f"must be a string, not {self.description!r}")

    def _check_output(self) -> None:
        name, out = self.name, self.output_device
        if not self.group:
            if out is not None:
                raise _fail(
                    name, "output_device", "is only for a group: per device, each device's "
                    "derived point is written to that device",
                )  # fmt: skip
            if self.output_point == self.point_id:
                raise _fail(name, "output_point", f"{self.output_point!r} is its own input")
            return
        if (
            out is None
            or isinstance(out, str)
            or not isinstance(out, Sequence)
            or len(out) != 2
            or not all(isinstance(k, str) and k for k in out)
        ):
            raise _fail(
                name, "output_device", f"must be (product_key, device_key) for a group, not {out!r}"
            )
        object.__setattr__(self, "output_device", (out[0], out[1]))

    @property
    def lateness_ms(self) -> int:
        """:attr:`lateness` in milliseconds. [ms]"""
        return round(self.lateness * 1000)

    def selects(self, product_key: str, device_key: str) -> bool:
        """Whether a device of the right model is selected by the product and device list."""
        if self.product_key is not None and product_key != self.product_key:
            return False
        return not self.device_keys or device_key in self.device_keys

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (:meth:`from_json` reads it back)."""
        return {
            "name": self.name,
            "point_id": self.point_id,
            "window": {"size_ms": self.window.size_ms, "step_ms": self.window.step_ms},
            "aggregate": self.aggregate.value,
            "output_point": self.output_point,
            "model_id": self.model_id,
            "product_key": self.product_key,
            "device_keys": list(self.device_keys),
            "group": self.group,
            "across": None if self.across is None else self.across.value,
            "output_device": None if self.output_device is None else list(self.output_device),
            "lateness": self.lateness,
            "description": self.description,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StreamDefinition:
        """The definition :meth:`to_json` gave (unknown keys are ignored)."""
        if not isinstance(data, Mapping):
            raise InvalidArgument(f"a stream definition must be a JSON object, not {data!r}")
        name = data.get("name")
        window = data.get("window")
        if not isinstance(window, Mapping):
            raise _fail(name, "window", f"must be an object with size_ms and step_ms: {window!r}")
        out = data.get("output_device")
        return cls(
            name=data.get("name"),  # type: ignore[arg-type]  # checked by __post_init__
            point_id=data.get("point_id"),  # type: ignore[arg-type]
            window=Window(window.get("size_ms"), window.get("step_ms")),  # type: ignore[arg-type]
            aggregate=data.get("aggregate"),  # type: ignore[arg-type]
            output_point=data.get("output_point"),  # type: ignore[arg-type]
            model_id=data.get("model_id"),
            product_key=data.get("product_key"),
            device_keys=tuple(data.get("device_keys") or ()),
            group=data.get("group", False),
            across=data.get("across"),
            output_device=None if out is None else tuple(out),
            lateness=data.get("lateness", 0.0),
            description=data.get("description", ""),
        )


def _aggregate(name: object, what: str, value: object) -> Aggregate:
    try:
        return Aggregate.parse(value, what)  # type: ignore[arg-type]
    except InvalidArgument as exc:
        raise InvalidArgument(f"stream {name!r}: {exc}") from None


def _seconds(name: object, value: object) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise _fail(name, "lateness", f"must be seconds >= 0 (or a timedelta), not {value!r}")
    return float(value)


def load_definitions(path: Path) -> list[StreamDefinition]:
    """The definitions kept in ``path`` (none if it does not exist). A file that is not
    JSON raises :class:`~enos_lab.errors.InvalidArgument` naming it; a bad definition in it
    raises the definition's own error."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise InvalidArgument(f"stream definitions in {path}: not JSON ({exc})") from exc
    streams = document.get("streams") if isinstance(document, dict) else None
    if not isinstance(streams, list):
        raise InvalidArgument(f"stream definitions in {path}: expected {{'streams': [...]}}")
    return [StreamDefinition.from_json(item) for item in streams]


def save_definitions(path: Path, definitions: Iterable[StreamDefinition]) -> None:
    """Write ``definitions`` to ``path`` (0600, atomically: a reader sees the old file or the
    new one)."""
    document = {"format": _FORMAT, "streams": [d.to_json() for d in definitions]}
    write_private(path, json.dumps(document, indent=2, sort_keys=True).encode())

"""Remote control from the facade, checked against the thing model (EnOS ``invokeService``,
``setMeasurepoints``, ``getMeasurepoints``).

:meth:`Control.invoke_service` sends a service invocation to a device (a sub-device through its
gateway), with the input parameters checked against the service in the device's thing model
before anything is sent, and returns the device's output, checked against the same service;
:meth:`Control.set_measurepoints` and :meth:`Control.get_measurepoints` do the same for
measurepoint set and get. A device that answers with a code other than 200 raises
:class:`~enos_lab.errors.CommandFailed` carrying its code, message and data. A product without a
thing model takes any parameters.

Every command goes through the lab's :class:`~enos_lab.control.CommandService` and is recorded
(:meth:`Control.commands`, :meth:`Control.command`). By default it is instant and synchronous:
a device that is offline raises :class:`~enos_lab.errors.DeviceOffline` at once, as EnOS's
instant commands fail, and the call waits for the reply. ``wait=False`` returns a
:class:`~enos_lab.control.CommandHandle` instead; ``pending_ttl`` makes a cached command
(EnOS ``pendingTtl``), queued while the device is offline and delivered when it comes online.
:meth:`Control.send_raw` sends raw bytes to a custom-format (passthrough) device
(``model/down_raw``) and returns the bytes it answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pandas as pd

from ..control import CommandHandle, CommandRecord, CommandService, CommandStatus
from ..enos import Reply, TopicKind
from ..errors import CommandFailed, InvalidArgument, NotFound, ValidationError
from ..model import ThingModel
from ..registry import DataFormat
from ..store import TimeLike
from ._core import LabCore, coroutine_form_of

__all__ = ["Control"]


class Control(LabCore):
    """Service invocation and measurepoint set/get, checked against the thing model (mixed
    into :class:`~enos_lab.lab.Lab`)."""

    def _model_of(self, product_key: str, device_key: str) -> ThingModel | None:
        """The device's thing model (None: its product has none); NotFound for an unknown
        device."""
        self.registry.get_device(product_key, device_key)
        model_id = self.registry.get_product(product_key).model_id
        return None if model_id is None else self.models.get(model_id)

    def _command_service(self, what: str) -> CommandService:
        service = self._running().control
        if service is None:
            raise InvalidArgument(
                f"{what} needs the IoT hub services, but this lab is anonymous (a plain MQTT "
                "broker); create it with anonymous=False"
            )
        return service

    def _command(
        self,
        product_key: str,
        device_key: str,
        kind: TopicKind,
        params: object,
        *,
        item_id: str = "",
        timeout: float | None,
        what: str,
        wait: bool,
        pending_ttl: float | None,
        convert: Callable[[Reply], Any],
        service_id: str | None = None,
    ) -> Any:
        """Record and send a command; with ``wait`` its converted result (CommandFailed
        unless 200), else its :class:`~enos_lab.control.CommandHandle`."""
        service = self._command_service(what)

        def checked(reply: Reply) -> Any:
            return convert(self._answer(reply, product_key, device_key, what))

        async def submit() -> CommandHandle:
            return service.submit(
                product_key,
                device_key,
                kind,
                params,
                item_id=item_id,
                timeout=timeout,
                pending_ttl=pending_ttl,
                convert=checked,
                service_id=service_id,
            )

        handle = self.run(submit())
        return handle.result() if wait else handle

    def _answer(self, reply: Reply, product_key: str, device_key: str, what: str) -> Any:
        if not reply.ok:
            raise CommandFailed(
                reply.code,
                reply.message,
                data=reply.data,
                product_key=product_key,
                device_key=device_key,
                command=what,
            )
        return reply.data

    def invoke_service(
        self,
        product_key: str,
        device_key: str,
        service_id: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        wait: bool = True,
        pending_ttl: float | None = None,
        rrpc: bool = False,
    ) -> dict[str, Any] | CommandHandle:
        """Invoke the service ``service_id`` of a device with ``params`` and return its output
        (EnOS ``invokeService``).

        The input parameters are checked against the service in the device's thing model
        before anything is sent, and the device's output after it answered
        (:class:`~enos_lab.errors.ValidationError`, EnOS 1204, naming the parameter). Raises
        :class:`~enos_lab.errors.NotFound` for an unknown device or a service its model lacks,
        :class:`~enos_lab.errors.DeviceOffline` when it has no live connection (an instant
        command), :class:`~enos_lab.errors.CommandFailed` when it answers with a code other
        than 200 and :class:`TimeoutError` when it does not answer within ``timeout`` [s]
        (default: the IoT hub's ``command_timeout``).

        ``wait=False`` returns a :class:`~enos_lab.control.CommandHandle` at once (``id``,
        ``status``, ``result(timeout)``, ``await handle``: the same output or error).
        ``pending_ttl`` [s] makes it a cached command (EnOS ``pendingTtl``): a device offline
        gets it when it comes online, in order with its other cached commands, one at a time,
        at most 50 waiting (one more: :class:`~enos_lab.errors.LimitExceeded`); not sent
        within ``pending_ttl`` it expires (:class:`~enos_lab.errors.CommandExpired`). Every
        command is recorded (:meth:`commands`).

        ``rrpc=True`` sends it as a legacy RRPC request (protocol reference 9.4): method
        ``thing.service.{service_id}`` on ``/sys/{pk}/{dk}/rrpc/request/{rrpcId}`` with a fresh
        rrpc id, answered on ``rrpc/response/{rrpcId}``; the same checks, results, errors and
        ``wait``/``pending_ttl`` semantics, recorded as kind ``rrpc:{service_id}``. The current
        official EnOS device SDKs have no RRPC handler (they do not answer it: the call times
        out); the lab's device SDK (:mod:`enos_lab.device`) hands it to the service's handler.
        """
        model = self._model_of(product_key, device_key)
        what = f"{'RRPC ' if rrpc else ''}service {service_id!r}"
        if not isinstance(rrpc, bool):
            raise InvalidArgument(f"{what}: rrpc must be True or False, got {rrpc!r}")
        if rrpc and (not isinstance(service_id, str) or not service_id):
            raise InvalidArgument(
                f"RRPC: service_id must be a non-empty string, got {service_id!r}"
            )
        given = {} if params is None else params
        if not isinstance(given, Mapping):
            raise InvalidArgument(f"{what}: params must be a mapping, got {given!r}")
        if model is not None:
            if service_id not in model.services:
                known = ", ".join(sorted(model.services)) or "none"
                raise NotFound(
                    f"model {model.model_id!r} of device {product_key}/{device_key} has no "
                    f"service {service_id!r} (its services: {known})"
                )
            given = model.validate_service_input(service_id, dict(given))

        def output(data: Any) -> dict[str, Any]:
            if model is None:
                return data if isinstance(data, dict) else {"data": data}
            try:
                return model.validate_service_output(service_id, data)
            except ValidationError as exc:
                raise ValidationError(
                    f"device {product_key}/{device_key} answered {what} with output that does "
                    f"not fit its model: {exc}",
                    exc.code,
                ) from None

        if rrpc:  # the topic carries a fresh rrpc id (the IoT hub's), the method the service
            kind, item_id, method_service = TopicKind.RRPC_REQUEST, "", service_id
        else:
            kind, item_id, method_service = TopicKind.SERVICE_INVOKE, service_id, None
        return self._command(  # type: ignore[no-any-return]
            product_key,
            device_key,
            kind,
            dict(given),
            item_id=item_id,
            timeout=timeout,
            what=what,
            wait=wait,
            pending_ttl=pending_ttl,
            convert=output,
            service_id=method_service,
        )

    def set_measurepoints(
        self,
        product_key: str,
        device_key: str,
        values: Mapping[str, Any],
        *,
        timeout: float | None = None,
        wait: bool = True,
        pending_ttl: float | None = None,
    ) -> CommandHandle | None:
        """Set measurepoints of a device (EnOS ``setMeasurepoints``), checked against its
        thing model before they are sent; returns once the device answered 200 (``wait=False``:
        a :class:`~enos_lab.control.CommandHandle` at once). Raises, and takes ``wait`` and
        ``pending_ttl``, as :meth:`invoke_service` does."""
        model = self._model_of(product_key, device_key)
        if not isinstance(values, Mapping) or not values:
            raise InvalidArgument(f"set_measurepoints: expected point values, got {values!r}")
        if model is not None:
            model.validate_measurepoints(dict(values))
        return self._command(  # type: ignore[no-any-return]
            product_key,
            device_key,
            TopicKind.MEASUREPOINT_SET,
            dict(values),
            timeout=timeout,
            what="measurepoint set",
            wait=wait,
            pending_ttl=pending_ttl,
            convert=lambda data: None,
        )

    def get_measurepoints(
        self,
        product_key: str,
        device_key: str,
        point_ids: Iterable[str],
        *,
        timeout: float | None = None,
        wait: bool = True,
        pending_ttl: float | None = None,
    ) -> dict[str, Any] | CommandHandle:
        """Ask a device for the current values of measurepoints (EnOS ``getMeasurepoints``);
        the ids are checked against its thing model before the command is sent, and the
        values it answers with after. Raises, and takes ``wait`` and ``pending_ttl``, as
        :meth:`invoke_service` does."""
        model = self._model_of(product_key, device_key)
        ids = [point_ids] if isinstance(point_ids, str) else list(point_ids)
        if not ids or not all(isinstance(point, str) and point for point in ids):
            raise InvalidArgument(f"get_measurepoints: expected point ids, got {point_ids!r}")
        if model is not None:
            unknown = [point for point in ids if point not in model.measurepoints]
            if unknown:
                raise NotFound(
                    f"model {model.model_id!r} of device {product_key}/{device_key} has no "
                    f"measurepoint {unknown[0]!r}"
                )

        def values(data: Any) -> dict[str, Any]:
            if not isinstance(data, dict):
                raise ValidationError(
                    f"device {product_key}/{device_key} answered measurepoint get with "
                    f"{data!r}, not point values"
                )
            if model is not None:
                try:
                    model.validate_measurepoints(data)
                except ValidationError as exc:
                    raise ValidationError(
                        f"device {product_key}/{device_key} answered measurepoint get with "
                        f"values that do not fit its model: {exc}",
                        exc.code,
                    ) from None
            return data

        return self._command(  # type: ignore[no-any-return]
            product_key,
            device_key,
            TopicKind.MEASUREPOINT_GET,
            ids,
            timeout=timeout,
            what="measurepoint get",
            wait=wait,
            pending_ttl=pending_ttl,
            convert=values,
        )

    def send_raw(
        self,
        product_key: str,
        device_key: str,
        payload: bytes,
        *,
        timeout: float | None = None,
        wait: bool = True,
        pending_ttl: float | None = None,
    ) -> bytes | CommandHandle:
        """Send raw bytes to a device of a custom-format (passthrough) product on
        ``model/down_raw`` as they are, and return the raw bytes it answers on
        ``down_raw_reply`` (protocol reference 7.5; the product's codec, if any, is not used
        either way). Raw replies carry no id: a reply answers the device's oldest raw command
        waiting.

        Refused with :class:`~enos_lab.errors.InvalidArgument` for a product whose data format
        is JSON, or a ``payload`` that is not bytes. Recorded (kind ``raw``, the bytes as hex
        text) and taking ``wait``, ``timeout`` and ``pending_ttl`` as :meth:`invoke_service`
        does (``wait=False``: a :class:`~enos_lab.control.CommandHandle` whose result is the
        bytes).
        """
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise InvalidArgument(f"send_raw: payload must be bytes, got {payload!r}")
        self.registry.get_device(product_key, device_key)
        product = self.registry.get_product(product_key)
        if product.data_format is not DataFormat.CUSTOM:
            raise InvalidArgument(
                f"product {product_key} uses the {product.data_format.value} data format: raw "
                "down is for custom-format (passthrough) products"
            )
        return self._command(  # type: ignore[no-any-return]
            product_key,
            device_key,
            TopicKind.MODEL_DOWN_RAW,
            bytes(payload),
            timeout=timeout,
            what="raw down",
            wait=wait,
            pending_ttl=pending_ttl,
            convert=_raw_data,
        )

    # -- command records ---------------------------------------------------------------------

    def commands(
        self,
        product_key: str | None = None,
        device_key: str | None = None,
        *,
        status: CommandStatus | str | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
    ) -> pd.DataFrame:
        """The commands sent to a product's / a device's devices (``None``: all) created in
        ``[start, end)``, optionally of one ``status`` (:class:`~enos_lab.control.
        CommandStatus` or its value: created, queued, sent, replied, failed, expired,
        timed_out). Columns :data:`~enos_lab.control.COMMAND_COLUMNS` (times tz-aware UTC),
        by creation time; kept across restarts (``commands.sqlite3``)."""
        return self._command_service("commands").records.frame(
            product_key, device_key, status=status, start=start, end=end
        )

    def command(self, command_id: str) -> CommandRecord:
        """The record of the command ``command_id`` (a :class:`~enos_lab.control.
        CommandHandle`'s ``id``); :class:`~enos_lab.errors.NotFound` if there is none."""
        return self._command_service("command").records.get(command_id)

    ainvoke_service = coroutine_form_of(invoke_service)
    aset_measurepoints = coroutine_form_of(set_measurepoints)
    aget_measurepoints = coroutine_form_of(get_measurepoints)
    asend_raw = coroutine_form_of(send_raw)
    acommands = coroutine_form_of(commands)
    acommand = coroutine_form_of(command)


def _raw_data(data: Any) -> bytes:
    """The bytes a device answered a raw command with."""
    return bytes(data)

"""Remote control from the facade, checked against the thing model (EnOS ``invokeService``,
``setMeasurepoints``, ``getMeasurepoints``).

:meth:`Control.invoke_service` sends a service invocation to a device (a sub-device through its
gateway), with the input parameters checked against the service in the device's thing model
before anything is sent, and returns the device's output, checked against the same service;
:meth:`Control.set_measurepoints` and :meth:`Control.get_measurepoints` do the same for
measurepoint set and get. A device that answers with a code other than 200 raises
:class:`~enos_lab.errors.CommandFailed` carrying its code, message and data. A product without a
thing model takes any parameters. The command is sent as :meth:`Lab.send_command
<enos_lab.lab.Lab.send_command>` sends it (instant: a device that is offline raises
:class:`~enos_lab.errors.DeviceOffline` at once, as EnOS's instant commands fail).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..enos import Reply, TopicKind
from ..errors import CommandFailed, InvalidArgument, NotFound, ValidationError
from ..model import ThingModel
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
    ) -> Any:
        """Send a command, wait for the reply and return its data (CommandFailed unless
        200)."""
        iothub = self._require_iothub("commands")
        reply = self.run(
            iothub.send_command(
                product_key, device_key, kind, params, item_id=item_id, wait=True, timeout=timeout
            )
        )
        return self._answer(reply, product_key, device_key, what)

    def _answer(self, reply: Reply | None, product_key: str, device_key: str, what: str) -> Any:
        assert reply is not None  # sent with wait=True
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
    ) -> dict[str, Any]:
        """Invoke the service ``service_id`` of a device with ``params`` and return its output
        (EnOS ``invokeService``, synchronous).

        The input parameters are checked against the service in the device's thing model
        before anything is sent, and the device's output after it answered
        (:class:`~enos_lab.errors.ValidationError`, EnOS 1204, naming the parameter). Raises
        :class:`~enos_lab.errors.NotFound` for an unknown device or a service its model lacks,
        :class:`~enos_lab.errors.DeviceOffline` when it has no live connection,
        :class:`~enos_lab.errors.CommandFailed` when it answers with a code other than 200 and
        :class:`TimeoutError` when it does not answer within ``timeout`` [s] (default: the IoT
        hub's ``command_timeout``).
        """
        model = self._model_of(product_key, device_key)
        what = f"service {service_id!r}"
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
        data = self._command(
            product_key,
            device_key,
            TopicKind.SERVICE_INVOKE,
            dict(given),
            item_id=service_id,
            timeout=timeout,
            what=what,
        )
        if model is None:
            return data if isinstance(data, dict) else {"data": data}
        try:
            return model.validate_service_output(service_id, data)
        except ValidationError as exc:
            raise ValidationError(
                f"device {product_key}/{device_key} answered {what} with output that does not "
                f"fit its model: {exc}",
                exc.code,
            ) from None

    def set_measurepoints(
        self,
        product_key: str,
        device_key: str,
        values: Mapping[str, Any],
        *,
        timeout: float | None = None,
    ) -> None:
        """Set measurepoints of a device (EnOS ``setMeasurepoints``), checked against its
        thing model before they are sent; returns once the device answered 200. Raises as
        :meth:`invoke_service` does."""
        model = self._model_of(product_key, device_key)
        if not isinstance(values, Mapping) or not values:
            raise InvalidArgument(f"set_measurepoints: expected point values, got {values!r}")
        if model is not None:
            model.validate_measurepoints(dict(values))
        self._command(
            product_key,
            device_key,
            TopicKind.MEASUREPOINT_SET,
            dict(values),
            timeout=timeout,
            what="measurepoint set",
        )

    def get_measurepoints(
        self,
        product_key: str,
        device_key: str,
        point_ids: Iterable[str],
        *,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Ask a device for the current values of measurepoints (EnOS ``getMeasurepoints``);
        the ids are checked against its thing model before the command is sent, and the
        values it answers with after. Raises as :meth:`invoke_service` does."""
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
        data = self._command(
            product_key,
            device_key,
            TopicKind.MEASUREPOINT_GET,
            ids,
            timeout=timeout,
            what="measurepoint get",
        )
        if not isinstance(data, dict):
            raise ValidationError(
                f"device {product_key}/{device_key} answered measurepoint get with {data!r}, "
                "not point values"
            )
        if model is not None:
            try:
                model.validate_measurepoints(data)
            except ValidationError as exc:
                raise ValidationError(
                    f"device {product_key}/{device_key} answered measurepoint get with values "
                    f"that do not fit its model: {exc}",
                    exc.code,
                ) from None
        return data

    ainvoke_service = coroutine_form_of(invoke_service)
    aset_measurepoints = coroutine_form_of(set_measurepoints)
    aget_measurepoints = coroutine_form_of(get_measurepoints)

"""The thing model and the catalog that resolves inheritance.

Theory of operation
-------------------
A :class:`ThingModel` is always *self-contained*: its element maps hold every element a device of
that model has, inherited ones included, so validating a message needs nothing but the model.
``parent_id`` names the parent and :class:`InheritedIds` records which elements came from it
(rendered as ``inherited*Ids`` in ``tsltemplate/get`` replies).

A child is declared with only its own elements and ``parent_id`` set, and is resolved by adding
it to a :class:`ModelCatalog` (the one way to build a child): the catalog copies the parent's
elements in and refuses a child that redefines one of them (EnOS: a child cannot modify
inherited elements; multi-level inheritance works because parents are stored resolved). Adding an
already resolved model (e.g. loaded from saved JSON) is accepted when its inherited elements are
exactly the parent's. :meth:`ThingModel.clone` makes an independent copy with no parent.

Validation methods compile their checks once, when the model is built (the accepted values and
coercions are listed in the :mod:`enos_lab.model` docstring).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import AlreadyExists, ModelError, NotFound, ValidationError
from ._types import (
    Attribute,
    Event,
    I18nText,
    Measurepoint,
    Param,
    Service,
    check_identifier,
    frozen_mapping,
    reduce_by_init,
)
from ._values import Check, Mismatch, compile_check, compile_params, describe, split_quality

__all__ = [
    "CODE_ATTRIBUTE_FORMAT",
    "CODE_INVALID",
    "CODE_MEASUREPOINT_FORMAT",
    "InheritedIds",
    "ModelCatalog",
    "PointProblem",
    "ThingModel",
    "ValidatedPoints",
]

CODE_INVALID = 1204
"""EnOS: model validation failed (unknown identifier or wrong type)."""
CODE_MEASUREPOINT_FORMAT = 1206
"""EnOS: measurepoint post data format error (``measurepoints`` is not an object)."""
CODE_ATTRIBUTE_FORMAT = 1207
"""EnOS: attribute update format error (``attributes`` is not an object)."""

_KINDS = ("attributes", "measurepoints", "services", "events")
_SINGULAR = {
    "attributes": "attribute",
    "measurepoints": "measurepoint",
    "services": "service",
    "events": "event",
}


@dataclass(frozen=True, slots=True)
class InheritedIds:
    """Identifiers of the elements a model inherited from its parent, by kind."""

    attributes: frozenset[str] = frozenset()
    measurepoints: frozenset[str] = frozenset()
    services: frozenset[str] = frozenset()
    events: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for kind in _KINDS:
            object.__setattr__(self, kind, frozenset(getattr(self, kind)))

    def __bool__(self) -> bool:
        return any(getattr(self, kind) for kind in _KINDS)


@dataclass(frozen=True, slots=True)
class PointProblem:
    """One value that failed validation: the element id, the EnOS ``code`` and a message."""

    point_id: str
    code: int
    message: str

    def error(self) -> ValidationError:
        """This problem as an exception."""
        return ValidationError(self.message, self.code)


@dataclass(frozen=True, slots=True)
class ValidatedPoints:
    """Result of validating a measurepoint map.

    ``values``: point id -> normalised value (for quality points the bare value);
    ``quality``: point id -> quality, for points that carried one;
    ``passthrough``: ids accepted unchecked because the model allows additional measurepoints;
    ``problems``: points left out because they failed (empty from ``validate_measurepoints``).
    """

    values: Mapping[str, Any]
    quality: Mapping[str, int] = field(default_factory=dict)
    passthrough: frozenset[str] = frozenset()
    problems: tuple[PointProblem, ...] = ()

    @property
    def ok(self) -> bool:
        """True when no point failed."""
        return not self.problems


_slot = vars(ValidatedPoints)  # the slot descriptors set fields without the frozen __setattr__
_set_values = _slot["values"].__set__
_set_quality = _slot["quality"].__set__
_set_passthrough = _slot["passthrough"].__set__
_set_problems = _slot["problems"].__set__
_NO_PASSTHROUGH: frozenset[str] = frozenset()


def _validated(
    values: dict[str, Any],
    quality: dict[str, int],
    passthrough: list[str],
    problems: list[PointProblem],
) -> ValidatedPoints:
    """``ValidatedPoints(...)`` for the per-message path, without the frozen ``__init__``."""
    result: ValidatedPoints = object.__new__(ValidatedPoints)
    _set_values(result, values)
    _set_quality(result, quality)
    _set_passthrough(result, frozenset(passthrough) if passthrough else _NO_PASSTHROUGH)
    _set_problems(result, tuple(problems) if problems else ())
    return result


def _where(path: str) -> str:
    return f" at {path!r}" if path else ""


@dataclass(frozen=True, slots=True)
class ThingModel:
    """A thing model (EnOS TSL): attributes, measurepoints, services and events.

    Element maps are keyed by identifier (each key must equal its element's ``identifier``);
    identifiers are unique across the four kinds. ``allow_additional_measurepoints`` is EnOS's
    "Support Passthrough": undeclared measurepoints are accepted unchecked.
    ``allow_additional_attributes`` does the same for attributes. ``category`` is a free label
    (rendered as ``tslModelCatagory``).
    """

    model_id: str
    name: I18nText
    attributes: Mapping[str, Attribute] = field(default_factory=dict)
    measurepoints: Mapping[str, Measurepoint] = field(default_factory=dict)
    services: Mapping[str, Service] = field(default_factory=dict)
    events: Mapping[str, Event] = field(default_factory=dict)
    desc: I18nText | None = None
    org_id: str | None = None
    category: str | None = None
    parent_id: str | None = None
    inherited: InheritedIds = InheritedIds()
    allow_additional_measurepoints: bool = False
    allow_additional_attributes: bool = False
    _mp_checks: dict[str, tuple[Check, bool]] = field(init=False, repr=False, compare=False)
    _attr_checks: dict[str, Check] = field(init=False, repr=False, compare=False)
    _param_checks: dict[tuple[str, str], tuple[dict[str, Check], tuple[str, ...]]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not isinstance(self.model_id, str) or not self.model_id:
            raise ModelError(f"thing model: expected a non-empty model_id, found {self.model_id!r}")
        check_identifier(self.model_id, "thing model id")
        if not isinstance(self.name, I18nText):
            raise ModelError(f"model {self.model_id!r}: name must be I18nText, found {self.name!r}")
        kinds: dict[str, type[Any]] = {
            "attributes": Attribute,
            "measurepoints": Measurepoint,
            "services": Service,
            "events": Event,
        }
        owner: dict[str, str] = {}
        for kind, cls in kinds.items():
            elements: Mapping[str, Any] = getattr(self, kind)
            for key, element in elements.items():
                what = f"model {self.model_id!r} {_SINGULAR[kind]} {key!r}"
                if not isinstance(element, cls):
                    raise ModelError(f"{what}: expected {cls.__name__}, found {element!r}")
                if element.identifier != key:
                    raise ModelError(f"{what}: key differs from identifier {element.identifier!r}")
                if key in owner:
                    raise ModelError(
                        f"model {self.model_id!r}: identifier {key!r} is used by both "
                        f"{owner[key]} and {_SINGULAR[kind]}"
                    )
                owner[key] = _SINGULAR[kind]
            object.__setattr__(self, kind, frozen_mapping(elements))
            stray = getattr(self.inherited, kind) - set(elements)
            if stray:
                raise ModelError(
                    f"model {self.model_id!r}: inherited {kind} {sorted(stray)} are not elements"
                )
        if self.inherited and self.parent_id is None:
            raise ModelError(f"model {self.model_id!r}: inherited elements but no parent_id")
        object.__setattr__(
            self,
            "_mp_checks",
            {k: (compile_check(m.spec), m.has_quality) for k, m in self.measurepoints.items()},
        )
        attr_checks = {k: compile_check(a.spec) for k, a in self.attributes.items()}
        for key, attribute in self.attributes.items():
            if attribute.default_value is not None:
                try:
                    attr_checks[key](attribute.default_value)
                except Mismatch as exc:
                    raise ModelError(
                        f"model {self.model_id!r} attribute {key!r}: default value "
                        f"{describe(exc.found)} does not fit: expected {exc.expected}"
                    ) from None
        object.__setattr__(self, "_attr_checks", attr_checks)
        param_checks: dict[tuple[str, str], tuple[dict[str, Check], tuple[str, ...]]] = {}
        for sid, service in self.services.items():
            param_checks["input", sid] = _param_table(service.input_data)
            param_checks["output", sid] = _param_table(service.output_data)
        for eid, event in self.events.items():
            param_checks["event", eid] = _param_table(event.output_data)
        object.__setattr__(self, "_param_checks", param_checks)

    def __reduce__(self) -> tuple[Any, ...]:
        return reduce_by_init(self)

    # ----------------------------------------------------------------- relations

    def clone(self, model_id: str, name: I18nText | None = None) -> ThingModel:
        """An independent copy under ``model_id``: every element, no parent, nothing inherited."""
        return dataclasses.replace(
            self,
            model_id=model_id,
            name=self.name if name is None else name,
            parent_id=None,
            inherited=InheritedIds(),
        )

    def own_elements(self) -> ThingModel:
        """This model with only its own (not inherited) elements: the child as declared."""
        if not self.inherited:
            return self
        own = {
            kind: _without(getattr(self, kind), getattr(self.inherited, kind)) for kind in _KINDS
        }
        return dataclasses.replace(
            self,
            attributes=own["attributes"],
            measurepoints=own["measurepoints"],
            services=own["services"],
            events=own["events"],
            inherited=InheritedIds(),
        )

    # ----------------------------------------------------------------- validation

    def _fail(self, kind: str, element: str, exc: Mismatch) -> str:
        return (
            f"model {self.model_id!r} {kind} {element!r}{_where(exc.path)}: expected "
            f"{exc.expected}, found {describe(exc.found)}"
        )

    def check_measurepoints(self, values: object) -> ValidatedPoints:
        """Validate a measurepoint map point by point, never raising.

        Good points are returned normalised; bad ones are left out and listed in ``problems``
        (what a hub needs for ``skipInvalidMeasurepoints``). When ``values`` is not a JSON
        object, the single problem has an empty ``point_id`` and code 1206.
        """
        if type(values) is not dict and not isinstance(values, Mapping):
            problem = PointProblem(
                "",
                CODE_MEASUREPOINT_FORMAT,
                f"model {self.model_id!r}: measurepoints must be a JSON object, "
                f"found {describe(values)}",
            )
            return ValidatedPoints({}, problems=(problem,))
        checks = self._mp_checks
        out: dict[str, Any] = {}
        quality: dict[str, int] = {}
        passthrough: list[str] = []
        problems: list[PointProblem] = []
        for point_id, raw in values.items():
            entry = checks.get(point_id)
            if entry is None:
                if self.allow_additional_measurepoints:
                    out[point_id] = raw
                    passthrough.append(point_id)
                else:
                    problems.append(self._unknown("measurepoint", point_id))
                continue
            check, has_quality = entry
            try:
                if has_quality and type(raw) is dict:
                    value, q = split_quality(raw)
                    out[point_id] = check(value)
                    if q is not None:
                        quality[point_id] = q
                else:
                    out[point_id] = check(raw)
            except Mismatch as exc:
                problems.append(
                    PointProblem(point_id, CODE_INVALID, self._fail("measurepoint", point_id, exc))
                )
        return _validated(out, quality, passthrough, problems)

    def validate_measurepoints(self, values: object) -> ValidatedPoints:
        """Validate a measurepoint map (``params.measurepoints`` of a post/resume).

        Returns the normalised values; raises :class:`~enos_lab.errors.ValidationError` for the
        first bad point (code 1204: unknown point or wrong type) or code 1206 when ``values``
        is not a JSON object. The message names model, point, expected and found. Accepted
        values and coercions: see the :mod:`enos_lab.model` docstring.
        """
        result = self.check_measurepoints(values)
        if result.problems:
            raise result.problems[0].error()
        return result

    def _unknown(self, kind: str, element: str) -> PointProblem:
        known = ", ".join(sorted(getattr(self, kind + "s"))) or "none"
        return PointProblem(
            element,
            CODE_INVALID,
            f"model {self.model_id!r}: unknown {kind} {element!r} (declared: {known})",
        )

    def validate_attributes(self, values: object) -> dict[str, Any]:
        """Validate an attribute update map; returns the normalised values.

        Unknown attributes are refused unless ``allow_additional_attributes`` (then passed
        unchanged). Raises ValidationError 1204 for a bad attribute, 1207 when ``values`` is not
        a JSON object. Required attributes are not demanded: an update may be partial.
        """
        if not isinstance(values, Mapping):
            raise ValidationError(
                f"model {self.model_id!r}: attributes must be a JSON object, "
                f"found {describe(values)}",
                CODE_ATTRIBUTE_FORMAT,
            )
        checks = self._attr_checks
        out: dict[str, Any] = {}
        for key, raw in values.items():
            check = checks.get(key)
            if check is None:
                if self.allow_additional_attributes:
                    out[key] = raw
                    continue
                raise self._unknown("attribute", key).error()
            try:
                out[key] = check(raw)
            except Mismatch as exc:
                raise ValidationError(self._fail("attribute", key, exc)) from None
        return out

    def _validate_params(
        self, table: str, owner_kind: str, owner: str, values: object
    ) -> dict[str, Any]:
        entry = self._param_checks.get((table, owner))
        if entry is None:
            raise self._unknown(owner_kind, owner).error()
        what = {"input": "input of service", "output": "output of service", "event": "event"}[table]
        if not isinstance(values, Mapping):
            raise ValidationError(
                f"model {self.model_id!r} {what} {owner!r}: parameters must be a JSON object, "
                f"found {describe(values)}"
            )
        checks, required = entry
        out: dict[str, Any] = {}
        for key, raw in values.items():
            check = checks.get(key)
            if check is None:
                known = ", ".join(checks) or "none"
                raise ValidationError(
                    f"model {self.model_id!r} {what} {owner!r}: unknown parameter {key!r} "
                    f"(declared: {known})"
                )
            try:
                out[key] = check(raw)
            except Mismatch as exc:
                raise ValidationError(
                    f"model {self.model_id!r} {what} {owner!r} parameter {key!r}"
                    f"{_where(exc.path)}: expected {exc.expected}, found {describe(exc.found)}"
                ) from None
        for key in required:
            if key not in out:
                raise ValidationError(
                    f"model {self.model_id!r} {what} {owner!r}: required parameter {key!r} "
                    "is missing"
                )
        return out

    def validate_event(self, event_id: str, values: object) -> dict[str, Any]:
        """Validate an event post's output values (``params.events``); returns them normalised.

        Raises ValidationError 1204 for an unknown event, an unknown or mistyped output, or a
        missing ``required`` output.
        """
        return self._validate_params("event", "event", event_id, values)

    def validate_service_input(self, service_id: str, params: object) -> dict[str, Any]:
        """Validate the input parameters of a service call; returns them normalised (1204)."""
        return self._validate_params("input", "service", service_id, params)

    def validate_service_output(self, service_id: str, data: object) -> dict[str, Any]:
        """Validate a device's service reply ``data``; returns it normalised (1204).

        ``None`` and ``""`` (what SDKs send for "no data") count as an empty object.
        """
        if data is None or data == "":
            data = {}
        return self._validate_params("output", "service", service_id, data)


def _without(elements: Mapping[str, Any], ids: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in elements.items() if k not in ids}


def _param_table(params: tuple[Param, ...]) -> tuple[dict[str, Check], tuple[str, ...]]:
    return compile_params(params), tuple(p.identifier for p in params if p.required)


class ModelCatalog:
    """Thing models by ``model_id``; resolves inheritance when a child is added.

    Not thread-safe for writers; models themselves are immutable and can be shared.
    """

    __slots__ = ("_models",)

    def __init__(self, models: Mapping[str, ThingModel] | None = None) -> None:
        self._models: dict[str, ThingModel] = {}
        for model in (models or {}).values():
            self.add(model)

    def add(self, model: ThingModel) -> ThingModel:
        """Add ``model`` and return it resolved (with its parent's elements if it has one).

        Raises AlreadyExists if the id is taken, ModelError if the parent is missing or the
        child redefines an inherited element (the message names the element).
        """
        if model.model_id in self._models:
            raise AlreadyExists(f"thing model {model.model_id!r} already exists")
        if model.parent_id is not None:
            model = self._resolve(model)
        self._models[model.model_id] = model
        return model

    def _resolve(self, child: ThingModel) -> ThingModel:
        parent_id = child.parent_id
        assert parent_id is not None
        parent = self._models.get(parent_id)
        if parent is None:
            raise ModelError(
                f"model {child.model_id!r}: parent model {parent_id!r} is not in the catalog"
            )
        merged: dict[str, dict[str, Any]] = {}
        inherited: dict[str, frozenset[str]] = {}
        for kind in _KINDS:
            theirs: Mapping[str, Any] = getattr(parent, kind)
            mine: Mapping[str, Any] = getattr(child, kind)
            claimed: frozenset[str] = getattr(child.inherited, kind)
            if claimed and claimed != frozenset(theirs):
                raise ModelError(
                    f"model {child.model_id!r}: inherited {kind} {sorted(claimed)} differ from "
                    f"parent model {parent_id!r}'s {sorted(theirs)}"
                )
            result = dict(theirs)
            for key, element in mine.items():
                if key in theirs:
                    if key in claimed and element == theirs[key]:
                        continue
                    raise ModelError(
                        f"model {child.model_id!r} cannot redefine {_SINGULAR[kind]} {key!r} "
                        f"inherited from parent model {parent_id!r}"
                    )
                result[key] = element
            merged[kind] = result
            inherited[kind] = frozenset(theirs)
        try:
            return dataclasses.replace(
                child,
                attributes=merged["attributes"],
                measurepoints=merged["measurepoints"],
                services=merged["services"],
                events=merged["events"],
                inherited=InheritedIds(**inherited),
            )
        except ModelError as exc:
            raise ModelError(
                f"model {child.model_id!r} conflicts with parent model {parent_id!r}: {exc}"
            ) from exc

    def get(self, model_id: str) -> ThingModel:
        """The model ``model_id``; raises NotFound."""
        try:
            return self._models[model_id]
        except KeyError:
            raise NotFound(f"thing model {model_id!r} not found") from None

    def remove(self, model_id: str) -> None:
        """Remove a model; refused (ModelError) while other models inherit from it."""
        self.get(model_id)
        children = sorted(self.children(model_id))
        if children:
            raise ModelError(f"thing model {model_id!r} has child models {children}")
        del self._models[model_id]

    def children(self, model_id: str) -> list[str]:
        """Ids of the models whose parent is ``model_id``."""
        return [m.model_id for m in self._models.values() if m.parent_id == model_id]

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._models

    def __iter__(self) -> Iterator[ThingModel]:
        return iter(list(self._models.values()))

    def __len__(self) -> int:
        return len(self._models)

    def ids(self) -> list[str]:
        """All model ids, in insertion order."""
        return list(self._models)

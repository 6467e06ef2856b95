"""JSON renderings of a thing model.

- The canonical form is EnOS's REST ``ThingModel`` shape (protocol reference 12.2 a):
  ``modelId``, ``orgId``, ``name`` (``{defaultValue, i18nValue}``), ``desc``, and the four maps
  ``attributes`` / ``measurepoints`` / ``services`` / ``events`` keyed by identifier, each element
  with ``identifier``, ``name``, ``dataType`` and ``dataDefinition`` (a JSON *string* or null).
  Inheritance and passthrough travel in extra keys borrowed from the console export (12.2 c):
  ``parentModelId``, ``inheritedAttributeIds`` / ``...MeasurepointIds`` / ``...ServiceIds`` /
  ``...EventIds``, ``allowAdditionalMeasurepoint``, ``allowAdditionalAttribute``, plus
  ``category``. :func:`model_to_json` and :func:`model_from_json` round-trip exactly.
- :func:`render_tsltemplate` gives the ``data`` of a ``thing.tsltemplate.get`` reply (12.2 b),
  with EnOS's key names, including the misspelt ``tslModelCatagory``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ._thing import InheritedIds, ThingModel
from ._types import (
    Attribute,
    CallType,
    DataSpec,
    DataType,
    Event,
    EventType,
    I18nText,
    Measurepoint,
    Multiplier,
    Param,
    Service,
    SignalType,
    Unit,
)

__all__ = [
    "load_model",
    "model_from_json",
    "model_to_json",
    "render_tsltemplate",
    "save_model",
]

_INHERITED_KEYS = {
    "attributes": "inheritedAttributeIds",
    "measurepoints": "inheritedMeasurepointIds",
    "services": "inheritedServiceIds",
    "events": "inheritedEventIds",
}

# ---------------------------------------------------------------------------- writing


def _i18n(text: I18nText | None) -> dict[str, Any] | None:
    if text is None:
        return None
    return {"defaultValue": text.default, "i18nValue": dict(text.translations)}


def _unit(unit: Unit | None) -> dict[str, str] | None:
    if unit is None:
        return None
    return {"unitId": unit.unit_id, "multiplier": unit.multiplier.name}


def _definition_obj(spec: DataSpec) -> dict[str, Any] | None:
    t = spec.data_type
    if t is DataType.ENUM:
        assert spec.enum_type is not None
        obj: dict[str, Any] = {
            "enumType": spec.enum_type.value,
            "enumDesc": {k: _i18n(v) for k, v in spec.enum_values.items()},
        }
        if spec.enum_default is not None:
            obj["defaultValue"] = spec.enum_default
        return obj
    if t is DataType.BOOL and spec.bool_labels:
        return {"boolDesc": {k: _i18n(v) for k, v in spec.bool_labels.items()}}
    if t is DataType.STRING and spec.max_length is not None:
        return {"maxLength": spec.max_length}
    if t is DataType.STRUCT:
        return {"items": [_param(m) for m in spec.members]}
    if t is DataType.ARRAY:
        assert spec.item_type is not None
        return {"itemType": spec.item_type.value}
    return None


def _definition(spec: DataSpec) -> str | None:
    obj = _definition_obj(spec)
    return None if obj is None else json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _typed(identifier: str, name: I18nText | None, spec: DataSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"identifier": identifier}
    if name is not None:
        out["name"] = _i18n(name)
    out["dataType"] = spec.data_type.value
    out["dataDefinition"] = _definition(spec)
    return out


def _param(param: Param) -> dict[str, Any]:
    out = _typed(param.identifier, param.name, param.spec)
    out["unit"] = _unit(param.unit)
    out["required"] = param.required
    return out


def _attribute(a: Attribute) -> dict[str, Any]:
    out = _typed(a.identifier, a.name, a.spec)
    if a.desc is not None:
        out["desc"] = _i18n(a.desc)
    out["isRequired"] = a.required
    out["defaultValue"] = a.default_value
    out["unit"] = _unit(a.unit)
    return out


def _measurepoint(m: Measurepoint) -> dict[str, Any]:
    out = _typed(m.identifier, m.name, m.spec)
    if m.desc is not None:
        out["desc"] = _i18n(m.desc)
    out["hasQuality"] = m.has_quality
    out["signalType"] = m.signal_type.value
    out["unit"] = _unit(m.unit)
    return out


def _service(s: Service) -> dict[str, Any]:
    out: dict[str, Any] = {"identifier": s.identifier}
    if s.name is not None:
        out["name"] = _i18n(s.name)
    if s.desc is not None:
        out["desc"] = _i18n(s.desc)
    out["callType"] = s.call_type.value
    out["inputData"] = [_param(p) for p in s.input_data]
    out["outputData"] = [_param(p) for p in s.output_data]
    return out


def _event(e: Event) -> dict[str, Any]:
    out: dict[str, Any] = {"identifier": e.identifier}
    if e.name is not None:
        out["name"] = _i18n(e.name)
    if e.desc is not None:
        out["desc"] = _i18n(e.desc)
    out["eventType"] = e.event_type.value
    out["outputData"] = [_param(p) for p in e.output_data]
    return out


def model_to_json(model: ThingModel) -> dict[str, Any]:
    """The REST ``ThingModel`` JSON object of ``model`` (json-serialisable dict)."""
    out: dict[str, Any] = {"modelId": model.model_id}
    if model.org_id is not None:
        out["orgId"] = model.org_id
    out["name"] = _i18n(model.name)
    if model.desc is not None:
        out["desc"] = _i18n(model.desc)
    if model.category is not None:
        out["category"] = model.category
    out["attributes"] = {k: _attribute(v) for k, v in model.attributes.items()}
    out["measurepoints"] = {k: _measurepoint(v) for k, v in model.measurepoints.items()}
    out["services"] = {k: _service(v) for k, v in model.services.items()}
    out["events"] = {k: _event(v) for k, v in model.events.items()}
    out["allowAdditionalMeasurepoint"] = model.allow_additional_measurepoints
    out["allowAdditionalAttribute"] = model.allow_additional_attributes
    if model.parent_id is not None:
        out["parentModelId"] = model.parent_id
        for kind, key in _INHERITED_KEYS.items():
            out[key] = sorted(getattr(model.inherited, kind))
    return out


def save_model(model: ThingModel, path: str | Path) -> None:
    """Write ``model`` as REST ``ThingModel`` JSON (UTF-8, indented) to ``path``."""
    text = json.dumps(model_to_json(model), ensure_ascii=False, indent=2)
    Path(path).write_text(text + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------- reading


def _is_int_text(text: object) -> bool:
    try:
        return str(int(str(text))) == str(text)
    except ValueError:
        return False


class _Reader:
    """Walks a JSON document and raises ModelError naming the path of what is wrong."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def fail(self, path: str, message: str) -> ModelError:
        return ModelError(f"{self.origin}: {path}: {message}")

    def obj(self, value: Any, path: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(path, f"expected a JSON object, found {value!r}")
        return value

    def str_(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise self.fail(path, f"expected a string, found {value!r}")
        return value

    def opt_str(self, value: Any, path: str) -> str | None:
        return None if value is None else self.str_(value, path)

    def bool_(self, value: Any, path: str) -> bool:
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self.fail(path, f"expected true/false, found {value!r}")
        return value

    def enum(self, cls: Any, value: Any, path: str) -> Any:
        try:
            return cls(value) if cls is not Multiplier else Multiplier[value]
        except (KeyError, ValueError, TypeError):
            names = ", ".join(m.name for m in cls)
            raise self.fail(path, f"expected one of {names}, found {value!r}") from None

    def i18n(self, value: Any, path: str) -> I18nText | None:
        if value is None:
            return None
        if isinstance(value, str):
            return I18nText(value)
        obj = self.obj(value, path)
        default = self.str_(obj.get("defaultValue"), path + ".defaultValue")
        translations = self.obj(obj.get("i18nValue") or {}, path + ".i18nValue")
        for locale, text in translations.items():
            self.str_(text, f"{path}.i18nValue.{locale}")
        return I18nText(default, dict(translations))

    def unit(self, value: Any, path: str) -> Unit | None:
        if value is None:
            return None
        obj = self.obj(value, path)
        multiplier = obj.get("multiplier")
        return Unit(
            self.str_(obj.get("unitId"), path + ".unitId"),
            Multiplier.ONE
            if multiplier is None
            else self.enum(Multiplier, multiplier, path + ".multiplier"),
        )

    def spec(self, element: Mapping[str, Any], path: str) -> DataSpec:
        data_type = self.enum(DataType, element.get("dataType"), path + ".dataType")
        raw = element.get("dataDefinition")
        dpath = path + ".dataDefinition"
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError as exc:
                raise self.fail(dpath, f"not valid JSON ({exc})") from None
        definition = {} if raw is None else self.obj(raw, dpath)
        kwargs: dict[str, Any] = {}
        if data_type is DataType.ENUM:
            desc = self.obj(definition.get("enumDesc") or {}, dpath + ".enumDesc")
            enum_type = definition.get("enumType")
            if enum_type is None:  # EnOS: an enum whose keys are all integers is an int enum
                enum_type = "INT" if desc and all(_is_int_text(k) for k in desc) else "STRING"
            kwargs["enum_type"] = self.enum(DataType, enum_type, dpath + ".enumType")
            kwargs["enum_values"] = {
                str(k): self.i18n(v, f"{dpath}.enumDesc.{k}") or I18nText(str(k))
                for k, v in desc.items()
            }
            default = definition.get("defaultValue")
            kwargs["enum_default"] = None if default is None else str(default)
        elif data_type is DataType.BOOL and definition.get("boolDesc") is not None:
            desc = self.obj(definition["boolDesc"], dpath + ".boolDesc")
            kwargs["bool_labels"] = {
                str(k): self.i18n(v, f"{dpath}.boolDesc.{k}") or I18nText(str(k))
                for k, v in desc.items()
            }
        elif data_type is DataType.STRING and definition.get("maxLength") is not None:
            kwargs["max_length"] = definition["maxLength"]
        elif data_type is DataType.STRUCT:
            items = definition.get("items")
            if not isinstance(items, list):
                raise self.fail(dpath + ".items", f"expected a list of members, found {items!r}")
            kwargs["members"] = tuple(
                self.param(item, f"{dpath}.items[{i}]") for i, item in enumerate(items)
            )
        elif data_type is DataType.ARRAY:
            kwargs["item_type"] = self.enum(
                DataType, definition.get("itemType"), dpath + ".itemType"
            )
        try:
            return DataSpec(data_type, **kwargs)
        except ModelError as exc:
            raise self.fail(path, str(exc)) from None

    def params(self, value: Any, path: str) -> tuple[Param, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail(path, f"expected a list of parameters, found {value!r}")
        return tuple(self.param(item, f"{path}[{i}]") for i, item in enumerate(value))

    def param(self, value: Any, path: str) -> Param:
        obj = self.obj(value, path)
        with self.wrap(path):
            return Param(
                identifier=self.str_(obj.get("identifier"), path + ".identifier"),
                spec=self.spec(obj, path),
                name=self.i18n(obj.get("name"), path + ".name"),
                unit=self.unit(obj.get("unit"), path + ".unit"),
                required=self.bool_(obj.get("required"), path + ".required"),
            )

    def wrap(self, path: str) -> _Wrap:
        return _Wrap(self, path)

    def elements(self, doc: Mapping[str, Any], kind: str, build: Any) -> dict[str, Any]:
        raw = doc.get(kind)
        section = self.obj({} if raw is None else raw, kind)
        out = {}
        for key, value in section.items():
            path = f"{kind}.{key}"
            obj = self.obj(value, path)
            with self.wrap(path):
                element = build(obj, path)
            if element.identifier != key:
                raise self.fail(path, f"identifier {element.identifier!r} differs from its key")
            out[key] = element
        return out


class _Wrap:
    """Context manager: re-raise a ModelError from a constructor with the JSON path."""

    def __init__(self, reader: _Reader, path: str) -> None:
        self.reader = reader
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if isinstance(exc, ModelError) and not str(exc).startswith(self.reader.origin):
            raise self.reader.fail(self.path, str(exc)) from exc


def model_from_json(doc: Mapping[str, Any] | str, origin: str = "thing model JSON") -> ThingModel:
    """Build a :class:`ThingModel` from REST ``ThingModel`` JSON (a dict or a JSON string).

    Raises ModelError naming ``origin`` and the path of the first problem. A model with a
    ``parentModelId`` but no ``inherited*Ids`` is a declared child: add it to a
    :class:`ModelCatalog` to resolve it.
    """
    r = _Reader(origin)
    if isinstance(doc, str):
        try:
            doc = json.loads(doc)
        except ValueError as exc:
            raise ModelError(f"{origin}: not valid JSON ({exc})") from None
    doc = r.obj(doc, "$")

    def attribute(obj: Mapping[str, Any], path: str) -> Attribute:
        return Attribute(
            identifier=r.str_(obj.get("identifier"), path + ".identifier"),
            spec=r.spec(obj, path),
            name=r.i18n(obj.get("name"), path + ".name"),
            desc=r.i18n(obj.get("desc"), path + ".desc"),
            unit=r.unit(obj.get("unit"), path + ".unit"),
            required=r.bool_(obj.get("isRequired"), path + ".isRequired"),
            default_value=obj.get("defaultValue"),
        )

    def measurepoint(obj: Mapping[str, Any], path: str) -> Measurepoint:
        signal = obj.get("signalType")
        return Measurepoint(
            identifier=r.str_(obj.get("identifier"), path + ".identifier"),
            spec=r.spec(obj, path),
            name=r.i18n(obj.get("name"), path + ".name"),
            desc=r.i18n(obj.get("desc"), path + ".desc"),
            unit=r.unit(obj.get("unit"), path + ".unit"),
            signal_type=SignalType.GENERIC
            if signal is None
            else r.enum(SignalType, signal, path + ".signalType"),
            has_quality=r.bool_(obj.get("hasQuality"), path + ".hasQuality"),
        )

    def service(obj: Mapping[str, Any], path: str) -> Service:
        call = obj.get("callType")
        return Service(
            identifier=r.str_(obj.get("identifier"), path + ".identifier"),
            call_type=CallType.SYNC if call is None else r.enum(CallType, call, path + ".callType"),
            input_data=r.params(obj.get("inputData"), path + ".inputData"),
            output_data=r.params(obj.get("outputData"), path + ".outputData"),
            name=r.i18n(obj.get("name"), path + ".name"),
            desc=r.i18n(obj.get("desc"), path + ".desc"),
        )

    def event(obj: Mapping[str, Any], path: str) -> Event:
        severity = obj.get("eventType")
        return Event(
            identifier=r.str_(obj.get("identifier"), path + ".identifier"),
            event_type=EventType.INFO
            if severity is None
            else r.enum(EventType, severity, path + ".eventType"),
            output_data=r.params(obj.get("outputData"), path + ".outputData"),
            name=r.i18n(obj.get("name"), path + ".name"),
            desc=r.i18n(obj.get("desc"), path + ".desc"),
        )

    inherited: dict[str, frozenset[str]] = {}
    for kind, key in _INHERITED_KEYS.items():
        ids = doc.get(key) or []
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise r.fail(key, f"expected a list of identifiers, found {ids!r}")
        inherited[kind] = frozenset(ids)
    name = r.i18n(doc.get("name"), "name")
    model_id = r.str_(doc.get("modelId"), "modelId")
    with r.wrap("$"):
        return ThingModel(
            model_id=model_id,
            name=name if name is not None else I18nText(model_id),
            attributes=r.elements(doc, "attributes", attribute),
            measurepoints=r.elements(doc, "measurepoints", measurepoint),
            services=r.elements(doc, "services", service),
            events=r.elements(doc, "events", event),
            desc=r.i18n(doc.get("desc"), "desc"),
            org_id=r.opt_str(doc.get("orgId"), "orgId"),
            category=r.opt_str(doc.get("category"), "category"),
            parent_id=r.opt_str(doc.get("parentModelId"), "parentModelId"),
            inherited=InheritedIds(**inherited),
            allow_additional_measurepoints=r.bool_(
                doc.get("allowAdditionalMeasurepoint"), "allowAdditionalMeasurepoint"
            ),
            allow_additional_attributes=r.bool_(
                doc.get("allowAdditionalAttribute"), "allowAdditionalAttribute"
            ),
        )


def load_model(path: str | Path) -> ThingModel:
    """Read a REST ``ThingModel`` JSON file (see :func:`model_from_json`)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelError(f"cannot read thing model file {str(p)!r}: {exc}") from exc
    return model_from_json(text, origin=p.name)


# ---------------------------------------------------------------------------- tsltemplate


def _tsl_element(
    identifier: str,
    name: I18nText | None,
    desc: I18nText | None,
    spec: DataSpec,
    *,
    unit: Unit | None,
    required: bool,
    has_quality: bool,
    default_value: Any,
) -> dict[str, Any]:
    return {
        "identifier": identifier,
        "name": name.default if name is not None else identifier,
        "desc": desc.default if desc is not None else "",
        "dataType": spec.data_type.value,
        "dataDefinition": _definition(spec),
        "required": required,
        "accessMode": "rw",
        "hasQuality": has_quality,
        "unit": _unit(unit),
        "tags": {"tagMap": {}},
        "minimum": None,
        "maximum": None,
        "exclusiveMinimum": None,
        "exclusiveMaximum": None,
        "defaultValue": default_value,
    }


def _tsl_param(p: Param) -> dict[str, Any]:
    return {
        "identifier": p.identifier,
        "name": p.name.default if p.name is not None else p.identifier,
        "dataType": p.spec.data_type.value,
        "dataDefinition": _definition(p.spec),
        "unit": _unit(p.unit),
        "required": p.required,
    }


def render_tsltemplate(model: ThingModel) -> dict[str, Any]:
    """The ``data`` of a ``thing.tsltemplate.get`` reply for ``model`` (12.2 b).

    Names and descriptions are rendered as their default text; ``accessMode`` is ``"rw"`` and
    the range keys (``minimum`` ...) are null because this model has no ranges. [R]
    """
    return {
        "tslModelId": model.model_id,
        "tslModelName": model.name.default,
        "tslModelDesc": model.desc.default if model.desc is not None else "",
        "tslModelCatagory": model.category,  # sic: EnOS's spelling
        "tslAttributeMap": {
            k: _tsl_element(
                k,
                a.name,
                a.desc,
                a.spec,
                unit=a.unit,
                required=a.required,
                has_quality=False,
                default_value=a.default_value,
            )
            for k, a in model.attributes.items()
        },
        "tslMeasurepointMap": {
            k: _tsl_element(
                k,
                m.name,
                m.desc,
                m.spec,
                unit=m.unit,
                required=False,
                has_quality=m.has_quality,
                default_value=None,
            )
            | {"signalType": m.signal_type.value}
            for k, m in model.measurepoints.items()
        },
        "tslServiceMap": {
            k: {
                "identifier": k,
                "name": s.name.default if s.name is not None else k,
                "desc": s.desc.default if s.desc is not None else "",
                "callType": s.call_type.value,
                "inputData": [_tsl_param(p) for p in s.input_data],
                "outputData": [_tsl_param(p) for p in s.output_data],
                "tags": {"tagMap": {}},
            }
            for k, s in model.services.items()
        },
        "tslEventMap": {
            k: {
                "identifier": k,
                "name": e.name.default if e.name is not None else k,
                "desc": e.desc.default if e.desc is not None else "",
                "eventType": e.event_type.value,
                "outputData": [_tsl_param(p) for p in e.output_data],
                "tags": {"tagMap": {}},
            }
            for k, e in model.events.items()
        },
        "tag": {"tagMap": {}},
        "allowAdditionalAttribute": model.allow_additional_attributes,
        "allowAdditionalMeasurepoint": model.allow_additional_measurepoints,
        "inheritedAttributeIds": sorted(model.inherited.attributes),
        "inheritedMeasurepointIds": sorted(model.inherited.measurepoints),
        "inheritedServiceIds": sorted(model.inherited.services),
        "inheritedEventIds": sorted(model.inherited.events),
    }

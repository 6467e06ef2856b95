"""Thing models (EnOS TSL): definition, inheritance, JSON renderings, validation, library.

- Build a model from elements (:class:`Attribute`, :class:`Measurepoint`, :class:`Service`,
  :class:`Event`, typed by a :class:`DataSpec`) or load it from EnOS REST ``ThingModel`` JSON
  (:func:`model_from_json`, :func:`load_model`); save with :func:`model_to_json` /
  :func:`save_model`; answer ``tsltemplate/get`` with :func:`render_tsltemplate`.
- Inheritance: declare a child with ``parent_id`` and add it to a :class:`ModelCatalog`;
  :meth:`ThingModel.clone` makes an independent copy.
- Validate device data on the hot path: :meth:`ThingModel.validate_measurepoints` (raises
  :class:`~enos_lab.errors.ValidationError` with the EnOS code) or
  :meth:`ThingModel.check_measurepoints` (per point, for ``skipInvalidMeasurepoints``), plus
  ``validate_event``, ``validate_attributes``, ``validate_service_input`` /
  ``validate_service_output`` and :func:`normalise_tags`. The accepted values and coercions are
  listed below.
- Library: :func:`load_library`, :func:`library_model`, :func:`vendor_mapping`;
  :class:`VendorMapping` turns a vendor's point names and units into a common model's.

Accepted values and coercions (``raw`` is what ``json.loads`` produced)
-----------------------------------------------------------------------
- INT: an ``int`` (never a ``bool``) in the int32 range -2147483648..2147483647; a ``float``
  with an integral value (``3.0``, as Java/JS encoders may send) becomes ``int``. [R]
- FLOAT / DOUBLE: an ``int`` or ``float`` (never a ``bool``), returned as ``float``; NaN and
  infinities are refused; FLOAT also refuses magnitudes above the float32 maximum
  (3.4028235e38). No float32 rounding is applied. [R]
- BOOL: ``true``/``false`` or the integers ``0``/``1`` (EnOS shows bools as 0/1), returned as
  ``bool``. Strings such as ``"true"`` are refused. [D][R]
- ENUM: INT enums take an ``int`` (not ``bool``) whose decimal text is a key, returned as
  ``int``; STRING enums take a ``str`` key, returned as ``str``. [D]
- STRING: a ``str`` of at most ``max_length`` UTF-8 bytes (1024 when unset); numbers are not
  turned into text. [D]
- TIMESTAMP: epoch milliseconds as an ``int`` (not ``bool``, int64 range); integral floats become
  ``int``. [D]
- DATE: a ``str`` ``yyyy-MM-dd HH:mm:ss`` that names a real calendar time, returned unchanged. [D]
- STRUCT: a JSON object whose keys are member identifiers; each member is checked by its own
  spec; unknown members are refused, missing ``required`` members are refused, missing optional
  members are left out. [D][R]
- ARRAY: a JSON list of at most 128 items; each item is checked as ``item_type``; for numeric
  item types numeric strings are converted (``["1.02", "2.02"]`` -> ``[1.02, 2.02]``, as in the
  EnOS examples). [D]
- FILE: a ``str`` URI with a scheme (``https://...``, ``local://name``). [R]
- Quality: a ``has_quality`` point accepts ``{"value": v, "quality": q}`` (``quality`` optional)
  with ``q`` an int 0..9 (the documented range), or a bare value (quality absent). [D][R]
- Unknown identifiers are refused unless the model allows additional measurepoints
  ("Support Passthrough") or attributes; such values pass unchecked and unchanged. [D]
- Tags (:func:`normalise_tags`): numbers and bools become strings (``3`` -> ``"3"``). [D][R]

Everything refused is EnOS code 1204 (model validation failed); a ``measurepoints`` map that is
not a JSON object is 1206, an ``attributes`` map that is not an object 1207. [D] = EnOS
documents it, [R] = our choice where EnOS is silent.
"""

from __future__ import annotations

from ._json import load_model, model_from_json, model_to_json, render_tsltemplate, save_model
from ._library import (
    library_model,
    library_model_ids,
    load_library,
    vendor_mapping,
    vendor_mapping_ids,
)
from ._tags import normalise_tags
from ._thing import InheritedIds, ModelCatalog, PointProblem, ThingModel, ValidatedPoints
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
    check_identifier,
)
from ._units import Conversion, conversion, known_units
from ._values import QUALITY_MAX, valid_quality
from ._vendor import PointMapping, VendorMapping, load_vendor_mapping

__all__ = [
    "QUALITY_MAX",
    "Attribute",
    "CallType",
    "Conversion",
    "DataSpec",
    "DataType",
    "Event",
    "EventType",
    "I18nText",
    "InheritedIds",
    "Measurepoint",
    "ModelCatalog",
    "Multiplier",
    "Param",
    "PointMapping",
    "PointProblem",
    "Service",
    "SignalType",
    "ThingModel",
    "Unit",
    "ValidatedPoints",
    "VendorMapping",
    "check_identifier",
    "conversion",
    "known_units",
    "library_model",
    "library_model_ids",
    "load_library",
    "load_model",
    "load_vendor_mapping",
    "model_from_json",
    "model_to_json",
    "normalise_tags",
    "render_tsltemplate",
    "save_model",
    "valid_quality",
    "vendor_mapping",
    "vendor_mapping_ids",
]

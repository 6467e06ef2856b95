"""The library of common thing models and vendor mappings shipped with enos_lab.

Files live in ``enos_lab/model/library/*.json``: a document with ``modelId`` is a thing model in
REST shape (children are stored as declared: own elements plus ``parentModelId``), one with
``mappingId`` is a :class:`~enos_lab.model.VendorMapping`. Everything is parsed, resolved and
cross-checked once (mappings against their models) and then cached; models and mappings are
immutable, and :func:`load_library` hands out a fresh catalog each time.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from ..errors import ModelError, NotFound
from ._json import model_from_json
from ._thing import ModelCatalog, ThingModel
from ._vendor import VendorMapping

__all__ = [
    "library_model",
    "library_model_ids",
    "load_library",
    "vendor_mapping",
    "vendor_mapping_ids",
]


def _documents() -> list[tuple[str, dict[str, Any]]]:
    folder = resources.files(__package__ or "enos_lab.model").joinpath("library")
    docs = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".json"):
            continue
        try:
            docs.append((entry.name, json.loads(entry.read_text(encoding="utf-8"))))
        except ValueError as exc:
            raise ModelError(f"library file {entry.name}: not valid JSON ({exc})") from exc
    return docs


@cache
def _load() -> tuple[tuple[ThingModel, ...], dict[str, VendorMapping]]:
    pending: dict[str, ThingModel] = {}
    mappings: dict[str, VendorMapping] = {}
    for name, doc in _documents():
        if "mappingId" in doc:
            mapping = VendorMapping.from_json(doc, origin=name)
            mappings[mapping.mapping_id] = mapping
        else:
            model = model_from_json(doc, origin=name)
            pending[model.model_id] = model
    catalog = ModelCatalog()
    while pending:  # parents before children
        ready = [m for m in pending.values() if m.parent_id is None or m.parent_id in catalog]
        if not ready:
            raise ModelError(f"library models with missing or cyclic parents: {sorted(pending)}")
        for model in ready:
            catalog.add(model)
            del pending[model.model_id]
    for mapping in mappings.values():
        mapping.verify(catalog.get(mapping.target_model_id))
    return tuple(catalog), mappings


def load_library() -> ModelCatalog:
    """A new catalog holding every library model, resolved (parents first)."""
    return ModelCatalog({m.model_id: m for m in _load()[0]})


def library_model_ids() -> list[str]:
    """Ids of the library models (``device_base``, ``pv_inverter``, ...)."""
    return [m.model_id for m in _load()[0]]


def library_model(model_id: str) -> ThingModel:
    """The library model ``model_id``, resolved; raises NotFound."""
    for model in _load()[0]:
        if model.model_id == model_id:
            return model
    raise NotFound(
        f"library model {model_id!r} not found (available: {', '.join(library_model_ids())})"
    )


def vendor_mapping_ids() -> list[str]:
    """Ids of the shipped vendor mappings."""
    return sorted(_load()[1])


def vendor_mapping(mapping_id: str) -> VendorMapping:
    """The shipped vendor mapping ``mapping_id`` (verified against its model); NotFound."""
    try:
        return _load()[1][mapping_id]
    except KeyError:
        raise NotFound(
            f"vendor mapping {mapping_id!r} not found "
            f"(available: {', '.join(vendor_mapping_ids())})"
        ) from None

"""Store-specific exceptions (they derive from the package tree in :mod:`enos_lab.errors`)."""

from __future__ import annotations

from ..errors import NotFound, StoreError

__all__ = ["SeriesNotFound"]


class SeriesNotFound(NotFound, StoreError):
    """A query named a device or a measurepoint of which the store holds no data at all."""

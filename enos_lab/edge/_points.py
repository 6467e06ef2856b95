"""The point-mapping table: Modbus registers of field devices -> thing-model measurepoints.

Theory of operation
-------------------
A point table is data: one CSV row per point of a field device, saying where the point lives
(unit id, register table, address; a bit for a bool inside a register), how its registers
encode it (type, word order), and what it means (scale, offset, unit, measurepoint). The same
table drives both sides of the wire: :class:`~enos_lab.edge.FieldServer` serves registers laid
out by it and :class:`~enos_lab.edge.Poller` reads and decodes them.

Registers hold ``raw`` values and a row turns them into ``field`` values (``raw * scale +
offset`` in the row's unit; :mod:`enos_lab.edge._registers` has the word codec). The table
adds the ``model`` level: the field value converted to the model point's unit (first through
a vendor mapping when the table names vendor points, e.g. Vendor A's ``W`` ->
``pv_inverter.active_power``), items ``voltage[0]``, ``voltage[1]``, ... assembled into the
array ``voltage``, and validated by the thing model (:meth:`PointTable.to_model`;
:meth:`PointTable.from_model` runs it backwards to drive simulated registers from a profile's
model values).

CSV columns (header names, any order)
-------------------------------------
=============  ========  ================================================================
column         required  meaning
=============  ========  ================================================================
unit_id        yes       Modbus unit identifier, 1..247 (MODBUS over serial line V1.02, 2.2)
table          yes       ``holding``, ``input`` (registers), ``coil``, ``discrete_input``
address        yes       zero-based address on the wire, 0..65535 (holding register 40001
                         in the one-based 4xxxx notation is ``holding`` address 0)
type           yes       ``int16`` ``uint16`` ``int32`` ``uint32`` ``float32`` ``float64``
                         (registers) or ``bool`` (a coil, a discrete input, or with ``bit``
                         one bit of a register)
word_order     no        ``big`` (default) or ``little``, for 32- and 64-bit types
bit            no        0..15 (0 = least significant), for a ``bool`` in a register
scale, offset  no        field value = raw * scale + offset (defaults 1 and 0)
unit           no        unit of the field value (``W``, ``kWh``, ``degC``; see
                         :func:`enos_lab.model.known_units`); empty: the point's own unit
point          yes       measurepoint id (a vendor point with a mapping); ``id[i]`` is item
                         ``i`` of an ARRAY point (items 0..n-1, each once)
description    no        free text, ignored
=============  ========  ================================================================

Checks when a table is built (each an :class:`~enos_lab.errors.InvalidArgument` naming the
source, its line and the value): unknown or missing columns; a value that does not parse; an
unknown point; a type that cannot fit the point's data type (a float into an INT point, a
fractional scale on an INT point, a uint32 range beyond int32, float64 into FLOAT, a string
or struct point, a bool into a number); a unit of another dimension than the point's, or a
unit on a point without one; a point or array item mapped twice; array items with gaps;
registers (or bits) used by two rows.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument, ModelError
from ..model import (
    Conversion,
    DataType,
    PointMapping,
    ThingModel,
    Unit,
    VendorMapping,
    conversion,
)
from ._registers import UNIT_IDS, PointRow, ReadGroup, RegisterTable, RegisterType, parse_row

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PointTable", "load_point_table"]

_INT32 = (-(2**31), 2**31 - 1)


# --------------------------------------------------------------------------- binding


@dataclass(frozen=True, slots=True)
class _Binding:
    """How one row's field value becomes its model value."""

    point: str  # the model point fed
    conv: Conversion | None  # row unit -> expected unit (None: identity)
    mapped: PointMapping | None  # the vendor point's mapping


class PointTable:
    """Rows of a point table bound to a thing model (and, for vendor point names, a vendor
    mapping), checked as the module docstring says.

    ``source`` names the table in messages (the file name for :func:`load_point_table`).
    Immutable; share it between a :class:`~enos_lab.edge.FieldServer` and a poller.
    """

    def __init__(
        self,
        rows: Iterable[PointRow],
        model: ThingModel,
        *,
        mapping: VendorMapping | None = None,
        source: str = "point table",
    ) -> None:
        self._rows = tuple(rows)
        self._model = model
        self._mapping = mapping
        self._source = source
        if mapping is not None and mapping.target_model_id != model.model_id:
            raise InvalidArgument(
                f"{source}: vendor mapping {mapping.mapping_id!r} targets model "
                f"{mapping.target_model_id!r}, not {model.model_id!r}"
            )
        if not self._rows:
            raise InvalidArgument(f"{source}: the table has no rows")
        self._bindings: dict[tuple[int, str], _Binding] = {}
        self._by_name: dict[tuple[int, str], PointRow] = {}
        self._array_sizes: dict[tuple[int, str], int] = {}
        self._unit_rows: dict[int, tuple[PointRow, ...]] = {}
        for row in self._rows:
            try:
                binding = self._bind(row)
            except (InvalidArgument, ModelError) as exc:
                raise self._error(row, str(exc)) from None
            key = (row.unit_id, row.name)
            if key in self._by_name:
                first = self._by_name[key].line
                raise self._error(
                    row, f"point {row.name!r} of unit {row.unit_id} is on line {first} too"
                )
            self._by_name[key] = row
            self._bindings[key] = binding
        self._check_arrays()
        self._check_overlaps()
        self._units = tuple(sorted({row.unit_id for row in self._rows}))
        for unit_id in self._units:
            self._unit_rows[unit_id] = tuple(r for r in self._rows if r.unit_id == unit_id)

    @classmethod
    def from_records(
        cls,
        records: Iterable[Mapping[str, object]],
        model: ThingModel,
        *,
        mapping: VendorMapping | None = None,
        source: str = "point table",
        first_line: int = 2,
    ) -> PointTable:
        """A table from rows of cells keyed by column name (text, numbers or empty cells);
        the first record is line ``first_line`` in messages (after a header line)."""
        rows = [
            parse_row(record, line, source) for line, record in enumerate(records, start=first_line)
        ]
        return cls(rows, model, mapping=mapping, source=source)

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        model: ThingModel,
        *,
        mapping: VendorMapping | None = None,
        source: str = "point table",
    ) -> PointTable:
        """A table from a pandas DataFrame with the CSV's columns (e.g. from
        ``enos_lab.datasets.load``); row ``i`` is line ``i + 2`` in messages."""
        records: list[dict[str, object]] = [
            {str(k): v for k, v in record.items()} for record in frame.to_dict(orient="records")
        ]
        return cls.from_records(records, model, mapping=mapping, source=source)

    # ----------------------------------------------------------------- what it holds

    @property
    def rows(self) -> tuple[PointRow, ...]:
        """Every row, in source order."""
        return self._rows

    @property
    def model(self) -> ThingModel:
        """The thing model the table feeds."""
        return self._model

    @property
    def mapping(self) -> VendorMapping | None:
        """The vendor mapping the ``point`` names go through, or None (model point ids)."""
        return self._mapping

    @property
    def source(self) -> str:
        """What the table is called in messages (its file name)."""
        return self._source

    @property
    def unit_ids(self) -> tuple[int, ...]:
        """The unit ids the table has rows for, sorted."""
        return self._units

    def rows_of(self, unit_id: int) -> tuple[PointRow, ...]:
        """The rows of unit ``unit_id`` (empty for a unit the table does not have)."""
        return self._unit_rows.get(unit_id, ())

    def row(self, unit_id: int, name: str) -> PointRow:
        """The row of point ``name`` of unit ``unit_id``; InvalidArgument naming the choices."""
        try:
            return self._by_name[unit_id, name]
        except KeyError:
            known = ", ".join(row.name for row in self.rows_of(unit_id)) or "none"
            raise InvalidArgument(
                f"{self._source}: unit {unit_id} has no point {name!r} (points: {known})"
            ) from None

    def with_unit(self, unit_id: int) -> PointTable:
        """This table's rows moved to unit ``unit_id`` (a template for several devices of one
        kind behind one gateway); the table must have exactly one unit."""
        if len(self._units) != 1:
            raise InvalidArgument(
                f"{self._source}: with_unit needs a table of one unit, this one has {self._units}"
            )
        if unit_id not in UNIT_IDS:
            raise InvalidArgument(f"unit_id {unit_id} is outside 1..247")
        rows = [replace(row, unit_id=unit_id) for row in self._rows]
        return PointTable(rows, self._model, mapping=self._mapping, source=self._source)

    def plan(self, unit_id: int, *, max_gap: int = 0) -> tuple[ReadGroup, ...]:
        """The reads that fetch every point of ``unit_id``: contiguous addresses of one table
        merged, each read within the Modbus limit of its table. ``max_gap`` unmapped
        addresses may be read across (0: never, as a device may refuse unmapped ones)."""
        groups: list[ReadGroup] = []
        rows = sorted(self.rows_of(unit_id), key=lambda r: (r.table.value, r.address))
        current: list[PointRow] = []
        start = end = 0
        for row in rows:
            row_end = row.address + row.span
            if (
                current
                and row.table is current[0].table
                and row.address <= end + max_gap
                and max(end, row_end) - start <= row.table.read_limit
            ):
                current.append(row)
                end = max(end, row_end)
                continue
            if current:
                groups.append(
                    ReadGroup(unit_id, current[0].table, start, end - start, tuple(current))
                )
            current, start, end = [row], row.address, row_end
        if current:
            groups.append(ReadGroup(unit_id, current[0].table, start, end - start, tuple(current)))
        return tuple(groups)

    # ----------------------------------------------------------------- field <-> model

    def to_model(
        self, unit_id: int, field_values: Mapping[str, Any]
    ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """Model values of unit ``unit_id`` from field values by point name.

        Returns ``(values, problems)``: the model points that converted and validated, and
        ``(point name, message)`` for each that did not (a code missing from a vendor table,
        an incomplete array, a value the model refuses such as NaN or an unknown ENUM key).
        """
        out: dict[str, Any] = {}
        items: dict[str, dict[int, Any]] = {}
        problems: list[tuple[str, str]] = []
        failed: set[str] = set()
        for name, value in field_values.items():
            row = self.row(unit_id, name)
            binding = self._bindings[unit_id, name]
            try:
                model_value = self._forward(binding, value)
            except (KeyError, TypeError, ValueError):
                problems.append((name, self._describe_failure(row, binding, value)))
                failed.add(binding.point)
                continue
            if row.index is None:
                out[binding.point] = model_value
            else:
                items.setdefault(binding.point, {})[row.index] = model_value
        for point, by_index in items.items():
            if point in failed:
                continue
            size = self._array_sizes[unit_id, point]
            if len(by_index) != size:
                missing = sorted(set(range(size)) - set(by_index))
                problems.append((point, f"unit {unit_id} array {point!r} lacks items {missing}"))
                continue
            out[point] = [by_index[i] for i in range(size)]
        for point in failed:
            out.pop(point, None)
        checked = self._model.check_measurepoints(out)
        problems.extend(
            (problem.point_id, f"unit {unit_id}: {problem.message}") for problem in checked.problems
        )
        return dict(checked.values), problems

    def from_model(self, unit_id: int, values: Mapping[str, Any]) -> dict[str, Any]:
        """Field values by point name that give the model values ``values`` of unit
        ``unit_id`` (to drive simulated registers from model values, e.g. a profile's).

        Model points the unit's rows do not map are ignored. Raises InvalidArgument naming
        the point when a value cannot be mapped back (a state no vendor code gives, a
        non-number, an array of the wrong length).
        """
        out: dict[str, Any] = {}
        for row in self.rows_of(unit_id):
            binding = self._bindings[unit_id, row.name]
            if binding.point not in values:
                continue
            value = values[binding.point]
            if row.index is not None:
                size = self._array_sizes[unit_id, binding.point]
                if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != size:
                    raise InvalidArgument(
                        f"{self._source}: unit {unit_id} array {binding.point!r} takes {size} "
                        f"items, got {value!r}"
                    )
                value = value[row.index]
            try:
                if binding.mapped is not None:
                    value = binding.mapped.source_value(value)
                if binding.conv is not None and type(value) in (int, float):
                    value = binding.conv.inverse().apply(value)
            except (KeyError, TypeError, ValueError):
                raise InvalidArgument(
                    f"{self._source}: unit {unit_id} point {row.name!r} cannot give "
                    f"{binding.point!r} = {value!r}"
                ) from None
            out[row.name] = value
        return out

    # ----------------------------------------------------------------- internals

    def _error(self, row: PointRow, message: str) -> InvalidArgument:
        return InvalidArgument(f"{self._source} line {row.line}: {message}")

    @staticmethod
    def _forward(binding: _Binding, value: Any) -> Any:
        if binding.conv is not None and type(value) in (int, float):
            value = binding.conv.apply(value)
        if binding.mapped is not None:
            value = binding.mapped.convert(value)
        return value

    @staticmethod
    def _describe_failure(row: PointRow, binding: _Binding, value: Any) -> str:
        mapped = binding.mapped
        if mapped is not None and mapped.values:
            return (
                f"unit {row.unit_id} point {row.name!r}: code {value!r} is not in the table of "
                f"vendor point {mapped.source!r} ({', '.join(mapped.values)})"
            )
        return f"unit {row.unit_id} point {row.name!r}: cannot convert {value!r}"

    def _bind(self, row: PointRow) -> _Binding:
        """Check one row against the model (and mapping); how it converts."""
        mapped: PointMapping | None = None
        if self._mapping is not None:
            mapped = next((p for p in self._mapping.points if p.source == row.point), None)
            if mapped is None:
                known = ", ".join(p.source for p in self._mapping.points)
                raise InvalidArgument(
                    f"unknown point {row.point!r}: not a vendor point of mapping "
                    f"{self._mapping.mapping_id!r} ({known})"
                )
            target = mapped.target
        else:
            target = row.point
        measurepoint = self._model.measurepoints.get(target)
        if measurepoint is None:
            known = ", ".join(sorted(self._model.measurepoints)) or "none"
            raise InvalidArgument(
                f"unknown point {row.point!r}: not a measurepoint of model "
                f"{self._model.model_id!r} ({known})"
            )
        spec = measurepoint.spec
        data_type = spec.data_type
        if data_type is DataType.ARRAY:
            if row.index is None:
                raise InvalidArgument(
                    f"point {target!r} is an ARRAY: map its items as {row.point}[0], "
                    f"{row.point}[1], ..."
                )
            data_type = spec.item_type or DataType.DOUBLE
        elif row.index is not None:
            raise InvalidArgument(
                f"{row.name!r}: point {target!r} is {data_type.value}, not an ARRAY"
            )
        # the unit the field value must be in for the mapping (or the model point)
        expected: Unit | str | None = measurepoint.unit
        if mapped is not None and mapped.source_unit is not None:
            expected = mapped.source_unit
        conv: Conversion | None = None
        if row.unit is not None:
            if expected is None:
                raise InvalidArgument(
                    f"unit {row.unit!r} of {row.name!r} does not fit point {target!r}, which "
                    "has no unit (leave the unit empty)"
                )
            try:
                conv = conversion(row.unit, expected)
            except ModelError as exc:
                label = expected if isinstance(expected, str) else expected.unit_id
                raise InvalidArgument(
                    f"unit {row.unit!r} of {row.name!r} does not fit point {target!r} in "
                    f"{label!r}: {exc}"
                ) from None
            if conv.identity:
                conv = None
        exact = conv is None and (mapped is None or _identity(mapped))
        if mapped is not None and mapped.values:
            if not (row.type.integer or row.type is RegisterType.BOOL) or not row.integral:
                raise InvalidArgument(
                    f"type {row.type.value} of {row.name!r} cannot give codes for the table of "
                    f"vendor point {mapped.source!r}: use an integer type without scaling"
                )
            return _Binding(target, conv, mapped)
        self._check_fit(row, target, data_type, spec.enum_type, exact)
        return _Binding(target, conv, mapped)

    @staticmethod
    def _check_fit(
        row: PointRow,
        target: str,
        data_type: DataType,
        enum_type: DataType | None,
        exact: bool,
    ) -> None:
        """Refuse a register type whose values cannot fit the point's data type."""
        rtype = row.type
        what = f"type {rtype.value} of {row.name!r} cannot fit point {target!r} ({data_type.value}"
        if data_type is DataType.BOOL:
            if rtype is not RegisterType.BOOL:
                raise InvalidArgument(f"{what}): use type bool")
            return
        if rtype is RegisterType.BOOL:
            raise InvalidArgument(f"{what}): a bool is not a number")
        if data_type in (DataType.INT, DataType.ENUM):
            if data_type is DataType.ENUM and enum_type is not DataType.INT:
                raise InvalidArgument(f"{what} of string keys): registers hold numbers")
            if not rtype.integer:
                raise InvalidArgument(f"{what}): a float is not an integer")
            if not row.integral or not exact:
                raise InvalidArgument(
                    f"{what}): scale {row.scale:g}, offset {row.offset:g} and unit "
                    f"{row.unit!r} must keep integers integers"
                )
            low, high = rtype.range
            ends = (low * row.scale + row.offset, high * row.scale + row.offset)
            if min(ends) < _INT32[0] or max(ends) > _INT32[1]:
                raise InvalidArgument(
                    f"{what}): values {int(min(ends))}..{int(max(ends))} exceed the int32 "
                    f"range {_INT32[0]}..{_INT32[1]}"
                )
            return
        if data_type is DataType.FLOAT:
            if rtype is RegisterType.FLOAT64:
                raise InvalidArgument(f"{what}): float64 does not fit single precision")
            return
        if data_type is DataType.DOUBLE:
            return
        raise InvalidArgument(f"{what}): registers cannot hold a {data_type.value}")

    def _check_arrays(self) -> None:
        indices: dict[tuple[int, str], list[PointRow]] = {}
        for row in self._rows:
            if row.index is not None:
                point = self._bindings[row.unit_id, row.name].point
                indices.setdefault((row.unit_id, point), []).append(row)
        for (unit_id, point), rows in indices.items():
            found = sorted(row.index for row in rows if row.index is not None)
            if found != list(range(len(found))):
                raise self._error(
                    max(rows, key=lambda r: r.line),
                    f"unit {unit_id} array {point!r} has items {found}: "
                    f"expected 0..{len(found) - 1}",
                )
            self._array_sizes[unit_id, point] = len(found)
        # a point fed both whole and by items, or by two vendor points, is fed twice
        fed: dict[tuple[int, str, int | None], PointRow] = {}
        for row in self._rows:
            key = (row.unit_id, self._bindings[row.unit_id, row.name].point, row.index)
            if key in fed:
                raise self._error(
                    row,
                    f"point {key[1]!r} of unit {row.unit_id} is fed by line {fed[key].line} too",
                )
            fed[key] = row

    def _check_overlaps(self) -> None:
        taken: dict[tuple[int, RegisterTable, int], list[PointRow]] = {}
        for row in self._rows:
            for address in range(row.address, row.address + row.span):
                users = taken.setdefault((row.unit_id, row.table, address), [])
                for other in users:
                    if row.bit is None or other.bit is None or row.bit == other.bit:
                        where = (
                            f"bit {row.bit} of "
                            if row.bit is not None and row.bit == other.bit
                            else ""
                        )
                        raise self._error(
                            row,
                            f"{row.name!r} uses {where}{row.table.value} {address} of unit "
                            f"{row.unit_id}, as {other.name!r} on line {other.line} does",
                        )
                users.append(row)

    def __iter__(self) -> Iterator[PointRow]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return (
            f"PointTable({self._source!r}, model={self._model.model_id!r}, "
            f"units={list(self._units)}, rows={len(self._rows)})"
        )


def _identity(mapped: PointMapping) -> bool:
    """True when a vendor point mapping copies values unchanged."""
    if mapped.values or mapped.scale != 1 or mapped.offset != 0:
        return False
    if mapped.source_unit is None or mapped.target_unit is None:
        return True
    return conversion(mapped.source_unit, mapped.target_unit).identity


def load_point_table(
    path: str | Path,
    model: ThingModel,
    *,
    mapping: VendorMapping | None = None,
) -> PointTable:
    """Read a point table CSV (UTF-8, a header line, columns as in the module docstring) and
    check it against ``model`` (and ``mapping`` when its ``point`` column names vendor
    points). Raises InvalidArgument naming the file, the line and the value."""
    file = Path(path)
    try:
        with file.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            records: list[tuple[int, dict[str, str]]] = []
            for record in reader:
                if None in record:
                    raise InvalidArgument(
                        f"{file.name} line {reader.line_num}: more cells than columns"
                    )
                records.append((reader.line_num, {k: v or "" for k, v in record.items()}))
    except OSError as exc:
        raise InvalidArgument(f"cannot read point table {str(file)!r}: {exc}") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InvalidArgument(f"{file.name}: not a UTF-8 CSV file ({exc})") from None
    if not records:
        raise InvalidArgument(f"{file.name}: no rows under the header")
    rows = [parse_row(cells, line, file.name) for line, cells in records]
    return PointTable(rows, model, mapping=mapping, source=file.name)

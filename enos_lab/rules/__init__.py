"""Rules: the rule engine and the expression language of its conditions.

The rule engine
---------------
A :class:`Rule` selects messages - its ``kind`` (:class:`MessageKind`: measurepoint, event,
attribute change, presence) and selectors (``products``, ``models``, ``devices``, ``tags``,
``points``) - filters them with a ``condition`` over the message's values and the device's
attributes, optionally derives values (``transform``: ``{"power_kw": "${power} / 1000"}``),
and sends what matched to its ``actions``: :class:`Store` (measurepoints: store them, and the
derived points), :class:`Republish` (JSON on an MQTT topic under :data:`REPUBLISH_PREFIX`),
:class:`Call` (a Python function on the lab's loop, given a :class:`RuleMatch`)::

    Rule("kw", points=["power"], transform={"power_kw": "${power} / 1000"},
         actions=[Store()])
    Rule("hot", condition="${temp} > ${max_temp}", actions=[Store(), Call(notify)])

:data:`DEFAULT_RULES` stores every measurepoint that validates. With another rule set, a
measurepoint no rule stores is not stored - and then not reported on the tap either, so the
alert engine and stream computing, which read the stored data, never see it. Events and
attribute changes are always stored; their rules only act. The :class:`RuleEngine` runs the
rules (see :mod:`enos_lab.rules._engine` for where and how fast); the lab keeps its rule set in
``rules.json`` in its data directory (:meth:`~enos_lab.Lab.set_rules`, ...).
:func:`load_rules` / :func:`save_rules` read and write JSON or YAML files
(:mod:`enos_lab.rules._files`); :func:`dry_run` shows what each rule would do with messages or a
DataFrame of points, doing nothing.

Expressions
-----------

Compile once with :func:`compile_expression`, then evaluate per device with
:meth:`Expression.evaluate` or over a whole table with :meth:`Expression.evaluate_frame` (the
backtest's way; the same values). The text is tokenised and parsed by hand and evaluated by
compiled closures or numpy operations: nothing in it is ever passed to ``eval``, ``compile``,
``ast`` or ``DataFrame.eval``.

Grammar (EBNF; keywords are case-insensitive, whitespace is free between tokens)::

    expression = or_expr ;
    or_expr    = and_expr { ( "or" | "||" ) and_expr } ;
    and_expr   = not_expr { ( "and" | "&&" ) not_expr } ;
    not_expr   = ( "not" | "!" ) not_expr | comparison ;
    comparison = additive [ ( "==" | "!=" | "<" | "<=" | ">" | ">=" ) additive
                          | [ "not" ] "in" list
                          | "is" [ "not" ] "null" ] ;        (* no chaining: a < b < c is refused *)
    additive   = term { ( "+" | "-" ) term } ;
    term       = unary { ( "*" | "/" | "%" ) unary } ;
    unary      = "-" unary | primary ;
    primary    = number | string | "true" | "false" | "null" | reference
               | function "(" [ or_expr { "," or_expr } ] ")" | "(" or_expr ")" ;
    function   = "abs" | "min" | "max" | "round" | "is_null" ;
    list       = "[" [ item { "," item } ] "]" ;
    item       = [ "-" ] number | string | "true" | "false" ;  (* all of one type *)
    reference  = "${" [ ( "point" | "attr" ) ":" ] name { "/" name } "}" ;
    name       = ( letter | "_" ) { letter | digit | "_" | "." } ;
    number     = digits [ "." digits ] [ ( "e" | "E" ) [ "+" | "-" ] digits ] | "." digits ;
    string     = "'" { char | escape } "'" | '"' { char | escape } '"' ;
    escape     = "\\" ( "\\" | "'" | '"' | "n" | "t" | "r" | "/" | "0" | "u" hex hex hex hex ) ;

Operators bind as listed, loosest first; binary operators associate to the left; ``!`` is
``not`` (same precedence, below comparisons: ``!${a} == 1`` is ``not (${a} == 1)``).

Names. ``${name}`` is the measurepoint of that name if the model has one, else the attribute
(a per-device threshold: ``${temp} > ${max_temp}``); a name that is both must be written
``${point:name}`` or ``${attr:name}``. ``${state/code}`` is member ``code`` of the struct
``state`` (deeper paths work when the value has them); a member absent from a value is null.

Types (:class:`ExprType`). Model types collapse to NUMBER (INT, FLOAT, DOUBLE, TIMESTAMP, INT
enums), STRING (STRING, DATE, FILE, STRING enums), BOOL, STRUCT (only members are values) and
ARRAY (only ``is null`` applies). Every number is evaluated as an IEEE double (ints exact up
to 2**53). Refused when compiled: an unknown name or member, a member of a non-struct,
arithmetic or ``-`` on anything but numbers, ``and``/``or``/``not`` on anything but bools, a
comparison or ``in`` between different types, ordering bools, a comparison with the literal
``null`` (always false: write ``x is null``), a condition that is not a bool. Functions:
``abs(x)``, ``min(a, ...)``, ``max(a, ...)``, ``round(x)`` (half to even), ``round(x, n)``
(``n`` a literal 0..15), all on numbers; ``is_null(x)`` is ``x is null``. Without types
(``compile_expression(text)``) the same rules are checked on the values when evaluated
(:class:`~enos_lab.errors.EvaluationError`).

Nulls (as in SQL). A null (``None``, NaN, a missing struct member) makes arithmetic and
functions null; a comparison or ``in`` with null is unknown; logic is three-valued (``false and
unknown`` is false, ``true or unknown`` is true, ``not unknown`` is unknown); ``is null`` is
never unknown. A condition that ends unknown is false (no anomaly). Division and modulo by
zero give null (as DuckDB does); so does a result that overflows to an infinity. A referenced
point or attribute absent from the values passed in is not null but
:class:`~enos_lab.errors.MissingValue` (the engine counts a skip for that device).

Errors. :class:`~enos_lab.errors.ExpressionError` (a ``RuleError`` and ``ValueError``) is
raised when compiling; it carries ``expression``, ``position`` (0-based column), ``rule`` and
``reason``, and its message reads::

    rule 'overheat': unknown measurepoint or attribute 'tmp' at column 2
      ${tmp} > 50
        ^

Thresholds. A condition that is one comparison of a number point with a number or a number
attribute (``${temp} > 50``, ``${power} >= ${rated_power}``, either way round) has
:attr:`Expression.threshold` (a :class:`Threshold`): engines evaluate it over a batch with one
numpy comparison (:meth:`Threshold.mask`), with the same results.

Bounds: :data:`MAX_TEXT` characters, :data:`MAX_DEPTH` levels of nesting (of parentheses,
operators and calls alike, so that a 10,000-term chain is refused at once, never a
``RecursionError``), :data:`MAX_ITEMS` items in a list or arguments in a call.
"""

from __future__ import annotations

from ._dryrun import DRY_RUN_COLUMNS, dry_run
from ._engine import RULE_EVENT_KINDS, DeviceInfo, RuleEngine, RuleStats
from ._expression import Expression, compile_expression
from ._files import (
    RULES_FILE,
    dump_rules,
    load_rules,
    parse_rules,
    read_rule_set,
    rule_from_dict,
    rule_to_dict,
    save_rules,
    write_rule_set,
)
from ._lexer import MAX_TEXT
from ._parser import FUNCTIONS, MAX_DEPTH, MAX_ITEMS
from ._rule import (
    DEFAULT_RULES,
    REPUBLISH_PREFIX,
    Action,
    Call,
    MessageKind,
    Republish,
    Rule,
    RuleMatch,
    Store,
    default_rules,
)
from ._ruleset import check_rules, evaluate_rule
from ._threshold import Threshold
from ._types import ExprType

__all__ = [
    "DEFAULT_RULES",
    "DRY_RUN_COLUMNS",
    "FUNCTIONS",
    "MAX_DEPTH",
    "MAX_ITEMS",
    "MAX_TEXT",
    "REPUBLISH_PREFIX",
    "RULES_FILE",
    "RULE_EVENT_KINDS",
    "Action",
    "Call",
    "DeviceInfo",
    "ExprType",
    "Expression",
    "MessageKind",
    "Republish",
    "Rule",
    "RuleEngine",
    "RuleMatch",
    "RuleStats",
    "Store",
    "Threshold",
    "check_rules",
    "compile_expression",
    "default_rules",
    "dry_run",
    "dump_rules",
    "evaluate_rule",
    "load_rules",
    "parse_rules",
    "read_rule_set",
    "rule_from_dict",
    "rule_to_dict",
    "save_rules",
    "write_rule_set",
]

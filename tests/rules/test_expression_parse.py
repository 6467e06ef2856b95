"""The expression grammar: precedence, associativity, every operator, literals, references,
errors with their column, and the bounds on size and depth."""

from __future__ import annotations

import pytest

from enos_lab.errors import ExpressionError, RuleError
from enos_lab.rules import MAX_DEPTH, MAX_ITEMS, MAX_TEXT, ExprType, compile_expression


def value(text: str) -> object:
    """The value of a constant expression."""
    return compile_expression(text, boolean=False).evaluate({})


def fails(text: str, **kwargs: object) -> ExpressionError:
    with pytest.raises(ExpressionError) as info:
        compile_expression(text, **kwargs)  # type: ignore[arg-type]
    return info.value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2 * 3", 7.0),
        ("(1 + 2) * 3", 9.0),
        ("10 - 4 - 3", 3.0),  # left-associative
        ("2 * 3 % 4", 2.0),  # (2 * 3) % 4
        ("100 / 10 / 5", 2.0),
        ("-2 * 3", -6.0),
        ("- -2", 2.0),
        ("-(1 + 2)", -3.0),
        ("7 % 3", 1.0),
        ("-7 % 3", 2.0),  # the sign of the divisor, as Python's %
        ("7 % -3", -2.0),
        ("1 / 4", 0.25),
        ("1e3 + .5 + 2.", 1002.5),
        ("1.5E-1", 0.15),
        ("abs(-3)", 3.0),
        ("min(3, 1, 2)", 1.0),
        ("max(3, 1, 2)", 3.0),
        ("max(4)", 4.0),
        ("round(2.5)", 2.0),  # half to even
        ("round(3.5)", 4.0),
        ("round(2.675, 2)", 2.67),  # Python's round: 2.675 is 2.67499999...
        ("round(-1.25, 1)", -1.2),
    ],
)
def test_arithmetic_precedence_and_associativity(text: str, expected: float) -> None:
    assert value(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true or true and false", True),  # and binds tighter than or
        ("(true or true) and false", False),
        ("not true and false", False),  # (not true) and false
        ("not (true and false)", True),
        ("not 1 == 2", True),  # not binds looser than comparisons
        ("!1 == 2", True),  # ! is not
        ("true && !false", True),
        ("false || true", True),
        ("not not true", True),
        ("TRUE AND NOT FALSE", True),  # keywords are case-insensitive
        ("1 < 2", True),
        ("2 <= 2", True),
        ("3 > 2", True),
        ("2 >= 3", False),
        ("2 == 2.0", True),
        ("2 != 2", False),
        ("1 + 1 == 2 and 2 * 2 > 3", True),
        ("'abc' < 'abd'", True),
        ("'b' >= 'a'", True),
        ("true == true", True),
        ("true != false", True),
        ("2 in [1, 2, 3]", True),
        ("-2 in [1, -2]", True),
        ("4 not in [1, 2, 3]", True),
        ("'x' in ['x', 'y']", True),
        ("'z' in []", False),
        ("true in [false]", False),
        ("null is null", True),
        ("1 is not null", True),
        ("is_null(null)", True),
        ("is_null(1)", False),
    ],
)
def test_logic_comparisons_and_membership(text: str, expected: bool) -> None:
    e = compile_expression(text)
    assert e.result_type is ExprType.BOOL
    assert e.evaluate({}) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"'it\'s'", "it's"),
        (r'"say \"hi\""', 'say "hi"'),
        (r"'a\\b'", "a\\b"),
        (r"'tab\there'", "tab\there"),
        (r"'line\nbreak\r'", "line\nbreak\r"),
        (r"'\u00e9t\u00E9'", "été"),
        (r"'a\/b'", "a/b"),
        ("'double \" inside single'", 'double " inside single'),
        ('"single \' inside double"', "single ' inside double"),
        ("'ünïcode ✓'", "ünïcode ✓"),
        ("''", ""),
    ],
)
def test_strings_and_escapes(text: str, expected: str) -> None:
    assert value(text) == expected


def test_references_with_namespaces_members_and_dotted_names() -> None:
    e = compile_expression(
        "${INV.GenActivePW} > 0 and ${point:state/code} == 3 and ${attr:max_t} > ${a/b/c}"
    )
    assert e.points == {"INV.GenActivePW", "state", "a"}
    assert e.attributes == {"max_t"}
    points = {"INV.GenActivePW": 1, "state": {"code": 3}, "a": {"b": {"c": 1}}}
    assert e.evaluate(points, {"max_t": 2}) is True


@pytest.mark.parametrize(
    ("text", "column", "reason"),
    [
        ("${temp} > ", 10, "expected a value, found the end"),
        ("${temp} > > 3", 10, "expected a value, found '>'"),
        ("${temp} = 3", 8, "unexpected '=' (compare with '==')"),
        ("${temp} & 3", 8, "unexpected '&'"),
        ("${temp} > 3 #", 12, "unexpected character '#'"),
        ("$temp > 3", 1, "expected '{' after '$'"),
        ("${temp > 3", 6, "expected '}' to close '${'"),
        ("${1x} > 3", 2, "expected a name"),
        ("${} > 3", 2, "expected a name"),
        ("${a/} > 3", 4, "expected a name"),
        ("${unit:x} > 3", 2, "unknown namespace 'unit'"),
        ("'abc > 3", 0, "unterminated string"),
        (r"'a\q' == 'b'", 2, r"unknown escape \q"),
        (r"'\u12' == 'b'", 1, r"\u needs four hex digits"),
        ("1.5e > 1", 4, "malformed number exponent"),
        ("12abc > 1", 2, "unexpected 'a' after number"),
        ("1e999 > 1", 0, "number 1e999 is out of range"),
        ("(1 > 2", 6, "expected ')' to close '('"),
        ("1 > 2)", 5, "unexpected ')' after a complete expression"),
        ("1 < 2 < 3", 6, "comparisons cannot be chained"),
        ("1 == 2 in [1]", 7, "comparisons cannot be chained"),
        ("temp > 3", 0, "unexpected name 'temp': write a point or attribute as ${temp}"),
        ("foo(1) > 3", 0, "unknown function 'foo'"),
        ("abs 1 > 0", 4, "expected '(' after 'abs'"),
        ("1 > and", 4, "unexpected 'and': expected a value"),
        ("1 is 2", 5, "expected 'null' after 'is'"),
        ("1 in (1, 2)", 5, "expected '[' after 'in'"),
        ("1 in [1, ${a}]", 11, "a list holds literals"),
        ("1 in [1, 2", 10, "expected ']' to close the list"),
        ("1 in [- 'a']", 8, "expected a number after '-' in a list"),
        ("is_null(1, 2)", 0, "is_null() takes 1 argument, found 2"),
    ],
)
def test_syntax_errors_name_the_column(text: str, column: int, reason: str) -> None:
    error = fails(text, name="overheat")
    assert error.position == column
    assert reason in error.reason
    assert error.expression == text
    assert error.rule == "overheat"
    assert isinstance(error, RuleError)
    assert isinstance(error, ValueError)
    assert str(error).startswith(f"rule 'overheat': {error.reason} at column {column}\n")


def test_message_shows_a_caret_under_the_fault() -> None:
    error = fails("${tmp} > 50", points={"temp": "double"}, name="overheat")
    assert str(error) == (
        "rule 'overheat': unknown measurepoint or attribute 'tmp' at column 2\n  ${tmp} > 50\n    ^"
    )
    anonymous = fails("1 >")
    assert str(anonymous).startswith("expected a value, found the end at column 3\n")
    assert str(anonymous).endswith("\n  1 >\n     ^")


def test_long_expression_shows_a_window_around_the_fault() -> None:
    text = " or ".join(["${a} > 1"] * 100) + " or )"  # a chain of `or` is one level
    error = fails(text)
    assert error.position == len(text) - 1
    shown, caret = str(error).splitlines()[1:]
    assert len(shown) < 90
    assert shown.startswith("  ...")
    assert shown[caret.index("^")] == ")"


def test_bounds_on_length_depth_and_items() -> None:
    assert fails("1" * (MAX_TEXT + 1)).reason.startswith(f"expression of {MAX_TEXT + 1} char")
    compile_expression("(" * MAX_DEPTH + "true" + ")" * MAX_DEPTH)
    assert "nested deeper" in fails("(" * (MAX_DEPTH + 1) + "true" + ")" * (MAX_DEPTH + 1)).reason
    assert "nested deeper" in fails("not " * (MAX_DEPTH + 1) + "true").reason
    assert "nested deeper" in fails("-" * (MAX_DEPTH + 1) + "1 > 0").reason
    assert "nested deeper" in fails("abs(" * (MAX_DEPTH + 1) + "1" + ")" * 65 + " > 0").reason
    # a long flat chain needs no recursion to parse but is a deep tree: refused too
    assert "nested deeper" in fails("1" + " + 1" * MAX_DEPTH + " > 0").reason
    compile_expression(" and ".join(["true"] * 300))  # a chain of one operator is one level
    deepest = "not " * (MAX_DEPTH - 1) + "true"  # a tree MAX_DEPTH high
    compile_expression(deepest)
    assert "nested deeper" in fails("true and " + deepest).reason
    items = ", ".join(["1"] * MAX_ITEMS)
    compile_expression(f"1 in [{items}]")
    assert f"more than {MAX_ITEMS} items" in fails(f"1 in [{items}, 1]").reason
    assert f"more than {MAX_ITEMS} arguments" in fails(f"max({items}, 1) > 0").reason


@pytest.mark.parametrize(
    "text",
    [
        "(" * 10_000 + "1" + ")" * 10_000,
        "not " * 10_000 + "true",
        "-" * 10_000 + "1",
        "1" + "+1" * 10_000,
        "(" * 4_000,
    ],
)
def test_hostile_depth_is_refused_quickly_without_recursion_error(text: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression(text)
    # refused where a bound is reached (the length, or the depth), not after parsing it all
    assert caught.value.position <= MAX_TEXT
    assert "longer than" in caught.value.reason or "nested deeper" in caught.value.reason


def test_deep_but_short_nesting_is_refused_without_recursion_error() -> None:
    for text in ("(" * 2_000 + "1" + ")" * 2_000, "!" * 4_000 + "true", "-" * 4_000 + "1"):
        with pytest.raises(ExpressionError, match="nested deeper"):
            compile_expression(text)


def test_no_user_text_is_executed() -> None:
    for text in ("__import__('os').system('true')", "${a}.__class__", "().__class__"):
        with pytest.raises(ExpressionError):
            compile_expression(text)

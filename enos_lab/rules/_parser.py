"""The expression parser: tokens -> syntax tree, by recursive descent.

One function per precedence level (lowest first: ``or``, ``and``, ``not``, comparison,
``+ -``, ``* / %``, unary ``-``, primary); binary operators associate to the left. Two bounds
keep it safe on hostile text: the nesting of recursive calls (parentheses, ``not``, unary
``-``, calls) and the height of the tree built (a long ``1+1+...`` chain is a deep tree
although it needs no recursion to parse) are both limited to :data:`MAX_DEPTH`, checked before
recursing, so deep input ends in an :class:`~enos_lab.errors.ExpressionError`, never in a
``RecursionError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from ..errors import ExpressionError
from ._lexer import Token, TokenKind, tokenize
from ._nodes import Binary, Call, Compare, In, IsNull, Literal, Logic, Node, Not, Ref, Unary

__all__ = ["FUNCTIONS", "MAX_DEPTH", "MAX_ITEMS", "parse"]

MAX_DEPTH = 64
"""Deepest nesting of an expression (parentheses, operators, calls). [levels]"""

MAX_ITEMS = 256
"""Most items in an ``in [...]`` list, and most arguments of a call. [items]"""

FUNCTIONS = frozenset({"abs", "min", "max", "round", "is_null"})
"""The built-in functions: ``abs(x)``, ``min(a, ...)``, ``max(a, ...)``, ``round(x[, n])``,
``is_null(x)``."""

_COMPARE = frozenset({"==", "!=", "<", "<=", ">", ">="})
_KEYWORDS = frozenset({"and", "or", "not", "in", "is", "null", "true", "false"})


class _Parser:
    def __init__(self, text: str, rule: str | None) -> None:
        self.text = text
        self.rule = rule
        self.tokens = tokenize(text, rule)
        self.i = 0
        self.nesting = 0

    # ------------------------------------------------------------------ helpers

    def fail(self, reason: str, position: int) -> ExpressionError:
        return ExpressionError(reason, self.text, position, self.rule)

    @property
    def token(self) -> Token:
        return self.tokens[self.i]

    def describe(self, token: Token) -> str:
        if token.kind is TokenKind.END:
            return "the end"
        if token.kind is TokenKind.REF:
            return "a reference"
        if token.kind is TokenKind.STRING:
            return "a string"
        if token.kind is TokenKind.NUMBER:
            return "a number"
        return repr(token.value)

    def word(self, token: Token | None = None) -> str | None:
        token = self.token if token is None else token
        if token.kind is TokenKind.WORD:
            return str(token.value).lower()
        return None

    def is_op(self, *ops: str) -> bool:
        return self.token.kind is TokenKind.OP and self.token.value in ops

    def expect_op(self, op: str, what: str) -> Token:
        if not self.is_op(op):
            raise self.fail(
                f"expected {op!r} {what}, found {self.describe(self.token)}", self.token.position
            )
        token = self.token
        self.i += 1
        return token

    def enter(self, position: int) -> None:
        self.nesting += 1
        if self.nesting > MAX_DEPTH:
            raise self.fail(f"expression nested deeper than {MAX_DEPTH} levels", position)

    def checked(self, node: Node) -> Node:
        if node.depth > MAX_DEPTH:
            raise self.fail(f"expression nested deeper than {MAX_DEPTH} levels", node.position)
        return node

    # ------------------------------------------------------------------ levels

    def expression(self) -> Node:
        node = self.or_expr()
        if self.token.kind is not TokenKind.END:
            raise self.fail(
                f"unexpected {self.describe(self.token)} after a complete expression",
                self.token.position,
            )
        return node

    def or_expr(self) -> Node:
        return self.chain("or", "||", self.and_expr)

    def and_expr(self) -> Node:
        return self.chain("and", "&&", self.not_expr)

    def chain(self, word: str, symbol: str, operand: Callable[[], Node]) -> Node:
        first = operand()
        if not (self.word() == word or self.is_op(symbol)):
            return first
        position = self.token.position
        operands = [first]
        while self.word() == word or self.is_op(symbol):
            self.i += 1
            operands.append(operand())
        depth = 1 + max(o.depth for o in operands)
        return self.checked(Logic(word, tuple(operands), position, depth))

    def not_expr(self) -> Node:
        if self.word() == "not" or self.is_op("!"):
            position = self.token.position
            self.i += 1
            self.enter(position)
            operand = self.not_expr()
            self.nesting -= 1
            return self.checked(Not(operand, position, operand.depth + 1))
        return self.comparison()

    def comparison(self) -> Node:
        left = self.additive()
        token = self.token
        node: Node
        if token.kind is TokenKind.OP and token.value in _COMPARE:
            self.i += 1
            right = self.additive()
            node = Compare(
                str(token.value), left, right, token.position, 1 + max(left.depth, right.depth)
            )
        elif self.word() == "in" or (
            self.word() == "not" and self.word(self.tokens[self.i + 1]) == "in"
        ):
            negated = self.word() == "not"
            self.i += 2 if negated else 1
            items = self.items()
            node = In(left, items, negated, token.position, left.depth + 1)
        elif self.word() == "is":
            self.i += 1
            negated = self.word() == "not"
            if negated:
                self.i += 1
            if self.word() != "null":
                raise self.fail(
                    f"expected 'null' after 'is', found {self.describe(self.token)}",
                    self.token.position,
                )
            self.i += 1
            node = IsNull(left, negated, token.position, left.depth + 1)
        else:
            return left
        follow = self.token
        if (follow.kind is TokenKind.OP and follow.value in _COMPARE) or self.word() in (
            "in",
            "is",
        ):
            raise self.fail(
                "comparisons cannot be chained: write 'a < b and b < c'", follow.position
            )
        return self.checked(node)

    def additive(self) -> Node:
        node = self.term()
        while self.is_op("+", "-"):
            token = self.token
            self.i += 1
            right = self.term()
            node = self.checked(
                Binary(
                    str(token.value), node, right, token.position, 1 + max(node.depth, right.depth)
                )
            )
        return node

    def term(self) -> Node:
        node = self.unary()
        while self.is_op("*", "/", "%"):
            token = self.token
            self.i += 1
            right = self.unary()
            node = self.checked(
                Binary(
                    str(token.value), node, right, token.position, 1 + max(node.depth, right.depth)
                )
            )
        return node

    def unary(self) -> Node:
        if self.is_op("-"):
            position = self.token.position
            self.i += 1
            self.enter(position)
            operand = self.unary()
            self.nesting -= 1
            return self.checked(Unary(operand, position, operand.depth + 1))
        return self.primary()

    def primary(self) -> Node:
        token = self.token
        kind = token.kind
        if kind is TokenKind.NUMBER:
            self.i += 1
            return Literal(float(token.value), token.position)  # type: ignore[arg-type]
        if kind is TokenKind.STRING:
            self.i += 1
            return Literal(str(token.value), token.position)
        if kind is TokenKind.REF:
            self.i += 1
            namespace, name, path = cast("tuple[str | None, str, tuple[str, ...]]", token.value)
            return Ref(namespace, name, path, token.position)
        if kind is TokenKind.OP and token.value == "(":
            self.i += 1
            self.enter(token.position)
            node = self.or_expr()
            self.expect_op(")", "to close '('")
            self.nesting -= 1
            return node
        word = self.word()
        if word is not None:
            if word in ("true", "false", "null"):
                self.i += 1
                return Literal({"true": True, "false": False, "null": None}[word], token.position)
            if word in FUNCTIONS:
                return self.call(word, token)
            if word in _KEYWORDS:
                raise self.fail(f"unexpected {word!r}: expected a value", token.position)
            if (
                self.tokens[self.i + 1].kind is TokenKind.OP
                and self.tokens[self.i + 1].value == "("
            ):
                known = ", ".join(sorted(FUNCTIONS))
                raise self.fail(
                    f"unknown function {token.value!r} (known: {known})", token.position
                )
            raise self.fail(
                f"unexpected name {token.value!r}: write a point or attribute as "
                f"${{{token.value}}} and a string in quotes",
                token.position,
            )
        raise self.fail(f"expected a value, found {self.describe(token)}", token.position)

    def call(self, name: str, token: Token) -> Node:
        self.i += 1
        self.expect_op("(", f"after {name!r}")
        self.enter(token.position)
        args: list[Node] = []
        if not self.is_op(")"):
            while True:
                if len(args) >= MAX_ITEMS:
                    raise self.fail(f"more than {MAX_ITEMS} arguments", self.token.position)
                args.append(self.or_expr())
                if not self.is_op(","):
                    break
                self.i += 1
        self.expect_op(")", f"to close the call of {name!r}")
        self.nesting -= 1
        depth = 1 + max((a.depth for a in args), default=0)
        if name == "is_null":
            if len(args) != 1:
                raise self.fail(f"is_null() takes 1 argument, found {len(args)}", token.position)
            return self.checked(IsNull(args[0], False, token.position, depth))
        return self.checked(Call(name, tuple(args), token.position, depth))

    def items(self) -> tuple[Literal, ...]:
        self.expect_op("[", "after 'in'")
        items: list[Literal] = []
        if not self.is_op("]"):
            while True:
                if len(items) >= MAX_ITEMS:
                    raise self.fail(f"more than {MAX_ITEMS} items in a list", self.token.position)
                items.append(self.item())
                if not self.is_op(","):
                    break
                self.i += 1
        self.expect_op("]", "to close the list")
        return tuple(items)

    def item(self) -> Literal:
        token = self.token
        sign = 1.0
        if self.is_op("-"):
            sign = -1.0
            self.i += 1
            if self.token.kind is not TokenKind.NUMBER:
                raise self.fail("expected a number after '-' in a list", self.token.position)
        token2 = self.token
        if token2.kind is TokenKind.NUMBER:
            self.i += 1
            return Literal(sign * float(token2.value), token.position)  # type: ignore[arg-type]
        if token2.kind is TokenKind.STRING:
            self.i += 1
            return Literal(str(token2.value), token.position)
        if self.word() in ("true", "false"):
            self.i += 1
            return Literal(self.word(token2) == "true", token.position)
        raise self.fail(
            f"a list holds literals (numbers, strings, true, false), found {self.describe(token2)}",
            token2.position,
        )


def parse(text: str, rule: str | None = None) -> Node:
    """Parse ``text`` into a syntax tree; raises :class:`~enos_lab.errors.ExpressionError`
    naming ``rule`` and the column of the first fault."""
    return _Parser(text, rule).expression()

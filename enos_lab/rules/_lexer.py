"""The expression lexer: text -> tokens, each with its 0-based column.

A hand-written scanner over the text (no regular expression runs over user input unanchored,
nothing is evaluated). A reference ``${ns:name/member}`` is one token whose value is the
namespace, the name and the member path; strings are decoded here (escapes), numbers are
converted here (``float``), so the parser sees values, never raw text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from ..errors import ExpressionError

__all__ = ["MAX_TEXT", "Token", "TokenKind", "tokenize"]

MAX_TEXT = 4096
"""Longest expression accepted. [characters]"""

_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME_PART = _NAME_START | frozenset("0123456789.")
_DIGITS = frozenset("0123456789")
_WORD_PART = _NAME_START | _DIGITS
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t", "r": "\r", "/": "/", "0": "\0"}
_OPERATORS = (
    "==",
    "!=",
    "<=",
    ">=",
    "&&",
    "||",
    "<",
    ">",
    "!",
    "+",
    "-",
    "*",
    "/",
    "%",
    "(",
    ")",
    "[",
    "]",
    ",",
)
_NAMESPACES = ("point", "attr")


class TokenKind(Enum):
    """Kind of a token."""

    NUMBER = "number"
    """A number literal; ``value`` is a ``float``."""
    STRING = "string"
    """A string literal; ``value`` is the decoded ``str``."""
    REF = "reference"
    """``${...}``; ``value`` is ``(namespace or None, name, member path tuple)``."""
    WORD = "word"
    """A bare word: a keyword (``and``, ``true`` ...) or a function name; ``value`` is it."""
    OP = "operator"
    """An operator or punctuation; ``value`` is its text (``&&`` and ``||`` as given)."""
    END = "end"
    """The end of the text."""


@dataclass(frozen=True, slots=True)
class Token:
    """One token: its kind, its value and the 0-based column where it starts."""

    kind: TokenKind
    value: object
    position: int


class _Scanner:
    def __init__(self, text: str, rule: str | None) -> None:
        self.text = text
        self.rule = rule

    def fail(self, reason: str, position: int) -> ExpressionError:
        return ExpressionError(reason, self.text, position, self.rule)

    def number(self, i: int) -> tuple[Token, int]:
        text, n, start = self.text, len(self.text), i
        while i < n and text[i] in _DIGITS:
            i += 1
        if i < n and text[i] == ".":
            i += 1
            while i < n and text[i] in _DIGITS:
                i += 1
        if i < n and text[i] in "eE":
            j = i + 1
            if j < n and text[j] in "+-":
                j += 1
            if j >= n or text[j] not in _DIGITS:
                raise self.fail("malformed number exponent", j)
            while j < n and text[j] in _DIGITS:
                j += 1
            i = j
        if i < n and text[i] in _WORD_PART:
            raise self.fail(f"unexpected {text[i]!r} after number", i)
        literal = text[start:i]
        value = float(literal)
        if not math.isfinite(value):
            raise self.fail(f"number {literal} is out of range", start)
        return Token(TokenKind.NUMBER, value, start), i

    def string(self, i: int) -> tuple[Token, int]:
        text, n, start = self.text, len(self.text), i
        quote = text[i]
        i += 1
        out: list[str] = []
        while True:
            if i >= n:
                raise self.fail("unterminated string", start)
            c = text[i]
            if c == quote:
                return Token(TokenKind.STRING, "".join(out), start), i + 1
            if c == "\\":
                if i + 1 >= n:
                    raise self.fail("unterminated string", start)
                e = text[i + 1]
                if e == "u":
                    digits = text[i + 2 : i + 6]
                    if len(digits) != 4 or not all(d in "0123456789abcdefABCDEF" for d in digits):
                        raise self.fail("\\u needs four hex digits", i)
                    out.append(chr(int(digits, 16)))
                    i += 6
                    continue
                if e not in _ESCAPES:
                    raise self.fail(f"unknown escape \\{e}", i)
                out.append(_ESCAPES[e])
                i += 2
                continue
            out.append(c)
            i += 1

    def name(self, i: int) -> int:
        """End of the name that must start at ``i``."""
        text, n = self.text, len(self.text)
        if i >= n or text[i] not in _NAME_START:
            found = repr(text[i]) if i < n else "the end"
            raise self.fail(f"expected a name (a letter or _) in ${{...}}, found {found}", i)
        while i < n and text[i] in _NAME_PART:
            i += 1
        return i

    def reference(self, i: int) -> tuple[Token, int]:
        text, n = self.text, len(self.text)
        i += 2  # "${"
        namespace: str | None = None
        for ns in _NAMESPACES:
            if text.startswith(ns + ":", i):
                namespace = ns
                i += len(ns) + 1
                break
        else:
            j = i
            while j < n and text[j] in _NAME_PART:
                j += 1
            if j > i and j < n and text[j] == ":":
                raise self.fail(f"unknown namespace {text[i:j]!r} (use point: or attr:)", i)
        name_start = i
        i = self.name(i)
        parts = [text[name_start:i]]
        while i < n and text[i] == "/":
            j = self.name(i + 1)
            parts.append(text[i + 1 : j])
            i = j
        if i >= n or text[i] != "}":
            found = repr(text[i]) if i < n else "the end"
            raise self.fail(f"expected '}}' to close '${{', found {found}", i)
        value = (namespace, parts[0], tuple(parts[1:]))
        # the token sits at the name: errors about it point there
        return Token(TokenKind.REF, value, name_start), i + 1

    def tokens(self) -> list[Token]:
        text, n, i = self.text, len(self.text), 0
        out: list[Token] = []
        while i < n:
            c = text[i]
            if c in " \t\r\n":
                i += 1
            elif c in _DIGITS or (c == "." and i + 1 < n and text[i + 1] in _DIGITS):
                token, i = self.number(i)
                out.append(token)
            elif c in "'\"":
                token, i = self.string(i)
                out.append(token)
            elif c == "$":
                if not text.startswith("${", i):
                    raise self.fail("expected '{' after '$'", i + 1)
                token, i = self.reference(i)
                out.append(token)
            elif c in _NAME_START:
                start = i
                while i < n and text[i] in _WORD_PART:
                    i += 1
                out.append(Token(TokenKind.WORD, text[start:i], start))
            else:
                for op in _OPERATORS:
                    if text.startswith(op, i):
                        out.append(Token(TokenKind.OP, op, i))
                        i += len(op)
                        break
                else:
                    if c == "=":
                        raise self.fail("unexpected '=' (compare with '==')", i)
                    if c in "&|":
                        raise self.fail(f"unexpected {c!r} (write {c * 2!r} or a word)", i)
                    raise self.fail(f"unexpected character {c!r}", i)
        out.append(Token(TokenKind.END, None, n))
        return out


def tokenize(text: str, rule: str | None = None) -> list[Token]:
    """Split ``text`` into tokens (the last is END); raises
    :class:`~enos_lab.errors.ExpressionError` naming ``rule`` and the column of the fault."""
    if not isinstance(text, str):
        raise ExpressionError(
            f"expected the expression as a str, found {type(text).__name__}", "", 0, rule
        )
    if len(text) > MAX_TEXT:
        raise ExpressionError(
            f"expression of {len(text)} characters is longer than {MAX_TEXT}", text, MAX_TEXT, rule
        )
    return _Scanner(text, rule).tokens()

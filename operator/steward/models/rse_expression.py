r"""A parser for Rucio's RSE expression grammar, with a canonical form and an evaluator.

Rucio (``rucio/core/rse_expression_parser.py``) accepts RSE names, ``key=value``, ``key>n``,
``key<n``, bare boolean attributes and ``*``, combined with ``|`` (union), ``&`` (intersection)
and ``\`` (complement) **strictly left to right**, with parentheses for grouping. There is no
operator precedence: ``A|B&C`` means ``(A|B)&C``.

Rucio detects duplicate rules by comparing the expression as a literal string (the unique index
on scope, name, account, rse_expression, copies), so ``site=IN2P3&type=TAPE`` and
``type=TAPE&site=IN2P3`` would create two rules for one intent. :func:`canonical` gives every
equivalent spelling that differs only in spacing, redundant parentheses, or the order of the
operands of ``|`` and ``&`` one string, and Steward only ever sends that string to Rucio.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "All",
    "Comparison",
    "Node",
    "Operation",
    "RSEExpressionError",
    "Term",
    "canonical",
    "evaluate",
    "parse",
]

AttributeValue = str | int | float | bool
"""Value of an RSE attribute, as Rucio stores them."""

_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_OPERATORS = {"|", "&", "\\"}
_TRUE_STRINGS = {"true", "1", "yes"}


class RSEExpressionError(ValueError):
    """An RSE expression is not valid Rucio syntax.

    Parameters
    ----------
    message
        What is wrong.
    column
        1-based column of the offending character in the expression.
    """

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"column {column}: {message}")
        self.reason = message
        self.column = column


@dataclass(frozen=True)
class All:
    """``*``: every RSE."""

    def render(self) -> str:
        """Return the canonical text."""
        return "*"


@dataclass(frozen=True)
class Term:
    """A bare word: an RSE name, or else a boolean attribute that must be true."""

    name: str

    def render(self) -> str:
        """Return the canonical text."""
        return self.name


@dataclass(frozen=True)
class Comparison:
    """``key=value``, ``key<n`` or ``key>n``."""

    key: str
    op: Literal["=", "<", ">"]
    value: str

    def render(self) -> str:
        """Return the canonical text."""
        return f"{self.key}{self.op}{self.value}"


@dataclass(frozen=True)
class Operation:
    r"""``|``, ``&`` (n-ary, operands sorted) or ``\`` (binary, order kept)."""

    op: Literal["|", "&", "\\"]
    operands: tuple[Node, ...]

    def render(self) -> str:
        """Return the canonical text; compound operands are always parenthesised."""
        parts = [
            f"({o.render()})" if isinstance(o, Operation) else o.render() for o in self.operands
        ]
        return self.op.join(parts)


Node = All | Term | Comparison | Operation
"""A parsed RSE expression."""


class _Parser:
    """Recursive descent over Rucio's left-to-right grammar."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, message: str, pos: int | None = None) -> RSEExpressionError:
        return RSEExpressionError(message, (self.pos if pos is None else pos) + 1)

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def parse(self) -> Node:
        if not self.text.strip():
            raise self.error("the expression is empty", 0)
        node = self.expression()
        if self.peek():
            if self.peek() == ")":
                raise self.error("unbalanced ')'")
            raise self.error(f"expected an operator (|, & or \\) before {self.peek()!r}")
        return node

    def expression(self) -> Node:
        node = self.operand()
        while (char := self.peek()) in _OPERATORS and char:
            self.pos += 1
            right = self.operand()
            node = _combine(char, node, right)  # type: ignore[arg-type]
        return node

    def operand(self) -> Node:
        char = self.peek()
        start = self.pos
        if char == "(":
            self.pos += 1
            node = self.expression()
            if self.peek() != ")":
                raise self.error(f"'(' at column {start + 1} is never closed")
            self.pos += 1
            return node
        if char == "*":
            self.pos += 1
            return All()
        if not char:
            raise self.error("the expression ends where an RSE name or attribute was expected")
        match = _NAME.match(self.text, self.pos)
        if match is None:
            raise self.error(f"unexpected {char!r}; expected an RSE name, attribute or '('")
        self.pos = match.end()
        key = match.group()
        op = self.text[self.pos] if self.pos < len(self.text) else ""
        if op not in {"=", "<", ">"}:
            return Term(key)
        self.pos += 1
        value = _NAME.match(self.text, self.pos)
        if value is None:
            raise self.error(f"attribute {key!r} has no value after {op!r}")
        self.pos = value.end()
        if op in {"<", ">"}:
            try:
                float(value.group())
            except ValueError:
                raise self.error(
                    f"{key}{op} needs a number, not {value.group()!r}", value.start()
                ) from None
        return Comparison(key, op, value.group())  # type: ignore[arg-type]


def _combine(op: Literal["|", "&", "\\"], left: Node, right: Node) -> Node:
    """Build the canonical node for ``left op right`` (flattened, sorted, deduplicated)."""
    if op == "\\":
        return Operation(op, (left, right))
    operands: list[Node] = []
    for side in (left, right):
        if isinstance(side, Operation) and side.op == op:
            operands.extend(side.operands)
        else:
            operands.append(side)
    unique = {o.render(): o for o in operands}
    ordered = sorted(unique.values(), key=lambda o: (isinstance(o, Operation), o.render()))
    if len(ordered) == 1:
        return ordered[0]
    return Operation(op, tuple(ordered))


def parse(text: str) -> Node:
    """Parse an RSE expression.

    Raises
    ------
    RSEExpressionError
        With the 1-based column of the first syntax error.
    """
    return _Parser(text).parse()


def canonical(text: str) -> str:
    """Return the one spelling Steward sends to Rucio for ``text``.

    Raises
    ------
    RSEExpressionError
        If ``text`` is not a valid expression.
    """
    return parse(text).render()


def _attribute_matches(value: AttributeValue | None, op: str, expected: str) -> bool:
    if value is None:
        return False
    if op == "=":
        if isinstance(value, bool):
            return value == (expected.lower() in _TRUE_STRINGS)
        return str(value) == expected
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return number < float(expected) if op == "<" else number > float(expected)


def evaluate(node: Node | str, rses: Mapping[str, Mapping[str, AttributeValue]]) -> frozenset[str]:
    """Return the RSE names an expression selects among ``rses`` (name -> attributes).

    A bare word selects the RSE of that name if there is one, else every RSE whose attribute of
    that name is true, as Rucio resolves it.
    """
    if isinstance(node, str):
        node = parse(node)
    if isinstance(node, All):
        return frozenset(rses)
    if isinstance(node, Term):
        if node.name in rses:
            return frozenset({node.name})
        return frozenset(
            name
            for name, attrs in rses.items()
            if _attribute_matches(attrs.get(node.name), "=", "true")
        )
    if isinstance(node, Comparison):
        return frozenset(
            name
            for name, attrs in rses.items()
            if _attribute_matches(attrs.get(node.key), node.op, node.value)
        )
    results: Iterable[frozenset[str]] = (evaluate(o, rses) for o in node.operands)
    first, *rest = results
    for other in rest:
        if node.op == "|":
            first = first | other
        elif node.op == "&":
            first = first & other
        else:
            first = first - other
    return first

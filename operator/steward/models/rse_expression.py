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

Any text can arrive here (the admission webhook checks what users send), so the cost is bounded
by the input, never worse: an expression longer than Rucio can store (its ``rse_expression``
column is ``String(3000)``) is refused before parsing; parentheses may nest
:data:`MAX_DEPTH` deep, so the recursive descent never approaches Python's recursion limit;
a run of one operator is combined once (not once per operand); every node renders its canonical
text once, when it is built; and evaluation walks the tree with its own stack, since a long
alternation such as ``A|B&C|D&...`` is a tree as deep as it is long.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from .text import describe_character, shorten

__all__ = [
    "MAX_DEPTH",
    "MAX_LENGTH",
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

MAX_LENGTH = 3000
"""Longest expression Rucio stores (``rse_expression`` is ``String(3000)`` in its rules,
subscriptions and account limits tables)."""

MAX_DEPTH = 50
"""Deepest nesting of parentheses accepted; far beyond any real expression."""

_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_OPERATORS = {"|", "&", "\\"}
_TRUE_STRINGS = {"true", "1", "yes"}

Operator = Literal["|", "&", "\\"]


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


@dataclass(frozen=True, eq=False)
class Operation:
    r"""``|`` and ``&`` (n-ary, operands sorted) or ``\`` (n-ary, applied left to right).

    ``A\B\C`` is one node with three operands, rendered ``(A\B)\C`` as Rucio reads it. The
    canonical text is computed once, at construction; equality and hashing use it, so neither
    walks a deep tree.
    """

    op: Operator
    operands: tuple[Node, ...]
    text: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        parts = [_wrapped(o) for o in self.operands]
        if self.op == "\\":
            text = f"{parts[0]}\\{parts[1]}"
            for part in parts[2:]:
                text = f"({text})\\{part}"
        else:
            text = self.op.join(parts)
        object.__setattr__(self, "text", text)

    def render(self) -> str:
        """Return the canonical text; compound operands are always parenthesised."""
        return self.text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Operation) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


Node = All | Term | Comparison | Operation
"""A parsed RSE expression."""


def _wrapped(node: Node) -> str:
    return f"({node.render()})" if isinstance(node, Operation) else node.render()


class _Parser:
    """Recursive descent over Rucio's left-to-right grammar, one level per parenthesis."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, message: str, pos: int | None = None) -> RSEExpressionError:
        return RSEExpressionError(message, (self.pos if pos is None else pos) + 1)

    def peek(self) -> str:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def parse(self) -> Node:
        if not self.text.strip():
            raise self.error("the expression is empty", 0)
        if len(self.text) > MAX_LENGTH:
            raise self.error(
                f"the expression is {len(self.text):,} characters long; Rucio stores at most "
                f"{MAX_LENGTH:,}",
                MAX_LENGTH,
            )
        node = self.expression(0)
        if self.peek():
            if self.peek() == ")":
                raise self.error("unbalanced ')'")
            raise self.error(
                f"expected an operator (|, & or \\) before {describe_character(self.peek())}"
            )
        return node

    def expression(self, depth: int) -> Node:
        node = self.operand(depth)
        while (char := self.peek()) in _OPERATORS:
            run = [node]
            while self.peek() == char:
                self.pos += 1
                run.append(self.operand(depth))
            node = _combine(char, run)  # type: ignore[arg-type]
        return node

    def operand(self, depth: int) -> Node:
        char = self.peek()
        if char == "(":
            return self.group(depth)
        if char == "*":
            self.pos += 1
            return All()
        if not char:
            raise self.error("the expression ends where an RSE name or attribute was expected")
        return self.word()

    def group(self, depth: int) -> Node:
        start = self.pos
        if depth >= MAX_DEPTH:
            raise self.error(f"parentheses nest deeper than {MAX_DEPTH} levels")
        self.pos += 1
        node = self.expression(depth + 1)
        if self.peek() != ")":
            raise self.error(f"'(' at column {start + 1} is never closed")
        self.pos += 1
        return node

    def word(self) -> Term | Comparison:
        match = _NAME.match(self.text, self.pos)
        if match is None:
            raise self.error(
                f"unexpected {describe_character(self.text[self.pos])}; "
                "expected an RSE name, attribute or '('"
            )
        self.pos = match.end()
        key = match.group()
        op = self.text[self.pos] if self.pos < len(self.text) else ""
        if op not in {"=", "<", ">"}:
            return Term(key)
        self.pos += 1
        value = _NAME.match(self.text, self.pos)
        if value is None:
            raise self.error(f"attribute {shorten(key)} has no value after {op!r}")
        self.pos = value.end()
        if op in {"<", ">"}:
            try:
                float(value.group())
            except ValueError:
                raise self.error(
                    f"{shorten(key + op)} needs a number, not {shorten(value.group())}",
                    value.start(),
                ) from None
        return Comparison(key, op, value.group())  # type: ignore[arg-type]


def _combine(op: Operator, run: Sequence[Node]) -> Node:
    """Build the canonical node for ``run[0] op run[1] op ...`` (flattened, sorted, unique)."""
    operands: list[Node] = []
    for index, node in enumerate(run):
        flatten = isinstance(node, Operation) and node.op == op and (op != "\\" or index == 0)
        operands.extend(node.operands if isinstance(node, Operation) and flatten else (node,))
    if op == "\\":
        return Operation(op, tuple(operands))
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
        With the 1-based column of the first syntax error, or when the expression is longer
        than :data:`MAX_LENGTH` or nests parentheses deeper than :data:`MAX_DEPTH`.
    """
    return _Parser(text).parse()


def canonical(text: str) -> str:
    """Return the one spelling Steward sends to Rucio for ``text``.

    Raises
    ------
    RSEExpressionError
        If ``text`` is not a valid expression, or its canonical form (which adds parentheses
        around each change of operator) is longer than Rucio stores or nests deeper than
        :data:`MAX_DEPTH`: the canonical form must itself be an expression Steward accepts.
    """
    text = parse(text).render()
    if len(text) > MAX_LENGTH:
        msg = (
            f"the canonical form Steward sends to Rucio is {len(text):,} characters long (one "
            f"pair of parentheses per change of operator); Rucio stores at most {MAX_LENGTH:,}"
        )
        raise RSEExpressionError(msg, 1)
    depth = _depth(text)
    if depth > MAX_DEPTH:
        msg = (
            f"the canonical form Steward sends to Rucio nests parentheses {depth} deep (one "
            f"level per change of operator and per complement); at most {MAX_DEPTH} are accepted"
        )
        raise RSEExpressionError(msg, 1)
    return text


def _depth(text: str) -> int:
    deepest = level = 0
    for char in text:
        if char == "(":
            level += 1
            deepest = max(deepest, level)
        elif char == ")":
            level -= 1
    return deepest


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


def _leaf(
    node: All | Term | Comparison, rses: Mapping[str, Mapping[str, AttributeValue]]
) -> frozenset[str]:
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
    return frozenset(
        name
        for name, attrs in rses.items()
        if _attribute_matches(attrs.get(node.key), node.op, node.value)
    )


def evaluate(node: Node | str, rses: Mapping[str, Mapping[str, AttributeValue]]) -> frozenset[str]:
    """Return the RSE names an expression selects among ``rses`` (name -> attributes).

    A bare word selects the RSE of that name if there is one, else every RSE whose attribute of
    that name is true, as Rucio resolves it.
    """
    root = parse(node) if isinstance(node, str) else node
    values: dict[int, frozenset[str]] = {}
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        current, ready = stack.pop()
        if not isinstance(current, Operation):
            values[id(current)] = _leaf(current, rses)
        elif not ready:
            stack.append((current, True))
            stack.extend((operand, False) for operand in current.operands)
        else:
            first, *rest = (values[id(operand)] for operand in current.operands)
            for other in rest:
                if current.op == "|":
                    first |= other
                elif current.op == "&":
                    first &= other
                else:
                    first -= other
            values[id(current)] = first
    return values[id(root)]

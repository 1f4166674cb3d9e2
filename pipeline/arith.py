"""Safe arithmetic for pipespec config strings (``"{fps}/4"``, ``"{fps}*2+1"``), never ``eval``.

Sprocket lets a node's numeric option depend on the input's frame rate (docs/design/pipelines.md);
this is the tiny language it needs, parsed by recursive descent into a tree that is evaluated
with exact fractions (frame rates such as 30000/1001 stay exact)::

    expr   := term (("+" | "-") term)*
    term   := unary (("*" | "/" | "//" | "%") unary)*
    unary  := ("-" | "+") unary | atom
    atom   := NUMBER | NAME | "{" NAME "}" | "(" expr ")"

``/`` is exact division, ``//`` floors, ``%`` is the floored remainder. Names are variables
(``fps``), given when the expression is evaluated. Anything else (calls, attributes, strings,
comparisons) is a syntax error naming the column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Mapping, Union

from foundation.errors import ExcameraError

MAX_LENGTH = 200


class ArithError(ExcameraError):
    """An expression that does not parse, or cannot be evaluated (unknown name, division by 0)."""


_TOKEN = re.compile(r"\s*(?:(?P<num>\d+(?:\.\d*)?|\.\d+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
                    r"|(?P<op>//|[-+*/%(){}]))")


@dataclass(frozen=True)
class Num:
    value: Fraction


@dataclass(frozen=True)
class Var:
    name: str


@dataclass(frozen=True)
class Neg:
    operand: "Expr"


@dataclass(frozen=True)
class BinOp:
    op: str
    left: "Expr"
    right: "Expr"


Expr = Union[Num, Var, Neg, BinOp]


def _tokens(text: str) -> list[tuple[str, str, int]]:
    """(kind, text, column) of each token, then ("end", "", column)."""
    out, pos = [], 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            out.append(("end", "", pos + 1))
            return out
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ArithError(f"{text!r}: unexpected {text[pos]!r} at column {pos + 1}")
        kind = m.lastgroup
        out.append((kind, m.group(kind), m.start(kind) + 1))
        pos = m.end()


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str, int]:
        return self.toks[self.i]

    def take(self) -> tuple[str, str, int]:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def fail(self, tok, want: str) -> ArithError:
        found = "the end" if tok[0] == "end" else repr(tok[1])
        return ArithError(f"{self.text!r}: expected {want} at column {tok[2]}, found {found}")

    def expect(self, op: str) -> None:
        tok = self.take()
        if tok[1] != op or tok[0] != "op":
            raise self.fail(tok, repr(op))

    def expr(self) -> Expr:
        node = self.term()
        while self.peek()[1] in ("+", "-") and self.peek()[0] == "op":
            node = BinOp(self.take()[1], node, self.term())
        return node

    def term(self) -> Expr:
        node = self.unary()
        while self.peek()[1] in ("*", "/", "//", "%") and self.peek()[0] == "op":
            node = BinOp(self.take()[1], node, self.unary())
        return node

    def unary(self) -> Expr:
        kind, text, _ = self.peek()
        if kind == "op" and text in ("-", "+"):
            self.take()
            inner = self.unary()
            return Neg(inner) if text == "-" else inner
        return self.atom()

    def atom(self) -> Expr:
        tok = self.take()
        kind, text, _ = tok
        if kind == "num":
            return Num(Fraction(text))
        if kind == "name":
            return Var(text)
        if kind == "op" and text == "{":
            name = self.take()
            if name[0] != "name":
                raise self.fail(name, "a name")
            self.expect("}")
            return Var(name[1])
        if kind == "op" and text == "(":
            node = self.expr()
            self.expect(")")
            return node
        raise self.fail(tok, "a number, a name or '('")


def parse(text: str) -> Expr:
    """The tree of ``text``; ArithError (one line, with the column) when it is not arithmetic."""
    if not isinstance(text, str):
        raise ArithError(f"{text!r} is not a string")
    if len(text) > MAX_LENGTH:
        raise ArithError(f"expression longer than {MAX_LENGTH} characters")
    p = _Parser(text)
    node = p.expr()
    if p.peek()[0] != "end":
        raise p.fail(p.peek(), "an operator or the end")
    return node


def names(node: Expr) -> set[str]:
    """The variable names ``node`` uses."""
    if isinstance(node, Var):
        return {node.name}
    if isinstance(node, Neg):
        return names(node.operand)
    if isinstance(node, BinOp):
        return names(node.left) | names(node.right)
    return set()


def evaluate(node: Expr, variables: Mapping[str, Fraction | int | float] | None = None) -> Fraction:
    """The exact value of ``node`` with ``variables``."""
    variables = variables or {}
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Var):
        if node.name not in variables:
            raise ArithError(f"unknown name {node.name!r} (known: {', '.join(sorted(variables)) or 'none'})")
        return Fraction(variables[node.name])
    if isinstance(node, Neg):
        return -evaluate(node.operand, variables)
    a, b = evaluate(node.left, variables), evaluate(node.right, variables)
    if node.op == "+":
        return a + b
    if node.op == "-":
        return a - b
    if node.op == "*":
        return a * b
    if b == 0:
        raise ArithError(f"division by zero ({node.op})")
    if node.op == "/":
        return a / b
    if node.op == "//":
        return Fraction(a // b)
    return a % b


def calc(text: str, **variables) -> Fraction:
    """Parse and evaluate ``text`` at once: ``calc("{fps}/4", fps=30) == 7.5``."""
    return evaluate(parse(text), variables)

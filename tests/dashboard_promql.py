"""A small PromQL tokenizer and parser for the dashboard tests: enough for the queries streamscope's dashboards and
alert rules use, exact about names, and loud (`PromQLError`) about anything else.

It reads selectors with their matchers, ranges and offsets; function calls; aggregations with ``by``/``without``
before or after their arguments; binary operators with PromQL's precedence, ``bool``, ``on``/``ignoring`` and
``group_left``/``group_right``; numbers, strings, and Grafana's variables (``$model``, ``${model}``,
``$__rate_interval``) wherever a duration or a value can stand.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

AGGREGATIONS = frozenset({
    "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
    "limitk", "limit_ratio",
})  # fmt: skip
FUNCTIONS = frozenset({
    "abs", "absent", "absent_over_time", "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min",
    "count_over_time", "delta", "deriv", "exp", "floor", "histogram_quantile", "holt_winters", "idelta", "increase",
    "irate", "label_join", "label_replace", "last_over_time", "ln", "log2", "log10", "max_over_time",
    "min_over_time", "predict_linear", "present_over_time", "quantile_over_time", "rate", "resets", "round",
    "scalar", "sgn", "sort", "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time", "time",
    "timestamp", "vector",
})  # fmt: skip
KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"})
SET_OPERATORS = frozenset({"and", "or", "unless"})
COMPARISONS = frozenset({"==", "!=", "<=", "<", ">=", ">"})
# Binary operators and their precedence (higher binds tighter); ^ is right-associative.
PRECEDENCE = {
    "or": 1, "and": 2, "unless": 2,
    "==": 3, "!=": 3, "<=": 3, "<": 3, ">=": 3, ">": 3,
    "+": 4, "-": 4,
    "*": 5, "/": 5, "%": 5, "atan2": 5,
    "^": 6,
}  # fmt: skip
MATCH_OPERATORS = frozenset({"=", "!=", "=~", "!~"})

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`)
  | (?P<variable>\$\{[A-Za-z_]\w*(?::[A-Za-z_]\w*)?\}|\$[A-Za-z_]\w*)
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+(?![\w.]))
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|==|!=|<=|>=|[-+*/%^<>=,(){}\[\]:@])
    """,
    re.VERBOSE,
)

TokenKind = Literal["string", "variable", "duration", "number", "ident", "op", "end"]


class PromQLError(ValueError):
    """The text is not PromQL this parser reads."""


@dataclass(frozen=True)
class Token:
    kind: TokenKind
    text: str
    position: int


def tokenize(text: str) -> list[Token]:
    """The tokens of `text`, ending with an ``end`` token; whitespace and comments dropped."""
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise PromQLError(f"cannot read {text[position : position + 20]!r} at {position} in {text!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind not in ("space", "comment"):
            tokens.append(Token(kind, match.group(), position))  # type: ignore[arg-type]
        position = match.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


# --- the syntax tree ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str

    def __str__(self) -> str:
        return f"{self.label}{self.op}{json.dumps(self.value)}"


@dataclass(frozen=True)
class Selector:
    """``name{matchers}[range] offset d``; `name` is None for a bare ``{...}``."""

    name: str | None
    matchers: tuple[Matcher, ...] = ()
    range: str | None = None
    offset: str | None = None

    def __str__(self) -> str:
        text = (self.name or "") + ("{" + ", ".join(map(str, self.matchers)) + "}" if self.matchers else "")
        return text + (f"[{self.range}]" if self.range else "") + (f" offset {self.offset}" if self.offset else "")


@dataclass(frozen=True)
class Number:
    value: float


@dataclass(frozen=True)
class String:
    value: str


@dataclass(frozen=True)
class Variable:
    """A Grafana variable standing for a value (``$q``)."""

    name: str


@dataclass(frozen=True)
class Call:
    function: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Grouping:
    """``by (...)``/``without (...)`` of an aggregation, or ``on (...)``/``ignoring (...)`` of a binary operator."""

    kind: Literal["by", "without", "on", "ignoring"]
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Aggregate:
    op: str
    grouping: Grouping | None
    args: tuple[Node, ...]  # the parameter (topk's k, quantile's φ) first, if any; the vector last

    @property
    def vector(self) -> Node:
        return self.args[-1]


@dataclass(frozen=True)
class Binary:
    op: str
    lhs: Node
    rhs: Node
    matching: Grouping | None = None
    group: tuple[Literal["group_left", "group_right"], tuple[str, ...]] | None = None
    return_bool: bool = False


@dataclass(frozen=True)
class Unary:
    op: str
    operand: Node


Node = Selector | Number | String | Variable | Call | Aggregate | Binary | Unary


def _unquote(text: str) -> str:
    if text[0] == "`":
        return text[1:-1]
    if text[0] == "'":
        text = '"' + text[1:-1].replace('\\"', '"').replace('"', '\\"') + '"'
    return json.loads(text)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0

    # token helpers
    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def next(self) -> Token:
        token = self.peek()
        self.index += 1
        return token

    def fail(self, what: str, token: Token | None = None) -> PromQLError:
        token = token or self.peek()
        return PromQLError(f"{what} at {token.position} ({token.text or 'end'!r}) in {self.text!r}")

    def expect(self, text: str) -> Token:
        token = self.next()
        if token.text != text or token.kind not in ("op", "ident"):
            raise self.fail(f"expected {text!r}", token)
        return token

    def at(self, text: str) -> bool:
        token = self.peek()
        return token.kind in ("op", "ident") and token.text == text

    # grammar
    def parse(self) -> Node:
        node = self.expression(0)
        if self.peek().kind != "end":
            raise self.fail("unexpected token")
        return node

    def operator(self) -> str | None:
        token = self.peek()
        if token.kind == "op" and token.text in PRECEDENCE:
            return token.text
        if token.kind == "ident" and token.text in ("and", "or", "unless", "atan2"):
            return token.text
        return None

    def expression(self, minimum: int) -> Node:
        lhs = self.unary()
        while (op := self.operator()) is not None and PRECEDENCE[op] >= minimum:
            self.next()
            return_bool = False
            if self.at("bool"):
                if op not in COMPARISONS:
                    raise self.fail("bool after a non-comparison operator")
                self.next()
                return_bool = True
            matching: Grouping | None = None
            group: tuple[Literal["group_left", "group_right"], tuple[str, ...]] | None = None
            if self.at("on") or self.at("ignoring"):
                kind = self.next().text
                matching = Grouping("on" if kind == "on" else "ignoring", self.label_list())
                if self.at("group_left") or self.at("group_right"):
                    side: Literal["group_left", "group_right"] = (
                        "group_left" if self.next().text == "group_left" else "group_right"
                    )
                    group = (side, self.label_list() if self.at("(") else ())
            next_minimum = PRECEDENCE[op] if op == "^" else PRECEDENCE[op] + 1
            rhs = self.expression(next_minimum)
            lhs = Binary(op, lhs, rhs, matching, group, return_bool)
        return lhs

    def unary(self) -> Node:
        if self.peek().kind == "op" and self.peek().text in ("-", "+"):
            op = self.next().text
            return Unary(op, self.unary())
        return self.postfix(self.primary())

    def postfix(self, node: Node) -> Node:
        while True:
            if self.at("["):
                if not isinstance(node, Selector) or node.range is not None or node.offset is not None:
                    raise self.fail("a range (or subquery) applies only to a plain selector here")
                self.next()
                duration = self.duration()
                if self.at(":"):
                    raise self.fail("subqueries are not supported")
                self.expect("]")
                node = Selector(node.name, node.matchers, duration, node.offset)
            elif self.at("offset"):
                if not isinstance(node, Selector) or node.offset is not None:
                    raise self.fail("offset applies only to a selector here")
                self.next()
                node = Selector(node.name, node.matchers, node.range, self.duration())
            elif self.at("@"):
                raise self.fail("the @ modifier is not supported")
            else:
                return node

    def duration(self) -> str:
        token = self.next()
        if token.kind in ("duration", "variable"):
            return token.text
        raise self.fail("expected a duration", token)

    def label_list(self) -> tuple[str, ...]:
        self.expect("(")
        labels: list[str] = []
        while not self.at(")"):
            token = self.next()
            if token.kind != "ident":
                raise self.fail("expected a label name", token)
            labels.append(token.text)
            if not self.at(")"):
                self.expect(",")
        self.expect(")")
        return tuple(labels)

    def arguments(self) -> tuple[Node, ...]:
        self.expect("(")
        args: list[Node] = []
        while not self.at(")"):
            args.append(self.expression(0))
            if not self.at(")"):
                self.expect(",")
        self.expect(")")
        return tuple(args)

    def matchers(self) -> tuple[Matcher, ...]:
        self.expect("{")
        found: list[Matcher] = []
        while not self.at("}"):
            label = self.next()
            if label.kind != "ident":
                raise self.fail("expected a label name", label)
            op = self.next()
            if op.kind != "op" or op.text not in MATCH_OPERATORS:
                raise self.fail("expected =, !=, =~ or !~", op)
            value = self.next()
            if value.kind != "string":
                raise self.fail("expected a quoted label value", value)
            found.append(Matcher(label.text, op.text, _unquote(value.text)))
            if not self.at("}"):
                self.expect(",")
        self.expect("}")
        return tuple(found)

    def primary(self) -> Node:
        token = self.peek()
        if token.kind == "number":
            self.next()
            return Number(float(int(token.text, 16)) if token.text.lower().startswith("0x") else float(token.text))
        if token.kind == "string":
            self.next()
            return String(_unquote(token.text))
        if token.kind == "variable":
            self.next()
            return Variable(token.text.strip("${}").split(":")[0])
        if token.kind == "op" and token.text == "(":
            self.next()
            inner = self.expression(0)
            self.expect(")")
            return inner
        if token.kind == "op" and token.text == "{":
            return Selector(None, self.matchers())
        if token.kind != "ident":
            raise self.fail("expected an expression")
        name = token.text
        if name in KEYWORDS or name in SET_OPERATORS:
            raise self.fail(f"keyword {name!r} where an expression belongs")
        following = self.peek(1)
        if name in AGGREGATIONS and (following.text in ("by", "without") or following.text == "("):
            return self.aggregation()
        if following.kind == "op" and following.text == "(":
            if name not in FUNCTIONS:
                raise self.fail(f"unknown function {name!r}")
            self.next()
            return Call(name, self.arguments())
        if name.lower() in ("inf", "nan"):
            self.next()
            return Number(float(name))
        self.next()
        return Selector(name, self.matchers() if self.at("{") else ())

    def aggregation(self) -> Aggregate:
        op = self.next().text
        grouping: Grouping | None = None
        if self.at("by") or self.at("without"):
            kind = self.next().text
            grouping = Grouping("by" if kind == "by" else "without", self.label_list())
        args = self.arguments()
        while self.at("by") or self.at("without"):
            if grouping is not None:
                raise self.fail("two groupings")
            kind = self.next().text
            grouping = Grouping("by" if kind == "by" else "without", self.label_list())
        if not args:
            raise self.fail(f"{op}() without an argument")
        return Aggregate(op, grouping, args)


def parse(text: str) -> Node:
    """The syntax tree of a PromQL expression; `PromQLError` if it is not one this module reads."""
    return _Parser(text).parse()


def children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, Call | Aggregate):
        return node.args
    if isinstance(node, Binary):
        return (node.lhs, node.rhs)
    if isinstance(node, Unary):
        return (node.operand,)
    return ()


def walk(node: Node) -> Iterator[Node]:
    """`node` and every node below it, depth first, left to right."""
    yield node
    for child in children(node):
        yield from walk(child)


def selectors(node: Node) -> list[Selector]:
    return [n for n in walk(node) if isinstance(n, Selector)]


@dataclass(frozen=True)
class LabelValues:
    """Grafana's ``label_values(selector, label)`` variable query."""

    selector: Selector
    label: str


def parse_label_values(text: str) -> LabelValues:
    parser = _Parser(text)
    parser.expect("label_values")
    parser.expect("(")
    selector = parser.primary()
    if not isinstance(selector, Selector) or selector.name is None:
        raise parser.fail("label_values() needs a metric selector")
    parser.expect(",")
    label = parser.next()
    if label.kind != "ident":
        raise parser.fail("expected a label name", label)
    parser.expect(")")
    if parser.peek().kind != "end":
        raise parser.fail("unexpected token")
    return LabelValues(selector, label.text)

"""What a dashboard panel or an alert rule means, checked against what the library exports.

`analyse` walks a parsed PromQL expression and reports, for each node, the labels its result carries and what it
measures (a `Quantity`), with a problem for: a metric name that is not exactly one the library exports, a label
matcher or a ``by``/``without``/``on`` label that is not on the metric, a label value the library never writes,
``rate()`` of a gauge or a raw counter on a graph, ``histogram_quantile`` of anything but ``_bucket`` series
grouped by ``le``, and two sides of an operator whose labels cannot match.

`panel_problems` adds what a panel's title, unit, legends, links and description promise: "by model" groups by the
model label, "output tokens" counts output tokens, "errors" selects errors, "/s" is a rate, "p95" is the 0.95
quantile, the unit fits the quantity, every ``{{label}}`` of a legend and ``${__field.labels.x}`` of a data link is
on the result, and policies a description names are the ones counted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streamscope import _names as n
from tests.dashboard_promql import (
    COMPARISONS,
    SET_OPERATORS,
    Aggregate,
    Binary,
    Call,
    LabelValues,
    Matcher,
    Node,
    Number,
    PromQLError,
    Selector,
    Unary,
    Variable,
    parse,
    parse_label_values,
    selectors,
    walk,
)
from tests.dashboard_schema import ATTRIBUTE_VALUES, Schema, Series, label

MODEL = label(n.GEN_AI_REQUEST_MODEL)
TOKEN_TYPE = label(n.GEN_AI_TOKEN_TYPE)
OUTCOME = label(n.STREAM_OUTCOME)
ERROR_TYPE = label(n.ERROR_TYPE)
VALUES = {label(attribute): values for attribute, values in ATTRIBUTE_VALUES.items()}

RATE_FUNCTIONS = frozenset({"rate", "irate", "increase"})  # counters (and a histogram's samples) only
GAUGE_RANGE_FUNCTIONS = frozenset({"delta", "deriv", "idelta", "predict_linear"})  # gauges only
OVER_TIME = frozenset({"avg_over_time", "min_over_time", "max_over_time", "last_over_time", "sum_over_time"})
PER_SECOND = frozenset({"rate", "irate", "deriv"})
PASS_THROUGH = frozenset({"abs", "ceil", "floor", "round", "clamp", "clamp_min", "clamp_max", "sort", "sort_desc"})


@dataclass(frozen=True)
class Quantity:
    """What a value measures: a unit (UCUM, ``1`` for a ratio) and whether it is per second."""

    unit: str
    per_second: bool = False

    def __str__(self) -> str:
        return f"{self.unit}/s" if self.per_second else self.unit


@dataclass(frozen=True)
class Value:
    """The result of an expression: its labels (None for a scalar) and what it measures (None if unknown)."""

    labels: frozenset[str] | None
    quantity: Quantity | None = None
    samples: frozenset[str] = frozenset()  # the library's sample names it is computed from


SCALAR = Value(None)


@dataclass
class Analysis:
    """The analysis of one expression against a schema: `value` gives each node's result, `problems` collects."""

    schema: Schema
    allow_raw_counters: bool
    source: str = "the library exports"  # what the schema is, for messages
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)

    # --- nodes -------------------------------------------------------------------------------------------------------
    def value(self, node: Node, function: str | None = None) -> Value:
        if isinstance(node, Selector):
            return self.selector(node, function)
        if isinstance(node, Call):
            return self.call(node)
        if isinstance(node, Aggregate):
            return self.aggregate(node)
        if isinstance(node, Binary):
            return self.binary(node)
        if isinstance(node, Unary):
            return self.value(node.operand)
        return SCALAR  # a number, a string or a Grafana variable

    def selector(self, node: Selector, function: str | None) -> Value:
        if node.name is None:
            self.problem(f"a selector without a metric name: {node}")
            return Value(frozenset())
        series = self.schema.get(node.name)
        if series is None:
            self.problem(f"{node.name} is not a metric {self.source}{_closest(node.name, self.schema, self.source)}")
            # any label, so that the one mistake is reported once
            return Value(frozenset().union(*(s.labels for s in self.schema.values())))
        for matcher in node.matchers:
            self.matcher(node.name, series, matcher)
        if node.range is not None and function is None:
            self.problem(f"{node}: a range vector outside a function")
        if series.part in ("total", "sum", "count", "bucket") and function is None and not self.allow_raw_counters:
            self.problem(f"{node.name} is a cumulative {series.kind} sample shown raw: take its rate() or increase()")
        if series.part == "value" and function in RATE_FUNCTIONS:
            self.problem(f"{function}() of the gauge {node.name}: rate and increase are for counters")
        if series.part != "value" and function in GAUGE_RANGE_FUNCTIONS:
            self.problem(f"{function}() of the {series.kind} sample {node.name}: use rate() or increase()")
        return Value(series.labels, Quantity(series.unit), frozenset({node.name}))

    def matcher(self, name: str, series: Series, matcher: Matcher) -> None:
        if matcher.label not in series.labels | {"__name__"}:
            self.problem(f"label {matcher.label} is not on {name} (its labels: {', '.join(sorted(series.labels))})")
            return
        allowed = VALUES.get(matcher.label)
        if allowed is None or "$" in matcher.value or matcher.value == "":
            return
        if matcher.op in ("=", "!="):
            if matcher.value not in allowed:
                self.problem(f"{name}{{{matcher}}}: the library writes no {matcher.label} {matcher.value!r}")
            return
        for alternative in _alternatives(matcher.value):
            if not any(re.fullmatch(alternative, value) for value in allowed):
                self.problem(
                    f"{name}{{{matcher}}}: {alternative!r} matches no {matcher.label} the library writes "
                    f"({', '.join(sorted(allowed))})"
                )

    def call(self, node: Call) -> Value:
        name = node.function
        if name in RATE_FUNCTIONS | GAUGE_RANGE_FUNCTIONS | OVER_TIME:
            argument = node.args[0] if len(node.args) == 1 else None
            if not isinstance(argument, Selector) or argument.range is None:
                self.problem(f"{name}() needs one range selector: {_short(node)}")
                return Value(frozenset())
            inner = self.value(argument, name)
            if inner.quantity is None:
                return inner
            return Value(inner.labels, Quantity(inner.quantity.unit, name in PER_SECOND), inner.samples)
        if name == "histogram_quantile":
            return self.histogram_quantile(node)
        if name in PASS_THROUGH:
            vectors = [self.value(argument) for argument in node.args]
            return next((v for v in vectors if v.labels is not None), SCALAR)
        self.problem(f"no rule for the function {name}() in {_short(node)}")
        return Value(frozenset())

    def histogram_quantile(self, node: Call) -> Value:
        if len(node.args) != 2:
            self.problem(f"histogram_quantile takes (φ, buckets): {_short(node)}")
            return Value(frozenset())
        phi, buckets = node.args
        if isinstance(phi, Number) and not 0 <= phi.value <= 1:
            self.problem(f"histogram_quantile({phi.value}): φ is not within [0, 1]")
        elif not isinstance(phi, Number | Variable):
            self.problem(f"histogram_quantile's φ is not a number: {_short(node)}")
        inner = self.value(buckets)
        families: set[str] = set()
        for selector in selectors(buckets):
            series = self.schema.get(selector.name or "")
            if series is None:
                continue  # reported already
            if series.part != "bucket":
                self.problem(f"histogram_quantile over {selector.name}, not a histogram's _bucket series")
            families.add(series.family)
        if len(families) > 1:
            self.problem(f"histogram_quantile over buckets of several histograms: {sorted(families)}")
        if inner.labels is not None and "le" not in inner.labels:
            self.problem(f"histogram_quantile over buckets grouped without le: {_short(buckets)}")
        labels = None if inner.labels is None else inner.labels - {"le"}
        quantity = Quantity(inner.quantity.unit) if inner.quantity else None
        return Value(labels, quantity, inner.samples)

    def aggregate(self, node: Aggregate) -> Value:
        for parameter in node.args[:-1]:
            self.value(parameter)
        inner = self.value(node.vector)
        quantity = Quantity("{series}") if node.op in ("count", "count_values", "group") else inner.quantity
        if inner.labels is None:
            self.problem(f"{node.op}() of a scalar")
            return Value(frozenset(), quantity, inner.samples)
        if node.grouping is None:
            return Value(frozenset(), quantity, inner.samples)
        grouped = frozenset(node.grouping.labels)
        missing = grouped - inner.labels
        if missing:
            self.problem(
                f"{node.op} {node.grouping.kind} ({', '.join(node.grouping.labels)}): {', '.join(sorted(missing))} "
                f"{'is' if len(missing) == 1 else 'are'} not a label of {_names(inner.samples)}"
            )
        labels = grouped if node.grouping.kind == "by" else inner.labels - grouped
        return Value(labels, quantity, inner.samples)

    def binary(self, node: Binary) -> Value:
        lhs, rhs = self.value(node.lhs), self.value(node.rhs)
        samples = lhs.samples | rhs.samples
        if lhs.labels is None or rhs.labels is None:  # with a scalar: the vector's labels
            vector = lhs if lhs.labels is not None else rhs
            if node.op in COMPARISONS and not node.return_bool:
                return Value(vector.labels, vector.quantity, samples)  # a filter
            quantity = vector.quantity if node.op in ("+", "-") else None
            return Value(vector.labels, quantity, samples)
        labels = self.matched_labels(node, lhs.labels, rhs.labels)
        return Value(labels, self.combined_quantity(node, lhs, rhs), samples)

    def matched_labels(self, node: Binary, lhs: frozenset[str], rhs: frozenset[str]) -> frozenset[str]:
        where = f"{node.op} between {_short(node.lhs)} and {_short(node.rhs)}"
        if node.matching is None:
            if lhs != rhs:
                self.problem(
                    f"{where}: the sides' labels differ ({', '.join(sorted(lhs ^ rhs))}), so no series match one to one"
                )
            return lhs
        on = frozenset(node.matching.labels)
        if node.matching.kind == "on":
            for side, labels in (("left", lhs), ("right", rhs)):
                if on - labels:
                    self.problem(f"{where}: on ({', '.join(sorted(on - labels))}) is not a label of the {side} side")
            if node.op in SET_OPERATORS or node.group is not None:
                return lhs if node.group is None or node.group[0] == "group_left" else rhs
            return on
        if on - (lhs | rhs):
            self.problem(f"{where}: ignoring ({', '.join(sorted(on - (lhs | rhs)))}) is a label of neither side")
        if lhs - on != rhs - on and node.group is None:
            self.problem(f"{where}: the sides' labels differ beyond ignoring ({', '.join(sorted((lhs ^ rhs) - on))})")
        return lhs - on

    def combined_quantity(self, node: Binary, lhs: Value, rhs: Value) -> Quantity | None:
        left, right = lhs.quantity, rhs.quantity
        if node.op in SET_OPERATORS or (node.op in COMPARISONS and not node.return_bool):
            return left
        if left is None or right is None:
            return None
        if node.op in ("+", "-"):
            if left != right:
                self.problem(f"{node.op} of {left} and {right}: {_short(node)}")
            return left
        if node.op != "/":
            return None
        if left == right:
            return Quantity("1")  # a share
        if left.per_second and right.per_second and _is_mean(lhs.samples, rhs.samples, self.schema):
            return Quantity(left.unit)  # rate(h_sum) / rate(h_count): the mean of h
        return None


def _is_mean(numerator: frozenset[str], denominator: frozenset[str], schema: Schema) -> bool:
    if len(numerator) != 1 or len(denominator) != 1:
        return False
    top, bottom = schema[next(iter(numerator))], schema[next(iter(denominator))]
    return top.family == bottom.family and (top.part, bottom.part) == ("sum", "count")


def _alternatives(regex: str) -> list[str]:
    """The top-level alternatives of a regex (the whole regex when it has groups)."""
    return [regex] if "(" in regex else regex.split("|")


def _short(node: Node) -> str:
    """A node, written back compactly, for messages."""
    if isinstance(node, Selector):
        return str(node)
    if isinstance(node, Call):
        return f"{node.function}({', '.join(_short(a) for a in node.args)})"
    if isinstance(node, Aggregate):
        grouping = f" {node.grouping.kind} ({', '.join(node.grouping.labels)})" if node.grouping else ""
        return f"{node.op}{grouping} ({', '.join(_short(a) for a in node.args)})"
    if isinstance(node, Binary):
        return f"{_short(node.lhs)} {node.op} {_short(node.rhs)}"
    if isinstance(node, Unary):
        return f"{node.op}{_short(node.operand)}"
    if isinstance(node, Number):
        return f"{node.value:g}"
    if isinstance(node, Variable):
        return f"${node.name}"
    return repr(node.value)


def _names(samples: Iterable[str]) -> str:
    return ", ".join(sorted(samples)) or "the expression"


def _closest(name: str, schema: Schema, source: str) -> str:
    """A hint: the exported name `name` is a variant of, if any."""
    for candidate in sorted(schema, key=len, reverse=True):
        if name.startswith(candidate) or candidate.startswith(name):
            return f" ({source} {candidate}, a {schema[candidate].kind})"
    return ""


def analyse(
    expr: str, schema: Schema, *, allow_raw_counters: bool = False, source: str = "the library exports"
) -> tuple[Value, list[str]]:
    """The result of `expr` and its problems (a parse error is one); `source` says what `schema` is."""
    try:
        node = parse(expr)
    except PromQLError as error:
        return Value(frozenset()), [str(error)]
    analysis = Analysis(schema, allow_raw_counters, source)
    return analysis.value(node), analysis.problems


def label_values_problems(definition: str, schema: Schema, source: str = "the library exports") -> list[str]:
    """Problems of a Grafana ``label_values(selector, label)`` variable."""
    try:
        query: LabelValues = parse_label_values(definition)
    except PromQLError as error:
        return [str(error)]
    analysis = Analysis(schema, allow_raw_counters=True, source=source)
    selected = analysis.value(query.selector)
    if selected.labels is not None and query.label not in selected.labels and query.selector.name in schema:
        analysis.problem(f"label_values: {query.label} is not a label of {query.selector.name}")
    return analysis.problems


# --- panels ---------------------------------------------------------------------------------------------------------
# What a title says a panel shows, first match wins: (pattern, the unit of the quantity).
SUBJECTS: tuple[tuple[str, str], ...] = (
    (r"\btokens?\b", "{token}"),
    (r"\b(?:cost|spend)\b", "{USD}"),
    (r"\bevents\b", "{event}"),
    (r"\bviolations\b", "{violation}"),
    (r"\b(?:time|duration|gap|oldest)\b", "s"),
    (r"\brate\b", "1"),
    (r"\b(?:streams|errors)\b", "{stream}"),
)
# Grafana units and the quantities they may show.
GRAFANA_UNITS: dict[str, str] = {
    "s": "a time in seconds",
    "percentunit": "a share (1)",
    "currencyUSD": "US dollars",
    "reqps": "streams per second",
    "short": "a count ({token}, {event}, ...) that is not a stream rate",
}


def unit_fits(unit: str, quantity: Quantity) -> bool:
    if unit == "s":
        return quantity == Quantity("s")
    if unit == "percentunit":
        return quantity == Quantity("1")
    if unit == "currencyUSD":
        return quantity.unit == "{USD}"
    if unit == "reqps":
        return quantity == Quantity("{stream}", per_second=True)
    if unit == "short":
        return quantity.unit.startswith("{") and quantity.unit != "{USD}" and quantity != Quantity("{stream}", True)
    return False


# "by X" in a title and the label X is; "per X" only for these X ("per stream" is a distribution, not a grouping).
BY_LABELS: dict[str, str] = {
    "response model": label(n.GEN_AI_RESPONSE_MODEL),
    "error type": label(n.ERROR_TYPE),
    "model": MODEL,
    "provider": label(n.GEN_AI_PROVIDER_NAME),
    "outcome": OUTCOME,
    "server": label(n.SERVER_ADDRESS),
    "kind": label(n.EVENT_KIND),
    "policy": label(n.POLICY_NAME),
    "type": TOKEN_TYPE,
}
_BY = re.compile(r"\bby (" + "|".join(map(re.escape, BY_LABELS)) + r"|\w+)")
_PER = re.compile(r"\bper (" + "|".join(map(re.escape, BY_LABELS)) + r")\b")


@dataclass(frozen=True)
class Target:
    ref_id: str
    expr: str
    legend: str
    value: Value
    node: Node | None


def title_groupings(title: str) -> list[str]:
    """The phrases X of "by X" and "per X" (for a grouping X) in a title."""
    lowered = title.lower()
    return [m.group(1) for m in _BY.finditer(lowered)] + [m.group(1) for m in _PER.finditer(lowered)]


def selects(matcher: Matcher, value: str) -> bool:
    """Whether a label matcher keeps a series whose label has `value`."""
    if matcher.op == "=":
        return matcher.value == value
    if matcher.op == "!=":
        return matcher.value != value
    found = re.fullmatch(matcher.value, value) is not None
    return found if matcher.op == "=~" else not found


def selects_only(node: Node, label_name: str, value: str, other: str) -> bool:
    """Whether some selector of `node` has a matcher on `label_name` keeping `value` and dropping `other`."""
    return any(
        m.label == label_name and selects(m, value) and not selects(m, other)
        for selector in selectors(node)
        for m in selector.matchers
    )


def quantile_of(node: Node | None) -> float | None:
    """φ of the first histogram_quantile in `node`."""
    if node is None:
        return None
    for found in walk(node):
        if isinstance(found, Call) and found.function == "histogram_quantile" and isinstance(found.args[0], Number):
            return found.args[0].value
    return None


def panel_targets(panel: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [t for t in panel.get("targets", []) if (t.get("datasource") or panel["datasource"])["type"] == "prometheus"]


def panel_problems(panel: Mapping[str, Any], schema: Schema) -> list[str]:
    """Everything wrong with a Prometheus panel's queries, and between them and its title, unit and legends."""
    title: str = panel["title"]
    unit: str = panel["fieldConfig"]["defaults"].get("unit", "")
    problems: list[str] = []
    targets: list[Target] = []
    for raw in panel_targets(panel):
        value, found = analyse(raw["expr"], schema)
        try:
            node: Node | None = parse(raw["expr"])
        except PromQLError:
            node = None
        target = Target(raw["refId"], raw["expr"], raw.get("legendFormat", ""), value, node)
        targets.append(target)
        problems += [f"{title!r} {target.ref_id}: {p}" for p in found]
        problems += [f"{title!r} {target.ref_id}: {p} in {target.expr}" for p in target_problems(title, unit, target)]
    if not targets:
        return [f"{title!r}: no Prometheus target"]
    problems += [f"{title!r}: {p}" for p in grouping_problems(title, targets, schema)]
    problems += [f"{title!r}: {p}" for p in selection_problems(title, targets, schema)]
    problems += [f"{title!r}: {p}" for p in description_problems(panel.get("description", ""), targets, schema)]
    for link in panel["fieldConfig"]["defaults"].get("links", []):
        for used in sorted(set(re.findall(r"\$\{__field\.labels\.(\w+)\}", link["title"] + link["url"]))):
            problems += [
                f"{title!r}: the data link's {used} is not a label of {t.ref_id}'s result"
                for t in targets
                if t.value.labels is not None and used not in t.value.labels
            ]
    return problems


# A description naming a policy by what enforces it.
POLICY_ALIASES = {"check_allow_model_requests": n.POLICY_ALLOW_MODEL_REQUESTS}
POLICY = label(n.POLICY_NAME)


def description_problems(description: str, targets: list[Target], schema: Schema) -> list[str]:
    """A description that names policies says which violations are counted: those the queries select."""
    policies = VALUES[POLICY]
    named = {p for p in policies if re.search(rf"\b{p}\b", description)}
    named |= {policy for alias, policy in POLICY_ALIASES.items() if alias in description}
    if not named:
        return []
    selected: set[str] = set()
    for target in targets:
        for selector in selectors(target.node) if target.node is not None else []:
            series = schema.get(selector.name or "")
            if series is None or POLICY not in series.labels:
                continue
            matchers = [m for m in selector.matchers if m.label == POLICY]
            selected |= {p for p in policies if all(selects(m, p) for m in matchers)}
    if named == selected:
        return []
    return [
        f"the description names the policies {', '.join(sorted(named))}; the queries count "
        f"{', '.join(sorted(selected)) or 'no policy'}"
    ]


def target_problems(title: str, unit: str, target: Target) -> list[str]:
    problems: list[str] = []
    lowered = title.lower()
    quantity = target.value.quantity
    if quantity is None:
        problems.append("cannot tell what it measures")
    else:
        subject = next(((p, u) for p, u in SUBJECTS if re.search(p, lowered)), None)
        if subject is None:
            problems.append(f"no rule says what a panel titled {title!r} shows")
        elif quantity.unit != subject[1]:
            problems.append(f"the title (/{subject[0]}/) promises {subject[1]}, the query gives {quantity}")
        if ("/s" in lowered) != quantity.per_second:
            problems.append(
                f"the title {'says' if '/s' in lowered else 'does not say'} per second, the query gives {quantity}"
            )
        if unit not in GRAFANA_UNITS:
            problems.append(f"no rule for the unit {unit!r}")
        elif not unit_fits(unit, quantity):
            problems.append(f"unit {unit!r} ({GRAFANA_UNITS[unit]}) does not fit {quantity}")
    for legend_label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.legend):
        if target.value.labels is not None and legend_label not in target.value.labels:
            problems.append(f"the legend's {{{{{legend_label}}}}} is not a label of the result")
    title_quantile = re.search(r"\bp(\d{2})\b", lowered)
    legend_quantile = re.match(r"p(\d{2})\b", target.legend)
    for source, found in (("title", title_quantile), ("legend", legend_quantile)):
        if found is not None and quantile_of(target.node) != int(found.group(1)) / 100:
            problems.append(f"the {source} says p{found.group(1)}, the query's quantile is {quantile_of(target.node)}")
    return problems


def grouping_problems(title: str, targets: list[Target], schema: Schema) -> list[str]:
    problems: list[str] = []
    for phrase in title_groupings(title):
        wanted = BY_LABELS.get(phrase)
        if wanted is None:
            problems.append(f"the title groups by {phrase!r}, which no rule maps to a label")
            continue
        if wanted == TOKEN_TYPE and _one_token_type_each(targets, schema):
            continue  # one target per token type, each its own counter
        for target in targets:
            labels = target.value.labels
            if labels is not None and wanted not in labels:
                problems.append(
                    f"the title says by {phrase}, {target.ref_id} is grouped by "
                    f"({', '.join(sorted(labels))}) without {wanted}: {target.expr}"
                )
    return problems


def _one_token_type_each(targets: list[Target], schema: Schema) -> bool:
    types: list[str | None] = []
    for target in targets:
        found = {schema[s].token_type for s in target.value.samples if s in schema}
        types.append(found.pop() if len(found) == 1 else None)
    return len(targets) > 1 and None not in types and len(set(types)) == len(types)


def selection_problems(title: str, targets: list[Target], schema: Schema) -> list[str]:
    """A title naming a token type, errors or interruptions: the queries select exactly those."""
    problems: list[str] = []
    lowered = title.lower()
    token_type = re.search(r"\b(input|output) tokens?\b", lowered)
    for target in targets:
        if target.node is None:
            continue
        for selector in selectors(target.node):
            series = schema.get(selector.name or "")
            if series is None:
                continue
            counted = _token_type(selector, series)
            if (
                series.metric == n.METRIC_TOKEN_USAGE
                and counted is None
                and TOKEN_TYPE not in (target.value.labels or frozenset())
            ):
                problems.append(f"{target.ref_id} adds input and output tokens up: {target.expr}")
            counts_tokens = series.unit == "{token}" or series.metric == n.METRIC_TOKEN_USAGE
            if token_type is not None and counts_tokens and counted != token_type.group(1):
                problems.append(
                    f"the title says {token_type.group(0)}, {target.ref_id} counts "
                    f"{counted or 'input and output'} tokens ({selector}): {target.expr}"
                )
    nodes = [t.node for t in targets if t.node is not None]
    if re.search(r"\berror", lowered) and not any(
        selects_only(node, OUTCOME, n.OUTCOME_ERROR, n.OUTCOME_COMPLETE)
        or any(m.label == ERROR_TYPE and m.op == "!=" and m.value == "" for s in selectors(node) for m in s.matchers)
        for node in nodes
    ):
        problems.append(f'the title says errors, no query selects {OUTCOME}="{n.OUTCOME_ERROR}" or {ERROR_TYPE}!=""')
    if "interruption" in lowered and not any(
        selects_only(node, OUTCOME, n.OUTCOME_INTERRUPTED, n.OUTCOME_COMPLETE) for node in nodes
    ):
        problems.append(f'the title says interruptions, no query selects {OUTCOME}="{n.OUTCOME_INTERRUPTED}"')
    return problems


def _token_type(selector: Selector, series: Series) -> str | None:
    """Which tokens a selector counts: a usage counter's own, token usage's gen_ai_token_type="..." if it has one."""
    if series.token_type is not None:
        return series.token_type
    equal = [m.value for m in selector.matchers if m.label == TOKEN_TYPE and m.op == "="]
    return equal[0] if equal else None


def alert_problems(
    name: str, expr: str, annotations: Iterable[str], schema: Schema, source: str = "the library exports"
) -> list[str]:
    """An alert rule's problems: its query's, and annotation ``$labels.x`` that its result does not carry."""
    value, problems = analyse(expr, schema, allow_raw_counters=True, source=source)
    for text in annotations:
        for used in re.findall(r"\$labels\.(\w+)", text):
            if value.labels is not None and used not in value.labels:
                problems.append(f"$labels.{used} is not a label of the result")
    return [f"{name}: {p}" for p in problems]

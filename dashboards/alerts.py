"""Prometheus alerting rules for streamscope's metrics, and their `promtool test rules` unit tests, from code.

`dashboards.generate` writes both into ``dashboards/alerts/``. Each alert's threshold, window and `for` duration
are defaults to edit: they are written as a comment above the rule. The unit tests show every alert firing on a
series that crosses its threshold and staying silent on one that does not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from dashboards import names as m
from streamscope import _names as n

BY_MODEL = f"job, {m.PROVIDER}, {m.MODEL}"
SERIES_LABELS = f'job="app", {m.PROVIDER}="openai", {m.MODEL}="gpt-4o"'
ALERT_LABELS = {"job": "app", m.PROVIDER: "openai", m.MODEL: "gpt-4o"}
SUBJECT = f"{{{{ $labels.{m.MODEL} }}}} ({{{{ $labels.{m.PROVIDER} }}}}, job {{{{ $labels.job }}}})"


@dataclass(frozen=True)
class Case:
    """One promtool unit test: input series (PromQL selector → promtool values notation), when to evaluate, and
    whether the alert is then firing (with these labels besides the rule's own)."""

    what: str
    series: tuple[tuple[str, str], ...]
    eval_time: str
    fires_with: dict[str, str] | None


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    duration: str  # the rule's `for`
    severity: str
    summary: str
    description: str
    defaults: str  # the threshold and windows to edit, written above the rule
    fires: Case
    silent: Case


ALERTS: tuple[Alert, ...] = (
    Alert(
        name="StreamscopeHighErrorRate",
        expr=f'(\n  sum by ({BY_MODEL}) (rate({m.FINISHED}{{{m.OUTCOME}="{n.OUTCOME_ERROR}"}}[5m]))\n'
        f"/\n  sum by ({BY_MODEL}) (rate({m.FINISHED}[5m]))\n) > 0.05",
        duration="5m",
        severity="warning",
        summary=f"More than 5% of the streams of {SUBJECT} end in an error",
        description="Over the last 5 minutes more than 5% of this model's streams failed (provider errors, refused "
        "requests, policy denials, timeouts). The stream spans with streamscope.stream.outcome=error carry "
        "error.type and the exception.",
        defaults="error share > 5% over 5m, for 5m",
        fires=Case(
            "10% of the streams fail",
            (
                (f'{m.FINISHED}{{{SERIES_LABELS}, {m.OUTCOME}="complete"}}', "0+90x30"),
                (f'{m.FINISHED}{{{SERIES_LABELS}, {m.OUTCOME}="error"}}', "0+10x30"),
            ),
            "20m",
            ALERT_LABELS,
        ),
        silent=Case(
            "1% of the streams fail",
            (
                (f'{m.FINISHED}{{{SERIES_LABELS}, {m.OUTCOME}="complete"}}', "0+99x30"),
                (f'{m.FINISHED}{{{SERIES_LABELS}, {m.OUTCOME}="error"}}', "0+1x30"),
            ),
            "20m",
            None,
        ),
    ),
    Alert(
        name="StreamscopeSlowTimeToFirstChunk",
        expr=f"histogram_quantile(0.95,\n  sum by (le, {BY_MODEL}) (rate({m.TTFC}_bucket[5m]))\n) > 5",
        duration="10m",
        severity="warning",
        summary=f"p95 time to first chunk of {SUBJECT} is above 5 s",
        description="For 10 minutes the 95th percentile of the time from opening a stream to its first chunk has "
        "been above 5 seconds: users wait before anything appears. The histogram's exemplars link to slow streams.",
        defaults="p95 time to first chunk > 5 s over 5m, for 10m",
        fires=Case(
            "every first chunk takes 5 to 10 s",
            (
                (f'{m.TTFC}_bucket{{{SERIES_LABELS}, le="1"}}', "0x40"),
                (f'{m.TTFC}_bucket{{{SERIES_LABELS}, le="5"}}', "0x40"),
                (f'{m.TTFC}_bucket{{{SERIES_LABELS}, le="10"}}', "0+10x40"),
                (f'{m.TTFC}_bucket{{{SERIES_LABELS}, le="+Inf"}}', "0+10x40"),
            ),
            "30m",
            ALERT_LABELS,
        ),
        silent=Case(
            "every first chunk comes within 1 s",
            (
                (f'{m.TTFC}_bucket{{{SERIES_LABELS}, le="1"}}', "0+10x40"),
                (f'{m.TTFC}_bucket{{{SERIES_LABELS}, le="5"}}', "0+10x40"),
                (f'{m.TTFC}_bucket{{{SERIES_LABELS}, le="10"}}', "0+10x40"),
                (f'{m.TTFC}_bucket{{{SERIES_LABELS}, le="+Inf"}}', "0+10x40"),
            ),
            "30m",
            None,
        ),
    ),
    Alert(
        name="StreamscopeStalledStreams",
        expr=f"sum by ({BY_MODEL}) ({m.STALLED}) > 0",
        duration="2m",
        severity="warning",
        summary=f"Streams of {SUBJECT} have stalled",
        description="For 2 minutes at least one stream in flight has received no chunk for longer than the stall "
        "threshold (streamscope's stall_threshold option, 30 s by default): the provider or the consumer is stuck.",
        defaults="any stalled stream (stall_threshold: the instrumentation option), for 2m",
        fires=Case(
            "a stream stays stalled", ((f"{m.STALLED}{{{SERIES_LABELS}}}", "0 0 1 1 1 1 1 1 1 1"),), "8m", ALERT_LABELS
        ),
        silent=Case(
            "a stream stalls briefly", ((f"{m.STALLED}{{{SERIES_LABELS}}}", "0 0 1 0 0 0 0 0 0 0"),), "8m", None
        ),
    ),
    Alert(
        name="StreamscopeStreamsNeverFinish",
        expr=f"sum by (job) (delta({m.ACTIVE}[15m])) > 0\nand on (job)\n"
        f"(\n  sum by (job) (increase({m.FINISHED}[15m]))\n  or\n  sum by (job) ({m.ACTIVE}) * 0\n) == 0",
        duration="5m",
        severity="critical",
        summary="Streams of job {{ $labels.job }} are opened but none finishes",
        description="Over the last 15 minutes the number of streams in flight grew while not one stream finished: "
        "requests hang. Streams in flight end with end_reason=shutdown when the application shuts down through "
        "streamscope's Configuration.shutdown().",
        defaults="in flight grew and nothing finished over 15m, for 5m",
        fires=Case(
            "streams keep opening, none finishes",
            (
                (f"{m.ACTIVE}{{{SERIES_LABELS}}}", "0+1x40"),
                (f'{m.FINISHED}{{{SERIES_LABELS}, {m.OUTCOME}="complete"}}', "5x40"),
            ),
            "30m",
            {"job": "app"},
        ),
        silent=Case(
            "streams open and finish",
            (
                (f"{m.ACTIVE}{{{SERIES_LABELS}}}", "0+1x40"),
                (f'{m.FINISHED}{{{SERIES_LABELS}, {m.OUTCOME}="complete"}}', "0+3x40"),
            ),
            "30m",
            None,
        ),
    ),
    Alert(
        name="StreamscopePolicyViolations",
        # A counter's series appears with its first violation, which increase() cannot see: a series younger than
        # the window counts with its whole value.
        expr=f"sum by ({BY_MODEL}, {m.POLICY}) (\n  ({m.VIOLATIONS} unless {m.VIOLATIONS} offset 5m)\n  or\n"
        f"  increase({m.VIOLATIONS}[5m])\n) > 0",
        duration="0m",
        severity="warning",
        summary=f"Model requests to {SUBJECT} were stopped by policy {{{{ $labels.{m.POLICY} }}}}",
        description="A policy stopped a model request or its answer in the last 5 minutes: a denial by "
        "check_allow_model_requests (ALLOW_MODEL_REQUESTS=False), a usage or concurrency limit, or the provider's "
        "content filter. Each is also an OTel log record and a span event with its call site.",
        defaults="any violation in the last 5m",
        fires=Case(
            "the first violation of the process",
            (
                (
                    f'{m.VIOLATIONS}{{{SERIES_LABELS}, {m.POLICY}="{n.POLICY_ALLOW_MODEL_REQUESTS}"}}',
                    "_ _ _ 1 1 1 1 1 1 1",
                ),
            ),
            "5m",
            {**ALERT_LABELS, m.POLICY: n.POLICY_ALLOW_MODEL_REQUESTS},
        ),
        silent=Case(
            "an old violation, none since",
            ((f'{m.VIOLATIONS}{{{SERIES_LABELS}, {m.POLICY}="{n.POLICY_ALLOW_MODEL_REQUESTS}"}}', "1x20"),),
            "15m",
            None,
        ),
    ),
    Alert(
        name="StreamscopeCostBurnRate",
        expr=f"sum by (job) (rate({m.COST}[15m])) * 3600 > 10",
        duration="15m",
        severity="warning",
        summary="Streams of job {{ $labels.job }} cost more than 10 USD per hour",
        description="For 15 minutes the streams' cost, counted while they run and priced like Pydantic AI prices "
        "a response (genai-prices), has been above 10 USD per hour. The overview dashboard's Cost row shows it by "
        "model and by outcome.",
        defaults="spend > 10 USD/hour over 15m, for 15m",
        fires=Case(
            "0.5 USD a minute (30 USD/h)", ((f"{m.COST}{{{SERIES_LABELS}}}", "0+0.5x60"),), "45m", {"job": "app"}
        ),
        silent=Case("0.1 USD a minute (6 USD/h)", ((f"{m.COST}{{{SERIES_LABELS}}}", "0+0.1x60"),), "45m", None),
    ),
)

RULES_FILE = "alerts/streamscope-rules.yml"
TESTS_FILE = "alerts/streamscope-rules.test.yml"


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is valid YAML)."""
    return json.dumps(text)


def _block(text: str, indent: str) -> str:
    return "|-\n" + "\n".join(indent + line for line in text.splitlines())


def rules_yaml() -> str:
    lines = [
        "# streamscope's Prometheus alerting rules, generated by dashboards/generate.py: edit the thresholds to taste.",
        "# Load with `rule_files: [streamscope-rules.yml]` in prometheus.yml; check with `promtool check rules`.",
        "groups:",
        "  - name: streamscope",
        "    rules:",
    ]
    for alert in ALERTS:
        lines += [
            f"      # Default: {alert.defaults}.",
            f"      - alert: {alert.name}",
            f"        expr: {_block(alert.expr, ' ' * 10)}",
            f"        for: {alert.duration}",
            "        labels:",
            f"          severity: {alert.severity}",
            "        annotations:",
            f"          summary: {_q(alert.summary)}",
            f"          description: {_q(alert.description)}",
        ]
    return "\n".join(lines) + "\n"


def _expand(template: str, labels: dict[str, str]) -> str:
    """The annotation as Prometheus renders it for an alert with these labels (only `$labels.x` templates)."""
    for key, value in labels.items():
        template = template.replace(f"{{{{ $labels.{key} }}}}", value)
    return template


def tests_yaml() -> str:
    lines = [
        "# promtool unit tests of streamscope-rules.yml (generated): every alert fires on a series that crosses its",
        "# threshold and stays silent on one that does not. Run: promtool test rules streamscope-rules.test.yml",
        "rule_files:",
        "  - streamscope-rules.yml",
        "evaluation_interval: 1m",
        "tests:",
    ]
    for alert in ALERTS:
        for case in (alert.fires, alert.silent):
            lines += [f"  # {alert.name}: {case.what}", "  - interval: 1m", "    input_series:"]
            for selector, values in case.series:
                lines += [f"      - series: {_q(selector)}", f"        values: {_q(values)}"]
            lines += [
                "    alert_rule_test:",
                f"      - eval_time: {case.eval_time}",
                f"        alertname: {alert.name}",
            ]
            if case.fires_with is None:
                lines.append("        exp_alerts: []")
                continue
            labels = {"severity": alert.severity, **case.fires_with}
            lines += ["        exp_alerts:", "          - exp_labels:"]
            lines += [f"              {key}: {_q(value)}" for key, value in labels.items()]
            lines += [
                "            exp_annotations:",
                f"              summary: {_q(_expand(alert.summary, labels))}",
                f"              description: {_q(_expand(alert.description, labels))}",
            ]
    return "\n".join(lines) + "\n"

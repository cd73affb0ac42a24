"""pytest plugin: ``pytest --streamscope`` reports which tests triggered a policy violation (reached for a real model
with model requests disallowed, went over a usage limit, got a filtered answer, ...).

Installed with streamscope (entry point ``pytest11``, plugin name ``streamscope``), it does nothing at all
unless ``--streamscope`` is given (or the ``streamscope`` ini option is set):

``--streamscope`` / ``--streamscope=report``
    Instrument the process (``streamscope.instrument()``, unless streamscope already instruments it), attribute
    each policy violation — a model request denied by ``check_allow_model_requests``, i.e. a real model reached
    while ``pydantic_ai.models.ALLOW_MODEL_REQUESTS`` is False — to the test during whose setup, call or
    teardown it happened, and list them in a terminal summary section. The exit status is unchanged.
``--streamscope=strict``
    The same, and each test phase that triggered a violation fails (a test that already failed stays failed);
    a violation outside any test (at collection, say) makes the run fail.

The source of truth is the stdlib ``logging`` WARNING that streamscope emits on the ``streamscope.policy``
logger for each violation (its ``streamscope_*`` record attributes), so any policy that reports that way is
listed, whatever its name. The plugin's handler receives every WARNING on that logger even when the logger's
level was raised or the logger disabled (``logging.config.dictConfig`` does that to existing loggers), without
showing those records to anyone else: pytest's log capture and ``caplog`` see exactly what they would without
the plugin. ``-p no:streamscope`` turns the plugin off, the ini option too.

A bare ``--streamscope`` takes the next argument as its mode: before a test path, or in ``addopts`` (which come
before the command line's arguments), write ``--streamscope=report``.

pytest-xdist is not supported: the tests run in worker processes, whose violations the controller cannot list
(its section says so).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Final, Literal, cast

import pytest

__all__ = ["OUTSIDE_TESTS", "SECTION_TITLE", "PolicyViolation", "StreamscopeReporter"]

Mode = Literal["report", "strict"]
Phase = Literal["setup", "call", "teardown"]

MODES: Final[tuple[Mode, ...]] = ("report", "strict")
POLICY_LOGGER_NAME: Final = "streamscope.policy"
SECTION_TITLE: Final = "streamscope: policy violations by test"
OUTSIDE_TESTS: Final = "(outside tests)"
_REPORTER_NAME: Final = "streamscope-reporter"


@dataclass(frozen=True)
class PolicyViolation:
    """One violation as the ``streamscope.policy`` log record describes it, and where in the run it happened."""

    nodeid: str | None  # None: outside any test
    phase: Phase | None
    policy: str
    model_class: str | None
    model: str | None
    provider: str | None
    call_site: str | None

    @property
    def where(self) -> str:
        """The test and phase (``path::test (call)``), or ``(outside tests)``."""
        return OUTSIDE_TESTS if self.nodeid is None else f"{self.nodeid} ({self.phase})"

    def describe(self) -> str:
        """``policy: ModelClass model (provider) at call_site`` (``no model`` for a guard of a whole agent run; no
        call site where the violation was seen in a response)."""
        model = " ".join(part for part in (self.model_class, self.model) if part) or "no model"
        provider = f" ({self.provider})" if self.provider else ""
        site = f" at {self.call_site}" if self.call_site else ""
        return f"{self.policy}: {model}{provider}{site}"


def _grouped(violations: list[PolicyViolation], *, where: bool = True) -> list[str]:
    """One line per distinct violation, in the order they first happened, with a count if repeated."""
    counts: dict[PolicyViolation, int] = {}
    for violation in violations:
        counts[violation] = counts.get(violation, 0) + 1
    return [
        (f"{v.where}: " if where else "") + v.describe() + (f" ({count} times)" if count > 1 else "")
        for v, count in counts.items()
    ]


def _text(record: logging.LogRecord, attribute: str) -> str | None:
    value: object = record.__dict__.get(attribute)
    return None if value is None else str(value)


class _ViolationHandler(logging.Handler):
    """Passes each record carrying ``streamscope_policy`` to `sink`; other records on the logger are ignored."""

    def __init__(self, sink: Callable[[logging.LogRecord], None]) -> None:
        super().__init__(logging.WARNING)
        self._sink: Callable[[logging.LogRecord], None] = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if _text(record, "streamscope_policy") is not None:
                self._sink(record)
        except Exception:
            self.handleError(record)


class _Subscription:
    """`handler` on `logger`, fed every WARNING or above that the logger's own level or state would drop.

    The logger's ``isEnabledFor`` and ``handle`` are shadowed on the instance (the class's methods stay as they
    are): a WARNING the logger would have emitted is handled as usual (propagating to pytest's capture, our
    handler among the logger's handlers); one it would have dropped goes to `handler` alone, so nobody else sees
    a record they would not have seen. `close()` removes the handler and the shadows.
    """

    def __init__(self, logger: logging.Logger, handler: logging.Handler) -> None:
        self._logger: logging.Logger = logger
        self._handler: logging.Handler = handler
        self._shadows: dict[str, Callable[..., object]] = {}

    def open(self) -> None:
        logger, handler, cls = self._logger, self._handler, type(self._logger)

        def would_log(level: int) -> bool:
            return cls.isEnabledFor(logger, level)

        def is_enabled_for(level: int) -> bool:
            return level >= logging.WARNING or would_log(level)

        def handle(record: logging.LogRecord) -> None:
            if would_log(record.levelno):
                cls.handle(logger, record)
            elif record.levelno >= logging.WARNING:
                handler.handle(record)

        self._shadows = {"isEnabledFor": is_enabled_for, "handle": handle}
        logger.addHandler(handler)
        vars(logger).update(self._shadows)

    def close(self) -> None:
        self._logger.removeHandler(self._handler)
        attributes = vars(self._logger)
        for name, shadow in self._shadows.items():
            if attributes.get(name) is shadow:
                del attributes[name]
        self._shadows = {}


class StreamscopeReporter:
    """The plugin's state while ``--streamscope`` is on: registered as ``streamscope-reporter``."""

    def __init__(self, config: pytest.Config, mode: Mode) -> None:
        self.config: pytest.Config = config
        self.mode: Mode = mode
        self.violations: list[PolicyViolation] = []
        self._lock: threading.Lock = threading.Lock()
        self._where: tuple[str, Phase | None] | None = None  # (node id, phase) of the test running now
        self._instrumented: bool = False
        self._subscription: _Subscription = _Subscription(
            logging.getLogger(POLICY_LOGGER_NAME), _ViolationHandler(self._record)
        )

    # -- lifetime ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe to ``streamscope.policy`` and instrument the process unless streamscope already does."""
        import streamscope

        self._subscription.open()
        if not streamscope.StreamscopeInstrumentor().is_instrumented_by_opentelemetry:
            streamscope.instrument()
            self._instrumented = True

    def stop(self) -> None:
        """Undo `start()`: uninstrument only if the plugin instrumented; remove the handler."""
        try:
            if self._instrumented:
                import streamscope

                self._instrumented = False
                streamscope.uninstrument()
        finally:
            self._subscription.close()

    # -- attribution ---------------------------------------------------------------------------------------

    def _record(self, record: logging.LogRecord) -> None:
        where = self._where
        violation = PolicyViolation(
            nodeid=where[0] if where else None,
            phase=where[1] if where else None,
            policy=_text(record, "streamscope_policy") or "<unknown policy>",
            model_class=_text(record, "streamscope_model_class"),
            model=_text(record, "streamscope_model"),
            provider=_text(record, "streamscope_provider"),
            call_site=_text(record, "streamscope_call_site"),
        )
        with self._lock:
            self.violations.append(violation)

    def _of(self, nodeid: str, phase: str) -> list[PolicyViolation]:
        with self._lock:
            return [v for v in self.violations if v.nodeid == nodeid and v.phase == phase]

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        self._where = (item.nodeid, None)
        try:
            return (yield)
        finally:
            self._where = None

    def _phase(self, item: pytest.Item, phase: Phase) -> None:
        self._where = (item.nodeid, phase)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, None, None]:
        self._phase(item, "setup")
        return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        self._phase(item, "call")
        return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Generator[None, None, None]:
        self._phase(item, "teardown")
        return (yield)

    # -- strict mode ---------------------------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if self.mode != "strict":
            return report
        violations = self._of(item.nodeid, call.when)
        if not violations:
            return report
        text = "\n".join(
            [f"--streamscope=strict: this test triggered a policy violation during {call.when}:"]
            + [f"  {line}" for line in _grouped(violations, where=False)]
        )
        if report.passed:
            report.outcome = "failed"
            report.longrepr = text
            if hasattr(report, "wasxfail"):  # an unexpected pass: now a plain failure
                del report.wasxfail  # pyright: ignore[reportAttributeAccessIssue]
        else:  # failed (stays failed, with the violations shown) or skipped (left as it is)
            report.sections.append(("streamscope", text))
        return report

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.mode == "strict" and session.exitstatus == pytest.ExitCode.OK and self._outside():
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _outside(self) -> list[PolicyViolation]:
        with self._lock:
            return [v for v in self.violations if v.nodeid is None]

    # -- summary -------------------------------------------------------------------------------------------

    def summary_lines(self) -> list[str]:
        """One line per distinct violation (test, phase, policy, model, call site), with a count if repeated."""
        with self._lock:
            violations = list(self.violations)
        lines = _grouped(violations)
        tests = {v.nodeid for v in violations if v.nodeid is not None}
        total = f"{len(violations)} policy violation{'s' if len(violations) != 1 else ''}"
        spread = f"in {len(tests)} test{'s' if len(tests) != 1 else ''}"
        outside = sum(1 for v in violations if v.nodeid is None)
        lines.append(f"{total} {spread}" + (f", {outside} outside tests" if outside else ""))
        if self.mode == "strict":
            lines.append(
                "--streamscope=strict: each test phase listed fails"
                + ("; violations outside tests fail the run" if outside else "")
            )
        return lines

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        terminalreporter.section(SECTION_TITLE)
        if self.config.pluginmanager.hasplugin("dsession"):
            terminalreporter.line("not supported with pytest-xdist: the tests ran in worker processes, not listed here")
            return
        if not self.violations:
            terminalreporter.line("no test triggered a policy violation")
            return
        for line in self.summary_lines():
            terminalreporter.line(line)


def _mode(config: pytest.Config) -> Mode | None:
    option = cast("str | None", config.getoption("streamscope"))
    value = option if option is not None else str(config.getini("streamscope")).strip()
    if not value:
        return None
    if value not in MODES:
        raise pytest.UsageError(f"streamscope ini option: expected one of {', '.join(MODES)}, got {value!r}")
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--streamscope[=report|strict]`` and the ``streamscope`` ini option."""
    group = parser.getgroup("streamscope", "streamscope: policy violations by test")
    group.addoption(
        "--streamscope",
        nargs="?",
        const="report",
        choices=MODES,
        default=None,
        dest="streamscope",
        metavar="MODE",
        help="list the tests that made a model request denied by ALLOW_MODEL_REQUESTS=False (MODE 'report', the "
        "default); 'strict': also fail them. Before a test path write --streamscope=report",
    )
    parser.addini("streamscope", "streamscope mode when --streamscope is not given: report or strict", default="")


def pytest_configure(config: pytest.Config) -> None:
    """With ``--streamscope`` (or the ini option): register the reporter, subscribe and instrument."""
    mode = _mode(config)
    if mode is None:
        return
    reporter = StreamscopeReporter(config, mode)
    config.pluginmanager.register(reporter, _REPORTER_NAME)
    config.add_cleanup(reporter.stop)
    reporter.start()

"""The pytest plugin, `pytest --streamscope`: inner pytest runs, each making real denied requests.

Every inner test that is denied builds a real `OpenAIChatModel` (base URL 127.0.0.1:9, never reached: the denial
comes first) and runs an agent on it with model requests disallowed; the ones that must not be named use
`TestModel`/`FunctionModel`, which are never denied. Each inner run has its own minimal ini (warnings are errors
there too). Each runs twice: in a subprocess, as a user's run is (the plugin instruments the whole process, and
what it leaves behind is printed at the process's exit), and in this process, where the plugin's code runs under
the eyes of coverage and mutation testing (`make mutation` selects only these: `-k "not subprocess"`).
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import pkgutil
import re
import uuid
import warnings
from collections.abc import Callable

import pytest
from pydantic_ai import models

import streamscope
from streamscope.pytest_plugin import (
    OUTSIDE_TESTS,
    SECTION_TITLE,
    PolicyViolation,
    StreamscopeReporter,
    _Subscription,
    _ViolationHandler,
)
from tests.conftest import expect_inner_run_garbage

pytest_plugins = ["pytester"]

# pytester forgets, when an inner run ends, the modules first imported during it: those of streamscope and of the
# inner tests are imported now, so that every inner run made in this process shares them with it (a second copy of
# streamscope's modules would hold patches and state that nothing here could see or undo), and none imports again
# what the one before it imported (the OpenAI client's resources, the price data, and Hypothesis, which its pytest
# plugin imports at the end of each run, take a second or two each).
for _module in [
    *(info.name for info in pkgutil.walk_packages(streamscope.__path__, "streamscope.")),
    "genai_prices.data",
    "hypothesis",
    "openai.resources.chat.completions",
    "pydantic_ai.exceptions",
    "pydantic_ai.models.function",
    "pydantic_ai.models.openai",
    "pydantic_ai.models.test",
    "pydantic_ai.providers.openai",
    "pydantic_ai.usage",
]:
    importlib.import_module(_module)

# The OpenAI model's module is `pydantic_ai.models.openai` in 2.0, `pydantic_ai.models.openai._chat_model` later.
REQUEST_SITE = r"pydantic_ai\.models\.openai[\w.]*:OpenAIChatModel\.request:\d+"
STREAM_SITE = r"pydantic_ai\.models\.openai[\w.]*:OpenAIChatModel\.request_stream:\d+"
DENIED = r"allow_model_requests: OpenAIChatModel gpt-4o \(openai\) at "

# Warnings are errors, except the unclosed event loop (and its sockets) `Agent.run_sync` leaves to the collector.
INI = """\
[pytest]
filterwarnings =
    error
    ignore::ResourceWarning
    ignore::pytest.PytestUnraisableExceptionWarning
"""

CONFTEST = """\
import atexit
import logging

import pytest
from pydantic_ai import models
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

import streamscope

{setup}


def _after_pytest():
    logger = logging.getLogger("streamscope.policy")
    instrumented = streamscope.StreamscopeInstrumentor().is_instrumented_by_opentelemetry
    shadowed = sorted(vars(logger).keys() & {{"isEnabledFor", "handle"}})
    print(f"AFTER PYTEST: instrumented={{instrumented}} handlers={{len(logger.handlers)}} shadowed={{shadowed}}")


if {at_exit}:
    atexit.register(_after_pytest)


@pytest.fixture
def real_model():
    return OpenAIChatModel("gpt-4o", provider=OpenAIProvider(base_url="http://127.0.0.1:9/v1", api_key="test-key"))
"""

DENY_IN_CONFTEST = "models.ALLOW_MODEL_REQUESTS = False"

CLEAN_AFTER = "AFTER PYTEST: instrumented=False handlers=0 shadowed=[]"

Run = Callable[..., pytest.RunResult]


@pytest.fixture(params=["subprocess", "inprocess"])
def runner(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How the inner pytest runs: in a subprocess, or in this process."""
    if request.param == "inprocess":
        # the inner conftest disallows model requests for its whole process: this one gets back what it had
        monkeypatch.setattr(models, "ALLOW_MODEL_REQUESTS", models.ALLOW_MODEL_REQUESTS)
    return str(request.param)


@pytest.fixture
def run(pytester: pytest.Pytester, runner: str) -> Run:
    """Runs the inner pytest the `runner` way."""
    if runner == "subprocess":
        return pytester.runpytest_subprocess

    def in_this_process(*args: str) -> pytest.RunResult:
        try:
            return pytester.runpytest_inprocess(*args)
        finally:
            # What `Agent.run_sync` leaves to the collector (the inner ini ignores it): its event loop, still this
            # thread's current one, and the loop's sockets. Collected now, not in some later test of this run.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                asyncio.set_event_loop(None)
                gc.collect()
            expect_inner_run_garbage()  # what the run's records still hold: collected before the next test

    return in_this_process


def state_after() -> str:
    """What the inner conftest prints at its process's exit, for the inner runs made in this process."""
    logger = logging.getLogger("streamscope.policy")
    instrumented = streamscope.StreamscopeInstrumentor().is_instrumented_by_opentelemetry
    shadowed = sorted(vars(logger).keys() & {"isEnabledFor", "handle"})
    return f"AFTER PYTEST: instrumented={instrumented} handlers={len(logger.handlers)} shadowed={shadowed}"


def assert_left(result: pytest.RunResult, runner: str, state: str = CLEAN_AFTER) -> None:
    """After the inner run, streamscope and the policy logger are in `state`."""
    if runner == "subprocess":
        result.stdout.fnmatch_lines([state])
    else:
        assert state_after() == state


TESTS_MAIN = """\
import asyncio

import pytest
from pydantic_ai import Agent
from pydantic_ai.models.function import FunctionModel
from pydantic_ai.models.test import TestModel

import streamscope


async def _stream_output(agent):
    async with agent.run_stream("hi") as result:
        return await result.get_output()


def test_test_model():
    assert Agent(TestModel()).run_sync("hi").output


def test_function_model_streams():
    async def stream(messages, info):
        yield "hello"

    assert asyncio.run(_stream_output(Agent(FunctionModel(stream_function=stream)))) == "hello"


def test_run_sync_denied(real_model):
    with pytest.raises(RuntimeError, match="ALLOW_MODEL_REQUESTS"):
        Agent(real_model).run_sync("hi")


def test_stream_denied_twice_caught_by_the_test(real_model):
    denied = 0
    for _ in range(2):
        try:
            asyncio.run(_stream_output(Agent(real_model)))
        except RuntimeError:
            denied += 1
    assert denied == 2


def test_instrumented_while_the_plugin_is_on(request):
    on = request.config.pluginmanager.has_plugin("streamscope-reporter")
    assert streamscope.StreamscopeInstrumentor().is_instrumented_by_opentelemetry is on
"""

MAIN_SECTION = [
    rf"test_main\.py::test_run_sync_denied \(call\): {DENIED}{REQUEST_SITE}",
    rf"test_main\.py::test_stream_denied_twice_caught_by_the_test \(call\): {DENIED}{STREAM_SITE} \(2 times\)",
    r"3 policy violations in 2 tests",
]


def section(result: pytest.RunResult) -> list[str] | None:
    """The lines of the plugin's terminal summary section, or None if the run printed none."""
    lines = result.outlines
    title = re.compile(rf"^=+ {re.escape(SECTION_TITLE)} =+$")
    for index, line in enumerate(lines):
        if title.match(line):
            rest = lines[index + 1 :]
            end = next((i for i, following in enumerate(rest) if following.startswith("=")), len(rest))
            return "\n".join(rest[:end]).rstrip("\n").split("\n")
    return None


def assert_section(result: pytest.RunResult, patterns: list[str]) -> None:
    lines = section(result)
    assert lines is not None, result.stdout.str()
    assert len(lines) == len(patterns), lines
    for line, pattern in zip(lines, patterns, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)


def write_project(pytester: pytest.Pytester, runner: str, setup: str = DENY_IN_CONFTEST, **modules: str) -> None:
    pytester.makeini(INI)
    pytester.makeconftest(CONFTEST.format(setup=setup, at_exit=runner == "subprocess"))
    pytester.makepyfile(**modules)


def test_without_the_option_nothing_happens(pytester: pytest.Pytester, run: Run, runner: str) -> None:
    write_project(pytester, runner, test_main=TESTS_MAIN)
    result = run("-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)  # including: not instrumented while the tests ran
    assert section(result) is None
    assert "policy violation" not in result.stdout.str()
    assert_left(result, runner)


@pytest.mark.parametrize("extra", [[], ["-p", "no:cacheprovider"]], ids=["default", "no-cacheprovider"])
def test_report_lists_exactly_the_denied_tests(
    pytester: pytest.Pytester, extra: list[str], run: Run, runner: str
) -> None:
    write_project(pytester, runner, test_main=TESTS_MAIN)
    result = run("--streamscope", *extra)
    result.assert_outcomes(passed=5)
    assert result.ret == pytest.ExitCode.OK
    assert_section(result, MAIN_SECTION)
    assert_left(result, runner)  # uninstrumented, handler and shadows gone


def test_report_mode_by_name_and_after_the_paths(pytester: pytest.Pytester, run: Run, runner: str) -> None:
    write_project(pytester, runner, test_main=TESTS_MAIN)
    result = run("test_main.py", "--streamscope=report")
    result.assert_outcomes(passed=5)
    assert_section(result, MAIN_SECTION)


def test_strict_fails_the_denied_tests(pytester: pytest.Pytester, run: Run, runner: str) -> None:
    write_project(
        pytester,
        runner,
        test_main=TESTS_MAIN,
        test_failing="""\
            import pytest
            from pydantic_ai import Agent


            def test_denied_then_fails_on_its_own(real_model):
                with pytest.raises(RuntimeError):
                    Agent(real_model).run_sync("hi")
                assert 1 == 2, "failed on its own"
            """,
    )
    result = run("-p", "no:cacheprovider", "--streamscope=strict")
    result.assert_outcomes(passed=3, failed=3)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.re_match_lines(
        [
            r"_+ test_run_sync_denied _+",
            r"--streamscope=strict: this test triggered a policy violation during call:",
            rf"  {DENIED}{REQUEST_SITE}",
            r"_+ test_stream_denied_twice_caught_by_the_test _+",
            r"--streamscope=strict: this test triggered a policy violation during call:",
            rf"  {DENIED}{STREAM_SITE} \(2 times\)",
        ]
    )
    # The test that failed on its own keeps its own failure, with the violation in a section of its report.
    result.stdout.re_match_lines(
        [
            r"E\s+AssertionError: failed on its own",
            r"-+ streamscope -+",
            r"--streamscope=strict: this test triggered a policy violation during call:",
        ]
    )
    result.stdout.re_match_lines(
        [
            r"FAILED test_failing\.py::test_denied_then_fails_on_its_own - AssertionError.*",  # (cut to the width)
            r"FAILED test_main\.py::test_run_sync_denied - --streamsc.*",
            r"FAILED test_main\.py::test_stream_denied_twice_caught_by_the_test - --streamsc.*",
        ]
    )
    assert_section(
        result,
        [
            rf"test_failing\.py::test_denied_then_fails_on_its_own \(call\): {DENIED}{REQUEST_SITE}",
            *MAIN_SECTION[:2],
            r"4 policy violations in 3 tests",
            r"--streamscope=strict: each test phase listed fails",
        ],
    )


def test_override_allow_model_requests_inside_a_test(pytester: pytest.Pytester, run: Run, runner: str) -> None:
    write_project(
        pytester,
        runner,
        setup="",  # requests allowed, except inside the context manager
        test_override="""\
            import pytest
            from pydantic_ai import Agent
            from pydantic_ai.models import override_allow_model_requests
            from pydantic_ai.models.test import TestModel


            def test_denied_inside_override(real_model):
                with override_allow_model_requests(False), pytest.raises(RuntimeError):
                    Agent(real_model).run_sync("hi")


            def test_test_model_inside_override():
                with override_allow_model_requests(False):
                    assert Agent(TestModel()).run_sync("hi").output
            """,
    )
    result = run("--streamscope", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert_section(
        result,
        [
            rf"test_override\.py::test_denied_inside_override \(call\): {DENIED}{REQUEST_SITE}",
            r"1 policy violation in 1 test",
        ],
    )


FIXTURES = """\
import pytest
from pydantic_ai import Agent


@pytest.fixture
def denied_in_setup(real_model):
    with pytest.raises(RuntimeError):
        Agent(real_model).run_sync("setup")


@pytest.fixture
def denied_in_teardown(real_model):
    yield
    with pytest.raises(RuntimeError):
        Agent(real_model).run_sync("teardown")


def test_uses_a_denying_fixture(denied_in_setup):
    pass


def test_uses_a_fixture_denied_at_teardown(denied_in_teardown):
    pass


def test_clean():
    pass
"""

FIXTURES_SECTION = [
    rf"test_fixtures\.py::test_uses_a_denying_fixture \(setup\): {DENIED}{REQUEST_SITE}",
    rf"test_fixtures\.py::test_uses_a_fixture_denied_at_teardown \(teardown\): {DENIED}{REQUEST_SITE}",
    r"2 policy violations in 2 tests",
]


def test_violations_in_fixtures_belong_to_the_phase(pytester: pytest.Pytester, run: Run, runner: str) -> None:
    write_project(pytester, runner, test_fixtures=FIXTURES)
    result = run("--streamscope", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    assert_section(result, FIXTURES_SECTION)


def test_strict_fails_setup_and_teardown(pytester: pytest.Pytester, run: Run, runner: str) -> None:
    write_project(pytester, runner, test_fixtures=FIXTURES)
    result = run("--streamscope=strict", "-p", "no:cacheprovider")
    # setup failed: an error, the test never runs; teardown failed: the test passed, then an error.
    result.assert_outcomes(passed=2, errors=2)
    result.stdout.re_match_lines(
        [
            r"_+ ERROR at setup of test_uses_a_denying_fixture _+",
            r"--streamscope=strict: this test triggered a policy violation during setup:",
            r"_+ ERROR at teardown of test_uses_a_fixture_denied_at_teardown _+",
            r"--streamscope=strict: this test triggered a policy violation during teardown:",
        ]
    )
    assert_section(result, [*FIXTURES_SECTION, r"--streamscope=strict: each test phase listed fails"])


def test_records_reach_the_plugin_whatever_the_logger_level(pytester: pytest.Pytester, run: Run, runner: str) -> None:
    """Raised levels and a disabled logger drop the record for everyone but the plugin; caplog sees no more."""
    write_project(
        pytester,
        runner,
        test_levels="""\
            import logging

            import pytest
            from pydantic_ai import Agent

            POLICY = "streamscope.policy"


            def deny(model, caplog):
                with pytest.raises(RuntimeError):
                    Agent(model).run_sync("hi")
                assert [r for r in caplog.records if r.name == POLICY] == []


            def test_level_raised(real_model, caplog):
                logger = logging.getLogger(POLICY)
                logger.setLevel(logging.CRITICAL)
                try:
                    deny(real_model, caplog)
                finally:
                    logger.setLevel(logging.NOTSET)


            def test_logger_disabled(real_model, caplog):
                logger = logging.getLogger(POLICY)
                logger.disabled = True  # what logging.config.dictConfig does to the loggers that exist
                try:
                    deny(real_model, caplog)
                finally:
                    logger.disabled = False


            def test_caplog_raised_the_level(real_model, caplog):
                caplog.set_level(logging.CRITICAL, logger=POLICY)
                deny(real_model, caplog)


            def test_root_level_raised(real_model, caplog):
                root = logging.getLogger()
                level = root.level
                root.setLevel(logging.ERROR)
                try:
                    assert logging.getLogger(POLICY).getEffectiveLevel() == logging.ERROR
                    deny(real_model, caplog)
                finally:
                    root.setLevel(level)


            def test_records_as_usual(real_model, caplog):
                caplog.set_level(logging.WARNING)
                with pytest.raises(RuntimeError):
                    Agent(real_model).run_sync("hi")
                assert [r.levelname for r in caplog.records if r.name == POLICY] == ["WARNING"]
            """,
    )
    result = run("--streamscope", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)
    tests = [
        "test_level_raised",
        "test_logger_disabled",
        "test_caplog_raised_the_level",
        "test_root_level_raised",
        "test_records_as_usual",
    ]
    assert_section(
        result,
        [rf"test_levels\.py::{name} \(call\): {DENIED}{REQUEST_SITE}" for name in tests]
        + [r"5 policy violations in 5 tests"],
    )
    assert_left(result, runner)


def test_already_instrumented_is_left_instrumented(pytester: pytest.Pytester, run: Run, runner: str) -> None:
    write_project(pytester, runner, setup=f"{DENY_IN_CONFTEST}\nstreamscope.instrument()", test_main=TESTS_MAIN)
    result = run("--streamscope", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)
    assert_section(result, MAIN_SECTION)
    assert_left(result, runner, "AFTER PYTEST: instrumented=True handlers=0 shadowed=[]")


OUTSIDE = """\
import logging

from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

try:  # at import, while pytest collects: outside any test
    Agent(OpenAIChatModel("gpt-4o", provider=OpenAIProvider(base_url="http://127.0.0.1:9/v1", api_key="k"))).run_sync(
        "hi"
    )
except RuntimeError:
    pass


def test_clean():
    pass


def test_other_policy():
    policy = logging.getLogger("streamscope.policy")
    policy.warning("not a violation")  # no streamscope_policy attribute: ignored
    policy.warning(
        "usage limit exceeded",
        extra={
            "streamscope_policy": "usage_limits",
            "streamscope_call_site": "app.agents:answer:12",
            "streamscope_model_class": "FunctionModel",
            "streamscope_model": None,
            "streamscope_provider": None,
        },
    )
"""


def test_outside_tests_and_any_policy_name(pytester: pytest.Pytester, run: Run, runner: str) -> None:
    write_project(pytester, runner, test_outside=OUTSIDE)
    result = run("--streamscope", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.OK
    assert_section(
        result,
        [
            rf"{re.escape(OUTSIDE_TESTS)}: {DENIED}{REQUEST_SITE}",
            r"test_outside\.py::test_other_policy \(call\): usage_limits: FunctionModel at app\.agents:answer:12",
            r"2 policy violations in 1 test, 1 outside tests",
        ],
    )


GUARDS = """\
import pytest
from pydantic_ai import Agent
from pydantic_ai.exceptions import UsageLimitExceeded
from pydantic_ai.messages import ModelResponse, TextPart
from pydantic_ai.models.function import FunctionModel
from pydantic_ai.usage import UsageLimits


def answer(messages, info):
    return ModelResponse(parts=[TextPart("one two three four five six")])


def filtered(messages, info):
    return ModelResponse(parts=[TextPart("I can")], finish_reason="content_filter")


def test_over_the_output_token_limit():
    with pytest.raises(UsageLimitExceeded):
        Agent(FunctionModel(answer)).run_sync("hi", usage_limits=UsageLimits(output_tokens_limit=2))


def test_filtered_answer():
    Agent(FunctionModel(filtered, model_name="moderated")).run_sync("hi")


def test_within_limits():
    Agent(FunctionModel(answer)).run_sync("hi", usage_limits=UsageLimits(output_tokens_limit=100))
"""


def test_every_guard_is_listed_with_its_policy(pytester: pytest.Pytester, run: Run, runner: str) -> None:
    write_project(pytester, runner, test_guards=GUARDS)
    result = run("--streamscope", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    assert result.ret == pytest.ExitCode.OK
    assert_section(
        result,
        [
            r"test_guards\.py::test_over_the_output_token_limit \(call\): usage_limit: no model at "
            r"pydantic_ai\.[\w.]+:[\w.<>]+:\d+",  # the check's caller: check_tokens, or the agent graph (2.0)
            r"test_guards\.py::test_filtered_answer \(call\): content_filter: FunctionModel moderated \(function\)",
            r"2 policy violations in 2 tests",
        ],
    )


def test_strict_fails_the_run_for_violations_outside_tests(pytester: pytest.Pytester, run: Run, runner: str) -> None:
    write_project(pytester, runner, test_outside=OUTSIDE)
    result = run("--streamscope=strict", "-p", "no:cacheprovider", "-k", "test_clean")
    result.assert_outcomes(passed=1, deselected=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert_section(
        result,
        [
            rf"{re.escape(OUTSIDE_TESTS)}: {DENIED}{REQUEST_SITE}",
            r"1 policy violation in 0 tests, 1 outside tests",
            r"--streamscope=strict: each test phase listed fails; violations outside tests fail the run",
        ],
    )


def test_no_violation(pytester: pytest.Pytester, run: Run, runner: str) -> None:
    write_project(pytester, runner, test_main=TESTS_MAIN)
    result = run("--streamscope=strict", "-p", "no:cacheprovider", "-k", "not denied")
    result.assert_outcomes(passed=3, deselected=2)
    assert result.ret == pytest.ExitCode.OK
    assert_section(result, [r"no test triggered a policy violation"])


def test_ini_option(pytester: pytest.Pytester, run: Run, runner: str) -> None:
    write_project(pytester, runner, test_main=TESTS_MAIN)
    pytester.makeini(INI + "streamscope = strict\n")
    result = run("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=2)
    assert_section(result, [*MAIN_SECTION, r"--streamscope=strict: each test phase listed fails"])

    # the command line wins; `-p no:streamscope` turns the plugin off
    result = run("-p", "no:cacheprovider", "--streamscope=report")
    result.assert_outcomes(passed=5)
    result = run(
        "-p",
        "no:cacheprovider",
        "-p",
        "no:streamscope",
        "-W",
        "ignore:Unknown config option:pytest.PytestConfigWarning",
    )
    result.assert_outcomes(passed=5)  # including: not instrumented although the ini asks for it
    assert section(result) is None


def test_help_describes_the_option_and_the_ini_option(
    pytester: pytest.Pytester, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # one line each
    result = run("--help")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.re_match_lines(
        [
            r"streamscope: policy violations by test:",
            r"  --streamscope=\[MODE\]  list the tests that made a model request denied by ALLOW_MODEL_REQUESTS=False "
            r"\(MODE 'report', the default\); 'strict': also fail them\. Before a test path write --streamscope=report",
        ]
    )
    result.stdout.re_match_lines(
        [r"  streamscope \(string\): streamscope mode when --streamscope is not given: report or strict"]
    )


def test_bad_mode_is_a_usage_error(pytester: pytest.Pytester, run: Run, runner: str) -> None:
    write_project(pytester, runner, test_main=TESTS_MAIN)
    result = run("--streamscope=loud")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*argument --streamscope: invalid choice: 'loud'*"])

    pytester.makeini(INI + "streamscope = loud\n")
    result = run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*streamscope ini option: expected one of report, strict, got 'loud'*"])


def test_xdist_is_not_supported(pytester: pytest.Pytester, run: Run, runner: str) -> None:
    """Under pytest-xdist the controller runs no test: it says so rather than "no test triggered" anything."""
    write_project(pytester, runner, test_main=TESTS_MAIN)
    pytester.makepyfile(
        fake_xdist="""\
            def pytest_configure(config):
                config.pluginmanager.register(object(), "dsession")  # the name pytest-xdist's controller uses
            """
    )
    pytester.syspathinsert()  # `-p fake_xdist` imports it: from the inner run's directory
    result = run("--streamscope", "-p", "fake_xdist", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)
    assert section(result) == ["not supported with pytest-xdist: the tests ran in worker processes, not listed here"]


# In-process checks of the plugin's parts that need no pytest session (and instrument nothing).


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


VIOLATION_EXTRA = {
    "streamscope_policy": "allow_model_requests",
    "streamscope_call_site": "app:run:1",
    "streamscope_model_class": "OpenAIChatModel",
    "streamscope_model": "gpt-4o",
    "streamscope_provider": "openai",
}


def test_subscription_sees_what_the_logger_would_drop_and_no_one_else_does() -> None:
    # A logger of its own each run: a test run earlier in the same process leaves nothing on it.
    logger = logging.getLogger(f"tests.test_pytest_plugin.policy.{uuid.uuid4().hex}")
    logger.propagate = False
    others = _Records()  # everyone else: what pytest's capture would get
    logger.addHandler(others)
    ours: list[logging.LogRecord] = []
    subscription = _Subscription(logger, _ViolationHandler(ours.append))
    subscription.open()
    try:
        logger.warning("as usual", extra=VIOLATION_EXTRA)
        logger.warning("no streamscope_policy: not a violation")
        logger.info("below WARNING", extra=VIOLATION_EXTRA)
        logger.setLevel(logging.CRITICAL)
        logger.warning("level raised", extra=VIOLATION_EXTRA)
        assert logger.isEnabledFor(logging.WARNING)
        assert not logger.isEnabledFor(logging.INFO)
        logger.setLevel(logging.NOTSET)
        logger.disabled = True
        logger.error("disabled", extra=VIOLATION_EXTRA)
        logger.disabled = False
    finally:
        subscription.close()
    assert [r.getMessage() for r in ours] == ["as usual", "level raised", "disabled"]
    assert [r.getMessage() for r in others.records] == ["as usual", "no streamscope_policy: not a violation"]
    # closed: the handler and the shadows are gone, the logger decides alone again
    assert logger.handlers == [others]
    assert "isEnabledFor" not in vars(logger)
    assert "handle" not in vars(logger)
    logger.setLevel(logging.CRITICAL)
    assert not logger.isEnabledFor(logging.WARNING)
    logger.warning("after close", extra=VIOLATION_EXTRA)
    assert len(ours) == 3
    logger.removeHandler(others)
    logger.setLevel(logging.NOTSET)


def record_of(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("streamscope.policy", logging.WARNING, __file__, 1, "violation", None, None)
    record.__dict__.update(extra)
    return record


def test_reporter_groups_and_counts(pytestconfig: pytest.Config) -> None:
    reporter = StreamscopeReporter(pytestconfig, "strict")  # not started: instruments and subscribes nothing
    reporter._record(record_of(**VIOLATION_EXTRA))
    reporter._where = ("test_a.py::test_one", "call")
    for _ in range(2):
        reporter._record(record_of(**VIOLATION_EXTRA))
    reporter._where = ("test_a.py::test_two", "setup")
    reporter._record(record_of(streamscope_policy="usage_limits", streamscope_model=None))
    assert reporter.summary_lines() == [
        "(outside tests): allow_model_requests: OpenAIChatModel gpt-4o (openai) at app:run:1",
        "test_a.py::test_one (call): allow_model_requests: OpenAIChatModel gpt-4o (openai) at app:run:1 (2 times)",
        "test_a.py::test_two (setup): usage_limits: no model",
        "4 policy violations in 2 tests, 1 outside tests",
        "--streamscope=strict: each test phase listed fails; violations outside tests fail the run",
    ]
    assert (
        reporter._of("test_a.py::test_one", "call")
        == [
            PolicyViolation(
                "test_a.py::test_one",
                "call",
                "allow_model_requests",
                "OpenAIChatModel",
                "gpt-4o",
                "openai",
                "app:run:1",
            )
        ]
        * 2
    )


def test_a_record_with_an_empty_policy_name_is_listed_as_an_unknown_policy(pytestconfig: pytest.Config) -> None:
    reporter = StreamscopeReporter(pytestconfig, "report")
    reporter._record(record_of(**{**VIOLATION_EXTRA, "streamscope_policy": ""}))
    assert reporter.summary_lines()[0] == (
        "(outside tests): <unknown policy>: OpenAIChatModel gpt-4o (openai) at app:run:1"
    )


def test_a_failing_sink_is_reported_as_logging_reports_a_failing_handler(capsys: pytest.CaptureFixture[str]) -> None:
    def sink(record: logging.LogRecord) -> None:
        raise LookupError("sink failed")

    handler = _ViolationHandler(sink)
    handler.handle(record_of(**VIOLATION_EXTRA))
    err = capsys.readouterr().err
    assert "--- Logging error ---" in err
    assert "LookupError: sink failed" in err
    assert "Message: 'violation'" in err  # the record that failed, as logging shows it


def test_closing_a_subscription_never_opened_or_twice_does_nothing() -> None:
    logger = logging.getLogger(f"tests.test_pytest_plugin.policy.{uuid.uuid4().hex}")
    handler = _ViolationHandler(lambda record: None)
    never_opened = _Subscription(logger, handler)
    never_opened.close()
    opened = _Subscription(logger, handler)
    opened.open()
    opened.close()
    opened.close()
    assert logger.handlers == []
    assert "isEnabledFor" not in vars(logger)
    assert "handle" not in vars(logger)


def test_stopping_twice_uninstruments_once(pytestconfig: pytest.Config) -> None:
    """The second stop() leaves alone what the user instrumented since the first."""
    reporter = StreamscopeReporter(pytestconfig, "report")
    reporter.start()
    instrumentor = streamscope.StreamscopeInstrumentor()
    assert instrumentor.is_instrumented_by_opentelemetry
    reporter.stop()
    assert not instrumentor.is_instrumented_by_opentelemetry
    streamscope.instrument()
    reporter.stop()
    assert instrumentor.is_instrumented_by_opentelemetry

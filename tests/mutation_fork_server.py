"""Under mutmut, leave what its fork server's warm-up loaded out of every mutant's garbage collections.

mutmut runs each mutant's tests in a fork of one fork server, which first collects every test (``pytest
--collect-only``, with ``MUTANT_UNDER_TEST`` set to the empty string) so that each fork starts with the test modules,
Pydantic AI and OpenTelemetry already imported. Those objects live as long as the fork server, yet each fork's
garbage collections went through them all: the automatic ones while its tests run and the two full ones pytest makes
as it ends, about a third of the time of a mutant its first test kills. Frozen (`gc.freeze`) at the end of the
warm-up, every fork inherits them left out of its collections; what a fork's tests make is collected as before, and
an object a frozen one refers to stays alive, as it did.

Loaded by ``pytest_add_cli_args`` in ``[tool.mutmut]``; does nothing but in the warm-up.
"""

from __future__ import annotations

import gc
import os

import pytest


def is_fork_server_warm_up(config: pytest.Config) -> bool:
    """Whether this pytest run is the warm-up of mutmut's fork server: a collection only, with no mutant active.

    mutmut's clean run also has no mutant active but runs the tests; its stats and listing runs and each mutant's
    fork name theirs in ``MUTANT_UNDER_TEST``.
    """
    return os.environ.get("MUTANT_UNDER_TEST") == "" and bool(config.option.collectonly)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if is_fork_server_warm_up(config):
        gc.collect()
        gc.freeze()

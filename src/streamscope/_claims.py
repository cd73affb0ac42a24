"""Who instruments a request: one claim per request, placed in context by the streamscope layer that opens it.

streamscope can sit at several layers of one request: `instrument(model)` around a model (which may be a
`FallbackModel` or another wrapper, itself inside another), the process-wide patch on every model class that
answers requests itself, and the `StreamedResponse.__aiter__` safety net. Each of them checks the claim in context
and places its own for the layers it calls:

- No claim: the layer is the outermost. Its claim carries its telemetry, where everything about the request goes.
- A claim: a layer above is opening this request. The layer takes the attempt it makes from that layer (each
  attempt of a `FallbackModel` is one) and tells its claim so; its own claim carries the outermost telemetry on.

So the innermost streamscope layer of each attempt instruments it, and each layer above stands down for it: one
span per attempt however the layers nest (a `FallbackModel` of instrumented `FallbackModel`s too). A layer whose
claim was taken instruments an attempt itself only when no layer further in took it and it came after a taken
one failed (a fallback's next, uninstrumented model): from when that one failed. If nothing took the request, the
layer instruments it.

Policy violations seen at request boundaries (a denial, a content-filter error, a filtered response) are
recorded once each the same way: the boundary that records one says so on the claim of the layer above it,
which then only passes it on.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass

from ._telemetry import Telemetry


@dataclass(slots=True, eq=False)
class RequestClaim:
    """What one streamscope layer says about the request it is opening, to the layers it calls."""

    telemetry: Telemetry
    """Where everything about this request is reported: the outermost layer's telemetry."""
    pydantic_ai_records: bool = False
    """Pydantic AI's own instrumentation records this request's token usage (a fact known above)."""
    taken: bool = False
    """A layer further in took (an attempt of) the request."""
    resumed_at: tuple[int, int] | None = None
    """(perf_counter_ns, time_ns) when the last taken attempt failed, so a later one starts."""
    recorded_violations: list[object] | None = None
    """Violations (exceptions, filtered responses) a boundary below this layer recorded (made when the first is)."""

    def was_recorded(self, violation: object) -> bool:
        """Whether a boundary below already recorded `violation`."""
        recorded = self.recorded_violations
        return recorded is not None and any(violation is seen for seen in recorded)

    def note_recorded(self, violation: object) -> None:
        """Tell this layer a boundary below it recorded `violation`."""
        if self.recorded_violations is None:
            self.recorded_violations = []
        self.recorded_violations.append(violation)


_current: ContextVar[RequestClaim | None] = ContextVar("streamscope_request_claim", default=None)


def current_claim() -> RequestClaim | None:
    """The claim of the streamscope layer whose request is being opened in this context, if any."""
    return _current.get()


def place(claim: RequestClaim) -> Token[RequestClaim | None]:
    """Make `claim` the one the layers called from here see."""
    return _current.set(claim)


def withdraw(token: Token[RequestClaim | None]) -> None:
    """Restore the claim that was current before `place` returned `token`."""
    _current.reset(token)


def claim_for(
    above: RequestClaim | None, telemetry: Telemetry, pydantic_ai_records: bool
) -> tuple[RequestClaim, Telemetry]:
    """The claim a layer places before it opens a request, and the telemetry it reports with: its own if it is
    the outermost layer (no claim `above`); else the outermost layer's, and it takes the attempt from the layer
    above."""
    if above is None:
        return RequestClaim(telemetry, pydantic_ai_records=pydantic_ai_records), telemetry
    above.taken = True
    above.resumed_at = None
    records = pydantic_ai_records or above.pydantic_ai_records
    return RequestClaim(above.telemetry, pydantic_ai_records=records), above.telemetry

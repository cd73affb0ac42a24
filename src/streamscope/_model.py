"""`StreamscopeModel`: the composition path, a `WrapperModel` whose every stream is instrumented."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic_ai.messages import ModelMessage
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings

from . import _guards
from ._opening import InstrumentedRequestStream
from ._policy import request_recording_violations
from ._sensors import chain_has_instrumented_model, ensure_installed
from ._telemetry import Telemetry

# The requests a model makes besides streams, each a place where a denial can surface.
REQUEST_METHODS = (
    "request",
    "count_tokens",
    "compact_messages",
    "batch_create",
    "batch_status",
    "batch_results",
    "batch_cancel",
)


@dataclass(init=False)
class StreamscopeModel(WrapperModel):
    """Wraps a Pydantic AI model so that every stream it opens is one instrumented span.

    Build it with `streamscope.instrument(model)`. Its streams are instrumented; a denial by
    `check_allow_model_requests` in any of its requests (streamed or not) is recorded as a policy violation;
    everything else is the wrapped model's.
    """

    telemetry: Telemetry
    pydantic_ai_inside: bool

    def __init__(self, wrapped: Model | str, telemetry: Telemetry) -> None:
        super().__init__(wrapped)  # pyright: ignore[reportArgumentType]  # a model name is resolved by infer_model
        self.telemetry = telemetry
        # Pydantic AI's InstrumentedModel inside us records token usage and time to first chunk itself.
        self.pydantic_ai_inside = chain_has_instrumented_model(wrapper_chain(self.wrapped))
        _guards.note_explicit_telemetry(telemetry)
        ensure_installed()

    if TYPE_CHECKING:

        def request_stream(  # pyright: ignore[reportIncompatibleMethodOverride]
            self,
            messages: list[ModelMessage],
            model_settings: ModelSettings | None,
            model_request_parameters: ModelRequestParameters,
            run_context: Any = None,
        ) -> AbstractAsyncContextManager[StreamedResponse]: ...


def _request_stream(
    self: StreamscopeModel,
    messages: list[ModelMessage],
    model_settings: ModelSettings | None,
    model_request_parameters: ModelRequestParameters,
    run_context: Any = None,
) -> AbstractAsyncContextManager[StreamedResponse]:
    """Open the wrapped model's stream as one instrumented span."""
    ensure_installed()
    wrapped = self.wrapped
    return InstrumentedRequestStream(
        self.telemetry,
        wrapped,
        lambda: wrapped.request_stream(messages, model_settings, model_request_parameters, run_context),
        run_context,
        model_settings,
        pydantic_ai_inside=self.pydantic_ai_inside,
    )


async def _request_recording_violations(wrapper: StreamscopeModel, name: str, args: Any, kwargs: Any) -> Any:
    """Call the wrapped model's method `name`, recording each policy violation in it (a denial, a content filter)."""
    wrapped = wrapper.wrapped
    return await request_recording_violations(wrapper.telemetry, getattr(wrapped, name), args, kwargs, wrapped)


def _denial_recording(name: str) -> Callable[..., Coroutine[Any, Any, Any]]:  # pragma: no mutate block
    """The method `name` of `StreamscopeModel`: the wrapped model's, recording each policy violation in it.

    Runs once per method at import, where mutation testing cannot reach it; the methods it makes are checked by
    the policy tests (a denial in each request method is recorded).
    """

    async def method(self: StreamscopeModel, *args: Any, **kwargs: Any) -> Any:
        return await _request_recording_violations(self, name, args, kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"The wrapped model's `{name}`; a policy violation in it is recorded."
    return method


# Set after the class statement on purpose: Pydantic AI wraps every model class's own `request_stream` (and
# `request`) in more context managers when the class is created (a per-request download budget and
# special-token restoring). The wrapped model's methods already have them, so here they would only add cost.
StreamscopeModel.request_stream = _request_stream  # type: ignore[method-assign]  # pyright: ignore[reportAttributeAccessIssue]
for _name in REQUEST_METHODS:
    if _name in vars(WrapperModel):  # only what WrapperModel delegates (the lowest Pydantic AI has no batches)
        setattr(StreamscopeModel, _name, _denial_recording(_name))


def wrapper_chain(model: Any) -> Iterator[Any]:
    """`model`, the model it wraps, the model that one wraps, and so on."""
    seen: set[int] = set()
    current = model
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = getattr(current, "wrapped", None)


def find_streamscope_model(model: Model) -> StreamscopeModel | None:
    """The `StreamscopeModel` in `model`'s chain of wrappers, if any."""
    return next((m for m in wrapper_chain(model) if isinstance(m, StreamscopeModel)), None)

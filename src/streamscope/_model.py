"""`StreamscopeModel`: the composition path, a `WrapperModel` whose every stream is instrumented."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic_ai.messages import ModelMessage
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.models.instrumented import InstrumentedModel
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings

from ._stream import InstrumentedRequestStream
from ._telemetry import Telemetry


@dataclass(init=False)
class StreamscopeModel(WrapperModel):
    """Wraps a Pydantic AI model so that every stream it opens is one instrumented span.

    Build it with `streamscope.instrument(model)`; everything but `request_stream` is the wrapped model's.
    """

    telemetry: Telemetry
    pydantic_ai_inside: bool

    def __init__(self, wrapped: Model | str, telemetry: Telemetry) -> None:
        super().__init__(wrapped)  # pyright: ignore[reportArgumentType]  # a model name is resolved by infer_model
        self.telemetry = telemetry
        # Pydantic AI's InstrumentedModel inside us records token usage and time to first chunk itself.
        self.pydantic_ai_inside = any(isinstance(m, InstrumentedModel) for m in wrapper_chain(self.wrapped))

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
    wrapped = self.wrapped
    return InstrumentedRequestStream(
        self.telemetry,
        wrapped,
        lambda: wrapped.request_stream(messages, model_settings, model_request_parameters, run_context),
        pydantic_ai_inside=self.pydantic_ai_inside,
    )


# Set after the class statement on purpose: Pydantic AI wraps every model class's own `request_stream` in two
# more context managers when the class is created (a per-request download budget and special-token
# restoring). The wrapped model's `request_stream` already has both, so here they would only add cost to
# every stream's open and close.
StreamscopeModel.request_stream = _request_stream  # type: ignore[method-assign]  # pyright: ignore[reportAttributeAccessIssue]


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

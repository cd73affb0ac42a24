"""streamscope: OpenTelemetry for Pydantic AI streamed responses.

Every stream becomes one GenAI CLIENT span with a span event per stream event, its usage growth is
recorded as metric deltas while it runs, and denials by `check_allow_model_requests` are logged as
policy violations.

    import streamscope
    model = streamscope.instrument(my_model)   # one model
    streamscope.instrument()                   # every model in the process
    streamscope.configure(service_name="chat") # or: providers + OTLP/Prometheus exporters + instrument()
"""

from __future__ import annotations

from ._configure import Configuration, configure
from ._instrumentor import StreamscopeInstrumentor, instrument, uninstrument
from ._model import StreamscopeModel
from ._options import ContentCapture, Options, SpanEventMode
from ._telemetry import __version__

__all__ = [
    "Configuration",
    "ContentCapture",
    "Options",
    "SpanEventMode",
    "StreamscopeInstrumentor",
    "StreamscopeModel",
    "__version__",
    "configure",
    "instrument",
    "uninstrument",
]

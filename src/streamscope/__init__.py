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

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from ._configure import Configuration, configure
    from ._instrumentor import StreamscopeInstrumentor, instrument, uninstrument
    from ._model import StreamscopeModel
    from ._options import ContentCapture, Options, SpanEventMode
    from ._telemetry import __version__

# Imported on first use: `import streamscope` stays cheap for what only needs a corner of it (the pytest plugin,
# which pytest loads in every run, and `python -m streamscope`), and Pydantic AI and OpenTelemetry are imported
# when streamscope is used.
_EXPORTS: dict[str, str] = {
    "Configuration": "._configure",
    "configure": "._configure",
    "StreamscopeInstrumentor": "._instrumentor",
    "instrument": "._instrumentor",
    "uninstrument": "._instrumentor",
    "StreamscopeModel": "._model",
    "ContentCapture": "._options",
    "Options": "._options",
    "SpanEventMode": "._options",
    "__version__": "._telemetry",
}

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


def __getattr__(name: str) -> _typing.Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'streamscope' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})

"""Process-wide patches on Pydantic AI's model and stream classes, whatever order they are imported in.

- Every model class that answers requests itself (not a `WrapperModel`, `FallbackModel` or other router): its
  own `request_stream` (one span per stream) and its own other request methods (`request`, `count_tokens`, ...),
  where denials by `check_allow_model_requests` surface. Embedding and image-generation models: theirs.
- `StreamedResponse.__aiter__` and every subclass's own `__aiter__`: a safety net for streams opened elsewhere.
- The bases' `__init_subclass__`: a class created after `instrument()` — imported later, or user-defined — is
  patched as it is created. Classes already there are patched at install.

Nothing a base class defines for its subclasses is wrapped except `StreamedResponse.__aiter__`: Pydantic AI
compares `Model.request_stream` by identity to tell streaming models apart.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import wrapt
from pydantic_ai.models import Model, StreamedResponse
from pydantic_ai.models.fallback import FallbackModel
from pydantic_ai.models.wrapper import WrapperModel

from ._claims import current_claim
from ._model import REQUEST_METHODS
from ._opening import InstrumentedRequestStream, start_recorder
from ._policy import request_recording_violations
from ._recorder import StreamRecorder
from ._safety import report_internal_error
from ._stream import hand_out_iterator, mark_instrumented, recorder_of
from ._telemetry import Telemetry

# Streams that no model request opened: composites re-emitting instrumented sub-streams (`_continuation`),
# and responses synthesised by the agent graph (`_agent_graph`, `CompletedStreamedResponse`).
_SYNTHESISED_MODULES = frozenset({"pydantic_ai._agent_graph", "pydantic_ai.models._continuation"})
_SYNTHESISED_CLASS_NAMES = frozenset({"CompletedStreamedResponse"})
_ABSENT = object()


def _optional_bases() -> list[tuple[type[Any], tuple[type[Any], ...], tuple[str, ...]]]:
    """(base, wrapper bases, request methods) of the other kinds of models, in the releases that have them."""
    found: list[tuple[type[Any], tuple[type[Any], ...], tuple[str, ...]]] = []
    for module, base_name, wrapper_module, wrapper_name, methods in (
        ("pydantic_ai.embeddings", "EmbeddingModel", "pydantic_ai.embeddings.wrapper", "WrapperEmbeddingModel",
         ("embed", "count_tokens", "max_input_tokens")),
        ("pydantic_ai.images", "ImageGenerationModel", "pydantic_ai.images.wrapper", "WrapperImageGenerationModel",
         ("generate",)),
    ):  # fmt: skip
        with contextlib.suppress(ImportError, AttributeError):
            base = getattr(importlib.import_module(module), base_name)
            wrapper = getattr(importlib.import_module(wrapper_module), wrapper_name)
            found.append((base, (wrapper,), methods))
    return found


def _subclasses(cls: type[Any]) -> Iterator[type[Any]]:
    """Every subclass of `cls`, not `cls` itself."""
    seen: set[type[Any]] = {cls}
    pending = list(cls.__subclasses__())
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        yield current
        pending.extend(current.__subclasses__())


def is_synthesised_stream_class(cls: type[Any]) -> bool:
    """Whether streams of `cls` are made without a model request of their own (so are not instrumented)."""
    return any(
        base.__module__ in _SYNTHESISED_MODULES or base.__name__ in _SYNTHESISED_CLASS_NAMES for base in cls.__mro__
    )


def answers_requests_itself(cls: type[Any]) -> bool:
    """Whether `cls` answers requests itself, rather than by calling another `Model` (wrappers, fallbacks)."""
    return not issubclass(cls, WrapperModel | FallbackModel)


def _argument(args: tuple[Any, ...], kwargs: dict[str, Any], position: int, name: str) -> Any:
    """An argument of `request_stream(messages, model_settings, model_request_parameters, run_context)`."""
    return kwargs.get(name, args[position] if len(args) > position else None)


class ProcessPatches:
    """Installs and removes the process-wide patches; `remove()` restores every original object exactly."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry: Telemetry = telemetry
        self.active: bool = False
        self._lock: threading.RLock = threading.RLock()
        self._originals: list[tuple[type[Any], str, Any]] = []  # (class, attribute, original or _ABSENT)
        self._optional_bases: list[tuple[type[Any], tuple[type[Any], ...], tuple[str, ...]]] = _optional_bases()

    # --- install / remove ---------------------------------------------------------------------------
    def install(self) -> None:
        with self._lock:
            self.active = True
            bases = [Model, StreamedResponse, *(base for base, _, _ in self._optional_bases)]
            for base in bases:
                self._hook_class_creation(base)
            self._patch(StreamedResponse, "__aiter__", self._aiter_wrapper)
            for base in bases:
                for cls in list(_subclasses(base)):
                    self._patch_class_or_report(cls)

    def remove(self) -> None:
        with self._lock:
            self.active = False
            for owner, attribute, original in reversed(self._originals):
                if original is _ABSENT:
                    delattr(owner, attribute)
                else:
                    setattr(owner, attribute, original)
            self._originals.clear()

    def _hook_class_creation(self, base: type[Any]) -> None:
        original = base.__dict__.get("__init_subclass__", _ABSENT)
        patches = self

        def __init_subclass__(cls: type[Any], **kwargs: Any) -> None:  # noqa: N807 - it is that hook
            if original is _ABSENT:
                super(base, cls).__init_subclass__(**kwargs)
            else:
                original.__func__(cls, **kwargs)
            patches.class_created(cls)

        base.__init_subclass__ = classmethod(__init_subclass__)  # type: ignore[assignment,method-assign]
        self._originals.append((base, "__init_subclass__", original))

    def class_created(self, cls: type[Any]) -> None:
        """Patch a class created while the patches are installed."""
        with self._lock:
            if self.active:
                self._patch_class_or_report(cls)

    def _patch_class_or_report(self, cls: Any) -> None:
        """Patch `cls`; a class that refuses (a metaclass forbidding it, say) is left as it is, and said."""
        try:
            self._patch_class(cls)
        except Exception:
            report_internal_error(f"patching {cls.__qualname__}")

    def _patch_class(self, cls: Any) -> None:
        if issubclass(cls, StreamedResponse):
            if "__aiter__" in cls.__dict__ and not is_synthesised_stream_class(cls):
                self._patch(cls, "__aiter__", self._aiter_wrapper)
            return
        if Model in cls.__mro__:  # (not issubclass: it would type `cls` as the generic Model[Unknown])
            if answers_requests_itself(cls):
                self._patch(cls, "request_stream", self._request_stream_wrapper)
                self._patch_requests(cls, REQUEST_METHODS)
            return
        for base, wrappers, methods in self._optional_bases:
            if issubclass(cls, base) and not issubclass(cls, wrappers):
                self._patch_requests(cls, methods)

    def _patch_requests(self, cls: type[Any], methods: tuple[str, ...]) -> None:
        for name in methods:
            if inspect.iscoroutinefunction(cls.__dict__.get(name)):
                self._patch(cls, name, self._request_wrapper)

    def _patch(self, owner: type[Any], attribute: str, wrapper: Callable[..., Any]) -> None:
        if attribute not in owner.__dict__:
            return
        current: Any = owner.__dict__[attribute]
        if getattr(getattr(current, "_self_wrapper", None), "__self__", None) is self:
            # Already ours: `@dataclass(slots=True)` rebuilds a class from the dict of the one we patched.
            if not any(o is owner and a == attribute for o, a, _ in self._originals):
                self._originals.append((owner, attribute, current.__wrapped__))
            return
        wrapt.wrap_function_wrapper(owner, attribute, wrapper)
        self._originals.append((owner, attribute, current))

    # --- wrappers -----------------------------------------------------------------------------------
    def _request_stream_wrapper(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        return InstrumentedRequestStream(
            self.telemetry,
            instance,
            lambda: wrapped(*args, **kwargs),
            _argument(args, kwargs, 3, "run_context"),
            _argument(args, kwargs, 1, "model_settings"),
        )

    def _request_wrapper(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Coroutine[Any, Any, Any]:
        return request_recording_violations(self.telemetry, wrapped, args, kwargs, instance)

    def _aiter_wrapper(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        iterator = wrapped(*args, **kwargs)
        try:
            recorder = recorder_of(instance)
            if recorder is None:
                # A layer opening a request in this context instruments what it opens; composites are not streams.
                if current_claim() is not None or is_synthesised_stream_class(instance.__class__):
                    return iterator
                recorder = self._recorder_for_unopened_stream(instance)
            return hand_out_iterator(instance, recorder, iterator)
        except Exception:
            report_internal_error("instrumenting a stream iterated outside request_stream")
            return iterator

    def _recorder_for_unopened_stream(self, stream: Any) -> StreamRecorder:
        """Start a span for a stream first seen at iteration (opened outside any patched `request_stream`)."""
        start = (time.perf_counter_ns(), time.time_ns())
        recorder = start_recorder(self.telemetry, _StreamAsModel(stream), stream, start, None, False, math.inf)
        mark_instrumented(stream, recorder)
        return recorder


class _StreamAsModel:
    """What a stream says about the model that opened it, in the shape `model_attributes` reads."""

    def __init__(self, stream: Any) -> None:
        self.model_name: Any = stream.model_name
        self.system: Any = stream.provider_name
        self.base_url: Any = stream.provider_url

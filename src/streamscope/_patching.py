"""Process-wide patches: every leaf model's `request_stream`, the `StreamedResponse.__aiter__` safety net, and
every `check_allow_model_requests` call site — including modules Pydantic AI imports after `instrument()`."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import wrapt
from pydantic_ai import models as pai_models
from pydantic_ai.models import Model, StreamedResponse
from pydantic_ai.models.wrapper import WrapperModel

from ._policy import make_denial_guard
from ._recorder import StreamRecorder
from ._safety import report_internal_error
from ._stream import InstrumentedRequestStream, begin, hand_out_iterator, mark_instrumented, recorder_of
from ._telemetry import Telemetry

_POLICY_FUNCTION = "check_allow_model_requests"
# Streams that no model request opened: composites re-emitting instrumented sub-streams (`_continuation`),
# and responses synthesised by the agent graph (`_agent_graph`, `CompletedStreamedResponse`).
_SYNTHESISED_MODULES = frozenset({"pydantic_ai._agent_graph", "pydantic_ai.models._continuation"})
_SYNTHESISED_CLASS_NAMES = frozenset({"CompletedStreamedResponse"})


def _subclasses(cls: type[Any]) -> Iterator[type[Any]]:
    seen: set[type[Any]] = set()
    pending = [cls]
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


def is_leaf_model_class(cls: type[Any]) -> bool:
    """Whether `cls` answers requests itself, rather than by calling another `Model` (wrappers, fallbacks)."""
    if issubclass(cls, WrapperModel) or cls.__name__ == "FallbackModel":
        return False
    return getattr(cls, "_answers_requests_itself", True) is not False


@cache
def pydantic_ai_modules_to_watch() -> tuple[str, ...]:
    """Modules of the installed Pydantic AI that call the policy check or define models or streams.

    Read from the package's source text, so modules imported lazily (providers) are known before import.
    """
    root = Path(pai_models.__file__).resolve().parent.parent
    names: list[str] = []
    for path in sorted(root.rglob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        if _POLICY_FUNCTION in text or "def request_stream" in text or "StreamedResponse)" in text:
            parts = path.relative_to(root.parent).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.append(".".join(parts))
    return tuple(names)


class ProcessPatches:
    """Installs and removes the process-wide patches; `remove()` restores every original object exactly."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.active = False
        self._lock = threading.RLock()
        self._originals: list[tuple[Any, str, Any]] = []  # (owner, attribute, original object)
        self._patched: set[tuple[int, str]] = set()
        self._policy_original: Callable[..., None] = pai_models.check_allow_model_requests
        self._policy_guard = wrapt.FunctionWrapper(
            self._policy_original, make_denial_guard(telemetry, lambda: self.active)
        )

    # --- install / remove ---------------------------------------------------------------------------
    def install(self) -> None:
        with self._lock:
            self.active = True
            self.patch_loaded()
        for name in pydantic_ai_modules_to_watch():
            if name not in sys.modules:
                _register_hook(name)

    def remove(self) -> None:
        with self._lock:
            self.active = False
            for owner, attribute, original in reversed(self._originals):
                setattr(owner, attribute, original)
            self._originals.clear()
            self._patched.clear()

    def patch_loaded(self) -> None:
        """Patch everything already imported (idempotent)."""
        with self._lock:
            if not self.active:
                return
            for module in list(sys.modules.values()):
                # sys.modules may hold non-module placeholders.
                if isinstance(module, ModuleType) and module.__name__.startswith("pydantic_ai"):  # pyright: ignore[reportUnnecessaryIsInstance]
                    self._patch_policy_site(module)
            for cls in _subclasses(Model):
                if "request_stream" in cls.__dict__ and is_leaf_model_class(cls):
                    self._patch(cls, "request_stream", self._request_stream_wrapper)
            for cls in _subclasses(StreamedResponse):
                if "__aiter__" in cls.__dict__ and not is_synthesised_stream_class(cls):
                    self._patch(cls, "__aiter__", self._aiter_wrapper)

    def _patch(self, owner: type[Any], attribute: str, wrapper: Callable[..., Any]) -> None:
        key = (id(owner), attribute)
        if key in self._patched:
            return
        original = owner.__dict__[attribute]
        wrapt.wrap_function_wrapper(owner, attribute, wrapper)
        self._originals.append((owner, attribute, original))
        self._patched.add(key)

    def _patch_policy_site(self, module: ModuleType) -> None:
        key = (id(module), _POLICY_FUNCTION)
        if key in self._patched:
            return
        current = module.__dict__.get(_POLICY_FUNCTION)
        if current is self._policy_original:
            setattr(module, _POLICY_FUNCTION, self._policy_guard)
        elif current is not self._policy_guard:
            return
        # A module imported after `pydantic_ai.models` was patched holds the guard already: restore it too.
        self._originals.append((module, _POLICY_FUNCTION, self._policy_original))
        self._patched.add(key)

    # --- wrappers -----------------------------------------------------------------------------------
    def _request_stream_wrapper(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        return InstrumentedRequestStream(self.telemetry, instance, lambda: wrapped(*args, **kwargs))

    def _aiter_wrapper(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        iterator = wrapped(*args, **kwargs)
        try:
            recorder = recorder_of(instance)
            if recorder is None:
                if is_synthesised_stream_class(instance.__class__):
                    return iterator
                recorder = _recorder_for_unopened_stream(self.telemetry, instance)
            return hand_out_iterator(instance, recorder, iterator)
        except Exception:
            report_internal_error("instrumenting a stream iterated outside request_stream")
            return iterator


class _StreamAsModel:
    """What a stream says about the model that opened it, in the shape `model_attributes` reads."""

    def __init__(self, stream: Any) -> None:
        self.model_name = stream.model_name
        self.system = stream.provider_name
        self.base_url = stream.provider_url


def _recorder_for_unopened_stream(telemetry: Telemetry, stream: Any) -> StreamRecorder:
    """Start a span for a stream first seen at iteration (opened outside any patched `request_stream`)."""
    span, start_ns, start_wall_ns, metric_attributes, pydantic_parent = begin(telemetry, _StreamAsModel(stream))
    recorder = StreamRecorder(telemetry, stream, span, metric_attributes, start_ns, start_wall_ns, pydantic_parent)
    mark_instrumented(stream, recorder)
    return recorder


class _Installed:
    """The patches installed now. Post-import hooks cannot be unregistered, so they are registered once per
    module and look here for what to extend."""

    patches: ProcessPatches | None = None
    hooked: set[str] = set()  # noqa: RUF012 - process-wide by design


def set_current(patches: ProcessPatches | None) -> None:
    """Make `patches` the set that post-import hooks extend (None after uninstrument)."""
    _Installed.patches = patches


def _on_import(_module: ModuleType) -> None:
    patches = _Installed.patches
    if patches is not None:
        try:
            patches.patch_loaded()
        except Exception:
            report_internal_error("patching a newly imported Pydantic AI module")


def _register_hook(name: str) -> None:
    if name not in _Installed.hooked:
        _Installed.hooked.add(name)
        wrapt.register_post_import_hook(_on_import, name)

"""A stream's cost in USD, priced the way Pydantic AI prices a response.

Pydantic AI fills a response's `usage.cost` with the cost a provider reported (the Pydantic AI Gateway's) or else
with `ModelResponse.cost()`: `genai-prices`, matched on the provider's URL, then its name. streamscope prices the
same way — through `ModelResponse.cost()` itself, on the stream's usage so far while it runs, and on the final
response when it ends — so a stream's recorded total is the price Pydantic AI gives its response.

Pricing costs a few hundred microseconds (genai-prices' own work), so while a stream runs its usage is priced at
a usage flush only when it grew, at most once per `LIVE_PRICING_INTERVAL_S` and not before the stream has run for
that long (a shorter stream, most answers, is priced once); the final response is priced once, at the end. An
unknown price is no cost (never a cost of 0): nothing is recorded, why is logged once per model at debug level on
the ``streamscope`` logger, and that model is not looked up again for `UNKNOWN_RETRY_S` (genai-prices can learn
new prices while the process runs).
"""

from __future__ import annotations

import logging
import threading
import time
from decimal import Decimal
from typing import Any

from pydantic_ai.messages import ModelResponse

from ._safety import report_internal_error

_logger = logging.getLogger("streamscope")

LIVE_PRICING_INTERVAL_S = 1.0
UNKNOWN_RETRY_S = 600.0

_Key = tuple[str | None, str | None, str | None]  # (provider name, provider URL, model name)
_MAX_KEYS = 1024  # models explained or remembered as unpriced; bounded like any per-key state
_explained: set[_Key] = set()
_unpriced: dict[_Key, float] = {}  # model -> when to look its price up again (time.monotonic)
_lock = threading.Lock()


def price_of_stream(stream: Any, usage: Any) -> Decimal | None:
    """The price of `usage`, read from `stream` now, in USD; None if it cannot be priced."""
    try:
        response = ModelResponse(
            parts=[],
            usage=usage,
            model_name=stream.model_name,
            timestamp=stream.timestamp,
            provider_name=stream.provider_name,
            provider_url=stream.provider_url,
            provider_details=stream.provider_details,
        )
    except Exception:
        report_internal_error("reading a stream's model and provider for its price")
        return None
    return price_of_response(response)


def price_of_response(response: Any) -> Decimal | None:
    """The price of a `ModelResponse` in USD as Pydantic AI fills `usage.cost`; None if it cannot be priced."""
    usage = response.usage
    reported = getattr(usage, "cost", None)  # a cost the provider reported (Pydantic AI >= 2.x with the gateway)
    if isinstance(reported, Decimal):
        return reported
    if getattr(usage, "unmeasured_requests", 0):
        _explain(response, "the response omitted its usage")
        return None
    if not response.model_name:
        _explain(response, "the response has no model name")
        return None
    key: _Key = (response.provider_name, response.provider_url, response.model_name)
    retry_at = _unpriced.get(key)
    if retry_at is not None and time.monotonic() < retry_at:
        return None
    try:
        total = response.cost().total_price
    except (LookupError, ValueError) as error:  # what genai-prices raises for what it cannot price
        reason = f"genai-prices: {error}"
    except Exception as error:
        reason = f"pricing failed: {type(error).__name__}: {error}"
    else:
        return total if isinstance(total, Decimal) else Decimal(str(total))
    with _lock:
        if key in _unpriced or len(_unpriced) < _MAX_KEYS:
            _unpriced[key] = time.monotonic() + UNKNOWN_RETRY_S
    _explain(response, reason)
    return None


def _explain(response: Any, reason: str) -> None:
    key: _Key = (response.provider_name, response.provider_url, response.model_name)
    with _lock:
        if key in _explained or len(_explained) >= _MAX_KEYS:
            return
        _explained.add(key)
    _logger.debug(
        "streamscope: no cost recorded for model %r of provider %r (%s): %s",
        response.model_name,
        response.provider_name,
        response.provider_url,
        reason,
    )

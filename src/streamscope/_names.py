"""Every attribute, span-event, log-event and metric name streamscope emits, and the bucket boundaries.

Names come from `opentelemetry-semantic-conventions` where the GenAI conventions (v1.41, the last core
release that defines them) have one. Stream events and policy violations have no convention yet, so
they live under our own `streamscope.*` namespace.
"""

from __future__ import annotations

from typing import Final

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as _gen_ai
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as _gen_ai_metrics
from opentelemetry.semconv.attributes import code_attributes as _code
from opentelemetry.semconv.attributes import error_attributes as _error
from opentelemetry.semconv.attributes import server_attributes as _server

INSTRUMENTATION_NAME: Final = "streamscope"
SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.41.0"

# --- GenAI semantic-convention attributes -------------------------------------------------------
GEN_AI_OPERATION_NAME: Final = _gen_ai.GEN_AI_OPERATION_NAME
GEN_AI_PROVIDER_NAME: Final = _gen_ai.GEN_AI_PROVIDER_NAME
GEN_AI_REQUEST_MODEL: Final = _gen_ai.GEN_AI_REQUEST_MODEL
GEN_AI_REQUEST_STREAM: Final = _gen_ai.GEN_AI_REQUEST_STREAM
GEN_AI_RESPONSE_ID: Final = _gen_ai.GEN_AI_RESPONSE_ID
GEN_AI_RESPONSE_MODEL: Final = _gen_ai.GEN_AI_RESPONSE_MODEL
GEN_AI_RESPONSE_FINISH_REASONS: Final = _gen_ai.GEN_AI_RESPONSE_FINISH_REASONS
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: Final = _gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK
GEN_AI_TOKEN_TYPE: Final = _gen_ai.GEN_AI_TOKEN_TYPE
GEN_AI_USAGE_INPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_INPUT_TOKENS
GEN_AI_USAGE_OUTPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS
SERVER_ADDRESS: Final = _server.SERVER_ADDRESS
SERVER_PORT: Final = _server.SERVER_PORT
ERROR_TYPE: Final = _error.ERROR_TYPE
CODE_FUNCTION_NAME: Final = _code.CODE_FUNCTION_NAME
CODE_FILE_PATH: Final = _code.CODE_FILE_PATH
CODE_LINE_NUMBER: Final = _code.CODE_LINE_NUMBER

OPERATION_CHAT: Final = "chat"
TOKEN_TYPE_INPUT: Final = "input"
TOKEN_TYPE_OUTPUT: Final = "output"

# --- streamscope span attributes (no convention exists) ------------------------------------------
STREAM_OUTCOME: Final = "streamscope.stream.outcome"
STREAM_END_REASON: Final = "streamscope.stream.end_reason"
STREAM_EVENTS_TOTAL: Final = "streamscope.stream.events.total"
STREAM_SPAN_EVENT_MODE: Final = "streamscope.stream.span_event_mode"
# Per-kind accounting; the kind (e.g. ``part_delta``) is appended: ``streamscope.stream.events.emitted.part_delta``.
STREAM_EVENTS_EMITTED_PREFIX: Final = "streamscope.stream.events.emitted."
STREAM_EVENTS_COALESCED_PREFIX: Final = "streamscope.stream.events.coalesced."
STREAM_EVENTS_DROPPED_PREFIX: Final = "streamscope.stream.events.dropped."
STREAM_EVENTS_SDK_DROPPED: Final = "streamscope.stream.events.sdk_dropped"
# Chunks: stream events carrying new model output (deltas, part starts with content).
STREAM_CHUNKS: Final = "streamscope.stream.chunks"
STREAM_CHUNK_GAP_MEAN: Final = "streamscope.stream.chunk_gap.mean"  # seconds, from the first chunk to the last
STREAM_CHUNK_GAP_LONGEST: Final = "streamscope.stream.chunk_gap.longest"  # seconds, the longest between two chunks
STREAM_COST: Final = "streamscope.stream.cost"  # USD, the priced final response (absent when the price is unknown)

OUTCOME_COMPLETE: Final = "complete"
OUTCOME_INCOMPLETE: Final = "incomplete"
OUTCOME_INTERRUPTED: Final = "interrupted"
OUTCOME_SUSPENDED: Final = "suspended"
OUTCOME_ERROR: Final = "error"

END_EXHAUSTED: Final = "exhausted"
END_CONSUMER_CLOSED: Final = "consumer_closed"
END_CANCEL_CALLED: Final = "cancel_called"
END_TASK_CANCELLED: Final = "task_cancelled"
END_ERROR: Final = "error"
END_NEVER_ITERATED: Final = "never_iterated"
END_GARBAGE_COLLECTED: Final = "garbage_collected"
END_CONSUMER_ERROR: Final = "consumer_error"  # the consumer's own code raised while the stream was open
END_SHUTDOWN: Final = "shutdown"  # still in flight when its telemetry was shut down (Configuration.shutdown)
END_TIMEOUT: Final = "timeout"  # Pydantic AI's request_timeout/first_event_timeout expired
# error.type of that expiry: what Pydantic AI raises outside the stream (here it is only a cancellation)
ERROR_TYPE_TIMEOUT: Final = "pydantic_ai.exceptions.ModelRequestTimeout"

# --- span events for stream events ----------------------------------------------------------------
STREAM_EVENT_PREFIX: Final = "streamscope.stream."  # + event kind, e.g. streamscope.stream.part_delta
STREAM_DELTAS_EVENT: Final = "streamscope.stream.part_deltas"  # a run of coalesced deltas
EVENT_KIND: Final = "streamscope.event.kind"
EVENT_OFFSET_S: Final = "streamscope.event.offset_seconds"
EVENT_PART_INDEX: Final = "streamscope.part.index"
EVENT_PART_KIND: Final = "streamscope.part.kind"
EVENT_DELTA_KIND: Final = "streamscope.delta.kind"
EVENT_TOOL_NAME: Final = "gen_ai.tool.name"
EVENT_TOOL_CALL_ID: Final = "gen_ai.tool.call.id"
EVENT_CONTENT_LENGTH: Final = "streamscope.content.length"
EVENT_CONTENT: Final = "streamscope.content"
EVENT_CONTENT_TRUNCATED: Final = "streamscope.content.truncated"
EVENT_COALESCED_COUNT: Final = "streamscope.event.coalesced_count"
EVENT_LAST_OFFSET_S: Final = "streamscope.event.last_offset_seconds"

# --- policy violations ------------------------------------------------------------------------------
POLICY_VIOLATION_EVENT: Final = "streamscope.policy.violation"
POLICY_NAME: Final = "streamscope.policy.name"
POLICY_ALLOW_MODEL_REQUESTS: Final = "allow_model_requests"
POLICY_CONTENT_FILTER: Final = "content_filter"  # the provider filtered the response (finish_reason content_filter)
POLICY_USAGE_LIMIT: Final = "usage_limit"  # an agent run's UsageLimits (requests, tokens, tool calls, cost)
POLICY_CONCURRENCY_LIMIT: Final = "concurrency_limit"  # a ConcurrencyLimiter's queue was full
POLICY_LIMIT_NAME: Final = "streamscope.policy.limit.name"  # which limit: "output_tokens_limit", "max_queued", ...
POLICY_LIMIT_THRESHOLD: Final = "streamscope.policy.limit.threshold"  # the limit's configured value
POLICY_LIMIT_VALUE: Final = "streamscope.policy.limit.value"  # the value that broke it
POLICY_LIMITER_NAME: Final = "streamscope.policy.limiter.name"
POLICY_LIMITER_SOURCE: Final = "streamscope.policy.limiter.source"
POLICY_LIMITER_MAX_RUNNING: Final = "streamscope.policy.limiter.max_running"
POLICY_CALL_SITE: Final = "streamscope.policy.call_site"
POLICY_MESSAGE: Final = "streamscope.policy.message"
POLICY_MODEL_CLASS: Final = "streamscope.policy.model_class"

# --- metrics ----------------------------------------------------------------------------------------
METRIC_TOKEN_USAGE: Final = _gen_ai_metrics.GEN_AI_CLIENT_TOKEN_USAGE
METRIC_OPERATION_DURATION: Final = _gen_ai_metrics.GEN_AI_CLIENT_OPERATION_DURATION
METRIC_TIME_TO_FIRST_CHUNK: Final = _gen_ai_metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK
METRIC_TIME_PER_OUTPUT_CHUNK: Final = _gen_ai_metrics.GEN_AI_CLIENT_OPERATION_TIME_PER_OUTPUT_CHUNK
# The spec's own description texts: a different text under the same name makes the Prometheus
# exporter print duplicate HELP lines.
DESCRIPTION_TOKEN_USAGE: Final = "Number of input and output tokens used."
DESCRIPTION_OPERATION_DURATION: Final = "GenAI operation duration."
DESCRIPTION_TIME_TO_FIRST_CHUNK: Final = (
    "Time to receive the first chunk, measured from when the client issues the generation request "
    "to when the first chunk is received in the response stream."
)
DESCRIPTION_TIME_PER_OUTPUT_CHUNK: Final = (
    "Time per output chunk, recorded for each chunk received after the first one, measured as the "
    "time elapsed from the end of the previous chunk to the end of the current chunk."
)

METRIC_USAGE_INPUT_TOKENS: Final = "streamscope.usage.input_tokens"
METRIC_USAGE_OUTPUT_TOKENS: Final = "streamscope.usage.output_tokens"
METRIC_USAGE_CACHE_READ_TOKENS: Final = "streamscope.usage.cache_read.input_tokens"
METRIC_USAGE_CACHE_CREATION_TOKENS: Final = "streamscope.usage.cache_creation.input_tokens"
METRIC_USAGE_REASONING_TOKENS: Final = "streamscope.usage.reasoning.output_tokens"
METRIC_CHUNK_GAP_MEAN: Final = STREAM_CHUNK_GAP_MEAN
METRIC_CHUNK_GAP_LONGEST: Final = STREAM_CHUNK_GAP_LONGEST
DESCRIPTION_CHUNK_GAP_MEAN: Final = "Mean time between consecutive output chunks of a stream, one value per stream."
DESCRIPTION_CHUNK_GAP_LONGEST: Final = "Longest time between two consecutive output chunks of a stream, per stream."
METRIC_STREAM_EVENTS: Final = "streamscope.stream.events"
METRIC_STREAMS_ACTIVE: Final = "streamscope.streams.active"
METRIC_STREAMS_FINISHED: Final = "streamscope.streams.finished"
METRIC_POLICY_VIOLATIONS: Final = "streamscope.policy.violations"
# Cost (USD, as Pydantic AI prices a response): deltas while streams run, and one value per stream at its end.
METRIC_COST: Final = "streamscope.cost"
METRIC_STREAM_COST: Final = STREAM_COST
COST_UNIT: Final = "{USD}"  # UCUM has no currencies: an annotation, as Pydantic AI's own operation.cost uses
DESCRIPTION_COST: Final = "Cost of the streams' usage in USD, recorded as it grows (genai-prices)."
DESCRIPTION_STREAM_COST: Final = "Cost of one stream in USD when it ended, by outcome (genai-prices)."
# Stalls: in-flight streams whose last chunk (or open, before the first) is older than the stall threshold.
METRIC_STREAMS_STALLED: Final = "streamscope.streams.stalled"
METRIC_STREAMS_OLDEST_AGE: Final = "streamscope.streams.oldest_age"

# `RequestUsage` field → (usage-delta counter, span attribute). Order is the order of emission.
USAGE_FIELDS: Final[tuple[tuple[str, str, str], ...]] = (
    ("input_tokens", METRIC_USAGE_INPUT_TOKENS, GEN_AI_USAGE_INPUT_TOKENS),
    ("output_tokens", METRIC_USAGE_OUTPUT_TOKENS, GEN_AI_USAGE_OUTPUT_TOKENS),
    ("cache_read_tokens", METRIC_USAGE_CACHE_READ_TOKENS, GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS),
    ("cache_write_tokens", METRIC_USAGE_CACHE_CREATION_TOKENS, GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS),
    ("output_reasoning_tokens", METRIC_USAGE_REASONING_TOKENS, GEN_AI_USAGE_REASONING_OUTPUT_TOKENS),
)

# Bucket boundaries given by the GenAI metric conventions (the semconv factories pass none).
DURATION_BUCKETS: Final[tuple[float, ...]] = tuple(round(0.01 * 2**i, 2) for i in range(14))  # 0.01 … 81.92
TOKEN_BUCKETS: Final[tuple[float, ...]] = tuple(float(4**i) for i in range(14))  # 1 … 67108864
COST_BUCKETS: Final[tuple[float, ...]] = (
    0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0,
)  # fmt: skip
CHUNK_TIME_BUCKETS: Final[tuple[float, ...]] = (
    0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip

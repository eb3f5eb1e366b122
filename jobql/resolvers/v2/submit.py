"""A v2 submit input as the service's request: shared by submitJob and runJob, so both
refuse the same inputs in the same words."""

from __future__ import annotations

from jobql.errors import InvalidInput, Violation
from jobql.resolvers.context import Context
from jobql.resolvers.v2.lookup import API_VERSION
from jobql.schema.v2.inputs import V2SubmitJobInput
from jobql.schema.v2.money import MICROS_PER_DOLLAR, parse_amount
from jobql.services.jobs import MAX_COST_USD, SubmitRequest


def _max_cost_micros(text: str) -> int | InvalidInput:
    micros = parse_amount(text)
    if micros is not None and 1 <= micros <= MAX_COST_USD * MICROS_PER_DOLLAR:
        return micros
    message = (
        'maxCost must be a decimal string of USD with at most six places, e.g. "0.05", '
        f'from "0.000001" (one micro-dollar) to "{MAX_COST_USD:.0f}".'
    )
    return InvalidInput(
        field="maxCost", violations=(Violation("maxCost", message),), message=message
    )


def submit_request(ctx: Context, input: V2SubmitJobInput) -> SubmitRequest | InvalidInput:
    """The service's request for a v2 submit input (the Idempotency-Key header when the
    input has no key), or why ``maxCost`` is refused."""
    max_cost_micros = None
    if input.max_cost is not None:
        max_cost = _max_cost_micros(input.max_cost)
        if isinstance(max_cost, InvalidInput):
            return max_cost
        max_cost_micros = max_cost
    key = input.idempotency_key
    if key is None:
        key = ctx.request.headers.get("idempotency-key")
    return SubmitRequest(
        api_version=API_VERSION,
        task=input.task,
        input=input.params,
        idempotency_key=key,
        wait_seconds=input.wait_seconds,
        deadline_seconds=input.deadline_seconds,
        # Exact: the service rounds dollars back to the same micro-dollars.
        max_cost_usd=max_cost_micros / MICROS_PER_DOLLAR if max_cost_micros is not None else None,
        metadata=input.metadata,
        request_id=ctx.request_id,
    )

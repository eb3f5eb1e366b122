"""Exact money: an amount of US dollars as a decimal string with six places (micro-dollars).

GraphQL's Int is 32-bit, so micro-dollars as an Int would overflow at $2,147.48, and a Float
cannot hold most decimal amounts exactly; a string can, and every language parses it into
its own decimal type."""

from __future__ import annotations

import re
from decimal import Decimal

import strawberry

CURRENCY = "USD"
PLACES = 6
MICROS_PER_DOLLAR = 1_000_000
_AMOUNT = re.compile(r"[0-9]{1,12}(\.[0-9]{1,6})?")


@strawberry.type(
    description="An exact amount of money: `amount` is a decimal string with six places, "
    'e.g. "0.001845" (never a float); `currency` is always "USD".'
)
class V2Money:
    amount: str
    currency: str


def format_micros(micros: int) -> str:
    """Micro-dollars as a decimal string with six places: 1845 -> "0.001845"."""
    sign = "-" if micros < 0 else ""
    whole, fraction = divmod(abs(micros), MICROS_PER_DOLLAR)
    return f"{sign}{whole}.{fraction:06d}"


def money(micros: int) -> V2Money:
    return V2Money(amount=format_micros(micros), currency=CURRENCY)


def micros_of_usd(dollars: float) -> int:
    """Micro-dollars of an amount stored as a float of dollars (micros / 1e6): exact, since
    such a float rounds back to the integer it was made from."""
    return round(dollars * MICROS_PER_DOLLAR)


def price_micros_per_million(per_1k: float) -> int:
    """A price per 1,000 tokens as micro-dollars per million tokens (exact to the micro)."""
    return int((Decimal(repr(per_1k)) * 1000 * MICROS_PER_DOLLAR).to_integral_value())


def parse_amount(text: str) -> int | None:
    """Micro-dollars of a non-negative decimal string with at most six places ("0.5",
    "12.000001"); None when it is not one."""
    if not _AMOUNT.fullmatch(text):
        return None
    whole, _, fraction = text.partition(".")
    return int(whole) * MICROS_PER_DOLLAR + int(fraction.ljust(PLACES, "0"))

"""V2Money: micro-dollars as exact decimal strings, and decimal strings back."""

from __future__ import annotations

import pytest

from jobql.schema.v2.money import (
    format_micros,
    micros_of_usd,
    money,
    parse_amount,
    price_micros_per_million,
)


@pytest.mark.parametrize(
    ("micros", "amount"),
    [
        (0, "0.000000"),
        (1, "0.000001"),
        (1845, "0.001845"),
        (1_000_000, "1.000000"),
        (2_147_483_648, "2147.483648"),  # past a GraphQL Int of micro-dollars
        (123_456_789_012_345_678, "123456789012.345678"),
        (-1845, "-0.001845"),
    ],
)
def test_micros_format_as_six_places(micros: int, amount: str) -> None:
    assert format_micros(micros) == amount
    assert money(micros).amount == amount
    assert money(micros).currency == "USD"


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("0", 0),
        ("0.5", 500_000),
        ("0.000001", 1),
        ("12.000001", 12_000_001),
        ("2147.483648", 2_147_483_648),
        ("0.001845", 1845),
    ],
)
def test_amounts_parse_to_micros(text: str, micros: int) -> None:
    assert parse_amount(text) == micros
    assert parse_amount(format_micros(micros)) == micros


@pytest.mark.parametrize(
    "text",
    [
        "",
        ".5",
        "1.",
        "-1",
        "+1",
        "1e3",
        "0.0000001",
        "1,5",
        " 1",
        "NaN",
        "\u0661",
    ],  # an Arabic-Indic one
)
def test_anything_else_is_not_an_amount(text: str) -> None:
    assert parse_amount(text) is None


def test_float_dollars_stored_by_the_events_round_back_exactly() -> None:
    for micros in (0, 1, 7, 1845, 999_999, 123_456_789, 987_654_321_123):
        assert micros_of_usd(micros / 1_000_000) == micros


@pytest.mark.parametrize(
    ("per_1k", "per_million_micros"),
    [(0.0005, 500_000), (0.0015, 1_500_000), (2.0, 2_000_000_000), (0.000075, 75_000), (0.0, 0)],
)
def test_prices_per_million_tokens_are_exact(per_1k: float, per_million_micros: int) -> None:
    assert price_micros_per_million(per_1k) == per_million_micros

"""The CLI's quantities (``gridledger ev``, ``gridledger dr``) are exact or refused by name.

Attack: arguments a script or a careless operator passes that are not plain decimals.
``Infinity`` raised a bare OverflowError; 29+ significant digits were rounded silently to
Decimal's 28-digit default (so an inexact amount was accepted); ``1e999999999`` raised
decimal.Overflow.
"""

import pytest

from gridledger.commands.dr import exact_int
from gridledger.commands.errors import CliError


@pytest.mark.parametrize(
    ("text", "scale", "expected"),
    [("0.30", 10**6, 300_000), ("40", 1000, 40_000), ("5.333", 1000, 5_333), ("0", 1000, 0)],
)
def test_exact_quantities_convert(text, scale, expected):
    assert exact_int(text, scale, "--max-kwh") == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("Infinity", "not a finite number"),
        ("-Infinity", "not a finite number"),
        ("nan", "not a finite number"),
        ("1e40", r"not a finite number below 10\^40"),
        ("1e999999999", "not a number"),
        ("abc", "not a number"),
        ("1" * 120, "not a number"),  # beyond exact arithmetic: refused, never rounded
        ("0.0010000000000000000000000000001", "not a whole"),  # 29 significant digits
        ("0.3000001", "not a whole"),
        ("-1", "not a whole non-negative"),
    ],
)
def test_inexact_or_unbounded_quantities_are_refused_by_name(text, why):
    with pytest.raises(CliError, match=why) as err:
        exact_int(text, 1000, "--max-kwh")
    assert "--max-kwh" in str(err.value)

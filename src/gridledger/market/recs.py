"""Renewable-energy certificates (seed 004): one per MWh of metered green generation.

Green energy is counted per generator from its meter readings; every full MWh issues one
certificate and the remainder carries over to the next reading.  A reading is counted once (the
settlement contract refuses a second reading for the same meter and slot), so a certificate can
never be issued twice for the same energy.  Certificate ids are derived from the generator and
its running certificate count, hence deterministic and unique.
"""

from __future__ import annotations

REC_WH = 1_000_000  # one certificate = 1 MWh


def recs_for_green(carry_wh: int, green_wh: int) -> tuple[int, int]:
    """(certificates to issue, Wh carried forward) after adding a green reading."""
    if carry_wh < 0 or green_wh < 0:
        raise ValueError("green energy and carry must be non-negative")
    total = carry_wh + green_wh
    return total // REC_WH, total % REC_WH


def rec_id(generator: str, serial: int) -> str:
    """Id of the ``serial``-th certificate (0-based) of a generator."""
    return f"rec:{generator}:{serial}"

"""Fixtures shared by the DistFlow tests: case33bw and its centralized day-ahead optimum."""

from __future__ import annotations

import pytest

from gridledger.grid.distflow import solve_central
from gridledger.grid.feeders import case33bw


@pytest.fixture(scope="module")
def feeder33():
    return case33bw()


@pytest.fixture(scope="module")
def central33(feeder33):
    return solve_central(feeder33)

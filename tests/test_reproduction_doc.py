"""docs/reproduction.md's numbers are what the commands print today (issue: stale CASE 2 rows)."""

from __future__ import annotations

import pytest

from gridledger.demo import reproduction


def test_the_document_matches_the_commands():
    text = reproduction.DOC.read_text()
    assert reproduction.render(text, reproduction.generate()) == text, (
        "docs/reproduction.md is stale: run python -m gridledger.demo.reproduction --write"
    )


def test_a_changed_number_is_caught():
    blocks = {"a": "| x | 1.000 |\n"}
    text = "head\n<!-- BEGIN generated:a -->\n| x | 2.000 |\n<!-- END generated:a -->\ntail\n"
    assert reproduction.render(text, blocks) != text
    assert "| x | 1.000 |" in reproduction.render(text, blocks)


def test_unknown_and_missing_blocks_are_errors():
    with pytest.raises(KeyError, match="nothing generates"):
        reproduction.render("<!-- BEGIN generated:b -->\nx\n<!-- END generated:b -->\n", {})
    with pytest.raises(KeyError, match="lacks the generated blocks"):
        reproduction.render("no markers\n", {"a": "x\n"})

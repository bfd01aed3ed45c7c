"""The dispatcher itself: every area registers, user errors exit 2 without a traceback."""

from __future__ import annotations

import argparse

import pytest

from gridledger import cli


def test_every_command_module_registers() -> None:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("cases", "pf", "ropf", "validate", "node", "verify", "testnet", "schedule"):
        assert command in sub.choices, command
    assert "demo" in sub.choices


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage: gridledger" in capsys.readouterr().out


def _run_with_handler(monkeypatch: pytest.MonkeyPatch, handler) -> int:
    real = cli.build_parser

    def parser_with_probe() -> argparse.ArgumentParser:
        parser = real()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sub.add_parser("probe").set_defaults(handler=handler)
        return parser

    monkeypatch.setattr(cli, "build_parser", parser_with_probe)
    return cli.main(["probe"])


def test_cli_error_is_a_message_and_status_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(_args: argparse.Namespace) -> int:
        raise cli.CliError("bus 42 is not in microgrid9")

    assert _run_with_handler(monkeypatch, fail) == 2
    err = capsys.readouterr().err
    assert err.strip() == "gridledger: error: bus 42 is not in microgrid9"


def test_unknown_case_names_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["pf", "no-such-case"]) == 2
    err = capsys.readouterr().err
    assert "unknown case 'no-such-case'" in err and "microgrid9" in err

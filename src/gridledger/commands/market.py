"""``gridledger demo``: the energy market end to end (docs/demo.md)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run seed 000 CASE 1/2 and a seed-002 seller selection on an embedded chain",
        description="Offers, bids, matching, DSO certificates (R-OPF, losses, reactive "
        "set-points), metered delivery and settlement on a fresh chain (embedded by default); "
        "prints a Table III-like report, balances, the chain and the audit, and writes an HTML "
        "report.",
    )
    p.add_argument(
        "--home",
        type=Path,
        help="chain home directory (must be new or empty; default: a fresh temporary directory)",
    )
    p.add_argument("--out", type=Path, default=Path("out"), help="report directory (default out/)")
    p.add_argument(
        "--method",
        default=None,
        choices=("exact", "gso", "sbde", "de"),
        help="R-OPF solver the DSO uses (default: each scenario's own)",
    )
    p.add_argument(
        "--validators",
        type=int,
        default=1,
        help="1: one validator (default); N > 1: an N-validator BFT testnet of processes",
    )
    p.add_argument(
        "--processes",
        action="store_true",
        help="run a node process and the agents as separate processes on the wall "
        "clock (short market slots) instead of the embedded chain",
    )
    p.add_argument(
        "--slot-s",
        type=int,
        default=6,
        help="market slot length in seconds with --processes (default 6)",
    )
    p.add_argument(
        "--phases",
        default="case1,case2,select",
        help="which phases to run, comma-separated (default: case1,case2,select)",
    )
    p.add_argument(
        "--no-schedule",
        action="store_true",
        help="skip the day-ahead DER schedule (ADMM on chain, billing) after the market "
        "(embedded chain only; with agent processes use `gridledger schedule --on-chain`)",
    )
    p.add_argument("--quiet", action="store_true", help="print only the final report")
    p.add_argument(
        "--serve",
        nargs="?",
        const="127.0.0.1:8765",
        metavar="HOST:PORT",
        help="afterwards, run a node on the demo chain with the web app and print its URL; "
        "serves until Ctrl-C (default address 127.0.0.1:8765)",
    )
    p.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from gridledger.commands.errors import CliError

    if args.validators < 1:
        raise CliError(f"--validators must be at least 1, got {args.validators}")
    from gridledger.demo.scenario import PHASES

    by_key = {ph.key: ph for ph in PHASES}
    wanted = [k.strip() for k in args.phases.split(",") if k.strip()]
    unknown = [k for k in wanted if k not in by_key]
    if unknown or not wanted:
        raise CliError(f"--phases: unknown phase(s) {unknown}; choose from {', '.join(by_key)}")
    phases = tuple(by_key[k] for k in wanted)
    home = args.home
    if home is None:
        home = Path(tempfile.mkdtemp(prefix="gridledger-demo-"))
    elif home.exists() and any(home.iterdir()):
        raise CliError(f"--home {home} is not empty; the demo needs a fresh home directory")
    if args.serve and args.validators > 1:
        raise CliError("--serve runs one node on the demo chain; it cannot serve a BFT testnet")
    if args.serve:
        from gridledger.node.server import parse_hostport

        try:  # checked now, not after the demo has run
            parse_hostport(args.serve)
        except ValueError as exc:
            raise CliError(f"--serve: {exc}") from exc
    if args.slot_s < 2:
        raise CliError(f"--slot-s must be at least 2 seconds, got {args.slot_s}")
    from gridledger.chain.verify import verify_chain
    from gridledger.demo.report import build_report, render_text, write_html
    from gridledger.demo.run import run_embedded, run_processes

    t0 = time.perf_counter()

    def progress(msg: str) -> None:
        if not args.quiet:
            print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)

    from gridledger.agents.client import AgentError

    home.mkdir(parents=True, exist_ok=True)
    try:
        if args.processes or args.validators > 1:
            plan, chain, db = run_processes(
                home, progress, args.method, args.slot_s, args.validators, phases
            )
        else:
            plan, chain = run_embedded(
                home, progress, args.method, phases=phases, day_ahead=not args.no_schedule
            )
            db = home / "data" / "chain.db"
    except (AgentError, RuntimeError, TimeoutError) as exc:
        raise CliError(f"the demo stopped: {exc} (chain home: {home})") from exc
    progress("auditing the chain from genesis (gridledger verify) ...")
    audit = verify_chain(db)
    report = build_report(plan, chain, audit)
    text = render_text(report, plan)
    print(text)
    out = write_html(report, plan, text, args.out / "demo.html")
    chain.close()
    node_home = db.parent.parent
    print(f"\nHTML report: {out}\nchain home:  {node_home}  (gridledger verify --home {node_home})")
    print(f"done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    ok = (
        audit.ok
        and report.invariants["supply_equals_balances"]
        and report.invariants["negative_balances"] == 0
        and report.invariants["pending_matches"] == 0
    )
    if args.serve:
        _serve(node_home, args.serve)
    return 0 if ok else 1


def _serve(home: Path, address: str) -> None:
    """A node (solo, no empty blocks) on the demo's chain with the web app at ``/``."""
    import socket

    from gridledger.commands.errors import CliError
    from gridledger.node.home import NodeConfig
    from gridledger.node.node import Node
    from gridledger.node.server import parse_hostport, serve

    try:
        host, port = parse_hostport(address)
    except ValueError as exc:
        raise CliError(f"--serve: {exc}") from exc
    if port == 0:  # pick a free port now, so that the URL can be printed before serving
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    from gridledger.chain.genesis import parse_genesis

    if not (home / "config.json").exists():
        genesis = parse_genesis((home / "genesis.json").read_bytes().rstrip(b"\n"))
        NodeConfig(genesis.chain_id, api=f"{host}:{port}").save(home)
    print(f"\nweb app on the demo chain: http://{host}:{port}/  (Ctrl-C to stop)", flush=True)
    import contextlib

    # Ctrl-C is how serving ends: the exit status stays the demo's
    with contextlib.suppress(KeyboardInterrupt):
        serve(Node(home), f"{host}:{port}")

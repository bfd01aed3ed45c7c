"""The demo's agents of one role as their own OS process against a node's HTTP API.

``python -m gridledger.demo.agents_proc --plan HOME/demo/plan.json --role dso --node URL``

builds the agents of one role (``dso``, ``meters``, ``prosumers``) from a demo plan
(:mod:`gridledger.demo.plan`), then polls the node (:func:`gridledger.agents.runner.run_agents`):
at every new block each agent looks at the chain and posts what is due.  It exits once block
time has passed the plan's end and its agents are done.

With ``--go FILE`` the process first gets ready (imports, grids loaded, a first solve), says so
in ``HOME/demo/ROLE.ready`` and waits for FILE: the demo then moves the plan's times to start
from that moment (:func:`gridledger.demo.plan.shift_plan`), and the process reads the plan again.
A cold start costs tens of seconds on a loaded machine; it must not eat the time the DSO has to
certify a match before its delivery starts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from gridledger.agents.runner import HttpChain, run_agents
from gridledger.demo.plan import agents_for_role, load_plan


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gridledger.demo.agents_proc")
    p.add_argument("--plan", type=Path, required=True)
    p.add_argument("--role", choices=("dso", "meters", "prosumers"), required=True)
    p.add_argument("--node", required=True, help="the node's API URL")
    p.add_argument("--deadline-s", type=float, default=600.0)
    p.add_argument("--go", type=Path, help="get ready, then wait for this file (see above)")
    args = p.parse_args(argv)
    plan = load_plan(args.plan)
    agents = _ready_agents(plan, args.role, {})
    if args.go is not None:
        (args.plan.parent / f"{args.role}.ready").write_text("ready\n")
        deadline = time.monotonic() + args.deadline_s
        while not args.go.exists():
            if time.monotonic() > deadline:
                print(f"no {args.go} after {args.deadline_s} s", file=sys.stderr)
                return 1
            time.sleep(0.05)
        evaluators = _evaluators(plan, agents)
        plan = load_plan(args.plan)  # the same plan, moved to start now
        agents = _ready_agents(plan, args.role, evaluators)
    client = HttpChain(args.node)
    try:
        run_agents(client, agents, plan["end_ms"], deadline_s=args.deadline_s, log=sys.stderr)
    finally:
        client.close()
    refused = [r for a in agents for r in getattr(a, "refused", {}).values()]
    summary = {"role": args.role, "agents": len(agents), "refused": refused}
    out = args.plan.parent / f"{args.role}.done.json"
    out.write_text(json.dumps(summary))
    for r in refused:
        print(f"refused: {r}", file=sys.stderr)
    return 1 if refused else 0


def _ready_agents(plan: dict[str, Any], role: str, evaluators: dict[str, Any]) -> list[Any]:
    """The role's agents, warmed up (a DSO solves each grid once)."""
    agents = agents_for_role(plan, role, evaluators)
    for a in agents:
        if hasattr(a, "warm_up"):
            a.warm_up()
    return agents


def _evaluators(plan: dict[str, Any], agents: list[Any]) -> dict[str, Any]:
    """Scenario name -> the evaluator a DSO agent already loaded and warmed up (its grid
    phases are the plan's phases, in order)."""
    out = {}
    for a in agents:
        for ph, grid_phase in zip(plan["phases"], getattr(a, "phases", []), strict=False):
            out[ph["scenario"]] = grid_phase.evaluator
    return out


if __name__ == "__main__":
    sys.exit(main())

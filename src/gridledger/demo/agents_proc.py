"""The demo's agents of one role as their own OS process against a node's HTTP API.

``python -m gridledger.demo.agents_proc --plan HOME/demo/plan.json --role dso --node URL``

builds the agents of one role (``dso``, ``meters``, ``prosumers``) from a demo plan
(:mod:`gridledger.demo.plan`), then polls the node (:func:`gridledger.agents.runner.run_agents`):
at every new block each agent looks at the chain and posts what is due.  It exits once block
time has passed the plan's end and its agents are done.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gridledger.agents.runner import HttpChain, run_agents
from gridledger.demo.plan import agents_for_role, load_plan


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gridledger.demo.agents_proc")
    p.add_argument("--plan", type=Path, required=True)
    p.add_argument("--role", choices=("dso", "meters", "prosumers"), required=True)
    p.add_argument("--node", required=True, help="the node's API URL")
    p.add_argument("--deadline-s", type=float, default=600.0)
    args = p.parse_args(argv)
    plan = load_plan(args.plan)
    agents = agents_for_role(plan, args.role)
    for a in agents:
        if hasattr(a, "warm_up"):
            a.warm_up()
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


if __name__ == "__main__":
    sys.exit(main())

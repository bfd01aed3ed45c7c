"""The demo's report, read back from the chain (and the DSO's off-chain certificate documents).

* Table III-like, per case: loss share of each trade and total losses per interval, without and
  with R-OPF, and ΔQ/ΔPQ per regulator (from the loss and reactive records on chain);
* the seller selection: the DSO's ranking on chain and the seller each buyer got;
* token balances, payments per party and kind, RECs (from the settlement records);
* the chain: height, transactions, the three record trees' roots; the audit result.

``render_text`` prints it; ``write_html`` writes the same tables with the voltage profiles with
and without R-OPF (seed 000 Fig. 5) as embedded PNGs.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gridledger.chain.contracts.certificates import REC_PREFIX
from gridledger.chain.contracts.market import (
    ESCROW,
    NEXT_MATCH,
    PENDING,
    RANKING,
    loss_record_key,
    match_count,
    match_id,
    match_key,
    reactive_key,
)
from gridledger.chain.contracts.settlement import DONE_PREFIX
from gridledger.chain.contracts.tokens import DENOMS, balance_prefix, supply_key
from gridledger.demo import day_ahead, dr_phase
from gridledger.demo.scenario import SELLERS
from gridledger.market.recs import REC_WH

KINDS = ("energy", "loss", "reactive", "penalty")


@dataclass
class Report:
    table3: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    selection: list[dict[str, Any]] = field(default_factory=list)
    ranking: list[dict[str, Any]] = field(default_factory=list)
    parties: list[dict[str, Any]] = field(default_factory=list)
    matches: list[dict[str, Any]] = field(default_factory=list)
    chain: dict[str, Any] = field(default_factory=dict)
    audit: dict[str, Any] = field(default_factory=dict)
    voltages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    invariants: dict[str, Any] = field(default_factory=dict)
    day_ahead: dict[str, Any] | None = None
    dr: dict[str, Any] | None = None


def _names(plan: dict[str, Any]) -> dict[str, str]:
    """public key -> party name (the DSO and the escrow included)."""
    from gridledger.demo.plan import key_of

    names = {key_of(plan, p["name"]).pub_hex: p["name"] for p in plan["parties"]}
    names[key_of(plan, "dso").pub_hex] = "DSO"
    names[ESCROW] = "market escrow"
    return names


def _phase_of(plan: dict[str, Any], t_ms: int) -> dict[str, Any] | None:
    found = None
    for ph in plan["phases"]:
        if t_ms >= ph["t1_ms"] - 2 * plan["slot_ms"]:
            found = ph
    return found


def _label(plan: dict[str, Any], names: dict[str, str], m: dict[str, Any]) -> tuple[str, str]:
    """(phase, trade label) of a match: the plan's bid with the same buyer and window."""
    ph = _phase_of(plan, m["start_ms"])
    buyer = names.get(m["buyer"])
    for o in plan["orders"]:
        if (
            o["kind"] == "bid"
            and o["party"] == buyer
            and o["start_ms"] == m["start_ms"]
            and o["end_ms"] == m["end_ms"]
        ):
            return tuple(o["label"].split(":", 1))  # type: ignore[return-value]
    return (ph["key"] if ph else "?", "?")


def build_report(plan: dict[str, Any], chain: Any, audit: Any) -> Report:
    rep = Report()
    names = _names(plan)
    rep.matches = _match_rows(plan, chain, names)
    by_phase: dict[str, list[dict[str, Any]]] = {}
    for row in rep.matches:
        by_phase.setdefault(row["phase"], []).append(row)
    for ph in plan["phases"]:
        phase_rows = by_phase.get(ph["key"], [])
        rep.table3[ph["key"]] = _table3_rows(plan, chain, names, ph, phase_rows)
        if ph["ranking"]:
            rep.ranking.extend(_ranking_rows(chain, ph))
            rep.selection.extend(_selection_rows(phase_rows))
    paid, got, settlements, shortfall = _payments(chain, names)
    rep.parties = _party_rows(plan, chain, names, paid, got)
    rep.invariants = _invariants(chain, settlements, shortfall)
    rep.chain = _chain_summary(chain)
    rep.audit = audit.to_json() if hasattr(audit, "to_json") else dict(audit)
    rep.voltages = _voltages(plan)
    rep.day_ahead = day_ahead.summarize(plan, chain)
    rep.dr = dr_phase.summarize(plan, chain)
    return rep


def _match_rows(plan: dict[str, Any], chain: Any, names: dict[str, str]) -> list[dict[str, Any]]:
    """One row per match on chain, labelled with the plan's phase and trade."""
    rows = []
    for i in range(match_count(chain.state(NEXT_MATCH))):
        rec = chain.state(match_key(match_id(i)))
        m = rec["match"]
        phase, label = _label(plan, names, m)
        rows.append(
            {
                "match": m["match_id"],
                "phase": phase,
                "trade": label,
                "seller": names.get(m["seller"], m["seller"][:8]),
                "buyer": names.get(m["buyer"], m["buyer"][:8]),
                "power_kw": m["power_w"] / 1000,
                "start": m["start_ms"],
                "end": m["end_ms"],
                "price_token_per_kwh": m["price_utoken_per_kwh"] / 1e6,
                "status": rec["status"],
                "reasons": rec["reasons"],
                "certificate": rec["certificate"],
            }
        )
    return rows


def _table3_rows(
    plan: dict[str, Any],
    chain: Any,
    names: dict[str, str],
    ph: dict[str, Any],
    phase_rows: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Table III of one phase: per interval, each trade's loss share and the regulators' ΔQ."""
    rows = []
    for k in range(ph["n_slots"]):
        start = ph["t1_ms"] + k * plan["slot_ms"]
        lossrec = chain.state(loss_record_key(start))
        if lossrec is None:
            continue
        trades = []
        for s in lossrec["shares"]:
            row = next((r for r in phase_rows if r["match"] == s["match_id"]), None)
            trades.append(
                {
                    "trade": row["trade"] if row else s["match_id"],
                    "loss_kw": s["loss_w"] / 1000,
                    "loss_kw_without_ropf": s.get("loss_w_without_ropf", 0) / 1000,
                }
            )
        starting = [
            r for r in phase_rows if r["start"] == start and r["status"] in ("approved", "settled")
        ]
        rows.append(
            {
                "interval": f"t{k + 1}–t{k + 2}",
                "trades": trades,
                "total_kw": lossrec["total_loss_w"] / 1000,
                "total_kw_without_ropf": lossrec.get("total_loss_w_without_ropf", 0) / 1000,
                "reactive": _reactive_of(chain, names, starting[:1]),
            }
        )
    return rows


def _reactive_of(
    chain: Any, names: dict[str, str], starting: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """ΔQ / ΔPQ per regulator of the (first) match starting in an interval."""
    dq = {}
    for r in starting:
        reactive = chain.state(reactive_key(r["match"])) or {"setpoints": []}
        for sp in reactive["setpoints"]:
            dq[names.get(sp["account"], str(sp["node"]))] = {
                "delta_q_kvar": sp["delta_q_var"] / 1000,
                "delta_pq_kw": sp["delta_pq_w"] / 1000,
                "utoken_per_slot": sp["utoken_per_slot"],
            }
    return dq


def _ranking_rows(chain: Any, ph: dict[str, Any]) -> list[dict[str, Any]]:
    sellers = SELLERS[ph["case"]]
    return [
        {**row, "seller": sellers.get(row["seller_node"], f"bus {row['seller_node']}")}
        for row in chain.state(RANKING) or []
    ]


def _selection_rows(phase_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "buyer": r["buyer"],
            "trade": r["trade"],
            "seller": r["seller"],
            "status": r["status"],
            "power_kw": r["power_kw"],
        }
        for r in phase_rows
    ]


def _payments(
    chain: Any, names: dict[str, str]
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]], int, int]:
    """Paid and received per party and kind, the number of settlements, the total shortfall."""
    paid: dict[str, dict[str, int]] = {}
    got: dict[str, dict[str, int]] = {}
    shortfall = 0
    settlements = 0
    for key in chain.keys_with_prefix(DONE_PREFIX):
        done = chain.state(key)
        settlements += 1
        for p in done["payments"]:
            a, b = names.get(p["payer"], p["payer"][:8]), names.get(p["payee"], p["payee"][:8])
            paid.setdefault(a, {}).setdefault(p["kind"], 0)
            paid[a][p["kind"]] += p["amount"]
            got.setdefault(b, {}).setdefault(p["kind"], 0)
            got[b][p["kind"]] += p["amount"]
            shortfall += p["shortfall"]
    return paid, got, settlements, shortfall


def _certificates(chain: Any, names: dict[str, str]) -> tuple[dict[str, int], dict[str, int]]:
    """Active and retired certificates (whole MWh) per owner."""
    recs: dict[str, int] = {}
    retired: dict[str, int] = {}
    for key in chain.keys_with_prefix(REC_PREFIX):
        r = chain.state(key)
        who = names.get(r["owner"], "?")
        target = recs if r["status"] == "active" else retired
        # one record per reading carries all its whole MWh: count certificates, not records
        target[who] = target.get(who, 0) + r["energy_wh"] // REC_WH
    return recs, retired


def _party_rows(
    plan: dict[str, Any],
    chain: Any,
    names: dict[str, str],
    paid: dict[str, dict[str, int]],
    got: dict[str, dict[str, int]],
) -> list[dict[str, Any]]:
    recs, retired = _certificates(chain, names)
    pubs = {n: pub for pub, n in names.items()}
    funds_of = {p["name"]: p["funds_utoken"] for p in plan["parties"]}
    rows = []
    for name in [*funds_of, "DSO"]:
        pub = pubs[name]
        rows.append(
            {
                "party": name,
                "utoken_start": funds_of.get(name, 0),
                "utoken": chain.balance("utoken", pub),
                "ewh": chain.balance("ewh", pub),
                "recs": recs.get(name, 0),
                "recs_retired": retired.get(name, 0),
                "paid": paid.get(name, {}),
                "received": got.get(name, {}),
            }
        )
    return rows


def _invariants(chain: Any, settlements: int, shortfall: int) -> dict[str, Any]:
    """Money checks: supply equals the sum of balances, none negative, escrow empty."""
    supply = {d: chain.state_int(supply_key(d)) for d in DENOMS}
    balances = {
        d: sum(chain.state_int(k) for k in chain.keys_with_prefix(balance_prefix(d)))
        for d in DENOMS
    }
    return {
        "supply": supply,
        "sum_of_balances": balances,
        "supply_equals_balances": supply == balances,
        "negative_balances": sum(
            1
            for d in DENOMS
            for k in chain.keys_with_prefix(balance_prefix(d))
            if chain.state_int(k) < 0
        ),
        "settlements": settlements,
        "shortfall_utoken": shortfall,
        "escrow_left_utoken": chain.balance("utoken", ESCROW),
        "pending_matches": len(chain.state(PENDING) or []),
    }


def _chain_summary(chain: Any) -> dict[str, Any]:
    """Height, transactions per record tree, the last roots of the record trees, the hashes."""
    last = chain.blocks[-1].header if chain.blocks else None
    trees = {"active": 0, "loss": 0, "reactive": 0, "other": 0}
    roots: dict[str, str] = {}
    for b in chain.blocks:
        for raw in b.txs:
            trees[chain.app.classify_tx(raw)] += 1
        for t in ("active", "loss", "reactive"):
            r = b.header.root_of(t).hex()
            if any(chain.app.classify_tx(raw) == t for raw in b.txs):
                roots[t] = f"h{b.header.height} {r[:16]}…"
    return {
        "chain_id": chain.chain_id,
        "height": chain.height(),
        "txs": sum(len(b.txs) for b in chain.blocks),
        "records": trees,
        "last_roots": roots,
        "last_block_hash": chain.blocks[-1].hash().hex() if last else "",
        "app_hash": chain.app.app_hash.hex(),
    }


def _voltages(plan: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Voltage profiles with and without R-OPF per case and interval (DSO documents)."""
    out: dict[str, list[dict[str, Any]]] = {}
    docs_dir = Path(plan["home"]) / "dso" / "certificates"
    if not docs_dir.exists():
        return out
    for path in sorted(docs_dir.glob("m*.json"), key=lambda p: int(p.stem[1:])):
        doc = json.loads(path.read_text())
        ph = _phase_of(plan, doc["match"]["start_ms"])
        if ph is None:
            continue
        for itv in doc["intervals"]:
            ev = itv["evaluation"]
            if "bus_vm_pu" not in ev or "bus_vm_pu_without_ropf" not in ev:
                continue
            k = (itv["from_ms"] - ph["t1_ms"]) // plan["slot_ms"]
            buses = sorted(ev["bus_vm_pu"], key=int)
            entry = {
                "interval": f"t{k + 1}–t{k + 2}",
                "buses": [int(b) for b in buses],
                "vm_pu": [ev["bus_vm_pu"][b] for b in buses],
                "vm_pu_without_ropf": [ev["bus_vm_pu_without_ropf"][b] for b in buses],
            }
            rows = out.setdefault(ph["key"], [])
            rows[:] = [r for r in rows if r["interval"] != entry["interval"]] + [entry]
    for rows in out.values():
        rows.sort(key=lambda r: r["interval"])
    return out


# seed 000 Table III, ΔPtot in kW per interval (without, with R-OPF): the paper's figures, shown
# beside ours; docs/reproduction.md explains the differences
PAPER_DPTOT_KW = {
    "seed000_case1": [(17.019, 16.592), (15.270, 13.549), (16.975, 14.466)],
    "seed000_case2": [(18.118, 13.449), (18.102, 14.409), (25.202, 17.487)],
}


def _dq_cell(d: dict[str, Any] | None) -> str:
    """Table III's "ΔQ/ΔPQ" cell: ΔPQ is only shown where it is paid (ΔQ raised the output)."""
    if d is None:
        return "–"
    dq = round(d["delta_q_kvar"]) or 0  # no "-0"
    return f"{dq}/{d['delta_pq_kw']:.1f}" if d["delta_pq_kw"] > 0 else f"{dq}/–"


# --- text ---------------------------------------------------------------------------------------
def _t(x: float) -> str:
    return f"{x / 1e6:,.4f}"


def render_text(rep: Report, plan: dict[str, Any]) -> str:
    lines: list[str] = []
    for ph in plan["phases"]:
        rows = rep.table3.get(ph["key"], [])
        lines.append("")
        lines.append(ph["title"])
        regs = list(ph["regulators"].values())
        paper = PAPER_DPTOT_KW.get(ph["scenario"], {})
        head = f"{'interval':<8} {'R-OPF':<5} {'trade':<5} {'ΔP_Gi,Li kW':>11} {'ΔPtot kW':>9}"
        head += f" {'(paper)':>8}" if paper else ""
        head += "".join(f" {'ΔQ kvar/ΔPQ kW ' + r:>22}" for r in regs)
        lines.append(head)
        for k, row in enumerate(rows):
            for ropf in ("N", "Y"):
                for j, tr in enumerate(row["trades"]):
                    loss = tr["loss_kw"] if ropf == "Y" else tr["loss_kw_without_ropf"]
                    tot = row["total_kw"] if ropf == "Y" else row["total_kw_without_ropf"]
                    line = (
                        f"{row['interval'] if j == 0 and ropf == 'N' else '':<8} "
                        f"{ropf if j == 0 else '':<5} {tr['trade']:<5} {loss:>11.3f} "
                        f"{tot if j == 0 else '':>9}"
                    )
                    if paper:
                        ref = f"{paper[k][ropf == 'Y']:.3f}" if j == 0 and k < len(paper) else ""
                        line += f" {ref:>8}"
                    if j == 0 and ropf == "Y":
                        for r in regs:
                            d = row["reactive"].get(r)
                            cell = _dq_cell(d)
                            line += f" {cell:>22}"
                    elif j == 0:
                        line += "".join(f" {'–':>22}" for _ in regs)
                    lines.append(line.rstrip() if j else line)
        if ph["ranking"]:
            lines.append(
                "  DSO ranking on chain (seed 002 Table 5): loss increase; sellers that break a "
                "limit are excluded"
            )
            for r in rep.ranking:
                lines.append(
                    f"    buyer bus {r['buyer_node']}: seller {r['seller']:<3} "
                    f"{r['loss_increase_ppm'] / 1e4:+7.2f} %"
                    f"{'  excluded: breaks a limit' if r['overloads'] else ''}"
                )
            for s in rep.selection:
                lines.append(
                    f"    {s['buyer']} ({s['trade']}, {s['power_kw'] / 1000:g} MW) "
                    f"bought from {s['seller']} — {s['status']}"
                )
    lines.append("")
    lines.append("Matches")
    for m in rep.matches:
        why = f" — {'; '.join(m['reasons'])}" if m["reasons"] else ""
        lines.append(
            f"  {m['match']:<4} {m['phase']:<6} {m['trade']:<4} {m['seller']:>5} -> "
            f"{m['buyer']:<4} {m['power_kw']:>9g} kW at {m['price_token_per_kwh']:g} "
            f"token/kWh: {m['status']}{why}"
        )
    lines.append("")
    lines.append("Tokens (1 token = 10^6 utoken), RECs held/retired, payments by kind")
    lines.append(
        f"  {'party':<6} {'start':>14} {'end':>14} {'ewh':>8} {'RECs':>9}  paid / received"
    )
    for p in rep.parties:
        paid = ", ".join(f"{k} {_t(v)}" for k, v in sorted(p["paid"].items()))
        got = ", ".join(f"{k} {_t(v)}" for k, v in sorted(p["received"].items()))
        lines.append(
            f"  {p['party']:<6} {_t(p['utoken_start']):>14} {_t(p['utoken']):>14} "
            f"{p['ewh']:>8} {p['recs']:>4}/{p['recs_retired']:<4}  {paid or '–'} / "
            f"{got or '–'}"
        )
    inv = rep.invariants
    lines.append(
        f"  supply utoken {inv['supply']['utoken']:,} = sum of balances "
        f"{inv['sum_of_balances']['utoken']:,}; ewh {inv['supply']['ewh']:,} = "
        f"{inv['sum_of_balances']['ewh']:,}; negative balances: "
        f"{inv['negative_balances']}; settlements {inv['settlements']}; "
        f"escrow left {inv['escrow_left_utoken']}; unpaid {inv['shortfall_utoken']}; "
        f"matches left uncertified {inv['pending_matches']}"
    )
    lines += day_ahead.render(rep.day_ahead)
    lines += dr_phase.render(rep.dr)
    c = rep.chain
    lines.append("")
    lines.append(
        f"Chain {c['chain_id']}: height {c['height']}, {c['txs']} transactions "
        f"(active {c['records']['active']}, loss {c['records']['loss']}, reactive "
        f"{c['records']['reactive']}, other {c['records']['other']})"
    )
    for t, r in c["last_roots"].items():
        lines.append(f"  last {t}-power root: {r}")
    lines.append(f"  last block {c['last_block_hash'][:16]}…  state root {c['app_hash'][:16]}…")
    a = rep.audit
    verdict = (
        "PASSED" if a.get("ok") else f"FAILED at height {a.get('bad_height')}: {a.get('problem')}"
    )
    lines.append(
        f"Audit (gridledger verify): {verdict} — {a.get('blocks')} blocks, "
        f"{a.get('txs')} txs replayed in {a.get('seconds', 0):.2f} s"
    )
    return "\n".join(lines)


# --- HTML ---------------------------------------------------------------------------------------
def _plot(entries: list[dict[str, Any]], title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(entries), figsize=(4.2 * len(entries), 3.2), squeeze=False)
    for ax, e in zip(axes[0], entries, strict=True):
        buses = e["buses"] or list(range(1, len(e["vm_pu"]) + 1))
        ax.plot(buses, e["vm_pu_without_ropf"], "o--", label="without R-OPF")
        ax.plot(buses, e["vm_pu"], "s-", label="with R-OPF")
        ax.set_title(f"{title}, {e['interval']}", fontsize=9)
        ax.set_xlabel("bus")
        ax.set_ylabel("voltage (pu)")
        ax.set_xticks(buses)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    h = "".join(f"<th>{html.escape(str(x))}</th>" for x in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in r) + "</tr>" for r in rows
    )
    return f"<table><tr>{h}</tr>{body}</table>"


def write_html(rep: Report, plan: dict[str, Any], text: str, path: Path) -> Path:
    parts = [
        "<!doctype html><meta charset='utf-8'><title>gridledger demo</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:3px 8px;text-align:right}pre{background:#f6f6f6;padding:1em;"
        "overflow-x:auto}</style>",
        "<h1>gridledger demo: the energy market end to end</h1>",
    ]
    for ph in plan["phases"]:
        parts.append(f"<h2>{html.escape(ph['title'])}</h2>")
        regs = list(ph["regulators"].values())
        rows = []
        for row in rep.table3.get(ph["key"], []):
            for ropf in ("N", "Y"):
                for j, tr in enumerate(row["trades"]):
                    loss = tr["loss_kw"] if ropf == "Y" else tr["loss_kw_without_ropf"]
                    tot = row["total_kw"] if ropf == "Y" else row["total_kw_without_ropf"]
                    cells = [
                        row["interval"] if j == 0 else "",
                        ropf if j == 0 else "",
                        tr["trade"],
                        f"{loss:.3f}",
                        f"{tot:.3f}" if j == 0 else "",
                    ]
                    for r in regs:
                        d = row["reactive"].get(r) if ropf == "Y" and j == 0 else None
                        cells.append(_dq_cell(d))
                    rows.append(cells)
        parts.append(
            _table(
                [
                    "interval",
                    "R-OPF",
                    "trade",
                    "ΔP_Gi,Li [kW]",
                    "ΔPtot [kW]",
                    *[f"ΔQ [kvar] / ΔPQ [kW] {r}" for r in regs],
                ],
                rows,
            )
        )
        if ph["ranking"]:
            parts.append(
                _table(
                    ["buyer bus", "seller", "loss increase [%]", "excluded (a limit broken)"],
                    [
                        [
                            r["buyer_node"],
                            r["seller"],
                            f"{r['loss_increase_ppm'] / 1e4:.2f}",
                            "yes" if r["overloads"] else "no",
                        ]
                        for r in rep.ranking
                    ],
                )
            )
            parts.append(
                _table(
                    ["buyer", "trade", "seller chosen", "status"],
                    [[s["buyer"], s["trade"], s["seller"], s["status"]] for s in rep.selection],
                )
            )
        volts = rep.voltages.get(ph["key"])
        if volts:
            png = _plot(volts, ph["key"])
            alt = f"voltage profiles {ph['key']}"
            parts.append(f"<img alt='{alt}' src='data:image/png;base64,{png}'>")
    parts.append("<h2>Tokens and payments</h2>")
    parts.append(
        _table(
            ["party", "utoken at start", "utoken at end", "ewh", "RECs", "paid", "received"],
            [
                [
                    p["party"],
                    f"{p['utoken_start']:,}",
                    f"{p['utoken']:,}",
                    p["ewh"],
                    p["recs"],
                    ", ".join(f"{k} {v:,}" for k, v in sorted(p["paid"].items())),
                    ", ".join(f"{k} {v:,}" for k, v in sorted(p["received"].items())),
                ]
                for p in rep.parties
            ],
        )
    )
    parts.append("<h2>Full text report</h2><pre>" + html.escape(text) + "</pre>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path

"""The community run's report: a text table (one row per slot, then the invariants) and an HTML
page with plots (matplotlib PNGs embedded as base64, so the file stands alone)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

UTOKEN_PER_TOKEN = 1_000_000


def text_report(r: dict[str, Any]) -> str:
    lines = [
        f"community on {r['grid']}: {r['prosumers']} prosumers, {r['buses']} buses, "
        f"{r['slots']} slots in {r['wall_s']:.1f} s ({r['realtime_factor']:g}x real time)",
        f"strategy: {r['strategy']}; profiles: {r['profiles']}",
        "",
        f"{'slot':>4} {'time':>5} {'trades':>6} {'P2P kWh':>9} {'grid kWh':>9} "
        f"{'loss kW N':>9} {'loss kW Y':>9} {'Vmin':>7} {'Vmax':>7} {'line %':>7}  "
        f"{'energy tok':>10} {'loss tok':>8} {'react tok':>9} {'pen tok':>8}  refusals",
    ]
    for s in r["per_slot"]:
        f = s["token_flows_utoken"]
        refused = ", ".join(f"{k} {v}" for k, v in sorted(s["refusals"].items())) or "-"
        orders = s.get("orders_refused") or {}
        if orders:
            refused += "; orders: " + ", ".join(f"{k} {v}" for k, v in sorted(orders.items()))
        lines.append(
            f"{s['slot']:>4} {s['time']:>5} {s['trades']:>6} {s['p2p_kwh']:>9.2f} "
            f"{s['grid_kwh']:>9.2f} {_f(s['loss_kw_before_ropf'], 9, 3)} "
            f"{_f(s['loss_kw_after_ropf'], 9, 3)} {_f(s['vm_min_pu'], 7, 4)} "
            f"{_f(s['vm_max_pu'], 7, 4)} {_f(s['most_loaded_pct'], 7, 1)}  "
            f"{f['energy'] / UTOKEN_PER_TOKEN:>10.4f} {f['loss'] / UTOKEN_PER_TOKEN:>8.4f} "
            f"{f['reactive'] / UTOKEN_PER_TOKEN:>9.6f} {f['penalty'] / UTOKEN_PER_TOKEN:>8.4f}  "
            f"{refused}"
        )
    lines.append("")
    lines.append("most loaded line per slot: " + ", ".join(
        f"{s['slot']}: {s['most_loaded_line']}" for s in r["per_slot"][:8]
    ) + (" …" if len(r["per_slot"]) > 8 else ""))  # fmt: skip
    lines.append("invariants:")
    for name, ok in r["invariants"].items():
        lines.append(f"  {'ok  ' if ok else 'FAIL'} {name.replace('_', ' ')}")
    return "\n".join(lines)


def _f(x: float | None, width: int, nd: int) -> str:
    return f"{'-':>{width}}" if x is None else f"{x:>{width}.{nd}f}"


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return base64.b64encode(buf.getvalue()).decode()


def plots(r: dict[str, Any]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = r["per_slot"]
    x = [s["slot"] for s in rows]
    out = []
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.bar(x, [s["p2p_kwh"] for s in rows], label="peer to peer")
    ax.bar(x, [s["grid_kwh"] for s in rows], bottom=[s["p2p_kwh"] for s in rows],
           label="from the grid (retailer)")  # fmt: skip
    ax.set(xlabel="slot", ylabel="kWh", title="Energy bought per slot")
    ax.legend()
    fig.tight_layout()
    out.append(("energy per slot", _png(fig)))
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(8, 3.2))
    nan = float("nan")
    ax.plot(x, [s["loss_kw_before_ropf"] or nan for s in rows], "o-", label="without R-OPF")
    ax.plot(x, [s["loss_kw_after_ropf"] or nan for s in rows], "s-", label="with R-OPF")
    ax.set(xlabel="slot", ylabel="kW", title="Network losses")
    ax.legend()
    fig.tight_layout()
    out.append(("losses", _png(fig)))
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.fill_between(x, [s["vm_min_pu"] or nan for s in rows],
                    [s["vm_max_pu"] or nan for s in rows], alpha=0.4)  # fmt: skip
    ax.set(xlabel="slot", ylabel="pu", title="Bus voltage range")
    ax2 = ax.twinx()
    ax2.plot(x, [s["most_loaded_pct"] or nan for s in rows], "r.-")
    ax2.set_ylabel("most loaded line, %", color="r")
    fig.tight_layout()
    out.append(("voltages and loading", _png(fig)))
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(8, 3.2))
    bottom = [0.0] * len(rows)
    for kind in ("energy", "loss", "reactive", "penalty"):
        vals = [s["token_flows_utoken"][kind] / UTOKEN_PER_TOKEN for s in rows]
        ax.bar(x, vals, bottom=bottom, label=kind)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set(xlabel="slot", ylabel="token", title="Settlement payments per slot")
    ax.legend()
    fig.tight_layout()
    out.append(("token flows", _png(fig)))
    plt.close(fig)
    return out


def write_html(r: dict[str, Any], path: Path) -> None:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>gridledger community</title>",
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 6px;text-align:right}"
        "table{border-collapse:collapse}tr:nth-child(even){background:#f3f3f3}</style>",
        "</head><body>",
        f"<h1>Community on {html.escape(r['grid'])}</h1>",
        f"<p>{r['prosumers']} prosumers, {r['buses']} buses, {r['slots']} slots of 15 minutes, "
        f"{r['wall_s']:.1f} s wall ({r['realtime_factor']:g}× real time). "
        f"Strategy: {html.escape(r['strategy'])}. Profiles: {html.escape(r['profiles'])}.</p>",
        "<h2>Invariants</h2><ul>",
    ]
    for name, ok in r["invariants"].items():
        parts.append(f"<li>{'✔' if ok else '✘ FAILED'} {html.escape(name.replace('_', ' '))}</li>")
    parts.append("</ul>")
    for alt, png in plots(r):
        parts.append(
            f"<h2>{html.escape(alt)}</h2><img alt='{alt}' src='data:image/png;base64,{png}'>"
        )
    parts.append("<h2>Per slot</h2><table><tr>")
    heads = ["slot", "time", "trades", "P2P kWh", "grid kWh", "loss kW without R-OPF",
             "loss kW with R-OPF", "V min", "V max", "most loaded line", "%", "refusals",
             "energy", "loss", "reactive", "penalty (utoken)"]  # fmt: skip
    parts += [f"<th>{h}</th>" for h in heads] + ["</tr>"]
    for s in r["per_slot"]:
        f = s["token_flows_utoken"]
        cells = [s["slot"], s["time"], s["trades"], s["p2p_kwh"], s["grid_kwh"],
                 s["loss_kw_before_ropf"], s["loss_kw_after_ropf"], s["vm_min_pu"],
                 s["vm_max_pu"], s["most_loaded_line"], s["most_loaded_pct"],
                 ", ".join(f"{k} {v}" for k, v in sorted(s["refusals"].items())) or "-",
                 f["energy"], f["loss"], f["reactive"], f["penalty"]]  # fmt: skip
        parts.append(
            "<tr>"
            + "".join(f"<td>{html.escape(str('-' if c is None else c))}</td>" for c in cells)
            + "</tr>"
        )
    parts.append("</table></body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))

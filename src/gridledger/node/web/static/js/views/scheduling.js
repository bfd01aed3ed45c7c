// Scheduling: an ADMM round of the aggregator contract (S1) and its bills (S2), from chain state.
import * as api from "../api.js";
import { $, fill, fitChart, h, setOptions, table, tokens } from "../util.js";

let plot = null;

export function init() {
  $("#sched-round").addEventListener("change", () => refresh());
}

export async function refresh() {
  const rounds = (await api.list("admm/")).map((x) => x.key).filter((k) => k.endsWith("/state"))
    .map((k) => k.slice(5, -6));
  const sel = $("#sched-round");
  setOptions(sel, rounds.map((r) => [r, r]), "no ADMM round on this chain");
  if (!rounds.length) {
    $("#sched-info").textContent = "";
    return;
  }
  const rid = sel.value;
  const st = await api.state(`admm/${rid}/state`);
  const schedule = await api.state(`admm/${rid}/schedule`);
  $("#sched-info").textContent = `round ${rid}: ${st.status}, iteration ${st.k}` +
    (schedule ? `; schedule fixed after ${schedule.iterations} iterations (primal ${schedule.primal}, dual ${schedule.dual} in the contract's integer units)` : "");
  const hist = st.history;
  const el = $("#sched-chart");
  plot?.destroy();
  plot = null;
  el.replaceChildren();
  if (hist.length) {
    plot = fitChart(el, (width) => new uPlot({
      width, height: 240,
      series: [{ label: "iteration" }, { label: "primal residual", stroke: "#0b5cad" }, { label: "dual residual", stroke: "#d95f02" }],
      scales: { x: { time: false }, y: { distr: 3 } },
      axes: [{ label: "iteration" }, { label: "residual (log)", size: 70, values: (u, vals) => vals.map((v) => (v == null ? "" : v.toExponential(0))) }],
    }, [hist.map((r) => r[0]), hist.map((r) => Math.max(r[1], 1)), hist.map((r) => Math.max(r[2], 1))], el));
  }
  if (schedule) {
    const hours = schedule.dlmp_utoken_per_kwh[0]?.length ?? 0;
    const cols = [{ label: "node", num: true, get: (i) => i }];
    for (let t = 0; t < hours; t++) cols.push({ label: `h${t}`, num: true, get: (i) => (schedule.dlmp_utoken_per_kwh[i][t] / 1e6).toFixed(4) });
    fill("#sched-dlmp", h("div", {}, h("p", { class: "hint" }, "token/kWh"), table(cols, schedule.dlmp_utoken_per_kwh.map((_, i) => i))));
  } else {
    fill("#sched-dlmp", h("p", { class: "hint" }, "the round has no schedule yet"));
  }
  const bills = await api.list(`bill/${rid}/`);
  const per = new Map();
  for (const { key, value } of bills) {
    const parts = key.split("/");
    if (parts.length !== 4) continue; // bill/<round>/<node>/<hour>
    const a = per.get(Number(parts[2])) ?? { hours: 0, wh: 0, energy: 0, penalty: 0, net: 0 };
    a.hours += 1; a.wh += value.metered_wh; a.energy += value.energy_utoken; a.penalty += value.penalty_utoken; a.net += value.net_utoken;
    per.set(Number(parts[2]), a);
  }
  const nodes = [...per.keys()].sort((a, b) => a - b);
  fill("#sched-bills", table([
    { label: "node", num: true, get: (n) => n },
    { label: "hours billed", num: true, get: (n) => per.get(n).hours },
    { label: "metered kWh", num: true, get: (n) => (per.get(n).wh / 1000).toFixed(1) },
    { label: "energy token", num: true, get: (n) => tokens(per.get(n).energy) },
    { label: "penalty token", num: true, get: (n) => tokens(per.get(n).penalty) },
    { label: "net token", num: true, get: (n) => tokens(per.get(n).net) },
  ], nodes, "no bills yet"));
}

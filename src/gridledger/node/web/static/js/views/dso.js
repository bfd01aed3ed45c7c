// DSO: the network of a certificate's interval, coloured by bus voltage and line loading before
// and after the R-OPF; the interval's certificates, set-points, loss shares, reactive payments.
import * as api from "../api.js";
import { $, fill, h, kw, localTime, setOptions, short, table, tokens } from "../util.js";

// Bus colour: a diverging scale (ColorBrewer RdYlBu ends) over the deviation from 1 pu,
// t = clamp((v - 1) / 0.02, -1, 1); red at -2 %, pale yellow at 1 pu, blue at +2 %
// (docs/ui.md states the same formula; the browser tests recompute it from the certificate).
export const LOW = [215, 48, 39], MID = [255, 255, 191], HIGH = [69, 117, 180], SPAN_PU = 0.02;
export function voltageColour(v) {
  const t = Math.max(-1, Math.min(1, (v - 1) / SPAN_PU));
  const end = t < 0 ? LOW : HIGH;
  const a = Math.abs(t);
  const c = MID.map((m, i) => Math.floor(m + (end[i] - m) * a + 0.5));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}
// Line colour by loading (% of rating): bands, grey where the document has no loading.
export function loadingColour(pct) {
  if (pct === undefined || pct === null) return "rgb(153,153,153)";
  if (pct < 50) return "rgb(26,152,80)";
  if (pct < 80) return "rgb(253,174,97)";
  if (pct <= 100) return "rgb(244,109,67)";
  return "rgb(165,0,38)";
}

let cy = null;
let doc = null;
let drawn = null;

export function init() {
  $("#dso-match").addEventListener("change", () => loadDocument());
  $("#dso-interval").addEventListener("change", () => draw());
  for (const r of document.querySelectorAll('input[name="dso-ropf"]')) r.addEventListener("change", () => draw());
  $("#dso-legend").replaceChildren(
    ...[0.98, 0.99, 1.0, 1.01, 1.02].map((v) => h("span", {}, h("span", { class: "swatch", style: `background:${voltageColour(v)}` }), `${v.toFixed(3)} pu`)),
    ...[["< 50 %", 10], ["50–80 %", 60], ["80–100 %", 90], ["> 100 %", 120]].map(([t, p]) => h("span", {}, h("span", { class: "swatch", style: `background:${loadingColour(p)}` }), `line ${t}`)));
}

export async function refresh() {
  const matches = (await api.list("market/match/")).map((x) => x.value)
    .filter((m) => m.status !== "pending");
  const sel = $("#dso-match");
  const wanted = !sel.dataset.sig && location.hash.split("/")[1];
  setOptions(sel, matches.map((m) => [m.match.match_id,
    `${m.match.match_id} · ${kw(m.match.power_w)} kW bus ${m.match.seller_node}→${m.match.buyer_node} · ${localTime(m.match.start_ms)} · ${m.status}`]),
  "no certificates yet");
  if (wanted && matches.some((m) => m.match.match_id === wanted)) sel.value = wanted;
  if (sel.value && sel.value !== doc?.match_id) await loadDocument();
  else if (doc) await drawTables(); // new certificates, payments; the map stays as it is
}

async function loadDocument() {
  $("#dso-error").textContent = "";
  const mid = $("#dso-match").value;
  if (!mid) return;
  try {
    doc = await api.certificateDocument(mid);
  } catch (e) {
    doc = null;
    $("#dso-error").textContent = e.message;
    return;
  }
  $("#dso-digest").textContent = doc.digest_ok
    ? `certificate document ${short(doc.digest, 16)} matches the digest on chain`
    : `WARNING: the document's digest ${short(doc.digest, 16)} differs from the one on chain (${short(doc.on_chain_digest, 16)})`;
  $("#dso-interval").replaceChildren(...doc.document.intervals.map((iv, i) =>
    h("option", { value: i }, `from ${localTime(iv.from_ms)} (${iv.trades.join(", ")})`)));
  await draw();
}

async function draw() {
  if (!doc) return;
  const iv = doc.document.intervals[Number($("#dso-interval").value || 0)];
  const ev = iv.evaluation;
  const before = document.querySelector('input[name="dso-ropf"]:checked').value === "before";
  const vm = before ? ev.bus_vm_pu_without_ropf : ev.bus_vm_pu;
  const loading = before ? {} : ev.line_loading_pct; // the document records loadings after R-OPF only
  const grid = await api.grid(ev.network);
  const gens = new Map(grid.gens.map((g) => [g.bus, g.name]));
  const elements = [
    ...grid.buses.map((b) => ({ data: { id: String(b.id), label: `${b.id}${gens.has(b.id) ? " " + gens.get(b.id) : ""}\n${vm[String(b.id)]?.toFixed(4) ?? "?"} pu`, colour: vm[String(b.id)] === undefined ? "rgb(200,200,200)" : voltageColour(vm[String(b.id)]) },
      position: grid.geodata ? { x: grid.geodata[b.id][0], y: grid.geodata[b.id][1] } : undefined })),
    ...grid.lines.map((l, i) => ({ data: { id: `l${i}`, source: String(l.from), target: String(l.to), name: l.name, colour: loadingColour(loading[l.name]), label: loading[l.name] === undefined ? "" : `${loading[l.name].toFixed(0)} %` } })),
  ];
  cy?.destroy();
  cy = cytoscape({
    container: $("#dso-map"),
    elements,
    style: [
      { selector: "node", style: { "background-color": "data(colour)", label: "data(label)", "text-wrap": "wrap", "font-size": 11, "border-width": 1, "border-color": "#333", width: 28, height: 28, "text-valign": "bottom" } },
      { selector: "edge", style: { "line-color": "data(colour)", width: 4, label: "data(label)", "font-size": 9, "text-background-color": "#fff", "text-background-opacity": 0.8 } },
    ],
    layout: grid.geodata ? { name: "preset" } : { name: "breadthfirst", roots: [String(grid.slack_bus)], directed: false, spacingFactor: 1.1 },
    userZoomingEnabled: false,
    boxSelectionEnabled: false,
  });
  window.gridledgerMap = cy; // for inspection (and the browser tests)
  drawn = { match: doc.match_id, from_ms: iv.from_ms, before };
  $("#dso-map").dataset.drawn = JSON.stringify(drawn);
  fill("#dso-buses", table([
    { label: "bus", get: (b) => `${b.id}${gens.has(b.id) ? " (" + gens.get(b.id) + ")" : ""}` },
    { label: "V (pu)", num: true, get: (b) => h("span", { "data-testid": `vm-${b.id}` }, vm[String(b.id)]?.toFixed(5) ?? "–") },
    { label: "colour", get: (b) => h("span", { class: "swatch", "data-testid": `colour-${b.id}`, "data-colour": voltageColour(vm[String(b.id)]), style: `background:${voltageColour(vm[String(b.id)])}` }) },
  ], grid.buses));
  await drawTables();
}

async function drawTables() {
  const iv = doc.document.intervals[Number($("#dso-interval").value || 0)];
  const records = new Map((await api.list("market/match/")).map((x) => [x.value.match.match_id, x.value]));
  fill("#dso-certs", table([
    { label: "match", get: (id) => id },
    { label: "trade", get: (id) => { const m = records.get(id)?.match; return m ? `${kw(m.power_w)} kW bus ${m.seller_node}→${m.buyer_node}` : "?"; } },
    { label: "verdict", get: (id) => { const r = records.get(id); return r ? r.status + (r.reasons.length ? `: ${r.reasons.join("; ")}` : "") : "?"; } },
    { label: "certificate tx", get: (id) => h("span", { class: "mono" }, short(records.get(id)?.certificate)) },
  ], iv.trades));
  const reactive = await api.state(`market/reactive/${doc.match_id}`);
  const paid = [];
  for (const d of await api.list(`settle/done/${doc.match_id}/`)) {
    for (const p of d.value.payments) if (p.kind === "reactive") paid.push({ ...p, slot: d.value.slot_start_ms });
  }
  const paidBy = (acct) => paid.filter((p) => p.payee === acct).reduce((s, p) => s + p.amount, 0);
  fill("#dso-setpoints", table([
    { label: "node", num: true, get: (s) => s.node },
    { label: "Q kvar", num: true, get: (s) => kw(s.q_var) },
    { label: "ΔQ kvar", num: true, get: (s) => kw(s.delta_q_var) },
    { label: "ΔPQ kW", num: true, get: (s) => kw(s.delta_pq_w) },
    { label: "token/slot", num: true, get: (s) => tokens(s.utoken_per_slot) },
    { label: "reactive paid so far", num: true, get: (s) => tokens(paidBy(s.account)) },
  ], reactive?.setpoints ?? [], "no set-points for this match"));
  const lossrec = await api.state(`market/lossrec/${iv.from_ms}`);
  fill("#dso-losses", lossrec ? h("div", {},
    h("p", {}, `total losses ${kw(lossrec.total_loss_w)} kW with R-OPF, ${kw(lossrec.total_loss_w_without_ropf ?? 0)} kW without`),
    table([
      { label: "match", get: (s) => s.match_id },
      { label: "loss share kW (R-OPF)", num: true, get: (s) => kw(s.loss_w) },
      { label: "without R-OPF", num: true, get: (s) => kw(s.loss_w_without_ropf ?? 0) },
    ], lossrec.shares)) : h("p", { class: "hint" }, "no loss record from this instant (rejected trade)"));
}

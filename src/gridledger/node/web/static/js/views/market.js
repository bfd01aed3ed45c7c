// Market: the open order book per slot, and matched prices and volumes per slot over time.
import * as api from "../api.js";
import { $, fill, fitChart, h, kw, localTime, powerAt, setOptions, short, table, tokens } from "../util.js";

let plot = null;

export function init() {
  $("#book-slot").addEventListener("change", () => refresh());
}

function slotsOf(o, slot) {
  const out = [];
  for (let s = o.start_ms; s < o.end_ms && out.length < 2000; s += slot) out.push(s);
  return out;
}

// a bid's open power in slot s: per-slot remainders once filled per slot, else one number
function bidOpen(left, b, s, slot) {
  if (left instanceof Map) return left.get(s) ?? powerAt(b, s, slot);
  return left ?? b.power_w;
}

export async function refresh() {
  const book = await api.book();
  const slot = book.params.slot_ms;
  const left = new Map((book.offer_left_w ?? []).map(([id, rows]) => [id, new Map(rows)]));
  const bidLeft = new Map(book.bid_left_w ?? []);
  const slots = [...new Set([...book.offers, ...book.bids].flatMap((o) => slotsOf(o, slot)))].sort((a, b) => a - b);
  const sel = $("#book-slot");
  setOptions(sel, slots.map((x) => [String(x), localTime(x)]), "no open orders");
  const s = Number(sel.value);
  const rows = [
    ...book.offers.filter((o) => o.start_ms <= s && s < o.end_ms)
      .map((o) => ({ side: "offer", id: o.offer_id, node: o.node, w: left.get(o.offer_id)?.get(s) ?? powerAt(o, s, slot), price: o.price_utoken_per_kwh })),
    ...book.bids.filter((b) => b.start_ms <= s && s < b.end_ms)
      .map((b) => ({ side: "bid", id: b.bid_id, node: b.node, w: bidOpen(bidLeft.get(b.bid_id), b, s, slot), price: b.max_price_utoken_per_kwh })),
  ].sort((a, b) => a.side.localeCompare(b.side) || a.price - b.price);
  fill("#book", table([
    { label: "side", get: (r) => r.side },
    { label: "order", get: (r) => h("span", { class: "mono" }, short(r.id)) },
    { label: "bus", num: true, get: (r) => r.node },
    { label: "kW open", num: true, get: (r) => kw(r.w) },
    { label: "token/kWh", num: true, get: (r) => tokens(r.price) },
  ], rows, "the book is empty for this slot"));

  // matched volume and volume-weighted price per slot (matches that were not rejected)
  const matches = (await api.list("market/match/")).map((x) => x.value).filter((m) => m.status !== "rejected");
  const per = new Map();
  for (const m of matches) {
    for (const s2 of slotsOf(m.match, slot)) {
      const a = per.get(s2) ?? { w: 0, money: 0, n: 0 };
      const w = powerAt(m.match, s2, slot);
      a.w += w; a.money += w * m.match.price_utoken_per_kwh; a.n += 1;
      per.set(s2, a);
    }
  }
  const xs = [...per.keys()].sort((a, b) => a - b);
  const vol = xs.map((x) => per.get(x).w / 1000);
  const price = xs.map((x) => per.get(x).money / per.get(x).w / 1e6);
  fill("#market-table", table([
    { label: "slot (local)", get: (x) => localTime(x) },
    { label: "trades", num: true, get: (x) => per.get(x).n },
    { label: "kW matched", num: true, get: (x) => kw(per.get(x).w) },
    { label: "avg token/kWh", num: true, get: (x) => (per.get(x).money / per.get(x).w / 1e6).toFixed(4) },
  ], xs, "no matches yet"));
  const el = $("#market-chart");
  plot?.destroy();
  plot = null;
  el.replaceChildren();
  if (!xs.length) return;
  plot = fitChart(el, (width) => new uPlot({
    width, height: 240,
    series: [{}, { label: "token/kWh", stroke: "#0b5cad", scale: "p", points: { show: true } },
      { label: "kW", stroke: "#d95f02", scale: "kw", paths: uPlot.paths.stepped({ align: 1 }) }],
    axes: [{}, { scale: "p", label: "token/kWh" }, { scale: "kw", side: 1, label: "kW", grid: { show: false } }],
    scales: { x: { time: true } },
  }, [xs.map((x) => x / 1000), price, vol], el));
}

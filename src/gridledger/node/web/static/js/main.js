// Routing between the views (#prosumer, #market, ...) and live updates from /events (SSE).
import * as api from "./api.js";
import { $, h } from "./util.js";
import * as prosumer from "./views/prosumer.js";
import * as market from "./views/market.js";
import * as dso from "./views/dso.js";
import * as scheduling from "./views/scheduling.js";
import * as explorer from "./views/explorer.js";

const VIEWS = { prosumer, market, dso, scheduling, explorer };
export const chain = { id: null, height: 0, timeMs: 0 };
let current = null;
let refreshTimer = null;

function viewName() {
  const name = location.hash.replace("#", "").split("/")[0];
  return name in VIEWS ? name : "prosumer";
}

async function show() {
  const name = viewName();
  for (const [n] of Object.entries(VIEWS)) {
    $(`#view-${n}`).hidden = n !== name;
    const link = document.querySelector(`nav a[data-view="${n}"]`);
    if (n === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (current !== name) {
    current = name;
    await refresh();
  }
}

let refreshing = null;
let again = false;

// One refresh at a time; blocks arriving meanwhile cause one more afterwards, not one each.
async function refresh() {
  if (refreshing) { again = true; return refreshing; }
  refreshing = (async () => {
    do {
      again = false;
      try {
        await VIEWS[current].refresh(chain);
      } catch (e) {
        live(`could not refresh the ${current} view: ${e.message}`);
      }
    } while (again);
  })();
  try { await refreshing; } finally { refreshing = null; }
}

export function live(text) {
  const ul = $("#live");
  ul.prepend(h("li", {}, `${new Date().toLocaleTimeString()} ${text}`));
  while (ul.children.length > 50) ul.lastChild.remove();
}

function describe(ev) {
  const seen = [];
  for (const t of ev.txs) {
    for (const e of t.events) {
      const a = e.attributes;
      if (e.type === "market.matched") seen.push(`match ${a.match}: ${Number(a.power_w) / 1000} kW`);
      else if (e.type === "market.certified") seen.push(`certificate ${a.match}: ${a.verdict}`);
      else if (e.type === "settlement.settled") seen.push(`settled ${a.match}`);
    }
  }
  return seen;
}

function setStatus() {
  $("#chain-status").textContent =
    `${chain.id} · height ${chain.height} · block time ${new Date(chain.timeMs).toLocaleString()}`;
}

function connect() {
  const es = new EventSource(`events?since=${chain.height}`);
  es.addEventListener("block", (msg) => {
    const ev = JSON.parse(msg.data);
    chain.height = ev.height;
    chain.timeMs = ev.time_ms;
    setStatus();
    const seen = describe(ev);
    live(`block ${ev.height}: ${ev.txs.length} tx${seen.length ? " — " + seen.join("; ") : ""}`);
    // throttled, not debounced: with blocks closer together than the delay a debounce would
    // never fire; this refreshes at most every 300 ms while blocks keep coming
    if (!refreshTimer) refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, 300);
  });
  es.onerror = () => { $("#chain-status").textContent += " · reconnecting…"; };
}

async function start() {
  const st = await api.status();
  chain.id = st.chain_id;
  chain.height = st.height;
  chain.timeMs = st.last_time_ms || 0;
  setStatus();
  for (const v of Object.values(VIEWS)) v.init?.(chain);
  window.addEventListener("hashchange", show);
  await show();
  connect();
  document.body.dataset.ready = "1";
}

start().catch((e) => { $("#chain-status").textContent = `cannot reach the node: ${e.message}`; });

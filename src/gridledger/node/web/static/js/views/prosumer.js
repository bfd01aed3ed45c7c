// Prosumer: import a key (kept in memory), sign orders in the browser, follow them to payment.
import * as api from "../api.js";
import { $, fill, h, kwShown, localTime, short, table, timeZoneName, toLocalInput, tokens } from "../util.js";
import { KeyFileError, parseKeyFile, signTx } from "../wallet.js";

// market/orders.py bounds (MAX_PRICE_UTOKEN_PER_KWH, MAX_POWER_W, MAX_WINDOW_MS)
const MAX_PRICE_TOKEN = 1e6;
const MAX_POWER_KW = 1e7;
const MAX_WINDOW_MS = 7 * 24 * 3600 * 1000;
let key = null;
let member = null;
let chainRef = null;

export function init(chain) {
  chainRef = chain;
  $(".tz").textContent = timeZoneName();
  $("#keyfile").addEventListener("change", onKeyFile);
  $("#order-kind").addEventListener("change", () => {
    for (const e of document.querySelectorAll(".offer-only")) e.hidden = $("#order-kind").value !== "offer";
  });
  $("#order-form").addEventListener("submit", onSubmit);
}

async function onKeyFile(ev) {
  $("#key-error").textContent = "";
  const file = ev.target.files[0];
  if (!file) return;
  try {
    if (file.size > 64 * 1024) throw new KeyFileError("this file is far too large to be a key file");
    key = parseKeyFile(await file.text());
  } catch (e) {
    key = null;
    $("#account").replaceChildren();
    $("#key-error").textContent = `Cannot use ${file.name}: ${e.message}`;
    return;
  }
  await refresh(chainRef);
}

async function slotMs() {
  const params = await api.state("market/params");
  return params?.slot_ms ?? 900000;
}

// Validate the form; returns [type, payload] or throws Error with what is wrong.
function readOrder(slot, nowMs) {
  const kind = $("#order-kind").value;
  const num = (id, what) => {
    const v = $(id).value.trim();
    if (v === "" || !Number.isFinite(Number(v))) throw new Error(`${what} is required (a number)`);
    return Number(v);
  };
  const powerKw = num("#order-power", "power");
  if (!(powerKw > 0 && powerKw <= MAX_POWER_KW)) {
    throw new Error(`power must be more than 0 and at most ${MAX_POWER_KW.toLocaleString()} kW, got ${powerKw}`);
  }
  const price = num("#order-price", "price");
  if (!(price >= 0 && price <= MAX_PRICE_TOKEN)) {
    throw new Error(`price must be between 0 and ${MAX_PRICE_TOKEN.toLocaleString()} token/kWh, got ${price}`);
  }
  const start = new Date($("#order-start").value).getTime(); // local time -> UTC instant
  const end = new Date($("#order-end").value).getTime();
  if (!Number.isFinite(start) || !Number.isFinite(end)) throw new Error("start and end times are required");
  if (start <= nowMs) throw new Error(`start ${localTime(start)} is not after the chain's time ${localTime(nowMs)}`);
  if (end <= start) throw new Error("end must be after start");
  if (end - start > MAX_WINDOW_MS) throw new Error("an order window is at most 7 days");
  if (start % slot || end % slot) {
    const next = Math.ceil(start / slot) * slot;
    throw new Error(`start and end must be on ${slot / 1000} s market slot boundaries (e.g. ${localTime(next)})`);
  }
  const common = { node: member.bus, power_w: Math.round(powerKw * 1000), start_ms: start, end_ms: end };
  const utoken = Math.round(price * 1e6);
  if (kind === "offer") {
    const reg = Number($("#order-reg").value || 0);
    if (!(reg >= 0 && reg <= MAX_POWER_KW)) throw new Error("reactive regulation must be 0 or more kvar");
    return ["market.offer", { ...common, price_utoken_per_kwh: utoken, regulation_var: Math.round(reg * 1000), green: $("#order-green").checked }];
  }
  return ["market.bid", { ...common, max_price_utoken_per_kwh: utoken }];
}

async function send(type, payload) {
  const acct = await api.account(key.pub);
  const raw = signTx(key, chainRef.id, acct.next_seq, type, payload);
  const res = await api.submit(raw);
  if (res.code !== 0) throw new Error(`the node refused the transaction: ${res.code_name}: ${res.log}`);
  $("#order-result").textContent = `submitted ${short(res.txid, 12)}; waiting for a block…`;
  const st = await api.waitCommitted(res.txid);
  if (st.code !== 0) throw new Error(`the transaction failed in block ${st.height}: ${st.code_name}: ${st.log}`);
  return st;
}

async function onSubmit(ev) {
  ev.preventDefault();
  $("#order-error").textContent = "";
  $("#order-result").textContent = "";
  if (!key) { $("#order-error").textContent = "Import your key file first."; return; }
  if (!member) { $("#order-error").textContent = "This key is not a registered member of the chain."; return; }
  let type, payload;
  try {
    const st = await api.status();
    [type, payload] = readOrder(await slotMs(), st.last_time_ms);
  } catch (e) {
    $("#order-error").textContent = e.message;
    return;
  }
  $("#order-submit").disabled = true;
  try {
    const st = await send(type, payload);
    $("#order-result").textContent = `${type === "market.offer" ? "offer" : "bid"} ${short(st.txid, 12)} placed in block ${st.height}`;
    await refresh(chainRef);
  } catch (e) {
    $("#order-error").textContent = e.message;
  } finally {
    $("#order-submit").disabled = false;
  }
}

async function cancel(orderId) {
  $("#order-error").textContent = "";
  try {
    await send("market.cancel", { order: orderId });
    $("#order-result").textContent = `order ${short(orderId, 12)} cancelled`;
    await refresh(chainRef);
  } catch (e) {
    $("#order-error").textContent = e.message;
  }
}

const window_ = (r) => `${localTime(r.start_ms)} – ${new Date(r.end_ms).toLocaleTimeString()}`;

export async function refresh(chain) {
  if (!key) return;
  const acct = await api.account(key.pub);
  member = acct.member;
  const recs = (await api.list("rec/")).filter((r) => r.value.owner === key.pub);
  fill("#account", h("div", {},
    h("dl", { class: "kv" },
      h("dt", {}, "account"), h("dd", { class: "mono", "data-testid": "pub" }, key.pub),
      h("dt", {}, "member"), h("dd", {}, member ? `${member.name} (${member.role}, bus ${member.bus}, ${member.status})` : "not registered on this chain"),
      h("dt", {}, "balance"), h("dd", { "data-testid": "balance" }, `${tokens(acct.balances.utoken)} token`),
      h("dt", {}, "energy tokens"), h("dd", {}, `${(acct.balances.ewh / 1000).toLocaleString()} kWh (ewh)`),
      h("dt", {}, "RECs"), h("dd", {}, `${recs.filter((r) => r.value.status !== "retired").length} held, ${recs.filter((r) => r.value.status === "retired").length} retired`))));
  if (!member) return;
  const slot = await slotMs();
  $("#slot-hint").textContent = `Market slots are ${slot / 1000} s long; times are your local time (${timeZoneName()}) and are stored on chain in UTC.`;
  if (!$("#order-start").value) {
    const next = Math.ceil((Math.max(chain.timeMs, Date.now()) + 2 * slot) / slot) * slot;
    $("#order-start").value = toLocalInput(next);
    $("#order-end").value = toLocalInput(next + slot);
  }
  const book = await api.book();
  const mine = [
    ...book.offers.filter((o) => o.seller === key.pub).map((o) => ({ ...o, id: o.offer_id, kind: "offer", price: o.price_utoken_per_kwh })),
    ...book.bids.filter((b) => b.buyer === key.pub).map((b) => ({ ...b, id: b.bid_id, kind: "bid", price: b.max_price_utoken_per_kwh })),
  ];
  fill("#my-orders", table([
    { label: "kind", get: (r) => r.kind },
    { label: "id", get: (r) => h("span", { class: "mono" }, short(r.id)) },
    { label: "kW", num: true, get: (r) => h("span", { "data-testid": `order-kw-${r.id.slice(0, 16)}` }, kwShown(r)) },
    { label: "token/kWh", num: true, get: (r) => tokens(r.price) },
    { label: "window (local)", get: window_ },
    { label: "", get: (r) => h("button", { class: "small", type: "button", "aria-label": `cancel ${r.kind} ${short(r.id)}`, onclick: () => cancel(r.id) }, "Cancel") },
  ], mine, "no open orders"));
  const matches = (await api.list("market/match/")).map((x) => x.value)
    .filter((m) => m.match.seller === key.pub || m.match.buyer === key.pub);
  fill("#my-matches", table([
    { label: "match", get: (m) => m.match.match_id },
    { label: "side", get: (m) => (m.match.seller === key.pub ? "sell" : "buy") },
    { label: "kW", num: true, get: (m) => kwShown(m.match) },
    { label: "token/kWh", num: true, get: (m) => tokens(m.match.price_utoken_per_kwh) },
    { label: "window (local)", get: (m) => window_(m.match) },
    { label: "certificate", get: (m) => h("span", { "data-testid": `status-${m.match.match_id}`, class: m.status === "rejected" ? "bad" : "" }, m.status + (m.reasons.length ? `: ${m.reasons.join("; ")}` : "")) },
  ], matches, "no matches yet"));
  // every settled slot: a regulator is paid reactive power for other parties' trades too
  const mineIds = new Set(matches.map((m) => m.match.match_id));
  const rows = [];
  for (const { value: d } of await api.list("settle/done/")) {
    for (const p of d.payments) {
      if (p.payer !== key.pub && p.payee !== key.pub) continue;
      rows.push({ ...p, match: d.match, slot: d.slot_start_ms, delivered: mineIds.has(d.match) ? d.delivered_wh : null });
    }
  }
  rows.sort((a, b) => a.slot - b.slot || a.match.localeCompare(b.match));
  fill("#my-payments", table([
    { label: "slot (local)", get: (r) => localTime(r.slot) },
    { label: "match", get: (r) => r.match },
    { label: "delivered kWh", num: true, get: (r) => (r.delivered === null ? "–" : (r.delivered / 1000).toLocaleString()) },
    { label: "kind", get: (r) => ({ energy: "energy", loss: "loss charge", reactive: "reactive pay", penalty: "penalty" })[r.kind] ?? r.kind },
    { label: "token", num: true, get: (r) => h("span", { "data-testid": `pay-${r.match}-${r.kind}` }, `${r.payee === key.pub ? "+" : "−"}${tokens(r.amount)}`) },
    { label: "shortfall", num: true, get: (r) => (r.shortfall ? tokens(r.shortfall) : "") },
  ], rows, "no deliveries settled yet"));
  fill("#my-recs", table([
    { label: "REC", get: (r) => h("span", { class: "mono" }, short(r.key.slice(4))) },
    { label: "kWh", num: true, get: (r) => (r.value.energy_wh / 1000).toLocaleString() },
    { label: "period (local)", get: (r) => window_(r.value) },
    { label: "status", get: (r) => r.value.status },
  ], recs, "no RECs"));
}

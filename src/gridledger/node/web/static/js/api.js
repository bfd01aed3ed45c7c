// The node's HTTP API (docs/api.md), same origin: served by the node or by `gridledger web`.
import { hexToBytes } from "./util.js";

export class NodeError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
  }
}

async function get(path, { allow404 = false } = {}) {
  // a bounded wait: a stalled request must not freeze the live refresh behind it
  const r = await fetch(path, { headers: { Accept: "application/json" }, signal: AbortSignal.timeout(15000) });
  if (allow404 && r.status === 404) return null;
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new NodeError(r.status, body?.detail ?? r.statusText);
  return body;
}

export const status = () => get("status");
export const block = (h) => get(h === undefined ? "blocks/latest" : `blocks/${h}`);
export const account = (pub) => get(`accounts/${pub}`);
export const txStatus = (id) => get(`txs/${id}`, { allow404: true });
export const txProof = (id) => get(`proofs/tx/${id}`);
export const grid = (name) => get(`web/grid/${encodeURIComponent(name)}`);
export const certificateDocument = (mid) => get(`web/certificates/${mid}`);

// One committed state value (decoded), or null when absent.
export async function state(key) {
  const r = await get(`state/${key}`, { allow404: true });
  if (!r || r.value === null) return null;
  return JSON.parse(new TextDecoder().decode(hexToBytes(r.value)));
}

// Every committed state entry under a prefix (read-only /web/state, paged).
export async function list(prefix, max = 5000) {
  const out = [];
  let after = "";
  while (out.length < max) {
    const q = new URLSearchParams({ prefix, limit: "500" });
    if (after) q.set("after", after);
    const page = await get(`web/state?${q}`);
    out.push(...page.items);
    if (!page.next) break;
    after = page.next;
  }
  return out;
}

// The open order book as one object: every open order is its own record `market/order/<id>`
// (chain/contracts/market_book.py); an offer keeps per-slot remainders only for matched slots,
// a bid its largest remainder (left_w) and, once filled per slot, per-slot remainders (left).
export async function book() {
  const params = (await state("market/params")) ?? { slot_ms: 900000 };
  const out = { offers: [], bids: [], offer_left_w: [], bid_left_w: [], params };
  for (const { value: r } of await list("market/order/")) {
    if (r.offer) {
      out.offers.push(r.offer);
      out.offer_left_w.push([r.offer.offer_id, r.left]);
    } else if (r.bid) {
      out.bids.push(r.bid);
      out.bid_left_w.push([r.bid.bid_id, r.left ? new Map(r.left) : r.left_w]);
    }
  }
  return out;
}

// Submit signed wire bytes; resolves to the node's verdict {txid, code, code_name, log}.
export async function submit(rawHex) {
  const r = await fetch("txs", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ tx: rawHex }),
  });
  const body = await r.json().catch(() => ({}));
  if (r.status === 202 || (r.status === 400 && "code" in body)) return body;
  throw new NodeError(r.status, body.detail ?? r.statusText);
}

export async function waitCommitted(txid, timeoutMs = 30000) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const st = await txStatus(txid);
    if (st && st.status === "committed") return st;
    await new Promise((res) => setTimeout(res, 250));
  }
  throw new Error(`transaction ${txid.slice(0, 12)}… not committed after ${timeoutMs / 1000} s`);
}

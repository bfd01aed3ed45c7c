// Encoding and formatting helpers shared by the views.

export const enc = new TextEncoder();

export function hexToBytes(hex) {
  if (typeof hex !== "string" || hex.length % 2 || !/^[0-9a-f]*$/.test(hex)) {
    throw new Error("not a lowercase hex string");
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(2 * i, 2), 16);
  return out;
}

export function bytesToHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let i = 0;
  for (const p of parts) { out.set(p, i); i += p.length; }
  return out;
}

function byCodePoint(a, b) {
  const x = Array.from(a), y = Array.from(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0) - y[i].codePointAt(0);
    if (d) return d;
  }
  return x.length - y.length;
}

// The chain's canonical JSON (docs/encoding.md): keys sorted by code point, no whitespace,
// integers only, JSON's minimal escapes (JSON.stringify escapes exactly what Python's encoder
// does with ensure_ascii=False). Hand-written because it is twenty lines and must match the
// node byte for byte; the tests sign in the browser and the node checks the signature.
export function canon(v) {
  if (v === null) return "null";
  if (typeof v === "boolean") return v ? "true" : "false";
  if (typeof v === "number") {
    if (!Number.isSafeInteger(v)) throw new Error(`only integers go on chain, got ${v}`);
    return String(v);
  }
  if (typeof v === "string") return JSON.stringify(v);
  if (Array.isArray(v)) return "[" + v.map(canon).join(",") + "]";
  if (typeof v === "object") {
    return "{" + Object.keys(v).sort(byCodePoint)
      .map((k) => JSON.stringify(k) + ":" + canon(v[k])).join(",") + "}";
  }
  throw new Error(`cannot encode ${typeof v} on chain`);
}

export const $ = (sel) => document.querySelector(sel);

export function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

// A table from column specs [{label, get(row) -> text|Node, num?}] and rows.
export function table(columns, rows, empty = "nothing yet") {
  if (!rows.length) return h("p", { class: "hint" }, empty);
  return h("table", {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : "" }, c.label)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, columns.map((c) => h("td", { class: c.num ? "num" : "" }, c.get(r)))))));
}

export function fill(sel, node) {
  const e = typeof sel === "string" ? $(sel) : sel;
  e.replaceChildren(node);
}

export const short = (hex, n = 10) => (hex ? `${hex.slice(0, n)}…` : "");
export const tokens = (utoken) => (utoken / 1e6).toLocaleString(undefined, { maximumFractionDigits: 6 });
export const kw = (w) => (w / 1000).toLocaleString(undefined, { maximumFractionDigits: 3 });

// An order's or match's power in the slot starting at s: its profile's entry (profile_w, W per
// slot of the window; market/orders.py power_at), or its constant power_w.
export const powerAt = (o, s, slot) => (o.profile_w ? o.profile_w[Math.floor((s - o.start_ms) / slot)] : o.power_w);

// kW shown for an order or match: its profile, kW per slot, or its constant power.
export const kwShown = (o) => (o.profile_w ? o.profile_w.map((w) => (w / 1000).toString()).join(",") : kw(o.power_w));

export function localTime(ms) {
  return new Date(ms).toLocaleString(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

export function timeZoneName() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "local";
}

// <input type=datetime-local> value for a UTC instant, in the browser's time zone
export function toLocalInput(ms) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

// A uPlot chart that follows its container's width (phone rotation, window resizes).
export function fitChart(el, make) {
  const width = () => Math.max(240, Math.floor(el.getBoundingClientRect().width) || 320);
  const plot = make(width());
  const ro = new ResizeObserver(() => plot.setSize({ width: width(), height: plot.height }));
  ro.observe(el);
  const destroy = plot.destroy.bind(plot);
  plot.destroy = () => { ro.disconnect(); destroy(); };
  return plot;
}

// Replace a <select>'s options only when they changed (a live refresh must not reset a list
// the user is looking at), keeping the selection when it still exists.
export function setOptions(sel, options, placeholder) {
  const want = options.length ? options : [[ "", placeholder ]];
  const sig = JSON.stringify(want);
  if (sel.dataset.sig === sig) return;
  const keep = sel.value;
  sel.replaceChildren(...want.map(([value, label]) => h("option", { value }, label)));
  sel.dataset.sig = sig;
  if (want.some(([v]) => String(v) === keep)) sel.value = keep;
}

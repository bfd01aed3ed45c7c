// Explorer: blocks, transactions, validators' signatures, the Merkle roots, inclusion proofs.
import * as api from "../api.js";
import { $, concat, enc, fill, h, hexToBytes, localTime, short, table } from "../util.js";
import { verifyTxProof } from "../proof.js";

const SHOW = 15;

let chainRef = null;

export function init(chain) {
  chainRef = chain;
  $("#block-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("#block-error").textContent = "";
    const n = Number($("#block-height").value);
    if (!Number.isInteger(n) || n < 1 || n > chainRef.height) {
      $("#block-error").textContent = `a block height is a whole number from 1 to ${chainRef.height}`;
      return;
    }
    await showBlock(n);
  });
  $("#proof-fetch").addEventListener("click", () => fetchProof($("#proof-txid").value.trim()));
  $("#proof-verify").addEventListener("click", verify);
  $("#proof-tamper").addEventListener("click", tamper);
}

// chain/block.py precommit_sign_bytes: domain, chain id, type=3, height, round, 1, block hash
function precommitBytes(chainId, height, round, blockHash) {
  const cid = enc.encode(chainId);
  const head = new DataView(new ArrayBuffer(14));
  head.setUint8(0, 3);
  head.setBigUint64(1, BigInt(height));
  head.setInt32(9, round);
  head.setUint8(13, 1);
  return concat(enc.encode("gridledger/vote/v1"), new Uint8Array([cid.length]), cid, new Uint8Array(head.buffer), hexToBytes(blockHash));
}

export async function refresh(chain) {
  const tip = chain.height;
  const blocks = [];
  for (let k = tip; k > 0 && blocks.length < SHOW; k--) blocks.push(await api.block(k));
  fill("#blocks", table([
    { label: "height", num: true, get: (b) => b.header.height },
    { label: "time (local)", get: (b) => localTime(b.header.time_ms) },
    { label: "txs", num: true, get: (b) => b.header.num_txs },
    { label: "hash", get: (b) => h("span", { class: "mono" }, short(b.hash, 16)) },
    { label: "", get: (b) => h("button", { class: "small", type: "button", "aria-label": `open block ${b.header.height}`, onclick: () => showBlock(b.header.height) }, "Open") },
  ], blocks, "no blocks yet"));
}

async function showBlock(height) {
  let b;
  try {
    b = await api.block(height);
  } catch (e) {
    $("#block-error").textContent = e.message;
    return;
  }
  const hd = b.header;
  const sigs = b.commit.signatures.map((s) => ({
    ...s,
    ok: nacl.sign.detached.verify(precommitBytes(hd.chain_id, b.commit.height, b.commit.round, b.commit.block_hash), hexToBytes(s.signature), hexToBytes(s.validator)),
  }));
  const txs = [];
  for (const id of b.txs.slice(0, 100)) txs.push({ id, st: await api.txStatus(id) });
  fill("#block-detail", h("div", {},
    h("h3", {}, `Block ${hd.height}`),
    h("dl", { class: "kv" },
      h("dt", {}, "hash"), h("dd", { class: "mono" }, b.hash),
      h("dt", {}, "previous"), h("dd", { class: "mono" }, hd.prev_block_hash),
      h("dt", {}, "active-power root"), h("dd", { class: "mono" }, hd.active_root),
      h("dt", {}, "loss root"), h("dd", { class: "mono" }, hd.loss_root),
      h("dt", {}, "reactive-power root"), h("dd", { class: "mono" }, hd.reactive_root),
      h("dt", {}, "other root"), h("dd", { class: "mono" }, hd.other_root),
      h("dt", {}, "state root (after h-1)"), h("dd", { class: "mono" }, hd.app_hash),
      h("dt", {}, "results (of h-1)"), h("dd", { class: "mono" }, hd.last_results_hash)),
    h("h4", {}, "Validator signatures (checked in this browser)"),
    table([
      { label: "validator", get: (s) => h("span", { class: "mono" }, short(s.validator, 16)) },
      { label: "signature", get: (s) => h("span", { class: s.ok ? "ok" : "bad" }, s.ok ? "valid" : "INVALID") },
    ], sigs, "no commit signatures"),
    h("h4", {}, "Transactions"),
    table([
      { label: "txid", get: (t) => h("span", { class: "mono" }, short(t.id, 16)) },
      { label: "type", get: (t) => t.st?.tx?.type ?? "?" },
      { label: "result", get: (t) => (t.st ? `${t.st.code_name}${t.st.log ? ": " + t.st.log : ""}` : "?") },
      { label: "", get: (t) => h("button", { class: "small", type: "button", "aria-label": `proof of ${short(t.id)}`, onclick: () => fetchProof(t.id) }, "Proof") },
    ], txs, "no transactions")));
}

async function fetchProof(txid) {
  $("#proof-verdict").textContent = "";
  $("#proof-steps").replaceChildren();
  if (!/^[0-9a-f]{64}$/.test(txid)) {
    $("#proof-verdict").textContent = "a transaction id is 64 lowercase hex characters";
    $("#proof-verdict").className = "bad";
    return;
  }
  $("#proof-txid").value = txid;
  try {
    const proof = await api.txProof(txid);
    $("#proof-json").value = JSON.stringify(proof, null, 1);
    await verify();
  } catch (e) {
    $("#proof-verdict").textContent = e.message;
    $("#proof-verdict").className = "bad";
  }
}

async function verify() {
  let proof;
  try {
    proof = JSON.parse($("#proof-json").value);
  } catch (e) {
    $("#proof-verdict").textContent = `refused: the proof is not JSON (${e.message})`;
    $("#proof-verdict").className = "bad";
    return;
  }
  let blockHash = "";
  try {
    blockHash = (await api.block(proof.header.height)).hash; // the chain's hash, fetched apart
  } catch (e) {
    blockHash = "";
  }
  const res = await verifyTxProof(proof, blockHash);
  $("#proof-steps").replaceChildren(...res.steps.map((s) => h("li", { class: s.ok ? "ok" : "bad" }, s.text)));
  $("#proof-verdict").textContent = res.ok
    ? `VERIFIED: transaction is in block ${proof.header.height} (SHA-256 in this browser)`
    : "REFUSED: the proof does not hold";
  $("#proof-verdict").className = res.ok ? "ok" : "bad";
  $("#proof-verdict").dataset.verdict = res.ok ? "verified" : "refused";
}

function tamper() {
  try {
    const proof = JSON.parse($("#proof-json").value);
    const tx = proof.tx;
    const i = tx.length - 200; // a byte inside the body, before the signature
    const flipped = (parseInt(tx[i], 16) ^ 1).toString(16);
    proof.tx = tx.slice(0, i) + flipped + tx.slice(i + 1);
    $("#proof-json").value = JSON.stringify(proof, null, 1);
  } catch (e) {
    $("#proof-verdict").textContent = `nothing to tamper with: ${e.message}`;
  }
}

// A transaction's inclusion proof checked in the browser with WebCrypto SHA-256
// (chain/proofs.py verify_proof; RFC 6962/9162 Merkle audit paths, chain/merkle.py).
import { canon, concat, enc, hexToBytes, bytesToHex } from "./util.js";
import { verifyTxSignature } from "./wallet.js";

const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
const HEADER_DOMAIN = concat(enc.encode("gridledger/header/v1"), new Uint8Array([0]));
const RESULT_DOMAIN = concat(enc.encode("gridledger/result/v1"), new Uint8Array([0]));
const TREES = ["active", "loss", "reactive", "other"];

const leafHash = (data) => sha256(concat(new Uint8Array([0]), data));
const nodeHash = (l, r) => sha256(concat(new Uint8Array([1]), l, r));

// RFC 9162 §2.1.3.2: the root implied by an audit path, or null if the path has the wrong shape.
export async function rootFromPath(leaf, index, size, path) {
  if (!(index >= 0 && index < size)) return null;
  let fn = index, sn = size - 1, r = leaf;
  for (const p of path) {
    if (sn === 0) return null;
    if (fn & 1 || fn === sn) {
      r = await nodeHash(p, r);
      if (!(fn & 1)) while (!(fn & 1) && fn !== 0) { fn >>= 1; sn >>= 1; }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1; sn >>= 1;
  }
  return sn === 0 ? r : null;
}

export const headerHash = async (header) => bytesToHex(await sha256(concat(HEADER_DOMAIN, enc.encode(canon(header)))));

// Verify `proof` against `blockHash` (the node's hash of that height, fetched separately).
// Returns {ok, steps: [{ok, text}]}; stops at the first failed step.
export async function verifyTxProof(proof, blockHash) {
  const steps = [];
  const step = (ok, text) => { steps.push({ ok, text }); return ok; };
  try {
    if (proof.kind !== "tx") return { ok: step(false, "not a transaction proof"), steps };
    if (!TREES.includes(proof.tree)) return { ok: step(false, `unknown tree ${proof.tree}`), steps };
    const raw = hexToBytes(proof.tx);
    const path = proof.path.map(hexToBytes);
    const root = await rootFromPath(await leafHash(raw), proof.index, proof.tree_size, path);
    const want = proof.header[`${proof.tree}_root`];
    if (!step(root !== null && bytesToHex(root) === want,
      `leaf ${proof.index} of ${proof.tree_size} hashes up to the header's ${proof.tree} root ${want.slice(0, 16)}…`)) {
      steps[steps.length - 1].text = `the transaction is NOT in the header's ${proof.tree} tree (root mismatch)`;
      return { ok: false, steps };
    }
    if (!step(verifyTxSignature(raw), "the transaction's Ed25519 signature verifies")) {
      steps[steps.length - 1].text = "the transaction's signature does NOT verify";
      return { ok: false, steps };
    }
    const hh = await headerHash(proof.header);
    if (!step(hh === blockHash, `the header hashes to block ${proof.header.height}'s hash ${hh.slice(0, 16)}…`)) {
      steps[steps.length - 1].text = `the header does NOT hash to block ${proof.header.height}'s hash`;
      return { ok: false, steps };
    }
    if (proof.result) {
      const r = proof.result;
      if (!step(r.next_header.prev_block_hash === hh, "the next header links to this block")) {
        return { ok: false, steps };
      }
      const leaf = await leafHash(concat(RESULT_DOMAIN, enc.encode(canon({ code: r.code, log: r.log }))));
      const rr = await rootFromPath(leaf, r.index, r.size, r.path.map(hexToBytes));
      if (!step(rr !== null && bytesToHex(rr) === r.next_header.last_results_hash,
        `its result (code ${r.code}) is committed by the next header`)) {
        steps[steps.length - 1].text = "the result is NOT committed by the next header";
        return { ok: false, steps };
      }
    }
    return { ok: true, steps };
  } catch (e) {
    step(false, `malformed proof: ${e.message}`);
    return { ok: false, steps };
  }
}

// A key held in this page's memory only (never stored, never sent), and transactions signed
// with it: wire form = canonical body || Ed25519(TX_DOMAIN || body) (chain/tx.py).
// Ed25519 is TweetNaCl.js (vendored, audited), not hand-written.
import { bytesToHex, canon, concat, enc, hexToBytes } from "./util.js";

const TX_DOMAIN = concat(enc.encode("gridledger/tx/v1"), new Uint8Array([0]));

export class KeyFileError extends Error {}

// Parse a key file written by `gridledger` (chain/keys.py); throws KeyFileError naming the problem.
export function parseKeyFile(text) {
  let doc;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new KeyFileError("this is not a gridledger key file: it is not JSON");
  }
  if (!doc || typeof doc !== "object" || doc.type !== "ed25519") {
    throw new KeyFileError('this is not a gridledger key file: "type" must be "ed25519"');
  }
  if (doc.sealed) {
    throw new KeyFileError(
      "this key file is encrypted with a passphrase (Argon2id); the browser cannot open it — " +
        "use an unencrypted copy kept on this device");
  }
  let seed;
  try {
    seed = hexToBytes(doc.seed ?? "");
  } catch {
    seed = null;
  }
  if (!seed || seed.length !== 32) {
    throw new KeyFileError('the key file has no valid "seed" (64 hex characters)');
  }
  const pair = nacl.sign.keyPair.fromSeed(seed);
  const pub = bytesToHex(pair.publicKey);
  if (pub !== doc.pub_key) {
    throw new KeyFileError("the key file is damaged: its public key does not match its seed");
  }
  return { pub, role: String(doc.role ?? ""), secretKey: pair.secretKey };
}

// Signed wire bytes (hex) of one transaction.
export function signTx(key, chainId, seq, type, payload) {
  const body = enc.encode(canon({ chain_id: chainId, payload, sender: key.pub, seq, type }));
  const sig = nacl.sign.detached(concat(TX_DOMAIN, body), key.secretKey);
  return bytesToHex(concat(body, sig));
}

export function verifyTxSignature(raw) {
  const body = raw.slice(0, raw.length - 64), sig = raw.slice(raw.length - 64);
  const sender = hexToBytes(JSON.parse(new TextDecoder().decode(body)).sender);
  return nacl.sign.detached.verify(concat(TX_DOMAIN, body), sig, sender);
}

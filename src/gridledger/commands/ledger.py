"""``gridledger node|keys|tx|query|verify|prove|verify-proof``: the ledger's commands."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from gridledger.commands.errors import CliError


def _passphrase(args: argparse.Namespace) -> str | None:
    var = getattr(args, "passphrase_env", None)
    if not var:
        return None
    if var not in os.environ:
        raise CliError(f"environment variable {var} (passphrase) is not set")
    return os.environ[var]


def _node_url(args: argparse.Namespace) -> str:
    if getattr(args, "node", None):
        return args.node
    home = getattr(args, "home", None)
    if home:
        addr = Path(home) / "node.addr"
        if addr.exists():
            return addr.read_text().strip()
        raise CliError(f"no running node for {home} (no node.addr); pass --node URL")
    return "http://127.0.0.1:26657"


def _client(args: argparse.Namespace, key: Any = None) -> Any:
    """A client of the node; with ``--home``, trusting the node's TLS certificate and knowing
    its chain id, so that ``key`` can sign reads (a node with ``read_auth``, docs/api.md)."""
    from gridledger.node.client import LedgerClient
    from gridledger.node.home import HomeError, NodeConfig

    verify: str | bool = True
    chain_id = None
    home = getattr(args, "home", None)
    if home and not getattr(args, "node", None):
        try:
            cfg = NodeConfig.load(Path(home))
        except HomeError:
            cfg = None  # a BFT validator's home: its config has another shape
        if cfg is not None:
            chain_id = cfg.chain_id
            if cfg.tls_cert:
                verify = str(Path(home) / cfg.tls_cert)
    return LedgerClient(_node_url(args), key=key, chain_id=chain_id, verify=verify)


def _print(doc: Any) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True))


def _no_float(text: str) -> Any:
    raise CliError(f"floats are not allowed in payloads (use integer units): {text}")


# --- node ---------------------------------------------------------------------------------
def _node_init(args: argparse.Namespace) -> int:
    from gridledger.node.home import HomeError, init_home

    try:
        keys = init_home(
            Path(args.home),
            args.chain_id,
            _passphrase(args),
            args.vendors,
            block_interval_ms=args.block_interval_ms,
            contracts=args.contract,
        )
    except HomeError as exc:
        raise CliError(str(exc)) from exc
    _print({"chain_id": args.chain_id, "home": str(args.home), "keys": keys})
    return 0


def _node_start(args: argparse.Namespace) -> int:
    from gridledger.node.home import HomeError, NodeConfig
    from gridledger.node.node import Node
    from gridledger.node.server import serve

    home = Path(args.home)
    try:
        cfg = NodeConfig.load(home)
    except HomeError as exc:
        raise CliError(str(exc)) from exc
    if args.block_interval_ms is not None:
        cfg.block_interval_ms = args.block_interval_ms
    if args.eager:
        cfg.eager = True
    if args.synchronous:
        cfg.synchronous = args.synchronous
    try:
        node = Node(home, cfg)
    except Exception as exc:
        raise CliError(f"cannot start the node: {exc}") from exc
    try:
        serve(node, args.api or cfg.api)
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot serve the API on {args.api or cfg.api}: {exc}") from exc
    return 0


# --- keys ---------------------------------------------------------------------------------
def _keys_new(args: argparse.Namespace) -> int:
    from gridledger.chain.keys import KeyPair, save_key

    out = Path(args.out)
    if out.exists():
        raise CliError(f"{out} exists; refusing to overwrite a key")
    k = KeyPair.generate()
    save_key(out, k, args.role, _passphrase(args))
    _print({"file": str(out), "pub_key": k.pub_hex, "role": args.role})
    return 0


# --- tx / query -----------------------------------------------------------------------------
def _tx(args: argparse.Namespace) -> int:
    from gridledger.chain.keys import KeyFileError, load_key
    from gridledger.node.client import ClientError, Signer

    try:
        payload = json.loads(args.payload, parse_float=_no_float)
    except json.JSONDecodeError as exc:
        raise CliError(f"payload is not JSON: {exc}") from exc
    try:
        key, _ = load_key(args.key, _passphrase(args))
    except KeyFileError as exc:
        raise CliError(str(exc)) from exc
    try:
        with _client(args, key) as client:
            signer = Signer(client, key)
            res = signer.send(args.type, payload, wait=args.wait)
    except (ClientError, TimeoutError) as exc:
        raise CliError(str(exc)) from exc
    except Exception as exc:  # connection refused etc.
        raise CliError(f"cannot reach the node: {exc}") from exc
    _print(res)
    return 0 if res.get("code", 0) == 0 else 1


def _query(args: argparse.Namespace) -> int:
    from gridledger.chain.keys import KeyFileError, load_key
    from gridledger.node.client import ClientError

    key = None
    if args.key:
        try:
            key, _ = load_key(args.key, _passphrase(args))
        except KeyFileError as exc:
            raise CliError(str(exc)) from exc
    try:
        with _client(args, key) as c:
            what = args.what
            if what == "status":
                doc = c.status()
            elif what == "block":
                doc = c.block(int(args.arg) if args.arg else None)
            elif what == "tx":
                doc = c.tx(args.arg or "")
                if doc is None:
                    raise CliError(f"transaction {args.arg} is unknown to the node")
            elif what == "account":
                doc = c.account(args.arg or "")
            else:
                doc = c.state(args.arg or "", prove=args.prove)
    except ClientError as exc:
        raise CliError(str(exc)) from exc
    except CliError:
        raise
    except Exception as exc:
        raise CliError(f"cannot reach the node: {exc}") from exc
    _print(doc)
    return 0


# --- audit ----------------------------------------------------------------------------------
def _verify(args: argparse.Namespace) -> int:
    from gridledger.chain.verify import verify_chain

    db = Path(args.home) / "data" / "chain.db"
    if not db.exists():
        raise CliError(f"no chain database at {db}")
    rep = verify_chain(db)
    if args.json:
        print(json.dumps(rep.to_json(), sort_keys=True))
    elif rep.ok:
        start = f"the state-sync snapshot of {rep.base_height}" if rep.base_height else "genesis"
        print(
            f"OK: {rep.blocks} blocks, {rep.txs} transactions verified from {start} to height "
            f"{rep.height} in {rep.seconds:.2f} s"
        )
    else:
        where = f"block {rep.bad_height}" if rep.bad_height else "chain"
        good = f"blocks {rep.base_height + 1}..{rep.height} are good"
        print(f"FAILED at {where}: {rep.problem} ({good})")
    return 0 if rep.ok else 1


def _prove(args: argparse.Namespace) -> int:
    txid = args.txid.lower()
    if len(txid) != 64:
        raise CliError("TXID must be 64 hex characters")
    if args.home and (Path(args.home) / "data" / "chain.db").exists() and not args.node:
        from gridledger.chain.proofs import ProofError, classifier, tx_proof
        from gridledger.chain.store import Store

        store = Store(Path(args.home) / "data" / "chain.db", synchronous="NORMAL")
        try:
            genesis_hex = store.meta("genesis")
            if genesis_hex is None:
                raise CliError(f"{args.home} holds no chain yet")
            genesis = bytes.fromhex(genesis_hex)
            proof = tx_proof(store, bytes.fromhex(txid), classifier(genesis))
        except ProofError as exc:
            raise CliError(str(exc)) from exc
        finally:
            store.close()
    else:
        from gridledger.node.client import ClientError, LedgerClient

        try:
            with LedgerClient(_node_url(args)) as c:
                proof = c.tx_proof(txid)
        except ClientError as exc:
            raise CliError(str(exc)) from exc
    text = json.dumps(proof, indent=2, sort_keys=True)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    return 0


def _verify_proof(args: argparse.Namespace) -> int:
    from gridledger.chain.abci import Validator
    from gridledger.chain.genesis import GenesisError, parse_genesis
    from gridledger.chain.proofs import verify_proof

    try:
        proof = json.loads(Path(args.proof).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CliError(f"cannot read proof {args.proof}: {exc}") from exc
    validators = None
    if args.genesis:
        try:
            g = parse_genesis(Path(args.genesis).read_bytes().rstrip(b"\n"))
        except (OSError, GenesisError) as exc:
            raise CliError(f"cannot read genesis: {exc}") from exc
        validators = [
            Validator(bytes.fromhex(v["pub_key"]), v["power"]) for v in g.doc["validators"]
        ]
    trusted = bytes.fromhex(args.block_hash) if args.block_hash else None
    ok, msg = verify_proof(proof, trusted, validators)
    print(("OK: " if ok else "INVALID: ") + msg)
    return 0 if ok else 1


def register(sub: argparse._SubParsersAction) -> None:
    node = sub.add_parser("node", help="initialise or run a ledger node")
    nsub = node.add_subparsers(dest="node_command", metavar="ACTION", required=True)
    p = nsub.add_parser("init", help="create keys, genesis and config in a home directory")
    p.add_argument("--home", required=True)
    p.add_argument("--chain-id", required=True)
    p.add_argument("--vendors", type=int, default=1)
    p.add_argument("--block-interval-ms", type=int, default=1000)
    p.add_argument("--passphrase-env", help="seal non-validator keys with this env var's value")
    p.add_argument(
        "--contract",
        action="append",
        default=[],
        metavar="MODULE",
        help="extra contract module for the genesis (repeatable), e.g. "
        "gridledger.chain.contracts.market",
    )
    p.set_defaults(handler=_node_init)
    p = nsub.add_parser("start", help="run the node (solo consensus) and its HTTP API")
    p.add_argument("--home", required=True)
    p.add_argument("--api", help="HOST:PORT (port 0: any free port; see HOME/node.addr)")
    p.add_argument("--block-interval-ms", type=int)
    p.add_argument("--eager", action="store_true", help="cut a block as soon as txs wait")
    p.add_argument("--synchronous", choices=["FULL", "NORMAL"])
    p.set_defaults(handler=_node_start)

    keys = sub.add_parser("keys", help="manage Ed25519 key files")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    p = ksub.add_parser("new", help="generate a key file (mode 0600)")
    p.add_argument("--out", required=True)
    from gridledger.chain.keys import ROLES

    p.add_argument("--role", default="", choices=["", *ROLES])
    p.add_argument("--passphrase-env")
    p.set_defaults(handler=_keys_new)

    p = sub.add_parser("tx", help="sign and submit a transaction")
    p.add_argument("type", help="e.g. token.transfer")
    p.add_argument("payload", help='JSON object, e.g. \'{"amount":5,"denom":"utoken","to":"…"}\'')
    p.add_argument("--key", required=True)
    p.add_argument("--passphrase-env")
    p.add_argument("--node")
    p.add_argument("--home")
    p.add_argument("--wait", action="store_true", help="wait until committed")
    p.set_defaults(handler=_tx)

    p = sub.add_parser("query", help="read from a node")
    p.add_argument("what", choices=["status", "block", "tx", "account", "state"])
    p.add_argument("arg", nargs="?", help="height, txid, public key or state key")
    p.add_argument("--prove", action="store_true")
    p.add_argument("--node")
    p.add_argument("--home")
    p.add_argument("--key", help="a member's key file: signs the reads (nodes with read_auth)")
    p.add_argument("--passphrase-env")
    p.set_defaults(handler=_query)

    p = sub.add_parser(
        "verify", help="re-check every block from genesis; names the first bad block"
    )
    p.add_argument("--home", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_verify)

    p = sub.add_parser("prove", help="print an offline-checkable inclusion proof of a tx")
    p.add_argument("txid")
    p.add_argument("--home")
    p.add_argument("--node")
    p.add_argument("--out")
    p.set_defaults(handler=_prove)

    p = sub.add_parser("verify-proof", help="check a proof file offline")
    p.add_argument("proof")
    p.add_argument("--genesis", help="check the commit against the genesis validators")
    p.add_argument("--block-hash", help="trusted block hash (hex)")
    p.set_defaults(handler=_verify_proof)

"""A BFT node's side of state sync: taking its snapshots, serving light blocks, restoring.

The protocol (offers, chunks, light-client checks) is :mod:`gridledger.chain.consensus.
tendermint.statesync`; the snapshot format is :mod:`gridledger.chain.snapshot`. Here a node
turns its committed state and engine schedule into a snapshot, and turns a verified snapshot
into a store and an engine schedule from which block sync continues at ``h + 1``.

What a restored node writes, and where each value comes from (docs/consensus.md):

- the state: the snapshot's chunks, whose root is the app hash of the light-client-verified
  header ``h + 1``;
- ``last_block_hash``, ``last_time_ms``: the header ``h``, whose hash header ``h + 1`` names;
- ``last_results_hash``: header ``h + 1``;
- the validator sets the app needs (``valsets_recent``): the set that signed ``h + 1`` (verified
  by the light client) and the state's own set after ``h``;
- the engine's sets of ``h`` and ``h + 1`` with proposer priorities, and its pending updates:
  the manifest, checked against the headers' ``validators_hash`` and ``next_validators_hash``;
- ``state_sync_base`` in the store's metadata: the height the node's history starts from and
  the values above, so ``gridledger verify`` can replay the blocks it has from the snapshot.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gridledger.chain import encoding
from gridledger.chain.abci import Validator
from gridledger.chain.block import Header
from gridledger.chain.consensus.tendermint.ledger import LedgerChain
from gridledger.chain.consensus.tendermint.statesync import LightBlock, Restored
from gridledger.chain.consensus.tendermint.types import ConsensusError
from gridledger.chain.consensus.tendermint.validators import ValidatorSet, ValidatorSetError
from gridledger.chain.contracts.validators import VALIDATORS_KEY
from gridledger.chain.snapshot import Manifest, SnapshotStore
from gridledger.chain.store import Store


def engine_schedule(chain: LedgerChain) -> dict[str, Any]:
    """The engine's validator sets (with priorities) and pending updates, as in its state file."""
    return {
        "pending": {
            str(h): [[v.pub_key.hex(), v.power] for v in u] for h, u in chain.pending.items()
        },
        "valsets": {str(h): s.to_json() for h, s in chain.valsets.items()},
    }


def take_snapshot(snapshots: SnapshotStore, chain: LedgerChain, app, chunk_bytes: int) -> Manifest:
    """Snapshot the state just committed at ``chain.height`` (call right after the commit)."""
    return snapshots.take(
        chain.height,
        chain.chain_id,
        app.app_hash,
        app.snapshot_items(),
        engine_schedule(chain),
        chunk_bytes,
    )


def light_block(chain: LedgerChain, store: Store, height: int) -> LightBlock | None:
    """Header, commit and signing set of a stored height (None: not stored here)."""
    sb = store.get_block(height, writer=True)
    if sb is None:
        return None
    try:
        vals = chain.validators_at(height)
    except ConsensusError:
        return None
    return LightBlock(sb.block().header, sb.commit(), tuple(vals))


def check_schedule(m: Manifest, header: Header, nxt: Header) -> str | None:
    """Why the manifest's engine schedule disagrees with the verified headers (None: agrees)."""
    h = m.height
    try:
        sets, pending_raw = m.consensus["valsets"], m.consensus["pending"]
        if not isinstance(sets, dict) or not isinstance(pending_raw, dict):
            # a peer's JSON: anything but objects here raised AttributeError past the caller
            raise TypeError("valsets and pending must be objects")
        at_h = ValidatorSet.from_json(sets[str(h)])
        at_next = ValidatorSet.from_json(sets[str(h + 1)])
        pending = {
            int(k): [Validator(bytes.fromhex(a), int(p)) for a, p in u]
            for k, u in pending_raw.items()
        }
        after = at_next.with_updates(pending[h + 2]) if pending.get(h + 2) else at_next
    except (KeyError, TypeError, ValueError, ValidatorSetError) as exc:
        return f"the manifest's validator schedule is malformed: {exc!r}"
    if set(sets) != {str(h), str(h + 1)} or any(k <= h for k in pending):
        return "the manifest's validator schedule is not for its height"
    if at_h.hash() != header.validators_hash:
        return f"the manifest's validator set of {h} is not the header's"
    if at_next.hash() != nxt.validators_hash:
        return f"the manifest's validator set of {h + 1} is not the header's"
    if after.hash() != nxt.next_validators_hash:
        return f"the manifest's pending updates do not give the set header {h + 1} announces"
    return None


def _app_set(validators) -> list[dict[str, Any]]:
    return sorted(
        ({"power": v.power, "pub_key": v.pub_key.hex()} for v in validators),
        key=lambda v: v["pub_key"],
    )


def restore(store: Store, data_dir: Path, snapshots: SnapshotStore, r: Restored) -> dict:
    """Write a verified snapshot as this node's starting point (module docstring)."""
    m, h = r.manifest, r.manifest.height
    base = {
        "app_hash": m.app_hash.hex(),
        "height": h,
        "last_block_hash": r.header.hash().hex(),
        "last_results_hash": r.next_header.last_results_hash.hex(),
        "last_time_ms": r.header.time_ms,
        "manifest_hash": m.hash().hex(),
        "valsets_recent": {
            str(h - 1): _app_set(r.next_validators),
            str(h): encoding.decode(r.state[VALIDATORS_KEY.encode()]),
        },
    }
    sets = {int(k): ValidatorSet.from_json(v) for k, v in m.consensus["valsets"].items()}
    schedule = {"height": h, "pending": m.consensus["pending"], "valsets": m.consensus["valsets"]}
    history = [
        [k, [[v.pub_key.hex(), v.power] for v in s.validators]] for k, s in sorted(sets.items())
    ]
    # The engine's files first, the store last: the store's commit is what makes the restore
    # count (a node restarted before it finds a store at height 0 and syncs again).
    for name, doc in (("consensus_state.json", schedule), ("validator_history.json", history)):
        _write(data_dir / name, json.dumps(doc, sort_keys=True).encode())
    snapshots.save(m, r.chunks)  # kept: this node serves it, and verify replays from it
    meta = {k: base[k] for k in base if k != "manifest_hash"}
    store.restore_snapshot({**meta, "state_sync_base": base}, r.state)
    return base


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)

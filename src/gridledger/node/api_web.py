"""Read-only endpoints for the web app (``/web/...``) and the app itself at ``/``.

Everything here reads; nothing writes. Transactions from the app go through ``POST /txs`` like
any client's: they are signed in the browser, the key never reaches the node.

* ``GET /web/state?prefix=P[&after=K][&limit=N]``: committed state under a key prefix, in key
  order, decoded, at most :data:`MAX_LIST` per page. All state is already readable one key at a
  time (``GET /state/{key}``); listing it adds no exposure. The sorted key list is built once per
  height (O(n log n)), so a page costs a binary search plus ``limit`` reads.
* ``GET /web/grid/{case}``: buses, lines and generators of a shipped grid case, for drawing.
  Only shipped names are accepted (``load_case`` would also open file paths).
* ``GET /web/certificates/{match_id}``: the DSO's off-chain certificate document (voltages and
  loadings before and after the R-OPF) when this node's home holds it, with its digest checked
  against the one the certificate put on chain.
"""

from __future__ import annotations

import bisect
import json
import re
import threading
from functools import lru_cache
from importlib import resources
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Path, Query
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from gridledger.chain import encoding
from gridledger.chain.contracts.market import document_digest
from gridledger.node.api_errors import responses
from gridledger.node.node import Node

MAX_LIST = 500
MAX_PREFIX = 200
_MATCH_ID = re.compile(r"^m[0-9]{1,12}$")


def static_dir() -> str:
    """The packaged app (``node/web/static``), vendored libraries included; no build step."""
    return str(resources.files("gridledger.node.web") / "static")


class _SortedKeys:
    """The committed state's keys in order, rebuilt when the height changes."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._lock = threading.Lock()
        self._height = -1
        self._keys: list[bytes] = []

    def page(self, prefix: str, after: str, limit: int) -> tuple[int, list[tuple[str, Any]]]:
        app = self._node.app
        with app.lock:  # one height: keys and values read under the app's lock
            committed = app._committed  # the app's read-only view of committed state
            with self._lock:
                if self._height != app.height:
                    self._keys = sorted(committed)
                    self._height = app.height
                keys = self._keys
            p = prefix.encode()
            start = max(p, after.encode() + b"\x00") if after else p
            i = bisect.bisect_left(keys, start)
            out: list[tuple[str, Any]] = []
            while i < len(keys) and keys[i].startswith(p) and len(out) < limit:
                raw = committed.get(keys[i])
                if raw is not None:
                    out.append((keys[i].decode(), _decode(raw)))
                i += 1
            return app.height, out


def _decode(raw: bytes) -> Any:
    try:
        return encoding.decode(raw)
    except encoding.EncodingError:
        return {"raw_hex": raw.hex()}


@lru_cache(maxsize=16)
def grid_topology(case: str) -> dict[str, Any]:
    """A shipped case as plain data for drawing (no geodata in the shipped cases: tree layout)."""
    from gridledger.grid.cases import list_cases, load_case

    if case not in list_cases():
        raise KeyError(case)
    net = load_case(case)
    gens = [
        {"name": str(n), "bus": int(b), "role": str(r)}
        for n, b, r in zip(net.gen["name"], net.gen["bus"], net.gen["role"], strict=True)
    ]
    slack = [g["bus"] for g in gens if g["role"] == "slack"]
    return {
        "name": case,
        "buses": [
            {
                "id": int(b),
                "name": str(row["name"]),
                "vn_kv": float(row["vn_kv"]),
                "vmin_pu": float(row["vmin_pu"]),
                "vmax_pu": float(row["vmax_pu"]),
            }
            for b, row in net.bus.iterrows()
        ],
        "lines": [
            {
                "name": str(row["name"]),
                "from": int(row["from_bus"]),
                "to": int(row["to_bus"]),
                "kind": str(row["kind"]),
            }
            for _, row in net.branch.iterrows()
        ],
        "gens": gens,
        "loads": [int(b) for b in net.load["bus"]],
        "slack_bus": slack[0] if slack else int(net.bus.index[0]),
        # bus -> [x, y] when a case carries coordinates; the app then draws them as given. No
        # shipped case has any (the Network model keeps none), so the app lays out a tree.
        "geodata": None,
    }


def web_router(node: Node) -> APIRouter:
    router = APIRouter(prefix="/web", tags=["web app (read-only)"])
    keys = _SortedKeys(node)

    @router.get("/state", responses=responses(422))
    def list_state(
        prefix: str = Query(min_length=1, max_length=MAX_PREFIX),
        after: str = Query("", max_length=1000),
        limit: int = Query(200, ge=1, le=MAX_LIST),
    ) -> dict[str, Any]:
        """Committed state under ``prefix`` in key order; page on with ``after=<next>``."""
        height, items = keys.page(prefix, after, limit)
        return {
            "height": height,
            "items": [{"key": k, "value": v} for k, v in items],
            "next": items[-1][0] if len(items) == limit else None,
        }

    @router.get("/grid/{case}", responses=responses(404, 422))
    def grid(case: str = Path(min_length=1, max_length=64)) -> dict[str, Any]:
        try:
            return grid_topology(case)
        except KeyError:
            from gridledger.grid.cases import list_cases

            raise HTTPException(
                404, f"unknown grid case {case!r}; shipped cases: {', '.join(list_cases())}"
            ) from None

    @router.get("/certificates/{match_id}", responses=responses(404, 422))
    def certificate_document(
        match_id: str = Path(pattern=_MATCH_ID.pattern, description="a match id, e.g. m0"),
    ) -> dict[str, Any]:
        rec = node.app.query(f"state/market/match/{match_id}")
        if rec.code != 0:
            raise HTTPException(404, f"no match {match_id} on chain")
        on_chain = encoding.decode(rec.value).get("document_digest", "")
        path = node.home / "dso" / "certificates" / f"{match_id}.json"
        if not path.is_file():
            raise HTTPException(
                404,
                f"the DSO's certificate document of {match_id} is not on this node "
                "(only its digest is on chain)",
            )
        doc = json.loads(path.read_text())
        digest = document_digest(doc)  # the contract's one definition of the digest
        return {
            "match_id": match_id,
            "document": doc,
            "digest": digest,
            "on_chain_digest": on_chain,
            "digest_ok": bool(on_chain) and digest == on_chain,
        }

    return router


def mount_web_app(api: FastAPI) -> None:
    """The app's page at ``/`` and its files under ``/web/static`` (not a catch-all mount at
    ``/``, so routes added to the API later are never shadowed)."""
    root = static_dir()

    @api.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(f"{root}/index.html", media_type="text/html")

    api.mount("/web/static", StaticFiles(directory=root), name="web-static")

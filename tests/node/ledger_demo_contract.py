"""A minimal third-party contract, loaded by name from a genesis, as issue 5/6 contracts are."""

from gridledger.chain import codes
from gridledger.chain.contracts.base import Contract, ContractError, TxType, req_int, require_fields


def _validate(p):
    require_fields(p, ["value"])
    req_int(p, "value", 0, 100)


def _execute(ctx, p):
    key = f"demo/{ctx.sender}"
    if ctx.state.get(key) is not None:
        raise ContractError(codes.ALREADY_EXISTS, "already noted")
    ctx.state.set(key, {"at_ms": ctx.time_ms, "value": p["value"]})
    ctx.emit("demo.noted", value=p["value"])


def _genesis(ctx, doc):
    ctx.state.set("demo/config", {"max": 100})


CONTRACT = Contract(
    "demo",
    (TxType("demo.note", frozenset({"vendor"}), _validate, _execute, tree="reactive"),),
    genesis=_genesis,
)

"""EV charging sessions on chain: the driver's authorisation, metered delivery, V2G, settlement.

* ``ev.authorise`` (prosumer: the driver): names one charge point, the most energy (Wh) and
  the highest price (utoken/kWh) it accepts, and an expiry in block time; optionally a V2G SoC
  window (battery, energy on arrival, the window's floor and ceiling, the most it may
  discharge and the lowest V2G price).  ``cost(max energy, max price)`` is escrowed from the
  driver at once.  The transaction id is the session id; only that charge point can use it.
* ``ev.open`` (charge_point): starts the session on one of its own meters (one open session per
  meter) at a price no higher than the authorised maximum; offering V2G escrows
  ``cost(max discharge, V2G price)`` from the charge point.
* ``ev.reading`` (meter): a ``meter.reading`` (executed by the metering contract first: the
  meter's own key, its rating, intervals never overlap or go back) of an interval inside the
  session (after it opened, ended in block time, before the expiry) adds its import to the
  energy delivered and its export to the energy discharged; a reading that would take the
  totals beyond the authorisation (max energy, max discharge, SoC window) is refused whole.
* ``ev.stop`` (the session's charge point): settles: the driver pays ``cost(delivered, price)``
  out of its escrow and gets the rest back; V2G pays the driver ``cost(discharged, V2G price)``
  out of the charge point's escrow.  Naming a renewable-energy certificate the charge point
  owns (bought with the energy from a green P2P seller) retires the delivered Wh of it in the
  driver's name.
* ``ev.expire`` (the session's driver or charge point, from the expiry on): a session never
  opened returns the whole escrow; an open one settles what was metered, as ``ev.stop`` does.

A closed session accepts nothing more.  Integer rules are in ``market/ev.py``; state keys are
built by the functions below (one home for each key format).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

from gridledger.chain import codes
from gridledger.chain.contracts import certificates, metering, tokens
from gridledger.chain.contracts.base import (
    Context,
    Contract,
    ContractError,
    PayloadError,
    TxType,
    req_hash,
    req_int,
    req_key,
    require_fields,
)
from gridledger.chain.contracts.membership import member_key
from gridledger.grid.der import ShapableLoad
from gridledger.market import ev as rules
from gridledger.market.orders import MAX_PRICE_UTOKEN_PER_KWH, MS_PER_HOUR

# Escrows sit on an account nobody holds a key for (as the market's and DR's escrows do).
ESCROW = hashlib.sha256(b"gridledger/ev/escrow").hexdigest()
MAX_SESSION_WH = 2_000_000  # 2 MWh: a heavy truck's battery; a car's is ~100 kWh
MAX_SESSION_MS = 48 * MS_PER_HOUR  # an authorisation locks the escrow at most two days
MAX_ACTIVE_PER_DRIVER = 8  # authorised or open sessions of one driver
MAX_ACTIVE_PER_CHARGE_POINT = 64  # open sessions of one charge point (one per meter)
READING = next(t for t in metering.CONTRACT.tx_types if t.name == "meter.reading")


def session_key(session_id: str) -> str:
    return f"ev/session/{session_id}"


def active_key(member: str) -> str:
    """A driver's authorised or open sessions, a charge point's open sessions (ids)."""
    return f"ev/active/{member}"


def meter_busy_key(meter: str) -> str:
    """The session a charge point's meter is delivering (one at a time)."""
    return f"ev/meter/{meter}"


# --- typed payloads -------------------------------------------------------------------------------
def _req_price(p: dict[str, Any], name: str, lo: int = 1) -> int:
    return req_int(p, name, lo, MAX_PRICE_UTOKEN_PER_KWH)


@dataclass(frozen=True)
class V2g:
    """The SoC window a driver authorises for vehicle-to-grid (Wh, utoken/kWh)."""

    battery_wh: int
    arrival_wh: int
    soc_min_wh: int
    soc_max_wh: int
    max_discharge_wh: int
    min_price_utoken_per_kwh: int

    def to_payload(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_payload(cls, p: Any) -> V2g:
        if not isinstance(p, dict):
            raise PayloadError("v2g must be an object")
        require_fields(p, [f for f in cls.__dataclass_fields__])
        battery = req_int(p, "battery_wh", 1, MAX_SESSION_WH)
        req_int(p, "arrival_wh", 0, battery)
        lo = req_int(p, "soc_min_wh", 0, battery)
        req_int(p, "soc_max_wh", lo, battery)
        req_int(p, "max_discharge_wh", 1, battery)
        _req_price(p, "min_price_utoken_per_kwh", 0)
        return cls(**{f: p[f] for f in cls.__dataclass_fields__})

    def window(self) -> rules.SocWindow:
        return rules.SocWindow(
            self.battery_wh, self.arrival_wh, self.soc_min_wh, self.soc_max_wh,
            self.max_discharge_wh,
        )  # fmt: skip


@dataclass(frozen=True)
class Authorise:
    charge_point: str
    max_energy_wh: int
    max_price_utoken_per_kwh: int
    expiry_ms: int
    v2g: V2g | None = None

    def to_payload(self) -> dict[str, Any]:
        p: dict[str, Any] = {
            "charge_point": self.charge_point,
            "max_energy_wh": self.max_energy_wh,
            "max_price_utoken_per_kwh": self.max_price_utoken_per_kwh,
            "expiry_ms": self.expiry_ms,
        }
        if self.v2g is not None:
            p["v2g"] = self.v2g.to_payload()
        return p

    @classmethod
    def from_payload(cls, p: dict[str, Any]) -> Authorise:
        require_fields(
            p, ["charge_point", "expiry_ms", "max_energy_wh", "max_price_utoken_per_kwh"], ["v2g"]
        )
        return cls(
            req_key(p, "charge_point"),
            req_int(p, "max_energy_wh", 1, MAX_SESSION_WH),
            _req_price(p, "max_price_utoken_per_kwh"),
            req_int(p, "expiry_ms", 1),
            V2g.from_payload(p["v2g"]) if "v2g" in p else None,
        )


@dataclass(frozen=True)
class Open:
    session: str
    meter: str
    price_utoken_per_kwh: int
    v2g_price_utoken_per_kwh: int | None = None

    def to_payload(self) -> dict[str, Any]:
        p: dict[str, Any] = {
            "session": self.session,
            "meter": self.meter,
            "price_utoken_per_kwh": self.price_utoken_per_kwh,
        }
        if self.v2g_price_utoken_per_kwh is not None:
            p["v2g_price_utoken_per_kwh"] = self.v2g_price_utoken_per_kwh
        return p

    @classmethod
    def from_payload(cls, p: dict[str, Any]) -> Open:
        require_fields(
            p, ["meter", "price_utoken_per_kwh", "session"], ["v2g_price_utoken_per_kwh"]
        )
        v2g_price = None
        if "v2g_price_utoken_per_kwh" in p:
            v2g_price = _req_price(p, "v2g_price_utoken_per_kwh", 0)
        return cls(
            req_hash(p, "session"),
            req_key(p, "meter"),
            _req_price(p, "price_utoken_per_kwh", 0),
            v2g_price,
        )


@dataclass(frozen=True)
class Reading:
    """A ``meter.reading`` payload plus the session it belongs to."""

    session: str
    meter: str
    start_ms: int
    duration_s: int
    import_wh: int
    export_wh: int

    def to_payload(self) -> dict[str, Any]:
        return asdict(self)

    def meter_payload(self) -> dict[str, Any]:
        p = self.to_payload()
        del p["session"]
        return p

    @classmethod
    def from_payload(cls, p: dict[str, Any]) -> Reading:
        require_fields(p, ["duration_s", "export_wh", "import_wh", "meter", "session", "start_ms"])
        req_hash(p, "session")
        READING.validate({k: v for k, v in p.items() if k != "session"})
        return cls(**{f: p[f] for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Stop:
    session: str
    rec: str | None = None  # a certificate the charge point owns: the delivered Wh retire

    def to_payload(self) -> dict[str, Any]:
        return {"session": self.session} | ({} if self.rec is None else {"rec": self.rec})

    @classmethod
    def from_payload(cls, p: dict[str, Any]) -> Stop:
        require_fields(p, ["session"], ["rec"])
        return cls(req_hash(p, "session"), req_hash(p, "rec") if "rec" in p else None)


@dataclass(frozen=True)
class Expire:
    session: str

    def to_payload(self) -> dict[str, Any]:
        return {"session": self.session}

    @classmethod
    def from_payload(cls, p: dict[str, Any]) -> Expire:
        require_fields(p, ["session"])
        return cls(req_hash(p, "session"))


# --- helpers --------------------------------------------------------------------------------------
def _session(ctx: Context, session_id: str) -> dict[str, Any]:
    s = ctx.state.get(session_key(session_id))
    if s is None:
        raise ContractError(codes.NOT_FOUND, f"no EV session {session_id[:16]}…")
    record: dict[str, Any] = s
    return record


def _activate(ctx: Context, member: str, session_id: str, cap: int) -> None:
    ids = ctx.state.get(active_key(member)) or []
    if len(ids) >= cap:
        raise ContractError(
            codes.LIMIT_REACHED, f"{member[:16]}… already has {cap} active EV sessions"
        )
    ctx.state.set(active_key(member), [*ids, session_id])


def _deactivate(ctx: Context, member: str, session_id: str) -> None:
    ids = [i for i in ctx.state.get(active_key(member)) or [] if i != session_id]
    if ids:
        ctx.state.set(active_key(member), ids)
    else:
        ctx.state.delete(active_key(member))


def _close(ctx: Context, sid: str, s: dict[str, Any], status: str) -> rules.SessionPay:
    """Settle ``s`` from its metered totals and close it (``closed`` or ``expired``)."""
    pay = rules.session_pay(
        s["delivered_wh"],
        s.get("price_utoken_per_kwh", 0),
        s["escrow_utoken"],
        s["discharged_wh"],
        s.get("v2g_price_utoken_per_kwh") or 0,
        s["v2g_escrow_utoken"],
    )
    tokens.debit(ctx, "utoken", ESCROW, s["escrow_utoken"] + s["v2g_escrow_utoken"])
    driver, cp = s["driver"], s["charge_point"]
    tokens.credit(ctx, "utoken", cp, pay.driver_pays + pay.v2g_refund)
    tokens.credit(ctx, "utoken", driver, pay.driver_refund + pay.v2g_pay)
    _deactivate(ctx, driver, sid)
    if s["status"] == "open":
        _deactivate(ctx, cp, sid)
        ctx.state.delete(meter_busy_key(s["meter"]))
    s.update(
        status=status,
        closed_ms=ctx.time_ms,
        paid_utoken=pay.driver_pays,
        refund_utoken=pay.driver_refund,
        v2g_paid_utoken=pay.v2g_pay,
        v2g_refund_utoken=pay.v2g_refund,
        escrow_utoken=0,
        v2g_escrow_utoken=0,
    )
    return pay


# --- transactions ---------------------------------------------------------------------------------
def _x_authorise(ctx: Context, p: dict[str, Any]) -> None:
    a = Authorise.from_payload(p)
    if a.charge_point == ctx.sender:
        raise ContractError(codes.INVALID_PAYLOAD, "a driver cannot authorise itself")
    cp = ctx.state.get(member_key(a.charge_point))
    if cp is None or cp["role"] != "charge_point" or cp["status"] != "active":
        raise ContractError(
            codes.NOT_FOUND, f"{a.charge_point[:16]}… is not an active charge point"
        )
    if not ctx.time_ms < a.expiry_ms <= ctx.time_ms + MAX_SESSION_MS:
        raise ContractError(
            codes.INVALID_PAYLOAD,
            f"expiry_ms {a.expiry_ms} must be after block time {ctx.time_ms} and at most "
            f"{MAX_SESSION_MS} ms later",
        )
    escrow = rules.escrow_utoken(a.max_energy_wh, a.max_price_utoken_per_kwh)
    _activate(ctx, ctx.sender, ctx.txid, MAX_ACTIVE_PER_DRIVER)
    tokens.debit(ctx, "utoken", ctx.sender, escrow)
    tokens.credit(ctx, "utoken", ESCROW, escrow)
    ctx.state.set(
        session_key(ctx.txid),
        {
            **a.to_payload(),
            "driver": ctx.sender,
            "authorised_ms": ctx.time_ms,
            "status": "authorised",
            "escrow_utoken": escrow,
            "v2g_escrow_utoken": 0,
            "delivered_wh": 0,
            "discharged_wh": 0,
            "readings": 0,
        },
    )
    ctx.emit(
        "ev.authorised",
        session=ctx.txid,
        driver=ctx.sender,
        charge_point=a.charge_point,
        escrow=escrow,
    )


def _x_open(ctx: Context, p: dict[str, Any]) -> None:
    o = Open.from_payload(p)
    s = _session(ctx, o.session)
    if s["charge_point"] != ctx.sender:
        raise ContractError(
            codes.UNAUTHORIZED, "the driver did not authorise this charge point for the session"
        )
    if s["status"] != "authorised":
        raise ContractError(codes.ALREADY_EXISTS, f"the session is {s['status']}, not authorised")
    if ctx.time_ms >= s["expiry_ms"]:
        raise ContractError(codes.INVALID_PAYLOAD, "the authorisation has expired")
    meter = ctx.state.get(member_key(o.meter))
    if meter is None or meter["role"] != "meter" or meter.get("prosumer") != ctx.sender:
        raise ContractError(codes.UNAUTHORIZED, "the meter is not bound to this charge point")
    if meter["status"] != "active":
        raise ContractError(codes.MEMBER_INACTIVE, "the meter is not active")
    if "rating_w" not in meter:
        # without a rating a reading is bounded only by metering's 1 GW ceiling
        raise ContractError(
            codes.INVALID_PAYLOAD, "a charge point's meter must be bound with its rating_w"
        )
    if ctx.state.get(meter_busy_key(o.meter)) is not None:
        raise ContractError(codes.ALREADY_EXISTS, "the meter is delivering another session")
    if o.price_utoken_per_kwh > s["max_price_utoken_per_kwh"]:
        raise ContractError(
            codes.INVALID_PAYLOAD,
            f"price {o.price_utoken_per_kwh} is above the authorised "
            f"{s['max_price_utoken_per_kwh']} utoken/kWh",
        )
    v2g_escrow = 0
    if o.v2g_price_utoken_per_kwh is not None:
        v2g = s.get("v2g")
        if v2g is None:
            raise ContractError(codes.INVALID_PAYLOAD, "the driver did not authorise V2G")
        if o.v2g_price_utoken_per_kwh < v2g["min_price_utoken_per_kwh"]:
            raise ContractError(
                codes.INVALID_PAYLOAD,
                f"V2G price {o.v2g_price_utoken_per_kwh} is below the driver's "
                f"{v2g['min_price_utoken_per_kwh']} utoken/kWh",
            )
        v2g_escrow = rules.escrow_utoken(v2g["max_discharge_wh"], o.v2g_price_utoken_per_kwh)
        tokens.debit(ctx, "utoken", ctx.sender, v2g_escrow)
        tokens.credit(ctx, "utoken", ESCROW, v2g_escrow)
    _activate(ctx, ctx.sender, o.session, MAX_ACTIVE_PER_CHARGE_POINT)
    ctx.state.set(meter_busy_key(o.meter), o.session)
    s.update(
        status="open",
        opened_ms=ctx.time_ms,
        meter=o.meter,
        rating_w=meter["rating_w"],
        price_utoken_per_kwh=o.price_utoken_per_kwh,
        v2g_price_utoken_per_kwh=o.v2g_price_utoken_per_kwh,
        v2g_escrow_utoken=v2g_escrow,
    )
    ctx.state.set(session_key(o.session), s)
    ctx.emit("ev.opened", session=o.session, meter=o.meter, price=o.price_utoken_per_kwh)


def _x_reading(ctx: Context, p: dict[str, Any]) -> None:
    r = Reading.from_payload(p)
    s = _session(ctx, r.session)
    if s["status"] != "open":
        raise ContractError(codes.INVALID_PAYLOAD, f"the session is {s['status']}, not open")
    if r.meter != s["meter"]:
        raise ContractError(codes.UNAUTHORIZED, "the reading's meter is not the session's meter")
    READING.execute(ctx, r.meter_payload())  # the metering rules: own key, rating, no overlap
    end_ms = r.start_ms + 1000 * r.duration_s
    if r.start_ms < s["opened_ms"] or end_ms > min(ctx.time_ms, s["expiry_ms"]):
        raise ContractError(
            codes.INVALID_PAYLOAD,
            f"the reading [{r.start_ms}, {end_ms}) is not inside the session (opened at "
            f"{s['opened_ms']}, expiring at {s['expiry_ms']}) or has not ended at block time "
            f"{ctx.time_ms}",
        )
    delivered, discharged = s["delivered_wh"] + r.import_wh, s["discharged_wh"] + r.export_wh
    v2g = s.get("v2g") if s.get("v2g_price_utoken_per_kwh") is not None else None
    try:
        rules.check_reading(
            s["max_energy_wh"],
            V2g(**v2g).window() if v2g else None,
            delivered,
            discharged,
            r.export_wh,
        )
    except rules.SessionRuleError as exc:
        raise ContractError(codes.INVALID_PAYLOAD, str(exc)) from exc
    s.update(delivered_wh=delivered, discharged_wh=discharged, readings=s["readings"] + 1)
    ctx.state.set(session_key(r.session), s)
    ctx.emit("ev.reading", session=r.session, import_wh=r.import_wh, export_wh=r.export_wh)


def _x_stop(ctx: Context, p: dict[str, Any]) -> None:
    st = Stop.from_payload(p)
    s = _session(ctx, st.session)
    if s["charge_point"] != ctx.sender:
        raise ContractError(codes.UNAUTHORIZED, "only the session's charge point stops it")
    if s["status"] != "open":
        raise ContractError(codes.INVALID_PAYLOAD, f"the session is {s['status']}, not open")
    pay = _close(ctx, st.session, s, "closed")
    if st.rec is not None:
        if not s["delivered_wh"]:
            raise ContractError(codes.INVALID_PAYLOAD, "nothing was delivered: no REC to retire")
        s["green_rec"] = certificates.retire_part(ctx, st.rec, s["delivered_wh"], s["driver"])
    ctx.state.set(session_key(st.session), s)
    ctx.emit(
        "ev.closed",
        session=st.session,
        delivered_wh=s["delivered_wh"],
        paid=pay.driver_pays,
        v2g_paid=pay.v2g_pay,
        green_rec=s.get("green_rec", ""),
    )


def _x_expire(ctx: Context, p: dict[str, Any]) -> None:
    e = Expire.from_payload(p)
    s = _session(ctx, e.session)
    if ctx.sender not in (s["driver"], s["charge_point"]):
        raise ContractError(codes.UNAUTHORIZED, "only the session's driver or charge point")
    if s["status"] not in ("authorised", "open"):
        raise ContractError(codes.INVALID_PAYLOAD, f"the session is already {s['status']}")
    if ctx.time_ms < s["expiry_ms"]:
        raise ContractError(
            codes.INVALID_PAYLOAD,
            f"the session expires at {s['expiry_ms']}, after block time {ctx.time_ms}",
        )
    pay = _close(ctx, e.session, s, "expired")
    ctx.state.set(session_key(e.session), s)
    ctx.emit("ev.expired", session=e.session, paid=pay.driver_pays, refund=pay.driver_refund)


def _validator(cls: Any) -> Any:
    def validate(p: dict[str, Any]) -> None:
        cls.from_payload(p)

    return validate


CONTRACT = Contract(
    "ev",
    (
        TxType("ev.authorise", frozenset({"prosumer"}), _validator(Authorise), _x_authorise),
        TxType("ev.open", frozenset({"charge_point"}), _validator(Open), _x_open),
        TxType("ev.reading", frozenset({"meter"}), _validator(Reading), _x_reading),
        TxType("ev.stop", frozenset({"charge_point"}), _validator(Stop), _x_stop),
        TxType("ev.expire", frozenset({"prosumer", "charge_point"}), _validator(Expire), _x_expire),
    ),
)


def shapable_load(
    session: dict[str, Any], horizon_start_ms: int, horizon_hours: int
) -> ShapableLoad:
    """An open session (its record in state) as the day-ahead ADMM's shapable load: the
    authorised energy between plug-in (``opened_ms``) and the expiry, at most the meter's
    rating (``market/ev.py``)."""
    if session.get("status") != "open":
        raise rules.SessionRuleError("only an open session has a plug-in time and a meter")
    return rules.shapable_load(
        session["max_energy_wh"] - session["delivered_wh"],
        session["rating_w"],
        session["opened_ms"],
        session["expiry_ms"],
        horizon_start_ms,
        horizon_hours,
    )

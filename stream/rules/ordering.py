"""Event-time order for snapshot rules: a lateness buffer with speculative evaluation.

The snapshot rules (:mod:`stream.rules.cold_chain`, :mod:`stream.rules.elevator`) need their
samples in event-time order. Devices do not always deliver them so (a spool flushing after
an outage, two connections racing), so this wrapper keeps per device:

* ``checkpoint`` - the rule's state folded over every snapshot older than
  ``watermark - allowed_lateness`` (final: nothing may be placed before it any more);
* ``buffer`` - the newer snapshots, sorted;
* ``head`` - the checkpoint with the buffer replayed on top: what the rule says *now*.

An in-order snapshot advances ``head`` by one step, so alerts are not delayed by the
lateness window. A snapshot that arrives out of order but within the window is inserted
into the buffer and ``head`` is recomputed from the checkpoint; transitions already sent
(same deterministic id) are not sent again, new ones are. If the late snapshot undoes an
alert already announced downstream, a RESOLVED is sent for it (a retraction, marked in
``values``). Snapshots older than the window are counted and ignored by the rules (the
readings themselves are still stored).

Two messages with the same timestamp are merged into one snapshot (a replay merges to
the same snapshot and changes nothing).

The buffer holds at most ``max_buffer`` snapshots per device (:data:`MAX_BUFFER`): a
device sending many samples inside the lateness window gets its oldest ones made final
early, so its state (parsed and written every batch) stays bounded.

Each snapshot is stepped once: a :class:`Chain` (in memory only, never persisted) keeps
the rule state after each buffered snapshot, so when snapshots pass the lateness window
the checkpoint becomes the state already computed for the head instead of being folded
again. The chain is used only where it is exactly what the fold would give: it hangs
off the very state objects it was made from (identity), and each link was stepped with
parameters equal to those in force. Anything else (state reloaded from the store,
parameters changed) falls back to the fold, so transitions and state are the same with
or without it. A snapshot placed out of order is stepped on from the chain's state
before it (not from the checkpoint) where the fold would give the same.

The JSON written for the state is made by :func:`dump_json` from the JSON of its parts
kept from the previous write (same bytes as ``model_dump_json``): per feed only the new
head and the new snapshots are serialised.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from ganzhi.contracts import AlertTransition, TransitionKind
from stream.rules import fast, identity
from stream.rules.excursion import from_us, to_us

S = TypeVar("S", bound=BaseModel)
P = TypeVar("P")
MAX_BUFFER = 1000
MAX_GENERATIONS = 256  # retracted episodes remembered per device

StepFn = Callable[[S, P, str, str, datetime, Mapping[str, float]],
                  tuple[S, list[AlertTransition]]]
OpenFn = Callable[[S, str, str], set[str]]


@dataclass(frozen=True)
class SnapshotRule(Generic[S, P]):
    """How to drive one rule module: its state type, its step and its open alerts."""

    state_type: type[S]
    step: StepFn[S, P]
    open_fingerprints: OpenFn[S]  # fingerprints FIRING (or clearing) in a state

    @property
    def ordered_type(self) -> type[OrderedState[S]]:
        t = _ORDERED.get(self.state_type)
        if t is None:
            t = _ORDERED[self.state_type] = OrderedState[self.state_type]  # type: ignore[name-defined]
        return t


_ORDERED: dict[type[Any], Any] = {}


class Generation(BaseModel):
    """How many times one episode was retracted (its next FIRING's generation)."""

    model_config = ConfigDict(frozen=True)

    n: int
    resolved_at: int | None = None  # event time of its (real) RESOLVED, once sent


class Snapshot(BaseModel):
    model_config = ConfigDict(frozen=True)

    ts: int  # event time, microseconds since the epoch
    values: dict[str, float]


class OrderedState(BaseModel, Generic[S]):
    """Per-device wrapper state; JSON round-trippable (a Faust table value)."""

    model_config = ConfigDict(frozen=True)

    watermark: int | None = None  # newest event time seen
    checkpoint: S | None = None  # None: the rule's initial state
    checkpoint_ts: int | None = None
    buffer: list[Snapshot] = []
    head: S | None = None
    sent: dict[str, int] = {}  # transition id -> event time, for the buffer's range
    announced: dict[str, AlertTransition] = {}  # open FIRING sent, by fingerprint
    late_count: int = 0
    # Episodes retracted at least once ("fingerprint|start µs"): their current generation.
    generations: dict[str, Generation] = {}


_TS = operator.attrgetter("ts")  # a Snapshot's sort key
_FIELDS = ("watermark", "checkpoint", "checkpoint_ts", "buffer", "head", "sent",
           "announced", "late_count", "generations")


def _construct(cls: type[OrderedState[S]], **values: Any) -> OrderedState[S]:
    """``cls(**values)`` without validating again what :func:`feed` built from validated
    parts (what ``model_construct`` does, for every field given)."""
    assert len(values) == len(_FIELDS)
    obj = cls.__new__(cls)
    object.__setattr__(obj, "__dict__", values)
    object.__setattr__(obj, "__pydantic_fields_set__", set(_FIELDS))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


# What this module's JSON of an OrderedState starts with when the parts are left out.
_BARE = '{"watermark":null,"checkpoint":null,"checkpoint_ts":null,"buffer":[],"head":null'

@dataclass
class Fragments:
    """The JSON of the parts of the state last written for a device (in memory only):
    ``states[i]`` is the JSON of ``state_objs[i]`` (None: not made), the checkpoint and
    the chain's states (the head last); ``snaps[i]`` that of ``buffer[i]``."""

    state_objs: list[Any]
    states: list[str | None]
    buffer: list[Any]
    snaps: list[str]


def _align(prev: Sequence[Any], vals: Sequence[Any], new: Sequence[Any]) -> list[Any]:
    """For each object of ``new``, the value kept for the very same object in ``prev``
    (``vals[i]`` for ``prev[i]``) or None. Lists that slid along (the oldest items
    dropped, newer ones appended) are matched in one pass."""
    out: list[Any] = [None] * len(new)
    if not prev or not new:
        return out
    first = new[0]
    for k, x in enumerate(prev):  # noqa: B007 (k is used after the loop)
        if x is first:
            break
    else:
        return out
    for m, (a, b, v) in enumerate(zip(prev[k:], new, vals[k:])):  # noqa: B905 (shortest)
        if a is not b:
            break
        out[m] = v
    return out


def dump_json(st: OrderedState[Any], known: Fragments | None = None,
              chain: Chain[Any] | None = None) -> tuple[str, Fragments | None]:
    """``st.model_dump_json()``, the same string, made from the JSON of its parts
    (checkpoint, head, buffered snapshots), each taken from ``known`` (the fragments
    returned with the previous state of the device) where it is the very same object:
    a snapshot stays in the buffer for many feeds, and the checkpoint is a state that
    was the head (and written) some feeds before. Returns the fragments to keep: those
    of the parts and of the chain's states (the next checkpoints)."""
    wm, cts, late = st.watermark, st.checkpoint_ts, st.late_count
    if not ((wm is None or type(wm) is int) and (cts is None or type(cts) is int)
            and type(late) is int):
        return st.model_dump_json(), None
    # The states whose JSON is worth keeping: the checkpoint, the chain's states (the
    # next checkpoints) ending with the head; without a chain the checkpoint and head.
    if chain is not None and chain.base is st.checkpoint and chain.end is st.head:
        objs: list[Any] = [chain.base, *chain.states]
    else:
        objs = [st.checkpoint, st.head]
    jsons: list[str | None] = (_align(known.state_objs, known.states, objs)
                               if known is not None else [None] * len(objs))
    if st.checkpoint is None:
        cp = "null"
    else:
        cp = jsons[0] or st.checkpoint.model_dump_json()
        jsons[0] = cp
    if st.head is None:
        head = "null"
    else:
        head = jsons[-1] or st.head.model_dump_json()
        jsons[-1] = head
    buffer = st.buffer
    snaps: list[str] = (_align(known.buffer, known.snaps, buffer)
                        if known is not None else [None] * len(buffer))  # type: ignore[list-item]
    for i, j in enumerate(snaps):
        if j is None:
            snaps[i] = buffer[i].model_dump_json()
    if st.sent or st.announced or st.generations:
        bare = _construct(type(st), watermark=None, checkpoint=None, checkpoint_ts=None,
                          buffer=[], head=None, sent=st.sent, announced=st.announced,
                          late_count=late, generations=st.generations).model_dump_json()
        if not bare.startswith(_BARE):
            return st.model_dump_json(), None
        tail = bare[len(_BARE):]
    else:
        tail = f',"sent":{{}},"announced":{{}},"late_count":{late},"generations":{{}}}}'
    raw = (f'{{"watermark":{"null" if wm is None else wm},"checkpoint":{cp},'
           f'"checkpoint_ts":{"null" if cts is None else cts},"buffer":[{",".join(snaps)}],'
           f'"head":{head}{tail}')
    return raw, Fragments(objs, jsons, buffer, snaps)


@dataclass
class Chain(Generic[S]):
    """In memory only: ``states[i]`` is the rule state after ``buffer[i]``, stepped from
    ``states[i - 1]`` (``base``, the checkpoint, for ``i == 0``) with ``params[i]``."""

    base: S
    states: list[S] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)
    # Made by stepping the buffer again for state read from the store: its links'
    # transitions were not checked against ``sent`` (see the reordering in feed).
    replayed: bool = False

    @property
    def end(self) -> S:
        return self.states[-1] if self.states else self.base

    def fits(self, checkpoint: S | None, buffer: Sequence[Snapshot], head: S | None) -> bool:
        return (checkpoint is self.base and head is self.end
                and len(self.states) == len(buffer))

    def prefix_is(self, n: int, params: Any) -> bool:
        """Whether the first ``n`` links were stepped with ``params``."""
        return all(p is params or p == params for p in self.params[:n])


@dataclass(frozen=True)
class FeedResult(Generic[S]):
    state: OrderedState[S]
    transitions: list[AlertTransition]
    late: int  # snapshots older than the allowed lateness, ignored
    reordered: int  # snapshots placed before newer ones already seen
    chain: Chain[S] | None = None  # for the next feed of ``state`` (None: none)


def _fold(rule: SnapshotRule[S, P], state: S, params: P, site_id: str, device_id: str,
          snaps: Sequence[Snapshot], chain: Chain[S] | None = None
          ) -> tuple[S, list[AlertTransition]]:
    """Step ``snaps`` in order; each state after a snapshot is appended to ``chain``."""
    out: list[AlertTransition] = []
    step = rule.step
    for s in snaps:
        state, trs = step(state, params, site_id, device_id, from_us(s.ts), s.values)
        if trs:
            out.extend(trs)
        if chain is not None:
            chain.states.append(state)
            chain.params.append(params)
    return state, out


def episode_key(t: AlertTransition) -> str:
    """One episode of one alert: its fingerprint and start (µs)."""
    return f"{t.fingerprint}|{to_us(t.started_at)}"


def retraction(fire: AlertTransition, at: int, generation: int = 0) -> AlertTransition:
    """The RESOLVED that takes back ``fire`` (of ``generation``): the same id as the
    RESOLVED the rule would make for that episode and generation."""
    tid = identity.transition_id(fire.fingerprint, TransitionKind.RESOLVED, fire.started_at,
                                 generation)
    return fire.model_copy(update={
        "transition_id": tid, "kind": TransitionKind.RESOLVED, "at": from_us(at),
        "summary": f"retracted (late data): {fire.summary}",
        "values": {**fire.values, "retracted": True},
    })


def _regenerate(t: AlertTransition, generations: Mapping[str, Generation]) -> AlertTransition:
    """``t`` with the id of its episode's current generation (unchanged for 0)."""
    g = generations.get(episode_key(t))
    if g is None or g.n == 0:
        return t
    return t.model_copy(update={
        "transition_id": identity.transition_id(t.fingerprint, t.kind, t.started_at, g.n),
        "values": {**t.values, "generation": g.n},
    })


def _prune_generations(generations: dict[str, Generation], checkpoint_ts: int | None,
                       limit: int = MAX_GENERATIONS) -> dict[str, Generation]:
    """Forget the episodes that can no longer make a transition: resolved before the
    checkpoint (final). At most ``limit`` kept (the newest starts) so state stays bounded."""
    if checkpoint_ts is not None:
        generations = {k: g for k, g in generations.items()
                       if g.resolved_at is None or g.resolved_at >= checkpoint_ts}
    if len(generations) > limit:
        newest = sorted(generations, key=lambda k: int(k.rsplit("|", 1)[1]))[-limit:]
        generations = {k: generations[k] for k in newest}
    return generations


def feed(
    st: OrderedState[S], rule: SnapshotRule[S, P], params: P, site_id: str, device_id: str,
    snapshots: Sequence[tuple[datetime, Mapping[str, float]]], allowed_lateness_s: float,
    max_buffer: int = MAX_BUFFER, chain: Chain[S] | None = None, rebuild: bool = False,
) -> FeedResult[S]:
    """Add snapshots of one device (any order); returns the transitions to send.

    ``chain``: the one the previous feed returned with ``st`` (used only if it still
    fits ``st``); ``rebuild``: without one, make it by stepping the buffer from the
    checkpoint again, used if that ends in a state equal to the head (once per state
    read from the store). The result is the same either way."""
    lateness = round(allowed_lateness_s * 1_000_000)
    buffer = list(st.buffer)
    wm = st.watermark
    late = reordered = 0
    in_order = True
    first = len(buffer)  # the first position of the buffer that changed
    for ts_dt, values in sorted(snapshots, key=lambda s: s[0]):
        ts = to_us(ts_dt)
        vals = {k: float(v) for k, v in values.items()}
        if (st.checkpoint_ts is not None and ts <= st.checkpoint_ts) or (
                wm is not None and ts < wm - lateness):
            late += 1
            continue
        i = bisect.bisect_left(buffer, ts, key=_TS)
        if i < len(buffer) and buffer[i].ts == ts:
            merged = {**buffer[i].values, **vals}
            if merged == buffer[i].values:
                continue  # a replay
            buffer[i] = fast.build(Snapshot, {"ts": ts, "values": merged})
            in_order = False
            first = min(first, i)
        else:
            if i < len(buffer):
                in_order = False
                reordered += 1
            buffer.insert(i, fast.build(Snapshot, {"ts": ts, "values": vals}))
            first = min(first, i)
        wm = ts if wm is None else max(wm, ts)

    checkpoint = st.checkpoint if st.checkpoint is not None else rule.state_type()
    if chain is not None and not chain.fits(st.checkpoint, st.buffer, st.head):
        chain = None
    if in_order:
        new = buffer[len(st.buffer):]
        head = st.head if st.head is not None else rule.state_type()
        if chain is None and rebuild:
            chain = Chain(checkpoint, replayed=True)
            _fold(rule, checkpoint, params, site_id, device_id, st.buffer, chain)
            if chain.end == head:
                head = chain.end  # equal: stepping on from it gives the same
            else:
                chain = None
        elif chain is not None:
            checkpoint = chain.base
            chain = Chain(chain.base, list(chain.states), list(chain.params),
                          chain.replayed)  # not shared
        head, produced = _fold(rule, head, params, site_id, device_id, new, chain)
    elif (chain is not None and first > 0 and not chain.replayed and not st.generations
          and chain.prefix_is(first, params)):
        # Placed after the first ``first`` snapshots: their states are in the chain,
        # stepped with these parameters, and the transitions they make were sent (or
        # found sent) when they were stepped, so the fold from the checkpoint would
        # only find them in ``sent`` again (no generations: ids unchanged). Step on
        # from the state after them.
        checkpoint = chain.base
        chain = Chain(chain.base, chain.states[:first], chain.params[:first])
        head, produced = _fold(rule, chain.states[-1], params, site_id, device_id,
                               buffer[first:], chain)
    else:
        chain = Chain(checkpoint)
        head, produced = _fold(rule, checkpoint, params, site_id, device_id, buffer, chain)

    if not produced and (in_order or not st.announced):
        # Nothing to send or take back (the usual case): the maps stay as they are
        # (never changed in place: shared with the state before).
        sent, generations, announced = st.sent, st.generations, st.announced
        out: list[AlertTransition] = []
    else:
        sent = dict(st.sent)
        generations = dict(st.generations)
        out = [t for t in (_regenerate(p, generations) for p in produced)
               if t.transition_id not in sent]
        announced = dict(st.announced)
    for t in out:
        g = generations.get(episode_key(t))
        if t.kind is TransitionKind.RESOLVED and g is not None:
            generations[episode_key(t)] = g.model_copy(update={"resolved_at": to_us(t.at)})
    if not in_order and wm is not None:
        still_open = rule.open_fingerprints(head, site_id, device_id)
        resolved_now = {t.fingerprint for t in out if t.kind is TransitionKind.RESOLVED}
        for fp, fire in st.announced.items():
            if fp not in still_open and fp not in resolved_now:
                key = episode_key(fire)
                n = generations[key].n if key in generations else 0
                out.append(retraction(fire, wm, n))
                # A later FIRING of this episode is a new one: the next generation.
                generations[key] = Generation(n=n + 1)
    for t in out:
        sent[t.transition_id] = to_us(t.at)
        if t.kind is TransitionKind.FIRING:
            announced[t.fingerprint] = t
        else:
            announced.pop(t.fingerprint, None)

    # Snapshots older than the lateness window become final: fold them into the checkpoint.
    cp_ts = st.checkpoint_ts
    n = bisect.bisect_left(buffer, wm - lateness, key=_TS) if wm is not None else 0
    if len(buffer) - n > max_buffer:  # bounded state: the oldest become final early
        n = len(buffer) - max_buffer
    if n:
        # (The lateness window, then the bound: one fold of the first n either way.)
        if chain is not None and chain.prefix_is(n, params):
            checkpoint = chain.states[n - 1]  # stepped already, for the head
            chain = Chain(checkpoint, chain.states[n:], chain.params[n:], chain.replayed)
        else:
            checkpoint, _ = _fold(rule, checkpoint, params, site_id, device_id, buffer[:n])
            chain = None
        cp_ts = buffer[n - 1].ts
        buffer = buffer[n:]
    if cp_ts is not None and sent:
        sent = {k: v for k, v in sent.items() if v >= cp_ts}
    new_state = _construct(
        rule.ordered_type,
        watermark=wm, checkpoint=checkpoint, checkpoint_ts=cp_ts, buffer=buffer, head=head,
        sent=sent, announced=announced, late_count=st.late_count + late,
        generations=_prune_generations(generations, cp_ts),
    )
    return FeedResult(new_state, out, late, reordered, chain)

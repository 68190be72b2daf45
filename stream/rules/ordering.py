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
``values``); so is one the head no longer holds open after an in-order snapshot (left
so by a late snapshot that reopened an episode already resolved). Snapshots older than
the window are counted and ignored by the rules (the readings themselves are still
stored).

Two messages with the same timestamp are merged into one snapshot (a replay merges to
the same snapshot and changes nothing).

The buffer holds at most ``max_buffer`` snapshots per device (:data:`MAX_BUFFER`): a
device sending many samples inside the lateness window gets its oldest ones made final
early, so its state (parsed and written every batch) stays bounded.

Each snapshot is stepped once: a :class:`Chain` (in memory only, never persisted) keeps
the rule state after each buffered snapshot, so when snapshots pass the lateness window
the checkpoint becomes the state already computed for the head instead of being folded
again. The chain is used only where it is exactly what the fold would give: it hangs
off the very state objects it was made from (identity), and all its links were stepped
with parameters equal to those in force. Anything else (state read back from the store,
parameters changed) refolds the buffer from the checkpoint, as for a snapshot out of
order, so transitions and state are the same with or without it: a change of parameters
applies to the buffered snapshots too, as it would after a restart. A snapshot placed
out of order is stepped on from the chain's state before it (not from the checkpoint)
where the fold would give the same.

The state is a :class:`~stream.rules.record.Record`. A checkpoint stores it without
the head (:func:`dump_json`): the head is the checkpoint with the buffer replayed on top,
so the first feed after the state was read back replays the buffer (as for a snapshot out
of order: transitions already sent are not sent again). Each part is encoded once: the
JSON of the checkpoint and of every buffered snapshot is kept in memory from the last
write (:class:`JsonParts`) and reused while the part is the very same object.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, NamedTuple, TypeVar

import msgspec

from ganzhi.contracts import AlertTransition, TransitionKind
from stream.rules import identity
from stream.rules.excursion import from_us, to_us
from stream.rules.record import Record, encode, evolve

S = TypeVar("S", bound=Record)
P = TypeVar("P")
MAX_BUFFER = 1000
MAX_GENERATIONS = 256  # retracted episodes remembered per device

# (state, parameters, site, device, event time in µs since the epoch, values)
StepFn = Callable[[S, P, str, str, int, Mapping[str, float]],
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
        """The wrapper's type with this rule's state (what a checkpoint is read as)."""
        return OrderedState[self.state_type]  # type: ignore[name-defined]


class Generation(Record, frozen=True):
    """How many times one episode was retracted (its next FIRING's generation)."""

    n: int
    resolved_at: int | None = None  # event time of its (real) RESOLVED, once sent


class Snapshot(Record, frozen=True):
    ts: int  # event time, microseconds since the epoch
    values: dict[str, float]


class OrderedState(Record, Generic[S], frozen=True):
    """Per-device wrapper state; JSON round-trippable (a Faust table value)."""

    watermark: int | None = None  # newest event time seen
    checkpoint: S | None = None  # None: the rule's initial state
    checkpoint_ts: int | None = None
    buffer: list[Snapshot] = msgspec.field(default_factory=list)
    head: S | None = None
    # Transition id -> event time, for the buffer's range (the latest time it was made:
    # a replay of the buffer may make it again until then).
    sent: dict[str, int] = msgspec.field(default_factory=dict)
    # Open FIRING sent, by fingerprint.
    announced: dict[str, AlertTransition] = msgspec.field(default_factory=dict)
    late_count: int = 0
    # Episodes retracted at least once ("fingerprint|start µs"): their current generation.
    generations: dict[str, Generation] = msgspec.field(default_factory=dict)


class _Written(msgspec.Struct, omit_defaults=True, gc=False):
    """What a checkpoint stores of an :class:`OrderedState` (read back as one): the
    fields in the same order, the head left out, the parts as JSON already made."""

    watermark: int | None = None
    checkpoint: msgspec.Raw | None = None
    checkpoint_ts: int | None = None
    buffer: list[msgspec.Raw] = msgspec.field(default_factory=list)
    sent: dict[str, int] = msgspec.field(default_factory=dict)
    announced: dict[str, AlertTransition] = msgspec.field(default_factory=dict)
    late_count: int = 0
    generations: dict[str, Generation] = msgspec.field(default_factory=dict)


@dataclass
class JsonParts:
    """In memory only: the JSON of the parts of the state last written for a device:
    the checkpoint, and ``raws[i]`` of ``buffer[i]`` (the buffer then written)."""

    checkpoint: tuple[Any, msgspec.Raw] | None = None
    buffer: list[Snapshot] = field(default_factory=list)
    raws: list[msgspec.Raw] = field(default_factory=list)


def _kept(old: list[Snapshot], raws: list[msgspec.Raw], new: list[Snapshot]
          ) -> list[msgspec.Raw | None]:
    """For each snapshot of ``new``, the JSON kept for the very same object in ``old``
    (or None). The buffer slides (the oldest dropped, newer ones appended): the run of
    ``new`` that continues ``old`` is found from where ``new[0]`` sits in it."""
    out: list[msgspec.Raw | None] = [None] * len(new)
    if not old or not new:
        return out
    first = new[0]
    k = next((k for k, s in enumerate(old) if s is first), None)
    if k is None:
        return out
    for i, (a, b) in enumerate(zip(old[k:], new, strict=False)):
        if a is not b:
            break
        out[i] = raws[k + i]
    return out


def dump_json(st: OrderedState[Any], known: JsonParts | None = None
              ) -> tuple[str, JsonParts]:
    """The JSON a checkpoint stores for ``st``, and the parts to keep for the next
    write. Parts that are the very objects written last time are not encoded again."""
    known = known or JsonParts()
    cp: msgspec.Raw | None = None
    kept_cp = None
    if st.checkpoint is not None:
        if known.checkpoint is not None and known.checkpoint[0] is st.checkpoint:
            cp = known.checkpoint[1]
        else:
            cp = msgspec.Raw(encode(st.checkpoint))
        kept_cp = (st.checkpoint, cp)
    buffer = st.buffer
    raws = [raw if raw is not None else msgspec.Raw(encode(s))
            for raw, s in zip(_kept(known.buffer, known.raws, buffer), buffer, strict=True)]
    out = _Written(watermark=st.watermark, checkpoint=cp, checkpoint_ts=st.checkpoint_ts,
                   buffer=raws, sent=st.sent, announced=st.announced,
                   late_count=st.late_count, generations=st.generations)
    return encode(out).decode(), JsonParts(kept_cp, buffer, raws)


_TS = operator.attrgetter("ts")  # a Snapshot's sort key


@dataclass
class Chain(Generic[S]):
    """In memory only: ``states[i]`` is the rule state after ``buffer[i]``, stepped from
    ``states[i - 1]`` (``base``, the checkpoint, for ``i == 0``) with ``params``. Its
    links' transitions were all checked against ``sent`` when they were made."""

    base: S
    params: Any
    states: list[S] = field(default_factory=list)

    @property
    def end(self) -> S:
        return self.states[-1] if self.states else self.base

    def fits(self, st: OrderedState[S], params: Any) -> bool:
        """Whether this chain is ``st``'s buffer stepped from its checkpoint with
        ``params`` (``st`` the very state it was returned with)."""
        return (st.checkpoint is self.base and st.head is self.end
                and len(self.states) == len(st.buffer)
                and (self.params is params or self.params == params))


class FeedResult(NamedTuple, Generic[S]):  # (a tuple: made at every feed)
    state: OrderedState[S]
    transitions: list[AlertTransition]
    late: int  # snapshots older than the allowed lateness, ignored
    reordered: int  # snapshots placed before newer ones already seen
    chain: Chain[S]  # for the next feed of ``state``


def _fold(rule: SnapshotRule[S, P], state: S, params: P, site_id: str, device_id: str,
          snaps: Sequence[Snapshot], chain: Chain[S]) -> tuple[S, list[AlertTransition]]:
    """Step ``snaps`` in order; each state after a snapshot is appended to ``chain``."""
    out: list[AlertTransition] = []
    step = rule.step
    states = chain.states
    for s in snaps:
        state, trs = step(state, params, site_id, device_id, s.ts, s.values)
        if trs:
            out.extend(trs)
        states.append(state)
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
        "summary": f"retracted (late data or a rules change): {fire.summary}",
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
    max_buffer: int = MAX_BUFFER, chain: Chain[S] | None = None,
) -> FeedResult[S]:
    """Add snapshots of one device (any order); returns the transitions to send.

    ``chain``: the one the previous feed returned with ``st``, used only if it still
    fits ``st`` and ``params``; without one the buffer is stepped again from the
    checkpoint. The result is the same either way."""
    lateness = round(allowed_lateness_s * 1_000_000)
    buffer = list(st.buffer)
    wm = st.watermark
    late = reordered = 0
    fresh = st.checkpoint is None and not st.buffer
    if chain is not None and not chain.fits(st, params):
        chain = None
    # Read back from a checkpoint (which keeps no head), or parameters changed: the head
    # is made by replaying the buffer from the checkpoint, as for a snapshot placed out
    # of order.
    in_order = chain is not None or fresh
    first = len(buffer) if in_order else 0  # the first position of the buffer that changed
    for ts_dt, values in (snapshots if len(snapshots) == 1
                          else sorted(snapshots, key=lambda s: s[0])):
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
            buffer[i] = Snapshot(ts=ts, values=merged)
            in_order = False
            first = min(first, i)
        else:
            if i < len(buffer):
                in_order = False
                reordered += 1
            buffer.insert(i, Snapshot(ts=ts, values=vals))
            first = min(first, i)
        wm = ts if wm is None else max(wm, ts)

    checkpoint = st.checkpoint if st.checkpoint is not None else rule.state_type()
    if in_order:
        if chain is None:  # fresh: nothing stepped yet
            chain = Chain(checkpoint, params)
        else:
            checkpoint = chain.base
            chain = Chain(chain.base, params, list(chain.states))  # not shared
        head, produced = _fold(rule, chain.end, params, site_id, device_id,
                               buffer[len(st.buffer):], chain)
    elif chain is not None and first > 0 and not st.generations:
        # Placed after the first ``first`` snapshots: their states are in the chain,
        # stepped with these parameters, and the transitions they make were sent (or
        # found sent) when they were stepped, so the fold from the checkpoint would
        # only find them in ``sent`` again (no generations: ids unchanged). Step on
        # from the state after them.
        checkpoint = chain.base
        chain = Chain(chain.base, params, chain.states[:first])
        head, produced = _fold(rule, chain.states[-1], params, site_id, device_id,
                               buffer[first:], chain)
    else:
        chain = Chain(checkpoint, params)
        head, produced = _fold(rule, checkpoint, params, site_id, device_id, buffer, chain)

    if not produced and not st.announced:
        # Nothing to send or take back (the usual case): the maps stay as they are
        # (never changed in place: shared with the state before).
        sent, generations, announced = st.sent, st.generations, st.announced
        out: list[AlertTransition] = []
    else:
        sent = dict(st.sent)
        generations = dict(st.generations)
        out = []
        for t in (_regenerate(p, generations) for p in produced):
            at = sent.get(t.transition_id)
            if at is None:
                out.append(t)
            elif (t_at := to_us(t.at)) > at:
                # Sent already, and now made at a later time (the data before it
                # changed): remembered until that time is final, or a replay of the
                # buffer would find it unsent (and its episode's generation likewise).
                sent[t.transition_id] = t_at
                g = generations.get(key := episode_key(t))
                if t.kind is TransitionKind.RESOLVED and g is not None and g.resolved_at:
                    generations[key] = evolve(g, resolved_at=max(g.resolved_at, t_at))
        announced = dict(st.announced)
    for t in out:
        g = generations.get(episode_key(t))
        if t.kind is TransitionKind.RESOLVED and g is not None:
            generations[episode_key(t)] = evolve(g, resolved_at=to_us(t.at))
    if st.announced and wm is not None:
        # An alert announced open that the head no longer holds open, and that was not
        # resolved just now, is taken back. Also in order: a late sample that reopened
        # an episode already resolved (its RESOLVED, made again, is not sent twice)
        # leaves the alert announced after it with nothing else to close it.
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
        # (The lateness window, then the bound.) Stepped already, for the head; this
        # feed's own chain, shared with no state: cut in place.
        checkpoint = chain.states[n - 1]
        chain.base = checkpoint
        del chain.states[:n]
        cp_ts = buffer[n - 1].ts
        buffer = buffer[n:]
    if cp_ts is not None and sent:
        sent = {k: v for k, v in sent.items() if v >= cp_ts}
    new_state: OrderedState[S] = OrderedState(
        watermark=wm, checkpoint=checkpoint, checkpoint_ts=cp_ts, buffer=buffer, head=head,
        sent=sent, announced=announced, late_count=st.late_count + late,
        generations=_prune_generations(generations, cp_ts) if generations else generations,
    )
    return FeedResult(new_state, out, late, reordered, chain)

"""What to send first over a small downlink: value per byte, novelty, and a form for each frame.

A rover or an orbiter sees far more than it can send: a pass is followed by a contact window of a
few hundred kilobytes to megabytes. Sending frames oldest first (what a plain link does) delivers
the defects in proportion to the budget, about 5 % of them at a budget of 5 %. The detector already
says which frames are unusual; the planner spends the window on those first, in the cheapest form
that still shows them, and does not spend it twice on one defect.

Value of sending candidate ``c`` in form ``f`` (see :class:`PlannerConfig` for the constants):

    value = interest(c) * novelty(c) * age(c) * fidelity(f)

- ``interest``: the detector's decision, then its raw score's rank among the candidates on offer
  with the same decision (a rank, so any model's raw scale works without its threshold): a
  flagged frame lies in (0.5, 1], a frame the detector passed in (0.05, 0.1] (``routine_weight``
  = 0.1), the highest score of each group at its top.
- ``novelty``: 1 for something not yet sent; ``sent_tag_weight`` (0.02) when a frame with the same
  tag (the same defect, as the detector's tracker named it) has been sent, in this window or an
  earlier one; ``duplicate_weight`` (0.2) when the frame's signature lies within
  ``duplicate_distance`` (cosine) of a sent frame's (the same view again).
- ``age``: up to ``age_weight`` (10 %) more for a frame that has waited ``age_scale_ns`` (an hour)
  or longer, so nothing waits for ever behind a stream of fresher near-ties, and the oldest frames
  (the first a full store overwrites) go out first among equals.
- ``fidelity``: how much of what the full frame shows a form keeps (:data:`FIDELITY`).

The form: a frame of high value (flagged and novel, ``novelty`` >= 0.5) goes in a form keeping at
least ``high_min_fidelity`` (0.9: ``jpeg90``, or ``crop+jpeg50``, the defect's crops losslessly
with the frame at JPEG 50 for context) when one fits in what is left of the window, else in the
best that fits; every other frame in a form keeping at most ``routine_max_fidelity`` (0.7:
``jpeg50``, ``crop`` or ``meta``). Among the allowed forms, the one with most value per byte.

The plan is greedy: repeatedly the candidate with most value per byte in its best form that still
fits, expedited before normal before bulk whatever their value; after each pick the novelty of
the rest is updated (its tag and signature now count as sent). An item with no form that fits the
whole window is never chosen (:func:`oversized` lists them for the caller to report). Everything
is deterministic: ties go to the older frame, then the lower sequence number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

import cv2
import numpy as np

PRIORITIES = ("expedited", "normal", "bulk")
META = "meta"
FULL = "full"

#: What each form keeps of what the full frame shows (the value it is credited with). A JPEG at
#: quality 90 is visually lossless for a scientist; at 50 it shows the scene but not fine texture;
#: crops alone show the defect without its context; metadata (stamp, pose, score, boxes) says
#: only that something is there, enough to request it in a later window.
FIDELITY: Mapping[str, float] = MappingProxyType(
    {"full": 1.0, "jpeg90": 0.95, "crop+jpeg50": 0.9, "jpeg50": 0.7, "crop": 0.6, "meta": 0.01}
)

#: bytes of a metadata record (stamp, pose, scores, sizes of the other forms), plus per box
META_BYTES = 256
META_BYTES_PER_BOX = 16


@dataclass(frozen=True)
class Candidate:
    """A stored frame the planner may send.

    ``score``: the detector's raw image score (higher is more anomalous); ``flagged``: its
    decision at the threshold in force. ``tag``: the defect tracker's name for what the frame
    shows ("" none; frames of one defect share it). ``signature``: a small vector describing the
    frame (:func:`signature`) to spot near-duplicates; None skips that check. ``forms``: each way
    the frame can be sent and its size in bytes (:func:`forms_for`).
    """

    seq: int
    stamp_ns: int
    score: float
    tag: str
    signature: np.ndarray | None = field(compare=False)
    priority: str
    forms: Mapping[str, int]
    flagged: bool = False

    def __post_init__(self) -> None:
        if self.priority not in PRIORITIES:
            raise ValueError(f"priority {self.priority!r}; expected one of {PRIORITIES}")
        if not self.forms:
            raise ValueError(f"candidate {self.seq} has no form to be sent in")
        bad = {k: v for k, v in self.forms.items() if int(v) != v or v <= 0}
        if bad:
            raise ValueError(f"candidate {self.seq}: form sizes must be positive bytes, got {bad}")


@dataclass(frozen=True)
class Window:
    """A contact: when it opens (ages are measured to this) and how many bytes it carries."""

    start_ns: int
    bytes: int


@dataclass(frozen=True)
class Choice:
    """One item of a plan: send frame ``seq`` as ``form`` (``bytes`` long), credited ``value``."""

    seq: int
    form: str
    bytes: int
    value: float


class DownlinkPlanner(Protocol):
    """What the evaluation needs of a planner; each keeps what it sent across windows."""

    name: str

    def plan(self, candidates: Sequence[Candidate], window: Window) -> list[Choice]: ...


def _encodable(image: np.ndarray) -> list[np.ndarray]:
    """The image as 8-bit planes a codec takes (gray or BGR; more bands one plane each): wider
    types are scaled to their range, so the sizes are those of an 8-bit product."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        if image.dtype.kind in "ui":
            image = (image.astype(np.float64) / np.iinfo(image.dtype).max * 255.0).round()
        else:
            finite = np.nan_to_num(image.astype(np.float64))
            low, high = float(finite.min()), float(finite.max())
            image = (finite - low) / max(high - low, 1e-12) * 255.0
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return [image]
    if image.shape[2] == 1:
        return [image[:, :, 0]]
    if image.shape[2] in (3, 4):
        return [np.ascontiguousarray(image[:, :, 2::-1])]  # RGB(A) to BGR for OpenCV
    return [np.ascontiguousarray(image[:, :, k]) for k in range(image.shape[2])]


def _encoded_bytes(planes: Sequence[np.ndarray], ext: str, params: Sequence[int] = ()) -> int:
    total = 0
    for plane in planes:
        ok, buffer = cv2.imencode(ext, plane, list(params))
        if not ok:
            raise ValueError(f"OpenCV could not encode a {plane.shape} plane as {ext}")
        total += int(buffer.size)
    return total


def forms_for(
    image: np.ndarray,
    regions_boxes: Sequence[tuple[int, int, int, int]],
    raw_bytes: int | None = None,
    pad: int = 8,
) -> dict[str, int]:
    """The frame's forms and their real encoded sizes, so a budget is in the link's bytes.

    ``full``: the raw frame (``raw_bytes``, by default the array's own size); ``jpeg90`` and
    ``jpeg50``: OpenCV JPEG at those qualities; ``crop``: PNG crops of the defect boxes
    ``(x, y, w, h)``, each padded by ``pad`` px for context and clipped to the frame (only with
    boxes); ``crop+jpeg50``: both; ``meta``: a metadata record (:data:`META_BYTES` plus
    :data:`META_BYTES_PER_BOX` per box).
    """
    return _forms(_encodable(image), image, regions_boxes, raw_bytes, pad)


def _forms(
    planes: Sequence[np.ndarray], image: np.ndarray,
    regions_boxes: Sequence[tuple[int, int, int, int]], raw_bytes: int | None, pad: int,
) -> dict[str, int]:  # fmt: skip
    height, width = planes[0].shape[:2]
    forms = {
        FULL: int(raw_bytes if raw_bytes is not None else np.asarray(image).nbytes),
        "jpeg90": _encoded_bytes(planes, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 90)),
        "jpeg50": _encoded_bytes(planes, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 50)),
    }
    crops = 0
    for box in regions_boxes:
        area = padded_box(box, width, height, pad)
        if area is not None:
            x0, y0, x1, y1 = area
            crops += _encoded_bytes([p[y0:y1, x0:x1] for p in planes], ".png")
    if crops:
        forms["crop"] = crops
        forms["crop+jpeg50"] = crops + forms["jpeg50"]
    forms[META] = META_BYTES + META_BYTES_PER_BOX * len(regions_boxes)
    return forms


def padded_box(
    box: Sequence[float], width: int, height: int, pad: int = 8
) -> tuple[int, int, int, int] | None:
    """A defect box ``(x, y, w, h)`` padded by ``pad`` px for context and clipped to the frame,
    as ``(x0, y0, x1, y1)``; None if nothing of it is inside. Sizing a crop (here) and cutting it
    (the recorder) must agree, so both use this."""
    x, y, w, h = box
    x0, y0 = max(0, int(x) - pad), max(0, int(y) - pad)
    x1, y1 = min(width, int(x + w) + pad), min(height, int(y + h) + pad)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def signature(image: np.ndarray, size: int = 8) -> np.ndarray:
    """A ``size`` x ``size`` grey thumbnail, zero mean and unit length (float32, flattened): two
    views of the same scene lie close in cosine distance whatever their exposure; a flat frame
    gives zeros (never anyone's duplicate)."""
    return _signature(_encodable(image), size)


def _signature(planes: Sequence[np.ndarray], size: int = 8) -> np.ndarray:
    # shrink each 8-bit plane first (OpenCV, a fraction of a millisecond at 640x480), then
    # average the few thumbnail values: converting the whole frame to float first cost 5 ms
    thumbs = [cv2.resize(p, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
              for p in planes]  # fmt: skip
    thumb = np.mean([t if t.ndim == 2 else t.mean(axis=2) for t in thumbs], axis=0).ravel()
    thumb = thumb - thumb.mean()
    norm = float(np.linalg.norm(thumb))
    return (thumb / norm if norm > 1e-6 else np.zeros_like(thumb)).astype(np.float32)


def describe(
    image: np.ndarray,
    regions_boxes: Sequence[tuple[int, int, int, int]],
    raw_bytes: int | None = None,
    pad: int = 8,
) -> tuple[dict[str, int], np.ndarray]:
    """:func:`forms_for` and :func:`signature` of one frame, its 8-bit planes made once."""
    planes = _encodable(image)
    return _forms(planes, image, regions_boxes, raw_bytes, pad), _signature(planes)


def oversized(candidates: Sequence[Candidate], window: Window) -> list[int]:
    """Sequence numbers of the candidates that no form lets through this window, however empty."""
    return [c.seq for c in candidates if min(c.forms.values()) > window.bytes]


@dataclass(frozen=True)
class PlannerConfig:
    """The value rule's constants (see the module docstring). Set a priori, not tuned on the
    benchmark's streams."""

    routine_weight: float = 0.1
    sent_tag_weight: float = 0.02
    duplicate_distance: float = 0.1
    duplicate_weight: float = 0.2
    age_weight: float = 0.1
    age_scale_ns: int = 3_600_000_000_000
    high_min_fidelity: float = 0.9
    routine_max_fidelity: float = 0.7
    fidelity: Mapping[str, float] = field(default_factory=lambda: FIDELITY)


@dataclass
class _Table:
    """The candidates of one plan as arrays: bytes per form (inf where absent), fidelity per form,
    and the per-candidate parts of the value."""

    names: list[str]
    sizes: np.ndarray  # (n, F) bytes, inf where the candidate lacks the form
    fidelity: np.ndarray  # (F,)
    interest: np.ndarray  # (n,)
    age: np.ndarray  # (n,)


def _rank_fraction(scores: np.ndarray) -> np.ndarray:
    """Each score's rank among them as a fraction in (0, 1] (ties share their mean rank)."""
    n = len(scores)
    if n == 0:
        return np.zeros(0)
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(n)
    ranks[order] = np.arange(1, n + 1)
    _, inverse = np.unique(scores, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks)
    counts = np.bincount(inverse)
    return (sums / counts)[inverse] / n


def _table(candidates: Sequence[Candidate], window: Window, config: PlannerConfig) -> _Table:
    names = [f for f in config.fidelity if any(f in c.forms for c in candidates)]
    sizes = np.array([[c.forms.get(f, np.inf) for f in names] for c in candidates], np.float64)
    sizes = sizes.reshape(len(candidates), len(names))
    scores = np.array([c.score for c in candidates], np.float64)
    flagged = np.array([c.flagged for c in candidates], bool)
    rank = np.zeros(len(candidates))
    for group in (flagged, ~flagged):  # ranked within the group: flagged frames span [0.5, 1]
        rank[group] = _rank_fraction(scores[group])
    interest = np.where(flagged, 1.0, config.routine_weight) * (0.5 + 0.5 * rank)
    waited = np.array([window.start_ns - c.stamp_ns for c in candidates], np.float64)
    age = 1.0 + config.age_weight * np.clip(waited / max(config.age_scale_ns, 1), 0.0, 1.0)
    fidelity = np.array([config.fidelity[f] for f in names], np.float64)
    return _Table(names, sizes, fidelity, interest, age)


def best_forms(
    sizes: np.ndarray,
    fidelity: np.ndarray,
    worth: np.ndarray,
    high: np.ndarray,
    remaining: int,
    config: PlannerConfig,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the form with most value per byte under the form rule among those that fit in
    ``remaining`` bytes: index into the columns (-1: none) and its value per byte.

    ``worth``: each row's value before fidelity; ``high``: rows held to ``high_min_fidelity``
    (falling back to any form that fits), the rest capped at ``routine_max_fidelity``;
    ``allowed``: an optional (n, F) mask of forms a row may still use."""
    fits = sizes <= remaining
    if allowed is not None:
        fits &= allowed
    good = fidelity >= config.high_min_fidelity
    routine = fidelity <= config.routine_max_fidelity
    preferred = np.where(high[:, None], fits & good[None, :], fits & routine[None, :])
    fallback = high & ~preferred.any(axis=1)
    usable = np.where(fallback[:, None], fits, preferred)
    per_byte = np.where(usable, worth[:, None] * fidelity[None, :] / sizes, -np.inf)
    if per_byte.shape[1] == 0:
        return np.full(len(worth), -1), np.full(len(worth), -np.inf)
    column = np.argmax(per_byte, axis=1)
    best = per_byte[np.arange(len(worth)), column]
    return np.where(np.isfinite(best), column, -1), best


def _signature_rows(candidates: Sequence[Candidate]) -> tuple[np.ndarray, np.ndarray]:
    """The candidates' signatures as unit rows of one matrix (zeros where None) and which exist."""
    present = np.array([c.signature is not None for c in candidates], bool)
    dims = {np.asarray(c.signature).size for c in candidates if c.signature is not None}
    if len(dims) > 1:
        raise ValueError(f"signatures of different lengths {sorted(dims)} cannot be compared")
    rows = np.zeros((len(candidates), dims.pop() if dims else 0))
    for i, cand in enumerate(candidates):
        if cand.signature is not None:
            rows[i] = np.asarray(cand.signature, np.float64).ravel()
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12), present


class Planner:
    """The value-per-byte planner with novelty (module docstring); remembers what it sent (tags,
    unit signatures, frames) across windows, as the onboard planner must. Signatures must all
    have one length."""

    name = "planner"

    def __init__(self, config: PlannerConfig | None = None) -> None:
        self.config = config or PlannerConfig()
        self.sent_tags: set[str] = set()
        self.sent_signatures: list[np.ndarray] = []
        self.delivered: set[int] = set()  # frames sent in a form showing them (not meta)
        self.meta_sent: set[int] = set()

    def _novelty(self, candidates: Sequence[Candidate], sigs: np.ndarray, has: np.ndarray
                 ) -> np.ndarray:  # fmt: skip
        """Novelty against everything sent in earlier windows."""
        c = self.config
        novelty = np.ones(len(candidates))
        seen = np.array([bool(x.tag) and x.tag in self.sent_tags for x in candidates], bool)
        novelty[seen] = c.sent_tag_weight
        if self.sent_signatures and has.any():
            similarity = (sigs @ np.stack(self.sent_signatures).T).max(axis=1)
            near = has & (1.0 - similarity < c.duplicate_distance)
            novelty[near] = np.minimum(novelty[near], c.duplicate_weight)
        return novelty

    def memory(self, max_signatures: int = 4096) -> dict[str, Any]:
        """What the planner must remember across a restart to keep counting a defect once: the
        tags and signatures it sent (the newest ``max_signatures``), the frames it sent as
        metadata only. JSON-able; :meth:`remember` reads it back."""
        return {
            "tags": sorted(self.sent_tags),
            "signatures": [[round(float(v), 5) for v in s]
                           for s in self.sent_signatures[-max_signatures:]],
            "meta_sent": sorted(self.meta_sent),
        }  # fmt: skip

    def remember(self, memory: Mapping[str, Any]) -> None:
        """Take back :meth:`memory`'s record (added to what this planner already knows)."""
        self.sent_tags.update(str(t) for t in memory.get("tags", ()))
        for row in memory.get("signatures", ()):
            sig = np.asarray(row, np.float64)
            self.sent_signatures.append(sig / max(float(np.linalg.norm(sig)), 1e-12))
        self.meta_sent.update(int(s) for s in memory.get("meta_sent", ()))

    def _record(self, cand: Candidate, form: str, sig: np.ndarray | None) -> None:
        if form == META:
            self.meta_sent.add(cand.seq)
            return
        self.delivered.add(cand.seq)
        if cand.tag:
            self.sent_tags.add(cand.tag)
        if sig is not None:
            self.sent_signatures.append(sig)

    def plan(self, candidates: Sequence[Candidate], window: Window) -> list[Choice]:
        """The window's plan, in sending order (see the module docstring)."""
        c = self.config
        offered = [x for x in candidates if x.seq not in self.delivered]
        if not offered or window.bytes <= 0:
            return []
        table = _table(offered, window, c)
        allowed = np.ones(table.sizes.shape, bool)
        if META in table.names:
            allowed[:, table.names.index(META)] = [x.seq not in self.meta_sent for x in offered]
        sigs, has = _signature_rows(offered)
        novelty = self._novelty(offered, sigs, has)
        tags = np.array([x.tag for x in offered], object)
        flagged = np.array([x.flagged for x in offered], bool)
        rank = np.array([PRIORITIES.index(x.priority) for x in offered])
        stamps = np.array([x.stamp_ns for x in offered], np.int64)
        seqs = np.array([x.seq for x in offered], np.int64)
        pool = np.arange(len(offered))
        remaining = int(window.bytes)
        plan: list[Choice] = []
        while len(pool):
            worth = table.interest[pool] * novelty[pool] * table.age[pool]
            high = flagged[pool] & (novelty[pool] >= 0.5)
            column, per_byte = best_forms(
                table.sizes[pool], table.fidelity, worth, high, remaining, c, allowed[pool]
            )
            live = column >= 0
            if not live.any():
                break
            keys = (seqs[pool][live], stamps[pool][live], -per_byte[live], rank[pool][live])
            pick = int(np.flatnonzero(live)[np.lexsort(keys)[0]])
            i, col = int(pool[pick]), int(column[pick])
            form, size = table.names[col], int(table.sizes[i, col])
            value = float(worth[pick] * table.fidelity[col])
            plan.append(Choice(offered[i].seq, form, size, value))
            remaining -= size
            self._record(offered[i], form, sigs[i] if has[i] else None)
            pool = pool[live & (pool != i)]  # a row with no form that fits now never will
            if form != META:  # what it shows now counts as sent
                if offered[i].tag:
                    same = tags[pool] == offered[i].tag
                    novelty[pool[same]] = np.minimum(novelty[pool[same]], c.sent_tag_weight)
                if has[i]:
                    near = pool[has[pool] & (1.0 - sigs[pool] @ sigs[i] < c.duplicate_distance)]
                    novelty[near] = np.minimum(novelty[near], c.duplicate_weight)
        return plan


def _full_size(candidate: Candidate) -> tuple[str, int]:
    """The full frame, or the largest form a candidate has when it has no ``full``."""
    if FULL in candidate.forms:
        return FULL, int(candidate.forms[FULL])
    form = max(candidate.forms, key=lambda f: (candidate.forms[f], f))
    return form, int(candidate.forms[form])


class FifoPlanner:
    """A plain link: oldest frame first, full size, each in turn; the first that does not fit ends
    the window (the head of the queue blocks it), except a frame larger than any window, which is
    skipped as never sendable."""

    name = "fifo"

    def __init__(self) -> None:
        self.delivered: set[int] = set()

    def plan(self, candidates: Sequence[Candidate], window: Window) -> list[Choice]:
        remaining = int(window.bytes)
        plan: list[Choice] = []
        for cand in sorted(candidates, key=lambda c: (c.stamp_ns, c.seq)):
            if cand.seq in self.delivered:
                continue
            form, size = _full_size(cand)
            if size > window.bytes:
                continue
            if size > remaining:
                break
            plan.append(Choice(cand.seq, form, size, 1.0))
            remaining -= size
            self.delivered.add(cand.seq)
        return plan


class RandomPlanner:
    """Full frames in a seeded random order, as many as fit (a frame that does not fit is passed
    over for the next): what a prioritiser without information achieves. Its generator lives on
    across windows, so a run is repeatable from the seed."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.delivered: set[int] = set()

    def plan(self, candidates: Sequence[Candidate], window: Window) -> list[Choice]:
        offered = sorted((c for c in candidates if c.seq not in self.delivered),
                         key=lambda c: (c.stamp_ns, c.seq))  # fmt: skip
        remaining = int(window.bytes)
        plan: list[Choice] = []
        for k in self.rng.permutation(len(offered)).tolist():
            form, size = _full_size(offered[k])
            if size <= remaining:
                plan.append(Choice(offered[k].seq, form, size, 1.0))
                remaining -= size
                self.delivered.add(offered[k].seq)
        return plan


class ScoreOnlyPlanner:
    """Highest raw score first, no novelty, as many as fit (a frame that does not fit is passed
    over). ``form_rule`` False: full frames (ranking alone); True: the :class:`Planner`'s form rule
    by the detector's decision (flagged frames at >= ``high_min_fidelity``, the rest capped at
    ``routine_max_fidelity``), so the difference to the planner is novelty and value per byte."""

    def __init__(self, form_rule: bool = False, config: PlannerConfig | None = None) -> None:
        self.form_rule = form_rule
        self.config = config or PlannerConfig()
        self.name = "score_only+forms" if form_rule else "score_only"
        self.delivered: set[int] = set()
        self.meta_sent: set[int] = set()

    def _form(self, cand: Candidate, remaining: int) -> tuple[str, int] | None:
        if not self.form_rule:
            form, size = _full_size(cand)
            return (form, size) if size <= remaining else None
        names = [f for f in self.config.fidelity if f in cand.forms]
        if cand.seq in self.meta_sent and META in names:
            names.remove(META)
        sizes = np.array([[cand.forms[f] for f in names]], np.float64).reshape(1, len(names))
        fidelity = np.array([self.config.fidelity[f] for f in names], np.float64)
        column, _ = best_forms(sizes, fidelity, np.ones(1), np.array([cand.flagged]), remaining,
                               self.config)  # fmt: skip
        if column[0] < 0:
            return None
        return names[int(column[0])], int(sizes[0, int(column[0])])

    def plan(self, candidates: Sequence[Candidate], window: Window) -> list[Choice]:
        remaining = int(window.bytes)
        plan: list[Choice] = []
        order = sorted((c for c in candidates if c.seq not in self.delivered),
                       key=lambda c: (-c.score, c.stamp_ns, c.seq))  # fmt: skip
        for cand in order:
            chosen = self._form(cand, remaining)
            if chosen is None:
                continue
            form, size = chosen
            plan.append(Choice(cand.seq, form, size, float(cand.score)))
            remaining -= size
            (self.meta_sent if form == META else self.delivered).add(cand.seq)
        return plan

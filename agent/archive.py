"""The evolutionary archive (DESIGN.md "The archive"): islands of niches over the session's candidates.

SQLite is the only truth. An Archive is a pure function of the stored candidates (with their
evaluations and profiles) and the seed: `Archive.from_store(store, before_round=r)` replays the rows
of rounds < r in order, with the migrations that fell between them, so a resumed session (or a node
replayed after a SIGKILL) rebuilds exactly the archive, and makes exactly the choices, it had.

Niche = (the Judge's strategy label, the profile's bound class, a tile-size bucket of the source).
Each island keeps one holder per niche; a newcomer replaces the holder only when faster by more
than the measured timing noise. Every `migrate_every` generations each island's best is offered
to the next island (a ring).
"""

from __future__ import annotations

import difflib
import io
import keyword
import math
import random
import re
import tokenize
from dataclasses import dataclass, field

DEFAULT_ISLANDS = 3
MIGRATE_EVERY = 4  # generations (rounds) between migrations
NOISE_FLOOR = 0.02  # the least relative difference called "faster" (see margin)
MIN_REPS = 10  # the fewest runs a timing has (kevolve.tools.timing): assumed where the count is not at hand
NEAR_DUPLICATE = 0.99  # token similarity with the parent above which a candidate is refused
MAX_REPAIRS = 3  # children a failure may have before another failure is tried first
# How the parent is drawn (the rest: weighted by score within the island and by few children).
P_UNIFORM = 0.15
P_CROSSOVER = 0.15
# Which failures are closest to working, most promising first.
FAILURE_RANK = {"incorrect": 0, "unverified": 1, "runtime_error": 2, "timeout": 3, "crashed": 3,
                "rejected": 4, "compile_error": 5}


@dataclass
class Member:
    id: str
    round: int
    island: int
    parent_id: str | None
    status: str
    verified: bool
    score: float | None  # speedup vs eager; None on the CPU interpreter (correctness only)
    spread: float | None
    niche: tuple[str, str, str]
    source: str
    children: int = 0


@dataclass
class Selection:
    """What the next Coder call builds on, and why (the operator is stored on the candidate)."""

    island: int
    parent_id: str | None
    operator: str  # seed | sample | uniform | crossover | repair
    partner_id: str | None = None  # crossover: the other island's best
    inspirations: list[str] = field(default_factory=list)


@dataclass
class Archive:
    islands: int = DEFAULT_ISLANDS
    seed: int = 0
    migrate_every: int = MIGRATE_EVERY
    members: dict[str, Member] = field(default_factory=dict)
    niches: list[dict[tuple, str]] = field(default_factory=list)  # per island: niche -> holder id
    migrations: list[tuple[int, str, int]] = field(default_factory=list)  # (generation, id, to island)

    def __post_init__(self):
        self.islands = max(1, int(self.islands))
        if not self.niches:
            self.niches = [{} for _ in range(self.islands)]

    # -- building ---------------------------------------------------------------------------------

    @classmethod
    def from_store(cls, store, *, islands: int = DEFAULT_ISLANDS, seed: int = 0,
                   migrate_every: int = MIGRATE_EVERY, before_round: int | None = None) -> Archive:
        arch = cls(islands=islands, seed=seed, migrate_every=migrate_every)
        evaluated = [c for c in store.candidates() if c["status"] != "pending"
                     and (before_round is None or c["round"] < before_round)]
        profiles = {r[0]: r[1] for r in store.conn.execute("SELECT candidate_id, profile FROM evaluations")}
        by_round: dict[int, list[dict]] = {}
        for c in evaluated:
            by_round.setdefault(c["round"], []).append(c)
        last = (before_round - 1) if before_round is not None else max(by_round, default=0)
        for g in range(min(by_round, default=0), last + 1):  # round 0: a kernel reused from the library
            for c in sorted(by_round.get(g, []), key=lambda c: (c["slot"], c["id"])):
                arch.add(c, _json(profiles.get(c["id"])))
            if g > 0:
                arch.end_generation(g)
        return arch

    def add(self, cand: dict, profile: dict | None = None) -> bool:
        """Record an evaluated candidate; True when it took (or kept) a niche on its island."""
        island = int(cand.get("island") or 0) % self.islands
        m = Member(id=cand["id"], round=cand["round"], island=island, parent_id=cand.get("parent_id"),
                   status=cand["status"], verified=verified(cand), score=cand.get("speedup"),
                   spread=cand.get("spread"), niche=niche_of(cand, profile), source=cand["source"])
        self.members[m.id] = m
        if m.parent_id in self.members:
            self.members[m.parent_id].children += 1
        return self._offer(m, island) if m.verified else False

    def _offer(self, m: Member, island: int) -> bool:
        holder = self.members.get(self.niches[island].get(m.niche))
        if holder is None or beats(m, holder):
            self.niches[island][m.niche] = m.id
            return True
        return False

    def end_generation(self, generation: int) -> None:
        """Migration: every migrate_every generations each island's best goes to the next island."""
        if self.islands < 2 or self.migrate_every <= 0 or generation % self.migrate_every:
            return
        bests = [self.island_best(i) for i in range(self.islands)]  # taken before anyone moves
        for i, best in enumerate(bests):
            if best is not None:
                to = (i + 1) % self.islands
                if self._offer(best, to):
                    self.migrations.append((generation, best.id, to))

    # -- reading ----------------------------------------------------------------------------------

    def holders(self, island: int | None = None) -> list[Member]:
        islands = range(self.islands) if island is None else [island]
        ids = sorted({hid for i in islands for hid in self.niches[i].values()})
        return [self.members[i] for i in ids]

    def island_best(self, island: int) -> Member | None:
        return _best(self.holders(island))

    def global_best(self) -> Member | None:
        return _best(self.holders())

    def correct(self) -> list[Member]:
        return [m for m in self.members.values() if m.verified]

    # -- choosing ---------------------------------------------------------------------------------

    def select(self, generation: int, best_id: str | None = None, slot: int = 0) -> Selection:
        """The parent and inspirations of generation `generation`'s candidate `slot` (islands are
        round-robin, so a batch spreads over them).

        Same seed and same archive → same choice: the generator is seeded by (seed, generation, slot)
        only, so nothing about earlier draws needs to survive a crash.
        """
        island = (generation - 1 + slot) % self.islands
        rng = random.Random(f"kevolve:{self.seed}:{generation}" + (f":{slot}" if slot else ""))
        pool = self.holders(island) or self.holders()
        if not pool:  # nothing correct anywhere yet
            failure = self.most_promising_failure()
            if failure is None:
                return Selection(island=island, parent_id=None, operator="seed")
            return Selection(island=island, parent_id=failure.id, operator="repair")
        roll, operator, partner = rng.random(), "sample", None
        if roll < P_UNIFORM:
            operator = "uniform"  # any occupied niche, any island: keeps rare ideas alive
            parent = rng.choice(self.holders())
        else:
            parent = _weighted(rng, pool)
            if roll < P_UNIFORM + P_CROSSOVER:
                others = [b for i in range(self.islands) if i != island
                          and (b := self.island_best(i)) is not None and b.id != parent.id]
                if others:
                    operator, partner = "crossover", rng.choice(others).id
        return Selection(island=island, parent_id=parent.id, operator=operator, partner_id=partner,
                         inspirations=self.inspirations(parent.id, island, best_id, partner))

    def most_promising_failure(self) -> Member | None:
        failed = [m for m in self.members.values() if not m.verified and m.status not in ("duplicate", "skipped")]
        if not failed:
            return None
        # closest to working first; a failure already repaired MAX_REPAIRS times waits; the latest wins ties
        return min(failed, key=lambda m: (m.children >= MAX_REPAIRS, FAILURE_RANK.get(m.status, 6),
                                          -m.round, m.id))

    def inspirations(self, parent_id: str | None, island: int, best_id: str | None = None,
                     partner_id: str | None = None) -> list[str]:
        """Island best, global best, and the correct candidate least like the parent."""
        out: list[str] = [partner_id] if partner_id else []
        ib, gb = self.island_best(island), self.global_best()
        for cid in (ib.id if ib else None, best_id if best_id in self.members else (gb.id if gb else None)):
            if cid and cid != parent_id and cid not in out:
                out.append(cid)
        parent = self.members.get(parent_id)
        rest = [m for m in self.correct() if m.id != parent_id and m.id not in out]
        if parent is not None and rest:
            far = min(rest, key=lambda m: (similarity(parent.source, m.source), m.id))
            out.append(far.id)
        return out

    def summary(self) -> dict:
        return {"islands": [{"island": i, "niches": {"/".join(k): v for k, v in sorted(self.niches[i].items())}}
                            for i in range(self.islands)],
                "migrations": self.migrations, "members": len(self.members)}


# -- pieces ----------------------------------------------------------------------------------------


def verified(c: dict) -> bool:
    return bool(c and c.get("status") == "accepted" and c.get("custom_kernel") and not c.get("skipped")
                and not c.get("duplicate_of"))


def margin(*timings: tuple[float | None, int | None]) -> float:
    """The relative gap by which one median time must beat another to count as faster, from each
    timing's (spread, reps), spread = (p90 - p10) / median of its runs. A median of n runs is off by
    about 0.49 x spread / sqrt(n) (one standard error: p90 - p10 spans 2.56 sigma of a normal, the
    median's error is 1.25 sigma / sqrt(n)); the gap must exceed three standard errors of the
    difference, and NOISE_FLOOR (clocks and runs drift by that much). Where reps are not at hand,
    the timing's least count (MIN_REPS) is assumed. Before, the spread itself was the margin: a best
    timed with a 75% spread (one noisy timing among ten busy sessions) then kept a kernel 43% faster
    out, though 200 runs had pinned both medians within 3%."""
    var = sum((0.49 * (spread or 0.0)) ** 2 / max(reps or MIN_REPS, 1) for spread, reps in timings)
    return max(NOISE_FLOOR, 3 * math.sqrt(var))


def noise(a: Member, b: Member) -> float:
    return margin((a.spread, None), (b.spread, None))


def beats(new: Member, old: Member) -> bool:
    """Faster by more than the timing noise of either; untimed (interpreter) candidates never replace."""
    if new.score is None:
        return False
    if old.score is None:
        return True
    return new.score > old.score * (1 + noise(new, old))


def _best(members: list[Member]) -> Member | None:
    if not members:
        return None
    return max(members, key=lambda m: (m.score if m.score is not None else -math.inf, -m.round, m.id))


def _weighted(rng: random.Random, pool: list[Member]) -> Member:
    """By score relative to the pool's best (sharply) and by how few children a member already has."""
    top = max((m.score for m in pool if m.score), default=None)
    weights = []
    for m in pool:
        rel = (m.score / top) if (top and m.score) else 1.0
        weights.append(math.exp(4.0 * (rel - 1.0)) / (1 + m.children))
    return rng.choices(pool, weights=weights, k=1)[0]


def niche_of(cand: dict, profile: dict | None) -> tuple[str, str, str]:
    return (str(cand.get("strategy") or "none"), bound_class(profile), tile_bucket(cand.get("source") or ""))


def bound_class(profile: dict | None) -> str:
    """The class of the slowest kernel in a kevolve.profiling profile dict, else the problem's
    roofline class (a fallback profile has no counters), else 'unknown'."""
    profile = profile or {}
    kernels = profile.get("kernels") or []
    if kernels:
        slowest = max(kernels, key=lambda k: (k.get("metrics") or {}).get("duration_s") or 0.0)
        bound = slowest.get("bound")
        kind = bound.get("kind") if isinstance(bound, dict) else bound
        if kind and kind != "unknown":
            return str(kind)
    problem_class = profile.get("problem_class")
    return str(problem_class) if problem_class and problem_class != "unknown" else "unknown"


_TILE = re.compile(r"\b(?:BLOCK\w*|TILE\w*|block_\w*|tile_\w*)\s*[:=]\s*(?:tl\.constexpr\s*=\s*)?(\d+)")


def tile_bucket(source: str) -> str:
    """The largest literal block/tile size in the source, as a power-of-four bucket."""
    sizes = [int(s) for s in _TILE.findall(source)]
    if not sizes:
        return "tile?"
    size = max(sizes)
    for limit, name in ((64, "tile<=64"), (256, "tile<=256"), (1024, "tile<=1k"), (4096, "tile<=4k")):
        if size <= limit:
            return name
    return "tile>4k"


# -- near duplicates -----------------------------------------------------------------------------


def tokens(source: str) -> list[str]:
    """Code tokens without comments and spacing, names renamed in order of first use (a rename is no change)."""
    names: dict[str, str] = {}
    out: list[str] = []
    try:
        for t in tokenize.generate_tokens(io.StringIO(source).readline):
            if t.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                          tokenize.ENDMARKER):
                continue
            if t.type == tokenize.NAME and not keyword.iskeyword(t.string):
                out.append(names.setdefault(t.string, f"v{len(names)}"))
            elif t.type == tokenize.STRING:  # CUDA source in a string: its own words count
                out.extend(re.sub(r"//[^\n]*|/\*.*?\*/", " ", t.string, flags=re.S).split())
            else:
                out.append(t.string)
    except (tokenize.TokenError, SyntaxError, IndentationError):
        out = re.sub(r"#[^\n]*", " ", source).split()
    return out


def similarity(a: str, b: str) -> float:
    ta, tb = tokens(a), tokens(b)
    if not ta and not tb:
        return 1.0
    return difflib.SequenceMatcher(None, ta, tb, autojunk=False).ratio()


_NUMBER = re.compile(r"\b\d+(?:\.\d+)?\b")


def near_duplicate(source: str, parent_source: str | None, threshold: float = NEAR_DUPLICATE) -> str | None:
    """Why `source` is refused as a near-copy of its parent, or None. A change of any number (a block
    size, num_warps) is always a real change: tuning must not be refused, nor two switches swapping
    values (PERSISTENT 0 -> 1 and CHANNELS_LAST 1 -> 0), so numbers are compared in place."""
    if not parent_source or threshold >= 1.0:
        return None
    if _NUMBER.findall(source) != _NUMBER.findall(parent_source):
        return None
    score = similarity(source, parent_source)
    if score < threshold:
        return None
    return (f"token overlap {score:.3f} with its parent (threshold {threshold}): a near-copy, not a real change; "
            "change the algorithm, the tiling or the tunables")


def _json(text: str | None) -> dict | None:
    import json

    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


# -- the graph's entry point ---------------------------------------------------------------------


def select_for_round(store, round: int, *, seed: int = 0, islands: int | None = None,
                     best_id: str | None = None, slot: int = 0) -> tuple[Selection, Archive]:
    """Rebuild the archive from the rows of earlier rounds and choose round `round`'s parent."""
    settings = store.get_meta("settings", {}) or {}
    islands = islands or int(settings.get("islands") or DEFAULT_ISLANDS)
    arch = Archive.from_store(store, islands=islands, seed=seed,
                              migrate_every=int(settings.get("migrate_every") or MIGRATE_EVERY), before_round=round)
    return arch.select(round, best_id=best_id, slot=slot), arch

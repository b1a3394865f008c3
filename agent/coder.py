"""The Coder role: writes one candidate file per round, from an LLM (openai:MODEL, manual) or the builtin engine.

Every LLM answer goes through RecordedChat, which stores it in the session's SQLite under
(round, role, attempt) before anyone reads it; a node replayed after a crash gets the stored answer
back instead of paying for a new one.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from types import SimpleNamespace

from kevolve.session import Store

log = logging.getLogger(__name__)


@dataclass
class Proposal:
    """One candidate the Coder wrote, and how: the archive records strategy and operator."""

    source: str
    strategy: str | None = None
    operator: str = "llm"
    notes: str = ""


class CoderFailed(Exception):
    """The Coder gave no usable candidate this round (bad answer after repair, nothing left to try)."""


class RecordedChat:
    """A chat whose answers are stored before use, and replayed from the store when already there."""

    def __init__(self, chat, store: Store, ledger, round: int, role: str, on_reply: Callable | None = None,
                 slot: int = 0, store_lock: threading.Lock | None = None):
        self.chat, self.store, self.ledger = chat, store, ledger
        # a batch's chats run in threads and share the store: its reads and writes take turns
        self.store_lock = store_lock or contextlib.nullcontext()
        self.round, self.role = round, role
        # the key answers are stored under: each candidate of a round's batch has its own
        self.key = role if slot == 0 else f"{role}/{slot}"
        self.on_reply = on_reply
        self.calls = 0
        self.replayed = 0

    def complete(self, messages: list[dict], role: str | None = None, **kwargs):
        attempt = self.calls
        self.calls += 1
        with self.store_lock:
            row = self.store.llm_reply(self.round, self.key, attempt)
        if row is not None:
            self.replayed += 1
            return stored_reply(row)
        reply = self.chat.complete(messages, role=role or self.role, **kwargs)
        ledger = self.ledger.to_dict() if self.ledger is not None else None
        with self.store_lock:
            self.store.add_llm_reply(self.round, self.key, attempt, reply, ledger)
            if self.on_reply:
                self.on_reply(self.role, attempt, reply)
        return reply

    def __getattr__(self, name):  # model name, spec and the like come from the wrapped chat
        return getattr(self.chat, name)


def stored_reply(row: dict):
    fields = {"text": row["text"], "model": row["model"], "prompt_tokens": row["prompt_tokens"] or 0,
              "completion_tokens": row["completion_tokens"] or 0, "cost_usd": row["cost_usd"] or 0.0,
              "latency_s": row["latency_s"] or 0.0, "attempts": row["retries"] or 1}
    try:
        from kevolve.llm import LLMReply

        return LLMReply(**{k: v for k, v in fields.items() if k in inspect.signature(LLMReply).parameters})
    except Exception:  # an LLMReply with other fields: the text is what matters on replay
        return SimpleNamespace(**fields)


def compact_evaluation(result: dict | None) -> dict | None:
    """What a prompt needs of an evaluation: the verdict, the failing checks, a log tail, the timing."""
    if result is None:
        return None
    failing = [c for c in result.get("checks", []) if not c.get("passed")]
    return {"status": result.get("status"), "error": result.get("error", ""),
            "failing_checks": failing[:5], "max_abs_error": result.get("max_abs_error"),
            "max_rel_error": result.get("max_rel_error"), "timing": result.get("timing"),
            "timing_note": result.get("timing_note"), "log_tail": (result.get("log") or "")[-1500:],
            "duplicate_of": result.get("duplicate_of")}


class LLMCoder:
    """openai:MODEL or manual: the prompt files of kevolve.prompts, one fenced code block back."""

    def __init__(self, spec: str, chat):
        self.spec, self.chat = spec, chat

    def write(self, ctx: dict, *, chat: RecordedChat, **_) -> Proposal:
        from kevolve.llm import LLMError, ask, extract_code_block
        from kevolve.prompts import coder_messages

        keys = ("problem_source", "backend", "device_facts", "parent_source", "parent_eval", "profile_summary",
                "judge_plan", "inspirations", "user_hint")
        messages = coder_messages({k: ctx.get(k) for k in keys})
        try:
            source, _ = ask(chat, messages, role="coder", parse=extract_code_block,
                            repair_hint="Answer with the whole candidate file in one fenced ```python code block.")
        except LLMError as e:
            raise CoderFailed(f"{self.spec}: {e}") from e
        plan = ctx.get("judge_plan") or {}
        operator = "seed" if not ctx.get("parent_source") else ("fix" if plan.get("mode") == "fix" else "optimize")
        return Proposal(source=source, strategy=plan.get("strategy"), operator=operator)


class BuiltinCoder:
    """The embedded engine: its seeds first (all of them), then mutations of the best steered by the verdict."""

    def __init__(self):
        try:
            from kevolve import builtin
        except ImportError as e:
            raise CoderUnavailable(
                "the builtin Coder (kevolve.builtin) is not installed in this build; use --coder openai:MODEL "
                f"or --coder manual ({e})") from None
        self.engine = builtin
        self._seeds: list | None = None  # the templates
        self._compiler: Future | None = None  # the compiler seed (Proposal or None), exported in the background
        self._seeds_lock = threading.Lock()  # both are made once, whoever asks first

    def write(self, ctx: dict, *, seen: Callable[[str], bool], **_) -> Proposal:
        plan = ctx.get("judge_plan") or {}
        with self._seeds_lock:
            if self._seeds is None:
                self._seeds, self._compiler = _builtin_seeds(self.engine, ctx)
        # torch.compile's kernels go in as soon as they are exported: the floor every later candidate must beat
        compiler = self._compiler.result() if self._compiler and self._compiler.done() else None
        if compiler is not None and not seen(compiler.source):
            return _proposal(compiler, "seed")
        # Every template before any mutation: they differ in structure (a library call or a Triton matmul,
        # NCHW or channels-last), which no tuning switch recovers; there are at most a few.
        for p in self._seeds:
            if not seen(p.source):
                return _proposal(p, "seed")
        base = ctx.get("best_source") or ctx.get("parent_source")
        if not base:
            compiler = self._compiler.result() if self._compiler else None  # nothing else to try: wait for it
            if compiler is not None and not seen(compiler.source):
                return _proposal(compiler, "seed")
            raise CoderFailed("builtin: no seed left to try and nothing verified to mutate")
        for p in _call(self.engine.mutate, base, verdict=plan, seed=ctx.get("seed", 0) + ctx.get("round", 0),
                       problem_path=ctx.get("problem_path")):
            if not seen(p.source):
                return _proposal(p, "mutate")
        raise CoderFailed("builtin: every mutation of the base candidate was already tried")


def _builtin_seeds(engine, ctx: dict) -> tuple[list, Future | None]:
    """The templates, and the export of torch.compile's own kernels started in the background.

    The export costs a torch.compile (15-50 s); meanwhile the templates are evaluated and the harness
    measures its baselines. On a GPU only, unless KEVOLVE_COMPILER_SEED=always: under the interpreter
    there is no speed for it to set a floor on."""
    export = getattr(engine, "compiler_seed", None)
    device = (ctx.get("device_facts") or {}).get("type") or "cpu"
    wanted = os.environ.get("KEVOLVE_COMPILER_SEED", "gpu")
    compiler = None
    if export is not None and (wanted == "always" or (wanted == "gpu" and device == "cuda")):
        compiler = Future()

        def run() -> None:
            try:  # None (reason logged) when Inductor's output can't be exported
                compiler.set_result(export(ctx["problem_path"], device))
            except Exception as e:  # a bug in the exporter must not end the session
                log.warning("compiler seed: none (%s: %s)", type(e).__name__, e)
                compiler.set_result(None)

        # A daemon thread: a session that ends first does not wait for the export (its cache still fills).
        threading.Thread(target=run, name="kevolve-compiler-seed", daemon=True).start()
    return list(engine.propose_candidates(ctx["problem_path"])), compiler


class CoderUnavailable(Exception):
    """A role backend that cannot start here (missing engine, bad spec): a usage error, exit 2."""


def _proposal(p, operator: str) -> Proposal:
    notes = getattr(p, "notes", "") or ""
    if not isinstance(notes, str):
        notes = json.dumps(notes, default=str)
    return Proposal(source=p.source, strategy=getattr(p, "strategy", None), operator=operator,
                    notes=notes + (f" family={p.family}" if getattr(p, "family", None) else ""))


def _call(fn, *args, **kwargs):
    """Pass only the keyword arguments the engine's function takes: its signature may grow."""
    params = inspect.signature(fn).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    return list(fn(*args, **kwargs) or [])


def make_coder(spec: str, chat=None):
    if spec == "builtin":
        return BuiltinCoder()
    if chat is None:
        raise CoderUnavailable(f"--coder {spec}: no chat backend")
    return LLMCoder(spec, chat)

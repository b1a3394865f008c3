"""LLM backends for the Coder and Judge roles: any OpenAI-compatible server, or a human (manual).

Everything a role needs goes through `Chat.complete(messages, role=...)`, which returns an LLMReply
with tokens, dollars, latency and attempts. The OpenAI backend does its own retry loop (429, 5xx,
timeouts, dropped connections) so the attempts are counted and Retry-After is honoured; the budget
is checked before every call. The API key is read from the environment at construction and never
appears in a message, an exception, a log line or a dict.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import re
import select
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO, TypeVar

if TYPE_CHECKING:
    from kevolve.config import KevolveConfig, RoleConfig

log = logging.getLogger("kevolve.llm")
T = TypeVar("T")

# USD per 1M tokens (input, output): list prices when written; extend or override in kevolve.toml [prices].
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-5": (1.25, 10.0),
    "gpt-5-mini": (0.25, 2.0),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-4.1": (2.0, 8.0),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.0),
    "gpt-4o-mini": (0.15, 0.60),
    "o1": (15.0, 60.0),
    "o3": (2.0, 8.0),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "claude-opus-4": (15.0, 75.0),
    "claude-sonnet-4": (3.0, 15.0),
    "claude-3-5-sonnet": (3.0, 15.0),
    "claude-3-5-haiku": (0.80, 4.0),
    "deepseek-chat": (0.27, 1.10),
    "deepseek-reasoner": (0.55, 2.19),
    "gemini-2.5-pro": (1.25, 10.0),
    "gemini-2.5-flash": (0.30, 2.50),
}
COMPLETION_ESTIMATE = 4096  # tokens assumed for the answer when the role sets no max_tokens
_RETRY_STATUS = {408, 409, 429}  # plus every 5xx
_REASONING = re.compile(r"^(openai/)?(o\d|gpt-5)")


@dataclass
class LLMReply:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_s: float  # wall time of the whole call, retries and backoff included
    attempts: int
    note: str = ""  # e.g. "usage estimated from characters", "no price for model X"


class LLMError(Exception):
    """A role gave up (retries spent, a refused request, a malformed answer after repair). One line, no key."""

    def __init__(self, message: str, replies: list[LLMReply] | None = None):
        super().__init__(message)
        self.replies = replies or []  # what was paid for before giving up


class BudgetExceeded(LLMError):
    """The next call could take spending past the budget; raised before anything is sent."""


class Chat(Protocol):
    def complete(self, messages: list[dict], *, role: str) -> LLMReply: ...


# ---------------------------------------------------------------- cost ledger


def _normalize_prices(prices: dict | None) -> dict[str, tuple[float, float]]:
    out = {}
    for model, value in (prices or {}).items():
        if isinstance(value, dict):
            value = (value.get("input", 0.0), value.get("output", value.get("input", 0.0)))
        out[str(model)] = (float(value[0]), float(value[1]))
    return out


class CostLedger:
    """Tokens and dollars per role; the budget check every call goes through."""

    def __init__(self, budget_usd: float | None = None, prices: dict | None = None,
                 config: KevolveConfig | None = None):
        self.budget_usd = budget_usd
        # Only the overrides are kept apart: to_dict stores them, so a resume prices calls the same way.
        self.price_overrides = _normalize_prices(getattr(config, "prices", None)) | _normalize_prices(prices)
        self.prices = DEFAULT_PRICES | self.price_overrides
        self.roles: dict[str, dict[str, Any]] = {}
        self.unpriced: set[str] = set()
        # Calls in flight at once (a batch's Coder calls) each hold their worst case until they are
        # recorded, so together they cannot pass the budget.
        self._reserved = 0.0
        self._lock = threading.RLock()

    def price(self, model: str) -> tuple[float, float] | None:
        """Exact name, else the provider-less name (openrouter's "openai/gpt-4o"), else the longest prefix
        ("gpt-4o-2024-08-06" -> gpt-4o)."""
        for name in (model, model.rsplit("/", 1)[-1]):
            if name in self.prices:
                return self.prices[name]
            prefixes = [p for p in self.prices if name.startswith(p + "-") or name.startswith(p + ":")]
            if prefixes:
                return self.prices[max(prefixes, key=len)]
        return None

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        p = self.price(model)
        return 0.0 if p is None else (prompt_tokens * p[0] + completion_tokens * p[1]) / 1e6

    def check(self, role: str, model: str, prompt_tokens_estimate: int, completion_tokens_estimate: int = 0) -> None:
        if self.budget_usd is None:
            return
        with self._lock:
            spent = self.total_usd + self._reserved
            worst = spent + self.cost(model, prompt_tokens_estimate, completion_tokens_estimate)
            if spent >= self.budget_usd or worst > self.budget_usd:
                held = f" (${self._reserved:.4f} held by calls in flight)" if self._reserved else ""
                raise BudgetExceeded(
                    f"budget: {role} call to {model} could cost up to ${worst - spent:.4f}; "
                    f"spent ${self.total_usd:.4f}{held} of ${self.budget_usd:.4f}")

    @contextmanager
    def reserve(self, role: str, model: str, prompt_tokens_estimate: int, completion_tokens_estimate: int = 0):
        """check(), then hold the call's worst case against the budget until the call is over."""
        with self._lock:
            self.check(role, model, prompt_tokens_estimate, completion_tokens_estimate)
            held = self.cost(model, prompt_tokens_estimate, completion_tokens_estimate)
            self._reserved += held
        try:
            yield
        finally:
            with self._lock:
                self._reserved -= held

    def record(self, role: str, reply: LLMReply) -> None:
        with self._lock:
            self._record(role, reply)

    def _record(self, role: str, reply: LLMReply) -> None:
        r = self.roles.setdefault(role, {"calls": 0, "attempts": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                         "tokens": 0, "usd": 0.0, "latency_s": 0.0, "models": []})
        r["calls"] += 1
        r["attempts"] += reply.attempts
        r["prompt_tokens"] += reply.prompt_tokens
        r["completion_tokens"] += reply.completion_tokens
        r["tokens"] += reply.prompt_tokens + reply.completion_tokens
        r["usd"] += reply.cost_usd
        r["latency_s"] += reply.latency_s
        if reply.model not in r["models"]:
            r["models"].append(reply.model)

    @property
    def total_usd(self) -> float:
        return sum(r["usd"] for r in self.roles.values())

    def by_role(self) -> dict[str, dict]:
        return {role: dict(r, models=list(r["models"])) for role, r in self.roles.items()}

    def to_dict(self) -> dict:
        with self._lock:
            return self._to_dict()

    def _to_dict(self) -> dict:
        return {"budget_usd": self.budget_usd, "total_usd": self.total_usd, "roles": self.by_role(),
                "prices": {m: list(p) for m, p in self.price_overrides.items()}, "unpriced": sorted(self.unpriced)}

    @classmethod
    def from_dict(cls, d: dict) -> CostLedger:
        ledger = cls(budget_usd=d.get("budget_usd"), prices=d.get("prices"))
        ledger.roles = {role: dict(r, models=list(r.get("models", []))) for role, r in (d.get("roles") or {}).items()}
        ledger.unpriced = set(d.get("unpriced") or [])
        return ledger


# ---------------------------------------------------------------- helpers


def estimate_tokens(text: str) -> int:
    """About four characters a token: good enough for budgets and for servers that omit usage."""
    return max(1, (len(text) + 3) // 4)


def estimate_prompt_tokens(messages: list[dict]) -> int:
    return sum(estimate_tokens(str(m.get("content") or "")) + 4 for m in messages)


_KEYISH = re.compile(r"\b(sk-[A-Za-z0-9_\-]{6,}|Bearer\s+\S+)")


def _scrub(text: str, secret: str | None) -> str:
    if secret:
        text = text.replace(secret, "***")
    return _KEYISH.sub("***", text)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _retry_after(headers: Any) -> float | None:
    """Seconds from Retry-After / retry-after-ms (a number or an HTTP date), when the server sent one."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000)
        value = headers.get("retry-after")
    except Exception:
        return None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------- OpenAI-compatible backend


class OpenAIChat:
    """One role's chat with an OpenAI-compatible server, through the official `openai` client."""

    def __init__(self, model: str, settings: RoleConfig, ledger: CostLedger, *, api_key: str,
                 base_url: str | None, sleep: Callable[[float], None] = time.sleep):
        import openai

        self._openai = openai
        self.model, self.settings, self.ledger = model, settings, ledger
        self.spec = f"openai:{model}"
        self.base_url = base_url
        self._sleep = sleep
        self._api_key = api_key  # private; never formatted anywhere
        # max_retries=0: our own loop retries, so attempts are counted and budgets/backoff are ours.
        self._client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=settings.timeout_s, max_retries=0)

    def __repr__(self) -> str:
        return f"OpenAIChat(model={self.model!r}, base_url={self.base_url!r})"

    def complete(self, messages: list[dict], *, role: str) -> LLMReply:
        prompt_est = estimate_prompt_tokens(messages)
        # The worst case is held from the budget check until the call is recorded: calls in flight at
        # once cannot pass the budget together.
        with self.ledger.reserve(role, self.model, prompt_est, self.settings.max_tokens or COMPLETION_ESTIMATE):
            return self._complete(messages, role=role, prompt_est=prompt_est)

    def _complete(self, messages: list[dict], *, role: str, prompt_est: int) -> LLMReply:
        s = self.settings
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages}
        if s.temperature is not None:
            kwargs["temperature"] = s.temperature
        if s.max_tokens is not None:
            # OpenAI's reasoning models refuse max_tokens; other servers may not know the newer name.
            kwargs["max_completion_tokens" if _REASONING.match(self.model) else "max_tokens"] = s.max_tokens
        start = time.monotonic()
        attempts = s.max_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                response = self._client.chat.completions.create(**kwargs)
                text = self._text(response)
            except Exception as e:  # noqa: BLE001 - classified below; anything unknown is not retried
                retry, wait_hint, why = self._classify(e)
                if not retry or attempt == attempts:
                    tail = f" after {attempt} attempts" if attempt > 1 else ""
                    raise LLMError(f"{self.spec} ({role}): {why}{tail}") from None
                delay = min(s.backoff_max_s, s.backoff_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
                if wait_hint is not None:
                    delay = min(s.backoff_max_s, max(delay, wait_hint))
                log.warning("%s (%s): %s; retry %d/%d in %.2fs", self.spec, role, why, attempt, s.max_retries, delay)
                self._sleep(delay)
                continue
            return self._reply(role, response, text, messages, prompt_est, attempt, time.monotonic() - start)
        raise AssertionError("unreachable")

    def _text(self, response: Any) -> str:
        choices = getattr(response, "choices", None)
        if not choices:  # a proxy's error page or an empty body parsed as a completion
            raise _BadResponse("the server's response has no choices")
        return choices[0].message.content or ""

    def _classify(self, e: Exception) -> tuple[bool, float | None, str]:
        """(retry?, Retry-After seconds, one-line reason without the key)."""
        o = self._openai
        if isinstance(e, o.APITimeoutError):
            return True, None, f"timed out after {self.settings.timeout_s:g}s"
        if isinstance(e, o.APIConnectionError):
            return True, None, _scrub(_one_line(f"connection failed ({e.__cause__ or e})"), self._api_key)
        if isinstance(e, o.APIStatusError):
            status = e.status_code
            msg = _scrub(_one_line(getattr(e, "message", "") or str(e)), self._api_key)
            retry = status in _RETRY_STATUS or status >= 500
            return retry, _retry_after(getattr(e.response, "headers", None)), f"HTTP {status}: {msg}"
        if isinstance(e, _BadResponse):
            return True, None, str(e)
        if isinstance(e, (ValueError, o.APIResponseValidationError)):  # a body that is not a completion
            return True, None, _scrub(_one_line(f"malformed response from the server ({e})"), self._api_key)
        return False, None, _scrub(_one_line(f"{type(e).__name__}: {e}"), self._api_key)

    def _reply(self, role: str, response: Any, text: str, messages: list[dict], prompt_est: int, attempts: int,
               latency: float) -> LLMReply:
        notes = []
        usage = getattr(response, "usage", None)
        if usage is not None and getattr(usage, "prompt_tokens", None) is not None:
            prompt_tokens, completion_tokens = int(usage.prompt_tokens), int(usage.completion_tokens or 0)
        else:
            prompt_tokens, completion_tokens = prompt_est, estimate_tokens(text)
            notes.append("usage estimated from characters (the server sent none)")
        model = getattr(response, "model", None) or self.model
        if self.ledger.price(self.model) is None:
            notes.append(f"no price for {self.model}: counted as $0 (add it to kevolve.toml [prices])")
            if self.model not in self.ledger.unpriced:
                self.ledger.unpriced.add(self.model)
                log.warning("no price for model %s: its calls are counted as $0", self.model)
        cost = self.ledger.cost(self.model, prompt_tokens, completion_tokens)
        reply = LLMReply(text=text, model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                         cost_usd=cost, latency_s=latency, attempts=attempts, note="; ".join(notes))
        self.ledger.record(role, reply)
        return reply


class _BadResponse(Exception):
    pass


# ---------------------------------------------------------------- manual backend


class ManualChat:
    """A human answers: the prompt goes to manual_dir/NNN-role.prompt.md, the answer comes from
    NNN-role.answer.md (polled) or, when interactive, from stdin ended by a line `EOF` or Ctrl-D."""

    spec = "manual"
    model = "manual"

    def __init__(self, manual_dir: Path, ledger: CostLedger | None = None, *, stdin: TextIO | None = None,
                 out: TextIO | None = None, poll_s: float = 1.0, wait_s: float | None = None):
        self.dir = Path(manual_dir)
        self.ledger = ledger
        self.stdin = stdin  # None: answers only through files
        self.out = out or sys.stdout
        self.poll_s, self.wait_s = poll_s, wait_s

    def complete(self, messages: list[dict], *, role: str) -> LLMReply:
        self.dir.mkdir(parents=True, exist_ok=True)
        text = render_manual_prompt(messages)
        prompt_path = self._prompt_path(role, text)
        answer_path = prompt_path.with_name(prompt_path.name.replace(".prompt.md", ".answer.md"))
        if not prompt_path.exists():
            prompt_path.write_text(text)
        how = f"write the answer to {answer_path}"
        if self.stdin is not None:
            how += " or paste it here and end with a line EOF (or Ctrl-D)"
        print(f"kevolve: {role} prompt written to {prompt_path}\n         {how}", file=self.out, flush=True)
        start = time.monotonic()
        answer = self._wait(answer_path)
        reply = LLMReply(text=answer, model="manual", prompt_tokens=estimate_prompt_tokens(messages),
                         completion_tokens=estimate_tokens(answer), cost_usd=0.0,
                         latency_s=time.monotonic() - start, attempts=1, note="manual answer; tokens estimated")
        if self.ledger is not None:
            self.ledger.record(role, reply)
        return reply

    def _prompt_path(self, role: str, text: str) -> Path:
        existing = sorted(self.dir.glob("[0-9][0-9][0-9]-*.prompt.md"))
        # The same prompt again (a resume after a crash while waiting): reuse its number and answer file.
        if existing and existing[-1].name.endswith(f"-{role}.prompt.md") and existing[-1].read_text() == text:
            return existing[-1]
        n = max((int(p.name[:3]) for p in existing), default=0) + 1
        return self.dir / f"{n:03d}-{role}.prompt.md"

    def _wait(self, answer_path: Path) -> str:
        lines: list[str] = []
        pending = b""
        fd = _selectable_fd(self.stdin)
        deadline = None if self.wait_s is None else time.monotonic() + self.wait_s
        while True:
            if answer_path.is_file():
                text = answer_path.read_text()
                if text.strip():  # an editor may create the file before saving into it
                    return text
            if self.stdin is not None and fd is None:  # an injected stream: never blocks
                for line in iter(self.stdin.readline, ""):
                    if line.rstrip("\r\n") == "EOF":
                        break
                    lines.append(line)
                return "".join(lines)
            if fd is not None:
                ready, _, _ = select.select([fd], [], [], self.poll_s)
                if ready:
                    chunk = os.read(fd, 65536)  # raw reads: a pasted block is not stuck in a Python buffer
                    if not chunk:  # Ctrl-D
                        return "".join(lines) + pending.decode(errors="replace")
                    pending += chunk
                    *done, pending = pending.split(b"\n")
                    for raw in done:
                        line = raw.decode(errors="replace")
                        if line.rstrip("\r") == "EOF":
                            return "".join(lines)
                        lines.append(line + "\n")
            else:
                time.sleep(self.poll_s)
            if deadline is not None and time.monotonic() > deadline:
                raise LLMError(f"manual: no answer in {answer_path} after {self.wait_s:g}s")


def _selectable_fd(stream: TextIO | None) -> int | None:
    if stream is None or sys.platform == "win32":
        return None
    try:
        fd = stream.fileno()
        select.select([fd], [], [], 0)
        return fd
    except Exception:  # StringIO and friends
        return None


def render_manual_prompt(messages: list[dict]) -> str:
    parts = [f"<!-- {m.get('role', 'user')} -->\n\n{m.get('content') or ''}".rstrip() for m in messages]
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------- factory


def make_chat(spec: str, *, role: str, config: KevolveConfig, ledger: CostLedger,
              manual_dir: Path | None = None) -> Chat:
    """"openai:MODEL" (or "openai" with the model from the config) or "manual"; ValueError otherwise."""
    settings = config.role(role)
    if spec == "manual":
        stdin = sys.stdin if sys.stdin is not None and sys.stdin.isatty() else None
        return ManualChat(manual_dir or Path.cwd() / "manual", ledger, stdin=stdin, poll_s=settings.poll_s,
                          wait_s=settings.manual_wait_s)
    if spec == "openai" or spec.startswith("openai:"):
        model = spec.partition(":")[2].strip() or settings.model
        if not model:
            raise ValueError(f"{role}: {spec!r} names no model; use openai:MODEL or set model in [{role}]")
        base_url = settings.resolved_base_url()
        api_key = os.environ.get(settings.api_key_env, "").strip()
        if not api_key:
            if base_url is None or "api.openai.com" in base_url:
                raise ValueError(f"{role}: {settings.api_key_env} is not set (needed for {spec})")
            api_key = "not-needed"  # local servers (vLLM, Ollama, llama.cpp) take any key
        return OpenAIChat(model, settings, ledger, api_key=api_key, base_url=base_url)
    raise ValueError(f"{role}: unknown LLM spec {spec!r} (use openai:MODEL or manual)")


# ---------------------------------------------------------------- answers


_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([^\s`]*)[^\n]*$")
_PYTHON = {"python", "py", "python3", "py3"}


def _fences(text: str) -> list[tuple[str, str]]:
    """(language, body) of every closed fenced block; an unclosed one (truncated answer) is dropped."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        mark, lang = m.group(1), m.group(2).lower()
        for j in range(i + 1, len(lines)):
            s = lines[j].strip()
            if s and s[0] == mark[0] and set(s) == {mark[0]} and len(s) >= len(mark):
                blocks.append((lang, "\n".join(lines[i + 1:j])))
                i = j + 1
                break
        else:
            break
    return blocks


def extract_code_block(text: str) -> str | None:
    """The fenced block holding the whole candidate: the largest ```python one, else the largest fence.
    A bare file (no fence at all, but defining ModelNew) is accepted too."""
    blocks = _fences(text or "")
    python = [b for lang, b in blocks if lang in _PYTHON]
    pool = python or [b for _, b in blocks]
    if pool:
        code = max(pool, key=len).strip("\n")
        return code + "\n" if code.strip() else None
    stripped = (text or "").strip()
    if "```" not in stripped and "class ModelNew" in stripped and "import" in stripped:
        return stripped + "\n"
    return None


def validate_json(value: Any, schema: dict, path: str = "$") -> list[str]:
    """The small JSON-schema subset kevolve uses: type, required, enum, properties, items,
    minimum/maximum, minLength/maxLength. Returns the errors (empty: valid)."""
    errors: list[str] = []
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_is_type(value, k) for k in kinds):
            return [f"{path}: expected {'/'.join(kinds)}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} > {schema['maximum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{path}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']} characters")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}: missing {key!r}")
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                errors += validate_json(value[key], sub, f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += validate_json(item, schema["items"], f"{path}[{i}]")
    return errors


def _is_type(value: Any, kind: str) -> bool:
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    types = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    return isinstance(value, types.get(kind, object))


def _json_objects(text: str) -> list[Any]:
    """Candidates in order of trust: the whole text, ```json fences, other fences, then any {...} in the text."""
    found: list[Any] = []
    chunks = [text] + [b for lang, b in _fences(text) if lang == "json"] + [b for lang, b in _fences(text)
                                                                            if lang != "json"]
    decoder = json.JSONDecoder()
    for chunk in chunks:
        try:
            found.append(json.loads(chunk))
            continue
        except ValueError:
            pass
        for m in re.finditer(r"\{", chunk):
            try:
                obj, _ = decoder.raw_decode(chunk, m.start())
            except ValueError:
                continue
            found.append(obj)
    return found


def parse_json_answer(text: str, schema: dict) -> dict | None:
    """The first JSON object in the answer that satisfies the schema, else None."""
    for obj in _json_objects(text or ""):
        if isinstance(obj, dict) and not validate_json(obj, schema):
            return obj
    return None


def ask(chat: Chat, messages: list[dict], *, role: str, parse: Callable[[str], T | None],
        repair_hint: str) -> tuple[T, list[LLMReply]]:
    """One call; a malformed answer gets ONE repair request (the bad answer and the hint appended)."""
    replies = [chat.complete(messages, role=role)]
    result = parse(replies[0].text)
    if result is not None:
        return result, replies
    repair = list(messages) + [
        {"role": "assistant", "content": replies[0].text},
        {"role": "user", "content": f"That answer could not be used. {repair_hint}"},
    ]
    try:
        replies.append(chat.complete(repair, role=role))
    except LLMError as e:
        e.replies = replies + e.replies
        raise
    result = parse(replies[1].text)
    if result is not None:
        return result, replies
    snippet = _one_line(replies[1].text, 120) or "(empty)"
    raise LLMError(f"malformed answer from {role} after one repair: {snippet}", replies)


def reply_dict(reply: LLMReply) -> dict:
    """An LLMReply for events.jsonl, without the text."""
    d = asdict(reply)
    d.pop("text")
    return d

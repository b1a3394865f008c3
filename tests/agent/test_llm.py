"""LLM backends: the real openai client against a real local server (tests/agent/fake_openai.py)."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from pathlib import Path

import pytest

from kevolve.config import KevolveConfig, config_from_dict, load_config
from kevolve.llm import (
    BudgetExceeded,
    CostLedger,
    LLMError,
    LLMReply,
    ManualChat,
    ask,
    extract_code_block,
    make_chat,
    parse_json_answer,
    validate_json,
)
from kevolve.prompts import JUDGE_SCHEMA
from tests.agent.fake_openai import FakeOpenAI, answer, delay, error, raw

SECRET = "sk-test-SECRET-0123456789abcdef"
PRICES = {"fake-model": {"input": 1000.0, "output": 2000.0}}  # USD per 1M: big enough to see
VERDICT = {"mode": "optimize", "bottleneck": "DRAM bandwidth", "change": "fuse the bias", "strategy": "fuse-epilogue"}
CODE = "import torch\nimport torch.nn as nn\n\n\nclass ModelNew(nn.Module):\n    pass\n"


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("KEVOLVE_TEST_KEY", SECRET)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return SECRET


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


def config(fake: FakeOpenAI, **over) -> KevolveConfig:
    llm = {"base_url": fake.base_url, "api_key_env": "KEVOLVE_TEST_KEY", "timeout_s": 2.0, "max_retries": 2,
           "backoff_s": 0.01, "backoff_max_s": 1.0} | over
    return config_from_dict({"llm": llm, "prices": PRICES})


def chat_for(fake, role="coder", ledger=None, **over):
    cfg = config(fake, **over)
    ledger = ledger if ledger is not None else CostLedger(config=cfg)
    return make_chat("openai:fake-model", role=role, config=cfg, ledger=ledger), ledger


MSGS = [{"role": "system", "content": "You write kernels."}, {"role": "user", "content": "Write one."}]


# ---------------------------------------------------------------- OpenAI backend


def test_success_counts_tokens_and_cost(fake, key):
    fake.add(answer("hello", usage={"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}))
    chat, ledger = chat_for(fake, temperature=0.3)
    reply = chat.complete(MSGS, role="coder")
    assert isinstance(reply, LLMReply)
    assert (reply.text, reply.model, reply.attempts) == ("hello", "fake-model", 1)
    assert (reply.prompt_tokens, reply.completion_tokens) == (100, 50)
    assert reply.cost_usd == pytest.approx((100 * 1000 + 50 * 2000) / 1e6)
    assert reply.latency_s > 0
    req = fake.requests[0]
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == f"Bearer {SECRET}"  # the key went where it belongs
    assert req.body["model"] == "fake-model" and req.body["temperature"] == 0.3
    assert "max_tokens" not in req.body  # not set: the server decides
    assert req.messages == MSGS
    assert ledger.total_usd == pytest.approx(reply.cost_usd)


def test_429_then_success_honours_retry_after(fake, key):
    fake.add(error(429, "slow down", retry_after=0.3), answer("ok"))
    chat, _ = chat_for(fake)
    reply = chat.complete(MSGS, role="coder")
    assert reply.text == "ok" and reply.attempts == 2
    assert len(fake.requests) == 2
    assert fake.requests[1].at - fake.requests[0].at >= 0.29  # waited as the server asked
    assert reply.latency_s >= 0.29


def test_500s_exhausted_raise_one_line_error(fake, key):
    fake.add(*[error(500, "boom")] * 3)
    chat, ledger = chat_for(fake, max_retries=2)
    with pytest.raises(LLMError) as info:
        chat.complete(MSGS, role="judge")
    msg = str(info.value)
    assert "HTTP 500" in msg and "after 3 attempts" in msg and "\n" not in msg
    assert SECRET not in msg
    assert len(fake.requests) == 3
    assert ledger.total_usd == 0


def test_timeout_is_retried(fake, key):
    fake.add(delay(2.0), answer("second time lucky"))
    chat, _ = chat_for(fake, timeout_s=0.3)
    t0 = time.monotonic()
    reply = chat.complete(MSGS, role="coder")
    assert reply.text == "second time lucky" and reply.attempts == 2
    assert time.monotonic() - t0 < 1.5


def test_timeouts_exhausted(fake, key):
    fake.add(delay(2.0), delay(2.0))
    chat, _ = chat_for(fake, timeout_s=0.2, max_retries=1)
    with pytest.raises(LLMError, match="timed out after 0.2s after 2 attempts"):
        chat.complete(MSGS, role="coder")


def test_connection_refused_is_retried_then_fails(key):
    with FakeOpenAI() as gone:
        cfg = config(gone, max_retries=1)
    chat = make_chat("openai:fake-model", role="coder", config=cfg, ledger=CostLedger())
    with pytest.raises(LLMError, match="connection failed"):
        chat.complete(MSGS, role="coder")


def test_refused_request_is_not_retried_and_key_is_scrubbed(fake, key):
    fake.add(error(401, f"Incorrect API key provided: {SECRET}"), answer("never"))
    chat, _ = chat_for(fake)
    with pytest.raises(LLMError) as info:
        chat.complete(MSGS, role="coder")
    assert "HTTP 401" in str(info.value) and SECRET not in str(info.value)
    assert len(fake.requests) == 1


def test_garbage_body_does_not_crash(fake, key):
    fake.add(raw("<html>bad gateway</html>"), answer("fine"))
    chat, _ = chat_for(fake)
    reply = chat.complete(MSGS, role="coder")  # a proxy's hiccup: retried like a 5xx
    assert reply.text == "fine" and reply.attempts == 2
    fake.add(raw("{}"), raw("[]"), raw("{}"))
    with pytest.raises(LLMError, match="after 3 attempts"):
        chat.complete(MSGS, role="coder")


def test_missing_usage_is_estimated(fake, key):
    fake.add(answer("x" * 400, usage=None))
    chat, _ = chat_for(fake)
    reply = chat.complete(MSGS, role="coder")
    assert reply.completion_tokens == 100 and reply.prompt_tokens > 0
    assert "estimated" in reply.note
    assert reply.cost_usd > 0


def test_unknown_model_costs_zero_with_a_note(fake, key):
    fake.add(answer("hi"))
    cfg = config(fake)
    ledger = CostLedger(budget_usd=0.000001)  # no price: a budget cannot stop it
    chat = make_chat("openai:mystery-model", role="coder", config=cfg, ledger=ledger)
    reply = chat.complete(MSGS, role="coder")
    assert reply.cost_usd == 0 and "no price for mystery-model" in reply.note
    assert ledger.to_dict()["unpriced"] == ["mystery-model"]


def test_key_never_logged_or_stored(fake, key, caplog):
    caplog.set_level(logging.DEBUG)  # openai, httpx and kevolve at their chattiest
    fake.add(error(429, retry_after=0), answer("ok"), error(400, f"bad key {SECRET}"))
    chat, ledger = chat_for(fake)
    chat.complete(MSGS, role="coder")
    with pytest.raises(LLMError) as info:
        chat.complete(MSGS, role="coder")
    assert fake.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert "retry 1/2" in caplog.text
    for text in (caplog.text, str(info.value), repr(chat), json.dumps(ledger.to_dict()), repr(info.value.args)):
        assert SECRET not in text


# ---------------------------------------------------------------- ask: repair


def judge_parse(text):
    return parse_json_answer(text, JUDGE_SCHEMA)


def test_malformed_answer_gets_one_repair(fake, key):
    fake.add(answer("It is memory bound, fuse things."), answer(f"```json\n{json.dumps(VERDICT)}\n```"))
    chat, ledger = chat_for(fake, role="judge")
    verdict, replies = ask(chat, MSGS, role="judge", parse=judge_parse, repair_hint="Answer with JSON only.")
    assert verdict == VERDICT and len(replies) == 2
    repair = fake.requests[1].messages
    assert repair[: len(MSGS)] == MSGS
    assert repair[-2] == {"role": "assistant", "content": "It is memory bound, fuse things."}
    assert repair[-1]["role"] == "user" and "Answer with JSON only." in repair[-1]["content"]
    assert ledger.by_role()["judge"]["calls"] == 2


def test_malformed_twice_raises(fake, key):
    fake.add(answer("nope"), answer('{"mode": "sideways"}'))
    chat, _ = chat_for(fake, role="judge")
    with pytest.raises(LLMError, match="malformed answer from judge") as info:
        ask(chat, MSGS, role="judge", parse=judge_parse, repair_hint="JSON please.")
    assert len(info.value.replies) == 2 and len(fake.requests) == 2


def test_good_answer_needs_no_repair(fake, key):
    fake.add(answer(f"Here:\n```python\n{CODE}```\nDone."))
    chat, _ = chat_for(fake)
    code, replies = ask(chat, MSGS, role="coder", parse=extract_code_block, repair_hint="one block")
    assert code == CODE and len(replies) == 1


# ---------------------------------------------------------------- budget and ledger


def test_budget_exceeded_before_any_request(fake, key):
    fake.add(answer("never"))
    cfg = config(fake, max_tokens=1000)
    ledger = CostLedger(budget_usd=1.0, config=cfg)  # 1000 output tokens at $2000/1M = $2 > $1
    chat = make_chat("openai:fake-model", role="coder", config=cfg, ledger=ledger)
    with pytest.raises(BudgetExceeded, match=r"budget: coder call to fake-model"):
        chat.complete(MSGS, role="coder")
    assert fake.requests == []
    assert isinstance(BudgetExceeded("x"), LLMError)


def test_budget_allows_calls_that_fit_then_stops(fake, key):
    fake.add(answer("a", usage={"prompt_tokens": 10, "completion_tokens": 10}), answer("b"))
    cfg = config(fake, max_tokens=100)
    ledger = CostLedger(budget_usd=0.23, config=cfg)
    chat = make_chat("openai:fake-model", role="coder", config=cfg, ledger=ledger)
    chat.complete(MSGS, role="coder")  # worst case ~$0.215, real $0.03
    ledger.check("coder", "fake-model", 10, 10)
    with pytest.raises(BudgetExceeded):
        ledger.check("coder", "fake-model", 10, 100)  # 0.03 + 0.21 > 0.23
    assert len(fake.requests) == 1


def test_cost_per_role_and_resume(fake, key):
    fake.add(answer("c", usage={"prompt_tokens": 1000, "completion_tokens": 500}),
             answer("j", usage={"prompt_tokens": 200, "completion_tokens": 100}),
             answer("c2", usage={"prompt_tokens": 1000, "completion_tokens": 500}))
    cfg = config(fake)
    ledger = CostLedger(budget_usd=100.0, config=cfg)
    coder = make_chat("openai:fake-model", role="coder", config=cfg, ledger=ledger)
    judge = make_chat("openai:fake-model", role="judge", config=cfg, ledger=ledger)
    coder.complete(MSGS, role="coder")
    judge.complete(MSGS, role="judge")
    coder.complete(MSGS, role="coder")
    roles = ledger.by_role()
    assert roles["coder"]["calls"] == 2 and roles["judge"]["calls"] == 1
    assert roles["coder"]["tokens"] == 3000 and roles["judge"]["prompt_tokens"] == 200
    assert roles["coder"]["usd"] == pytest.approx(2 * (1000 * 1000 + 500 * 2000) / 1e6)
    assert roles["judge"]["usd"] == pytest.approx((200 * 1000 + 100 * 2000) / 1e6)
    assert ledger.total_usd == pytest.approx(roles["coder"]["usd"] + roles["judge"]["usd"])
    restored = CostLedger.from_dict(json.loads(json.dumps(ledger.to_dict())))
    assert restored.total_usd == pytest.approx(ledger.total_usd)
    assert restored.by_role() == roles and restored.budget_usd == 100.0
    assert restored.price("fake-model") == (1000.0, 2000.0)  # the config's price survives a resume


def test_price_lookup():
    ledger = CostLedger(prices={"house-model": (1.0, 2.0)})
    assert ledger.price("gpt-4o-mini-2024-07-18") == ledger.prices["gpt-4o-mini"]
    assert ledger.price("gpt-4o-2024-08-06") == ledger.prices["gpt-4o"]
    assert ledger.price("openai/gpt-4.1") == ledger.prices["gpt-4.1"]
    assert ledger.price("house-model") == (1.0, 2.0)
    assert ledger.price("llama-3-70b") is None
    assert ledger.cost("house-model", 1_000_000, 1_000_000) == pytest.approx(3.0)


# ---------------------------------------------------------------- make_chat and per-role servers


def test_coder_and_judge_on_different_servers(tmp_path, monkeypatch):
    monkeypatch.setenv("CODER_KEY", "sk-coder-key-123456")
    monkeypatch.setenv("JUDGE_KEY", "sk-judge-key-654321")
    with FakeOpenAI([answer("from A")]) as a, FakeOpenAI([answer("from B")]) as b:
        path = tmp_path / "kevolve.toml"
        path.write_text(f"""
[llm]
backoff_s = 0.01
[coder]
base_url = "{a.base_url}"
api_key_env = "CODER_KEY"
model = "coder-model"
[judge]
base_url = "{b.base_url}"
api_key_env = "JUDGE_KEY"
""")
        cfg = load_config(path)
        ledger = CostLedger(config=cfg)
        coder = make_chat("openai", role="coder", config=cfg, ledger=ledger)  # model from [coder]
        judge = make_chat("openai:judge-model", role="judge", config=cfg, ledger=ledger)
        assert coder.complete(MSGS, role="coder").text == "from A"
        assert judge.complete(MSGS, role="judge").text == "from B"
        assert a.requests[0].headers["authorization"] == "Bearer sk-coder-key-123456"
        assert a.requests[0].model == "coder-model"
        assert b.requests[0].headers["authorization"] == "Bearer sk-judge-key-654321"
        assert b.requests[0].model == "judge-model"


def test_per_model_scripts(key):
    with FakeOpenAI(scripts={"coder-m": [answer("code")], "judge-m": [answer("verdict")]}) as fake:
        cfg = config(fake)
        judge = make_chat("openai:judge-m", role="judge", config=cfg, ledger=CostLedger())
        coder = make_chat("openai:coder-m", role="coder", config=cfg, ledger=CostLedger())
        assert judge.complete(MSGS, role="judge").text == "verdict"
        assert coder.complete(MSGS, role="coder").text == "code"


def test_make_chat_refuses_bad_specs(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    cfg, ledger = KevolveConfig(), CostLedger()
    for spec in ("builtin", "anthropic:claude", "gpt-4o", ""):
        with pytest.raises(ValueError, match="unknown LLM spec"):
            make_chat(spec, role="coder", config=cfg, ledger=ledger)
    with pytest.raises(ValueError, match="names no model"):
        make_chat("openai", role="coder", config=cfg, ledger=ledger)
    with pytest.raises(ValueError, match="OPENAI_API_KEY is not set"):
        make_chat("openai:gpt-4o", role="coder", config=cfg, ledger=ledger)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # a local server: any key will do
    chat = make_chat("openai:local", role="coder", config=cfg, ledger=ledger)
    assert chat.base_url == "http://127.0.0.1:9/v1"


# ---------------------------------------------------------------- manual backend


def test_manual_answer_file(tmp_path):
    out = io.StringIO()
    ledger = CostLedger()
    chat = ManualChat(tmp_path / "manual", ledger, out=out, poll_s=0.02, wait_s=5)

    def answer_later():
        time.sleep(0.15)
        (tmp_path / "manual" / "001-coder.answer.md").write_text(f"```python\n{CODE}```\n")

    t = threading.Thread(target=answer_later)
    t.start()
    reply = chat.complete(MSGS, role="coder")
    t.join()
    prompt = tmp_path / "manual" / "001-coder.prompt.md"
    assert "Write one." in prompt.read_text() and "You write kernels." in prompt.read_text()
    assert str(prompt) in out.getvalue() and "001-coder.answer.md" in out.getvalue()
    assert extract_code_block(reply.text) == CODE
    assert reply.model == "manual" and reply.cost_usd == 0 and reply.latency_s >= 0.1
    assert ledger.by_role()["coder"]["calls"] == 1


def test_manual_stdin_and_numbering(tmp_path):
    stdin = io.StringIO('{"mode": "fix"}\nEOF\nsecond answer\n')
    chat = ManualChat(tmp_path, stdin=stdin, out=io.StringIO(), poll_s=0.01)
    assert chat.complete(MSGS, role="judge").text == '{"mode": "fix"}\n'
    assert chat.complete(MSGS + [{"role": "user", "content": "again"}], role="coder").text == "second answer\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["001-judge.prompt.md", "002-coder.prompt.md"]


def test_manual_reuses_the_prompt_it_was_waiting_on(tmp_path):
    (tmp_path / "001-coder.prompt.md").write_text("old\n")
    chat = ManualChat(tmp_path, out=io.StringIO(), poll_s=0.01, wait_s=0.1)
    with pytest.raises(LLMError, match="no answer"):
        chat.complete(MSGS, role="coder")
    # Resumed after a crash: the same prompt keeps its number, and the answer written meanwhile is used.
    (tmp_path / "002-coder.answer.md").write_text("the answer")
    assert chat.complete(MSGS, role="coder").text == "the answer"
    assert not (tmp_path / "003-coder.prompt.md").exists()


def test_make_chat_manual(tmp_path):
    chat = make_chat("manual", role="coder", config=KevolveConfig(), ledger=CostLedger(), manual_dir=tmp_path)
    assert isinstance(chat, ManualChat) and chat.dir == tmp_path


# ---------------------------------------------------------------- answer parsing


def test_extract_code_block():
    assert extract_code_block(f"Sure.\n```python\n{CODE}```\nThat's it.") == CODE
    two = f"A sketch:\n```python\nx = 1\n```\nThe file:\n```python\n{CODE}```\n"
    assert extract_code_block(two) == CODE  # the largest python block is the file
    mixed = f"```cpp\n__global__ void k() {{}}\n```\n```py\n{CODE}```"
    assert extract_code_block(mixed) == CODE
    assert extract_code_block(f"```\n{CODE}```") == CODE  # no language: the largest fence
    assert extract_code_block(f"````python\n{CODE}```\n````") == CODE + "```\n"  # longer fence holds ```
    assert extract_code_block(CODE) == CODE  # a bare file
    assert extract_code_block(f"```python\n{CODE}") is None  # truncated: not a whole file
    assert extract_code_block("no code here") is None
    assert extract_code_block("") is None


def test_parse_json_answer():
    text = json.dumps(VERDICT)
    assert parse_json_answer(text, JUDGE_SCHEMA) == VERDICT
    assert parse_json_answer(f"Verdict:\n```json\n{text}\n```", JUDGE_SCHEMA) == VERDICT
    assert parse_json_answer(f"My answer is {text} - hope it helps", JUDGE_SCHEMA) == VERDICT
    assert parse_json_answer(json.dumps(VERDICT | {"confidence": 0.7}), JUDGE_SCHEMA)["confidence"] == 0.7
    assert parse_json_answer(json.dumps(VERDICT | {"confidence": 7}), JUDGE_SCHEMA) is None
    assert parse_json_answer(json.dumps(VERDICT | {"mode": "rewrite"}), JUDGE_SCHEMA) is None
    assert parse_json_answer(json.dumps({k: v for k, v in VERDICT.items() if k != "change"}), JUDGE_SCHEMA) is None
    assert parse_json_answer("[1, 2]", JUDGE_SCHEMA) is None
    assert parse_json_answer("{not json", JUDGE_SCHEMA) is None
    assert parse_json_answer("", JUDGE_SCHEMA) is None


def test_validate_json_subset():
    schema = {"type": "object", "required": ["n"], "properties": {
        "n": {"type": "integer", "minimum": 1}, "tags": {"type": "array", "items": {"type": "string"}},
        "x": {"type": ["number", "null"]}}}
    assert validate_json({"n": 2, "tags": ["a"], "x": None}, schema) == []
    assert validate_json({"n": True}, schema) == ["$.n: expected integer, got bool"]
    assert validate_json({"n": 0, "tags": [1]}, schema) == ["$.n: 0 < 1", "$.tags[0]: expected string, got int"]
    assert validate_json({}, schema) == ["$: missing 'n'"]


# ---------------------------------------------------------------- config


def test_config_file_roles_prices_and_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://env-server/v1")
    path = tmp_path / "kevolve.toml"
    path.write_text("""
[llm]
timeout_s = 60
max_retries = 3
[coder]
model = "gpt-4.1"
temperature = 0.5
max_tokens = 4000
[judge]
base_url = "http://judge-server/v1"
api_key_env = "JUDGE_KEY"
model = "o4-mini"
[prices]
"house" = { input = 0.5, output = 1.5 }
"pair" = [1, 2]
[session]
rounds = 7
""")
    cfg = load_config(path)
    coder, judge = cfg.role("coder"), cfg.role("judge")
    assert (coder.model, coder.temperature, coder.max_tokens, coder.timeout_s, coder.max_retries) == \
        ("gpt-4.1", 0.5, 4000, 60.0, 3)
    assert coder.api_key_env == "OPENAI_API_KEY" and coder.resolved_base_url() == "http://env-server/v1"
    assert (judge.model, judge.api_key_env, judge.resolved_base_url()) == ("o4-mini", "JUDGE_KEY",
                                                                            "http://judge-server/v1")
    assert judge.timeout_s == 60.0 and judge.temperature is None
    assert cfg.prices == {"house": (0.5, 1.5), "pair": (1.0, 2.0)}
    assert cfg.extra == {"session": {"rounds": 7}}
    assert CostLedger(config=cfg).price("house") == (0.5, 1.5)


@pytest.mark.parametrize("text, words", [
    ("[coder\nmodel = 1", "not valid TOML"),
    ("[coder]\nmodle = 'x'", "unknown key 'modle'"),
    ("[judge]\napi_key = 'sk-abc'", "do not put api_key in the file"),
    ("[llm]\ntimeout_s = -1", "timeout_s must be positive"),
    ("[llm]\nmax_retries = 1.5", "max_retries must be an integer"),
    ("[coder]\nmodel = 3", "model must be a non-empty string"),
    ("coder = 3", "must be a table"),
    ("model = 'x'", "belongs in a section"),
    ("[prices]\nm = 'cheap'", "USD per 1M tokens"),
    ("[prices]\nm = [-1, 2]", "prices must be numbers >= 0"),
])
def test_bad_config_is_one_line_value_error(tmp_path, text, words):
    path = tmp_path / "kevolve.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=words) as info:
        load_config(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_config_search_order(tmp_path, monkeypatch):
    home = tmp_path / "xdg"
    (home / "kevolve").mkdir(parents=True)
    (home / "kevolve" / "kevolve.toml").write_text("[coder]\nmodel = 'from-home'\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert load_config().role("coder").model == "from-home"
    (work / "kevolve.toml").write_text("[coder]\nmodel = 'from-cwd'\n")
    assert load_config().role("coder").model == "from-cwd"
    with pytest.raises(ValueError, match="not found"):
        load_config(Path(tmp_path / "missing.toml"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "nothing"))
    (work / "kevolve.toml").unlink()
    assert load_config().role("coder") == KevolveConfig().defaults


def test_max_tokens_name_follows_the_model(fake, key):
    fake.add(answer("a"), answer("b"))
    cfg = config(fake, max_tokens=256)
    make_chat("openai:fake-model", role="coder", config=cfg, ledger=CostLedger()).complete(MSGS, role="coder")
    make_chat("openai:o4-mini", role="coder", config=cfg, ledger=CostLedger()).complete(MSGS, role="coder")
    assert fake.requests[0].body["max_tokens"] == 256 and "temperature" not in fake.requests[0].body
    assert fake.requests[1].body["max_completion_tokens"] == 256 and "max_tokens" not in fake.requests[1].body


def test_manual_reads_a_real_stream_until_eof_line_or_ctrl_d(tmp_path):
    import os

    r, w = os.pipe()
    with os.fdopen(r) as stdin:
        chat = ManualChat(tmp_path, stdin=stdin, out=io.StringIO(), poll_s=0.01, wait_s=5)
        os.write(w, b"pasted line 1\npasted line 2\nEOF\ntyped ahead: dropped\n")
        assert chat.complete(MSGS, role="coder").text == "pasted line 1\npasted line 2\n"
        os.write(w, b"last words")
        os.close(w)  # Ctrl-D
        assert chat.complete(MSGS + [{"role": "user", "content": "more"}], role="coder").text == "last words"

"""The worker process itself: clean environment, fresh folder, survives nothing it should not."""

import os
from pathlib import Path

from kevolve.tools import sandbox


def test_worker_environment_has_no_secrets(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    monkeypatch.setenv("HF_TOKEN", "hf-secret")
    monkeypatch.setenv("MY_DB_PASSWORD", "hunter2")
    monkeypatch.setenv("KEVOLVE_HARMLESS", "visible")
    worker = sandbox.Worker("cpu", tmp_path, memory_bytes=1 << 30)
    try:
        assert worker.wait_ready(60)
        environ = Path(f"/proc/{worker.process.pid}/environ").read_bytes().decode(errors="replace")
        assert "sk-test-secret" not in environ and "hf-secret" not in environ and "hunter2" not in environ
        assert "KEVOLVE_HARMLESS=visible" in environ and "TRITON_INTERPRET=1" in environ
        cwd = Path(os.readlink(f"/proc/{worker.process.pid}/cwd"))
        assert cwd == worker.workdir and not any(p for p in cwd.iterdir() if p.name != "worker.log")
    finally:
        worker.cleanup()
    assert not worker.workdir.exists()


def test_clean_environment_drops_secret_names():
    os.environ["SOME_API_KEY"] = "x"
    try:
        env = sandbox.clean_environment("cuda", Path("/tmp/cache"))
    finally:
        del os.environ["SOME_API_KEY"]
    assert "SOME_API_KEY" not in env and "TRITON_INTERPRET" not in env
    assert env["TRITON_CACHE_DIR"] == "/tmp/cache/triton"

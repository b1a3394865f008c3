"""What only a GPU can show: timing side by side, side streams, L2, CUDA C++, device crashes."""

from pathlib import Path

import pytest

from kevolve.tools.evaluate import Evaluator

pytestmark = pytest.mark.gpu

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
PROBLEMS, CANDIDATES = HERE / "problems", HERE / "candidates"


@pytest.fixture(scope="module")
def gelu_eval():
    with Evaluator(ROOT / "examples/problems/scale_bias_gelu.py", device="cuda") as ev:
        yield ev


@pytest.fixture(scope="module")
def relu_eval():
    with Evaluator(PROBLEMS / "relu_rand.py", device="cuda", shapes=[{"batch_size": 4096, "dim": 4096},
                                                                      {"batch_size": 77, "dim": 1000}]) as ev:
        yield ev


def run(ev, path):
    return ev.evaluate(Path(path).read_text(), name=Path(path).name)


@pytest.mark.parametrize("candidate", ["scale_bias_gelu_triton.py", "scale_bias_gelu_cuda.py"])
def test_candidates_are_timed_against_eager_and_compile(gelu_eval, candidate):
    result = run(gelu_eval, ROOT / "examples/candidates" / candidate)
    assert result["status"] == "accepted", result["error"]
    assert result["custom_kernel"] and result["own_kernel_time_fraction"] > 0.9
    timing = result["timing"]
    assert timing["candidate_ms"] > 0 and timing["eager_ms"] > 0 and timing["compile_ms"] > 0
    assert timing["speedup_vs_eager"] == pytest.approx(timing["eager_ms"] / timing["candidate_ms"])
    assert not timing["synced"]
    print(candidate, timing)


def test_baselines_are_measured_before_any_candidate_arrives(tmp_path):
    """A prewarmed evaluator times eager and torch.compile in the background from the start, so the
    first accepted candidate does not wait for torch.compile; a candidate then reads the same numbers."""
    with Evaluator(PROBLEMS / "relu_rand.py", device="cuda", cache_dir=tmp_path) as ev:
        ev._baselines_thread.join(180)
        (record,) = ev._baselines.values()
        assert record["eager_ms"] > 0 and record["compile_ms"] > 0
        timing = run(ev, CANDIDATES / "relu_honest.py")["timing"]
        assert (timing["eager_ms"], timing["compile_ms"]) == (record["eager_ms"], record["compile_ms"])


def test_a_profile_holds_the_gpu_lock_only_around_its_kernels(gelu_eval):
    """The profiled worker starts, imports and compiles beside another holder of the GPU's lock, and
    waits for the lock only to run its kernels under ncu."""
    import threading

    from kevolve.tools.gpu_lock import gpu_identity, gpu_lock

    source = (ROOT / "examples/candidates/scale_bias_gelu_triton.py").read_text()
    gelu_eval.roofline()  # measured before: it takes the lock itself
    profiled: dict = {}
    worker = threading.Thread(target=lambda: profiled.update(result=gelu_eval.profile(source)))
    with gpu_lock(gelu_eval.cache, gpu_identity()):
        worker.start()
        worker.join(20)
        assert worker.is_alive()  # waiting for the lock this thread holds
    worker.join(180)
    assert profiled["result"]["source"] == "ncu" and profiled["result"]["kernels"], profiled


def test_side_stream_work_is_timed_with_a_device_sync(relu_eval):
    result = run(relu_eval, CANDIDATES / "relu_side_stream.py")
    assert result["status"] != "accepted" or result["timing"]["synced"], result
    honest = run(relu_eval, CANDIDATES / "relu_honest.py")
    assert honest["status"] == "accepted"
    if result["status"] == "accepted":
        # 50 launches on the side stream cannot be faster than one honest launch.
        assert result["timing"]["candidate_ms"] > honest["timing"]["candidate_ms"]


def test_a_synced_timing_is_not_charged_for_the_sync():
    """The device-wide synchronize that side-stream work needs costs the host's round trip; measured on
    an empty call and taken off, the same kernels time alike either way."""
    import torch

    from kevolve.tools.timing import l2_flush_buffer, time_cuda

    a = torch.randn(4096, 4096, device="cuda")
    flush = l2_flush_buffer()
    plain = time_cuda(lambda: a * 2, flush=flush)
    synced = time_cuda(lambda: a * 2, flush=flush, sync_all=True)
    assert synced.synced and not plain.synced
    assert abs(synced.median_ms - plain.median_ms) < 0.1 * plain.median_ms + 0.003, (plain, synced)


def test_l2_flush_buffer_is_larger_than_l2():
    import torch

    from kevolve.tools.timing import l2_flush_buffer

    buffer = l2_flush_buffer()
    assert buffer.numel() * buffer.element_size() >= 2 * torch.cuda.get_device_properties(0).L2_cache_size


def test_illegal_memory_access_is_a_crash(relu_eval):
    result = run(relu_eval, CANDIDATES / "relu_segfault.py")
    assert result["status"] == "crashed", result["error"]
    assert run(relu_eval, CANDIDATES / "relu_honest.py")["status"] == "accepted"


def test_gpu_out_of_memory(relu_eval):
    result = run(relu_eval, CANDIDATES / "relu_huge_gpu_alloc.py")
    assert result["status"] == "runtime_error" and "out of memory" in result["error"], result["error"]


@pytest.mark.parametrize("name, status", [("relu_identity.py", "incorrect"), ("relu_fallback.py", "rejected"),
                                          ("relu_inplace_return.py", "rejected"), ("relu_cache.py", "incorrect"),
                                          ("relu_uninitialised.py", "incorrect")])
def test_battery_on_the_gpu(relu_eval, name, status):
    assert run(relu_eval, CANDIDATES / name)["status"] == status


def test_cuda_build_is_cached(gelu_eval):
    first = run(gelu_eval, ROOT / "examples/candidates/scale_bias_gelu_cuda.py")
    second = run(gelu_eval, ROOT / "examples/candidates/scale_bias_gelu_cuda.py")
    assert first["status"] == second["status"] == "accepted"
    assert second["seconds"]["import"] < 5.0, second["seconds"]

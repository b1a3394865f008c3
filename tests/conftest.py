import os
from pathlib import Path

import pytest

# Worker processes inherit this; tests keep their caches away from the user's.
os.environ.setdefault("KEVOLVE_CACHE_DIR", str(Path(__file__).parent.parent / ".pytest_cache" / "kevolve"))


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


HAS_CUDA = _has_cuda()


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

"""Fixtures for the serving tests: real tritonservers from e2e/runtime (``.venv-triton``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from e2e.runtime import (
    TokenModelSpec,
    TritonFleet,
    TritonInstall,
    spec_for,
    write_model_repository,
)

from tokenfleet.serving import RuntimePool

# Model names the tests load; each test uses its own so tests do not disturb each other.
SLOW = "slowllama-fp16"  # 10 ms per token, 2 instances: calls overlap on the server
BROKEN = "brokenllama-int4"  # initialize() raises: a load failure with Triton's message
TEST_MODELS = (
    "tinyllama-fp16",
    "tinyllama-int4",
    "cyclellama-fp16",
    "metricllama-fp16",
    "killllama-fp16",
)


@pytest.fixture(scope="session")
def triton_install() -> TritonInstall:
    try:
        return TritonInstall.discover()
    except FileNotFoundError as exc:  # fail loudly: these tests are the point of the package
        pytest.fail(f"tritonserver not available: {exc}")


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    specs: dict[str, TokenModelSpec | None] = dict.fromkeys(TEST_MODELS)
    slow = spec_for(SLOW)
    specs[SLOW] = TokenModelSpec(
        precision=slow.precision,
        hidden_size=slow.hidden_size,
        seed=slow.seed,
        delay_ms_per_token=10,
        instance_count=2,
    )
    specs[BROKEN] = None
    write_model_repository(root, specs)
    model_py = root / BROKEN / "1" / "model.py"
    model_py.write_text(
        model_py.read_text().replace(
            "        config = json.loads(args",
            '        raise RuntimeError("tokenizer.json missing from the model bundle")\n'
            "        config = json.loads(args",
            1,
        )
    )
    return root


@pytest.fixture(scope="session")
def triton_fleet(triton_install: TritonInstall, model_repository: Path) -> Iterator[TritonFleet]:
    with TritonFleet(2, model_repository, install=triton_install) as fleet:
        yield fleet


@pytest.fixture
async def pool() -> AsyncIterator[RuntimePool]:
    async with RuntimePool(timeout=5.0, load_timeout=30.0) as p:
        yield p

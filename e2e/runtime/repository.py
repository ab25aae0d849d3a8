"""Triton model repositories of token-generator models (any names, written on demand).

``write_model_repository(root, ["tinyllama-fp16", "tinyllama-int4"])`` writes, per name,
``<root>/<name>/config.pbtxt`` (a full config: the server runs with
``--disable-auto-complete-config``) and ``<root>/<name>/1/model.py`` (a copy of
``token_model.py``). :data:`DEFAULT_MODELS` are the test models plus the examples' models (a
test checks that every variant in ``examples/*.yaml`` is among them); ``python -m e2e.runtime
write-models DIR`` writes them for a hand-started tritonserver.

Triton model names follow the operator's convention ``<model.name>-<variant.name>``; the
variant suffix picks the precision and a hidden size (int4 is smaller than fp16), the model
part seeds the weights, so ``tinyllama-fp16`` and ``tinyllama-int4`` give different tokens.
"""

from __future__ import annotations

import re
import shutil
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_MODELS",
    "EXAMPLE_MODELS",
    "TEST_MODELS",
    "TOKEN_MODEL_SOURCE",
    "TokenModelSpec",
    "render_config",
    "spec_for",
    "write_model_repository",
    "write_token_model",
]

HERE = Path(__file__).resolve().parent
TOKEN_MODEL_SOURCE = HERE / "token_model.py"
TEST_MODELS: tuple[str, ...] = ("tinyllama-fp16", "tinyllama-int4")
"""Model names for tests: model ``tinyllama``, variants ``fp16`` and ``int4``."""
EXAMPLE_MODELS: tuple[str, ...] = (
    "llama-3.1-8b-instruct-fp16",
    "qwen2.5-7b-instruct-fp16",
    "qwen2.5-7b-instruct-int4-awq",
)
"""Triton model names of the variants in ``examples/*.yaml`` (a test keeps this in sync)."""
DEFAULT_MODELS: tuple[str, ...] = TEST_MODELS + EXAMPLE_MODELS

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_HIDDEN = {"fp32": 96, "fp16": 64, "bf16": 64, "int8": 48, "int4": 32}
#: tokens/s of one stream per precision: a rack's full-precision variant outruns a car's int4
RATES = {"fp32": 400.0, "fp16": 400.0, "bf16": 400.0, "int8": 200.0, "int4": 100.0}


@dataclass(frozen=True)
class TokenModelSpec:
    """Parameters of one token-generator model (become config.pbtxt ``parameters``)."""

    precision: str = "fp32"
    hidden_size: int = 96
    vocab_size: int = 4096
    seed: int = 0
    max_tokens_limit: int = 512
    delay_ms_per_token: float = 0.0
    tokens_per_second: float = 0.0
    ballast_mib: int = 0
    instance_count: int = 1


def spec_for(name: str) -> TokenModelSpec:
    """Default spec for a Triton model name ``<model>-<variant>``.

    The last dash-separated part that names a precision (fp32, fp16, bf16, int8, int4) sets
    precision and hidden size (``qwen2.5-7b-instruct-int4-awq`` is int4); without one the
    model is fp32. The seed is a CRC32 of the part before the precision (the model), so the
    variants of one model share a seed but differ in size and rounding.
    """
    parts = name.split("-")
    for i in range(len(parts) - 1, 0, -1):
        precision = parts[i].lower()
        if precision in _HIDDEN:
            model_part = "-".join(parts[:i])
            break
    else:
        precision, model_part = "fp32", name
    return TokenModelSpec(
        precision=precision,
        hidden_size=_HIDDEN[precision],
        seed=zlib.crc32(model_part.encode()),
        tokens_per_second=RATES[precision],
    )


def render_config(name: str, spec: TokenModelSpec) -> str:
    """A complete config.pbtxt for the token model ``name``."""
    params = {
        "precision": spec.precision,
        "hidden_size": str(spec.hidden_size),
        "vocab_size": str(spec.vocab_size),
        "seed": str(spec.seed),
        "max_tokens_limit": str(spec.max_tokens_limit),
        "delay_ms_per_token": f"{spec.delay_ms_per_token:g}",
        "tokens_per_second": f"{spec.tokens_per_second:g}",
        "ballast_mib": str(spec.ballast_mib),
    }
    lines = [
        f'name: "{name}"',
        'backend: "python"',
        "max_batch_size: 0",
        "model_transaction_policy { decoupled: true }",
        "input [",
        '  { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] },',
        '  { name: "max_tokens" data_type: TYPE_INT32 dims: [ 1 ] optional: true },',
        '  { name: "temperature" data_type: TYPE_FP32 dims: [ 1 ] optional: true },',
        '  { name: "seed" data_type: TYPE_UINT64 dims: [ 1 ] optional: true },',
        '  { name: "stream" data_type: TYPE_BOOL dims: [ 1 ] optional: true }',
        "]",
        "output [",
        '  { name: "text_output" data_type: TYPE_STRING dims: [ 1 ] },',
        '  { name: "completion_tokens" data_type: TYPE_INT32 dims: [ 1 ] },',
        '  { name: "prompt_tokens" data_type: TYPE_INT32 dims: [ 1 ] },',
        '  { name: "finish_reason" data_type: TYPE_STRING dims: [ 1 ] }',
        "]",
        f"instance_group [ {{ count: {spec.instance_count} kind: KIND_CPU }} ]",
        "version_policy: { latest: { num_versions: 1 } }",
    ]
    for key, value in params.items():
        lines.append(f'parameters: {{ key: "{key}" value: {{ string_value: "{value}" }} }}')
    return "\n".join(lines) + "\n"


def write_token_model(root: Path, name: str, spec: TokenModelSpec | None = None) -> Path:
    """Write (replacing) the model directory ``root/name``; returns it."""
    if not _NAME_RE.match(name):
        raise ValueError(f"bad Triton model name {name!r}")
    spec = spec or spec_for(name)
    model_dir = Path(root) / name
    if model_dir.exists():
        shutil.rmtree(model_dir)
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(render_config(name, spec))
    shutil.copyfile(TOKEN_MODEL_SOURCE, model_dir / "1" / "model.py")
    return model_dir


def write_model_repository(
    root: Path,
    models: Iterable[str] | Mapping[str, TokenModelSpec | None] = DEFAULT_MODELS,
) -> Path:
    """Write one token model per name into ``root`` (created if needed); returns ``root``.

    ``models`` is a list of names (default specs from :func:`spec_for`) or a mapping
    name -> spec (``None`` for the default).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    items = models.items() if isinstance(models, Mapping) else ((n, None) for n in models)
    for name, spec in items:
        write_token_model(root, name, spec)
    return root

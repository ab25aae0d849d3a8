"""A small numpy "token generator" for Triton's python backend: an LLM stand-in on CPU.

This file is copied verbatim to ``<model>/1/model.py`` by ``e2e.runtime.repository``; it runs
inside Triton's python-backend stub (the ``.venv-triton`` interpreter, numpy<2), not in the
operator's venv.

Inputs ``PROMPT`` (INT32 [-1]) and ``MAX_TOKENS`` (INT32 [1]); output ``TOKENS`` (INT32 [-1]).
Weights come from a seeded generator (config parameters ``seed``, ``vocab_size``,
``hidden_size``, ``precision``), so the output is a pure function of the prompt for a given
config: h = tanh(mean(E[prompt])); repeat: token = argmax(h @ W_out);
h = tanh(h @ W_h + E[token] + pos(i)). ``precision`` (fp32/fp16/bf16/int8/int4) rounds the
weights the way a quantised variant would. ``delay_ms_per_token`` sleeps per token (to emulate a
throughput), ``ballast_mib`` holds that much memory while loaded.
"""

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


def _quantize(w, precision):
    if precision in ("fp16", "bf16"):
        return w.astype(np.float16).astype(np.float32)
    if precision in ("int8", "int4"):
        levels = 127 if precision == "int8" else 7
        scale = np.abs(w).max(axis=1, keepdims=True) / levels
        scale[scale == 0] = 1.0
        return (np.clip(np.round(w / scale), -levels - 1, levels) * scale).astype(np.float32)
    return w.astype(np.float32)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.vocab = int(params.get("vocab_size", "4096"))
        self.hidden = int(params.get("hidden_size", "64"))
        self.max_tokens_limit = int(params.get("max_tokens_limit", "512"))
        self.delay = float(params.get("delay_ms_per_token", "0")) / 1000.0
        precision = params.get("precision", "fp32").lower()
        rng = np.random.default_rng(int(params.get("seed", "0")))
        self.emb = _quantize(rng.standard_normal((self.vocab, self.hidden)), precision)
        self.w_h = _quantize(
            rng.standard_normal((self.hidden, self.hidden)) / np.sqrt(self.hidden), precision
        )
        self.w_out = _quantize(rng.standard_normal((self.hidden, self.vocab)), precision)
        freqs = 1.0 / (10000.0 ** (np.arange(self.hidden) / self.hidden))
        self.freqs = freqs.astype(np.float32)
        ballast = int(params.get("ballast_mib", "0"))
        self.ballast = np.ones(ballast * 1024 * 1024, dtype=np.uint8) if ballast > 0 else None

    def _generate(self, prompt, max_tokens):
        h = np.tanh(self.emb[np.mod(prompt, self.vocab)].mean(axis=0))
        out = np.empty(max_tokens, dtype=np.int32)
        for i in range(max_tokens):
            token = int(np.argmax(h @ self.w_out))
            out[i] = token
            h = np.tanh(h @ self.w_h + self.emb[token] + np.sin((i + 1) * self.freqs))
            if self.delay:
                time.sleep(self.delay)
        return out

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                prompt = pb_utils.get_input_tensor_by_name(request, "PROMPT").as_numpy()
                max_tokens = pb_utils.get_input_tensor_by_name(request, "MAX_TOKENS").as_numpy()
                prompt = prompt.reshape(-1).astype(np.int64)
                if prompt.size == 0:
                    raise ValueError("PROMPT must hold at least one token")
                n = int(max_tokens.reshape(-1)[0])
                if n < 0 or n > self.max_tokens_limit:
                    raise ValueError(f"MAX_TOKENS must be in 0..{self.max_tokens_limit}, got {n}")
                tokens = self._generate(prompt, n)
                responses.append(
                    pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("TOKENS", tokens)])
                )
            except ValueError as exc:
                responses.append(
                    pb_utils.InferenceResponse(
                        output_tensors=[], error=pb_utils.TritonError(str(exc))
                    )
                )
        return responses

    def finalize(self):
        self.ballast = None

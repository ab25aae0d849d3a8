"""A small numpy text generator for Triton's python backend: an LLM stand-in on CPU.

This file is copied verbatim to ``<model>/1/model.py`` by ``e2e.runtime.repository``; it runs
inside Triton's python-backend stub (the ``.venv-triton`` interpreter, numpy<2), not in the
operator's venv.

It speaks what the vLLM and TensorRT-LLM backends speak through Triton's generate extension
(``POST /v2/models/{model}/generate`` and ``generate_stream``): a **decoupled** model with input
``text_input`` (BYTES [1]) and optional ``max_tokens`` (INT32 [1]), ``temperature`` (FP32 [1]),
``seed`` (UINT64 [1]) and ``stream`` (BOOL [1]); outputs ``text_output`` (BYTES [1]: the new
text), ``completion_tokens`` (INT32 [1]: tokens generated so far), ``prompt_tokens`` (INT32 [1])
and ``finish_reason`` (BYTES [1]: ``""`` while streaming, ``"length"`` at the end).
With ``stream`` true every token is one response; otherwise one response carries the whole
text. A request ``{"text_input": "hi", "max_tokens": 8, "stream": true}`` on
``generate_stream`` gives 8 SSE events.

Tokens are words of a seeded synthetic vocabulary; the prompt's words map to ids by CRC32.
Weights come from a seeded generator (config parameters ``seed``, ``vocab_size``,
``hidden_size``, ``precision``): h = tanh(mean(E[prompt])); repeat: logits = h @ W_out, token =
argmax (temperature 0) or a sample from softmax(logits / temperature) with a generator seeded by
the request's ``seed``; h = tanh(h @ W_h + E[token] + pos(i)). Token id 0 (end-of-text) is
never drawn, so a request gets exactly ``max_tokens`` tokens. The output is a pure function of
(prompt, max_tokens, temperature, seed) for a given config.
``precision`` (fp32/fp16/bf16/int8/int4) rounds the weights the way a quantised variant would.

``tokens_per_second`` paces each request's tokens (a car's variant is slower than a rack's);
``delay_ms_per_token`` adds a fixed sleep per token; ``ballast_mib`` holds that much memory
while loaded. Every generated token increments the counter
``vllm:generation_tokens_total{model,version,instance}``, the family Triton's vLLM backend
exports (plus a per-instance label, so a reload never shares a series between two instances).
Each request runs in its own thread (continuous batching's effect: streams do not
wait for one another); ``finalize`` (unload) waits for the requests in flight to finish, so an
unload drains.
"""

import json
import threading
import time
import uuid
import zlib

import numpy as np
import triton_python_backend_utils as pb_utils

_ONSETS = [
    "b",
    "c",
    "d",
    "f",
    "g",
    "h",
    "j",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "w",
    "z",
    "br",
    "ch",
    "cl",
    "dr",
    "fl",
    "gr",
    "pl",
    "sh",
    "st",
    "th",
    "tr",
]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "io", "ou"]
_EOS = 0
_FINALIZE_WAIT_S = 60.0


def _quantize(w, precision):
    if precision in ("fp16", "bf16"):
        return w.astype(np.float16).astype(np.float32)
    if precision in ("int8", "int4"):
        levels = 127 if precision == "int8" else 7
        scale = np.abs(w).max(axis=1, keepdims=True) / levels
        scale[scale == 0] = 1.0
        return (np.clip(np.round(w / scale), -levels - 1, levels) * scale).astype(np.float32)
    return w.astype(np.float32)


def _vocabulary(size, rng):
    words = ["<eos>"]
    seen = set(words)
    while len(words) < size:
        n = int(rng.integers(1, 4))
        word = "".join(
            _ONSETS[int(rng.integers(len(_ONSETS)))] + _VOWELS[int(rng.integers(len(_VOWELS)))]
            for _ in range(n)
        )
        if word in seen:
            word = f"{word}{len(words)}"
        seen.add(word)
        words.append(word)
    return words


def _optional(request, name, default):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    value = tensor.as_numpy().reshape(-1)
    return value[0] if value.size else default


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.vocab = int(params.get("vocab_size", "4096"))
        self.hidden = int(params.get("hidden_size", "64"))
        self.max_tokens_limit = int(params.get("max_tokens_limit", "512"))
        self.default_max_tokens = int(params.get("default_max_tokens", "16"))
        delay = float(params.get("delay_ms_per_token", "0")) / 1000.0
        rate = float(params.get("tokens_per_second", "0"))
        self.delay = delay + (1.0 / rate if rate > 0 else 0.0)
        precision = params.get("precision", "fp32").lower()
        rng = np.random.default_rng(int(params.get("seed", "0")))
        self.emb = _quantize(rng.standard_normal((self.vocab, self.hidden)), precision)
        self.w_h = _quantize(
            rng.standard_normal((self.hidden, self.hidden)) / np.sqrt(self.hidden), precision
        )
        self.w_out = _quantize(rng.standard_normal((self.hidden, self.vocab)), precision)
        freqs = 1.0 / (10000.0 ** (np.arange(self.hidden) / self.hidden))
        self.freqs = freqs.astype(np.float32)
        self.words = _vocabulary(self.vocab, rng)
        ballast = int(params.get("ballast_mib", "0"))
        self.ballast = np.ones(ballast * 1024 * 1024, dtype=np.uint8) if ballast > 0 else None
        self.inflight = 0
        self.cond = threading.Condition()
        # generated tokens, counted as Triton's vLLM backend counts them (the operator's measured
        # tokens/s reads this counter on the metrics port)
        self.generated_family = pb_utils.MetricFamily(
            name="vllm:generation_tokens_total",
            description="Number of generation tokens processed.",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        # one series per model instance: on a reload Triton runs the new instance before it
        # finalizes the old one, and a series two instances shared would be freed under the new
        # one when the old one goes (tritonserver crashed on that); readers sum over instances
        self.generated = self.generated_family.Metric(
            labels={
                "model": args["model_name"],
                "version": args["model_version"],
                "instance": uuid.uuid4().hex[:12],
            }
        )
        self.metric_lock = threading.Lock()

    def _prompt_ids(self, text):
        words = text.split()
        ids = [1 + zlib.crc32(w.encode()) % (self.vocab - 1) for w in words] or [1]
        return np.asarray(ids, dtype=np.int64), len(words)

    def _tokens(self, prompt, max_tokens, temperature, seed):
        """Yields token ids (stops after max_tokens or at end-of-text), paced at the rate."""
        h = np.tanh(self.emb[prompt].mean(axis=0))
        rng = np.random.default_rng(int(seed))
        start = time.monotonic()
        for i in range(max_tokens):
            logits = h @ self.w_out
            logits[_EOS] = -np.inf  # a fixed-length generator: exactly max_tokens tokens
            if temperature > 0:
                z = logits / temperature
                p = np.exp(z - z[1:].max())
                token = int(rng.choice(self.vocab, p=p / p.sum()))
            else:
                token = int(np.argmax(logits))
            if self.delay:
                lag = start + (i + 1) * self.delay - time.monotonic()
                if lag > 0:
                    time.sleep(lag)
            yield token
            h = np.tanh(h @ self.w_h + self.emb[token] + np.sin((i + 1) * self.freqs))

    @staticmethod
    def _response(text, completion, prompt_tokens, finish):
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("text_output", np.array([text.encode()], dtype=np.object_)),
                pb_utils.Tensor("completion_tokens", np.array([completion], dtype=np.int32)),
                pb_utils.Tensor("prompt_tokens", np.array([prompt_tokens], dtype=np.int32)),
                pb_utils.Tensor("finish_reason", np.array([finish.encode()], dtype=np.object_)),
            ]
        )

    def _serve(self, request, sender):
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        try:
            raw = pb_utils.get_input_tensor_by_name(request, "text_input")
            if raw is None:
                raise ValueError("text_input is required")
            value = raw.as_numpy().reshape(-1)
            text = value[0] if value.size else b""
            text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
            n = int(_optional(request, "max_tokens", self.default_max_tokens))
            if n < 0 or n > self.max_tokens_limit:
                raise ValueError(f"max_tokens must be in 0..{self.max_tokens_limit}, got {n}")
            temperature = float(_optional(request, "temperature", 0.0))
            if not np.isfinite(temperature) or temperature < 0 or temperature > 10:
                raise ValueError(f"temperature must be in 0..10, got {temperature}")
            seed = int(_optional(request, "seed", 0))
            stream = bool(_optional(request, "stream", False))
            prompt, prompt_tokens = self._prompt_ids(text)
            pieces = []
            finish = "length"
            for token in self._tokens(prompt, n, temperature, seed):
                piece = (" " if pieces else "") + self.words[token]
                pieces.append(piece)
                with self.metric_lock:
                    self.generated.increment(1)
                if stream:
                    sender.send(self._response(piece, len(pieces), prompt_tokens, ""))
            if stream:
                sender.send(self._response("", len(pieces), prompt_tokens, finish), flags=final)
            else:
                sender.send(
                    self._response("".join(pieces), len(pieces), prompt_tokens, finish),
                    flags=final,
                )
        except Exception as exc:  # the caller gets Triton's error with this message
            sender.send(
                pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc))),
                flags=final,
            )
        finally:
            with self.cond:
                self.inflight -= 1
                self.cond.notify_all()

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            with self.cond:
                self.inflight += 1
            threading.Thread(target=self._serve, args=(request, sender), daemon=True).start()
        return None

    def finalize(self):
        with self.cond:
            self.cond.wait_for(lambda: self.inflight == 0, timeout=_FINALIZE_WAIT_S)
        self.ballast = None
        # a metric goes before its family (Triton's python backend requires that order)
        self.generated = None
        self.generated_family = None

"""A variant's signature: an OpenSSF ``model-signing`` bundle, verified offline.

A variant may name a signature (``spec.variants[].signature``): a bundle written by
``model_signing sign key`` (an elliptic-curve private key) or ``model_signing sign certificate``
(a signing certificate issued by the platform's CA), stored as the object
``<repositoryUri>/<triton model name>/<path>`` (default ``model.sig``, next to the files). The
model cache fetches it *outside* the model directory (it is neither installed into Triton's
repository nor part of the variant's ``sha256``) and, after the digest matched, verifies the
staged directory against it with the library's own verifier
(:func:`model_signing.verifying.Config.use_elliptic_key_verifier` with the variant's
``publicKey``, or :func:`~model_signing.verifying.Config.use_certificate_verifier` with its
``certificateChain``). Nothing is fetched from the network: no Sigstore keyless verification.

The bundle's manifest must list exactly the files of the directory with their hashes: a changed,
added or missing file fails, as does a bundle signed by another key or certificate.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = ["DEFAULT_SIGNATURE_PATH", "Signature", "SignatureError", "verify_signature"]

DEFAULT_SIGNATURE_PATH: Final = "model.sig"
_MAX_MESSAGE: Final = 240


class SignatureError(ValueError):
    """The directory does not match the bundle, or the bundle does not verify with the key."""


@dataclass(frozen=True, slots=True)
class Signature:
    """What a variant's ``signature`` names: the bundle's path (relative to the model's
    directory in the store) and exactly one of a PEM public key and a PEM certificate chain."""

    path: str = DEFAULT_SIGNATURE_PATH
    public_key: str | None = None
    certificate_chain: str | None = None

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> Signature | None:
        """From a variant's ``signature`` (wire names); ``None`` when it names none."""
        if not spec:
            return None
        return cls(
            path=str(spec.get("path") or DEFAULT_SIGNATURE_PATH),
            public_key=str(spec["publicKey"]) if spec.get("publicKey") else None,
            certificate_chain=(
                str(spec["certificateChain"]) if spec.get("certificateChain") else None
            ),
        )

    @property
    def trust(self) -> str:
        """``key`` or ``certificate``: how the bundle is checked."""
        return "key" if self.public_key is not None else "certificate"

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the trust material (kind and PEM text): the cache records which key or
        chain a model it holds was verified with."""
        pem = self.public_key if self.public_key is not None else self.certificate_chain
        return hashlib.sha256(f"{self.trust}\n{(pem or '').strip()}".encode()).hexdigest()


def verify_signature(model_dir: Path, bundle: Path, signature: Signature) -> None:
    """Verify the files of ``model_dir`` against the ``model-signing`` bundle ``bundle`` with the
    variant's key or certificate chain. Raises :class:`SignatureError` (with the library's
    reason, shortened) on any failure: bad bundle, wrong key, untrusted certificate, a file
    changed, added or missing. Blocking (it hashes every file): run it in a thread."""
    # imported here: model_signing pulls in sigstore (a second or so); only caches verify
    from model_signing import verifying

    pem = signature.public_key if signature.public_key is not None else signature.certificate_chain
    if not pem:
        raise SignatureError("the signature names neither a public key nor a certificate chain")
    if not bundle.is_file():
        raise SignatureError(f"no signature bundle at {bundle}")
    # the library reads the key or chain from a file: written next to the bundle (the cache's
    # state directory; in the chart the container's root filesystem is read-only)
    with tempfile.TemporaryDirectory(prefix=".trust-", dir=bundle.parent) as tmp:
        trust = Path(tmp) / "trust.pem"
        trust.write_text(pem)
        config = verifying.Config()  # type: ignore[no-untyped-call]
        try:
            if signature.public_key is not None:
                config.use_elliptic_key_verifier(public_key=trust)
            else:
                config.use_certificate_verifier(certificate_chain=[trust])
            config.verify(Path(model_dir), bundle)
        except Exception as error:  # fail closed: whatever the library raises is a refusal
            raise SignatureError(_describe(error)) from error


def _describe(error: BaseException) -> str:
    """The library's reason, short: a manifest mismatch names the files, not their hashes."""
    text = " ".join(str(error).split()) or type(error).__name__
    if type(error).__name__ == "InvalidSignature":
        text = "the bundle was not signed by this key"
    elif text.startswith("Signature mismatch"):
        # the library's message is a list's repr: quotes may come escaped (\\')
        changed = re.findall(r"Hash mismatch for \\?'([^'\\]+)\\?'", text)
        parts = re.findall(r"((?:Extra|Missing) files [^\"\]]*)", text)
        if changed:
            parts.append("changed: " + ", ".join(changed))
        text = "the files differ from the signed manifest: " + "; ".join(parts or [text])
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 1] + "…"
    return text

"""Variant signatures: OpenSSF ``model-signing`` bundles made with real EC P-256 keys and a real
signing CA, verified by :func:`tokenfleet.delivery.signature.verify_signature` (the library's
own verifier, offline); the API field, the wants that carry it and the operator's gate."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e.signing_kit import SigningCA, SigningKey, sign_with_certificate, sign_with_key
from pydantic import ValidationError

from tokenfleet.api import Variant, VariantSignature
from tokenfleet.delivery.digest import tree_digest
from tokenfleet.delivery.gate import GateAction, gate
from tokenfleet.delivery.report import CacheEntry, CacheReport, CacheState
from tokenfleet.delivery.signature import Signature, SignatureError, verify_signature
from tokenfleet.delivery.wants import prefetch_on, wanted_on

SHA = "ab" * 32


def _model(root: Path) -> Path:
    (root / "1").mkdir(parents=True)
    (root / "config.pbtxt").write_text('name: "m"\nbackend: "python"\n')
    (root / "1" / "model.py").write_bytes(b"print('weights')\n" * 500)
    return root


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return SigningKey.generate(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def signed(tmp_path: Path, key: SigningKey) -> tuple[Path, Path]:
    """A model directory and its bundle (outside it), signed with ``key``."""
    model = _model(tmp_path / "m")
    bundle = tmp_path / "m.sig"
    sign_with_key(model, bundle, key)
    return model, bundle


def test_a_good_signature_is_accepted(signed: tuple[Path, Path], key: SigningKey) -> None:
    model, bundle = signed
    verify_signature(model, bundle, Signature(public_key=key.public_pem))


def test_a_tampered_file_is_refused(signed: tuple[Path, Path], key: SigningKey) -> None:
    model, bundle = signed
    (model / "1" / "model.py").write_bytes(b"import os; os.system('evil')\n")
    with pytest.raises(SignatureError, match=r"differ from the signed manifest.*1/model\.py"):
        verify_signature(model, bundle, Signature(public_key=key.public_pem))


def test_an_added_or_removed_file_is_refused(signed: tuple[Path, Path], key: SigningKey) -> None:
    model, bundle = signed
    (model / "1" / "extra.py").write_text("import os\n")
    with pytest.raises(SignatureError, match=r"Extra files.*1/extra\.py"):
        verify_signature(model, bundle, Signature(public_key=key.public_pem))
    (model / "1" / "extra.py").unlink()
    (model / "config.pbtxt").unlink()
    with pytest.raises(SignatureError, match=r"Missing files.*config\.pbtxt"):
        verify_signature(model, bundle, Signature(public_key=key.public_pem))


def test_another_key_is_refused(signed: tuple[Path, Path], tmp_path: Path) -> None:
    model, bundle = signed
    other = SigningKey.generate(tmp_path / "other", "other")
    with pytest.raises(SignatureError, match=r"[Kk]ey"):
        verify_signature(model, bundle, Signature(public_key=other.public_pem))


def test_a_bundle_signed_by_another_key_is_refused(
    tmp_path: Path, key: SigningKey, signed: tuple[Path, Path]
) -> None:
    """The attacker re-signs the (changed) files with their own key: refused by ours."""
    model, bundle = signed
    attacker = SigningKey.generate(tmp_path / "attacker", "attacker")
    (model / "1" / "model.py").write_bytes(b"backdoor\n")
    sign_with_key(model, bundle, attacker)
    verify_signature(model, bundle, Signature(public_key=attacker.public_pem))  # it is valid...
    with pytest.raises(SignatureError):  # ...but not by the variant's key
        verify_signature(model, bundle, Signature(public_key=key.public_pem))


def test_a_missing_or_garbled_bundle_is_refused(
    signed: tuple[Path, Path], key: SigningKey, tmp_path: Path
) -> None:
    model, bundle = signed
    trust = Signature(public_key=key.public_pem)
    with pytest.raises(SignatureError, match="no signature bundle"):
        verify_signature(model, tmp_path / "absent.sig", trust)
    bundle.write_text('{"mediaType": "not a bundle"}')
    with pytest.raises(SignatureError):
        verify_signature(model, bundle, trust)
    bundle.write_bytes(b"\x00\xff garbage")
    with pytest.raises(SignatureError):
        verify_signature(model, bundle, trust)


def test_a_certificate_chain_verifies_what_its_ca_issued(tmp_path: Path) -> None:
    ca = SigningCA.generate(tmp_path / "pki")
    model = _model(tmp_path / "m")
    bundle = tmp_path / "m.sig"
    sign_with_certificate(model, bundle, ca)
    verify_signature(model, bundle, Signature(certificate_chain=ca.ca_pem))
    other = SigningCA.generate(tmp_path / "other-pki", "other")
    with pytest.raises(SignatureError):
        verify_signature(model, bundle, Signature(certificate_chain=other.ca_pem))
    (model / "config.pbtxt").write_text("tampered\n")
    with pytest.raises(SignatureError, match=r"config\.pbtxt"):
        verify_signature(model, bundle, Signature(certificate_chain=ca.ca_pem))


def test_a_bundle_written_into_the_directory_is_left_out_of_both_checks(
    tmp_path: Path, key: SigningKey
) -> None:
    """`model_signing sign key DIR --signature DIR/model.sig`: the library leaves its own bundle
    out of the manifest; `digest --exclude model.sig` leaves it out of the variant digest, so both
    match the directory the cache stages (which never holds the bundle)."""
    model = _model(tmp_path / "m")
    clean = tree_digest(model)
    sign_with_key(model, model / "model.sig", key)
    assert tree_digest(model, exclude=["model.sig"]) == clean != tree_digest(model)
    staged = tmp_path / "staged"
    (model / "model.sig").rename(tmp_path / "model.sig")
    model.rename(staged)
    verify_signature(staged, tmp_path / "model.sig", Signature(public_key=key.public_pem))


def test_fingerprint_names_the_trust_material(key: SigningKey, tmp_path: Path) -> None:
    a = Signature(public_key=key.public_pem)
    assert a.fingerprint == Signature("other.sig", public_key=key.public_pem + "\n").fingerprint
    other = SigningKey.generate(tmp_path).public_pem
    assert a.fingerprint != Signature(public_key=other).fingerprint
    assert a.trust == "key" and Signature(certificate_chain="x").trust == "certificate"
    assert Signature.from_spec(None) is None
    assert Signature.from_spec({"publicKey": key.public_pem}) == a


# ---- the API field --------------------------------------------------------------------------


def _variant(signature: dict[str, str] | None) -> dict[str, object]:
    v: dict[str, object] = {
        "name": "int4",
        "precision": "INT4",
        "memoryMiB": 6144,
        "tokensPerSecond": 900,
        "watts": 60,
        "targets": ["Rack"],
        "sha256": SHA,
    }
    if signature is not None:
        v["signature"] = signature
    return v


def test_the_variant_signature_field(key: SigningKey) -> None:
    v = Variant.model_validate(_variant({"publicKey": key.public_pem}))
    assert v.signature is not None and v.signature.path == "model.sig"
    assert v.to_wire()["signature"] == {"path": "model.sig", "publicKey": key.public_pem}
    assert Variant.model_validate(_variant(None)).signature is None
    with pytest.raises(ValidationError, match="exactly one of publicKey and certificateChain"):
        VariantSignature.model_validate({"path": "model.sig"})
    ca = "-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n"
    with pytest.raises(ValidationError, match="exactly one of publicKey and certificateChain"):
        VariantSignature.model_validate({"publicKey": key.public_pem, "certificateChain": ca})
    assert VariantSignature.model_validate({"certificateChain": ca}).public_key is None
    for path in ("../model.sig", "/model.sig", "a/./b.sig", "a//b", "sigs/.."):
        with pytest.raises(ValidationError, match="path"):
            VariantSignature.model_validate({"path": path, "publicKey": key.public_pem})
    assert VariantSignature(path="sigs/.m.sig", public_key=key.public_pem).path == "sigs/.m.sig"
    with pytest.raises(ValidationError, match="publicKey"):
        VariantSignature.model_validate({"publicKey": "ssh-ed25519 AAAA"})


# ---- what the cache is asked for, and the gate ----------------------------------------------


def _job(key: SigningKey) -> dict[str, object]:
    signed = {**_variant({"publicKey": key.public_pem, "path": "sigs/m.sig"}), "name": "signed"}
    return {
        "spec": {
            "model": {"name": "tiny", "repositoryUri": "s3://models/tiny"},
            "variants": [signed, _variant(None)],
        },
        "status": {
            "placements": [
                {"node": "rack-1", "variant": "signed", "state": "Loading"},
                {"node": "rack-1", "variant": "int4", "state": "Loaded"},
            ],
            "prefetch": [{"node": "car-1", "variant": "signed"}],
        },
    }


def test_wants_carry_the_variants_signature(key: SigningKey) -> None:
    wants = {w.model: w for w in wanted_on("rack-1", [_job(key)])}
    assert wants["tiny-signed"].signature == Signature("sigs/m.sig", public_key=key.public_pem)
    assert wants["tiny-int4"].signature is None
    (ahead,) = prefetch_on("car-1", [_job(key)])
    assert ahead.signature == wants["tiny-signed"].signature


def test_a_signature_refusal_fails_the_replica_as_a_verification_failure() -> None:
    for reason in ("SignatureMissing", "SignatureInvalid"):
        entry = CacheEntry(CacheState.FAILED, SHA[:16], reason=reason, message="bad")
        decision = gate(CacheReport(1 << 30, 0, {"m": entry}), "m", SHA)
        assert decision.action is GateAction.REFUSE
        assert decision.reason == "VerificationFailed"
        assert decision.message is not None and reason in decision.message


def test_the_digest_command_leaves_out_a_bundle_in_the_directory(
    tmp_path: Path, key: SigningKey, capsys: pytest.CaptureFixture[str]
) -> None:
    from tokenfleet.cli import main

    model = _model(tmp_path / "m")
    clean = tree_digest(model)
    sign_with_key(model, model / "model.sig", key)
    assert main(["modelcache", "digest", str(model), "--exclude", "model.sig"]) == 0
    assert capsys.readouterr().out.strip() == clean


def test_a_manifest_mismatch_is_reported_by_file_name() -> None:
    """The library's message is the repr of a list, with the digests' bytes (escaped quotes and
    all): the reason keeps the file names only."""
    from tokenfleet.delivery.signature import _describe

    diffs = [
        "Hash mismatch for '1/model.py': Expected 'Digest(algorithm='sha256', "
        "digest_value=b'\"x')', Actual 'Digest(y)'",
        "Hash mismatch for '2/a.py': Expected 'D'",
        "Extra files found in model 'm': 1/x.py, 1/y.py",
        "Missing files in model 'm': config.pbtxt",
    ]
    assert _describe(ValueError(f"Signature mismatch: {diffs}")) == (
        "the files differ from the signed manifest: Extra files found in model 'm': 1/x.py, "
        "1/y.py; Missing files in model 'm': config.pbtxt; changed: 1/model.py, 2/a.py"
    )

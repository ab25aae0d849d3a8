"""Real signing material for tests: EC P-256 keys, a signing CA and its certificate, and
``model-signing`` bundles written with the library's own signer (never a hand-made bundle)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["SigningCA", "SigningKey", "sign_with_certificate", "sign_with_key"]


@dataclass(frozen=True)
class SigningKey:
    """An EC P-256 key pair: ``private_path`` (PEM, PKCS#8) on disk, ``public_pem`` text."""

    private_path: Path
    public_pem: str

    @classmethod
    def generate(cls, directory: Path, name: str = "signing") -> SigningKey:
        key = ec.generate_private_key(ec.SECP256R1())
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}.key.pem"
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(path, public.decode())

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.private_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """A CA signs certificates (and CRLs); a publisher's leaf signs only data."""
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass(frozen=True)
class SigningCA:
    """A self-signed CA (``ca_pem``) and one code-signing leaf it issued (``leaf_path``, its key
    ``leaf_key``)."""

    ca_pem: str
    leaf_path: Path
    leaf_key: SigningKey

    @classmethod
    def generate(cls, directory: Path, name: str = "models") -> SigningCA:
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = (
            x509.CertificateBuilder()
            .subject_name(_name(f"{name} signing CA"))
            .issuer_name(_name(f"{name} signing CA"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                _key_usage(ca=True),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        leaf_key = SigningKey.generate(directory, f"{name}-leaf")
        leaf = (
            x509.CertificateBuilder()
            .subject_name(_name(f"{name} model publisher"))
            .issuer_name(ca.subject)
            .public_key(leaf_key.private_key().public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=30))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                _key_usage(ca=False),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False)
            .sign(ca_key, hashes.SHA256())
        )
        leaf_path = directory / f"{name}-leaf.crt.pem"
        leaf_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode()
        return cls(ca_pem, leaf_path, leaf_key)


def sign_with_key(model_dir: Path, bundle: Path, key: SigningKey) -> bytes:
    """``model_signing sign key``: the bundle of ``model_dir`` signed with ``key`` (written to
    ``bundle``, outside the directory); returns its bytes."""
    from model_signing import signing

    signing.Config().use_elliptic_key_signer(private_key=key.private_path).sign(model_dir, bundle)
    return bundle.read_bytes()


def sign_with_certificate(model_dir: Path, bundle: Path, ca: SigningCA) -> bytes:
    """``model_signing sign certificate`` with the CA's leaf; returns the bundle's bytes."""
    from model_signing import signing

    ca_path = ca.leaf_path.with_name("ca.crt.pem")
    ca_path.write_text(ca.ca_pem)
    signing.Config().use_certificate_signer(
        private_key=ca.leaf_key.private_path,
        signing_certificate=ca.leaf_path,
        certificate_chain=[ca_path],
    ).sign(model_dir, bundle)
    return bundle.read_bytes()

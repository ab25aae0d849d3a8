"""Redfish authentication against the simulator over real loopback HTTP(S): HTTP Basic, sessions
(DMTF SessionService, X-Auth-Token, renewed on 401), a rotated password, a private CA."""

from __future__ import annotations

import base64
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from e2e.sim.tank import TankSimulator

from tokenfleet.telemetry.immersion import (
    RedfishClient,
    RedfishCredentials,
    RedfishError,
    SessionTokens,
    credentials_from_secret,
    ssl_context,
)

USER, PASSWORD = "operator", "s3cret"


@pytest.fixture
async def sim() -> AsyncIterator[TankSimulator]:
    async with TankSimulator(["tank-a"]) as simulator:
        simulator.set("tank-a", username=USER, password=PASSWORD)
        yield simulator


def creds(password: str = PASSWORD, *, session: bool = False) -> RedfishCredentials:
    return RedfishCredentials(username=USER, password=password, session=session)


async def test_without_credentials_the_bmc_answers_401(sim: TankSimulator) -> None:
    async with RedfishClient(sim.url, "tank-a") as client:
        with pytest.raises(RedfishError, match="HTTP 401"):
            await client.read()


async def test_basic_auth(sim: TankSimulator) -> None:
    async with RedfishClient(sim.url, "tank-a", credentials=creds()) as client:
        assert (await client.read()).problems == ()
    assert sim.session_logins == 0
    async with RedfishClient(sim.url, "tank-a", credentials=creds("wrong")) as client:
        with pytest.raises(RedfishError, match="HTTP 401"):
            await client.read()


async def test_session_token_is_made_once_and_reused_across_polls(sim: TankSimulator) -> None:
    tokens = SessionTokens()
    for _ in range(3):
        client = RedfishClient(sim.url, "tank-a", credentials=creds(session=True), tokens=tokens)
        async with client:
            assert (await client.read()).problems == ()
    assert sim.session_logins == tokens.logins == 1
    assert sim.unauthorized == 0


async def test_an_expired_session_is_renewed_once(sim: TankSimulator) -> None:
    tokens = SessionTokens()
    async with RedfishClient(
        sim.url, "tank-a", credentials=creds(session=True), tokens=tokens
    ) as client:
        await client.read()
        sim.sessions.clear()  # the BMC dropped every session (timeout, reboot)
        assert (await client.read()).problems == ()
    assert sim.session_logins == 2


async def test_bad_session_login_names_the_user(sim: TankSimulator) -> None:
    async with RedfishClient(sim.url, "tank-a", credentials=creds("nope", session=True)) as c:
        with pytest.raises(RedfishError, match=r"session login as 'operator'\): HTTP 401"):
            await c.read()


async def test_rotated_password_logs_in_again(sim: TankSimulator) -> None:
    tokens = SessionTokens()
    async with RedfishClient(
        sim.url, "tank-a", credentials=creds(session=True), tokens=tokens
    ) as client:
        await client.read()
    sim.set("tank-a", password="n3w")  # rotation on the BMC ends the old sessions
    async with RedfishClient(
        sim.url, "tank-a", credentials=creds(session=True), tokens=tokens
    ) as client:
        with pytest.raises(RedfishError):
            await client.read()
    async with RedfishClient(
        sim.url, "tank-a", credentials=creds("n3w", session=True), tokens=tokens
    ) as client:
        assert (await client.read()).problems == ()


def _pki(tmp: Path) -> tuple[str, ssl.SSLContext]:
    """A private CA and a server certificate for 127.0.0.1 (openssl, as the fleet's PKI)."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=bmc-ca")  # fmt: skip
    (tmp / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "bmc.key", "-out", "bmc.csr", "-subj", "/CN=bmc")  # fmt: skip
    run("x509", "-req", "-in", "bmc.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "bmc.crt", "-days", "1", "-extfile", "ext")  # fmt: skip
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp / "bmc.crt", tmp / "bmc.key")
    return (tmp / "ca.crt").read_text(), server


async def test_https_bmc_trusted_through_its_ca_bundle(tmp_path: Path) -> None:
    ca_pem, server = _pki(tmp_path)
    async with TankSimulator(["tank-a"], ssl_context=server) as sim:
        sim.set("tank-a", username=USER, password=PASSWORD)
        assert sim.url.startswith("https://127.0.0.1:")
        async with RedfishClient(sim.url, "tank-a", credentials=creds()) as client:
            with pytest.raises(RedfishError, match=r"(?i)certificate"):
                await client.read()  # the system store does not know the BMC's CA
        tls = ssl_context(ca_pem)
        for session in (False, True):
            async with RedfishClient(
                sim.url, "tank-a", credentials=creds(session=session), tls=tls
            ) as client:
                assert (await client.read()).problems == ()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_credentials_from_secret() -> None:
    secret = {"data": {"username": _b64("u"), "password": _b64("p"), "ca.crt": _b64("PEM")}}
    got = credentials_from_secret(secret, session=True, where="ns/s")
    assert (got.username, got.password, got.session, got.ca_pem) == ("u", "p", True, "PEM")
    assert "p" not in repr(got).replace("operator", "")  # the password never shows
    only_ca = credentials_from_secret({"data": {"ca.crt": _b64("PEM")}}, session=False, where="x")
    assert only_ca.username is None and only_ca.ca_pem == "PEM"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"username": _b64("u")}, "Secret ns/s: key 'password' is missing"),
        ({"password": _b64("p")}, "Secret ns/s: key 'username' is missing"),
        ({}, "no 'username'/'password' and no 'ca.crt'"),
        ({"username": "!!!", "password": _b64("p")}, "key 'username' is not base64"),
        ({"username": _b64(" "), "password": _b64("p")}, "key 'username' is empty"),
    ],
)
def test_bad_secrets_name_the_key(data: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        credentials_from_secret({"data": data}, session=False, where="ns/s")


def test_bad_ca_bundle() -> None:
    with pytest.raises(ValueError, match=r"ca\.crt is not a PEM CA bundle"):
        ssl_context("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")

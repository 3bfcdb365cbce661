"""TLS (a self-signed certificate made with the openssl CLI) and bearer-token authentication."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import grpc
import numpy as np
import pytest

from estimator.method import Method
from service.client import ExplainerClient, MollifyError
from service.server import MollifyServer
from service.settings import Settings

X = np.full((1, 4), 0.25, np.float32)
TOKEN = "test-token-5c1e"


@pytest.fixture(scope="module")
def base_settings(tmp_path_factory: pytest.TempPathFactory, helpers: SimpleNamespace) -> Settings:
    root = tmp_path_factory.mktemp("secure-repository")
    helpers.write_model(root, "linear")
    return Settings(
        address="127.0.0.1:0",
        model_repository=root,
        cache_dir=tmp_path_factory.mktemp("secure-cache"),
        max_concurrent_requests=1,
        max_queued_requests=1,
    )


def _serve(settings: Settings, helpers: SimpleNamespace) -> MollifyServer:
    server: MollifyServer = helpers.start_server(settings, session_factory=helpers.slow_factory(0.0))
    return server


@pytest.fixture(scope="module")
def token_server(base_settings: Settings, helpers: SimpleNamespace) -> Iterator[MollifyServer]:
    server = _serve(dataclasses.replace(base_settings, token=TOKEN), helpers)
    yield server
    server.stop(0).wait()


@pytest.mark.parametrize("token", [None, "wrong-token", TOKEN + "x", ""])
def test_calls_without_the_right_token_are_unauthenticated(
    token_server: MollifyServer, token: str | None
) -> None:
    with ExplainerClient(f"127.0.0.1:{token_server.port}", token=token, timeout=10) as client:
        for call in (
            lambda: client.list_models(),
            lambda: client.explain("linear", X, method=Method(samples=2)),
            lambda: list(client.explain_stream("linear", X, method=Method(samples=2))),
        ):
            with pytest.raises(MollifyError) as caught:
                call()
            assert caught.value.code == "UNAUTHENTICATED"
            assert "Bearer" in caught.value.message


def test_the_right_token_is_accepted_and_health_is_exempt(token_server: MollifyServer) -> None:
    with ExplainerClient(f"127.0.0.1:{token_server.port}", token=TOKEN, timeout=10) as client:
        assert [m.name for m in client.list_models()] == ["linear"]
        assert client.explain("linear", X, method=Method(samples=2), seed=0)[0].samples == 2
    with ExplainerClient(f"127.0.0.1:{token_server.port}", timeout=10) as anonymous:
        assert anonymous.health() == "SERVING"
        assert anonymous.health("linear") == "SERVING"
        with pytest.raises(MollifyError):
            anonymous.list_models()  # refused, and counted as such
    metrics = token_server.metrics.exposition().decode()
    assert 'mollify_requests_total{code="UNAUTHENTICATED",method="ListModels"}' in metrics


def test_health_can_require_the_token(base_settings: Settings, helpers: SimpleNamespace) -> None:
    server = _serve(dataclasses.replace(base_settings, token=TOKEN, auth_health=True), helpers)
    try:
        with ExplainerClient(f"127.0.0.1:{server.port}", timeout=10) as anonymous:
            with pytest.raises(MollifyError) as caught:
                anonymous.health()
            assert caught.value.code == "UNAUTHENTICATED"
        with ExplainerClient(f"127.0.0.1:{server.port}", token=TOKEN, timeout=10) as client:
            assert client.health() == "SERVING"
    finally:
        server.stop(0).wait()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl CLI to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_tls_with_token(
    base_settings: Settings, helpers: SimpleNamespace, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    server = _serve(dataclasses.replace(base_settings, tls_cert=cert, tls_key=key, token=TOKEN), helpers)
    address = f"127.0.0.1:{server.port}"
    try:
        with ExplainerClient(address, token=TOKEN, root_certificates=cert, timeout=10) as client:
            assert client.explain("linear", X, method=Method(samples=3), seed=1)[0].samples == 3
        with ExplainerClient(address, root_certificates=cert.read_bytes(), timeout=10) as no_token:
            with pytest.raises(MollifyError) as caught:
                no_token.list_models()
            assert caught.value.code == "UNAUTHENTICATED"
        with ExplainerClient(address, token=TOKEN, timeout=3) as plaintext:
            with pytest.raises(MollifyError) as caught:
                plaintext.list_models()
            assert caught.value.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials())  # system roots: untrusted
        with pytest.raises(grpc.FutureTimeoutError):
            grpc.channel_ready_future(channel).result(timeout=2)
        channel.close()
    finally:
        server.stop(0).wait()

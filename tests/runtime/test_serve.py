"""`python -m agents.runtime.serve`: the runtime as a standalone process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from agents.runtime.clients import HttpRuntimeClient, TransientRuntimeError
from agents.runtime.contract import InvocationResult
from agents.runtime.serve import ConfigError, build_app
from tests.runtime import helpers


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(**values) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNTIME_", "MODEL_PROVIDER", "DJANGO"))}
    env.update(values)
    return env


def test_it_serves_invocations_as_its_own_process(jwks, token):
    port = _free_port()
    env = _env(RUNTIME_JWKS_URL=jwks.jwks_url, RUNTIME_ISSUER=helpers.ISSUER, LOG_LEVEL="warning")
    process = subprocess.Popen(
        [sys.executable, "-m", "agents.runtime.serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        client = HttpRuntimeClient(f"http://127.0.0.1:{port}", connect_timeout=1, timeout=helpers.WAIT)
        deadline = time.monotonic() + 15
        while True:
            try:
                assert client.ping()["status"] == "Healthy"
                break
            except TransientRuntimeError:
                assert process.poll() is None, process.stderr.read().decode()
                assert time.monotonic() < deadline, "the runtime did not start"
                time.sleep(0.1)
        result = InvocationResult.from_events(client.invoke(helpers.request(), helpers.context(token)))
        assert result.output.startswith("[Offline model]")
        assert result.citations[0]["passage_id"] == "kb-1"
    finally:
        process.terminate()
        try:
            process.wait(helpers.WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(helpers.WAIT)
        process.stderr.close()


def test_it_refuses_to_start_without_its_configuration():
    done = subprocess.run(
        [sys.executable, "-m", "agents.runtime.serve", "--port", str(_free_port())],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "RUNTIME_JWKS_URL is required" in done.stderr


BASE = {"RUNTIME_JWKS_URL": "http://x/jwks", "RUNTIME_ISSUER": "i"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RUNTIME_JWKS_URL": "http://x/jwks"}, "RUNTIME_ISSUER"),
        ({**BASE, "RUNTIME_JWKS_URL": "ftp://x/jwks"}, "JWKS URL must be http"),
        ({**BASE, "MODEL_PROVIDER": "gpt"}, "MODEL_PROVIDER"),
        ({**BASE, "RUNTIME_LEEWAY_SECONDS": "lots"}, "RUNTIME_LEEWAY_SECONDS"),
    ],
)
def test_it_names_the_bad_setting(env, message):
    with pytest.raises(ConfigError, match=message):
        build_app(env)

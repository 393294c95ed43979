"""Test helpers for the runtime: keys and tokens, loopback servers, requests.

Everything network-shaped here binds 127.0.0.1 on an ephemeral port, has a
timeout, and is stopped by a context manager, so a failing test cannot leave a
server behind or hang the run.
"""

from __future__ import annotations

import binascii
import contextlib
import io
import json
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from agents.runtime.contract import AgentSpec, InvocationContext, InvocationRequest, ModelSpec, Passage, TenantContext

ISSUER = "http://portal.test"
AUDIENCE = "agent-runtime"
TENANT_ID = "1"
OTHER_TENANT_ID = "2"
AGENT_SUBJECT = "agent:helpdesk-client"
SESSION_ID = "conv-0123456789abcdef0123456789abcdef-0001"  # 41 characters
WAIT = 5.0  # the longest any helper waits for a server


# --- keys and tokens ----------------------------------------------------------------------------


@dataclass
class SigningKey:
    kid: str
    private: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    @property
    def jwk(self) -> dict:
        jwk = json.loads(ECAlgorithm.to_jwk(self.private.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "alg": "ES256"})
        return jwk


def claims(**overrides) -> dict:
    """Claims shaped like the portal's act-on-behalf tokens (tenants/identity/tokens.py)."""
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "sub": "user:17",
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        "client_id": "helpdesk-client",
        "tenant_id": TENANT_ID,
        "tier": "standard",
        "scope": "agents:invoke kb:read",
        "entitlements": ["agents", "knowledge"],
        "region": "eu-west-1",
        "roles": ["member"],
        "agent_id": "helpdesk-client",
        "act": {"sub": AGENT_SUBJECT},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def mint(key: SigningKey, *, headers: dict | None = None, **overrides) -> str:
    return jwt.encode(
        claims(**overrides),
        key.private,
        algorithm="ES256",
        headers={"kid": key.kid, "typ": "at+jwt", **(headers or {})},
    )


def tenant(tenant_id: str = TENANT_ID, **overrides) -> TenantContext:
    values = {
        "tenant_id": tenant_id,
        "tier": "standard",
        "region": "eu-west-1",
        "deployment_model": "bridge",
        "entitlements": ("agents", "knowledge"),
        "feature_flags": ("streaming", "citations"),
    }
    values.update(overrides)
    return TenantContext(**values)


def context(token: str, tenant_id: str = TENANT_ID, **tenant_overrides) -> InvocationContext:
    return InvocationContext(
        tenant=tenant(tenant_id, **tenant_overrides), access_token=token, session_id=SESSION_ID, user_id="user-17"
    )


PASSAGES = (
    Passage(
        id="kb-1",
        title="Resetting a password",
        text="To reset your password, open Settings and choose Security. "
        "A reset link is sent to your email address and stays valid for one hour.",
        source="kb://handbook/passwords",
    ),
    Passage(
        id="kb-2",
        title="Invoices",
        text="Invoices are issued on the first day of each month. Download them from the Billing page.",
        source="kb://handbook/billing",
    ),
)


def request(**overrides) -> InvocationRequest:
    values = {
        "invocation_id": "6f1c3a52-0000-4000-8000-000000000001",
        "prompt": "How do I reset my password?",
        "agent": AgentSpec(id="42", name="Helpdesk", instructions="Answer questions about the product."),
        "model": ModelSpec(provider="offline", model_id="offline-extractive-1", max_tokens=512, temperature=0.0),
        "passages": PASSAGES,
        "stream": True,
    }
    values.update(overrides)
    return InvocationRequest(**values)


# --- loopback HTTP servers ------------------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


# A handler answers (status, headers, body chunks); chunks are written and flushed one by one.
Handler = Callable[[Recorded], tuple[int, dict, Iterable[bytes]]]


class LoopbackServer:
    """A threaded HTTP/1.0 server on 127.0.0.1 that records requests and answers with `handler`."""

    def __init__(self, handler: Handler):
        self.handler = handler
        self.requests: list[Recorded] = []
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                recorded = Recorded(self.command, self.path, dict(self.headers), self.rfile.read(length))
                outer.requests.append(recorded)
                status, headers, chunks = outer.handler(recorded)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    for chunk in chunks:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client hung up mid-answer (what some tests do on purpose)
                finally:
                    if hasattr(chunks, "close"):
                        chunks.close()  # a generator learns at once that its answer ended

            do_GET = do_POST = _handle

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(WAIT)


def json_response(document, status: int = 200, headers: dict | None = None) -> tuple[int, dict, list[bytes]]:
    body = json.dumps(document).encode()
    return status, {"Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}, [body]


class JwksServer(LoopbackServer):
    """Serves `keys` as a JWKS at /.well-known/jwks.json; `keys` may change during a test."""

    def __init__(self, keys: list[SigningKey]):
        self.keys = list(keys)
        super().__init__(lambda _: json_response({"keys": [k.jwk for k in self.keys]}))

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/.well-known/jwks.json"

    @property
    def fetches(self) -> int:
        return len(self.requests)


@contextlib.contextmanager
def serve_asgi(app) -> Iterator[str]:
    """Run an ASGI app with uvicorn in a thread on 127.0.0.1; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, log_level="warning", timeout_graceful_shutdown=1, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(WAIT)
        sock.close()


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


# --- AWS fakes -------------------------------------------------------------------------------------


def _event_stream_header(name: str, value: str) -> bytes:
    n, v = name.encode(), value.encode()
    return struct.pack("!B", len(n)) + n + struct.pack("!BH", 7, len(v)) + v  # 7: string


def event_stream_message(event_type: str, payload: dict, *, exception: bool = False) -> bytes:
    """One message of AWS's binary event-stream encoding (prelude, headers, payload, CRCs),
    so botocore's real event-stream parser can be tested without AWS."""
    kind = "exception" if exception else "event"
    headers = (
        _event_stream_header(":message-type", kind)
        + _event_stream_header(f":{kind}-type", event_type)
        + _event_stream_header(":content-type", "application/json")
    )
    body = json.dumps(payload).encode()
    prelude = struct.pack("!II", 12 + len(headers) + len(body) + 4, len(headers))
    message = prelude + struct.pack("!I", binascii.crc32(prelude)) + headers + body
    return message + struct.pack("!I", binascii.crc32(message))


def fake_aws_response(url: str, body: bytes, content_type: str, status: int = 200):
    """What botocore's HTTP layer would return, for a `before-send` handler to short-circuit the network."""
    import urllib3
    from botocore.awsrequest import AWSResponse

    headers = {"Content-Type": content_type}
    raw = urllib3.response.HTTPResponse(body=io.BytesIO(body), headers=headers, status=status, preload_content=False)
    return AWSResponse(url, status, headers, raw)


def boto3_client(service: str, **kwargs):
    """A boto3 client with dummy credentials: it can sign, it never finds real ones."""
    import boto3

    return boto3.client(
        service,
        region_name="eu-west-1",
        aws_access_key_id="AKIDTESTTESTTESTTEST",
        aws_secret_access_key="test-secret",
        **kwargs,
    )

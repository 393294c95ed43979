"""A guard for "nothing here reaches AWS": every botocore client creation is recorded and refused.

boto3.client(), boto3.Session().client() and botocore's own sessions all build their
clients through botocore.session.Session.create_client, so patching it catches a client
before it could look for credentials or send a request.
"""

from __future__ import annotations

import botocore.session


class AwsReached(AssertionError):
    pass


def refuse_aws_clients(monkeypatch) -> list[str]:
    """Make creating any boto3/botocore client raise; answers the list of services asked for."""
    asked: list[str] = []

    def create_client(self, service_name, *args, **kwargs):
        asked.append(service_name)
        raise AwsReached(f"a {service_name} client was created on embedded defaults")

    monkeypatch.setattr(botocore.session.Session, "create_client", create_client)
    return asked

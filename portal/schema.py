"""The OpenAPI schema says what the API really answers: errors and authentication included.

drf-spectacular documents each operation's success response only. Every operation can
also answer with a problem-details error (portal.api.problem_exception_handler), and a
client generated from the schema must know its shape and which codes to expect; the
contract test (tests/portal/test_api_contract.py) holds the API to what is written here.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from drf_spectacular.utils import OpenApiResponse, extend_schema_serializer
from rest_framework import serializers

from portal.api import PROBLEM_CONTENT_TYPE


@extend_schema_serializer(component_name="Problem")
class ProblemSerializer(serializers.Serializer):
    """An error, as RFC 9457 problem details."""

    type = serializers.URLField(help_text="Identifies the kind of problem (https://portal.local/problems/<status>).")
    title = serializers.CharField(help_text="A short summary of the kind of problem.")
    status = serializers.IntegerField(help_text="The HTTP status code.")
    detail = serializers.CharField(allow_blank=True, help_text="What went wrong this time, for a person to read.")
    errors = serializers.DictField(
        required=False, help_text="Invalid input only: the messages for each field ('non_field_errors': the rest)."
    )
    reason = serializers.CharField(
        required=False, help_text="A stable code for some refusals: tenant_suspended, mfa_required, turn_too_large…"
    )
    support_email = serializers.EmailField(
        required=False, help_text="tenant_suspended only, when the provider set one: where to ask for reactivation."
    )


# What any operation may answer besides its own responses, and when.
_COMMON_PROBLEMS = {
    "400": "Invalid input: the body, a query parameter or a header (field errors under `errors`).",
    "401": "No valid access token (or session): missing, malformed, expired or revoked.",
    "403": (
        "Authenticated, but the token's scopes, the member's role or the tenant's tier do not allow this; "
        "or an API client asks for what needs a person (chat, any change)."
    ),
    "404": "Nothing here that the caller may see: another tenant's object is indistinguishable from none.",
}


class ProblemAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, adding the problem responses every operation can give."""

    def _resolve_path_parameters(self, variables):
        # drf-spectacular types a path's {id} from the view's queryset. A tenant-owned
        # queryset exists only with a tenant set (fail closed), and no tenant is set while
        # the schema is generated; the serializer's model is the same model. This empty
        # queryset lives only on the generator's own instance of the view.
        if getattr(self.view, "queryset", None) is None:
            meta = getattr(getattr(self.view, "serializer_class", None), "Meta", None)
            model = getattr(meta, "model", None)
            if model is not None:
                self.view.queryset = model._base_manager.none()
        return super()._resolve_path_parameters(variables)

    def _get_request_for_media_type(self, serializer, direction="request"):
        # drf-spectacular documents a PATCH body as its serializer made partial (every field
        # optional), as DRF's own partial_update validates it. Ours validate their small
        # request serializer whole (a rename needs the name, a role change the role) and
        # answer 400 without it: document the body as it is validated.
        method = self.method
        if method == "PATCH":
            self.method = "POST"
        try:
            return super()._get_request_for_media_type(serializer, direction)
        finally:
            self.method = method

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        problem = OpenApiResponse(ProblemSerializer)
        for code, description in _COMMON_PROBLEMS.items():
            if code not in responses:
                responses[code] = self._get_response_for_code(
                    problem, code, media_types=[PROBLEM_CONTENT_TYPE], direction=direction
                )
                responses[code]["description"] = description
        for code, response in responses.items():
            # Refusals documented by a view with a description only (402, 413, 429) carry
            # a problem body too.
            if code.startswith(("4", "5")) and not response.get("content"):
                response.update(
                    self._get_response_for_code(problem, code, media_types=[PROBLEM_CONTENT_TYPE], direction=direction)
                    | {"description": response.get("description", "")}
                )
        return responses


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """Our ES256 access tokens from /oauth/token (tenants.identity.authentication)."""

    target_class = "tenants.identity.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        scheme = build_bearer_security_scheme_object(
            header_name="AUTHORIZATION", token_prefix="Bearer", bearer_format="JWT"
        )
        scheme["description"] = (
            "An access token from POST /oauth/token (client_credentials for API clients; RFC 8693 "
            "token exchange for agents). It speaks for one tenant."
        )
        return scheme

    def get_security_requirement(self, auto_schema):
        # An operator route authenticates a tenant's token only to answer it 404: not a way in.
        if hasattr(auto_schema.view, "operator_scopes"):
            return None
        return super().get_security_requirement(auto_schema)


class OperatorTokenScheme(OpenApiAuthenticationExtension):
    """A staff member's operator API token (tenants.identity.operator_tokens), on the
    operator routes only (portal.operator.api)."""

    target_class = "tenants.identity.authentication.OperatorTokenAuthentication"
    name = "operatorToken"

    def get_security_definition(self, auto_schema):
        scheme = build_bearer_security_scheme_object(
            header_name="AUTHORIZATION", token_prefix="Bearer", bearer_format="tpo_<id>_<secret>"
        )
        scheme["description"] = (
            "A staff member's operator API token (tpo_…), created in the operator console under API tokens; "
            "/api/v1/operator/ only. It acts as its owner while they are active staff, and carries scopes: "
            "operator:billing:read (billing and invoices), operator:catalogue:read (GET on the registry and "
            "shared skills), operator:catalogue:write (their POST and PATCH); a missing scope is a 403. "
            "No CSRF token is needed."
        )
        return scheme


def counted_list(component_name: str, item_serializer: type[serializers.Serializer]) -> type[serializers.Serializer]:
    """The schema of `{"count": n, "results": [...]}`, the unpaginated list some views answer
    with. Marked as one object: drf-spectacular would otherwise document a `list` action's
    answer as a page of these."""
    body = type(
        component_name,
        (serializers.Serializer,),
        {"count": serializers.IntegerField(), "results": item_serializer(many=True)},
    )
    return extend_schema_serializer(many=False, component_name=component_name)(body)


def one_object(serializer_class: type[serializers.Serializer]) -> type[serializers.Serializer]:
    """For a `list` action that answers with one object (not a page of them)."""
    return extend_schema_serializer(many=False)(serializer_class)

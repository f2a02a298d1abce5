"""API errors as the API server renders them: a ``Status`` body with code, reason, message and details.

Message shapes follow k8s.io/apimachinery/pkg/api/errors (NewNotFound, NewAlreadyExists, NewInvalid,
NewForbidden, NewConflict, NewGone, NewTooManyRequests, NewBadRequest, NewMethodNotSupported) and
https://kubernetes.io/docs/reference/using-api/api-concepts/#response-status-kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Cause:
    """One field error of a 422 Invalid (``details.causes``)."""

    field: str
    reason: str  # FieldValueInvalid, FieldValueRequired, FieldValueForbidden, FieldValueNotSupported, ...
    message: str


class ApiError(Exception):
    """A failed request: raised anywhere below the HTTP layer, rendered as a Status body."""

    def __init__(self, code: int, reason: str, message: str, *, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None, plain: bool = False) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details = details
        self.headers = dict(headers or {})
        self.plain = plain  # answered as its message in text/plain (Go's http.Error), not as a Status

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": self.message, "reason": self.reason, "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        return body


@dataclass(frozen=True)
class Kind:
    """What an error names: ``jobs.batch "x"`` (qualified resource) and ``Job.batch`` (qualified kind)."""

    resource: str
    group: str
    kind: str

    @property
    def qualified_resource(self) -> str:
        return f"{self.resource}.{self.group}" if self.group else self.resource

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind


def _details(kind: Kind, name: str | None, **extra: Any) -> dict[str, Any]:
    details: dict[str, Any] = {"group": kind.group, "kind": kind.resource}
    if name:
        details["name"] = name
    details.update(extra)
    return {k: v for k, v in details.items() if v not in ("", None)}


def not_found(kind: Kind, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{kind.qualified_resource} "{name}" not found', details=_details(kind, name))


def already_exists(kind: Kind, name: str, being_deleted: bool = False) -> ApiError:
    """409 AlreadyExists; of an object being deleted (a deletionTimestamp: finalizers, a foreground deletion, a pod's
    grace period) its message begins ``object is being deleted: `` as the generic registry's Store.Create writes it
    (apiserver/pkg/registry/generic/registry/store.go)."""
    message = f'{kind.qualified_resource} "{name}" already exists'
    return ApiError(409, "AlreadyExists", f"object is being deleted: {message}" if being_deleted else message,
                    details=_details(kind, name))


def conflict(kind: Kind, name: str, why: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {kind.qualified_resource} "{name}": {why}',
                    details=_details(kind, name))


def stale(kind: Kind, name: str) -> ApiError:
    return conflict(kind, name, "the object has been modified; please apply your changes to the latest version "
                                "and try again")


def invalid(kind: Kind, name: str, causes: list[Cause]) -> ApiError:
    """422: ``Job.batch "x" is invalid: metadata.name: Invalid value: ...`` (causes joined with ", ")."""
    parts = [f"{c.field}: {c.message}" for c in causes]
    text = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    details = {"name": name, "group": kind.group, "kind": kind.kind,
               "causes": [{k: v for k, v in (("reason", c.reason), ("message", c.message), ("field", c.field)) if v}
                          for c in causes]}  # an empty field left out (omitempty)
    return ApiError(422, "Invalid", f'{kind.qualified_kind} "{name}" is invalid: {text}',
                    details={k: v for k, v in details.items() if v not in ("", None)})


def forbidden(kind: Kind, name: str | None, why: str) -> ApiError:
    """403 in NewForbidden's shape: ``pods "x" is forbidden: <why>`` (no name: ``pods is forbidden: ...``)."""
    what = f'{kind.qualified_resource} "{name}"' if name else kind.qualified_resource
    return ApiError(403, "Forbidden", f"{what} is forbidden: {why}", details=_details(kind, name))


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def too_large(limit: int) -> ApiError:
    """A request body over the API server's ``MaxRequestBodyBytes`` (3 MiB by default), read by its handlers
    (create, update, patch, delete) after authentication and authorization: 413 RequestEntityTooLarge
    (apiserver/pkg/endpoints/handlers/rest.go limitedReadBody; apimachinery NewRequestEntityTooLargeError)."""
    return ApiError(413, "RequestEntityTooLarge", f"Request entity too large: limit is {limit}")


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def too_many_requests(retry_after: int = 1) -> ApiError:
    """API Priority and Fairness (and max-in-flight) refusing a request before any handler sees it: 429, a
    ``Retry-After`` header and the text "Too many requests, please try again later." in text/plain, not a Status
    (k8s.io/apiserver/pkg/server/filters/maxinflight.go, tooManyRequests: http.Error)."""
    return ApiError(429, "TooManyRequests", "Too many requests, please try again later.",
                    headers={"Retry-After": str(retry_after)}, plain=True)


def method_not_supported(kind: Kind, action: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", f"{action} is not supported on resources of kind "
                                             f'"{kind.qualified_resource}"', details=_details(kind, None))


def internal(message: str) -> ApiError:
    return ApiError(500, "InternalError", f"Internal error occurred: {message}",
                    details={"causes": [{"message": message}]})


@dataclass
class Warnings:
    """``Warning: 299 - "..."`` response headers collected while serving one request."""

    items: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        if text not in self.items:
            self.items.append(text)

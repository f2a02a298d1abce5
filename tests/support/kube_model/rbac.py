"""Authentication by bearer token and RBAC authorization against the stored Roles, ClusterRoles and bindings.

https://kubernetes.io/docs/reference/access-authn-authz/authentication/ (service account users are
``system:serviceaccount:<ns>:<name>`` in groups ``system:serviceaccounts``, ``system:serviceaccounts:<ns>`` and
``system:authenticated``; a request without credentials is ``system:anonymous``) and
https://kubernetes.io/docs/reference/access-authn-authz/rbac/ (rules: apiGroups, resources incl.
``<resource>/<subresource>``, verbs, resourceNames; RoleBindings may refer to ClusterRoles; default
discovery roles). The 403 message is the API server's (apiserver/pkg/endpoints/handlers/responsewriters).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from kube_model.errors import ApiError, Kind, forbidden, unauthorized
from kube_model.store import Store

MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
PUBLIC_PATHS = ("/version", "/healthz", "/livez", "/readyz")  # system:public-info-viewer (anonymous too)
DISCOVERY_PREFIXES = ("/api", "/apis", "/openapi")  # system:discovery (authenticated)
EVERYONE_CREATES = frozenset({"selfsubjectaccessreviews.authorization.k8s.io"})  # system:basic-user


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    service_account: tuple[str, str] | None = None  # (namespace, name)

    @property
    def is_admin(self) -> bool:
        return MASTERS in self.groups


ANONYMOUS = User("system:anonymous", ("system:unauthenticated",))
ADMIN = User("kube-model-admin", (MASTERS, AUTHENTICATED))


def service_account_user(namespace: str, name: str, uid: str = "") -> User:
    return User(f"system:serviceaccount:{namespace}:{name}",
                ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED), uid,
                (namespace, name))


def system_user(name: str) -> User:
    """A control-plane component (job-controller, scheduler, kubelet): never authorized by RBAC here."""
    return User(name, (MASTERS, AUTHENTICATED))


@dataclass(frozen=True)
class Attributes:
    """What a request asks to do (authorizer.Attributes)."""

    user: User
    verb: str
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""  # for non-resource requests

    @property
    def is_resource(self) -> bool:
        return bool(self.resource)

    def message(self) -> str:
        if not self.is_resource:
            return f'User "{self.user.name}" cannot {self.verb} path "{self.path}"'
        resource = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        where = f'in the namespace "{self.namespace}"' if self.namespace else "at the cluster scope"
        return (f'User "{self.user.name}" cannot {self.verb} resource "{resource}" in API group "{self.group}" '
                f"{where}")

    def denied(self) -> ApiError:
        if not self.is_resource:
            return ApiError(403, "Forbidden", f"forbidden: {self.message()}", details={})
        return forbidden(Kind(self.resource, self.group, self.resource), self.name or None, self.message())


@dataclass
class Tokens:
    """Bearer tokens: fixed identities (admin, users) and service account tokens, which stop working when their
    ServiceAccount is deleted (its uid is checked on every request)."""

    store: Store
    fixed: dict[str, User] = field(default_factory=dict)
    accounts: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # token -> (ns, name, uid)

    def issue(self, user: User) -> str:
        token = "kmodel-" + secrets.token_urlsafe(24)
        self.fixed[token] = user
        return token

    def issue_for_account(self, namespace: str, name: str) -> str:
        sa = self.store.get("serviceaccounts", namespace, name)
        if sa is None:
            raise LookupError(f'serviceaccount "{name}" not found in namespace "{namespace}"')
        token = "kmodel-sa-" + secrets.token_urlsafe(24)
        self.accounts[token] = (namespace, name, sa["metadata"]["uid"])
        return token

    def authenticate(self, header: str | None, anonymous: bool = True) -> User:
        if not header:
            if anonymous:
                return ANONYMOUS
            raise unauthorized()
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise unauthorized()
        token = token.strip()
        if token in self.fixed:
            return self.fixed[token]
        if token in self.accounts:
            ns, name, uid = self.accounts[token]
            sa = self.store.get("serviceaccounts", ns, name)
            if sa is None or sa["metadata"]["uid"] != uid:
                raise unauthorized()
            return service_account_user(ns, name, uid)
        raise unauthorized()


def _subject_matches(subject: dict[str, Any], user: User, binding_ns: str) -> bool:
    kind = subject.get("kind")
    if kind == "User":
        return subject.get("name") == user.name
    if kind == "Group":
        return subject.get("name") in user.groups
    if kind == "ServiceAccount" and user.service_account is not None:
        return (subject.get("namespace") or binding_ns, subject.get("name")) == user.service_account
    return False


def _rule_allows(rule: dict[str, Any], a: Attributes) -> bool:
    verbs = rule.get("verbs") or []
    if "*" not in verbs and a.verb not in verbs:
        return False
    if not a.is_resource:
        urls = rule.get("nonResourceURLs") or []
        return any(u == "*" or u == a.path or (u.endswith("*") and a.path.startswith(u[:-1])) for u in urls)
    groups = rule.get("apiGroups") or []
    if "*" not in groups and a.group not in groups:
        return False
    resources = rule.get("resources") or []
    if a.subresource:  # "*", the exact "resource/subresource" or "*/subresource"; "pods/*" names no subresource
        # (rbac/v1 helpers.go ResourceMatches; the PolicyRule API doc's resources)
        ok = "*" in resources or f"{a.resource}/{a.subresource}" in resources or f"*/{a.subresource}" in resources
    else:
        ok = "*" in resources or a.resource in resources
    if not ok:
        return False
    names = rule.get("resourceNames") or []
    return not names or (bool(a.name) and a.name in names)


@dataclass
class Authorizer:
    store: Store

    def rules_for(self, user: User, namespace: str) -> list[dict[str, Any]]:
        """Every rule that applies to ``user`` in ``namespace`` (cluster-wide ones included)."""
        rules: list[dict[str, Any]] = []
        for crb in self.store.items("clusterrolebindings.rbac.authorization.k8s.io"):
            if any(_subject_matches(s, user, "") for s in crb.get("subjects") or []):
                rules += self._role_rules(crb.get("roleRef") or {}, "")
        if namespace:
            for rb in self.store.items("rolebindings.rbac.authorization.k8s.io", namespace):
                if any(_subject_matches(s, user, namespace) for s in rb.get("subjects") or []):
                    rules += self._role_rules(rb.get("roleRef") or {}, namespace)
        return rules

    def _role_rules(self, ref: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
        if ref.get("kind") == "ClusterRole":
            role = self.store.get("clusterroles.rbac.authorization.k8s.io", "", ref.get("name", ""))
        else:
            role = self.store.get("roles.rbac.authorization.k8s.io", namespace, ref.get("name", ""))
        return list((role or {}).get("rules") or [])

    def allowed(self, a: Attributes) -> bool:
        if a.user.is_admin:
            return True
        if not a.is_resource and a.verb == "get":
            if a.path in PUBLIC_PATHS:
                return True
            if AUTHENTICATED in a.user.groups and any(a.path == p or a.path.startswith(p + "/")
                                                      for p in DISCOVERY_PREFIXES):
                return True
        if a.is_resource and AUTHENTICATED in a.user.groups and a.verb == "create" and (
                f"{a.resource}.{a.group}" in EVERYONE_CREATES):
            return True
        return any(_rule_allows(rule, a) for rule in self.rules_for(a.user, a.namespace))

    def check(self, a: Attributes) -> None:
        if not self.allowed(a):
            raise a.denied()

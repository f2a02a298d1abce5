"""The API server's answer negotiation (``Accept``), as apimachinery's ``negotiation.NegotiateOutputMediaType`` and the
apiserver's ``transformObject`` do it, for answers as objects or as their metadata only
(https://kubernetes.io/docs/reference/using-api/api-concepts/#receiving-resources-as-tables: "metadata only").

The clauses of ``Accept`` are taken by quality (goautoneg), each against the media types served for built-in
resources (:data:`SERVED`): the first one served, whose ``as``/``g``/``v`` parameters name a form the endpoint gives,
is the answer's. No ``Accept``: JSON. None served: 406 NotAcceptable naming the media types served.
``as=PartialObjectMetadataList;g=meta.k8s.io;v=v1`` (or ``v1beta1``) turns a list into a PartialObjectMetadataList
(each item's ``metadata`` only, kind PartialObjectMetadata; the list's resourceVersion, continue and
remainingItemCount kept); ``as=PartialObjectMetadata`` an object (and each object of a watch) into its metadata;
each asked of the other (a list as one object) is 406. Not modelled: ``as=Table`` (no table convertor here: answered
406, where a real server makes a Table), and the encodings themselves: YAML and protobuf, when chosen, are answered in
JSON as every answer of the model is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kube_model.errors import ApiError

SERVED = ("application/json", "application/yaml", "application/vnd.kubernetes.protobuf")
META_GROUP = "meta.k8s.io"
META_VERSIONS = ("v1", "v1beta1")
PARTIAL = ("PartialObjectMetadata", "PartialObjectMetadataList")


@dataclass(frozen=True)
class Target:
    """The form an answer is given in: ``kind`` empty for the object as stored, else one of :data:`PARTIAL` in
    ``meta.k8s.io/<version>``."""

    kind: str = ""
    version: str = ""

    @property
    def api_version(self) -> str:
        return f"{META_GROUP}/{self.version}"


def not_acceptable(message: str) -> ApiError:
    return ApiError(406, "NotAcceptable", message)


def _clauses(header: str) -> list[tuple[str, str, dict[str, str]]]:
    """``Accept``'s clauses (type, subtype, parameters but q), by quality then specificity, as goautoneg sorts."""
    parsed: list[tuple[float, int, int, tuple[str, str, dict[str, str]]]] = []
    for n, part in enumerate(header.split(",")):
        media, *raw = [p.strip() for p in part.split(";")]
        main, _, sub = media.partition("/")
        if not main:
            continue
        params: dict[str, str] = {}
        q = 1.0
        for p in raw:
            key, _, value = p.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
            elif key.strip():
                params[key.strip()] = value.strip()
        specific = (main != "*") + (sub not in ("*", ""))
        parsed.append((-q, -specific, n, (main, sub or "*", params)))
    return [c for *_, c in sorted(parsed, key=lambda t: t[:3])]


def negotiate(header: str | None) -> Target:
    """The form ``Accept`` asks for, of those served; else 406."""
    if not header:
        return Target()
    for main, sub, params in _clauses(header):
        for served in SERVED:
            s_main, _, s_sub = served.partition("/")
            if not (main == s_main and sub in (s_sub, "*") or main == sub == "*"):
                continue
            if "stream" in params and params["stream"] != "watch":
                continue
            kind = params.get("as")
            if kind is None:
                return Target()
            if params.get("g") == META_GROUP and params.get("v") in META_VERSIONS and kind in PARTIAL:
                return Target(kind, params["v"])
    raise not_acceptable("only the following media types are accepted: " + ", ".join(SERVED))


def _go_type(kind: str, group: str) -> str:
    """The apiserver's internal Go type of ``kind`` as ``%T`` prints it (``*core.SecretList``)."""
    return f"*{group.split('.')[0] if group else 'core'}.{kind}"


def partial(obj: dict[str, Any], target: Target) -> dict[str, Any]:
    """``obj``'s metadata only (meta.AsPartialObjectMetadata)."""
    return {"kind": "PartialObjectMetadata", "apiVersion": target.api_version, "metadata": obj.get("metadata") or {}}


def transform(body: dict[str, Any], target: Target, *, is_list: bool, group: str) -> dict[str, Any]:
    """An answer ``body`` (a list, or one object) in the form ``target`` names; a Status as it is."""
    if not target.kind or body.get("kind") == "Status":
        return body
    if target.kind == "PartialObjectMetadata":
        if is_list:
            raise not_acceptable("you requested PartialObjectMetadata, but the requested object is a list "
                                 f"({_go_type(str(body.get('kind')), group)})")
        return partial(body, target)
    if not is_list:
        raise not_acceptable("you requested PartialObjectMetadataList, but the requested object is not a list "
                             f"({_go_type(str(body.get('kind')), group)})")
    meta = {k: v for k, v in (body.get("metadata") or {}).items()
            if k in ("resourceVersion", "continue", "remainingItemCount", "selfLink")}
    return {"kind": "PartialObjectMetadataList", "apiVersion": target.api_version, "metadata": meta,
            "items": [partial(item, target) for item in body.get("items") or []]}

"""Small shared pieces: timestamps, generated names, quantities, label and field selectors.

Selector grammar: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors
(equality ``=``, ``==``, ``!=``; set-based ``in``, ``notin``, ``key``, ``!key``) and
https://kubernetes.io/docs/concepts/overview/working-with-objects/field-selectors/ (``=``, ``==``, ``!=``).
Quantities: https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/quantity/.
"""

from __future__ import annotations

import datetime
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kube_model.errors import bad_request
from kube_model.quantity import decode

# The alphabet of generated name suffixes (k8s.io/apimachinery/pkg/util/rand: no vowels, no 0/1/3).
SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def clone(obj: Any) -> Any:
    """A deep copy of JSON-shaped data (dicts, lists, scalars): much faster than copy.deepcopy."""
    if isinstance(obj, dict):
        return {k: clone(v) if isinstance(v, (dict, list)) else v for k, v in obj.items()}
    if isinstance(obj, list):
        return [clone(v) if isinstance(v, (dict, list)) else v for v in obj]
    return obj


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def stamp(when: datetime.datetime | None = None) -> str:
    """metav1.Time: RFC 3339, second precision."""
    return (when or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_stamp(when: datetime.datetime | None = None) -> str:
    """metav1.MicroTime (events.k8s.io eventTime)."""
    return (when or now()).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_stamp(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def suffix(n: int = 5, rng: random.Random | None = None) -> str:
    r = rng or random
    return "".join(r.choice(SUFFIX_ALPHABET) for _ in range(n))


# -- quantities ------------------------------------------------------------------------------------------


def quantity(value: Any) -> Decimal:
    """A quantity's value as ParseQuantity reads it (``"250m"`` -> 0.25, ``"1Gi"`` -> 1073741824, rounded up to a
    nano); ValueError in the API server's words when malformed (:mod:`kube_model.quantity`)."""
    return decode(value).value


def millis(value: Any) -> int:
    """CPU in millicores (rounded up, as the scheduler counts)."""
    q = quantity(value) * 1000
    return int(q.to_integral_value(rounding="ROUND_CEILING"))


def whole(value: Any) -> int:
    """Memory, pods, GPUs: an integer count (rounded up)."""
    return int(quantity(value).to_integral_value(rounding="ROUND_CEILING"))


def amount(resource: str, value: Any) -> int:
    return millis(value) if resource == "cpu" else whole(value)


# -- selectors -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # =, !=, in, notin, exists, !, gt, lt
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        has = self.key in labels
        value = labels.get(self.key)
        if self.op in ("=", "in"):
            return has and value in self.values
        if self.op in ("!=", "notin"):
            return not has or value not in self.values
        if self.op == "exists":
            return has
        if self.op == "!":
            return not has
        if self.op in ("gt", "lt"):
            try:
                left, right = int(value or ""), int(self.values[0])
            except ValueError:
                return False
            return left > right if self.op == "gt" else left < right
        return False


# apimachinery's selector lexer: an identifier is any run of characters that are neither whitespace nor one of
# the selector's symbols; keys and values are validated after parsing (:func:`_requirement_errors`).
_IDENT = r"[^\s,=!()<>]"
_SET = re.compile(rf"^\s*(!?)\s*({_IDENT}+)\s*"
                  rf"(?:(notin|in)\s*\(([^)]*)\)|(==|=|!=|>|<)\s*({_IDENT}*))?\s*$")


def _split_terms(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    terms, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    terms.append("".join(cur))
    return [t for t in terms if t.strip()]


def parse_label_selector(text: str | None,
                         check: Callable[[Requirement], list[str]] | None = None) -> list[Requirement]:
    """A label selector string; 400 BadRequest when it does not parse, or when ``check`` (the API server's key and
    value rules, :func:`kube_model.validation.selector_requirement`) finds fault with a requirement."""
    out = []
    for term in _split_terms(text or ""):
        m = _SET.match(term)
        if not m:
            raise bad_request(f"unable to parse requirement: found '{term.strip()}', expected: "
                              f"identifier, '!', 'in', 'notin', '=', '==', '!='")
        bang, key, setop, setvals, op, value = m.groups()
        if bang:
            if setop or op:
                raise bad_request(f"unable to parse requirement: found '{term.strip()}', expected: identifier")
            out.append(Requirement(key, "!"))
        elif setop:
            out.append(Requirement(key, setop, tuple(v.strip() for v in setvals.split(",") if v.strip())))
        elif op:
            out.append(Requirement(key, {"==": "=", ">": "gt", "<": "lt"}.get(op, op), (value,)))
        else:
            out.append(Requirement(key, "exists"))
        errors = check(out[-1]) if check is not None else []
        if errors:  # apimachinery's labels.Parse: "unable to parse requirement: <aggregated field errors>"
            raise bad_request("unable to parse requirement: " + (errors[0] if len(errors) == 1 else
                                                                  "[" + ", ".join(errors) + "]"))
    return out


def selector_from_label_selector(sel: dict[str, Any] | None) -> list[Requirement]:
    """A metav1.LabelSelector (matchLabels + matchExpressions) as requirements."""
    out = [Requirement(k, "=", (v,)) for k, v in ((sel or {}).get("matchLabels") or {}).items()]
    for expr in (sel or {}).get("matchExpressions") or []:
        op = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}[expr["operator"]]
        out.append(Requirement(expr["key"], op, tuple(expr.get("values") or ())))
    return out


def labels_match(reqs: list[Requirement], labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    return all(r.matches(labels) for r in reqs)


@dataclass(frozen=True)
class FieldRequirement:
    path: str
    op: str  # = or !=
    value: str


def parse_field_selector(text: str | None, known: set[str]) -> list[FieldRequirement]:
    out = []
    for term in _split_terms(text or ""):
        m = re.match(r"^\s*([A-Za-z0-9_.\[\]'/-]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
        if not m:
            raise bad_request(f"invalid selector: '{term}'; can't understand '{term}'")
        path, op, value = m.groups()
        if path not in known:
            raise bad_request(f'field label not supported: {path}')
        out.append(FieldRequirement(path, "=" if op == "==" else op, value))
    return out


def get_path(obj: dict[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def fields_match(reqs: list[FieldRequirement], obj: dict[str, Any],
                 getter: Callable[[dict[str, Any], str], str] = get_path) -> bool:
    for r in reqs:
        value = getter(obj, r.path)
        if (value == r.value) != (r.op == "="):
            return False
    return True

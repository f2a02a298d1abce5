"""Images in the test registry that say, or do not say, that their worker signs its outcome document (the label
:data:`~sematic_k8s.labels.SIGNS_OUTCOMES_LABEL` a build by sematic_k8s.packaging writes): FROM a given image, pushed,
referred to by digest, so that a driver reads the label as it reads any image's (from the engine, or the registry)."""

from __future__ import annotations

import io
from typing import Any

from infra import REGISTRY
from sematic_k8s.labels import SIGNS_OUTCOMES_LABEL
from sematic_k8s.packaging.push import push_image

REPO = f"{REGISTRY}/sk-test-signing"


def labelled(client: Any, base: str, tag: str, signs: str | None) -> str:  # noqa: ANN401 - a docker client
    """``base`` with its :data:`SIGNS_OUTCOMES_LABEL` set to ``signs`` (None: left as ``base`` has it), pushed as
    ``REPO:tag``: its reference by digest."""
    label = f'LABEL {SIGNS_OUTCOMES_LABEL}="{signs}"\n' if signs is not None else ""
    client.images.build(fileobj=io.BytesIO(f"FROM {base}\n{label}".encode()), tag=f"{REPO}:{tag}", rm=True)
    return push_image(client, REPO, tag)

"""Images whose USER is a name (``USER app``, ``USER app:sk``, ``USER 2345:sk``), as a user's own base image may
have: built FROM another image with a user ``app`` (uid 2345, its group ``app``, gid 2345) and a group ``sk``
(gid 2346) added to its /etc/passwd and /etc/group (the tests' base image has no useradd), with a HOME of its own."""

from __future__ import annotations

import io
from typing import Any

APP_UID, APP_GID, SK_GID = 2345, 2345, 2346
NAMED_USER_REPO = "sk-test-named-user"


def named_user_image(client: Any, base: str, user: str, tag: str, *, extra: str = "") -> str:  # noqa: ANN401
    """``base`` with user app and group sk added, running as ``user``; its local tag (``extra``: more lines)."""
    dockerfile = f"""FROM {base}
USER 0
RUN echo 'app:x:{APP_UID}:{APP_GID}::/home/app:/bin/sh' >> /etc/passwd && \\
    echo 'app:x:{APP_GID}:' >> /etc/group && echo 'sk:x:{SK_GID}:app' >> /etc/group && \\
    mkdir -p /home/app && chown {APP_UID}:{APP_GID} /home/app
ENV HOME=/home/app
{extra}
USER {user}
"""
    reference = f"{NAMED_USER_REPO}:{tag}"
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=reference, rm=True)
    return reference

"""Container images of user projects, for the CloudResolver: build-context hashing (:mod:`.context`,
:mod:`.ignore`), wheels fetched on the host (:mod:`.wheels`), the Dockerfile (:mod:`.dockerfile`) and build
context (:mod:`.archive`), docker build (:mod:`.build`), push and the registry's faults (:mod:`.push`), registry
look-ups (:mod:`.registry`), and reuse of images whose context hash is already recorded or pushed. See
:func:`ensure_image`. The project's own images (server, worker base) are built by :mod:`.images`.
"""

from sematic_k8s.errors import BuildError, PushError
from sematic_k8s.packaging.build import ImageRef, ensure_image, parse_steps
from sematic_k8s.packaging.context import CODE_DIR, DEFAULT_BASE_IMAGE, BuildContext, compute_context, source_map

__all__ = ["CODE_DIR", "DEFAULT_BASE_IMAGE", "BuildContext", "BuildError", "ImageRef", "PushError",
           "compute_context", "ensure_image", "parse_steps", "source_map"]

"""Container images for user projects: build-context hashing, Dockerfile generation, docker build + push,
and reuse of images whose context hash is already recorded or pushed. See :func:`ensure_image`."""

from sematic_k8s.packaging.build import BuildError, ImageRef, PushError, ensure_image, parse_steps
from sematic_k8s.packaging.context import CODE_DIR, DEFAULT_BASE_IMAGE, BuildContext, compute_context, source_map

__all__ = ["CODE_DIR", "DEFAULT_BASE_IMAGE", "BuildContext", "BuildError", "ImageRef", "PushError",
           "compute_context", "ensure_image", "parse_steps", "source_map"]

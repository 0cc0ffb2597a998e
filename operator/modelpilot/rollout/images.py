"""Which runtime images the operator may run: the operator-wide allow-list, a pure decision.

Creating a ModelDeployment runs pods with the image it names; the cluster's operator, not the author of
each ModelDeployment, decides which images those may be.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from ..registry.resolution import Resolution

IMAGE_NOT_ALLOWED = "ImageNotAllowed"


def image_allowed(image: str, patterns: tuple[str, ...]) -> bool:
    """Whether `image`, as written, matches one of the glob patterns (`*` also matches `/`). No patterns
    allow every image."""
    return not patterns or any(fnmatchcase(image, pattern) for pattern in patterns)


def image_refusal(image: str, patterns: tuple[str, ...]) -> Resolution | None:
    """Why the image may not run, as a failure the plan reports like an unresolvable model: nothing new
    rolls out and whatever serves keeps serving. Retrying cannot help; changing the spec or the list can."""
    if image_allowed(image, patterns):
        return None
    message = (
        f"runtime image {image!r} is not allowed: the operator runs only images matching {', '.join(patterns)} "
        "(set by MODELPILOT_ALLOWED_IMAGES, Helm value allowedRuntimeImages)"
    )
    return Resolution.failed(IMAGE_NOT_ALLOWED, message, retryable=False)

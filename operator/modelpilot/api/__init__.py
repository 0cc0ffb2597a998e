"""The ModelDeployment API: spec and status models, the source of the CRD."""

from .spec import GROUP, KIND, PLURAL, VERSION, ModelDeploymentSpec
from .status import Condition, ModelDeploymentStatus, ResolvedModel

__all__ = ["GROUP", "KIND", "PLURAL", "VERSION", "Condition", "ModelDeploymentSpec", "ModelDeploymentStatus", "ResolvedModel"]

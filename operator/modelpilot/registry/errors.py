"""Why a model reference could not be resolved. Each error names the condition reason it reports."""

from __future__ import annotations


class RegistryError(Exception):
    """A reference that did not resolve; `reason` is the status condition reason, `retryable` says if waiting helps."""

    reason = "RegistryError"
    retryable = False


class ModelNotFound(RegistryError):
    reason = "ModelNotFound"


class VersionNotFound(RegistryError):
    reason = "VersionNotFound"


class AliasNotFound(RegistryError):
    reason = "AliasNotFound"


class VersionNotReady(RegistryError):
    """The version exists but MLflow has not finished registering it (or failed to)."""

    reason = "VersionNotReady"
    retryable = True


class RegistryUnreachable(RegistryError):
    reason = "RegistryUnreachable"
    retryable = True


class CredentialsRefused(RegistryError):
    reason = "CredentialsRefused"


class CredentialsSecretMissing(RegistryError):
    """The Secret named by spec.mlflow.credentialsSecret does not exist (yet); it may be created later."""

    reason = "CredentialsSecretMissing"
    retryable = True


class CredentialsSecretInvalid(RegistryError):
    """The Secret exists but a key the operator reads from it holds no text (say, a binary file)."""

    reason = "CredentialsSecretInvalid"

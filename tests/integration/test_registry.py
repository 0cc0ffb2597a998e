"""Resolving model references against a real MLflow server, including each way it can fail."""

from __future__ import annotations

import pytest
from modelpilot.api.spec import ModelRef
from modelpilot.registry.errors import (
    AliasNotFound,
    CredentialsRefused,
    ModelNotFound,
    RegistryUnreachable,
    VersionNotFound,
)
from modelpilot.registry.mlflow import Credentials, MlflowRegistry

from tests.support.mlflow import ADMIN_PASSWORD, ADMIN_USER
from tests.support.processes import free_port

pytestmark = pytest.mark.mlflow


@pytest.fixture
def registry(mlflow):
    with MlflowRegistry(mlflow.uri, Credentials(username=ADMIN_USER, password=ADMIN_PASSWORD)) as reg:
        yield reg


def test_version_resolves_to_its_run_and_source(registry, registered_model):
    model = registry.resolve(ModelRef(name=registered_model, version="2"))
    assert model.version == "2"
    assert model.alias is None
    assert model.run_id and len(model.run_id) == 32
    assert model.source.startswith(("models:/", "mlflow-artifacts:"))


def test_alias_resolves_to_the_version_it_points_at(registry, registered_model):
    model = registry.resolve(ModelRef(name=registered_model, alias="champion"))
    assert (model.version, model.alias) == ("1", "champion")


@pytest.mark.parametrize(
    "ref, error",
    [
        (ModelRef(name="no-such-model", version="1"), ModelNotFound),
        (ModelRef(name="no-such-model", alias="champion"), ModelNotFound),
        (ModelRef(name="fraud-detector", version="99"), VersionNotFound),
        (ModelRef(name="fraud-detector", alias="nobody"), AliasNotFound),
    ],
)
def test_missing_references_name_what_is_missing(registry, registered_model, ref, error):
    with pytest.raises(error) as caught:
        registry.resolve(ref)
    assert not caught.value.retryable
    assert ref.name in str(caught.value)


def test_wrong_password_is_refused_not_retried(mlflow, registered_model):
    with MlflowRegistry(mlflow.uri, Credentials(username=ADMIN_USER, password="wrong")) as reg:
        with pytest.raises(CredentialsRefused) as caught:
            reg.resolve(ModelRef(name=registered_model, version="1"))
    assert "wrong" not in str(caught.value)


def test_closed_port_is_unreachable_and_retryable():
    with MlflowRegistry(f"http://127.0.0.1:{free_port()}") as reg:
        with pytest.raises(RegistryUnreachable) as caught:
            reg.resolve(ModelRef(name="m", version="1"))
    assert caught.value.retryable

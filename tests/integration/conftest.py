"""Servers shared by the integration tests: a real MLflow server with real registered models."""

from __future__ import annotations

import pytest

from tests.support.mlflow import mlflow_server, register_sklearn_model


@pytest.fixture(scope="session")
def mlflow():
    with mlflow_server() as server:
        yield server


@pytest.fixture(scope="session")
def registered_model(mlflow):
    """A registered model with versions 1 and 2, alias `champion` on version 1."""
    name = "fraud-detector"
    register_sklearn_model(mlflow, name, alias="champion", seed=1)
    register_sklearn_model(mlflow, name, seed=2)
    return name

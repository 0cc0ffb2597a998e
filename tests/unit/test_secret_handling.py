"""Secret values: only the keys the operator uses are decoded, and no error that holds their bytes is logged."""

from __future__ import annotations

import asyncio
import base64
import logging

import pytest

from modelpilot import handlers
from modelpilot.kube.objects import SecretValueNotText, decode_keys
from modelpilot.registry.mlflow import Credentials

BINARY = b"\xff\xfehunter2-keystore"


def encoded(value: bytes | str) -> str:
    return base64.b64encode(value if isinstance(value, bytes) else value.encode()).decode()


def test_only_the_keys_asked_for_are_decoded():
    data = {
        "MLFLOW_TRACKING_USERNAME": encoded("reader"),
        "MLFLOW_TRACKING_PASSWORD": encoded("s3cret-Ünïcode"),
        "AWS_SECRET_ACCESS_KEY": encoded("aws-key"),
        "keystore.p12": encoded(BINARY),  # for the fetch step only: the operator never reads it
    }
    decoded = decode_keys(data, Credentials.SECRET_KEYS)
    assert decoded == {"MLFLOW_TRACKING_USERNAME": "reader", "MLFLOW_TRACKING_PASSWORD": "s3cret-Ünïcode"}
    assert Credentials.from_secret_data(decoded).password == "s3cret-Ünïcode"


@pytest.mark.parametrize("raw", [encoded(BINARY), "not base64 hunter2!"])
def test_a_used_key_that_is_not_text_is_named_without_its_value(raw):
    with pytest.raises(SecretValueNotText) as caught:
        decode_keys({"MLFLOW_TRACKING_PASSWORD": raw}, Credentials.SECRET_KEYS)
    assert "MLFLOW_TRACKING_PASSWORD" in str(caught.value)
    # Nothing chained either: a logged traceback would print the decoding error with it.
    assert caught.value.__context__ is None and caught.value.__cause__ is None
    assert "hunter2" not in repr(caught.value) + str(caught.value)


class _Failing:
    async def reconcile(self, body, cluster, resolve=True, resync=False):
        BINARY.decode()  # a UnicodeDecodeError: its repr holds every byte it was given

    def retain(self, uids):
        pass


def test_a_failed_periodic_reconcile_logs_no_error_repr(monkeypatch, caplog):
    monkeypatch.setattr(handlers, "RECONCILER", _Failing())
    store = {("ml", "m"): [{"metadata": {"namespace": "ml", "name": "m", "uid": "u1"}}]}

    async def one_pass():
        resync = handlers.Resync(store, cluster=None)
        resync.once()
        await asyncio.gather(*resync.running.values(), return_exceptions=True)

    with caplog.at_level(logging.ERROR, logger="modelpilot.handlers"):
        asyncio.run(one_pass())
    assert "periodic reconcile of ml/m failed: UnicodeDecodeError" in caplog.text
    assert "hunter2" not in caplog.text

"""A fast path for the commonest scoring request: JSON rows of plain numbers.

Most of the time MLflow's scoring server spends on a small request goes into building a DataFrame one
column at a time, casting every column to the signature's type, then building it again while
enforcing the schema (docs/serving.md, "Where a request's time goes"). For a request whose answer is
already known to be "these numbers, in these columns" that work can be done in one step:

- the body is ``application/json`` with exactly one key, ``dataframe_split`` (``columns`` and ``data``,
  no ``index``) or ``dataframe_records``;
- the model has a column signature whose columns are all required ``double`` or ``long`` (and no
  params), or no signature at all (then only ``dataframe_split`` with named columns of floats);
- the request names exactly those columns, once each, in any order, with at least one row, and every
  value is a JSON number that the column's type holds exactly (a float or a small integer for
  ``double``; an int64 integer for ``long``).

Such a request becomes the very DataFrame schema enforcement would have handed the model (the same
columns in signature order, the same dtypes and values, a RangeIndex), the model's own predict function
scores it, and MLflow's own serialiser writes the answer. Everything else, and any request whose
prediction raises, returns ``None``: the caller then lets MLflow's scoring app answer it from the start,
so every error answer is MLflow's own.
"""

from __future__ import annotations

import inspect
import io
import json
from typing import Any

import numpy as np

CONTENT_TYPE = b"application/json"
# Integers a double column holds exactly: pandas casts them to float64 without rounding.
_EXACT_IN_DOUBLE = 2**53
_INT64 = (-(2**63), 2**63 - 1)
# A parsed request: its column names (the signature's order when there is one) and its checked rows.
Parsed = tuple[list[str], list[list[Any]]]


class FastPath:
    """Parses and scores fast-path requests for one loaded model; built by :meth:`for_model`."""

    def __init__(self, model: Any, names: list[str] | None, kinds: list[str]) -> None:
        import pandas as pd
        from mlflow.pyfunc import (
            Context,
            _get_dependencies_schema_from_model,
            _try_get_prediction_context,
            set_prediction_context,
        )
        from mlflow.pyfunc.scoring_server import predictions_to_json

        self._model = model
        self._names = names  # signature column order, or None without a signature
        self._kinds = kinds  # per signature column: "double" or "long"
        self._all_double = all(kind == "double" for kind in kinds)
        self._columns = pd.Index(names) if names is not None else None  # shared, immutable
        self._frame = pd.DataFrame
        self._context = (Context, _try_get_prediction_context, set_prediction_context)
        self._dependencies = _get_dependencies_schema_from_model(model._model_meta)
        self._predictions_to_json = predictions_to_json
        predict_fn = model._predict_fn
        params = inspect.signature(predict_fn).parameters.get("params")
        self._pass_params = params is not None and params.kind != inspect.Parameter.VAR_KEYWORD

    @classmethod
    def for_model(cls, model: Any) -> FastPath | None:
        """The fast path for `model` (a PyFuncModel), or None when its requests must all go to MLflow."""
        try:
            from mlflow.pyfunc import PyFuncModel
            from mlflow.types import DataType

            if type(model) is not PyFuncModel:
                return None
            meta = model.metadata
            if meta._is_signature_from_type_hint() or meta._is_type_hint_from_example():
                return None
            if meta.get_params_schema() is not None:
                return None
            schema = meta.get_input_schema()
            if schema is None:
                return cls(model, None, [])
            if schema.is_tensor_spec() or not schema.has_input_names():
                return None
            kinds = {DataType.double: "double", DataType.long: "long"}
            specs = schema.inputs
            if not all(spec.required and isinstance(spec.type, DataType) and spec.type in kinds for spec in specs):
                return None
            names = [spec.name for spec in specs]
            if len(set(names)) != len(names) or not all(type(name) is str for name in names):
                return None
            return cls(model, names, [kinds[spec.type] for spec in specs])
        except (ImportError, AttributeError):  # an MLflow of another shape: no fast path, nothing wrong
            return None

    # -- parsing ------------------------------------------------------------------------------------

    def parse(self, body: bytes) -> Parsed | None:
        """The checked columns and rows of `body`, or None if MLflow's code must decide."""
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            return None
        if type(document) is not dict or len(document) != 1:
            return None
        ((key, value),) = document.items()
        if key == "dataframe_split":
            return self._split(value)
        if key == "dataframe_records" and self._names is not None:
            return self._records(value)
        return None

    def frame(self, body: bytes) -> Any:
        """The DataFrame the model would be handed for `body`, or None if MLflow's code must decide."""
        parsed = self.parse(body)
        return None if parsed is None else self.build(*parsed)

    def build(self, columns: list[str], rows: list[list[Any]]) -> Any:
        """The DataFrame of checked rows (from `parse`, or several of them with the same columns)."""
        if self._all_double or self._names is None:
            return self._frame(np.array(rows, dtype=np.float64), columns=columns if self._columns is None else self._columns)
        data = {
            name: np.array(values, dtype=np.float64 if kind == "double" else np.int64)
            for name, kind, values in zip(self._names, self._kinds, zip(*rows))
        }
        return self._frame(data, columns=self._columns)

    def _split(self, value: Any) -> Parsed | None:
        if type(value) is not dict or len(value) != 2:
            return None
        columns, rows = value.get("columns"), value.get("data")
        if type(columns) is not list or type(rows) is not list or not rows:
            return None
        if self._names is None:
            return self._unsigned(columns, rows)
        width = len(self._names)
        if len(columns) != width or not all(type(name) is str for name in columns):
            return None
        if set(columns) != set(self._names) or len(set(columns)) != width:
            return None
        for row in rows:
            if type(row) is not list or len(row) != width:
                return None
        if columns != self._names:
            at = {name: i for i, name in enumerate(columns)}
            order = [at[name] for name in self._names]
            rows = [[row[i] for i in order] for row in rows]
        return self._checked(rows)

    def _records(self, records: Any) -> Parsed | None:
        if type(records) is not list or not records:
            return None
        names = self._names
        width = len(names)
        rows = []
        for record in records:
            if type(record) is not dict or len(record) != width:
                return None
            try:
                rows.append([record[name] for name in names])
            except KeyError:
                return None
        return self._checked(rows)

    def _checked(self, rows: list[list[Any]]) -> Parsed | None:
        """Signature-ordered rows if every value is one its column's type holds exactly."""
        if self._all_double:
            for row in rows:
                for v in row:
                    if type(v) is not float and not (type(v) is int and -_EXACT_IN_DOUBLE <= v <= _EXACT_IN_DOUBLE):
                        return None
            return self._names, rows
        for row in rows:
            for kind, v in zip(self._kinds, row):
                if kind == "double":
                    if type(v) is not float and not (type(v) is int and -_EXACT_IN_DOUBLE <= v <= _EXACT_IN_DOUBLE):
                        return None
                elif not (type(v) is int and _INT64[0] <= v <= _INT64[1]):
                    return None
        return self._names, rows

    def _unsigned(self, columns: list[Any], rows: list[Any]) -> Parsed | None:
        """Without a signature MLflow hands the model pandas' own frame; for named float columns it is
        one float64 block with those names."""
        width = len(columns)
        if not width or not all(type(name) is str for name in columns) or len(set(columns)) != width:
            return None
        for row in rows:
            if type(row) is not list or len(row) != width:
                return None
            for v in row:
                if type(v) is not float:
                    return None
        return columns, rows

    # -- scoring ------------------------------------------------------------------------------------

    def predict(self, frame: Any) -> Any:
        """The model's predict function on an already enforced frame, in the prediction context
        PyFuncModel.predict sets up."""
        context_class, current_context, set_prediction_context = self._context
        context = current_context() or context_class()
        with set_prediction_context(context):
            if self._dependencies:
                context.update(**self._dependencies)
            if self._model.model_id:
                context.update(model_id=self._model.model_id)
            if self._pass_params:
                return self._model._predict_fn(frame, params=None)
            return self._model._predict_fn(frame)

    def answer(self, predictions: Any) -> bytes:
        """MLflow's JSON answer for `predictions`, as its scoring app encodes it."""
        out = io.StringIO()
        self._predictions_to_json(predictions, out)
        return out.getvalue().encode("utf-8")

"""Model input data in every form users hand over -> batches of arrays in graph-input order."""

from __future__ import annotations

import os

import numpy as np

from kquant.arguments import check_int
from kquant.errors import CalibrationDataError
from kquant.graph import TensorSpec

DEFAULT_BATCH_SIZE = 64


def iter_batches(data, inputs: tuple[TensorSpec, ...], batch_size: int = DEFAULT_BATCH_SIZE, *, role: str = "input data"):
    """Yield lists of arrays, one per graph input, from ``data``.

    ``data``: an array or tensor (one input), a list/tuple of arrays (one per input), a dict name -> array,
    a ``tf.data.Dataset``, or any iterable of batches in one of those forms; ``(x, y)`` and ``(x, y, weights)``
    pairs, as Keras datasets yield them, give their ``x``. Arrays are split into ``batch_size`` rows; every
    batch is checked against the input specs.
    """
    check_int("batch_size", batch_size, minimum=1)
    check_calibration_data(data, role)
    data = _features(_as_arrays(data), inputs, batched=False)
    if _is_whole_dataset(data, inputs):
        columns = _columns(data, inputs, role)
        rows = _row_count(columns, inputs, role)
        if rows == 0:
            raise CalibrationDataError(f"the {role} is empty; pass at least one sample")
        for start in range(0, rows, batch_size):
            yield [_checked(col[start:start + batch_size], spec, role) for col, spec in zip(columns, inputs)]
        return
    count = 0
    for batch in _as_numpy_iterable(data):
        columns = _columns(_features(_as_arrays(batch), inputs), inputs, role)
        if columns[0].shape[:1] == (0,):  # an empty batch; a scalar (no batch dimension) fails the rank check below
            continue
        _row_count(columns, inputs, role)
        count += 1
        yield [_checked(col, spec, role) for col, spec in zip(columns, inputs)]
    if count == 0:
        raise CalibrationDataError(f"the {role} is empty; pass at least one sample")


def check_calibration_data(data, role: str = "calibration data") -> None:
    """Refuse at once what cannot be data: None, a path (it must be loaded first), a bare string or number."""
    if isinstance(data, (str, bytes, os.PathLike)):
        raise CalibrationDataError(f"the {role} is a path or string ({str(data)[:100]!r}), not data; load it first, "
                                   "e.g. np.load(path) (the command line's --calib reads .npy/.npz files)")
    if data is None or isinstance(data, (int, float, bool)):
        raise CalibrationDataError(f"{type(data).__name__} is not usable as data; pass an array, a list of arrays, a dict, "
                                   "a tf.data.Dataset or an iterable of batches")


def _as_arrays(data):
    """Tensors (tf.Tensor and other array-likes that are not containers) as numpy arrays, at the top level and
    one level into lists, tuples and dicts."""
    if _is_array_like(data):
        return np.asarray(data)
    if isinstance(data, dict):
        return {key: np.asarray(value) if _is_array_like(value) else value for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(_as_arrays(item) if isinstance(item, (dict, list, tuple)) or _is_array_like(item) else item
                          for item in data)
    return data


def _is_array_like(value) -> bool:
    return not isinstance(value, np.ndarray) and hasattr(value, "__array__") and hasattr(value, "shape") \
        and not hasattr(value, "as_numpy_iterator")


def _features(batch, inputs, batched=True):
    """``x`` of an ``(x, y)`` or ``(x, y, weights)`` pair; any other batch as it is. A whole data set
    (not ``batched``) of one input is never a pair: a tuple of two arrays there is two batches."""
    if not isinstance(batch, tuple) or len(batch) not in (2, 3):
        return batch
    x, y = batch[0], batch[1]
    if isinstance(x, dict) and not isinstance(y, dict):
        return x
    if isinstance(x, (list, tuple)) and len(inputs) > 1 and len(x) == len(inputs) and not isinstance(y, (list, tuple)):
        return x
    if len(inputs) == 1 and not isinstance(x, (list, tuple)) and batched:
        return x
    return batch


def _row_count(columns, inputs, role) -> int:
    rows = {spec.node: len(col) for col, spec in zip(columns, inputs) if col.ndim >= 1}
    if len(set(rows.values())) > 1:
        counts = ", ".join(f"{name}: {count}" for name, count in rows.items())
        raise CalibrationDataError(f"the {role} has a different number of rows per input ({counts}); every input "
                                   "needs one row per sample")
    return next(iter(rows.values()), 0)


def _is_whole_dataset(data, inputs) -> bool:
    if isinstance(data, (np.ndarray, dict)):
        return True
    if isinstance(data, (list, tuple)) and len(inputs) > 1 and len(data) == len(inputs):
        return all(isinstance(d, np.ndarray) and d.ndim >= 1 for d in data)
    return False


def _columns(batch, inputs, role) -> list[np.ndarray]:
    if isinstance(batch, dict):
        by_name = {_short(k): v for k, v in batch.items()}
        missing = [spec.node for spec in inputs if spec.node not in by_name]
        if missing:
            raise CalibrationDataError(
                f"the {role} has no entry for input(s) {', '.join(missing)}; its keys are {', '.join(map(str, batch))}"
            )
        return [np.asarray(by_name[spec.node]) for spec in inputs]
    if isinstance(batch, (list, tuple)):
        arrays = [np.asarray(b) for b in batch]
    else:
        arrays = [np.asarray(batch)]
    if len(arrays) != len(inputs):
        raise CalibrationDataError(
            f"the {role} gives {len(arrays)} array(s) per batch but the model has {len(inputs)} input(s) "
            f"({', '.join(s.node for s in inputs)}); pass one array per input, or a dict name -> array"
        )
    return arrays


def _checked(array: np.ndarray, spec: TensorSpec, role: str) -> np.ndarray:
    if spec.shape is not None:
        if array.ndim != len(spec.shape):
            raise CalibrationDataError(
                f"the {role} for input {spec.node} has rank {array.ndim} (shape {array.shape}) but the model expects "
                f"rank {len(spec.shape)} {_shape_text(spec.shape)}; reshape it"
            )
        wrong = [i for i, (got, want) in enumerate(zip(array.shape, spec.shape)) if want is not None and got != want]
        if wrong:
            raise CalibrationDataError(
                f"the {role} for input {spec.node} has shape {array.shape} but the model expects {_shape_text(spec.shape)}; "
                "resize or reshape it"
            )
    wants_float = spec.dtype.startswith(("float", "bfloat"))
    if array.dtype.kind not in ("biuf" if wants_float else "biu"):
        raise CalibrationDataError(
            f"the {role} for input {spec.node} has dtype {array.dtype}; the model expects {spec.dtype}, convert it"
        )
    array = array.astype(spec.dtype, copy=False)
    if wants_float and not np.isfinite(array).all():
        raise CalibrationDataError(f"the {role} for input {spec.node} contains NaN or Inf; clean or drop those samples")
    return array


def _as_numpy_iterable(data):
    if hasattr(data, "as_numpy_iterator"):
        return data.as_numpy_iterator()
    try:
        return iter(data)
    except TypeError as exc:
        raise CalibrationDataError(
            f"{type(data).__name__} is not usable as data; pass an array, a list of arrays, a dict, a tf.data.Dataset "
            "or an iterable of batches"
        ) from exc


def _short(name) -> str:
    name = str(name)
    return name.rsplit(":", 1)[0] if name.rsplit(":", 1)[-1].isdigit() else name


def _shape_text(shape) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"

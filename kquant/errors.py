"""The errors kquant raises: one base class, one subclass per kind of problem.

Every message names what went wrong and what to do about it; the CLI prints
it as one line and exits with status 2.
"""


class KQuantError(Exception):
    """Base class of every error kquant raises on purpose."""

    exit_code = 2


class ModelNotFoundError(KQuantError):
    """A model path does not exist."""


class ModelFormatError(KQuantError):
    """A file or directory is not a model kquant can read (corrupt, truncated, wrong kind)."""


class SignatureNotFoundError(KQuantError):
    """A SavedModel has no signature of the requested name."""


class NodeNotFoundError(KQuantError):
    """An input or output name does not exist in the graph."""


class ModelInputError(KQuantError):
    """Inputs or outputs of a model cannot be determined or are ambiguous."""


class TransformError(KQuantError):
    """A transform string is malformed, names an unknown transform, or the transform failed."""


class DataError(KQuantError):
    """Sample data (a file or arrays) cannot be read or does not fit the model."""


class CalibrationDataError(DataError):
    """Calibration data is empty, has the wrong shape, dtype or rank, or holds NaN/Inf."""


class UnsafeModelError(ModelFormatError):
    """A model file holds code (a Lambda layer, a lambda function) that kquant runs only when asked."""


class ConfigurationError(KQuantError, ValueError):
    """An option has an invalid value, or names an unknown method."""


class QuantizationError(KQuantError):
    """The int8 rewrite could not be built or run."""


class GraphRunError(KQuantError):
    """TensorFlow failed while running the graph: an op rejected the values or shapes it was given."""


class OneDNNDisabledError(KQuantError):
    """TensorFlow runs without oneDNN, so its int8 kernels cannot run."""


class OutputWriteError(KQuantError):
    """An output file or directory could not be written."""


class MissingRuntimeError(KQuantError):
    """An optional runtime an export needs (OpenVINO) is not installed."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message, for one-line error texts."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0][:limit] if lines else type(exc).__name__


def error_line(exc: BaseException, limit: int = 300) -> str:
    """The line of a (possibly multi-line, traced) exception message that says what went wrong: the part Keras
    prints in bold, else the last ``SomeError: ...`` line (tf.function puts it under a traceback), else the first line."""
    import re

    text = str(exc)
    found = re.findall(r"\x1b\[1m(.+?)\x1b\[0m", text, flags=re.DOTALL) or \
        re.findall(r"^\s*\w*(?:Error|Exception): (.+)$", text, flags=re.MULTILINE)
    return " ".join(found[-1].split())[:limit] if found else first_line(exc, limit)

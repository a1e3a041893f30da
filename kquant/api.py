"""kquant.quantize(model, calibration_data): freeze the model, then quantize it (``kquant.quantization``)."""

from __future__ import annotations

from kquant.arguments import check_bool, check_callable, names_list
from kquant.converters import freeze
from kquant.data import DEFAULT_BATCH_SIZE, check_calibration_data
from kquant.quantization.config import QuantizationConfig
from kquant.quantization.model import QuantizedModel
from kquant.quantization.pipeline import quantize_frozen


def quantize(model, calibration_data, *, inputs=None, outputs=None, per_channel=True, calibration="minmax",
             excluded_ops=(), excluded_nodes=(), batch_size=DEFAULT_BATCH_SIZE, progress=True,
             calibration_options=None, signature=None, input_shapes=None, eval_fn=None, max_accuracy_drop=0.01,
             relative=True, max_trials=20, fallback="fp32", kernels="onednn", stem="fp32", max_batches=None,
             safe_mode=True, target="tensorflow") -> "QuantizedModel":
    """Quantize ``model`` (any form ``kquant.freeze`` accepts) to int8, calibrating on ``calibration_data``.

    ``calibration_data``: an array, a list/tuple of arrays (one per input), a dict name -> array,
    a ``tf.data.Dataset`` or any iterable of batches (``(x, y)`` pairs are fine). At most ``max_batches``
    batches are read (default: 10000 samples, with a warning when data is left). ``calibration``: "minmax",
    "percentile" or "kl". ``excluded_ops``/``excluded_nodes``: one name or a list of names.
    ``kernels``: "onednn" (the fused internal ops, fastest) or "public" (the public Quantized* ops).
    ``stem``: "fp32" (default) keeps the image stem out of int8: a convolution with at most 4 input channels
    reading the model input (through no other conv or matmul), whose input rounding costs the most accuracy;
    "int8" quantizes it too. ``safe_mode=False`` lets a .keras/.h5 file's Lambda code run as it loads.

    Accuracy-aware: with ``eval_fn(predict) -> float`` (higher is better; ``predict(x)`` runs a
    candidate graph), kquant evaluates fp32 and int8 and, while the drop exceeds
    ``max_accuracy_drop`` (a fraction of the fp32 score when ``relative``), tries the other
    calibration algorithms and then keeps the most sensitive ops out of int8 (in ``fallback``
    precision, "fp32" or "bf16"), up to ``max_trials``. The best model is returned either way;
    ``qmodel.trials`` is the log. Every option is checked first (``QuantizationConfig``).

    ``target``: the runtime the model is deployed on, "tensorflow" (default) or "openvino" (``pip install
    "kquant[openvino]"``): with "openvino", ``predict`` and every tuning candidate run the model's OpenVINO form
    (what ``export(format="openvino")`` writes), so the accuracy tuning promises is OpenVINO's; ``graph_def``
    stays the TF int8 graph.
    """
    config = QuantizationConfig(per_channel=per_channel, calibration=calibration,
                                calibration_options=calibration_options, excluded_ops=excluded_ops,
                                excluded_nodes=excluded_nodes, stem=stem, fallback=fallback, kernels=kernels,
                                batch_size=batch_size, max_batches=max_batches, max_accuracy_drop=max_accuracy_drop,
                                relative=relative, max_trials=max_trials, target=target)
    config.check_runtime()
    check_bool("progress", progress)
    check_callable("eval_fn", eval_fn, "a function predict -> score (a number, higher is better)", optional=True)
    check_calibration_data(calibration_data)
    inputs = names_list("inputs", inputs, optional=True)
    frozen = freeze(model, signature=signature, outputs=outputs, input_shapes=input_shapes, safe_mode=safe_mode)
    if inputs:
        from kquant.converters.graph_def import frozen_from_graph_def

        frozen = frozen_from_graph_def(frozen.graph_def, inputs=inputs, outputs=frozen.output_names)
    return QuantizedModel(quantize_frozen(frozen, calibration_data, config, progress=progress, eval_fn=eval_fn))

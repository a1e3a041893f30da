"""int8 post-training quantization: plan (the op registry in ops/), calibration, rewrite, pipeline."""

"""ResizeBilinear of an int8 tensor stays int8 (QuantizedResizeBilinear); against QDQ."""

import tensorflow as tf

from .conftest import constant, lowered

W1, W2 = constant(3, 3, 3, 4, seed=16), constant(3, 3, 4, 2, seed=17)


def upsampled(x):
    return tf.nn.conv2d(tf.image.resize(tf.nn.relu(tf.nn.conv2d(x, W1, 1, "SAME")), [12, 12]), W2, 1, "SAME")


def test_an_upsampling_between_two_convs_runs_int8():
    result = lowered(upsampled, (6, 6, 3))
    assert [u.family for u in result.emitted] == ["convolution", "resize", "convolution"]
    assert "QuantizedResizeBilinear" in result.ops() and "ResizeBilinear" not in result.ops()
    assert result.ops().count("QuantizeV2") == 1 and result.within_steps()


def test_a_resize_of_an_fp32_tensor_stays_fp32():
    result = lowered(lambda x: tf.nn.conv2d(tf.image.resize(x, [12, 12]), W2[:, :, :3], 1, "SAME"), (6, 6, 3))
    assert [u.family for u in result.units] == ["convolution"] and "ResizeBilinear" in result.ops()

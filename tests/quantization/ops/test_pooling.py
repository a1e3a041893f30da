"""MaxPool and AvgPool on an int8 tensor stay int8 and keep its encoding; against QDQ."""

import pytest
import tensorflow as tf

from .conftest import constant, lowered

W1, W2 = constant(3, 3, 4, 6, seed=7), constant(1, 1, 6, 3, seed=8)


@pytest.mark.parametrize("pool", [tf.nn.max_pool2d, tf.nn.avg_pool2d])
def test_a_pool_between_two_convs_runs_int8(pool):
    result = lowered(lambda x: tf.nn.conv2d(pool(tf.nn.relu(tf.nn.conv2d(x, W1, 1, "SAME")), 2, 2, "VALID"), W2, 1, "SAME"),
                     (8, 8, 4))
    families = [u.family for u in result.emitted]
    assert families == ["convolution", "max pool" if pool is tf.nn.max_pool2d else "average pool", "convolution"]
    assert f"Quantized{'MaxPool' if pool is tf.nn.max_pool2d else 'AvgPool'}" in result.ops()
    assert result.ops().count("QuantizeV2") == 1 and result.within_steps()


def test_a_pool_of_an_fp32_tensor_stays_fp32():
    result = lowered(lambda x: tf.nn.conv2d(tf.nn.max_pool2d(x, 2, 2, "VALID"), W1, 1, "SAME"), (8, 8, 4))
    assert [u.family for u in result.units] == ["convolution"] and "MaxPool" in result.ops()

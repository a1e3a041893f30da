"""Calibrators (minmax, percentile, entropy/KL) and the insert_logging min/max log readers."""

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from kquant.errors import CalibrationDataError, ConfigurationError, KQuantError
from kquant.quantization.calibrators import (
    CALIBRATORS, EntropyCalibrator, MinMaxCalibrator, PercentileCalibrator, kl_threshold_bins, make_calibrator)
from kquant.quantization.ranges import ZERO_RANGE_WIDTH, valid_range
from kquant.quantization.seed_logs import read_max_log, read_min_log, read_min_max_log

METHODS = ["minmax", "percentile", "percentile-symmetric", "entropy"]


def make(method):
    if method == "percentile-symmetric":
        return PercentileCalibrator(symmetric=True)
    return make_calibrator(method)


def ranges_of(calibrator, *batches, name="t"):
    for batch in batches:
        calibrator.collect(name, batch)
    return calibrator.compute_ranges()[name]


def growing_batches(count, seed=0, size=256):
    """Batches whose scale grows, so histograms must widen their range many times."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(size).astype(np.float32) * np.float32(1.01 ** k) for k in range(count)]


# --- minmax -----------------------------------------------------------------------------------

def test_minmax_equals_numpy_min_max_over_all_batches():
    batches = [np.random.default_rng(k).normal(k, 3, size=(4, 7)) for k in range(12)]
    calibrator = MinMaxCalibrator()
    for batch in batches:
        calibrator.collect_batch({"a": batch, "b": -2 * batch})
    ranges = calibrator.compute_ranges()
    everything = np.concatenate([b.ravel() for b in batches])
    assert ranges["a"] == (everything.min(), everything.max())
    assert ranges["b"] == (-2 * everything.max(), -2 * everything.min())


# --- percentile -------------------------------------------------------------------------------

@pytest.mark.parametrize("symmetric", [False, True])
def test_percentile_streaming_equals_one_big_batch(symmetric):
    batches = growing_batches(300)
    streamed = ranges_of(PercentileCalibrator(99.9, symmetric=symmetric), *batches)
    single = ranges_of(PercentileCalibrator(99.9, symmetric=symmetric), np.concatenate(batches))
    # Growing the range merges bins exactly, so the counts, and the ranges, are identical.
    assert streamed == single
    # ...and both are within the histogram's resolution (1/64 per octave) of the true percentiles.
    everything = np.concatenate(batches).astype(np.float64)
    if symmetric:
        true = np.percentile(np.abs(everything), 99.9)
        np.testing.assert_allclose(streamed, (-true, true), rtol=1 / 64)
    else:
        np.testing.assert_allclose(streamed, np.percentile(everything, [0.1, 99.9]), rtol=1 / 64)


def test_percentile_clips_a_huge_outlier_and_keeps_resolution():
    values = np.random.default_rng(1).standard_normal(200_000)
    values[123] = 1e4
    low, high = ranges_of(PercentileCalibrator(99.99), values)
    true_low, true_high = np.percentile(values, [0.01, 99.99])
    assert high < 10 and low > -10
    # Log-linear bins keep 1.6 % resolution next to the outlier (linear bins would be 8 wide).
    assert high == pytest.approx(true_high, rel=0.02) and low == pytest.approx(true_low, rel=0.02)
    sym_low, sym_high = ranges_of(PercentileCalibrator(99.99, symmetric=True), values)
    assert sym_low == -sym_high and sym_high == pytest.approx(np.percentile(np.abs(values), 99.99), rel=0.02)


def test_percentile_100_is_min_max_and_skewed_data_is_asymmetric():
    values = np.random.default_rng(2).exponential(2.0, 50_000) - 1.0
    assert ranges_of(PercentileCalibrator(100), values) == (values.min(), values.max())
    low, high = ranges_of(PercentileCalibrator(99.0), values)
    np.testing.assert_allclose((low, high), np.percentile(values, [1, 99]), rtol=0.02)
    assert high > 5 * -low


# --- entropy ----------------------------------------------------------------------------------

def test_entropy_on_relu_with_long_tail_cuts_the_tail_but_keeps_the_bulk():
    values = np.maximum(np.random.default_rng(3).standard_t(3, 200_000), 0)  # half zeros, heavy tail
    calibrator = EntropyCalibrator()
    for batch in np.array_split(values, 20):
        calibrator.collect("relu", batch)
    low, high = calibrator.compute_ranges()["relu"]
    assert low == 0.0  # non-negative tensor: (0, threshold), 256 levels
    assert np.percentile(values[values > 0], 99.9) < high < 0.8 * values.max()


def test_entropy_is_not_fooled_by_zeros_or_by_a_range_far_from_zero():
    rng = np.random.default_rng(9)
    relu = np.maximum(rng.standard_normal(100_000), 0)
    assert ranges_of(EntropyCalibrator(), relu)[1] > 3.5  # the zero spike alone used to pull it to ~2
    shifted = rng.uniform(1, 8, 10_000)
    assert ranges_of(EntropyCalibrator(), shifted)[1] > 7.9  # not everything clipped into one bin


def test_entropy_signed_data_gets_a_symmetric_range_inside_the_extremes():
    values = np.random.default_rng(4).standard_normal(100_000)
    low, high = ranges_of(make_calibrator("kl"), values)
    assert low == -high
    assert 3.5 < high <= np.abs(values).max()


def test_entropy_streaming_equals_one_big_batch():
    batches = growing_batches(200, seed=5)
    assert ranges_of(EntropyCalibrator(), *batches) == ranges_of(EntropyCalibrator(), np.concatenate(batches))


def reference_kl(counts, keep, levels):
    """KL(P || Q) of keeping ``keep`` bins, computed the slow, direct way (inf where Q is 0 and P is not)."""
    p = counts[:keep].astype(np.float64)
    p[-1] += counts[keep:].sum()
    q = np.zeros(keep)
    bounds = [g * keep // levels for g in range(levels + 1)]
    for start, stop in zip(bounds[:-1], bounds[1:]):
        group = counts[start:stop]
        if (group > 0).any():
            q[start:stop] = np.where(group > 0, group.sum() / (group > 0).sum(), 0.0)
    if ((p > 0) & (q == 0)).any():
        return math.inf
    p, q = p / counts.sum(), q / counts.sum()  # Q keeps only the unclipped mass
    used = p > 0
    return float(np.sum(p[used] * np.log(p[used] / q[used])))


@pytest.mark.parametrize("seed", range(3))
def test_vectorized_kl_search_finds_the_reference_minimum(seed):
    rng = np.random.default_rng(seed)
    counts = rng.poisson(200 * np.exp(-np.arange(256) / 30.0))
    counts[rng.integers(0, 256, 40)] = 0
    levels = 16
    chosen = kl_threshold_bins(counts, levels)
    scores = [reference_kl(counts, keep, levels) for keep in range(levels, counts.size + 1)]
    assert reference_kl(counts, chosen, levels) == pytest.approx(min(scores), abs=1e-9)
    assert chosen < counts.size


# --- bounded memory ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_state_does_not_grow_with_the_number_of_batches(method):
    calibrator = make(method)
    batches = growing_batches(1000, seed=6, size=64)
    for batch in batches[:10]:
        calibrator.collect_batch({"x": batch, "y": np.abs(batch)})
    nbytes, pickled = calibrator.nbytes, len(pickle.dumps(calibrator))
    for batch in batches[10:]:
        calibrator.collect_batch({"x": batch, "y": np.abs(batch)})
    assert calibrator.nbytes == nbytes
    assert abs(len(pickle.dumps(calibrator)) - pickled) < 64  # every array and number it holds
    assert nbytes < 100_000


# --- awkward ranges ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_zero_and_constant_tensors_get_small_valid_ranges(method):
    assert ranges_of(make(method), np.zeros((3, 5)), np.zeros(4)) == (0.0, ZERO_RANGE_WIDTH)
    assert ranges_of(make(method), np.full(100, 3.0)) == (0.0, 3.0)
    assert ranges_of(make(method), np.full(100, -0.5)) in {(-0.5, 0.0), (-0.5, 0.5)}


@pytest.mark.parametrize("method", METHODS)
def test_negative_only_tensor_range_reaches_zero(method):
    values = -np.random.default_rng(7).uniform(1, 8, 10_000)
    low, high = ranges_of(make(method), values)
    assert low < -7.9 and 0.0 <= high
    if method in ("minmax", "percentile"):
        assert high == 0.0
    else:
        assert high == -low
    if method == "minmax":
        assert low == values.min()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("scale", [1e6, 1e-8])
def test_huge_and_tiny_ranges_keep_their_scale(method, scale):
    values = np.random.default_rng(8).standard_normal(20_000) * scale
    low, high = ranges_of(make(method), values)
    assert 2 * scale < high <= np.abs(values).max() and -np.abs(values).max() <= low < -2 * scale


def test_float32_overflowing_values_give_a_float32_finite_range():
    low, high = ranges_of(MinMaxCalibrator(), np.array([-1e308, 1e308]))
    assert np.isfinite(np.float32(high) - np.float32(low))


@pytest.mark.parametrize("low, high, expected", [
    (1, 6, (0, 6)), (-8, -1, (-8, 0)), (-2, 3, (-2, 3)), (0, 0, (0, ZERO_RANGE_WIDTH)),
    (1e-8, 2e-8, (0, 2e-8))])
def test_valid_range_widens_to_zero(low, high, expected):
    assert valid_range(low, high) == expected


# --- bad data and bad options -----------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_raise_naming_the_tensor(method, bad):
    calibrator = make(method)
    calibrator.collect("conv1/Relu:0", np.ones(10))
    with pytest.raises(CalibrationDataError, match=r"'conv1/Relu:0'.*clean the calibration data"):
        calibrator.collect("conv1/Relu:0", np.array([1.0, bad, 2.0], dtype=np.float32))


def test_dtypes_empty_batches_and_no_data():
    calibrator = MinMaxCalibrator()
    calibrator.collect("ints", np.arange(-3, 5, dtype=np.int8))
    calibrator.collect("half", np.array([0.5, 2.0], dtype=np.float16))
    calibrator.collect("empty", np.zeros((0, 3)))
    assert calibrator.compute_ranges() == {"ints": (-3.0, 4.0), "half": (0.0, 2.0)}
    with pytest.raises(CalibrationDataError, match="dtype"):
        calibrator.collect("s", np.array(["a"]))
    with pytest.raises(CalibrationDataError, match="no calibration values"):
        PercentileCalibrator().compute_ranges()


def test_make_calibrator_maps_names_and_rejects_bad_methods_and_options():
    assert set(CALIBRATORS) == {"minmax", "percentile", "kl", "entropy"}
    assert type(make_calibrator("KL")) is type(make_calibrator("entropy")) is EntropyCalibrator
    assert make_calibrator("percentile", percentile=99.9).percentile == 99.9
    with pytest.raises(ConfigurationError, match="minmax, percentile, kl, entropy") as info:
        make_calibrator("mse")
    assert isinstance(info.value, ValueError) and isinstance(info.value, KQuantError)
    with pytest.raises(ConfigurationError, match="takes no option percentile"):
        make_calibrator("minmax", percentile=99)
    with pytest.raises(ConfigurationError, match="percentile must be in"):
        make_calibrator("percentile", percentile=30)
    with pytest.raises(ConfigurationError, match="levels must be in"):
        EntropyCalibrator(bits=8, levels=256)


# --- property ---------------------------------------------------------------------------------

finite_arrays = st.one_of(
    hnp.arrays(np.float32, hnp.array_shapes(max_dims=2, max_side=40),
               elements=st.floats(allow_nan=False, allow_infinity=False, width=32)),
    hnp.arrays(np.float64, hnp.array_shapes(max_dims=1, max_side=40),
               elements=st.floats(allow_nan=False, allow_infinity=False)),
    hnp.arrays(np.float16, hnp.array_shapes(max_dims=1, max_side=40),
               elements=st.floats(allow_nan=False, allow_infinity=False, width=16)),
    hnp.arrays(np.int32, hnp.array_shapes(max_dims=1, max_side=40)))


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(finite_arrays, min_size=1, max_size=3),
       method=st.sampled_from(METHODS))
def test_every_range_contains_zero_is_finite_and_has_width(batches, method):
    low, high = ranges_of(make(method), *batches)
    assert math.isfinite(low) and math.isfinite(high)
    assert low <= 0.0 <= high and low < high
    assert np.isfinite(np.float32(high) - np.float32(low)) and np.float32(high) > np.float32(low)


# --- insert_logging logs ----------------------------------------------------------------------

LOG = """\
2024-05-01 10:00:01.123: I tensorflow/core/platform/cpu_feature_guard.cc:182] This TensorFlow binary is optimized
I0501 10:00:02.000 logging_ops.cc:79] ;conv1/Conv2D_eightbit_requant_range__print__;__requant_min_max:[-3.84][12.5]
;conv2/Conv2D_eightbit_requant_range__print__;__requant_min_max:[0][2.67806506]
Processed 100 images. (Top1 accuracy, Top5 accuracy) = (0.7386, 0.9168)
;conv1/Conv2D_eightbit_requant_range__print__;__requant_min_max:[-4.5][11.25]
;conv1/Conv2D_eightbit_requant_range__print__;__requant_min_max:[-2.0][13.0]
;conv2/Conv2D_eightbit_requant_range__print__;__requant_min_max:[0.5][2.5]
;broken_a__print__;__requant_min_max:[-1.0]
;broken_b__print__;__requant_min_max:[abc][2.0]
;broken_c__print__;__requant_min_max:[-1.0][2.0
;pool/MaxPool_eightbit_max_conv0/Relu__print__;__max:[5.72005272];pool/MaxPool_eightbit_min_conv0/Relu__print__;__min:[-0]
;pool/MaxPool_eightbit_max_conv0/Relu__print__;__max:[6.5];pool/MaxPool_eightbit_min_conv0/Relu__print__;__min:[-0.25]
;dense/MatMul__max:[3.5]
;dense/MatMul__min:[-1.5]
;fc_eightbit_requant_range__print__;__requant_min:[-7.0]
;fc_eightbit_requant_range__print__;__requant_max:[9.0]
Iteration time: 1.3564 ms
"""


def test_min_max_log_with_junk_and_repeats():
    ranges = read_min_max_log(LOG)
    assert ranges == {
        "conv1/Conv2D_eightbit_requant_range": (-4.5, 13.0),  # 3 batches: TF picks min of mins, max of maxes
        "conv2/Conv2D_eightbit_requant_range": (0.0, 2.67806506),  # widened to 0
        "fc_eightbit_requant_range": (-7.0, 9.0),
    }


def test_min_and_max_only_logs():
    assert read_max_log(LOG) == {"pool/MaxPool_eightbit_max_conv0/Relu": 6.5, "dense/MatMul": 3.5}
    assert read_min_log(LOG) == {"pool/MaxPool_eightbit_min_conv0/Relu": -0.25, "dense/MatMul": -1.5}


def test_many_repeats_follow_tf_freeze_requantization_ranges_percentiles(tmp_path):
    lines = [f";t__print__;__requant_min_max:[{-k}][{k}]" for k in range(1, 41)]  # 40 batches
    path = tmp_path / "calib.log"
    path.write_text("\n".join(reversed(lines)) + "\n")
    # TF: sorted mins at round(40 * 0.05) = 2, sorted maxes at round(40 * 0.95) = 38.
    assert read_min_max_log(path) == {"t": (-38.0, 39.0)}
    assert read_min_max_log(str(path), min_percentile=0, max_percentile=0) == {"t": (-40.0, 40.0)}
    assert read_max_log("\n".join(f";m__print__;__max:[{k}]" for k in range(1, 41))) == {"m": 39.0}


def test_logs_without_usable_lines_or_with_nan_raise(tmp_path):
    junk = tmp_path / "junk.log"
    junk.write_text("nothing here\n;x__print__;__requant_min_max:[1]\n")
    with pytest.raises(CalibrationDataError, match="no '__requant_min_max"):
        read_min_max_log(junk)
    with pytest.raises(CalibrationDataError, match="no '__min:"):
        read_min_log(";a__print__;__max:[1]")
    with pytest.raises(CalibrationDataError, match="missing.log does not exist"):
        read_min_max_log(tmp_path / "missing.log")
    with pytest.raises(CalibrationDataError, match="'a'.*NaN"):
        read_min_max_log(";a__print__;__requant_min_max:[nan][1]\n")

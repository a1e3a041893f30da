"""Shared fixtures: tiny deterministic models in every format kquant reads, and output comparison."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import kquant  # first: sets up TensorFlow with oneDNN on
import tensorflow as tf

TOLERANCE = 1e-5
BATCH_SIZES = (1, 5)  # two batch sizes through one frozen graph: the batch dimension must stay dynamic


def randomize_weights(model, seed: int) -> None:
    """Give every weight a seeded random value (BatchNorm variances positive), so no layer is an identity."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        value = rng.normal(0.0, 0.5, size=tuple(weight.shape)).astype(np.float32)
        if "variance" in weight.name:
            value = np.abs(value) + 0.5
        weight.assign(value)


def build_conv_model(keras, seed: int = 0):
    """image (28×28×1) -> Conv2D, BatchNorm, Dropout, Dense softmax ``probs`` (5 classes); functional."""
    keras.utils.set_random_seed(seed)
    image = keras.Input((28, 28, 1), name="image")
    x = keras.layers.Conv2D(2, 3, activation="relu")(image)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.5)(x)
    probs = keras.layers.Dense(5, activation="softmax", name="probs")(x)
    model = keras.Model(image, probs)
    randomize_weights(model, seed)
    return model


def build_multi_io_model(keras, seed: int = 1):
    """image (8×8×1) and meta (3,) -> ``label`` (4, softmax) and ``score`` (1); ``score`` alone needs only meta."""
    keras.utils.set_random_seed(seed)
    image = keras.Input((8, 8, 1), name="image")
    meta = keras.Input((3,), name="meta")
    features = keras.layers.Concatenate()([keras.layers.Flatten()(image), meta])
    label = keras.layers.Dense(4, activation="softmax", name="label")(keras.layers.Dense(6, activation="relu")(features))
    score = keras.layers.Dense(1, name="score")(meta)
    model = keras.Model([image, meta], [label, score])
    randomize_weights(model, seed)
    return model


def build_dense_model(keras, seed: int = 2):
    """A Sequential of two Dense layers on 6 features: its frozen constants are exactly its weights."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(3)])
    randomize_weights(model, seed)
    return model


def with_zero_image(meta):
    """Both inputs of the multi-input model for a ``meta`` batch; its ``score`` ignores the image."""
    return [np.zeros((len(meta), 8, 8, 1), np.float32), meta]


def run_frozen(frozen, *arrays) -> list[np.ndarray]:
    with kquant.GraphRunner(frozen.graph_def, frozen.input_names, frozen.output_names) as runner:
        return runner(*arrays)


def random_inputs(shapes, batch: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed + batch)
    return [rng.standard_normal((batch, *shape)).astype(np.float32) for shape in shapes]


def check_matches(frozen, reference, input_shapes, batch_sizes=BATCH_SIZES) -> None:
    """Run each batch size through ``frozen`` and ``reference(*arrays)``: same shapes, max abs diff <= TOLERANCE."""
    assert [spec.shape[0] for spec in frozen.inputs] == [None] * len(frozen.inputs)
    for batch in batch_sizes:
        arrays = random_inputs(input_shapes, batch)
        got = run_frozen(frozen, *arrays)
        want = [np.asarray(w) for w in tf.nest.flatten(reference(*arrays))]
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            assert np.abs(g - w).max() <= TOLERANCE


def keras_reference(model):
    """``model`` called in inference mode on positional arrays (one input: the array itself)."""
    return lambda *arrays: model(list(arrays) if len(arrays) > 1 else arrays[0], training=False)


@pytest.fixture(scope="session")
def work_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kquant")


@pytest.fixture(scope="session")
def keras3():
    import keras

    return keras


@pytest.fixture(scope="session")
def tf_keras():
    import tf_keras

    return tf_keras


@pytest.fixture(scope="session")
def conv_model(keras3):
    return build_conv_model(keras3)


@pytest.fixture(scope="session")
def multi_io_model(keras3):
    return build_multi_io_model(keras3)


@pytest.fixture(scope="session")
def tf_keras_multi_io_model(tf_keras):
    return build_multi_io_model(tf_keras)


@pytest.fixture(scope="session")
def conv_pb(conv_model, work_dir) -> Path:
    """The conv model frozen by kquant and saved as a binary .pb."""
    return kquant.freeze(conv_model).save(work_dir / "conv.pb")


@pytest.fixture(scope="session")
def keras_files(multi_io_model, tf_keras_multi_io_model, work_dir) -> dict:
    """The multi-input/output model saved by each Keras in each file format: name -> (path, model)."""
    files = {}
    for name, model in (("keras3", multi_io_model), ("tf_keras", tf_keras_multi_io_model)):
        for suffix in (".keras", ".h5"):
            path = work_dir / f"{name}_multi_io{suffix}"
            model.save(path)
            files[f"{name}{suffix}"] = (path, model)
    return files


@dataclasses.dataclass
class TF1Graph:
    """A TF1 graph with variables, its checkpoint and outputs computed by the original session."""

    pb: Path
    pbtxt: Path
    checkpoint: str
    frozen_pb: Path
    frozen_pbtxt: Path
    cases: list  # (x, [y, z]) per batch size


@pytest.fixture(scope="session", params=[False, True], ids=["ref_variables", "resource_variables"])
def tf1_graph(request, work_dir) -> TF1Graph:
    """x (?, 4) -> y = relu(x @ w + b), z = 2y, saved with tf.compat.v1.train.Saver, plus TF's own frozen copy."""
    tf1 = tf.compat.v1
    use_resource = request.param
    out = work_dir / ("tf1_resource" if use_resource else "tf1_ref")
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(3)
        x = tf1.placeholder(tf.float32, [None, 4], name="x")
        w = tf1.get_variable("w", [4, 3], use_resource=use_resource)
        b = tf1.get_variable("b", [3], initializer=tf1.random_normal_initializer(), use_resource=use_resource)
        y = tf.nn.relu(tf.matmul(x, w) + b, name="y")
        z = tf.identity(y * 2.0, name="z")
        saver = tf1.train.Saver()
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            cases = []
            for batch in BATCH_SIZES:
                (inputs,) = random_inputs([(4,)], batch)
                cases.append((inputs, session.run([y, z], {x: inputs})))
            checkpoint = saver.save(session, str(out / "model.ckpt"))
            frozen = tf1.graph_util.convert_variables_to_constants(session, graph.as_graph_def(), ["y", "z"])
    return TF1Graph(
        pb=Path(tf.io.write_graph(graph.as_graph_def(), str(out), "graph.pb", as_text=False)),
        pbtxt=Path(tf.io.write_graph(graph.as_graph_def(), str(out), "graph.pbtxt", as_text=True)),
        checkpoint=checkpoint,
        frozen_pb=Path(tf.io.write_graph(frozen, str(out), "frozen.pb", as_text=False)),
        frozen_pbtxt=Path(tf.io.write_graph(frozen, str(out), "frozen.pbtxt", as_text=True)),
        cases=cases,
    )


@pytest.fixture(scope="session")
def keras3_saved_model(multi_io_model, work_dir) -> Path:
    """``model.export()`` of the Keras 3 multi-input/output model (signatures ``serve`` and ``serving_default``)."""
    path = work_dir / "keras3_saved_model"
    multi_io_model.export(str(path), verbose=False)
    return path


@pytest.fixture(scope="session")
def tf_keras_saved_model(tf_keras_multi_io_model, work_dir) -> Path:
    """tf.saved_model.save of the tf_keras model, with ``serving_default`` and a ``score_only`` signature."""
    model = tf_keras_multi_io_model
    specs = [tf.TensorSpec((None, 8, 8, 1), tf.float32, name="image"), tf.TensorSpec((None, 3), tf.float32, name="meta")]

    @tf.function(input_signature=specs)
    def serve(image, meta):
        label, score = model([image, meta], training=False)
        return {"label": label, "score": score}

    @tf.function(input_signature=specs[1:])
    def score_only(meta):
        image = tf.zeros([tf.shape(meta)[0], 8, 8, 1])
        return {"score": model([image, meta], training=False)[1]}

    path = work_dir / "tf_keras_saved_model"
    tf.saved_model.save(model, str(path), signatures={"serving_default": serve, "score_only": score_only})
    return path


def save_conv_model_files(root: Path, samples: int):
    """``build_conv_model`` saved as root/m.keras and ``samples`` random images as root/calib.npy: (model, images)."""
    import keras

    model = build_conv_model(keras)
    model.save(root / "m.keras")
    images = np.random.default_rng(0).random((samples, 28, 28, 1), np.float32)
    np.save(root / "calib.npy", images)
    return model, images


@pytest.fixture(scope="session")
def cli_files(tmp_path_factory) -> Path:
    """A small conv model saved as m.keras and 8 calibration samples as calib.npy, for CLI quantize runs."""
    root = tmp_path_factory.mktemp("cli")
    save_conv_model_files(root, 8)
    return root


def cli_quantize(files: Path, out, *more) -> int:
    """``kquant quantize m.keras --calib calib.npy -o out`` with ``more`` options; the exit code."""
    from kquant.cli import main

    return main(["quantize", str(files / "m.keras"), "--calib", str(files / "calib.npy"), "-o", str(out),
                 "--no-progress", *more])

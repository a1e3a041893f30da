"""Calibration samples from files (kquant/sources.py): folders of JPEG/PNG images and TFRecords of encoded images
or raw floats, read a batch at a time; and ``kquant quantize`` calibrating and tuning on them."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kquant
from kquant.cli import main
from kquant.errors import CalibrationDataError, ConfigurationError
from kquant.graph import TensorSpec
from kquant.sources import ImageFolder, Preprocessing, TFRecords, open_source

RGB = (TensorSpec("image:0", "float32", (None, 8, 8, 3)),)


def write_images(directory, count, size=(10, 12), channels=3, seed=0):
    """``count`` random images alternately as PNG and JPEG; returns the PNG pixels by file name."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = {}
    for i in range(count):
        image = rng.integers(0, 256, (*size, channels), dtype=np.uint8)
        if i % 2:
            (directory / f"{i:03d}.jpg").write_bytes(tf.io.encode_jpeg(image).numpy())
        else:
            (directory / f"{i:03d}.png").write_bytes(tf.io.encode_png(image).numpy())
            pixels[f"{i:03d}.png"] = image
    return pixels


def example(**features):
    def feature(value):
        if isinstance(value, bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        return tf.train.Feature(float_list=tf.train.FloatList(value=np.ravel(value).tolist()))
    return tf.train.Example(features=tf.train.Features(feature={k: feature(v) for k, v in features.items()}))


def test_image_folder_streams_resized_scaled_batches(tmp_path):
    pixels = write_images(tmp_path / "images" / "sub", 5, size=(8, 8))
    source = open_source(tmp_path / "images", RGB, batch_size=2, preprocessing=Preprocessing(scale=1 / 255))
    assert isinstance(source, ImageFolder) and len(source) == 5
    batches = list(source)
    assert [b.shape for b in batches] == [(2, 8, 8, 3), (2, 8, 8, 3), (1, 8, 8, 3)]
    np.testing.assert_allclose(batches[0][0], pixels["000.png"] / 255, rtol=1e-6)  # PNG is lossless
    assert len(list(source)) == 3  # re-iterable: calibration may pass twice


def test_resize_gray_mean_std_and_keras_preprocessing(tmp_path):
    write_images(tmp_path, 2, size=(20, 16))
    gray = ImageFolder(tmp_path, (8, 8), "gray", Preprocessing(1.0, (100.0,), (50.0,)))
    (batch,) = list(gray)
    assert batch.shape == (2, 8, 8, 1) and batch.min() >= -2.0 and batch.max() <= 3.1
    mobilenet = ImageFolder(tmp_path, (8, 8), "rgb", Preprocessing(keras_preprocess="mobilenet_v2"))
    (batch,) = list(mobilenet)
    assert batch.min() >= -1.0 and batch.max() <= 1.0 and batch.min() < -0.5  # [-1, 1], as mobilenet_v2 expects
    with pytest.raises(ConfigurationError, match="no Keras application.*mobilenet_v2"):
        Preprocessing(keras_preprocess="mobilenet_v9")


def test_tfrecords_of_encoded_images_and_raw_floats(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    floats = rng.standard_normal((3, 6)).astype(np.float32)
    with tf.io.TFRecordWriter(str(tmp_path / "data.tfrecord")) as writer:
        for image, row in zip(images, floats):
            writer.write(example(image=tf.io.encode_png(image).numpy(), row=row).SerializeToString())
    encoded = open_source(tmp_path / "data.tfrecord", RGB, batch_size=2, feature="image")
    assert isinstance(encoded, TFRecords)
    np.testing.assert_array_equal(np.concatenate(list(encoded)), images.astype(np.float32))
    raw = open_source(tmp_path, (TensorSpec("x:0", "float32", (None, 6)),), feature="row")  # a folder of TFRecords
    np.testing.assert_array_equal(np.concatenate(list(raw)), floats)
    with pytest.raises(CalibrationDataError, match="no feature 'label'.*image, row"):
        list(open_source(tmp_path / "data.tfrecord", RGB, feature="label"))
    with pytest.raises(ConfigurationError, match="--feature"):
        open_source(tmp_path / "data.tfrecord", RGB)


def test_a_broken_image_is_named(tmp_path):
    write_images(tmp_path, 1, size=(8, 8))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(CalibrationDataError, match="broken.png is not a readable JPEG/PNG"):
        list(ImageFolder(tmp_path, (8, 8)))


@pytest.fixture(scope="module")
def cnn_file(tmp_path_factory):
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv1")(image)
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv2")(x)
    probs = keras.layers.Dense(3, activation="softmax", name="probs")(keras.layers.Flatten()(x))
    path = tmp_path_factory.mktemp("cnn") / "cnn.keras"
    keras.Model(image, probs).save(path)
    return path


def test_cli_quantizes_on_an_image_folder_and_tunes_with_labels(cnn_file, tmp_path, capfd):
    write_images(tmp_path / "images", 6, size=(12, 12))
    np.save(tmp_path / "labels.npy", np.zeros(6, np.int64))
    argv = ["quantize", str(cnn_file), "--calib", str(tmp_path / "images"), "--scale", "1/255", "--batch-size", "4",
            "-o", str(tmp_path / "q.pb"), "--no-progress"]
    assert main(argv) == 0 and (tmp_path / "q.pb").exists()
    assert main(argv + ["--labels", str(tmp_path / "labels.npy"), "--max-accuracy-drop", "0.5"]) == 0
    assert "accuracy-aware tuning:" in capfd.readouterr().out
    np.save(tmp_path / "labels.npy", np.zeros(5, np.int64))
    assert main(argv + ["--labels", str(tmp_path / "labels.npy")]) == 2
    assert "5 labels for 6 --calib samples" in capfd.readouterr().err


def test_cli_inputs_and_outputs_by_node_name_or_signature_key(tmp_path, capfd):
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="features")
        with tf.compat.v1.variable_scope("head"):
            logits = tf.matmul(x, tf.compat.v1.get_variable("w", [4, 3]))
            with tf.name_scope("predictions"):
                probs = tf.nn.softmax(logits, name="probabilities")
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.saved_model.simple_save(session, str(tmp_path / "sm"), {"x": x}, {"probabilities": probs, "logits": logits})
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32))
    for outputs in ("head/predictions/probabilities", "probabilities"):
        out = tmp_path / f"{outputs.replace('/', '_')}.pb"
        assert main(["quantize", str(tmp_path / "sm"), "--inputs", "features", "--outputs", outputs,
                     "--calib", str(tmp_path / "calib.npy"), "-o", str(out), "--no-progress"]) == 0
        summary = kquant.summarize_graph(out)
        assert [o.name for o in summary.outputs] == [outputs] and [i.name for i in summary.inputs] == ["features"]
    assert main(["quantize", str(tmp_path / "sm"), "--outputs", "head/predictions/probs", "--calib",
                 str(tmp_path / "calib.npy"), "-o", str(tmp_path / "bad.pb"), "--no-progress"]) == 2
    assert "head/predictions/probs" in capfd.readouterr().err


def test_reading_shows_progress_unless_told_not_to(tmp_path, capfd):
    write_images(tmp_path, 3, size=(8, 8))
    list(ImageFolder(tmp_path, (8, 8), progress=True))
    assert "reading images" in capfd.readouterr().err
    list(ImageFolder(tmp_path, (8, 8)))
    assert "reading images" not in capfd.readouterr().err

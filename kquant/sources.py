"""Calibration and evaluation samples read from files, a batch at a time: a folder of JPEG/PNG images, TFRecord
files (encoded images or raw float features), or .npy/.npz arrays. Each source is re-iterable and never holds
more than one batch, so a dataset of any size calibrates in bounded memory."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from kquant.errors import CalibrationDataError, ConfigurationError
from kquant.files import checked_data_path, load_arrays

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".record")
COLORS = {"rgb": 3, "gray": 1}


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """What the model expects of an image in [0, 255]: ``(x * scale - mean) / std``, or a Keras application's
    ``preprocess_input`` (``keras_preprocess="mobilenet_v2"``: keras.applications.mobilenet_v2.preprocess_input)."""

    scale: float = 1.0
    mean: tuple = ()
    std: tuple = ()
    keras_preprocess: str | None = None

    def __post_init__(self):
        if self.keras_preprocess:
            self.keras_function()  # refuse an unknown name before any file is read

    def keras_function(self):
        import keras

        name = self.keras_preprocess
        module = getattr(keras.applications, name, None)
        if module is None or not hasattr(module, "preprocess_input"):
            known = sorted(n for n in dir(keras.applications) if hasattr(getattr(keras.applications, n), "preprocess_input"))
            raise ConfigurationError(f"'{name}' is no Keras application with a preprocess_input; use one of {', '.join(known)}")
        return importlib.import_module(module.__name__).preprocess_input

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if self.keras_preprocess:
            return np.asarray(self.keras_function()(images.astype(np.float32)), np.float32)
        images = images.astype(np.float32) * np.float32(self.scale)
        if self.mean:
            images = images - np.asarray(self.mean, np.float32)
        if self.std:
            images = images / np.asarray(self.std, np.float32)
        return images


class _Batched:
    """Rows from ``_rows()`` stacked ``batch_size`` at a time."""

    batch_size: int

    def __iter__(self):
        rows = []
        for row in self._rows():
            rows.append(row)
            if len(rows) == self.batch_size:
                yield np.stack(rows)
                rows = []
        if rows:
            yield np.stack(rows)


class ImageFolder(_Batched):
    """JPEG/PNG files under ``directory`` (sorted, subfolders included), decoded by TensorFlow, resized to
    ``image_size`` (height, width), ``color`` "rgb" or "gray", and scaled by ``preprocessing``."""

    def __init__(self, directory, image_size, color="rgb", preprocessing=Preprocessing(), batch_size=64, progress=False):
        self.files = sorted(p for p in Path(directory).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.files:
            raise CalibrationDataError(f"{directory} holds no .jpg/.jpeg/.png image; pass a folder of images")
        self.decode = _ImageDecoder(image_size, color)
        self.preprocessing = preprocessing
        self.batch_size = batch_size
        self.progress = progress

    def __len__(self) -> int:
        return len(self.files)

    def _rows(self):
        for path in tqdm(self.files, desc="reading images", unit="image", disable=not self.progress, leave=False):
            yield self.preprocessing(self.decode(path.read_bytes(), str(path)))


class TFRecords(_Batched):
    """One feature of the tf.train.Example records in TFRecord ``files``: an encoded JPEG/PNG image (decoded and
    preprocessed as by ImageFolder) or raw floats reshaped to ``shape``."""

    def __init__(self, files, feature, shape, image_size=None, color="rgb", preprocessing=Preprocessing(), batch_size=64,
                 progress=False):
        self.files = [str(f) for f in files]
        self.feature = feature
        self.shape = tuple(shape)
        self.decode = _ImageDecoder(image_size, color) if image_size else None
        self.preprocessing = preprocessing
        self.batch_size = batch_size
        self.progress = progress

    def _rows(self):
        import tensorflow as tf

        with tqdm(desc="reading records", unit="record", disable=not self.progress, leave=False) as bar:
            for path in self.files:
                for index, record in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
                    bar.update(1)
                    yield self._value(tf.train.Example.FromString(record), f"{path} record {index}")

    def _value(self, example, where):
        features = example.features.feature
        if self.feature not in features:
            raise CalibrationDataError(f"{where} has no feature '{self.feature}'; its features are "
                                       f"{', '.join(sorted(features))} (choose one with --feature)")
        value = features[self.feature]
        kind = value.WhichOneof("kind")
        if kind == "bytes_list":
            if self.decode is None:
                raise CalibrationDataError(f"feature '{self.feature}' holds encoded images but the model input is not "
                                           "an image of fixed size; pass --image-size H,W")
            return self.preprocessing(self.decode(value.bytes_list.value[0], where))
        numbers = np.asarray(value.float_list.value if kind == "float_list" else value.int64_list.value, np.float32)
        if numbers.size != int(np.prod(self.shape)):
            raise CalibrationDataError(f"feature '{self.feature}' of {where} holds {numbers.size} values but the model "
                                       f"input takes {int(np.prod(self.shape))} {list(self.shape)}")
        return numbers.reshape(self.shape)


class _ImageDecoder:
    def __init__(self, image_size, color):
        if color not in COLORS:
            raise ConfigurationError(f"color {color!r} is not one of {', '.join(COLORS)}")
        if not image_size or len(image_size) != 2 or min(image_size) < 1:
            raise ConfigurationError(f"image size {image_size} is not a height and a width; pass e.g. --image-size 224,224")
        self.size = tuple(int(s) for s in image_size)
        self.channels = COLORS[color]

    def __call__(self, data: bytes, where: str) -> np.ndarray:
        import tensorflow as tf

        try:
            image = tf.io.decode_image(data, channels=self.channels, expand_animations=False)
        except (tf.errors.InvalidArgumentError, ValueError) as exc:
            raise CalibrationDataError(f"{where} is not a readable JPEG/PNG image; remove or replace it") from exc
        if tuple(image.shape[:2]) != self.size:
            image = tf.image.resize(image, self.size)
        return image.numpy().astype(np.float32)


def open_source(path, inputs, *, batch_size=64, image_size=None, color=None, preprocessing=Preprocessing(), feature=None,
                progress=False):
    """The samples at ``path`` for a graph with ``inputs`` (TensorSpecs): a folder of images, TFRecord file(s) (a
    file, or a folder of them, with ``feature``), a .npy array or a .npz (one array per input name). The image
    size and color default to the single input's shape ``[?, H, W, C]``."""
    path = checked_data_path(path, error=CalibrationDataError)
    if path.suffix.lower() in (".npy", ".npz"):
        return load_arrays(path, error=CalibrationDataError)
    spec = inputs[0]
    if len(inputs) != 1:
        raise ConfigurationError(f"image and TFRecord samples feed one input; the model has {len(inputs)}: pass a .npz")
    shape = spec.shape[1:] if spec.shape else None
    if image_size is None and shape and len(shape) == 3 and None not in shape[:2]:
        image_size = shape[:2]
    if color is None:
        color = "gray" if shape and len(shape) == 3 and shape[2] == 1 else "rgb"
    records = ([path] if path.is_file() else
               sorted(p for p in path.iterdir() if p.suffix.lower() in TFRECORD_SUFFIXES) if path.is_dir() else [])
    if records or path.suffix.lower() in TFRECORD_SUFFIXES:
        if not feature:
            raise ConfigurationError(f"{path} holds TFRecords: name the feature to read with --feature NAME")
        if not shape or None in shape:
            raise ConfigurationError(f"input {spec.node} has no fixed shape {spec.shape}; TFRecord samples need one")
        return TFRecords(records, feature, shape, image_size if len(shape) == 3 else None, color, preprocessing, batch_size,
                         progress)
    if path.is_dir():
        if image_size is None:
            raise ConfigurationError(f"input {spec.node} is not an image of fixed size; pass --image-size H,W")
        return ImageFolder(path, image_size, color, preprocessing, batch_size, progress)
    raise CalibrationDataError(f"{path} is not a .npy/.npz file, a TFRecord file or a folder of images or TFRecords")

"""Shared, session-scoped trained models on real data for the int8 tests (trained once, ~30 s)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "keras"


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def fashion():
    """(Keras 3 CNN trained 2 epochs on 20k images, train images, test images, test labels)."""
    model, (x, _), (xt, yt) = load_example("fashion_mnist_cnn").train(train_samples=20000, epochs=2)
    return model, x, xt, yt


@pytest.fixture(scope="session")
def fashion_int8(fashion):
    import kquant

    model, x, _, _ = fashion
    return kquant.quantize(model, x[:1000], progress=False)


@pytest.fixture(scope="session")
def wide_deep():
    model, (x, _), (xt, yt) = load_example("wide_deep_adult").train(epochs=3)
    return model, x, xt, yt


@pytest.fixture(scope="session")
def wide_deep_int8(wide_deep):
    import kquant

    model, x, _, _ = wide_deep
    return kquant.quantize(model, {k: v[:2000] for k, v in x.items()}, progress=False)


@pytest.fixture(scope="session")
def faces():
    from kquant import datasets

    return datasets.lfw_faces()


@pytest.fixture(scope="session")
def fer_int8(faces):
    """The pretrained fer model quantized on the first 100 faces (the other 100 stay unseen)."""
    import kquant
    from kquant import datasets

    return kquant.quantize(datasets.fer_model_path(), faces[:100], progress=False)


@pytest.fixture
def rng():
    return np.random.default_rng(0)

"""Fashion-MNIST CNN (conv + BatchNorm + ReLU blocks, pooling, dense): train, quantize in one line, benchmark.

    python examples/keras/fashion_mnist_cnn.py [--train-samples 20000] [--epochs 2] [--runs 100] [--quick]
"""

from __future__ import annotations

import argparse

import kquant
from kquant import datasets


def build_model():
    import keras

    def block(x, filters):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization(momentum=0.9)(x)
        return keras.layers.ReLU()(x)

    inputs = keras.Input((28, 28, 1), name="image")
    x = keras.layers.MaxPooling2D()(block(inputs, 16))
    x = keras.layers.MaxPooling2D()(block(x, 32))
    x = keras.layers.Flatten()(block(x, 32))
    x = keras.layers.Dense(64, activation="relu")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs)


def train(train_samples=20000, epochs=2, seed=0):
    """A trained model and the (train, test) data; about 20 s on 2 cores with the defaults."""
    import keras

    keras.utils.set_random_seed(seed)
    x, y = datasets.fashion_mnist("train")
    model = build_model()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:train_samples], y[:train_samples], epochs=epochs, batch_size=128, verbose=0)
    return model, (x, y), datasets.fashion_mnist("test")


SIZES = {"train_samples": 20000, "epochs": 2, "test_samples": 10000, "runs": 100}
QUICK = {"train_samples": 6000, "epochs": 1, "test_samples": 1000, "runs": 10}


def parse_args(argv=None):
    """The flags; --quick changes only the sizes not given explicitly."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-samples", type=int, help="default 20000 (6000 with --quick)")
    parser.add_argument("--epochs", type=int, help="default 2 (1 with --quick)")
    parser.add_argument("--test-samples", type=int, help="default 10000 (1000 with --quick)")
    parser.add_argument("--runs", type=int, help="timed runs per graph and batch size, default 100 (10 with --quick)")
    parser.add_argument("--quick", action="store_true", help="smaller defaults for the sizes not given")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else SIZES).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv=None):
    args = parse_args(argv)
    model, (x, _), (xt, yt) = train(args.train_samples, args.epochs)
    qmodel = kquant.quantize(model, x[:1000], progress=not args.no_progress)
    print(qmodel.summary())
    print(kquant.benchmark(model, qmodel, data=xt[: args.test_samples], labels=yt[: args.test_samples], runs=args.runs,
                           progress=not args.no_progress))


if __name__ == "__main__":
    main()

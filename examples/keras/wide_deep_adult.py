"""Wide & Deep on the Adult census data (embeddings + MatMul-heavy deep part): train, quantize, benchmark.

    python examples/keras/wide_deep_adult.py [--epochs 3] [--runs 100] [--quick]
"""

from __future__ import annotations

import argparse

import numpy as np

import kquant
from kquant import datasets


def prepare(train, test):
    """Numeric columns standardized with train statistics; categorical columns as offset indices into one table."""
    numeric = np.stack([train[c] for c in datasets.ADULT_NUMERIC], 1)
    mean, std = numeric.mean(0), numeric.std(0) + 1e-6
    vocabularies = [sorted(set(train[c])) for c in datasets.ADULT_CATEGORICAL]
    offsets = np.cumsum([0] + [len(v) + 1 for v in vocabularies[:-1]])

    def encode(split):
        num = (np.stack([split[c] for c in datasets.ADULT_NUMERIC], 1) - mean) / std
        cat = np.stack([
            np.array([index.get(v, len(index)) for v in split[c]]) + offset
            for c, index, offset in zip(datasets.ADULT_CATEGORICAL, ({v: i for i, v in enumerate(voc)} for voc in vocabularies), offsets)
        ], 1)
        return {"numeric": num.astype(np.float32), "categorical": cat.astype(np.int32)}, split["income"]

    vocabulary_size = int(offsets[-1] + len(vocabularies[-1]) + 1)
    return encode(train), encode(test), vocabulary_size


def build_model(vocabulary_size: int, n_numeric: int = len(datasets.ADULT_NUMERIC), n_categorical: int = len(datasets.ADULT_CATEGORICAL)):
    import keras

    numeric = keras.Input((n_numeric,), name="numeric")
    categorical = keras.Input((n_categorical,), name="categorical", dtype="int32")
    embedded = keras.layers.Flatten()(keras.layers.Embedding(vocabulary_size, 8)(categorical))
    deep = keras.layers.Concatenate()([embedded, numeric])
    for units in (256, 128, 64):
        deep = keras.layers.Dense(units, activation="relu")(deep)
    deep = keras.layers.Dense(1)(deep)
    wide_categorical = keras.layers.Flatten()(keras.layers.Embedding(vocabulary_size, 1)(categorical))
    wide = keras.layers.Dense(1)(keras.layers.Concatenate()([wide_categorical, numeric]))
    logit = keras.layers.Add()([deep, wide])
    return keras.Model({"numeric": numeric, "categorical": categorical}, keras.layers.Activation("sigmoid", name="probability")(logit))


def train(epochs=3, seed=0, train_rows=None):
    """A trained model and the encoded (train, test) data; about 15 s on 2 cores with all rows."""
    import keras

    keras.utils.set_random_seed(seed)
    (x, y), (xt, yt), vocabulary_size = prepare(datasets.adult("train"), datasets.adult("test"))
    model = build_model(vocabulary_size)
    model.compile("adam", "binary_crossentropy")
    model.fit({k: v[:train_rows] for k, v in x.items()}, y[:train_rows], epochs=epochs, batch_size=256, verbose=0)
    return model, (x, y), (xt, yt)


SIZES = {"epochs": 3, "runs": 100, "train_rows": None}
QUICK = {"epochs": 1, "runs": 10, "train_rows": 10000}


def parse_args(argv=None):
    """The flags; --quick changes only the sizes not given explicitly."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, help="default 3 (1 with --quick)")
    parser.add_argument("--runs", type=int, help="timed runs per graph and batch size, default 100 (10 with --quick)")
    parser.add_argument("--train-rows", type=int, help="training rows, default all (10000 with --quick)")
    parser.add_argument("--quick", action="store_true", help="smaller defaults for the sizes not given")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else SIZES).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv=None):
    args = parse_args(argv)
    model, (x, _), (xt, yt) = train(args.epochs, train_rows=args.train_rows)
    qmodel = kquant.quantize(model, {k: v[:2000] for k, v in x.items()}, progress=not args.no_progress)
    print(qmodel.summary())
    print(kquant.benchmark(model, qmodel, data=xt, labels=yt, runs=args.runs, progress=not args.no_progress))


if __name__ == "__main__":
    main()

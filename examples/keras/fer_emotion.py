"""The pretrained `fer` emotion model (mini-Xception, 64×64×1): quantize on 100 real faces in one line, benchmark.

    python examples/keras/fer_emotion.py [--runs 100] [--quick]

Agreement is top-1 agreement with the fp32 Keras model on the 100 LFW faces calibration did not see.
"""

from __future__ import annotations

import argparse

import kquant
from kquant import datasets


def main(argv=None):
    import keras

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, help="timed runs per graph and batch size, default 100 (10 with --quick)")
    parser.add_argument("--quick", action="store_true", help="10 runs unless --runs is given")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    runs = args.runs if args.runs is not None else 10 if args.quick else 100
    faces = datasets.lfw_faces()
    calibration, held_out = faces[:100], faces[100:]
    model = keras.models.load_model(datasets.fer_model_path(), compile=False)
    qmodel = kquant.quantize(model, calibration, progress=not args.no_progress)
    print(qmodel.summary())
    reference = model.predict(held_out, verbose=0)
    print(kquant.benchmark(model, qmodel, data=held_out, reference=reference, runs=runs, progress=not args.no_progress))


if __name__ == "__main__":
    main()

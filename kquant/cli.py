"""The ``kquant`` command: summarize | freeze | transform | quantize | bench."""

from __future__ import annotations

import argparse
import sys
import warnings

WRITTEN_ARGS = ("output", "export", "report", "json", "save_stages")
READ_ARGS = ("model", "calib", "checkpoint", "min_max_log", "int8", "data", "labels")
DESCRIPTION = """\
Freeze TensorFlow/Keras models to GraphDefs, optimize them, and quantize them to calibrated int8 graphs that run
on oneDNN's int8 kernels; then measure what was gained. Each command takes a .keras/.h5 file, a SavedModel
directory or a .pb/.pbtxt graph. Typical use:
  kquant summarize model.keras --print-structure
  kquant quantize model.keras --calib images/ -o model_int8.pb --report report.html
  kquant bench model.keras --int8 model_int8.pb --data x.npy --labels y.npy
Errors are one 'kquant: error: ...' line (exit 2; --debug shows the traceback); every output is written
atomically, and a command that fails leaves no output behind."""


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from kquant.errors import KQuantError

    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            _check_outputs_are_not_inputs(args)
            _check_outputs(args)
            return args.run(args) or 0
        except KQuantError as exc:
            if args.debug:
                raise
            print("kquant: error: " + " ".join(line.strip() for line in str(exc).splitlines() if line.strip()), file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            print("kquant: interrupted", file=sys.stderr)
            return 130


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line, like errors: ``kquant: warning: ...``."""
    print("kquant: warning: " + " ".join(str(message).split()), file=sys.stderr)


def _check_outputs_are_not_inputs(args) -> None:
    from kquant.graph import check_output_is_not_input

    inputs = [getattr(args, name) for name in READ_ARGS if getattr(args, name, None)]
    for name in WRITTEN_ARGS:
        if getattr(args, name, None):
            check_output_is_not_input(getattr(args, name), *inputs)


OUTPUT_SUFFIXES = {"report": (".html", ".htm"), "json": (".json",)}


def _check_outputs(args) -> None:
    """Before any work: each output path names its format and no two outputs share a path."""
    from pathlib import Path

    from kquant.errors import OutputWriteError
    from kquant.graph import GRAPH_SUFFIXES

    suffixes = {**({"output": GRAPH_SUFFIXES} if args.command != "quantize" else {}), **OUTPUT_SUFFIXES}
    written = {}
    for name in WRITTEN_ARGS:
        value = getattr(args, name, None)
        if not value:
            continue
        flag = "-o" if name == "output" else f"--{name}"
        if name in suffixes and Path(value).suffix.lower() not in suffixes[name]:
            raise OutputWriteError(f"{flag} {value}: the file it writes needs the suffix {' or '.join(suffixes[name])}; "
                                   "name it so")
        resolved = Path(value).resolve()
        if resolved in written:
            raise OutputWriteError(f"{flag} and {written[resolved]} both name {value}; give each output its own path")
        written[resolved] = flag
    if args.command == "quantize":
        args.format = _output_format(args.output, args.format)


# --format of kquant quantize: what -o names
OUTPUT_FORMATS = {"pb": "the int8 GraphDef, .pb or .pbtxt", "openvino": "an OpenVINO IR, .xml (the .bin beside it)",
                  "saved_model": "the int8 graph as a SavedModel directory, a path without a suffix",
                  "qdq": "the portable QDQ graph, .pb/.pbtxt, or a SavedModel directory without a suffix"}


def _output_format(output, chosen) -> str:
    """The format ``-o`` is written in: ``--format``, else its suffix (.xml OpenVINO, .pb/.pbtxt the int8 graph);
    a suffix the format cannot take is an error."""
    from pathlib import Path

    from kquant.errors import OutputWriteError
    from kquant.graph import GRAPH_SUFFIXES

    suffix = Path(output).suffix.lower()
    by_suffix = "openvino" if suffix == ".xml" else "pb" if suffix in GRAPH_SUFFIXES else None
    if chosen is None and by_suffix is None:
        raise OutputWriteError(f"-o {output}: name the output .pb/.pbtxt (the int8 graph) or .xml (OpenVINO IR), "
                               "or choose --format saved_model or qdq for a directory")
    fmt = chosen or by_suffix
    fits = {"pb": suffix in GRAPH_SUFFIXES, "openvino": suffix == ".xml", "saved_model": not suffix,
            "qdq": not suffix or suffix in GRAPH_SUFFIXES}[fmt]
    if not fits:
        raise OutputWriteError(f"-o {output} does not fit --format {fmt} ({OUTPUT_FORMATS[fmt]}); rename the output "
                               "or choose another --format")
    return fmt


class _OneLineErrorParser(argparse.ArgumentParser):
    """Usage errors as one line naming the fix, like every other kquant error (exit 2, argparse's code)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrorParser(prog="kquant", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("summarize", help="list a graph's likely inputs and outputs, op histogram and parameter size")
    p.add_argument("model", help="a .pb/.pbtxt graph, .keras/.h5 file or SavedModel directory")
    p.add_argument("--signature", help="SavedModel signature (default serving_default)")
    p.add_argument("--print-structure", action="store_true",
                   help="also list every node with its op, inputs and shape (summarize_graph --print_structure)")
    p.set_defaults(run=_summarize)

    p = sub.add_parser("freeze", help="freeze any model format to a GraphDef")
    p.add_argument("model", help="a .keras/.h5 file, SavedModel directory or .pb/.pbtxt graph")
    p.add_argument("-o", "--output", required=True, help="output .pb (binary) or .pbtxt (text)")
    p.add_argument("--signature", help="SavedModel signature (default serving_default)")
    p.add_argument("--outputs", type=_names, help="comma-separated output node names to keep")
    p.add_argument("--checkpoint", help="checkpoint prefix, for a TF1 graph that still holds variables")
    p.set_defaults(run=_freeze)

    p = sub.add_parser("quantize", help="quantize a model to an int8 GraphDef, calibrating on sample data")
    p.add_argument("model", help="a .keras/.h5 file, SavedModel directory or .pb/.pbtxt graph")
    p.add_argument("--calib", help="calibration samples: .npy (one input), .npz (one array per input name), a folder "
                                    "of JPEG/PNG images, or TFRecord file(s) (with --feature); read a batch at a time")
    p.add_argument("-o", "--output", required=True,
                   help="output: the int8 .pb (binary) or .pbtxt (text), an OpenVINO .xml (+ .bin), or a directory "
                        "with --format saved_model or qdq")
    p.add_argument("--format", choices=tuple(OUTPUT_FORMATS),
                   help="what -o holds (default: from its suffix): " + "; ".join(f"{k}: {v}" for k, v in OUTPUT_FORMATS.items()))
    p.add_argument("--inputs", type=_names, help="comma-separated input node names (default: the model's inputs)")
    p.add_argument("--outputs", type=_names, help="comma-separated outputs: graph node names or SavedModel signature keys")
    _add_image_arguments(p)
    p.add_argument("--labels", help=".npy class labels of the --calib samples: accuracy-aware tuning keeps the most "
                                    "sensitive layers in fp32 until the accuracy drop is at most --max-accuracy-drop")
    p.add_argument("--max-accuracy-drop", type=float, default=0.01,
                   help="largest accepted relative top-1 accuracy drop with --labels (default 0.01: 1%%)")
    p.add_argument("--target", choices=("tensorflow", "openvino"), default="tensorflow",
                   help="the runtime the model is deployed on: with openvino, --labels tuning scores every candidate as "
                        "OpenVINO runs it (default tensorflow)")
    p.add_argument("--save-stages", metavar="DIR", help="also write the optimized fp32 graph, the int8 graph before "
                                                        "merging and the calibrated ranges as a seed min/max log")
    p.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True,
                   help="per-channel weight scales for convolutions (default on)")
    p.add_argument("--calibration", default="minmax", help="range algorithm: minmax, percentile or kl (default minmax)")
    p.add_argument("--exclude-op", action="append", default=[], metavar="OP", help="op type to keep in fp32 (repeatable)")
    p.add_argument("--exclude-node", action="append", default=[], metavar="NAME", help="node to keep in fp32 (repeatable)")
    p.add_argument("--stem", choices=("fp32", "int8"), default="fp32",
                   help="precision of the image stem, a conv with at most 4 input channels reading the model input "
                        "(default fp32: its input's rounding costs the most accuracy)")
    p.add_argument("--batch-size", type=int, default=64, help="calibration batch size (default 64)")
    p.add_argument("--calib-batches", type=int, metavar="N",
                   help="calibrate on at most N batches (default: 10000 samples, with a warning when data is left)")
    p.add_argument("--min-max-log", help="freeze ranges from a seed-tool min/max log instead of measuring them "
                                         "(with --calib only the ranges the log lacks are measured)")
    p.add_argument("--export", metavar="DIR", help="also write a SavedModel with a serving_default signature")
    p.add_argument("--report", metavar="HTML", help="write a per-layer error report (table and plot) to this page")
    p.add_argument("--signature", help="SavedModel signature (default serving_default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_quantize)

    p = sub.add_parser("transform", help="apply graph transforms (Graph Transform Tool syntax) to a graph")
    p.add_argument("model", help="a .pb/.pbtxt graph, or a .keras/.h5 file or SavedModel directory to freeze first")
    p.add_argument("-o", "--output", required=True, help="output .pb (binary) or .pbtxt (text)")
    p.add_argument("--transforms", help="e.g. 'fold_constants(ignore_errors=true) fold_batch_norms' "
                                        "(default: kquant's optimize_for_inference list)")
    p.add_argument("--inputs", type=_names, help="comma-separated input names (default: the graph's placeholders)")
    p.add_argument("--outputs", type=_names, help="comma-separated output names (default: the nodes nothing reads)")
    p.add_argument("--signature", help="SavedModel signature (default serving_default)")
    p.set_defaults(run=_transform)

    p = sub.add_parser("bench", help="latency, throughput, file size and accuracy of the fp32 graph and an int8 one")
    p.add_argument("model", help="the fp32 model: a .keras/.h5 file, SavedModel directory or .pb/.pbtxt graph, or an "
                                 "OpenVINO .xml (+ .bin)")
    p.add_argument("--int8", metavar="Q.pb", help="the int8 model to compare with (from kquant quantize): a .pb/.pbtxt "
                                                  "graph run in TensorFlow or an OpenVINO .xml (+ .bin)")
    p.add_argument("--batch", type=_batches, default=[1, 32], help="comma-separated batch sizes (default 1,32)")
    p.add_argument("--runs", type=int, default=100, help="timed runs per graph and batch size (default 100)")
    p.add_argument("--data", help="samples to time and evaluate on: .npy or .npz (default: random inputs)")
    p.add_argument("--labels", help=".npy class labels for --data: report classification accuracy")
    p.add_argument("--json", metavar="OUT.json", help="also write the numbers as JSON")
    p.add_argument("--signature", help="SavedModel signature (default serving_default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_bench)
    for command in sub.choices.values():  # --debug also after the command; SUPPRESS keeps the global value
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback on errors")
        command.add_argument("--unsafe-deserialization", action="store_true",
                             help="let a .keras/.h5 model's Lambda layers run their Python code as it loads "
                                  "(only for files you trust; refused by default)")
    return parser


def _add_image_arguments(p) -> None:
    p.add_argument("--image-size", type=_image_size, metavar="H,W", help="resize images to H,W (default: the model input's)")
    p.add_argument("--color", choices=("rgb", "gray"), help="decode images as rgb or gray (default: from the input's channels)")
    p.add_argument("--scale", type=_number, default=1.0, help="multiply pixel values (0..255) by this, e.g. 1/255")
    p.add_argument("--mean", type=_numbers, default=(), help="subtract these per-channel values after --scale, e.g. 0.485,0.456,0.406")
    p.add_argument("--std", type=_numbers, default=(), help="then divide by these per-channel values")
    p.add_argument("--preprocess", metavar="NAME", help="a Keras application's preprocess_input instead, e.g. mobilenet_v2")
    p.add_argument("--feature", help="TFRecord feature holding the sample (an encoded image or raw floats)")


def _number(text: str) -> float:
    try:
        numerator, _, denominator = text.partition("/")
        return float(numerator) / (float(denominator) if denominator else 1.0)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"'{text}' is not a number such as 0.5 or 1/255") from None


def _numbers(text: str) -> tuple:
    return tuple(_number(t) for t in _names(text))


def _image_size(text: str) -> tuple:
    try:
        size = tuple(int(t) for t in _names(text))
    except ValueError:
        size = ()
    if len(size) != 2 or min(size) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a height and width such as 224,224")
    return size


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _summarize(args) -> int:
    from pathlib import Path

    import kquant
    from kquant.graph import GRAPH_SUFFIXES

    model = Path(args.model)
    if model.suffix.lower() in GRAPH_SUFFIXES:
        _check_graph_options(args)
        graph = model
    else:
        graph = kquant.freeze(model, signature=args.signature, safe_mode=not args.unsafe_deserialization)
    summary = kquant.summarize_graph(graph)
    if args.print_structure:
        print(summary.structure())
    print(summary)
    return 0


def _check_graph_options(args) -> None:
    """A GraphDef read as it is takes no SavedModel signature: say so rather than ignore it."""
    from kquant.converters import check_freeze_args

    check_freeze_args(args.model, args.signature, None, None, None, True)


def _freeze(args) -> int:
    import kquant

    frozen = kquant.freeze(args.model, signature=args.signature, outputs=args.outputs, checkpoint=args.checkpoint,
                           safe_mode=not args.unsafe_deserialization)
    path = frozen.save(args.output)
    print(f"wrote {path} ({len(frozen.graph_def.node)} nodes); inputs: "
          f"{', '.join(i.name for i in frozen.inputs)}; outputs: {', '.join(o.name for o in frozen.outputs)}")
    return 0


def _transform(args) -> int:
    from pathlib import Path

    import kquant
    from kquant.graph import GRAPH_SUFFIXES
    from kquant.transforms import apply_transforms, optimize_for_inference_trans

    model = Path(args.model)
    if model.suffix.lower() in GRAPH_SUFFIXES:
        _check_graph_options(args)
        graph = kquant.load_graph_def(model)
    else:
        graph = kquant.freeze(model, signature=args.signature, safe_mode=not args.unsafe_deserialization)
    result = apply_transforms(graph, args.transforms or optimize_for_inference_trans, args.inputs, args.outputs)
    before = graph.graph_def if isinstance(graph, kquant.FrozenGraph) else graph
    after = result.graph_def if isinstance(result, kquant.FrozenGraph) else result
    path = kquant.save_graph_def(after, args.output)
    print(f"wrote {path} ({len(before.node)} -> {len(after.node)} nodes)")
    return 0


def _quantize(args) -> int:
    from pathlib import Path

    import kquant
    from kquant.converters.graph_def import frozen_from_graph_def
    from kquant.errors import CalibrationDataError, ConfigurationError
    from kquant.files import checked_data_path, load_arrays
    from kquant.outputs import AllOrNothing, check_new_directory, write_text
    from kquant.quantization.graph_converter import GraphConverter, save_stages

    if args.calib is None and args.min_max_log is None:
        raise ConfigurationError("kquant quantize needs --calib samples or a --min-max-log; pass one")
    if args.labels and not args.calib:
        raise ConfigurationError("--labels label the --calib samples; pass --calib too")
    check_new_directory(args.export, "--export")
    check_new_directory(args.save_stages, "--save-stages")
    if args.format in ("saved_model", "qdq") and not Path(args.output).suffix:
        check_new_directory(args.output, "-o")
    if "openvino" in (args.format, args.target):  # before any work: a missing runtime fails at once
        from kquant.quantization.openvino import import_openvino

        import_openvino()
    for path, role in ((args.calib, "calibration data"), (args.labels, "labels")):
        if path:  # before the model is read: a wrong data path fails at once
            checked_data_path(path, role=role, error=CalibrationDataError)
    frozen = kquant.freeze(args.model, signature=args.signature, outputs=args.outputs,
                           safe_mode=not args.unsafe_deserialization)
    if args.inputs:
        frozen = frozen_from_graph_def(frozen.graph_def, inputs=args.inputs, outputs=frozen.output_names)
    data = _samples(args.calib, frozen.inputs, args) if args.calib else None
    eval_fn = _accuracy(data, load_arrays(args.labels, role="labels"), frozen.inputs, args.batch_size) if args.labels else None
    converter = GraphConverter(frozen, None, None, None, excluded_ops=args.exclude_op, excluded_nodes=args.exclude_node,
                               per_channel=args.per_channel, stem=args.stem)
    qmodel = converter.convert(data, calibration=args.calibration, min_max_log=args.min_max_log,
                               batch_size=args.batch_size, progress=not args.no_progress, eval_fn=eval_fn,
                               max_accuracy_drop=args.max_accuracy_drop, max_batches=args.calib_batches,
                               target=args.target)
    report = qmodel.report().to_html(title=f"kquant per-layer report: {args.model}") if args.report else None
    with AllOrNothing() as outputs:
        if args.format == "pb":
            outputs.write(args.output, qmodel.save)
        if args.export:
            outputs.write(args.export, qmodel.export)
        if report is not None:
            outputs.write(args.report, lambda path: write_text(path, report))
        if args.save_stages:
            outputs.write(args.save_stages, lambda path: save_stages(qmodel, path))
        if args.format != "pb":  # last: an OpenVINO IR is two files, which its export writes all or nothing
            outputs.write(args.output, lambda path: qmodel.export(path, format=args.format))
    print(qmodel.summary())
    if qmodel.trials:
        print(f"accuracy-aware tuning: {len(qmodel.trials)} trial(s); kept fp32: {', '.join(qmodel.result.fell_back) or 'none'}")
    if args.format == "openvino":
        from kquant.quantization.openvino import INT8_PRECISIONS

        precisions = qmodel.openvino_precisions.values()
        print(f"OpenVINO runs {sum(p in INT8_PRECISIONS for p in precisions)} of the {len(precisions)} int8 "
              "convolutions/matmuls in int8")
    print(f"wrote {args.output}" + (f" and {Path(args.output).with_suffix('.bin')}" if args.format == "openvino" else "")
          + (f" and SavedModel {args.export}" if args.export else ""))
    return 0


def _samples(path, inputs, args):
    from kquant.sources import Preprocessing, open_source

    preprocessing = Preprocessing(args.scale, args.mean, args.std, args.preprocess)
    return open_source(path, inputs, batch_size=args.batch_size, image_size=args.image_size, color=args.color,
                       preprocessing=preprocessing, feature=args.feature, progress=not args.no_progress)


def _accuracy(data, labels, inputs, batch_size):
    """eval_fn for accuracy-aware tuning: top-1 accuracy of a candidate graph on ``data``, streamed in batches."""
    import numpy as np

    from kquant.benchmark import top1
    from kquant.data import iter_batches
    from kquant.errors import ConfigurationError

    labels = np.asarray(labels).reshape(-1)

    def accuracy(predict) -> float:
        correct = seen = 0
        for batch in iter_batches(data, inputs, batch_size, role="evaluation data"):
            outputs = predict(batch[0] if len(batch) == 1 else batch)
            classes = top1(outputs[0] if isinstance(outputs, list) else outputs)
            correct += int(np.sum(classes == labels[seen:seen + len(classes)]))
            seen += len(classes)
        if seen != len(labels):
            raise ConfigurationError(f"{len(labels)} labels for {seen} --calib samples; pass one label per sample")
        return correct / seen

    return accuracy


def _batches(text: str) -> list[int]:
    try:
        batches = [int(b) for b in _names(text)]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of positive batch sizes such as 1,32")
    return batches


def _bench(args) -> int:
    from pathlib import Path

    import kquant
    from kquant.benchmark import benchmark
    from kquant.errors import ConfigurationError

    from kquant.files import load_arrays

    data = load_arrays(args.data, role="benchmark data") if args.data else None
    labels = load_arrays(args.labels, role="labels") if args.labels else None
    model = args.model
    if Path(model).suffix.lower() != ".xml":  # an OpenVINO IR is read by benchmark, TF models frozen here
        model = kquant.freeze(model, signature=args.signature, safe_mode=not args.unsafe_deserialization)
    elif args.signature:
        raise ConfigurationError(f"--signature names a SavedModel signature; {args.model} is an OpenVINO IR: drop it")
    report = benchmark(model, args.int8, batches=args.batch,
                       runs=args.runs, data=data, labels=labels, progress=not args.no_progress)
    print(report)
    if args.json:
        print(f"wrote {report.save_json(args.json)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

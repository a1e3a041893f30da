"""The ``kquant`` command: summarize | freeze (and the later pipeline steps)."""

from __future__ import annotations

import argparse
import sys
import warnings

WRITTEN_ARGS = ("output", "export", "report", "json")
READ_ARGS = ("model", "calib", "checkpoint", "min_max_log", "int8", "data", "labels")


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


class _OneLineErrorParser(argparse.ArgumentParser):
    """Usage errors as one line naming the fix, like every other kquant error (exit 2, argparse's code)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrorParser(prog="kquant", description=__doc__)
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
    p.add_argument("--calib", required=True, help="calibration samples: .npy (one input) or .npz (one array per input name)")
    p.add_argument("-o", "--output", required=True, help="output int8 .pb (binary) or .pbtxt (text)")
    p.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True,
                   help="per-channel weight scales for convolutions (default on)")
    p.add_argument("--calibration", default="minmax", help="range algorithm: minmax, percentile or kl (default minmax)")
    p.add_argument("--exclude-op", action="append", default=[], metavar="OP", help="op type to keep in fp32 (repeatable)")
    p.add_argument("--exclude-node", action="append", default=[], metavar="NAME", help="node to keep in fp32 (repeatable)")
    p.add_argument("--stem", choices=("fp32", "int8"), default="fp32",
                   help="precision of the image stem, a conv with at most 4 input channels reading the model input "
                        "(default fp32: its input's rounding costs the most accuracy)")
    p.add_argument("--batch-size", type=int, default=64, help="calibration batch size (default 64)")
    p.add_argument("--min-max-log", help="freeze ranges from a seed-tool min/max log instead of measuring them")
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
    p.add_argument("model", help="the fp32 model: a .keras/.h5 file, SavedModel directory or .pb/.pbtxt graph")
    p.add_argument("--int8", metavar="Q.pb", help="the int8 graph to compare with (from kquant quantize)")
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
    return parser


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _summarize(args) -> int:
    from pathlib import Path

    import kquant
    from kquant.converters.graph_def import GRAPH_SUFFIXES

    model = Path(args.model)
    graph = model if model.suffix.lower() in GRAPH_SUFFIXES else kquant.freeze(model, signature=args.signature)
    summary = kquant.summarize_graph(graph)
    if args.print_structure:
        print(summary.structure())
    print(summary)
    return 0


def _freeze(args) -> int:
    import kquant

    frozen = kquant.freeze(args.model, signature=args.signature, outputs=args.outputs, checkpoint=args.checkpoint)
    path = frozen.save(args.output)
    print(f"wrote {path} ({len(frozen.graph_def.node)} nodes); inputs: "
          f"{', '.join(i.name for i in frozen.inputs)}; outputs: {', '.join(o.name for o in frozen.outputs)}")
    return 0


def _transform(args) -> int:
    from pathlib import Path

    import kquant
    from kquant.converters.graph_def import GRAPH_SUFFIXES
    from kquant.transforms import apply_transforms, optimize_for_inference_trans

    model = Path(args.model)
    graph = kquant.load_graph_def(model) if model.suffix.lower() in GRAPH_SUFFIXES else kquant.freeze(model, signature=args.signature)
    result = apply_transforms(graph, args.transforms or optimize_for_inference_trans, args.inputs, args.outputs)
    before = graph.graph_def if isinstance(graph, kquant.FrozenGraph) else graph
    after = result.graph_def if isinstance(result, kquant.FrozenGraph) else result
    path = kquant.save_graph_def(after, args.output)
    print(f"wrote {path} ({len(before.node)} -> {len(after.node)} nodes)")
    return 0


def _quantize(args) -> int:
    from kquant.quantization.converter import GraphConverter

    data = _load_arrays(args.calib)
    converter = GraphConverter(args.model, args.output, None, None, excluded_ops=args.exclude_op,
                               excluded_nodes=args.exclude_node, per_channel=args.per_channel, signature=args.signature,
                               stem=args.stem)
    qmodel = converter.convert(data, calibration=args.calibration, min_max_log=args.min_max_log,
                               batch_size=args.batch_size, progress=not args.no_progress)
    if args.export:
        qmodel.export(args.export)
    if args.report:
        from kquant.graph import atomic_write

        with atomic_write(args.report) as tmp:
            tmp.write_text(qmodel.report().to_html(title=f"kquant per-layer report: {args.model}"), encoding="utf-8")
    print(qmodel.summary())
    print(f"wrote {args.output}" + (f" and SavedModel {args.export}" if args.export else ""))
    return 0


def _batches(text: str) -> list[int]:
    try:
        batches = [int(b) for b in _names(text)]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of positive batch sizes such as 1,32")
    return batches


def _bench(args) -> int:
    import kquant
    from kquant.benchmark import benchmark

    data = _load_arrays(args.data) if args.data else None
    labels = _load_arrays(args.labels) if args.labels else None
    report = benchmark(kquant.freeze(args.model, signature=args.signature), args.int8, batches=args.batch,
                       runs=args.runs, data=data, labels=labels, progress=not args.no_progress)
    print(report)
    if args.json:
        print(f"wrote {report.save_json(args.json)}")
    return 0


def _load_arrays(path):
    """A .npy array, or a .npz as a dict name -> array (one unnamed array -> that array)."""
    import numpy as np

    from kquant.errors import CalibrationDataError

    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CalibrationDataError(f"cannot read calibration data {path} ({exc}); pass a .npy or .npz file") from exc
    if isinstance(loaded, np.ndarray):
        return loaded
    arrays = {key: loaded[key] for key in loaded.files}
    return next(iter(arrays.values())) if list(arrays) == ["arr_0"] else arrays


if __name__ == "__main__":
    sys.exit(main())

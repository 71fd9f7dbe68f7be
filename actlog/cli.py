"""The ``actlog`` command: list what a log holds, export a layer's evolution.

```
actlog ls runs/exp1
actlog export runs/exp1 --layer conv_0 --probe 0 -o conv_0.gif
actlog export runs/exp1 --layer conv_0 --probe 0 --channel 3 -o conv_0_ch3.png
actlog export runs/exp1 --layer conv_1 --atlas --channel 5 -o conv_1_ch5.gif
actlog export runs/exp1 --layer conv_1 --probe 1 --cam -o conv_1_cam_1.gif
actlog compare runs/exp1 runs/exp2 --layer conv_1 -o conv_1.gif
actlog similarity runs/exp1 --layer conv_1 -o conv_1_cka.png
```

Reads logs with :mod:`actlog.reader` and writes with :mod:`actlog.export`:
no TensorFlow is imported, so the command starts fast. A mistake in what was
asked (a run, layer, probe or channel that does not exist, a missing log
directory, an output that cannot be written) is reported on one line,
``actlog: error: ...``, naming what exists (and the closest name), with exit
status 2. What the reader has to say about a log (a last record cut short by a
crash) is one ``actlog: note: ...`` line on stderr. A reader that stops early
(``actlog ls LOG | head``) is not an error: exit status 0, nothing on stderr.
Ctrl-C prints ``actlog: interrupted`` and exits with 130.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from actlog.version import __version__

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for a command stopped by Ctrl-C


class _UserError(Exception):
    """A mistake in what was asked; reported on one line."""


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _steps_summary(steps: Sequence[int]) -> str:
    if not steps:
        return "0"
    return f"{len(steps)} ({steps[0]}..{steps[-1]})"


def _shape(shape: object) -> str:
    if isinstance(shape, (list, tuple)):
        return "x".join("?" if d is None else str(d) for d in shape)
    return str(shape)


class _ProgressBar:
    """A one-line text bar on a terminal stream: ``[#####-----]  5/10 frames``."""

    def __init__(self, stream: TextIO, title: str, width: int = 30) -> None:
        self.stream = stream
        self.title = title
        self.width = width
        self._open = False  # a bar is drawn and its line not ended yet

    def __call__(self, done: int, total: int) -> None:
        filled = self.width * done // max(total, 1)
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r{self.title} [{bar}] {done}/{total} frames")
        self._open = True
        if done >= total:
            self.end()
        else:
            self.stream.flush()

    def end(self) -> None:
        """End the bar's line, once: an error or ``actlog: interrupted`` gets a line of its own."""
        if self._open:
            self._open = False
            self.stream.write("\n")
        self.stream.flush()


def _cmd_ls(args: argparse.Namespace, out: TextIO) -> int:
    from actlog.reader import read

    log = read(args.logdir)
    print(f"{log.path}: {len(log)} actlog run(s), {_human(log.bytes)}", file=out)
    for run in log:
        steps = run.steps
        print(f"run {run.name}", file=out)
        print(f"  step axis: {run.step_axis}", file=out)
        print(f"  steps:     {_steps_summary(steps)}", file=out)
        print(f"  probes:    {run.probes}", file=out)
        print(f"  bytes:     {run.bytes} ({_human(run.bytes)})", file=out)
        print(f"  layers:    {len(run.layers)}", file=out)
        width = max((len(name) for name in run.layers), default=0)
        for name in run.layers:
            info = run.layer_info(name)
            grid = info.get("grid", {})
            channels = run.channels(name)
            stats = sorted(run.scalars(name))
            atlas = run.atlas_steps(name)
            print(
                f"    {name:<{width}}  {info.get('class', '?')}"
                f"  output {_shape(info.get('output_shape'))}"
                f"  grid {grid.get('rows', '?')}x{grid.get('cols', '?')}"
                f" tiles of {grid.get('tile_height', '?')}x{grid.get('tile_width', '?')} px"
                f"  {len(channels)} channel(s) shown"
                f"  stats: {', '.join(stats) if stats else 'none'}"
                + (f"  atlas: top {info['atlas']['k']} of {info['atlas']['pool']}, "
                   f"steps {_steps_summary(atlas)}" if atlas and "atlas" in info else "")
                + (f"  class maps: {_classes(info['cam']['classes'])}, "
                   f"steps {_steps_summary(run.class_map_steps())}" if "cam" in info else ""),
                file=out,
            )
    return EXIT_OK


def _classes(classes: Any) -> str:
    """The classes the class maps are of, as ``ClassMaps(classes=)`` was given."""
    if classes == "label":
        return "the probes' labels"
    return "the predicted classes" if classes == "predicted" else f"classes {classes}"


def _cmd_export(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from actlog import export

    # Check the output before reading anything: a typo should not cost a long read.
    export.check_output(args.output)
    run = _open_run(args.logdir, args.run)
    run.layer_info(args.layer)  # a misspelt layer: "Did you mean", before any other complaint
    if args.atlas and (args.channel is None or args.probe is not None):
        raise _UserError("--atlas exports one channel's top-k crops: give --channel C, and no --probe.")
    if args.cam:
        _check_cam(run, args)
    probe = 0 if args.probe is None and not args.atlas else args.probe
    show = args.progress if args.progress is not None else err.isatty()
    what = f"{args.layer} " + ("atlas" if args.atlas else f"probe {probe}") + (
        f" channel {args.channel}" if args.channel is not None else ""
    ) + (" class maps" if args.cam else "")
    progress = _ProgressBar(err, f"actlog: exporting {what}") if show else None
    options = {"fps": args.fps, "columns": args.columns, "scale": args.scale, "progress": progress}
    try:
        if args.atlas:
            result = export.export_atlas(run, args.layer, args.channel, args.output, **options)
        elif args.cam:
            result = export.export_class_maps(run, probe, args.output, **options)
        else:
            result = export.export(run, args.layer, probe, args.output, channel=args.channel,
                                   **options)
    except OSError as error:
        raise _UserError(f"cannot write {args.output!r}: {error.strerror or error}") from None
    finally:
        if progress is not None:
            progress.end()
    kind = export.FORMATS[result.format]
    print(
        f"wrote {result.path}: {kind}, {len(result.steps)} frame(s) "
        f"({run.step_axis} {result.steps[0]}..{result.steps[-1]}), "
        f"{result.size[0]}x{result.size[1]} px",
        file=out,
    )
    return EXIT_OK


def _open_run(logdir: str, name: str | None, flag: str = "--run"):
    """The run ``name`` of the log at ``logdir``; without a name, its epoch run or only run."""
    from actlog import metadata
    from actlog.reader import LogError, read

    log = read(logdir)
    try:
        return log.run(name)
    except LogError:
        if name is not None:
            raise
        # Without a name, the only failure is a choice to make: say how to make it.
        raise _UserError(
            f"Several runs under {log.path!r} and none is {metadata.EPOCH_RUN!r}; "
            f"choose one with {flag}: {log.runs}."
        ) from None


def _cmd_compare(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from actlog import export
    from actlog.comparison import compare

    if args.output is not None:
        export.check_output(args.output)
    run_a = _open_run(args.log_a, args.run_a, "--run-a")
    run_b = _open_run(args.log_b, args.run_b, "--run-b")
    pair = compare(run_a, run_b, args.layer, probe=args.probe)
    if args.output is None:
        print(pair.table(), file=out)
        return EXIT_OK
    progress = _ProgressBar(err, f"actlog: comparing {args.layer}") if err.isatty() else None
    try:
        result = pair.export(args.output, fps=args.fps, progress=progress)
    except OSError as error:
        raise _UserError(f"cannot write {args.output!r}: {error.strerror or error}") from None
    finally:
        if progress is not None:
            progress.end()
    print(f"wrote {result.path}: {export.FORMATS[result.format]}, {len(result.steps)} frame(s) "
          f"(common steps {result.steps[0]}..{result.steps[-1]}), {result.size[0]}x{result.size[1]} px",
          file=out)
    return EXIT_OK


def _cmd_similarity(args: argparse.Namespace, out: TextIO) -> int:
    from actlog import export_similarity as sim

    if (args.layer is None) == (args.step is None):
        raise _UserError("give --layer L (its CKA between steps) or --step S (between layers), not both.")
    if args.output is not None:
        sim.check_png(args.output)
    run = _open_run(args.logdir, args.run)
    if args.layer is not None:
        found, corner = sim.layer_over_steps(run, args.layer), run.step_axis
    else:
        found, corner = sim.layers_at_step(run, args.step), "layer"
    if args.output is None:
        print(sim.table(found, corner), file=out)
        return EXIT_OK
    try:
        path, (width, height) = sim.write_png(found, args.output)
    except OSError as error:
        raise _UserError(f"cannot write {args.output!r}: {error.strerror or error}") from None
    print(f"wrote {path}: heat map of {len(found.heads)}x{len(found.heads)}, {width}x{height} px", file=out)
    return EXIT_OK


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        message = f"expected a positive integer, received {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, received {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, received {text!r}")
    return value


_LS_EXAMPLES = """\
examples:
  actlog ls runs/exp1
  actlog ls runs/exp1 | head -3
"""

_EXPORT_EXAMPLES = """\
examples:
  # one frame per logged epoch: an animation, then the same as a filmstrip
  actlog export runs/exp1 --layer conv_0 --probe 0 -o conv_0.gif
  actlog export runs/exp1 --layer conv_0 --probe 0 -o conv_0.png
  # one channel's tile through time, upscaled
  actlog export runs/exp1 --layer conv_1 --probe 0 --channel 5 -o ch5.png
  # the batch-level run (`actlog ls` lists the runs of a log)
  actlog export runs/exp1 --run activations_batch --layer conv_0 --probe 0 -o b.gif
  # what channel 5 responds to most (its top-k atlas crops) at every atlas step
  actlog export runs/exp1 --layer conv_1 --atlas --channel 5 -o ch5.gif
  actlog export runs/exp1 --layer conv_1 --atlas --channel 5 --columns 1 -o ch5.png
  # where the model looks for probe 1's class (ActivationLogger(cam="conv_1")), epoch by epoch
  actlog export runs/exp1 --layer conv_1 --probe 1 --cam -o cam_1.gif
"""

_EXIT_STATUS = """\
exit status:
  0    done (also when the reader of the output stops early, as `head` does)
  2    a usage error: a bad option; a run, layer, probe, channel or atlas that does
       not exist; a missing log directory; an output that cannot be written
  130  interrupted (Ctrl-C)
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``actlog`` command."""
    parser = argparse.ArgumentParser(
        prog="actlog",
        description="Inspect actlog activation logs and export a layer's evolution.",
        epilog=(
            "examples:\n"
            "  actlog ls runs/exp1\n"
            "  actlog export runs/exp1 --layer conv_0 --probe 0 -o conv_0.gif\n\n"
            "`actlog COMMAND --help` shows the options of a command, with more examples.\n\n"
            f"{_EXIT_STATUS}"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"actlog {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    _ls_parser(commands)
    _export_parser(commands)
    _compare_parser(commands)
    _similarity_parser(commands)
    return parser


def _ls_parser(commands: Any) -> None:
    ls = commands.add_parser(
        "ls", help="list runs, layers, probes, steps and bytes of a log",
        description="List every actlog run under LOGDIR: layers, probes, steps and size.",
        epilog=f"{_LS_EXAMPLES}\n{_EXIT_STATUS}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ls.add_argument("logdir", metavar="LOGDIR", help="log directory (or any parent of it)")


def _check_cam(run: Any, args: argparse.Namespace) -> None:
    """``--cam``: the layer the run's class maps are of, alone (no channel, no atlas)."""
    if args.atlas or args.channel is not None:
        raise _UserError("--cam exports one probe's class maps: give --probe N, and no --channel or --atlas.")
    logged = run.class_map_layer
    if logged is None:
        raise _UserError(f"Run {run.name!r} has no class maps: they are logged with "
                         "ActivationLogger(cam=actlog.ClassMaps(layer)).")
    if logged != args.layer:
        raise _UserError(f"--cam: run {run.name!r} holds the class maps of layer {logged!r}, "
                         f"not {args.layer!r}; give --layer {logged}.")


def _export_parser(commands: Any) -> None:
    ex = commands.add_parser(
        "export",
        help="export a grid (or one channel, its atlas, a class map) over every step as GIF or PNG strip",
        description=(
            "Export the grid of one layer for one probe over every logged step, with --atlas\n"
            "one channel's top-k atlas crops over every atlas step, or with --cam the probe's\n"
            "class activation map: OUT.gif is an animation, OUT.png a filmstrip. Each frame is\n"
            "labelled with its step."
        ),
        epilog=f"{_EXPORT_EXAMPLES}\n{_EXIT_STATUS}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ex.add_argument("logdir", metavar="LOGDIR", help="log directory (or any parent of it)")
    ex.add_argument("--layer", required=True, help="layer display name (see `actlog ls`)")
    ex.add_argument(
        "--probe", type=int, metavar="N", help="probe index, from 0 (default: 0; not with --atlas)"
    )
    ex.add_argument("-o", "--output", required=True, metavar="OUT", help="OUT.gif or OUT.png")
    ex.add_argument(
        "--channel", type=int, metavar="C",
        help="follow the tile of channel C (an index into the layer's output) instead of the grid",
    )
    ex.add_argument(
        "--atlas", action="store_true",
        help="export channel C's feature atlas (its top-k crops, best first) at every atlas step",
    )
    ex.add_argument(
        "--cam", action="store_true",
        help="export the probe's class activation map (Grad-CAM, logged with cam=) at every "
        "step, captioned with its class",
    )
    ex.add_argument(
        "--run", help="run name, as `actlog ls` shows it (default: 'activations', or the only run)"
    )
    ex.add_argument(
        "--fps", type=_positive_float, default=4.0, help="GIF frames per second (default: 4)"
    )
    ex.add_argument(
        "--columns", type=_positive_int, metavar="N",
        help="frames per row of a PNG strip (default: as many as fit in about 2000 px)",
    )
    ex.add_argument(
        "--scale", type=_positive_int, metavar="K",
        help="integer upscaling of each frame (default: 1 for a grid; for a channel, "
        "enough to make the tile's long side 128 px or more)",
    )

    bar = ex.add_mutually_exclusive_group()
    bar.add_argument(
        "--progress", dest="progress", action="store_true", default=None,
        help="show a progress bar on stderr (default: when stderr is a terminal)",
    )
    bar.add_argument(
        "--no-progress", dest="progress", action="store_false", help="never show a progress bar"
    )


def _compare_parser(commands: Any) -> None:
    cmp = commands.add_parser(
        "compare", help="two runs side by side: a GIF over their common steps, or their statistics",
        description=(
            "Compare one layer and probe of two runs (two log directories, or two runs of one):\n"
            "with -o, OUT.gif (or OUT.png) shows both grids side by side at every step both logged;\n"
            "without it, their scalar statistics are printed step by step."
        ),
        epilog=("examples:\n  actlog compare runs/lr_small runs/lr_big --layer conv_1 -o conv_1.gif\n"
                f"  actlog compare runs/lr_small runs/lr_big --layer conv_1\n\n{_EXIT_STATUS}"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmp.add_argument("log_a", metavar="LOG_A", help="first log directory")
    cmp.add_argument("log_b", metavar="LOG_B", help="second log directory (may be LOG_A, with --run-b)")
    cmp.add_argument("--layer", required=True, help="layer display name, in both runs")
    cmp.add_argument("--probe", type=int, default=0, metavar="N", help="probe index (default: 0)")
    cmp.add_argument("--run-a", help="run of LOG_A (default: 'activations', or the only run)")
    cmp.add_argument("--run-b", help="run of LOG_B (default: 'activations', or the only run)")
    cmp.add_argument("-o", "--output", metavar="OUT", help="OUT.gif or OUT.png (default: print statistics)")
    cmp.add_argument("--fps", type=_positive_float, default=4.0, help="GIF frames per second (default: 4)")


_SIMILARITY_EXAMPLES = """\
examples:
  actlog similarity runs/exp1 --layer conv_1              # print its CKA between every two epochs
  actlog similarity runs/exp1 --layer conv_1 -o cka.png   # the same as a heat map
  actlog similarity runs/exp1 --step 5                    # CKA between every two layers at epoch 5
"""


def _similarity_parser(commands: Any) -> None:
    sim = commands.add_parser(
        "similarity", help="a layer's linear CKA between every two steps (or layers' at one step)",
        description=(
            "Print the linear CKA (representation similarity) of one layer between every two\n"
            "logged steps, or with --step of every two layers at one step; -o OUT.png draws it."
        ),
        epilog=f"{_SIMILARITY_EXAMPLES}\n{_EXIT_STATUS}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sim.add_argument("logdir", metavar="LOGDIR", help="log directory (or any parent of it)")
    sim.add_argument("--layer", help="layer display name (see `actlog ls`): steps x steps")
    sim.add_argument("--step", type=int, metavar="S", help="a logged step: layers x layers")
    sim.add_argument("-o", "--output", metavar="OUT", help="OUT.png: a heat map instead of the table")
    sim.add_argument(
        "--run", help="run name, as `actlog ls` shows it (default: 'activations', or the only run)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``actlog`` command; returns the exit status.

    Args:
        argv: arguments without the program name; default ``sys.argv[1:]``.
    """
    out, err = sys.stdout, sys.stderr
    try:
        try:
            status = _run(argv, out, err)
        except SystemExit:  # argparse, after --help, --version or a usage error
            out.flush()
            raise
        out.flush()  # here, not at exit, so that a closed pipe is caught below
        return status
    except BrokenPipeError:
        # `actlog ls LOG | head -1`: the reader stopped early and has what it wanted.
        _discard(out)
        return EXIT_OK
    except KeyboardInterrupt:
        _discard(out)  # what is still buffered is not wanted, and may have no reader left
        print("actlog: interrupted", file=err)
        return EXIT_INTERRUPTED


def _run(argv: Sequence[str] | None, out: TextIO, err: TextIO) -> int:
    args = build_parser().parse_args(argv)

    from actlog.export import ExportError
    from actlog.reader import LogError

    try:
        with _notes(err):
            if args.command == "ls":
                return _cmd_ls(args, out)
            if args.command == "compare":
                return _cmd_compare(args, out, err)
            if args.command == "similarity":
                return _cmd_similarity(args, out)
            return _cmd_export(args, out, err)
    except (LogError, ExportError, _UserError) as error:
        message = " ".join(str(error).split())  # always one line
        print(f"actlog: error: {message}", file=err)
        return EXIT_USAGE


@contextlib.contextmanager
def _notes(err: TextIO) -> Iterator[None]:
    """Show each warning raised inside as one line on ``err``, once.

    The reader's warnings (``actlog: ...``: a last record cut short, a record that
    fails its CRC) are news about the log, not about the code: they become
    ``actlog: note: ...``, without Python's source line, and are shown even where
    Python's warnings are filtered out.
    """
    said: set[str] = set()

    def show(
        message: Warning | str, category: type[Warning], filename: str, lineno: int,
        file: TextIO | None = None, line: str | None = None,
    ) -> None:
        text = " ".join(str(message).split())
        if text.startswith("actlog: "):
            text = f"actlog: note: {text.removeprefix('actlog: ')}"
        else:
            text = f"actlog: warning: {text} ({category.__name__})"
        if text not in said:
            said.add(text)
            print(text, file=err)

    with warnings.catch_warnings():
        warnings.filterwarnings("always", message="actlog: ")
        warnings.showwarning = show
        yield


def _discard(stream: TextIO) -> None:
    """Point ``stream``'s file descriptor at the null device: what is still
    buffered for a closed pipe is dropped at exit instead of failing again."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test's capture)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())

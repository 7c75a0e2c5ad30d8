"""The `jaxicl` command line: `jaxicl run EXPERIMENT [--field value ...]`,
`jaxicl sweep FILE.toml --out STORE`, `jaxicl inspect STORE`, `jaxicl plot STORE`,
`jaxicl bench`."""

import argparse
import errno
import math
import os
import sys

import jax

from ._bench import format_bench, run_bench
from ._host._compilation_cache import use_compilation_cache
from ._host._devices import use_all_cpu_cores
from ._host._distributed import join_processes
from ._host._progress import progress_mode
from ._host._stop_requests import install_stop_handlers, restore_handlers
from ._registry import EXPERIMENTS, STUDIES, load_sweep
from ._sweeps._file import study_fields
from ._sweeps._plan import label
from ._sweeps._runner import run_plan
from ._sweeps._store import describe_store, plot_sweep


def _parse_field(field_type, text: str):
    if field_type is bool:
        if text.lower() not in ("true", "false"):
            raise ValueError(text)
        return text.lower() == "true"
    if not isinstance(field_type, type) or not issubclass(field_type, int | float | str):
        return text  # a tuple, or a variant by name (the study maps names to Modules)
    return field_type(text)


def _parse_tuple(field_type, text: str):
    if field_type == tuple[int, ...]:
        return tuple(int(part) for part in text.split(","))
    if field_type == tuple[float, ...]:
        return tuple(float(part) for part in text.split(",") if part)
    if field_type == tuple[str, ...]:
        return tuple(part.strip() for part in text.split(","))
    return _parse_field(field_type, text)


def _studies_help() -> str:

    lines = [
        "studies: a built-in name below, or your own AbstractStudy as",
        '  study = "package.module:Class" (importable where the sweep runs)',
    ]
    for name, cls in STUDIES.items():
        defaults = ", ".join(f"{k}={getattr(v, 'name', v)!r}" for k, v in study_fields(cls).items())
        lines += [
            f"  {name}: " + (cls.__doc__ or "").split("\n")[0].strip(),
            f"    member axes: {', '.join(cls.member_axes)} (all other swept settings: groups)",
            f"    settings and defaults: {defaults}",
        ]
    return "\n".join(lines)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxicl", description=__doc__)
    parser.add_argument(
        "--no-compilation-cache",
        action="store_true",
        help="compile everything afresh (default: compiled programs are kept under the user's "
        "cache directory, ~/.cache/jaxicl/xla, so a rerun loads them; or set "
        "JAXICL_COMPILATION_CACHE=off, or a directory)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run (or resume) an experiment")
    experiments = run.add_subparsers(dest="experiment", required=True)
    for name, experiment in EXPERIMENTS.items():
        config_cls, presets = experiment.config, experiment.presets
        sub = experiments.add_parser(name, help=(config_cls.__doc__ or "").splitlines()[0])
        sub.add_argument(
            "--out", default=f"results/{name}", help=f"results directory (default: results/{name})"
        )
        sub.add_argument("--quiet", action="store_true", help="no progress bar")
        if presets:
            sub.add_argument(
                "--preset",
                choices=sorted(presets),
                help="named settings; other flags apply on top: "
                + "; ".join(
                    f"{k}: " + ", ".join(f"{f}={v}" for f, v in p.items())
                    for k, p in presets.items()
                ),
            )
        for name, _, default, about in config_cls.flags():
            flag = "--" + name.replace("_", "-")
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else label(default)
            sub.add_argument(
                flag,
                dest=name,
                type=str,
                default=None,
                help=f"{about} (default: {shown})",
            )
    sweep = commands.add_parser(
        "sweep",
        help="run (or resume) a sweep described in a TOML file",
        epilog=_studies_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sweep.add_argument("file", help="sweep description (TOML)")
    sweep.add_argument("--out", required=True, help="Zarr store to stream results into")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")
    sweep.add_argument(
        "--allow-code-change",
        action="store_true",
        help="resume although the study's code changed since the store was started (recorded "
        "in the store)",
    )
    sweep.add_argument(
        "--coordinator", help="host:port of process 0, to split the sweep over processes"
    )
    sweep.add_argument("--num-processes", type=int, help="processes in the distributed sweep")
    sweep.add_argument("--process-id", type=int, help="this process's index (0 creates the store)")
    sweep.add_argument(
        "--connect-timeout",
        type=float,
        default=300.0,
        help="seconds to wait for every process to connect (default: 300)",
    )
    inspect = commands.add_parser("inspect", help="what a sweep store holds, how complete")
    inspect.add_argument("store", help="Zarr store written by `jaxicl sweep`")
    bench = commands.add_parser("bench", help="standard workloads on the devices JAX sees")
    bench.add_argument("--out", default="bench.json", help="JSON report (default: bench.json)")
    bench.add_argument(
        "--scale", type=float, default=1.0, help="multiply every workload's member count"
    )
    plot = commands.add_parser("plot", help="standard figures of a sweep store")
    plot.add_argument("store", help="Zarr store written by `jaxicl sweep`")
    plot.add_argument("--out", default=None, help="figure path (default: STORE.png)")
    plot.add_argument("--var", default=None, help="the series to draw over time (default: loss)")
    return parser


def _sweep(args) -> int:

    try:
        if args.command == "inspect":
            print(describe_store(args.store))
            return 0
        if args.command == "plot":
            figure = args.out or f"{str(args.store).rstrip('/')}.png"
            excluded = plot_sweep(args.store, figure, args.var)
            if excluded:
                print(f"{excluded} diverged member(s) excluded from the medians")
            print(f"figure written to {figure}")
            return 0
        distributed = (args.num_processes, args.process_id)
        if args.coordinator is None and distributed != (None, None):
            raise ValueError(
                "`--num-processes` and `--process-id` split a sweep only with `--coordinator` "
                "(host:port of process 0); without it this process would run every unit."
            )
        plan = load_sweep(args.file)
        if type(plan.study).float64:
            jax.config.update("jax_enable_x64", True)
        if args.coordinator is not None:
            join_processes(
                args.coordinator,
                args.num_processes,
                args.process_id,
                timeout=args.connect_timeout,
            )
        run_plan(
            plan,
            args.out,
            progress=progress_mode(args.quiet),
            allow_code_change=args.allow_code_change,
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"jaxicl: error: {error}", file=sys.stderr)
        return 2
    print(describe_store(args.out))
    return 0


# file-system errors that are about the path the user gave: one line naming it
_PATH_ERRORS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST)


class _Terminated(BaseException):
    """SIGTERM (what batch schedulers send before they kill a job), raised in the main thread
    so that it stops the run as an interrupt does: between steps, with every stored chunk kept."""


def main(argv=None) -> int:
    previous = install_stop_handlers(_Terminated)
    try:
        return _guarded(argv)
    except _Terminated:
        print(
            "\njaxicl: terminated (SIGTERM); what was stored is kept: rerun the same command to "
            "resume.",
            file=sys.stderr,
        )
        return 143
    finally:
        restore_handlers(previous)


def _guarded(argv) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # a reader that closed the pipe shows here, not as an exit traceback
        return code
    except BrokenPipeError:
        # `jaxicl inspect STORE | head`: the reader wants no more. Point stdout at devnull so
        # the interpreter's own flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        # Every run and sweep resumes from its last stored chunk: say so instead of a traceback.
        print("\njaxicl: interrupted; rerun the same command to resume.", file=sys.stderr)
        return 130
    except jax.errors.JaxRuntimeError as error:
        # Sizes just under the pre-compile estimate (a lower bound: states and one step's data)
        # can still exhaust memory inside XLA; that, and only that, gets one line.
        if "RESOURCE_EXHAUSTED" not in str(error):
            raise
        detail = str(error).strip().splitlines()[0]
        print(
            f"jaxicl: error: out of memory while running ({detail}); use fewer members, heads "
            "or prompts per step (or a smaller members_per_call for a sweep); what was stored "
            "is kept, and rerunning resumes it.",
            file=sys.stderr,
        )
        return 1
    except OSError as error:
        if error.errno in _PATH_ERRORS:
            # --out under a read-only directory, inside a regular file, and the like
            where = error.filename or "the output path"
            print(f"jaxicl: error: cannot write {where}: {error.strerror}.", file=sys.stderr)
            return 1
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # What was stored before the write that failed is whole (atomic writes, flags last).
        where = f" writing {error.filename}" if error.filename else ""
        print(
            f"jaxicl: error: no space left on the device{where}; free some space and rerun the "
            "same command to resume.",
            file=sys.stderr,
        )
        return 1


def _main(argv) -> int:
    parser = _build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        # No arguments: the commands and how to start, not an argparse error.
        print(parser.format_help())
        print("start with: jaxicl run task-allocation   (then: jaxicl run --help)")
        return 0
    args = parser.parse_args(argv)
    use_all_cpu_cores()
    if args.no_compilation_cache:
        os.environ["JAXICL_COMPILATION_CACHE"] = "off"
    if args.command in ("run", "sweep"):  # bench times compiles: never from a cache
        use_compilation_cache()
    if args.command in ("sweep", "inspect", "plot"):
        return _sweep(args)
    if args.command == "bench":
        if not (math.isfinite(args.scale) and args.scale > 0):
            print(
                f"jaxicl: error: `--scale` must be a finite number > 0, got {args.scale}.",
                file=sys.stderr,
            )
            return 2
        try:
            report = run_bench(scale=args.scale, out=args.out)
        except ValueError as error:
            print(f"jaxicl: error: {error}", file=sys.stderr)
            return 2
        print(format_bench(report))
        print(f"report written to {args.out}")
        return 0
    experiment = EXPERIMENTS[args.experiment]
    if experiment.float64:
        jax.config.update("jax_enable_x64", True)
    config_cls, run, describe = experiment.config, experiment.run, experiment.describe
    overrides = dict(experiment.presets.get(getattr(args, "preset", None), {}))
    try:
        for name, kind, _, _ in config_cls.flags():
            text = getattr(args, name)
            if text is not None:
                try:
                    overrides[name] = _parse_tuple(kind, text)
                except ValueError:
                    raise ValueError(f"`{name}` could not be read from {text!r}.") from None
        config = config_cls.of(**overrides)
        summary = run(config, args.out, progress=progress_mode(args.quiet))
    except ValueError as error:
        print(f"jaxicl: error: {error}", file=sys.stderr)
        return 2
    print(describe(summary))
    print(f"results and figure written to {args.out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The ``protoreg`` command line. ``main(argv) -> int`` is callable from tests.

Every command is a thin layer over the Python API (:mod:`protoreg.api`); all printing
lives here. Exit codes: 0 success; 1 a run failed (non-finite loss) or ``check`` found
expulsion; 2 bad input (config, data, plugin, run directory); 130 interrupted (the run directory
is complete).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import NoReturn, Sequence

from protoreg.errors import ProtoregError, UsageError
from protoreg.rundirs.status import checks_notable as _checks_notable
from protoreg.frontend.voice import command_line

PROG = "protoreg"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, like every other bad input
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    from protoreg import __version__

    p = _Parser(prog=PROG, description="Structural regularizers for minimal Gaussian MLPs.")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    fit = sub.add_parser("fit", help="train one model and write its run directory")
    fit.add_argument("--config", type=Path, help="YAML file merged over the defaults")
    fit.add_argument("--out", type=Path, help="run directory (default: runs/<timestamp>)")
    fit.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run to train.steps")
    fit.add_argument("--print-config", action="store_true", help="print the resolved config (YAML) and exit without training")
    fit.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")

    sweep = sub.add_parser("sweep", help="train a grid of runs, batched")
    sweep.add_argument("--config", type=Path, required=True, help="YAML file with a sweep section")
    sweep.add_argument("--out", type=Path, help="sweep directory (default: sweeps/<timestamp>)")
    sweep.add_argument("--print-config", action="store_true", help="print the resolved config (YAML) and exit without training")
    sweep.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")

    check = sub.add_parser("check", help="geometry report of a finished run; exit 1 if expulsion")
    check.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    check.add_argument("--json", action="store_true", help="machine-readable output")

    sub.add_parser("plugins", help="registered losses, datasets and studies")
    return p


def _fmt(v: float) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _print_config(command: str, args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from protoreg.api import resolve_config

    config = args.config
    if command == "fit" and args.resume is not None:
        if config is not None:
            raise UsageError("--resume takes the run's own config.yaml; drop --config")
        config = Path(args.resume) / "config.yaml"
    cfg = resolve_config(*args.overrides, config=config, sweep=command == "sweep")
    if command == "fit":  # fit ignores the sweep section: do not show keys that change nothing
        shown = OmegaConf.to_container(cfg)
        assert isinstance(shown, dict)
        shown.pop("sweep", None)
        cfg = OmegaConf.create(shown)
    print(OmegaConf.to_yaml(cfg), end="")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from protoreg.api import fit

    if args.print_config:
        return _print_config("fit", args)
    run = fit(*args.overrides, config=args.config, out=args.out, resume=args.resume)
    m = run.metrics
    losses = [name for name in run.config.losses if name in m["losses"]]  # in config order
    print(f"protoreg fit: {run.status} in {run.seconds or 0.0:.1f}s -> {run.dir}")
    print(
        f"  n={m['n']} width={m['width']} steps={m['steps']} losses={'+'.join(losses) or 'none'}\n"
        f"  fit_mse={_fmt(m['fit_mse'])} recon_error={_fmt(m['recon_error'])} "
        f"specialization_ratio={_fmt(m['specialization_ratio'])} outside_hull_frac={_fmt(m['outside_hull_frac'])}"
    )
    if m.get("recon_ssim") is not None:
        print(f"  recon_ssim={_fmt(m['recon_ssim'])} recon_ncc={_fmt(m['recon_ncc'])} recon_ssim_frac={_fmt(m['recon_ssim_frac'])}")
    events = int(m.get("expulsion_events") or 0)
    if events:
        print(f"  expulsion: {events} event(s) in this run (the first was warned; expulsion_events in metrics.json)")
    if _checks_notable(run.seconds, run.check_seconds):
        print(
            f"  geometry checks took {run.check_seconds:.1f}s of the {run.seconds:.1f}s "
            f"(geometry.every_n_steps={run.config.geometry.every_n_steps} sets how often they run)"
        )
    if run.reason:
        code = run.exit_code
        stream = sys.stderr if code else sys.stdout
        prefix = f"{PROG}: error: " if code == 1 else "  "
        print(prefix + run.reason, file=stream)
    return run.exit_code


def cmd_sweep(args: argparse.Namespace) -> int:
    from protoreg.api import sweep

    if args.print_config:
        return _print_config("sweep", args)
    result = sweep(*args.overrides, config=args.config, out=args.out, echo=print)
    done = result.finished
    print(
        f"protoreg sweep: {done}/{result.runs} runs finished ({result.trained} trained now, {result.skipped} skipped, "
        f"{result.failed} failed) in {result.seconds:.1f}s -> {result.dir}"
    )
    if result.claims:
        print("  claims: " + ", ".join(f"{c.id} {c.verdict}" for c in result.claims))
    if result.failed:
        print(f"{PROG}: error: {result.failed} run(s) failed; see the status and reason columns of {result.dir / 'results.csv'}", file=sys.stderr)
    if result.interrupted:
        print(f"{PROG}: error: interrupted; re-run the same command to resume ({done}/{result.runs} runs finished)", file=sys.stderr)
    return result.exit_code


def cmd_check(args: argparse.Namespace) -> int:
    from protoreg.rundirs.check import run_check

    return run_check(args.run_dir, as_json=args.json)


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def cmd_plugins(args: argparse.Namespace) -> int:
    from protoreg.plugins.registry import Registry

    reg = Registry.load()
    rows = [("name", "role", "pairs_with", "defaults", "source")]
    for name, e in reg.losses.items():
        defaults = ", ".join(f"{k}={v}" for k, v in e.loss.defaults.items()) or "-"
        rows.append((name, e.loss.role, ",".join(e.loss.pairs_with) or "-", defaults, e.source))
    print("losses:")
    print("\n".join(_table(rows)))
    print("datasets:")
    for name, (_, source) in reg.datasets.items():
        print(f"  {name}  ({source})")
    print("studies:")
    srows = [("name", "description", "source")] + [(name, study.description, source) for name, (study, source) in reg.studies.items()]
    print("\n".join(_table(srows)))
    return 0


COMMANDS = {"fit": cmd_fit, "sweep": cmd_sweep, "check": cmd_check, "plugins": cmd_plugins}


def _show_warning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code. The root logger's handlers and level are as before
    when it returns (``main`` may be called from a notebook or a test)."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _main(argv)
    finally:
        for h in root.handlers[:]:
            if h not in saved[0]:
                root.removeHandler(h)
        root.setLevel(saved[1])


def _main(argv: Sequence[str] | None) -> int:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
            with command_line():
                args = build_parser().parse_args(list(argv) if argv is not None else None)
                return COMMANDS[args.command](args)
    except ProtoregError as exc:
        msg = " ".join(str(exc).split())  # always one line
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # e.g. `protoreg plugins | head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0
    except OSError as exc:  # an I/O failure while writing (disk full, ...): staged output is removed
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{PROG}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: error: interrupted", file=sys.stderr)
        return 130


def console_main() -> None:  # pragma: no cover - thin wrapper
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover - ``python -m protoreg.frontend.cli``
    console_main()

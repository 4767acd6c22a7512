"""The ``protoreg`` command line. ``main(argv) -> int`` is callable from tests.

Exit codes: 0 success; 1 a run failed (non-finite loss) or ``check`` found expulsion;
2 bad input (config, data, plugin, run directory); 130 interrupted (the run directory is complete).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Sequence

from .errors import ProtoregError

PROG = "protoreg"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other bad input
        raise ProtoregError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Structural regularizers for minimal Gaussian MLPs.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    fit = sub.add_parser("fit", help="train one model and write its run directory")
    fit.add_argument("--config", type=Path, help="YAML file merged over the defaults")
    fit.add_argument("--out", type=Path, help="run directory (default: runs/<timestamp>)")
    fit.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run to train.steps")
    fit.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")

    sweep = sub.add_parser("sweep", help="train a grid of runs, batched")
    sweep.add_argument("--config", type=Path, required=True, help="YAML file with a sweep section")
    sweep.add_argument("--out", type=Path, help="sweep directory (default: sweeps/<timestamp>)")
    sweep.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")

    check = sub.add_parser("check", help="geometry report of a finished run; exit 1 if expulsion")
    check.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    check.add_argument("--json", action="store_true", help="machine-readable output")

    sub.add_parser("plugins", help="registered losses and datasets")
    return p


def _fmt(v: float) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def cmd_fit(args: argparse.Namespace) -> int:
    from .config import load_config
    from .run import Registry, fit

    reg = Registry.load()
    if args.resume is not None:
        if args.config is not None or args.out is not None:
            raise ProtoregError("--resume takes the run's own config.yaml and directory; drop --config/--out")
        cfg = load_config(Path(args.resume) / "config.yaml", args.overrides) if (Path(args.resume) / "config.yaml").is_file() else None
        result = fit(cfg, reg=reg, resume=args.resume)  # type: ignore[arg-type]
    else:
        cfg = load_config(args.config, args.overrides)
        result = fit(cfg, args.out, reg=reg)
    m = result.metrics
    print(f"protoreg fit: {result.status} in {result.seconds:.1f}s -> {result.out}")
    print(
        f"  n={m['n']} width={m['width']} steps={m['steps']} losses={'+'.join(m['losses']) or 'none'}\n"
        f"  fit_mse={_fmt(m['fit_mse'])} recon_error={_fmt(m['recon_error'])} "
        f"specialization_ratio={_fmt(m['specialization_ratio'])} outside_hull_frac={_fmt(m['outside_hull_frac'])}"
    )
    if result.message:
        stream = sys.stderr if result.exit_code else sys.stdout
        prefix = f"{PROG}: error: " if result.exit_code == 1 else "  "
        print(prefix + result.message, file=stream)
    return result.exit_code


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import run_sweep

    return run_sweep(args.config, args.out, args.overrides)


def cmd_check(args: argparse.Namespace) -> int:
    from .check import run_check

    return run_check(args.run_dir, as_json=args.json)


def cmd_plugins(args: argparse.Namespace) -> int:
    from .plugins import collect_datasets, collect_losses, get_plugin_manager

    pm = get_plugin_manager()
    losses = collect_losses(pm)
    rows = [("name", "role", "pairs_with", "defaults", "source")]
    for name, e in losses.items():
        defaults = ", ".join(f"{k}={v}" for k, v in e.loss.defaults.items()) or "-"
        rows.append((name, e.loss.role, ",".join(e.loss.pairs_with) or "-", defaults, e.source))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print("losses:")
    for r in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print("datasets:")
    for name, (_, source) in collect_datasets(pm).items():
        print(f"  {name}  ({source})")
    return 0


COMMANDS = {"fit": cmd_fit, "sweep": cmd_sweep, "check": cmd_check, "plugins": cmd_plugins}


def _show_warning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
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


if __name__ == "__main__":  # pragma: no cover - ``python -m protoreg.cli``
    console_main()

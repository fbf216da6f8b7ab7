"""`nowcast` console script: one subcommand per role, each owned by the module that implements it.

Subcommands are imported lazily so that `nowcast serve --workers 0` (the API alone) never loads
torch. Each target is a `main(argv: list[str]) -> int` with its own argparse.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("service.serve", "API plus N worker processes"),
    "worker": ("service.worker", "one worker process"),
    "submit": ("service.client", "submit a radar file, show progress, download the forecast"),
    "train": ("models.training.cli", "train a stage: vae | ldm | alignment | package | readout"),
    "evaluate": ("models.evaluation.cli", "score the model and baselines on radar events"),
    "export": ("models.export", "export the VAE encoder/decoder to ONNX"),
    "model-info": ("models.info", "parameter counts and shapes as JSON"),
}


def _usage() -> str:
    lines = ["usage: nowcast <command> [options]", "", "commands:"]
    lines += [f"  {name:<11} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"nowcast: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())

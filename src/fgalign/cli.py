"""The `fgalign` command: one subcommand per stage, each parsed into that stage's config dataclass.

Stages are imported lazily so that `fgalign label` does not pay for importing the PPO trainer.
Bad input (InputError) prints one clear line and exits with code 2. `fgalign --allow-hub COMMAND ...` lets
transformers reach the Hugging Face hub (fgalign is offline otherwise, see fgalign/__init__.py).
`fgalign --parse-only COMMAND ...` parses the command's options and exits (0 when they parse, 2 when not)
without running it: scripts that prepare runs check their command lines with it
(`benchmarks/gpu_check.sh --dry-run`).
"""
from __future__ import annotations

import importlib
import os
import sys

from fgalign import __version__
from fgalign.errors import InputError
from fgalign.runinfo import use_tf32

# name -> (module, config class, run function, one-line help)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "sft": ("fgalign.train.sft", "SFTConfig", "run", "supervised fine-tuning on the task's demonstrations"),
    "sample": ("fgalign.pairs.stage", "SampleConfig", "run", "sample two responses per prompt; the judge picks"),
    "edit": ("fgalign.editors.stage", "EditConfig", "run", "minimally edit each rejected response"),
    "label": ("fgalign.labels.stage", "LabelConfig", "run", "token labels from the edits (for inspection)"),
    "train-rm": ("fgalign.train.reward", "RewardConfig", "run", "train a token- or sequence-level reward model"),
    "eval-rm": ("fgalign.eval.rm_eval", "EvalRMConfig", "run", "pair accuracy, token AUCs, per-label means"),
    "ppo": ("fgalign.rl.trainer", "PPOConfig", "run", "PPO with a (B, T) reward: token, token-shaped, sequence"),
    "eval": ("fgalign.eval.winrate", "EvalConfig", "run", "win rate of a policy against a reference"),
    "best-of-n": ("fgalign.eval.best_of_n", "BestOfNConfig", "run", "best-of-n win rate by reward model: its ceiling at a KL"),
    "show": ("fgalign.report.heatmap", "ShowConfig", "run", "token-reward heatmap of a response (HTML/PNG)"),
    "convert": ("fgalign.models.convert", "ConvertConfig", "run", "write a .gguf (or any) model out as a plain safetensors folder"),
    "pipeline": ("fgalign.pipeline", "PipelineConfig", "run", "every stage, every method, and a report"),
    # no config class: a command with sub-commands parses its own argv (init|users|serve|stats|export)
    "annotate": ("fgalign.annotate.commands", "", "run", "web app where people minimally edit responses"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: fgalign [--allow-hub] [--parse-only] COMMAND [OPTIONS]   (fgalign COMMAND --help for its options)",
             "", "--allow-hub: let transformers download hub ids (offline otherwise; HF_HUB_OFFLINE=0 does the same)",
             "--parse-only: parse the command's options and exit without running it",
             "", "commands:"]
    lines += [f"  {name:<{width}}  {spec[3]}" for name, spec in COMMANDS.items()]
    return "\n".join(lines)


def flag(name: str) -> str:
    """A field name as its command-line flag (tyro's spelling: `in_` -> `--in`, `n_prompts` -> `--n-prompts`)."""
    return "--" + name.rstrip("_").replace("_", "-")


def renamed_flags(config_class: type) -> dict[str, str]:
    """Old flag -> new flag, from what the config class declares (`RENAMED`, old field -> new; `FLAT`, nested
    settings shown flat): the CLI and the pipeline YAML read the same declarations."""
    import dataclasses
    import typing

    renamed = {flag(old): flag(new) for old, new in getattr(config_class, "RENAMED", {}).items()}
    hints = typing.get_type_hints(config_class)
    for nested in getattr(config_class, "FLAT", ()):
        for f in dataclasses.fields(hints[nested]):
            renamed[f"--{nested}.{f.name.replace('_', '-')}"] = flag(f.name)
    renamed.update({f"--no-{old[2:]}": f"--no-{new[2:]}" for old, new in list(renamed.items())})  # booleans
    return renamed


def with_new_flags(name: str, config_class: type, args: list[str]) -> list[str]:
    """`args` with every old spelling replaced by its new one, each named once on stderr as deprecated."""
    renamed = renamed_flags(config_class)
    out = []
    for arg in args:
        key, eq, value = arg.partition("=")
        new = renamed.get(key) or renamed.get(key.replace("_", "-")) if key.startswith("--") else None
        if new:
            print(f"fgalign {name}: deprecated: {key} is now {new} (the old name works until the next release)",
                  file=sys.stderr)
            arg = new + eq + value
        out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parse_only = False
    while argv and argv[0] in ("--allow-hub", "--parse-only"):
        if argv[0] == "--allow-hub":
            os.environ["HF_HUB_OFFLINE"] = "0"  # read by huggingface_hub when first imported, which is later
        else:
            parse_only = True
        argv = argv[1:]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"fgalign {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"fgalign: unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        return 2
    import tyro

    module_name, config_name, run_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    run = getattr(module, run_name)
    if config_name:
        config_class = getattr(module, config_name)
        cfg = tyro.cli(config_class, args=with_new_flags(name, config_class, rest), prog=f"fgalign {name}",
                       description=help_text)
    else:
        cfg = rest
    if parse_only:
        print(f"fgalign {name}: options parse")
        return 0
    use_tf32()  # fp32 work on CUDA (a no-op on the CPU)
    try:
        run(cfg)
    except InputError as e:
        print(f"fgalign {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = getattr(module, "interrupted_message", None)  # a stage that can resume says how
        print(f"fgalign {name}: interrupted; " + (hint(cfg) if hint else
              "outputs are written atomically, nothing half-written was kept"), file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

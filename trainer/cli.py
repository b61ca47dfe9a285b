"""``specrec-train``: train a model from a dataset path and publish it to the model registry.

Every TrainConfig field is an option (``--lr``, ``--shrink-norm``, ``--adaptive-tau`` /
``--no-adaptive-tau``, ``--ks 10 20`` ...); unset options keep the per-objective defaults of
``TrainConfig.defaults(objective, encoder)``. Exit codes: 0 success, 1 training failed
(diverged), 2 bad input (unreadable dataset, invalid hyper-parameter, unusable device).
"""

from __future__ import annotations

import argparse
import os
import sys
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any, get_args

from contract import layout
from contract.config import ConfigError, Encoder, Objective, TrainConfig

_SPECIAL = {"encoder", "objective"}


def default_models_dir() -> Path:
    """``$SPECREC_MODELS_DIR``, else ``$SPECREC_HOME/models`` (home defaults to ``./var``):
    the registry the API and the worker use."""
    models_dir = os.environ.get("SPECREC_MODELS_DIR")
    home = Path(os.environ.get("SPECREC_HOME", "var"))
    return layout.registry_dir(home, Path(models_dir) if models_dir else None)


def _field_help(name: str) -> str:
    doc = _FIELD_DOCS.get(name, "")
    return " ".join(doc.split())


def _field_docs() -> dict[str, str]:
    """Attribute docstrings of TrainConfig (the string literal after each field)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(TrainConfig))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for prev, node in zip(body, body[1:], strict=False):
        if (
            isinstance(prev, ast.AnnAssign)
            and isinstance(prev.target, ast.Name)
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            docs[prev.target.id] = node.value.value
    return docs


_FIELD_DOCS = _field_docs()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="specrec-train",
        description="Train a DirectSpec/DirectSpec+ (or baseline) recommender and publish it.",
    )
    p.add_argument("--data", required=True, help="dataset path (see trainer/data.py formats)")
    p.add_argument("--encoder", choices=get_args(Encoder), default="mf", help="default mf")
    p.add_argument(
        "--objective",
        choices=get_args(Objective),
        default="directspec+",
        help="default directspec+; picks the default hyper-parameters",
    )
    p.add_argument(
        "--holdout",
        type=float,
        default=0.2,
        help="test share per user for interactions tables (default 0.2)",
    )
    p.add_argument(
        "--split-seed", type=int, default=0, help="seed of that holdout split (default 0)"
    )
    p.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="model registry root (default: $SPECREC_MODELS_DIR, else $SPECREC_HOME/models)",
    )
    p.add_argument("--keep", type=int, default=5, help="published versions to keep (default 5)")
    p.add_argument("--no-publish", action="store_true", help="train and report only")
    p.add_argument("--no-activate", action="store_true", help="publish without switching CURRENT")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    hp = p.add_argument_group("hyper-parameters (default: per-objective defaults)")
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        if f.name in _SPECIAL:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        help_text = _field_help(f.name) + " (default: per objective)"
        if kind is bool:
            hp.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif f.name == "ks":
            hp.add_argument(flag, type=int, nargs="+", default=None, help=help_text)
        elif typing.get_origin(kind) is typing.Literal:
            hp.add_argument(flag, choices=get_args(kind), default=None, help=help_text)
        else:
            base = _scalar_type(kind)
            hp.add_argument(flag, type=base, default=None, help=help_text)
    return p


def _scalar_type(kind: Any) -> type:
    args = [a for a in get_args(kind) if a is not type(None)]
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        return args[0]
    return kind


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides: dict[str, Any] = {}
    for f in fields(TrainConfig):
        if f.name in _SPECIAL:
            continue
        value = getattr(args, f.name)
        if value is not None:
            overrides[f.name] = tuple(value) if f.name == "ks" else value
    return TrainConfig.defaults(args.objective, args.encoder, **overrides)


def format_table(result: Any, cfg: TrainConfig) -> str:
    """The final metrics and spectrum as an aligned two-column table."""
    rows: list[tuple[str, str]] = [
        ("model", f"{cfg.encoder}-{cfg.objective}"),
        ("epochs", str(result.epochs_run)),
        ("device", result.device),
        ("seconds/epoch", f"{result.seconds_per_epoch:.3f}"),
    ]
    for key, value in result.metrics.items():
        rows.append((key, str(value) if key == "n_users" else f"{value:.4f}"))
    if result.history:
        spec = result.history[-1]["spectrum"]["all"]
        rows.append(("erank (normalised)", f"{spec['normalized']['effective_rank']:.2f}"))
        rows.append(("erank (raw)", f"{spec['raw']['effective_rank']:.2f}"))
    if result.best_epoch is not None:
        rows.append(("best epoch", str(result.best_epoch)))
    width = max(len(k) for k, _ in rows)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from trainer.data import DataError, load_dataset
    from trainer.device import DeviceError, pick_device

    try:
        cfg = config_from_args(args)
        pick_device(cfg.device)  # fail early on an unusable device
        ds = load_dataset(args.data, holdout=args.holdout, seed=args.split_seed)
    except (ConfigError, DataError, DeviceError, FileNotFoundError, NotADirectoryError) as e:
        print(f"specrec-train: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # e.g. holdout out of range
        print(f"specrec-train: error: {e}", file=sys.stderr)
        return 2

    from contract.artifact import ModelRegistry
    from trainer.train import TrainingDiverged, fit, publish_result

    print(
        f"dataset {ds.name}: {ds.n_users} users, {ds.n_items} items, {ds.n_train} train pairs, "
        f"{len(ds.test_users)} test pairs",
        file=sys.stderr,
    )
    try:
        result = fit(ds, cfg, progress_bar=False if args.no_progress else None)
    except TrainingDiverged as e:
        print(f"specrec-train: error: {e}", file=sys.stderr)
        return 1
    print(format_table(result, cfg))
    if not args.no_publish:
        registry = ModelRegistry(args.models_dir or default_models_dir())
        version = publish_result(
            result, ds, cfg, registry, keep=args.keep, activate=not args.no_activate
        )
        print(f"published {version} to {registry.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

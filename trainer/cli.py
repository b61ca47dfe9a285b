"""``specrec-train``: train a model from a dataset path and publish it to the model registry.

The options are generated from ``contract.config.TrainConfig`` with pydantic-settings
(``CliApp``): every TrainConfig field is an option (``--lr``, ``--shrink-norm``,
``--adaptive-tau`` / ``--no-adaptive-tau``, ``--ks 10 20`` or ``--ks 10,20`` ...) whose help is
the field's docstring and range; options left out (or given as ``auto``) keep the dataset's
defaults, as POST /retrain does: ``contract.config.dataset_config(dataset, objective, encoder)``,
the per-objective defaults plus the dataset's own row of ``DATASET_DEFAULTS`` (the synthetic
``default`` dataset's short schedules) by the name of ``--data``. Only the command line sets
hyper-parameters: no environment variable does (the registry follows ``$SPECREC_MODELS_DIR`` /
``$SPECREC_HOME`` as the API does). Exit codes: 0 success, 1 training failed (diverged), 2 bad
input (unknown option, unreadable dataset, invalid hyper-parameter, unusable device), with a
one-line message.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any, Literal, get_origin

from pydantic import Field, ValidationError, create_model
from pydantic_settings import (
    BaseSettings,
    CliApp,
    CliSettingsSource,
    CliVariadicArg,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from contract.config import (
    ConfigError,
    Encoder,
    Objective,
    Preset,
    TrainConfig,
    dataset_config,
    describe_errors,
    expected,
    optional_fields,
)
from contract.settings import HomeSettings, IndexBuildEnv
from trainer.launch import DEFAULT_TIMEOUT_S

PROG = "specrec-train"
#: TrainConfig fields that are options of their own: they choose the defaults (always set).
_SPECIAL = ("encoder", "objective")


def default_models_dir() -> Path:
    """The registry the API and the worker use (contract.settings.HomeSettings:
    ``$SPECREC_MODELS_DIR``, else ``$SPECREC_HOME/models``)."""
    return HomeSettings().registry_root


def _doc(name: str) -> str:
    return " ".join((TrainConfig.model_fields[name].description or "").split())


class RunOptions(BaseSettings):
    """Train a DirectSpec/DirectSpec+ (or baseline) recommender and publish it.

    Hyper-parameter options left out (or given as "auto") keep the dataset's defaults for the
    objective: TrainConfig.defaults(objective, encoder), with the short schedules of the
    synthetic default dataset for a directory named "default" (contract.config.DATASET_DEFAULTS).
    Exit codes: 0 trained (and published), 1 training failed, 2 bad input.
    """

    model_config = SettingsConfigDict(
        cli_prog_name=PROG,
        cli_kebab_case=True,
        # --no-publish (a False default) is one flag; --adaptive-tau / --no-adaptive-tau (unset
        # by default) are two
        cli_implicit_flags="toggle",
        cli_hide_none_type=True,
        cli_avoid_json=True,
        cli_enforce_required=True,
        cli_parse_none_str="auto",
        cli_exit_on_error=False,  # main() prints one line and returns 2
        use_attribute_docstrings=True,
        extra="forbid",
    )

    data: Path
    """Dataset path (see trainer/data.py formats)."""
    encoder: Encoder = Field("mf", description=_doc("encoder"))
    objective: Objective = Field(
        "directspec+", description=_doc("objective") + " Picks the default hyper-parameters."
    )
    preset: Preset | None = None
    """Named hyper-parameter set applied over the objective's defaults, under the options
    given (gowalla-reference: DirectSpec's Gowalla set; gowalla-fast: the same with lr 1000
    and shrink_norm 0.1, which learns in a few epochs; docs/method.md)."""
    holdout: float = 0.2
    """Test share per user for interactions tables."""
    split_seed: int = 0
    """Seed of that holdout split."""
    models_dir: Path | None = None
    """Model registry root (auto: $SPECREC_MODELS_DIR, else $SPECREC_HOME/models)."""
    keep: int = 5
    """Published versions to keep."""
    no_publish: bool = False
    """Train and report only."""
    refit: bool | None = None
    """After the evaluation run on the split (the metrics reported and published), fit the
    same config on every pair, train and test, and publish that model (twice the training
    time). Auto: on when publishing, off with --no-publish."""
    no_activate: bool = False
    """Publish without switching CURRENT."""
    index_recall: float = Field(default_factory=lambda: IndexBuildEnv().index_recall, ge=0, le=1)
    """Recall@20 an embedding model's shipped approximate item index must reach on held-out
    user vectors (auto: $SPECREC_INDEX_RECALL, else 0.95); exact search when none does or
    it is not faster. 0: choose no index (the service searches exactly)."""
    no_progress: bool = False
    """No progress bar."""
    nproc_per_node: int = Field(1, ge=1, le=1024)
    """Data-parallel training processes on this machine, launched with torchrun (gloo on
    CPU, NCCL and one GPU each on CUDA); for several machines run torchrun yourself
    (docs/distributed.md)."""
    dist_timeout_s: float = Field(DEFAULT_TIMEOUT_S, gt=0)
    """Seconds a rank waits for the others before a distributed run fails (a hung rank)."""
    checkpoint_dir: Path | None = None
    """Write training checkpoints here (model, optimiser, random generators, epoch, history;
    atomically; the newest two kept)."""
    checkpoint_every: int = Field(1, ge=1)
    """Epochs between checkpoints (with --checkpoint-dir)."""
    resume: bool = False
    """Continue from the latest checkpoint in --checkpoint-dir (none there: start from epoch
    1); refused when its config, dataset or number of ranks differ from this run's."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The command line only (CliApp adds it): no environment variable, .env or secret."""
        return (init_settings,)


def _hyperparameter_options() -> dict[str, Any]:
    """TrainConfig's fields (but encoder and objective) as options, unset by default. Their help
    is the field's docstring and range; the ranges are TrainConfig's to check (its messages name
    them), so an option only has the field's type."""
    fields = optional_fields(_SPECIAL, constraints=False)
    for name, (tp, info) in fields.items():
        field = TrainConfig.model_fields[name]
        want = expected(field)
        # choices (Literal) and flags (bool) show what they accept already
        shown = get_origin(field.annotation) is Literal or field.annotation is bool
        want = want.removesuffix(" or None") if want else want  # None is "auto" here
        help_text = _doc(name) + (f" Expected: {want}." if want and not shown else "")
        if name == "ks":  # --ks 10 20 (and --ks 10,20)
            tp = CliVariadicArg[tp]  # type: ignore[misc,valid-type]  # a field's type, computed
        fields[name] = (tp, Field(info.default, description=help_text))
    return fields


TrainOptions = create_model(
    "TrainOptions",
    __base__=RunOptions,
    __doc__=inspect.cleandoc(RunOptions.__doc__ or ""),
    __module__=__name__,
    **_hyperparameter_options(),
)
"""specrec-train's command line: RunOptions plus every other TrainConfig field."""


def _add_argument(parser: Any, *names: str, **kwargs: Any) -> Any:
    if kwargs.get("dest") == "ks":
        kwargs["metavar"] = "K"
    return parser.add_argument(*names, **kwargs)


def parse_args(argv: list[str] | None = None) -> Any:
    """The TrainOptions of ``argv`` (default ``sys.argv[1:]``); SettingsError for an unknown
    option or a missing --data, ValidationError for a value of the wrong type."""
    source: CliSettingsSource[Any] = CliSettingsSource(
        TrainOptions, add_argument_method=_add_argument
    )
    args = sys.argv[1:] if argv is None else argv
    return CliApp.run(TrainOptions, cli_args=args, cli_settings_source=source)


def config_from_args(args: Any) -> TrainConfig:
    """The dataset's defaults for objective and encoder (``dataset_config``, as POST /retrain
    uses) with the options that were given on top."""
    overrides = {
        name: getattr(args, name)
        for name in args.model_fields_set
        if name in TrainConfig.model_fields
        and name not in _SPECIAL
        and getattr(args, name) is not None
    }
    from trainer.data import dataset_name

    return dataset_config(
        dataset_name(args.data), args.objective, args.encoder, preset=args.preset, **overrides
    )


def format_table(result: Any, cfg: TrainConfig) -> str:
    """The final metrics and spectrum as an aligned two-column table."""
    rows: list[tuple[str, str]] = [
        ("model", f"{cfg.encoder}-{cfg.objective}"),
        ("epochs", str(result.epochs_run)),
        ("device", result.device),
        ("ranks", str(result.extra.get("distributed", {}).get("world_size", 1))),
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
    try:
        args = parse_args(argv)
    except SettingsError as e:  # argparse's message, one line
        print(f"{PROG}: error: {str(e).removeprefix('error parsing CLI: ')}", file=sys.stderr)
        return 2
    except ValidationError as e:
        print(f"{PROG}: error: {describe_errors(e)}", file=sys.stderr)
        return 2
    from trainer.data import DataError, load_dataset
    from trainer.device import DeviceError, pick_device
    from trainer.distributed import launched_by_torchrun

    if args.resume and args.checkpoint_dir is None:
        print(f"{PROG}: error: --resume needs --checkpoint-dir", file=sys.stderr)
        return 2
    try:
        cfg = config_from_args(args)
        device = pick_device(cfg.device)  # fail early on an unusable device
        ds = load_dataset(args.data, holdout=args.holdout, seed=args.split_seed)
    except (ConfigError, DataError, DeviceError, FileNotFoundError, NotADirectoryError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # e.g. holdout out of range
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2

    if args.refit and args.no_publish:
        print(f"{PROG}: error: --refit needs publishing (drop --no-publish)", file=sys.stderr)
        return 2
    if args.nproc_per_node > 1 and not launched_by_torchrun():
        from trainer.launch import run_torchrun, without_option

        # the same command line in every rank, less the launch itself
        rank_args = without_option(_argv(argv), "--nproc-per-node")
        return run_torchrun(args.nproc_per_node, ["-m", "trainer.cli", *rank_args])
    return _train(args, cfg, ds, device)


def _argv(argv: list[str] | None) -> list[str]:
    return list(sys.argv[1:] if argv is None else argv)


def _train(args: Any, cfg: TrainConfig, ds: Any, device: Any) -> int:
    """Train (as one rank of a torchrun launch, or alone), report and publish (rank 0)."""
    from contract.artifact import ModelRegistry
    from trainer.checkpoint import CheckpointMismatch, CheckpointOptions
    from trainer.distributed import close_world, init_world
    from trainer.refit import evaluate_then_refit, publish_fitted
    from trainer.train import TrainingDiverged, fit

    world = init_world(device, args.dist_timeout_s)
    if world.is_main:
        print(
            f"dataset {ds.name}: {ds.n_users} users, {ds.n_items} items, {ds.n_train} "
            f"train pairs, {len(ds.test_users)} test pairs"
            + (f"; {world.size} ranks ({world.backend})" if world.parallel else ""),
            file=sys.stderr,
        )
    bar = False if args.no_progress or not world.is_main else None
    refit = not args.no_publish if args.refit is None else args.refit

    def run(d: Any, c: TrainConfig) -> Any:
        """One run; the evaluation run checkpoints into --checkpoint-dir, the refit (on
        every pair) into its ``refit/`` subdirectory."""
        checkpoint = None
        if args.checkpoint_dir is not None:
            where = args.checkpoint_dir / "refit" if d is not ds else args.checkpoint_dir
            checkpoint = CheckpointOptions(where, args.checkpoint_every, args.resume)
        return fit(d, c, progress_bar=bar, world=world, checkpoint=checkpoint)

    try:
        fitted = evaluate_then_refit(ds, cfg, run, refit=refit)
    except TrainingDiverged as e:  # every rank sees the same loss: all stop here
        if world.is_main:
            print(f"{PROG}: error: {e}", file=sys.stderr)
        close_world(world)
        return 1
    except CheckpointMismatch as e:  # every rank reads the same checkpoint
        if world.is_main:
            print(f"{PROG}: error: {e}", file=sys.stderr)
        close_world(world)
        return 2
    if world.is_main:
        if fitted.evaluation.resumed_from is not None:
            resumed = fitted.evaluation.resumed_from
            print(f"resumed from the epoch-{resumed} checkpoint", file=sys.stderr)
        print(format_table(fitted.evaluation, cfg))
        if not args.no_publish:
            registry = ModelRegistry(args.models_dir or default_models_dir())
            version = publish_fitted(
                fitted,
                ds,
                cfg,
                registry,
                keep=args.keep,
                activate=not args.no_activate,
                index_recall=args.index_recall,
            )
            pairs = fitted.trained_on
            print(
                f"published {version} to {registry.root} (fitted on "
                + (f"all {pairs.n_pairs} pairs)" if pairs.pairs == "all" else "the train pairs)")
            )
    close_world(world)
    return 0


if __name__ == "__main__":
    # record: a rank's uncaught exception goes into torchrun's failure summary
    from torch.distributed.elastic.multiprocessing.errors import record

    code = record(main)() or 0
    from trainer.distributed import exit_rank, launched_by_torchrun

    if launched_by_torchrun():
        exit_rank(code)
    sys.exit(code)

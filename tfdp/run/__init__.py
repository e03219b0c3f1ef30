"""tfdp.run: one training run as a library call (what scripts/train.py runs).

    RunConfig(...).validated()               the checked settings of one run (frozen)
    train_and_evaluate(config) -> RunResult  train, evaluate, account, attack, export
    load_data(config), write_metrics(result, path), export_name(config)
    compare(CompareConfig(...)) -> ComparisonResult   every method side by side (make demo)
    evaluate_privacy(model, members, non_members, claim=...)  attacks + utility + audit of a
        saved model (load_model reads a .keras file or an export's signature)

Modules, one job each: config (settings and the method names), methods (model,
optimizer, loss, calibration and privacy record of each method), checkpoint (the
model_dir), progress (the per-epoch line), training (the run), result (RunResult),
exporting (SavedModel exports of a run). The scripts are thin entry points over this.
"""

from tfdp.run.config import (
    DP_SGD_MECHANISMS,
    METHODS,
    NO_DP,
    OPTIMIZERS,
    OTHER_METHODS,
    RESIDUAL_NOISE,
    SAMPLINGS,
    SCHEDULES,
    RunConfig,
    TrainConfig,
)
from tfdp.run.result import RunResult, write_metrics
from tfdp.run.methods import OptimizerPathModel, build_model, planned_steps
from tfdp.run.training import evaluate_utility, load_data, train_and_evaluate
from tfdp.run.exporting import export_model, export_name, load_from_model_dir
from tfdp.run.evaluation import Evaluation, evaluate_privacy, load_model
from tfdp.run.comparison import METHOD_SETTINGS, CompareConfig, ComparisonResult, compare

__all__ = [
    "Evaluation",
    "evaluate_privacy",
    "load_model",
    "CompareConfig",
    "ComparisonResult",
    "compare",
    "METHOD_SETTINGS",
    "RunConfig",
    "TrainConfig",
    "RunResult",
    "train_and_evaluate",
    "load_data",
    "write_metrics",
    "evaluate_utility",
    "build_model",
    "planned_steps",
    "OptimizerPathModel",
    "export_name",
    "export_model",
    "load_from_model_dir",
    "METHODS",
    "NO_DP",
    "DP_SGD_MECHANISMS",
    "OTHER_METHODS",
    "RESIDUAL_NOISE",
    "SCHEDULES",
    "SAMPLINGS",
    "OPTIMIZERS",
]

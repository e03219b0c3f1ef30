"""The fast per-example-gradient training path: `make_private(model)`.

Each trainable variable's per-example gradient takes an exact path chosen when the
step is traced (`gradient_plan`): a layer rule (`rules/`, one module per layer type,
open to users through `register_layer_rule`), the layer's own vectorized per-example
VJP (`local_gradients`), or the model's per-example Jacobian. `make_private` also
takes augmentation multiplicity (`augmentation` holds named augmentations) and
physical batches smaller than the logical one. `split_frozen_prefix` cuts a model whose
first layers are frozen, so that their features are computed once and only the head trains.
`fold_batch_norm` and `batch_norm_to_group_norm` rewrite a model whose BatchNormalization
would train on batch statistics (fold it into the layer before it; or GroupNormalization).
`set_fine_tuning` makes a pretrained part's last blocks trainable, or puts LoRA on them.
"""

from tfdp.training.augmentation import augmentation_names, make_augmentation
from tfdp.training.batch_norm import batch_norm_to_group_norm, fold_batch_norm

from tfdp.training.fine_tuning import FINE_TUNE_MODES, FineTuning, set_fine_tuning
from tfdp.training.frozen_features import FrozenSplit, split_frozen_prefix
from tfdp.training.per_example import ClippedGradientSum, clipped_gradient_sum, gradient_plan
from tfdp.training.plan import GradientPlan, make_plan
from tfdp.training.private_model import PrivateModel, check_dp_compatible, make_private
from tfdp.training.step_options import StepOptions
from tfdp.training.rules import (LayerRule, PerExampleGradientRule, layer_rule,
                                 register_layer_rule, registered_rules, rule_for, rule_names,
                                 unregister_layer_rule, var_key)

__all__ = ["make_private", "PrivateModel", "check_dp_compatible", "LayerRule",
           "PerExampleGradientRule", "layer_rule", "register_layer_rule", "unregister_layer_rule",
           "registered_rules", "rule_for", "rule_names", "gradient_plan", "GradientPlan",
           "make_plan", "clipped_gradient_sum", "ClippedGradientSum", "var_key",
           "make_augmentation", "augmentation_names", "StepOptions", "split_frozen_prefix",
           "FrozenSplit", "fold_batch_norm", "batch_norm_to_group_norm", "set_fine_tuning",
           "FineTuning", "FINE_TUNE_MODES"]

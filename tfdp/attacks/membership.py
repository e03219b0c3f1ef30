"""Membership inference with TF Privacy's attack library (tensorflow-privacy 0.8.12).

The model is run over its training examples (members) and held-out examples
(non-members); the library's attacks then try to tell the two apart from the
model's outputs and losses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple, Union

import numpy as np

from tfdp._tf_privacy import mia, mia_data_structures
from tfdp._validation import check_positive_int
from tfdp.attacks import _predictions
from tfdp.attacks.attack_report import ENTIRE_DATASET, AttackReport

AttackInputData = mia_data_structures.AttackInputData
AttackResults = mia_data_structures.AttackResults
AttackType = mia_data_structures.AttackType
SingleSliceSpec = mia_data_structures.SingleSliceSpec
SlicingFeature = mia_data_structures.SlicingFeature
SlicingSpec = mia_data_structures.SlicingSpec

THRESHOLD_ATTACKS: Tuple[AttackType, ...] = (
    AttackType.THRESHOLD_ATTACK,
    AttackType.THRESHOLD_ENTROPY_ATTACK,
)
TRAINED_ATTACKS: Tuple[AttackType, ...] = (
    AttackType.LOGISTIC_REGRESSION,
    AttackType.MULTI_LAYERED_PERCEPTRON,
    AttackType.RANDOM_FOREST,
    AttackType.K_NEAREST_NEIGHBORS,
)
DEFAULT_ATTACK_TYPES: Tuple[AttackType, ...] = THRESHOLD_ATTACKS + TRAINED_ATTACKS

# Every spelling a user may give for an attack: our name, the enum name, the library's value.
_ATTACK_ALIASES: Dict[str, AttackType] = {}
for _attack in AttackType:
    _ATTACK_ALIASES[_attack.name.lower()] = _attack
    _ATTACK_ALIASES[_attack.value.lower()] = _attack
_ATTACK_ALIASES.update(
    {
        "threshold_entropy": AttackType.THRESHOLD_ENTROPY_ATTACK,
        "entropy": AttackType.THRESHOLD_ENTROPY_ATTACK,
        "loss": AttackType.THRESHOLD_ATTACK,
        "mlp": AttackType.MULTI_LAYERED_PERCEPTRON,
        "knn": AttackType.K_NEAREST_NEIGHBORS,
    }
)

_SLICINGS = ("class", "correctness", "percentiles", "none")

SlicingArg = Union[None, str, Iterable[str], SlicingSpec]


def attack_name(attack_type: AttackType) -> str:
    """Our key for an attack in reports, e.g. 'threshold_attack', 'logistic_regression'."""
    return attack_type.name.lower()


def parse_attack_types(attack_types: Any) -> Tuple[AttackType, ...]:
    """AttackType tuple from None (all six), names, library values or AttackType members."""
    if attack_types is None:
        return DEFAULT_ATTACK_TYPES
    if isinstance(attack_types, (str, AttackType)):
        attack_types = [attack_types]
    parsed = []
    for item in attack_types:
        key = item.strip().lower() if isinstance(item, str) else None
        if isinstance(item, AttackType):
            attack = item
        elif key is not None and (key in _ATTACK_ALIASES or key.replace("-", "_") in _ATTACK_ALIASES):
            attack = _ATTACK_ALIASES.get(key) or _ATTACK_ALIASES[key.replace("-", "_")]
        else:
            raise ValueError(
                f"Unknown attack type {item!r}. Allowed: "
                f"{[attack_name(a) for a in AttackType]} (or the library's short names "
                f"{[a.value for a in AttackType]})."
            )
        if attack not in parsed:
            parsed.append(attack)
    if not parsed:
        raise ValueError("`attack_types` is empty: give at least one attack, or None for all.")
    return tuple(parsed)


def parse_slicing(slicing: SlicingArg) -> SlicingSpec:
    """A library SlicingSpec (always including the entire data set) from our `slicing` argument."""
    if isinstance(slicing, SlicingSpec):
        return dataclasses.replace(slicing, entire_dataset=True)
    if slicing is None:
        names: Sequence[str] = ()
    elif isinstance(slicing, str):
        names = (slicing,)
    else:
        names = tuple(slicing)
    unknown = [n for n in names if not isinstance(n, str) or n not in _SLICINGS]
    if unknown:
        raise ValueError(
            f"Unknown slicing {unknown}: use any of {_SLICINGS[:-1]} (or 'none'/None for the "
            "entire data set only), or a TF Privacy SlicingSpec."
        )
    return SlicingSpec(
        entire_dataset=True,
        by_class="class" in names,
        by_classification_correctness="correctness" in names,
        by_percentiles="percentiles" in names,
    )


def _slice_name(spec: SingleSliceSpec) -> str:
    if spec.entire_dataset:
        return ENTIRE_DATASET
    if spec.feature == SlicingFeature.CLASS:
        return f"class={spec.value}"
    if spec.feature == SlicingFeature.CORRECTLY_CLASSIFIED:
        return f"correctly_classified={spec.value}"
    if spec.feature == SlicingFeature.PERCENTILE:
        return "loss_percentiles={}-{}".format(*spec.value)
    if spec.feature == SlicingFeature.CUSTOM:
        _, _, group, group_name = spec.value
        return f"custom={group_name if group_name is not None else group}"
    return str(spec)


def _metrics(result: Any) -> Dict[str, Any]:
    bounds = np.asarray(result.get_epsilon_lower_bound(), dtype=np.float64)
    top = float(bounds[0]) if bounds.size else 0.0
    return {
        "auc": float(result.get_auc()),
        "advantage": float(result.get_attacker_advantage()),
        "ppv": float(result.get_ppv()),
        # epsilon >= 0 always, so flooring the bound at 0 keeps it a lower bound.
        "epsilon_lower_bound": max(0.0, top),
        "epsilon_lower_bounds": [float(b) for b in bounds],
        "n_members": int(result.data_size.ntrain),
        "n_nonmembers": int(result.data_size.ntest),
    }


@contextlib.contextmanager
def _seeded_numpy(seed: Optional[int]):
    """Fixes NumPy's global RNG (the library's shuffles and scikit-learn attackers use it), then restores it."""
    if seed is None:
        yield
        return
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _run(
    members: _predictions.Predictions,
    nonmembers: _predictions.Predictions,
    *,
    attack_types: Any,
    slicing: SlicingArg,
    seed: Optional[int],
    backend: Optional[str],
    trained_attacks_per_slice: bool,
    balance_attacker_training: bool,
) -> AttackReport:
    attacks = parse_attack_types(attack_types)
    slicing_spec = parse_slicing(slicing)
    if members.num_classes != nonmembers.num_classes:
        raise ValueError(
            f"The model gave {members.num_classes} classes on the members but "
            f"{nonmembers.num_classes} on the non-members."
        )
    if members.label_shape != nonmembers.label_shape:
        raise ValueError(
            f"Mismatched label shapes: member labels have per-example shape {members.label_shape}, "
            f"non-member labels {nonmembers.label_shape}. Use the same label format for both."
        )
    # Normalized log-probabilities go in as "logits": the library's softmax of them gives
    # back the probabilities, and (rows summing to <= 0, never 1) they cannot be mistaken for
    # probabilities by its entropy code. The losses are passed explicitly, computed in float64.
    attack_input = AttackInputData(
        logits_train=members.log_probs,
        logits_test=nonmembers.log_probs,
        labels_train=members.labels,
        labels_test=nonmembers.labels,
        loss_train=members.loss,
        loss_test=nonmembers.loss,
    )
    sliced = [a for a in attacks if trained_attacks_per_slice or not a.is_trained_attack]
    entire_only = [a for a in attacks if a not in sliced]
    runs = [(slicing_spec, sliced), (SlicingSpec(entire_dataset=True), entire_only)]
    single_results, metadata = [], None
    with _seeded_numpy(seed), warnings.catch_warnings():
        # The library's grid searches include settings scikit-learn 1.5 rejects (random
        # forest max_features='auto') or that stop early; it keeps the valid fits.
        warnings.simplefilter("ignore")
        for spec, attack_list in runs:
            if not attack_list:
                continue
            run = mia.run_attacks(
                attack_input,
                slicing_spec=spec,
                attack_types=attack_list,
                balance_attacker_training=balance_attacker_training,
                backend=backend,
            )
            single_results.extend(run.single_attack_results)
            metadata = metadata or run.privacy_report_metadata
    results = AttackResults(single_attack_results=single_results, privacy_report_metadata=metadata)
    # Report attacks in the order asked for.
    order = {a.name: i for i, a in enumerate(attacks)}
    single_results.sort(key=lambda r: (not r.slice_spec.entire_dataset, order[r.attack_type.name]))

    per_slice: Dict[str, Dict[str, Dict[str, Any]]] = {}
    roc_curves, scores = {}, {}
    for result in results.single_attack_results:
        slice_key = _slice_name(result.slice_spec)
        name = attack_name(result.attack_type)
        per_slice.setdefault(slice_key, {})[name] = _metrics(result)
        if result.slice_spec.entire_dataset:
            roc_curves[name] = (np.asarray(result.roc_curve.fpr), np.asarray(result.roc_curve.tpr))
            scores[name] = (
                np.asarray(result.membership_scores_train, dtype=np.float64),
                np.asarray(result.membership_scores_test, dtype=np.float64),
            )
    per_attack = per_slice.get(ENTIRE_DATASET, {})
    if not per_attack:
        raise ValueError(
            "No attack produced a result on the entire data set: too few examples "
            f"({members.num_examples} members, {nonmembers.num_examples} non-members) for "
            f"{[attack_name(a) for a in attacks]}. Use more examples or the threshold attacks."
        )
    return AttackReport(
        per_attack=per_attack,
        per_slice=per_slice,
        n_members=members.num_examples,
        n_nonmembers=nonmembers.num_examples,
        num_classes=members.num_classes,
        from_logits=members.from_logits,
        attack_types=tuple(attack_name(a) for a in attacks),
        accuracy_members=float(np.mean(members.log_probs.argmax(axis=1) == members.labels)),
        accuracy_nonmembers=float(np.mean(nonmembers.log_probs.argmax(axis=1) == nonmembers.labels)),
        mean_loss_members=float(np.mean(members.loss)),
        mean_loss_nonmembers=float(np.mean(nonmembers.loss)),
        roc_curves=roc_curves,
        membership_scores=scores,
        library_results=results,
    )


def membership_inference(
    model: Any,
    train_data: Any,
    test_data: Any,
    *,
    attack_types: Any = None,
    slicing: SlicingArg = "class",
    from_logits: Optional[bool] = None,
    batch_size: int = 256,
    seed: Optional[int] = 0,
    backend: Optional[str] = None,
    trained_attacks_per_slice: bool = False,
    balance_attacker_training: bool = False,
) -> AttackReport:
    """Runs TF Privacy's membership-inference attacks on a trained classifier.

    Args:
      model: a Keras model (or any callable `model(x, training=False)`) returning
        one row of logits or probabilities per example: one column per class, or a
        single column for a binary classifier (sigmoid probability or logit).
      train_data: the examples the model was trained on (members): an `(x, y)`
        tuple of arrays or a tf.data.Dataset of `(x, y)` batches. Labels are class
        indices, shape (n,) or (n, 1), or one-hot (n, num_classes).
      test_data: held-out examples from the same distribution (non-members), same form.
      attack_types: None for all six of the library's attacks (threshold on loss,
        threshold on entropy, logistic regression, MLP, random forest, k-NN), or a
        list of names such as ["threshold_attack", "logistic_regression"] (the
        library's short names "threshold", "threshold-entropy", "lr", "mlp", "rf",
        "knn" and AttackType members work too). The trained attacks grid-search
        scikit-learn models: random forest can take a minute per slice.
      slicing: "class" (default: the entire data set plus one slice per class),
        "correctness", "percentiles", a list of these, None / "none" (entire data
        set only), or a TF Privacy SlicingSpec.
      from_logits: True if the model outputs logits, False for probabilities, None
        to detect: from the last layer when it declares softmax/sigmoid
        (probabilities) or a linear activation (logits), otherwise from the values
        (all in [0, 1] and, with several outputs, rows summing to 1 means
        probabilities). Declared probabilities that are not (rows not summing to 1,
        values outside [0, 1]), or a declaration contradicting the last layer,
        raise a ValueError.
      batch_size: examples per forward pass for NumPy inputs (a Dataset keeps its batches).
      seed: seeds NumPy's global RNG during the attacks (the library's shuffles and
        the trained attackers use it) and restores it afterwards; None leaves it alone.
      backend: scikit-learn/joblib backend for the trained attacks (e.g.
        "threading"); None trains them single-threaded.
      trained_attacks_per_slice: by default the trained attacks run on the entire
        data set only and the threshold attacks on every slice (the trained ones
        grid-search a model per slice, minutes with many classes); True runs
        every attack on every slice.
      balance_attacker_training: passed to the library. Off by default: with
        unequal member / non-member counts, balancing leaves the surplus members
        out of the cross-fitting and scores them all with the last attacker, so
        members and non-members are scored by differently calibrated models and
        the AUC moves (we measured 0.47 to 0.71 across seeds for a model with no
        leakage, 455 vs 114 examples). Unbalanced, every example is scored once
        by an attacker that did not see it, the same way for both groups.

    Returns:
      An `AttackReport`.

    Raises:
      ValueError: empty member or non-member sets, labels that do not match the
        outputs or differ in format between the two sets, outputs that are not
        logits/probabilities as declared, unknown attacks or slicing.
    """
    batch_size = check_positive_int("batch_size", batch_size)
    members_out, members_y = _predictions.model_outputs(model, train_data, batch_size, "train_data")
    nonmembers_out, nonmembers_y = _predictions.model_outputs(model, test_data, batch_size, "test_data")
    return membership_inference_from_outputs(
        members_out,
        members_y,
        nonmembers_out,
        nonmembers_y,
        attack_types=attack_types,
        slicing=slicing,
        from_logits=from_logits,
        seed=seed,
        backend=backend,
        trained_attacks_per_slice=trained_attacks_per_slice,
        balance_attacker_training=balance_attacker_training,
        _model=model,
    )


def membership_inference_from_outputs(
    train_outputs: Any,
    train_labels: Any,
    test_outputs: Any,
    test_labels: Any,
    *,
    attack_types: Any = None,
    slicing: SlicingArg = "class",
    from_logits: Optional[bool] = None,
    seed: Optional[int] = 0,
    backend: Optional[str] = None,
    trained_attacks_per_slice: bool = False,
    balance_attacker_training: bool = False,
    _model: Any = None,
) -> AttackReport:
    """`membership_inference` on model outputs you already have (logits or probabilities).

    `train_outputs` / `test_outputs` are (n, num_classes) or (n,) / (n, 1) for a
    binary model; labels as in `membership_inference`. The other arguments are the same.
    """
    train_outputs = np.asarray(train_outputs, dtype=np.float64)
    test_outputs = np.asarray(test_outputs, dtype=np.float64)
    for name, outputs in (("train_data", train_outputs), ("test_data", test_outputs)):
        if outputs.ndim == 0 or outputs.shape[0] == 0:
            raise ValueError(
                f"`{name}` is empty: membership inference needs at least one member and one "
                "non-member."
            )
    train_2d = train_outputs.reshape(len(train_outputs), -1)
    test_2d = test_outputs.reshape(len(test_outputs), -1)
    if train_2d.shape[1] != test_2d.shape[1]:
        raise ValueError(
            f"The model gave {train_2d.shape[1]} outputs per member but {test_2d.shape[1]} per "
            "non-member."
        )
    # Decide logits vs probabilities once, on both sets together, so members and
    # non-members are always read the same way.
    resolved = _predictions.resolve_from_logits(
        np.concatenate([train_2d, test_2d]), from_logits, _model
    )
    members = _predictions.predictions_from_outputs(
        train_outputs, train_labels, from_logits=resolved, model=_model, name="train_data"
    )
    nonmembers = _predictions.predictions_from_outputs(
        test_outputs, test_labels, from_logits=resolved, model=_model, name="test_data"
    )
    return _run(
        members,
        nonmembers,
        attack_types=attack_types,
        slicing=slicing,
        seed=seed,
        backend=backend,
        trained_attacks_per_slice=trained_attacks_per_slice,
        balance_attacker_training=balance_attacker_training,
    )

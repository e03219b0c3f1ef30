"""The Opacus peer of `make benchmark`: the same zoo, trained with PyTorch and Opacus on the CPU.

For every model of `models/zoo.py` this times one epoch of three loops over the same
synthetic data and batches:

- "nodp": plain PyTorch, `torch.optim.SGD` and the mean cross-entropy;
- "opacus": Opacus's `PrivacyEngine.make_private` with per-sample gradients from its
  hooks (`grad_sample_mode="hooks"`, the default), clip 1.0, noise multiplier 1.0;
- "opacus_ghost": the same with ghost clipping (`grad_sample_mode="ghost"`), which gets
  the per-sample norms without materialising per-sample gradients.

A layer Opacus does not take as it is (`nn.MultiheadAttention`, `nn.LSTM`) is swapped by
`ModuleValidator.fix` for its DP twin (`DPMultiheadAttention`, `DPLSTM`) in the two private
loops only, as a PyTorch user would do; the non-private loop keeps PyTorch's own layer, so
the ratio includes what the swap costs. A loop Opacus cannot run is reported with its
error's type, not dropped.

Each loop trains one warm-up epoch, then the three take turns, one epoch each, for
`--epochs` rounds (the order rotates every round) and keep their fastest epoch: a burst
of load on a shared machine then hits all three alike. Every ratio is a private loop's
epoch over its own non-private loop's, comparable with tfdp's DP / no-DP ratio.

This file is the repository's own measurement. It needs PyTorch and Opacus, which tfdp
does not install; `make peers` puts them in a separate environment and runs it:

    make peers                                             # the whole zoo
    PEERS_ARGS=--models=tutorial_cnn,mlp make peers
    .venv-opacus/bin/python peers/opacus_zoo.py --check    # parameter counts only, no timing

It prints one row per model and writes `--output` (results/opacus_peer.json, beside
`make benchmark`'s results/benchmark.json; `make results-page` shows both).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

# The zoo of models/zoo.py as plain literals (Keras's layout: channels last), read without
# torch by tests/peers/test_opacus_zoo.py, which fails when any entry drifts from the zoo
# or from the Keras model's parameter count. `main` checks the nets below against it.
MODELS = {
    "tutorial_cnn": {"input_shape": (28, 28, 1), "num_classes": 10, "vocab_size": None,
                     "batch_size": 256, "num_examples": 2048, "parameters": 26010},
    "pneumonia_cnn": {"input_shape": (128, 128, 1), "num_classes": 2, "vocab_size": None,
                      "batch_size": 32, "num_examples": 512, "parameters": 1072066},
    "resnet": {"input_shape": (32, 32, 3), "num_classes": 10, "vocab_size": None,
               "batch_size": 64, "num_examples": 512, "parameters": 78186},
    "transformer": {"input_shape": (64,), "num_classes": 2, "vocab_size": 5000,
                    "batch_size": 128, "num_examples": 1024, "parameters": 353474},
    "lstm": {"input_shape": (64,), "num_classes": 2, "vocab_size": 1000,
             "batch_size": 128, "num_examples": 1024, "parameters": 40386},
    "text_cnn": {"input_shape": (64,), "num_classes": 2, "vocab_size": 5000,
                 "batch_size": 256, "num_examples": 2048, "parameters": 344834},
    "mlp": {"input_shape": (784,), "num_classes": 10, "vocab_size": None,
            "batch_size": 256, "num_examples": 2048, "parameters": 535818},
}
BASELINE, HOOKS, GHOST = "nodp", "opacus", "opacus_ghost"
LOOPS = (BASELINE, HOOKS, GHOST)
DP_SETTINGS = {"max_grad_norm": 1.0, "noise_multiplier": 1.0}  # tfdp's benchmark: clip 1, noise 1
LEARNING_RATE = 0.01  # as tfdp's benchmark


# ----- the nets (each the Keras model of models/zoo.py, in PyTorch) -----

def _channels_first(spec: dict) -> Tuple[int, int, int]:
    height, width, channels = spec["input_shape"]
    return channels, height, width


def _flat_size(features: nn.Module, shape: Tuple[int, ...]) -> int:
    """How many numbers `features` makes of one example of `shape` (the Flatten's width)."""
    with torch.no_grad():
        return int(features(torch.zeros((1,) + shape)).numel())


def tutorial_cnn(spec: dict) -> nn.Module:
    """TF Privacy's tutorial CNN: Keras's 'same' padding of an 8x8 stride-2 kernel is 3 a side."""
    shape = _channels_first(spec)
    features = nn.Sequential(
        nn.Conv2d(shape[0], 16, 8, stride=2, padding=3), nn.ReLU(), nn.MaxPool2d(2, 1),
        nn.Conv2d(16, 32, 4, stride=2), nn.ReLU(), nn.MaxPool2d(2, 1), nn.Flatten())
    width = _flat_size(features, shape)
    return nn.Sequential(features, nn.Linear(width, 32), nn.ReLU(),
                         nn.Linear(32, spec["num_classes"]))


def pneumonia_cnn(spec: dict) -> nn.Module:
    """Three blocks of 3x3 convolution (16, 32, 64) and 2x2 pooling, Dense(64), dropout 0.25."""
    shape = _channels_first(spec)
    layers: List[nn.Module] = []
    channels = shape[0]
    for filters in (16, 32, 64):
        layers += [nn.Conv2d(channels, filters, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        channels = filters
    features = nn.Sequential(*layers, nn.Flatten())
    width = _flat_size(features, shape)
    return nn.Sequential(features, nn.Linear(width, 64), nn.ReLU(), nn.Dropout(0.25),
                         nn.Linear(64, spec["num_classes"]))


def _group_norm(channels: int, groups: int = 4) -> nn.GroupNorm:
    """GroupNorm with the zoo's rule: the largest divisor of `channels` up to `groups`."""
    fitting = max(d for d in range(1, min(groups, channels) + 1) if channels % d == 0)
    return nn.GroupNorm(fitting, channels)


class ResidualBlock(nn.Module):
    """relu(shortcut(x) + norm(conv(relu(norm(conv(x)))))), the zoo ResNet's block."""

    def __init__(self, channels_in: int, channels_out: int, stride: int):
        super().__init__()
        self.branch = nn.Sequential(
            nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1),
            _group_norm(channels_out), nn.ReLU(),
            nn.Conv2d(channels_out, channels_out, 3, padding=1), _group_norm(channels_out))
        needs_projection = stride != 1 or channels_in != channels_out
        self.shortcut = (nn.Conv2d(channels_in, channels_out, 1, stride=stride)
                         if needs_projection else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.shortcut(x) + self.branch(x))


def resnet(spec: dict) -> nn.Module:
    """Stem, three stages of one block (16, 32, 64; stride 2 from the second), average pool."""
    channels_in = _channels_first(spec)[0]
    layers: List[nn.Module] = [nn.Conv2d(channels_in, 16, 3, padding=1), _group_norm(16),
                               nn.ReLU()]
    channels = 16
    for stage, filters in enumerate((16, 32, 64)):
        layers.append(ResidualBlock(channels, filters, stride=2 if stage else 1))
        channels = filters
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, spec["num_classes"])]
    return nn.Sequential(*layers)


class TransformerBlock(nn.Module):
    """Embedding(5000, 64), 4-head self-attention + residual + LayerNorm, 128-64 feed-forward,
    mean over tokens, logits."""

    def __init__(self, spec: dict):
        super().__init__()
        self.embedding = nn.Embedding(spec["vocab_size"], 64)
        self.attention = nn.MultiheadAttention(64, 4, batch_first=True)
        self.norm = nn.LayerNorm(64)
        self.ffn = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64))
        self.logits = nn.Linear(64, spec["num_classes"])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embedding(tokens)
        attended, _ = self.attention(h, h, h, need_weights=False)
        h = self.norm(h + attended)
        return self.logits(self.ffn(h).mean(dim=1))


class LSTMClassifier(nn.Module):
    """Embedding(1000, 32), LSTM(32) read at the last step, logits.

    PyTorch's LSTM has two bias vectors where Keras's has one; the hidden-to-hidden one is
    held at zero and frozen (`freeze_second_bias`), so the trained weights are Keras's.
    """

    def __init__(self, spec: dict):
        super().__init__()
        self.embedding = nn.Embedding(spec["vocab_size"], 32)
        self.lstm = nn.LSTM(32, 32, batch_first=True)
        self.logits = nn.Linear(32, spec["num_classes"])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(self.embedding(tokens))
        return self.logits(hidden[-1])


def freeze_second_bias(model: nn.Module) -> None:
    """Zeroes and freezes every recurrent layer's hidden-to-hidden bias (Keras has none)."""
    for name, parameter in model.named_parameters():
        if "bias_hh" in name or name.endswith("hh.bias"):
            with torch.no_grad():
                parameter.zero_()
            parameter.requires_grad_(False)


class TextCNN(nn.Module):
    """Embedding(5000, 64), Conv1D(64, 5, ReLU), max over tokens, Dense(64, ReLU), logits."""

    def __init__(self, spec: dict):
        super().__init__()
        self.embedding = nn.Embedding(spec["vocab_size"], 64)
        self.conv = nn.Conv1d(64, 64, 5)
        self.head = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, spec["num_classes"]))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(self.embedding(tokens).transpose(1, 2)))
        return self.head(h.amax(dim=2))


def mlp(spec: dict) -> nn.Module:
    """Dense 512-256 (ReLU), logits."""
    (features,) = spec["input_shape"]
    return nn.Sequential(nn.Linear(features, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                         nn.Linear(256, spec["num_classes"]))


BUILDERS: Dict[str, Callable[[dict], nn.Module]] = {
    "tutorial_cnn": tutorial_cnn,
    "pneumonia_cnn": pneumonia_cnn,
    "resnet": resnet,
    "transformer": TransformerBlock,
    "lstm": LSTMClassifier,
    "text_cnn": TextCNN,
    "mlp": mlp,
}


def build(name: str) -> nn.Module:
    """The named net, freshly initialised, with Keras's trainable weights."""
    model = BUILDERS[name](MODELS[name])
    freeze_second_bias(model)
    return model


def trainable_parameters(model: nn.Module) -> int:
    """How many numbers training changes (Keras's count_params of the zoo model)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ----- data and the three loops -----

def synthetic_data(spec: dict, seed: int = 0) -> torch.utils.data.TensorDataset:
    """The zoo's kind of data: images from a standard normal (channels first), token ids
    uniform over the vocabulary, integer labels."""
    generator = torch.Generator().manual_seed(seed)
    n = spec["num_examples"]
    if spec["vocab_size"]:
        x = torch.randint(0, spec["vocab_size"], (n,) + tuple(spec["input_shape"]),
                          generator=generator)
    elif len(spec["input_shape"]) == 3:
        x = torch.randn((n,) + _channels_first(spec), generator=generator)
    else:
        x = torch.randn((n,) + tuple(spec["input_shape"]), generator=generator)
    y = torch.randint(0, spec["num_classes"], (n,), generator=generator)
    return torch.utils.data.TensorDataset(x, y)


def opacus_ready(model: nn.Module) -> Tuple[nn.Module, List[str]]:
    """`model` as Opacus takes it: `ModuleValidator.fix` where it reports errors (and the
    frozen bias again, which the swapped layer does not keep); and what was swapped."""
    from opacus.validators import ModuleValidator  # pylint: disable=import-outside-toplevel

    if not ModuleValidator.validate(model, strict=False):
        return model, []
    before = {name: type(m).__name__ for name, m in model.named_modules()}
    fixed = ModuleValidator.fix(model)
    freeze_second_bias(fixed)
    swapped = [name for name, m in fixed.named_modules()
               if name in before and before[name] != type(m).__name__]
    # A swapped layer's own sublayers (e.g. attention's output projection) are not listed.
    outermost = [n for n in swapped if not any(n.startswith(o + ".") for o in swapped)]
    return fixed, sorted({f"{before[n]} -> {type(dict(fixed.named_modules())[n]).__name__}"
                          for n in outermost})


class Loop:
    """One training loop (model, optimizer, batches, loss) whose `epoch()` trains one epoch."""

    def __init__(self, name: str, kind: str, data: torch.utils.data.TensorDataset,
                 poisson_sampling: bool):
        spec = MODELS[name]
        self.model = build(name)
        self.swaps: List[str] = []
        optimizer = torch.optim.SGD([p for p in self.model.parameters() if p.requires_grad],
                                    lr=LEARNING_RATE)
        loader = torch.utils.data.DataLoader(data, batch_size=spec["batch_size"], shuffle=True)
        self.criterion: nn.Module = nn.CrossEntropyLoss()
        if kind != BASELINE:
            from opacus import PrivacyEngine  # pylint: disable=import-outside-toplevel

            self.model, self.swaps = opacus_ready(self.model)
            optimizer = torch.optim.SGD(
                [p for p in self.model.parameters() if p.requires_grad], lr=LEARNING_RATE)
            engine = PrivacyEngine()
            common = dict(module=self.model, optimizer=optimizer, data_loader=loader,
                          poisson_sampling=poisson_sampling, **DP_SETTINGS)
            if kind == GHOST:
                self.model, optimizer, self.criterion, loader = engine.make_private(
                    criterion=self.criterion, grad_sample_mode="ghost", **common)
            else:
                self.model, optimizer, loader = engine.make_private(**common)
        self.parameters = trainable_parameters(self.model)
        self.optimizer, self.loader = optimizer, loader

    def epoch(self) -> float:
        """Trains one epoch; its wall-clock seconds."""
        self.model.train()
        start = time.perf_counter()
        for x, y in self.loader:
            self.optimizer.zero_grad()
            self.criterion(self.model(x), y).backward()
            self.optimizer.step()
        return time.perf_counter() - start


def _error(exc: BaseException) -> dict:
    return {"error": f"{type(exc).__name__}: {str(exc).strip()[:240]}"}


def measure_model(name: str, epochs: int, warmup_epochs: int,
                  poisson_sampling: bool) -> dict:
    """The three loops of one model, warmed up, then timed in turns; the best epoch of each."""
    spec = MODELS[name]
    data = synthetic_data(spec)
    loops: Dict[str, Loop] = {}
    results: Dict[str, dict] = {}
    for kind in LOOPS:
        torch.manual_seed(0)
        try:
            loops[kind] = Loop(name, kind, data, poisson_sampling)
            for _ in range(warmup_epochs):
                loops[kind].epoch()
            results[kind] = {"runs_seconds_per_epoch": [], "parameters": loops[kind].parameters}
            if loops[kind].swaps:
                results[kind]["swapped_layers"] = loops[kind].swaps
        except Exception as exc:  # pylint: disable=broad-except  (reported, not dropped)
            loops.pop(kind, None)
            results[kind] = _error(exc)
    for round_index in range(epochs):
        shift = round_index % len(LOOPS)
        for kind in LOOPS[shift:] + LOOPS[:shift]:
            if kind not in loops:
                continue
            try:
                results[kind]["runs_seconds_per_epoch"].append(loops[kind].epoch())
            except Exception as exc:  # pylint: disable=broad-except
                loops.pop(kind)
                results[kind] = _error(exc)
    for result in results.values():
        if result.get("runs_seconds_per_epoch"):
            result["seconds_per_epoch"] = min(result["runs_seconds_per_epoch"])
    return {**{key: spec[key] for key in ("batch_size", "num_examples", "vocab_size")},
            "input_shape": list(spec["input_shape"]), "parameters": spec["parameters"],
            "results": results, "ratios": ratios(results)}


def ratios(results: Dict[str, dict]) -> Dict[str, dict]:
    """Each private loop's best epoch over the non-private loop's."""
    base = results.get(BASELINE, {}).get("seconds_per_epoch")
    out = {}
    for kind in (HOOKS, GHOST):
        seconds = results.get(kind, {}).get("seconds_per_epoch")
        if base and seconds:
            out[kind] = {"time_ratio": seconds / base}
    return out


# ----- checks, table, command line -----

def parameter_mismatches(names: List[str]) -> List[str]:
    """The nets whose trainable parameter count differs from the zoo's (in MODELS), before
    and after Opacus's layer swaps."""
    problems = []
    for name in names:
        model = build(name)
        counts = {"as built": trainable_parameters(model)}
        counts["for Opacus"] = trainable_parameters(opacus_ready(model)[0])
        for when, count in counts.items():
            if count != MODELS[name]["parameters"]:
                problems.append(f"{name} ({when}): {count:,} trainable parameters, the zoo's "
                                f"Keras model has {MODELS[name]['parameters']:,}")
    return problems


def _cell(result: dict) -> str:
    if "seconds_per_epoch" in result:
        return f"{result['seconds_per_epoch']:.3f}"
    if "error" in result:
        return "fails (" + result["error"].split(":")[0] + ")"
    return "-"


def format_table(report: dict) -> List[str]:
    """One row per model: batch, parameters, seconds per epoch of each loop, the ratios."""
    header = ("model", "batch", "parameters", "no-DP s", "Opacus s", "ghost s",
              "Opacus/no-DP", "ghost/no-DP")
    rows = [header]
    for name, entry in report["models"].items():
        results, found = entry["results"], entry["ratios"]
        rows.append((name, str(entry["batch_size"]), f"{entry['parameters']:,}",
                     _cell(results.get(BASELINE, {})), _cell(results.get(HOOKS, {})),
                     _cell(results.get(GHOST, {})),
                     *(f"{found[k]['time_ratio']:.2f}x" if k in found else "-"
                       for k in (HOOKS, GHOST))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    errors = [f"  {name} {kind}: {result['error']}" for name, entry in report["models"].items()
              for kind, result in entry["results"].items() if "error" in result]
    swaps = sorted({f"  {name}: {', '.join(result['swapped_layers'])}"
                    for name, entry in report["models"].items()
                    for result in entry["results"].values() if result.get("swapped_layers")})
    if swaps:
        lines += ["layers swapped by ModuleValidator.fix in the private loops:"] + swaps
    if errors:
        lines += ["failed loops:"] + errors
    return lines


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def settings(args: argparse.Namespace) -> dict:
    """What the run measured with (the JSON's `settings`)."""
    import opacus  # pylint: disable=import-outside-toplevel

    return {"epochs": args.epochs, "warmup_epochs": args.warmup_epochs, "threads": args.threads,
            "poisson_sampling": args.poisson_sampling, "dp": dict(DP_SETTINGS),
            "learning_rate": LEARNING_RATE, "torch": torch.__version__,
            "opacus": opacus.__version__, "python": platform.python_version(),
            "cpu": _cpu_name(), "cpu_count": os.cpu_count()}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The command line (argparse: this environment has no absl)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated zoo models (default: all)")
    parser.add_argument("--epochs", type=int, default=3,
                        help="timed epochs per loop, taken in turns (the best is kept)")
    parser.add_argument("--warmup_epochs", type=int, default=1, help="untimed epochs first")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--poisson_sampling", action="store_true",
                        help="Opacus's Poisson batches in the private loops (default: the "
                             "shuffled fixed-size batches of the non-private loop)")
    parser.add_argument("--output", default=os.path.join("results", "opacus_peer.json"),
                        help="where the JSON report goes")
    parser.add_argument("--check", action="store_true",
                        help="only check the nets' parameter counts against the zoo's")
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {unknown}; choose from {', '.join(MODELS)}")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    """Checks the nets against the zoo, times them, prints the table, writes the JSON."""
    args = parse_args(argv)
    warnings.filterwarnings("ignore")  # Opacus's notes on secure RNG and on the accountant
    torch.set_num_threads(args.threads)
    problems = parameter_mismatches(args.models)
    for problem in problems:
        print(f"MISMATCH {problem}")
    if problems:
        return 1
    if args.check:
        print("\n".join(f"{name}: {MODELS[name]['parameters']:,} trainable parameters, as the "
                        "zoo's" for name in args.models))
        return 0
    report = {"settings": settings(args), "models": {}}
    for name in args.models:
        print(f"  {name} ...", flush=True)
        report["models"][name] = measure_model(name, args.epochs, args.warmup_epochs,
                                               args.poisson_sampling)
    described = report["settings"]
    print(f"\nOpacus {described['opacus']}, torch {described['torch']}, {described['cpu']}, "
          f"{args.threads} threads; best of {args.epochs} epochs after {args.warmup_epochs} "
          "warm-up, loops in turns; each ratio is against its own no-DP loop\n")
    print("\n".join(format_table(report)))
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(report, handle, indent=2)
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

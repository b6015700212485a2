"""Worked example: the paper's analysis of a PyTorch network's penultimate features.

Trains a small PyTorch MLP on coarse labels of scikit-learn's 8x8 digits (label =
digit mod 5, so each label merges two digits), takes the penultimate features of every
train and test image at a few epochs with a forward hook (the same hook works on any
torchvision or timm backbone: hook the layer before the classifier), saves them with
the classifier's weights as ``features/epoch_XXXX.npz``, and runs

    python -m ncfine_jax.analyze OUT/features --num-coarse 5 --out OUT/analysis

on them (CLP, LPO, NC1-NC4, CDNV, D, MSDR, figures). Needs torch (``pip install
torch``); everything else is this project's dependencies, and it runs offline:

    python examples/analyze_torch_features.py --out runs/torch_digits
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np


def make_model(dim_in: int, width: int, num_labels: int):
    """A 2-hidden-layer ReLU MLP; ``model.body`` gives the penultimate features."""
    import torch

    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(
                torch.nn.Linear(dim_in, width), torch.nn.ReLU(),
                torch.nn.Linear(width, width), torch.nn.ReLU(),
            )
            self.classifier = torch.nn.Linear(width, num_labels)

        def forward(self, x):
            return self.classifier(self.body(x))

    return MLP()


def penultimate_features(model, layer, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Outputs of ``layer`` (a submodule of ``model``) for every row of ``x``, in eval mode.

    A forward hook records the layer's output while the whole model runs, so this works
    unchanged for a torchvision ResNet (``layer=model.avgpool``, then flatten) or a timm
    ViT (the module before the head).
    """
    import torch

    captured = []
    handle = layer.register_forward_hook(lambda _m, _inp, out: captured.append(out.detach().flatten(1)))
    model.eval()
    try:
        with torch.no_grad():
            for lo in range(0, len(x), batch_size):
                model(torch.as_tensor(x[lo : lo + batch_size]))
    finally:
        handle.remove()
    return torch.cat(captured).cpu().numpy().astype(np.float32)


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder (features/ and analysis/ inside)")
    p.add_argument("--epochs", type=int, default=40, help="training epochs")
    p.add_argument("--save-at", type=int, nargs="+", default=None,
                   help="epochs whose features are saved (default: 4 spread over training)")
    p.add_argument("--width", type=int, default=256, help="hidden width")
    p.add_argument("--num-coarse", type=int, default=5, help="training labels = digit mod this")
    p.add_argument("--clp-reduce", default="tsne", choices=("tsne", "pca", "none"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    import torch  # after the flags: --help answers without torch installed
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from ncfine_jax import analyze
    from ncfine_jax.io import atomic_save_npz

    save_at = sorted(set(args.save_at or np.linspace(1, args.epochs, 4).round().astype(int).tolist()))

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, c_train, c_test = train_test_split(
        x, digits.target.astype(np.int64), test_size=0.2, stratify=digits.target, random_state=args.seed)
    y_train, y_test = c_train % args.num_coarse, c_test % args.num_coarse

    torch.manual_seed(args.seed)
    model = make_model(x.shape[1], args.width, args.num_coarse)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    for epoch in range(1, args.epochs + 1):
        model.train()
        for idx in np.array_split(rng.permutation(len(x_train)), max(1, len(x_train) // 64)):
            loss = torch.nn.functional.cross_entropy(model(torch.as_tensor(x_train[idx])),
                                                     torch.as_tensor(y_train[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        if epoch in save_at:
            atomic_save_npz(
                out / "features" / f"epoch_{epoch:04d}.npz",
                train_features=penultimate_features(model, model.body, x_train),
                train_labels=y_train.astype(np.int32), train_classes=c_train.astype(np.int32),
                test_features=penultimate_features(model, model.body, x_test),
                test_labels=y_test.astype(np.int32), test_classes=c_test.astype(np.int32),
                # torch.nn.Linear stores weight as [L, d]; the analysis takes [d, L].
                classifier_kernel=model.classifier.weight.detach().numpy().T.copy(),
                classifier_bias=model.classifier.bias.detach().numpy().copy(),
                epoch=np.int32(epoch),
            )
            print(f"epoch {epoch}: loss {loss.item():.4f}, features saved")

    return analyze.main([str(out / "features"), "--num-coarse", str(args.num_coarse),
                         "--class-names", *[str(d) for d in range(10)], "--clp-reduce", args.clp_reduce,
                         "--seed", str(args.seed), "--out", str(out / "analysis")])


if __name__ == "__main__":
    from ncfine_jax.cli import run_main

    sys.exit(run_main(main))

"""A small MLP on scikit-learn's 8x8 digits (1,797 real images bundled with scikit-learn: no
download), written as the study runner wants a trainable (docs/writing-a-study.md): a function
of (config, report) that reports once per epoch with a checkpoint. Nothing here imports Ray,
MLflow or the runner.

    python examples/digits_mlp.py          # one model with the defaults, one line per epoch
"""
import json
import os
import tempfile

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn.functional import cross_entropy, mse_loss

DEFAULTS = {
    "seed": 0, "epochs": 20, "dataset": "digits",     # the runner sets these three
    "evaluate_test": True,         # the runner: True in the replicate phase only
    "lr": 3e-3, "batch_size": 64, "weight_decay": 1e-4,
    "hidden": 64, "depth": 1, "dropout": 0.0,
    "encoder_checkpoint": None,    # encoder.pt of `pretrain` below: the first layer starts from it
}


def load(name="digits", data_dir=None):
    """The data, once per study: 8x8 digits scaled to [0, 1], split 60/20/20, stratified, fixed."""
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=0.25, stratify=y_rest, random_state=0)
    return {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}


def fit(config, report, *, dataset=None, resume_from=None):
    cfg = {**DEFAULTS, **config}
    if set(config) - set(DEFAULTS):
        raise ValueError(f"unknown config keys {sorted(set(config) - set(DEFAULTS))}; known: {sorted(DEFAULTS)}")
    torch.manual_seed(cfg["seed"])
    data = dataset if dataset is not None else load(cfg["dataset"])
    (x, y), (x_val, y_val), (x_test, y_test) = [map(torch.as_tensor, data[s]) for s in ("train", "val", "test")]

    # -- model: `depth` hidden layers of `hidden` units, then 10 logits
    hidden = [nn.Linear(64 if i == 0 else cfg["hidden"], cfg["hidden"]) for i in range(cfg["depth"])]
    if cfg["encoder_checkpoint"]:
        hidden[0].load_state_dict(torch.load(cfg["encoder_checkpoint"]))
    model = nn.Sequential(*[m for layer in hidden for m in (layer, nn.ReLU(), nn.Dropout(cfg["dropout"]))],
                          nn.Linear(cfg["hidden"], 10))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    first = 1
    if resume_from:                       # continue exactly where the checkpoint left off
        state = torch.load(os.path.join(resume_from, "state.pt"))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        first = state["epoch"] + 1

    # -- train: one report per epoch, with a checkpoint to resume from
    for epoch in range(first, cfg["epochs"] + 1):
        model.train()
        for batch in torch.randperm(len(y)).split(cfg["batch_size"]):
            loss = cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        metrics = {"epoch": epoch, "train/loss": loss.item(), **evaluate(model, x_val, y_val, "val")[0]}
        with tempfile.TemporaryDirectory() as checkpoint:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "rng": torch.get_rng_state(), "epoch": epoch}, os.path.join(checkpoint, "state.pt"))
            if epoch == cfg["epochs"] and cfg["evaluate_test"]:      # the test set, once, at the end
                test_metrics, predicted = evaluate(model, x_test, y_test, "test")
                metrics.update(test_metrics)
                torch.save(model.state_dict(), os.path.join(checkpoint, "model.pt"))
                with open(os.path.join(checkpoint, "evaluation.json"), "w") as f:   # the analysis pairs
                    json.dump({"predictions": predicted.tolist(), "targets": y_test.tolist()}, f)  # arms per image
            report(metrics, checkpoint)
    return metrics


fit.schema = DEFAULTS      # the keys fit accepts: the runner checks a study's keys against them


def evaluate(model, x, y, split):
    """The split's loss and accuracy, and the predicted classes."""
    model.eval()
    with torch.no_grad():
        logits = model(x)
    predicted = logits.argmax(dim=1)
    metrics = {f"{split}/loss": cross_entropy(logits, y).item(), f"{split}/acc": (predicted == y).float().mean().item()}
    return metrics, predicted


# -- an upstream stage: an autoencoder whose encoder initialises fit's first layer ------------
PRETRAIN_DEFAULTS = {"seed": 0, "epochs": 30, "patience": 3, "dataset": "digits",   # set by the runner
                     "lr": 3e-3, "batch_size": 64, "hidden": 64}


def pretrain(config, report, *, dataset=None, resume_from=None):
    """64 pixels -> `hidden` -> 64 pixels on the training images (labels unused); stops after
    `patience` epochs without a lower val/loss. Its checkpoint's encoder.pt is the encoder."""
    cfg = {**PRETRAIN_DEFAULTS, **config}
    torch.manual_seed(cfg["seed"])
    data = dataset if dataset is not None else load(cfg["dataset"])
    x, x_val = torch.as_tensor(data["train"][0]), torch.as_tensor(data["val"][0])
    encoder = nn.Sequential(nn.Linear(64, cfg["hidden"]), nn.ReLU())
    model = nn.Sequential(encoder, nn.Linear(cfg["hidden"], 64), nn.Sigmoid())
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    best, waited = float("inf"), 0      # (no resume: an upstream trains in seconds)
    for epoch in range(1, cfg["epochs"] + 1):
        for batch in torch.randperm(len(x)).split(cfg["batch_size"]):
            loss = mse_loss(model(x[batch]), x[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            val_loss = mse_loss(model(x_val), x_val).item()
        best, waited = (val_loss, 0) if val_loss < best else (best, waited + 1)
        stop = epoch == cfg["epochs"] or (cfg["patience"] and waited >= cfg["patience"])
        with tempfile.TemporaryDirectory() as checkpoint:
            torch.save(encoder[0].state_dict(), os.path.join(checkpoint, "encoder.pt"))
            report({"epoch": epoch, "train/loss": loss.item(), "val/loss": val_loss, "final": float(stop)}, checkpoint)
        if stop:
            return


pretrain.schema = PRETRAIN_DEFAULTS


if __name__ == "__main__":
    fit({}, lambda metrics, checkpoint: print({k: round(v, 4) for k, v in metrics.items()}))

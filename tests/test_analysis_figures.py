"""analysis.plotting functions on synthetic arrays (the real figures: test_analysis_report)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from analysis import plotting  # noqa: E402


def saved_size(fig, path):
    plotting.save(fig, path)
    with Image.open(path) as img:
        pixels = np.asarray(img.convert("L"), dtype=float)
        return img.size, pixels.std()


def test_top_activating_picks_largest_per_unit():
    codes = np.array([[0.0, 5.0], [3.0, 1.0], [2.0, 4.0], [9.0, 0.0]])
    units, top = plotting.top_activating(codes, k=2, max_units=2)
    assert list(units) == [0, 1]                       # unit 0 varies most
    assert top.tolist() == [[3, 1], [0, 2]]


def test_spread_over_classes_takes_turns():
    true = [0, 0, 0, 0, 1, 1, 2]
    assert plotting.spread_over_classes(true, 5) == [0, 4, 6, 1, 5]
    assert plotting.spread_over_classes([], 5) == []


@pytest.mark.parametrize("draw", [
    lambda rng: plotting.plot_reconstructions(*(rng.random((3, 8, 28, 28))), "r"),
    lambda rng: plotting.plot_filters(rng.normal(size=(4, 3, 3)), "f"),
    lambda rng: plotting.plot_feature_maps(rng.random((2, 28, 28)), rng.random((2, 8, 14, 14)), "m"),
    lambda rng: plotting.plot_top_activating(rng.random((50, 28, 28)), rng.normal(size=(50, 6)), 4, 6, "t"),
    lambda rng: plotting.plot_misclassified(rng.random((5, 28, 28)), [1, 2, 3, 4, 5], [0, 0, 0, 0, 0],
                                           [str(i) for i in range(10)], "m"),
    lambda rng: plotting.plot_confusion_matrix(rng.integers(0, 9, (10, 10)), [str(i) for i in range(10)], "c"),
    lambda rng: plotting.plot_per_class_accuracy(rng.random((3, 10)), [str(i) for i in range(10)], "p"),
    lambda rng: plotting.plot_tsne(rng.normal(size=(40, 2)), rng.integers(0, 10, 40), [str(i) for i in range(10)], "t"),
])
def test_plots_are_real_images(tmp_path, draw):
    (width, height), spread = saved_size(draw(np.random.default_rng(0)), tmp_path / "f.png")
    assert width >= 300 and height >= 200 and spread > 5

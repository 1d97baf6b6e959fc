"""The installed torch/torchvision pair works together (the CPU-only torch 2.13.0 wheel some
pip configurations pick cannot load torchvision's compiled ops), and which versions run here."""

from __future__ import annotations

import torch


def test_torchvision_imports_and_its_compiled_ops_run(record_property):
    import torchvision
    from torchvision.ops import nms

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]  # the second box overlaps the first (IoU 0.68) and goes
    versions = (f"torch {torch.__version__} (CUDA build {torch.version.cuda}, CUDA available "
                f"{torch.cuda.is_available()}), torchvision {torchvision.__version__}")
    record_property("versions", versions)
    print(versions)


def test_torchvision_transforms_and_datasets_import():
    from torchvision import datasets, transforms

    assert hasattr(datasets, "MNIST") and hasattr(datasets, "FashionMNIST")
    image = transforms.functional.to_pil_image(torch.zeros(1, 28, 28))
    assert transforms.ToTensor()(image).shape == (1, 28, 28)

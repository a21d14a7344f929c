"""The device-side pipeline: per-sample augmentation, eval batches never augmented, batches a pure
function of (seed, epoch), the notebook wrap, and the ops against torchvision's definitions."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from bench import data
from bench.data.pipeline import (
    BatchLoader,
    BatchTransform,
    ColorJitter,
    GrayToRGB,
    Normalize,
    NotebookDoubleTransform,
    RandomAffine,
    RandomCrop,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    _affine_grid_sample,
    affine_theta,
    notebook_uint8_wrap,
)
from bench.data.splits import Split

CIFAR = data.get("cifar10")


def random_split_of(n: int, shape=(3, 32, 32), seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(
        torch.randint(0, 10, (n,), generator=g), torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    )


def plain_normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    return (images.float() / 255 - m) / s


def test_two_samples_of_one_image_in_a_batch_get_different_augmentations():
    image = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    batch = image.expand(16, -1, -1, -1).contiguous()
    out = RandomCrop(32, padding=4)(batch.float(), torch.Generator().manual_seed(0))
    distinct = {tuple(out[i].flatten().tolist()) for i in range(16)}
    assert len(distinct) > 8
    augmented = CIFAR.train_transform()(batch, torch.Generator().manual_seed(1))
    assert len({tuple(augmented[i].flatten().tolist()) for i in range(16)}) > 8


def test_random_crop_windows_are_shifts_of_the_zero_padded_image():
    image = torch.arange(1, 1 + 3 * 8 * 8, dtype=torch.float32).view(1, 3, 8, 8).expand(32, -1, -1, -1)
    out = RandomCrop(8, padding=2)(image, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(image[0], (2, 2, 2, 2))
    for sample in out:
        assert any(torch.equal(sample, padded[:, dy : dy + 8, dx : dx + 8]) for dy in range(5) for dx in range(5))


def test_flip_flips_about_half_of_the_batch():
    batch = torch.rand(200, 1, 4, 4)
    out = RandomHorizontalFlip()(batch, torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, b.flip(-1)) for o, b in zip(out, batch)]
    kept = [torch.equal(o, b) for o, b in zip(out, batch)]
    assert all(f or k for f, k in zip(flipped, kept)) and 70 < sum(flipped) < 130


def test_eval_batches_are_never_augmented_and_equal_plain_normalisation():
    split = random_split_of(50)
    loader = BatchLoader(split, batch_size=16, transform=CIFAR.eval_transform(), device="cpu", shuffle=False, seed=42)
    assert len(loader) == 4
    epoch0 = list(loader)
    loader.set_epoch(1)
    epoch1 = list(loader)
    for (x0, y0), (x1, y1), start in zip(epoch0, epoch1, range(0, 50, 16)):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
        expected = plain_normalise(split.take(torch.arange(start, min(start + 16, 50))), CIFAR.mean, CIFAR.std)
        assert torch.allclose(x0, expected, atol=1e-5)
        assert y0.tolist() == split.labels[start : start + 16].tolist()


def test_training_batches_are_a_pure_function_of_seed_and_epoch():
    split = random_split_of(70)

    def loader(seed=3):
        return BatchLoader(
            split, batch_size=32, transform=CIFAR.train_transform(), device="cpu", shuffle=True, seed=seed
        )

    uninterrupted = loader()
    epochs = []
    for epoch in range(2):
        uninterrupted.set_epoch(epoch)
        epochs.append(list(uninterrupted))
    resumed = loader()
    resumed.set_epoch(1)  # a run resumed at epoch 1 sees exactly epoch 1's batches
    for (a, ya), (b, yb) in zip(epochs[1], resumed):
        assert torch.equal(a, b) and torch.equal(ya, yb)
    assert not torch.equal(epochs[0][0][1], epochs[1][0][1])  # a new permutation each epoch
    assert sorted(torch.cat([y for _, y in epochs[0]]).tolist()) == sorted(split.labels.tolist())
    other = next(iter(loader(seed=4)))
    assert not torch.equal(other[0], epochs[0][0][0])
    assert (
        len(
            BatchLoader(
                split,
                batch_size=32,
                transform=CIFAR.train_transform(),
                device="cpu",
                shuffle=True,
                seed=3,
                drop_last=True,
            )
        )
        == 2
    )


@pytest.mark.parametrize(
    "value, wrapped", [(-206.55, 50), (515.1, 3), (-612.0, 156), (510.0, 254), (663.0, 151), (12.9, 12)]
)
def test_notebook_wrap_matches_the_protocol_appendix(value, wrapped):
    assert notebook_uint8_wrap(torch.tensor([value])).item() == wrapped


def test_notebook_double_transform_scrambles_fashionmnist_black_and_white():
    fashion = data.get("fashionmnist")
    images = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 1, 28, 28)
    step = BatchTransform(NotebookDoubleTransform(fashion.mean, fashion.std))
    out = step(images)
    # black: (0 - 0.286) / 0.353 * 255 = -206.6 -> 50; white: 2.02 * 255 = 515.8 -> 3 (protocol 7.1)
    assert torch.allclose(out[0], torch.full((1, 28, 28), 50 / 255)) and torch.allclose(
        out[1], torch.full((1, 28, 28), 3 / 255)
    )
    train = fashion.train_transform("notebook")
    assert isinstance(train.ops[0], NotebookDoubleTransform) and train.ops[-1] == Normalize(fashion.mean, fashion.std)


@pytest.mark.parametrize("degrees, tx, ty", [(10.0, 0, 0), (-7.0, 0, 0), (0.0, 2, -3), (8.0, 1, 2)])
def test_affine_matches_torchvision_affine(degrees, tx, ty):
    x = torch.rand(1, 3, 17, 17)
    theta = affine_theta(
        torch.tensor([degrees * math.pi / 180], dtype=torch.float64),
        torch.tensor([float(tx)]),
        torch.tensor([float(ty)]),
        17,
        17,
    )
    ours = _affine_grid_sample(x, theta, (17, 17), "nearest", "zeros")
    theirs = TF.affine(
        x, angle=degrees, translate=[tx, ty], scale=1.0, shear=[0.0], interpolation=InterpolationMode.NEAREST
    )
    assert torch.equal(ours, theirs)


def test_random_affine_stays_within_its_bounds():
    x = torch.rand(8, 3, 20, 20)
    assert torch.equal(RandomAffine()(x, torch.Generator()), x)
    shifted = RandomAffine(translate=0.1)(x, torch.Generator().manual_seed(0))
    for out, image in zip(shifted, x):  # whole-pixel shifts of at most 2 px
        assert any(
            torch.equal(out[:, 3:-3, 3:-3], image[:, 3 - dy : 17 - dy, 3 - dx : 17 - dx])
            for dy in range(-2, 3)
            for dx in range(-2, 3)
        )


def test_color_jitter_factors_stay_in_range_and_hue_matches_torchvision():
    from bench.data.pipeline import _hsv_to_rgb, _rgb_to_hsv

    x = torch.rand(6, 3, 9, 9)
    h, s, v = _rgb_to_hsv(x)
    assert torch.allclose(_hsv_to_rgb(torch.remainder(h + 0.1, 1.0), s, v), TF.adjust_hue(x, 0.1), atol=1e-5)
    bright = ColorJitter(brightness=0.2)(x, torch.Generator().manual_seed(0))
    ratio = (bright.flatten(1) / x.flatten(1)).median(1).values
    assert ((ratio >= 0.8 - 1e-5) & (ratio <= 1.2 + 1e-5)).all() and ratio.std() > 0
    out = ColorJitter(0.2, 0.2, 0.2, 0.1)(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    gray = ColorJitter(brightness=0.1, contrast=0.1)(torch.rand(4, 1, 9, 9), torch.Generator().manual_seed(2))
    assert gray.shape == (4, 1, 9, 9)


def test_random_resized_crop_output_and_identity_case():
    x = torch.rand(5, 3, 30, 30)
    assert torch.allclose(RandomResizedCrop(30, scale=(1.0, 1.0), ratio=(1.0, 1.0))(x, torch.Generator()), x, atol=1e-5)
    out = RandomResizedCrop(24, scale=(0.8, 1.0))(x, torch.Generator().manual_seed(0))
    assert out.shape == (5, 3, 24, 24)


def test_resize_gray_to_rgb_and_normalise_for_tissuemnist():
    tissue = data.get("tissuemnist")
    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    out = tissue.eval_transform()(images)
    assert out.shape == (3, 3, 64, 64)
    resized = Resize(64)(images.float() / 255)
    assert torch.allclose(out, Normalize(tissue.mean, tissue.std)(GrayToRGB()(resized)))
    assert torch.allclose(Normalize((0.5,), (0.25,))(torch.ones(1, 1, 2, 2)), torch.full((1, 1, 2, 2), 2.0))


def test_random_steps_need_a_generator_and_batches_must_be_uint8():
    with pytest.raises(ValueError, match="needs a torch.Generator"):
        RandomCrop(4)(torch.rand(1, 1, 4, 4), None)
    with pytest.raises(TypeError, match="uint8"):
        CIFAR.eval_transform()(torch.rand(1, 3, 32, 32))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_on_cuda_equal_batches_on_cpu():
    pad = data.get("pad-ufes-20")
    for split, transform in (
        (random_split_of(40), CIFAR.train_transform()),
        (random_split_of(12, (3, 64, 64)), pad.train_transform()),
    ):
        on = {
            device: list(BatchLoader(split, batch_size=16, transform=transform, device=device, shuffle=True, seed=5))
            for device in ("cpu", "cuda")
        }
        for (xc, yc), (xg, yg) in zip(on["cpu"], on["cuda"]):
            assert torch.equal(yc, yg.cpu())
            # nearest sampling may round a rare exact tie the other way on the GPU
            assert (xc - xg.cpu()).abs().gt(1e-3).float().mean() < 0.01


def test_batches_gathered_ahead_by_the_prefetch_thread_equal_batches_gathered_in_turn():
    # A channels-last view of (N, H, W, C) rows, as PCam's memory-mapped files give them.
    rows = torch.randint(0, 256, (70, 32, 32, 3), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    split = Split(torch.randint(0, 10, (70,)), rows.permute(0, 3, 1, 2))
    kwargs = dict(batch_size=16, transform=CIFAR.train_transform(), device="cpu", shuffle=True, seed=3)
    ahead, in_turn = BatchLoader(split, **kwargs), BatchLoader(split, preload=True, **kwargs)
    for loader in (ahead, in_turn):
        loader.set_epoch(2)
    batches = list(ahead)
    assert len(batches) == 5
    for (a, ya), (b, yb) in zip(batches, in_turn, strict=True):
        assert torch.equal(a, b) and torch.equal(ya, yb)


def test_an_epoch_abandoned_part_way_leaves_no_prefetch_thread_behind():
    import threading

    loader = BatchLoader(random_split_of(200), batch_size=8, transform=CIFAR.eval_transform(), device="cpu", shuffle=True, seed=0)
    epoch = iter(loader)
    next(epoch)
    assert any(t.name.startswith("batch-prefetch") for t in threading.enumerate())
    epoch.close()  # what a budget spent mid-epoch, or an error in the step, does to the loop
    assert not any(t.name.startswith("batch-prefetch") for t in threading.enumerate())

"""Device-side batches (the airbench pattern) for every dataset.

A split's uint8 images are indexed a whole batch at a time, moved to the training device (once, for
splits held in memory) and augmented there per sample by a `BatchTransform`, then normalised. No
per-image PIL work happens in the training loop. Random parameters are drawn on the CPU from
generators seeded by (seed, epoch, batch), so batches are the same on every device and a resumed
run sees exactly the batches an uninterrupted one would have.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from bench.data.splits import Split


class BatchOp(Protocol):
    """One step of a BatchTransform: float (B, C, H, W) in, float (B, C', H', W') out."""

    random: ClassVar[bool]

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor: ...


def _need(generator: torch.Generator | None, op: object) -> torch.Generator:
    if generator is None:
        raise ValueError(f"{op!r} is random and needs a torch.Generator")
    return generator


def _uniform(generator: torch.Generator, n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    """n draws from U[low, high), made on the CPU so every device sees the same parameters."""
    return _to(low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64), device)


def _to(values: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    # non_blocking: a blocking host-to-device copy would wait for the queued training step
    return values.to(device=device, dtype=dtype, non_blocking=True)


class _PerDeviceConstants:
    """A step that keeps its constant tensors per (device, dtype) in `_cache`. A copy or a pickle
    starts with an empty cache, so the step moves to another process or device (a logged model
    loaded on a CPU) without taking CUDA tensors along; the constants are rebuilt on first use."""

    def __getstate__(self) -> dict:
        return self.__dict__ | {"_cache": {}}


def _per_channel(values: tuple[float, ...], cache: dict, x: torch.Tensor) -> torch.Tensor:
    key = (values, x.device, x.dtype)
    if key not in cache:
        cache[key] = torch.tensor(values, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return cache[key]


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma as torchvision computes it; 1-channel images are their own gray."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor.to(x.dtype).view(-1, 1, 1, 1)
    return (f * x + (1 - f) * other).clamp_(0, 1)


# ---------------------------------------------------------------------------------------------
# Deterministic steps
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resize:
    """Bilinear resize to size x size (a no-op when the batch already has that size)."""

    size: int
    random: ClassVar[bool] = False

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if tuple(x.shape[-2:]) == (self.size, self.size):
            return x
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)


@dataclass(frozen=True)
class GrayToRGB:
    """Repeat a 1-channel image to 3 channels (protocol 2.6, TissueMNIST)."""

    random: ClassVar[bool] = False

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


@dataclass(frozen=True)
class Normalize(_PerDeviceConstants):
    """(x - mean) / std per channel, as torchvision's Normalize after ToTensor."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    random: ClassVar[bool] = False
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.shape[1] != len(self.mean):
            raise ValueError(f"{self!r} got a batch with {x.shape[1]} channels")
        scale = _per_channel(tuple(1.0 / s for s in self.std), self._cache, x)
        shift = _per_channel(tuple(-m / s for m, s in zip(self.mean, self.std)), self._cache, x)
        # One fused pass; equal to (x - mean) / std up to float rounding.
        return torch.addcmul(shift, x, scale)


def notebook_uint8_wrap(values: torch.Tensor) -> torch.Tensor:
    """ToPILImage's float -> uint8 cast as observed on x86 (protocol 7.1 and appendix):
    truncate toward zero, then wrap modulo 256 (-206.55 -> 50, 515.1 -> 3, -612 -> 156)."""
    return torch.remainder(torch.trunc(values), 256)


@dataclass(frozen=True)
class NotebookDoubleTransform(_PerDeviceConstants):
    """Defect reproduced in `notebook` mode (protocol 7.1, CIFAR-10 and FashionMNIST).

    The notebooks' training items were already ToTensor+Normalize'd; ToPILImage then multiplied the
    normalised floats by 255 and cast them to uint8 (wrapping modulo 256), and the train transform
    augmented and normalised that scrambled image again. This step does the first normalisation and
    the wrap; the augmentation and normalisation that follow it in the BatchTransform are the second.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    random: ClassVar[bool] = False
    note: ClassVar[str] = (
        "training images are normalised, wrapped modulo 256 by ToPILImage, then augmented and normalised again "
        "(protocol 7.1); val/test are clean"
    )
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mean = _per_channel(self.mean, self._cache, x)
        std = _per_channel(self.std, self._cache, x)
        normalised = (x - mean) / std  # torchvision's Normalize: sub then div, in float32
        return notebook_uint8_wrap(normalised * 255).div_(255)  # ToPILImage, then ToTensor again


# ---------------------------------------------------------------------------------------------
# Random steps (per sample)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RandomHorizontalFlip:
    p: float = 0.5
    random: ClassVar[bool] = True

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        flip = _uniform(_need(generator, self), x.shape[0], 0.0, 1.0, x.device) < self.p
        if x.device.type != "cpu":  # a boolean mask index would wait for the device; where does not
            return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        out = x.clone()  # on the CPU, flipping only the chosen rows is about twice as fast
        out[flip] = x[flip].flip(3)
        return out


def _crop(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """Per-sample size x size windows starting at (top, left): one indexing pass over the (copy-free)
    view of all windows, several times faster than two gathers."""
    windows = x.unfold(2, size, 1).unfold(3, size, 1)  # (B, C, rows, cols, size, size)
    return windows[torch.arange(x.shape[0], device=x.device), :, top, left]


@dataclass(frozen=True)
class RandomCrop:
    """torchvision's RandomCrop(size, padding) with zero fill, one window per sample."""

    size: int
    padding: int = 0
    random: ClassVar[bool] = True

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        gen = _need(generator, self)
        if self.padding:
            x = F.pad(x, (self.padding,) * 4)
        b, _, h, w = x.shape
        if h < self.size or w < self.size:
            raise ValueError(f"{self!r} got {h}x{w} images")
        top = _to(torch.randint(0, h - self.size + 1, (b,), generator=gen), x.device)
        left = _to(torch.randint(0, w - self.size + 1, (b,), generator=gen), x.device)
        return _crop(x, top, left, self.size)


def _affine_grid_sample(
    x: torch.Tensor, theta: torch.Tensor, size: tuple[int, int], mode: str, padding: str
) -> torch.Tensor:
    grid = F.affine_grid(_to(theta, x.device, x.dtype), [x.shape[0], x.shape[1], *size], align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode=padding, align_corners=False)


@dataclass(frozen=True)
class RandomAffine:
    """torchvision's RandomAffine(degrees, translate) (and RandomRotation(degrees)) per sample:
    angle ~ U(-degrees, degrees), whole-pixel shifts up to translate * size, nearest sampling,
    zero fill."""

    degrees: float = 0.0
    translate: float = 0.0
    random: ClassVar[bool] = True

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        gen = _need(generator, self)
        b, _, h, w = x.shape
        cpu = torch.device("cpu")
        angle = _uniform(gen, b, -self.degrees, self.degrees, cpu) * (math.pi / 180)
        tx = torch.round(_uniform(gen, b, -self.translate * w, self.translate * w, cpu))
        ty = torch.round(_uniform(gen, b, -self.translate * h, self.translate * h, cpu))
        return _affine_grid_sample(x, affine_theta(angle, tx, ty, h, w), (h, w), "nearest", "zeros")


def affine_theta(angle: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """affine_grid matrices of torchvision's affine(angle, translate=(tx, ty)) per sample (angle in
    radians, counter-clockwise; shifts in pixels)."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Output pixel u (from the centre) samples the input at R(-angle) (u - t); in the normalised
    # coordinates of affine_grid that is S R(-angle) S^-1 with S = diag(2/w, 2/h).
    theta = torch.zeros(len(angle), 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 1] = cos, sin * h / w
    theta[:, 1, 0], theta[:, 1, 1] = -sin * w / h, cos
    theta[:, 0, 2] = -(cos * tx + sin * ty) * 2 / w
    theta[:, 1, 2] = -(-sin * tx + cos * ty) * 2 / h
    return theta


def _rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    flat = maxc == minc
    chroma = maxc - minc
    ones = torch.ones_like(maxc)
    saturation = chroma / torch.where(flat, ones, maxc)
    divisor = torch.where(flat, ones, chroma)
    rc, gc, bc = (maxc - r) / divisor, (maxc - g) / divisor, (maxc - b) / divisor
    hue = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    return torch.remainder(hue / 6.0, 1.0), saturation, maxc


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    h6 = h * 6.0
    sector = torch.floor(h6)
    f = h6 - sector
    sector = sector.long() % 6
    p = (v * (1 - s)).clamp(0, 1)
    q = (v * (1 - s * f)).clamp(0, 1)
    t = (v * (1 - s * (1 - f))).clamp(0, 1)
    # Per sector (0..5) which of v, q, p, t is red, green and blue.
    table = torch.stack([torch.stack(c, 0) for c in ((v, q, p, p, t, v), (t, v, v, q, p, p), (p, p, t, v, v, q))], 0)
    index = sector.unsqueeze(0).unsqueeze(0).expand(3, 1, *sector.shape)
    return table.gather(1, index).squeeze(1).movedim(0, 1)


@dataclass(frozen=True)
class ColorJitter:
    """torchvision's ColorJitter(brightness, contrast, saturation, hue), factors per sample.

    torchvision applies the four adjustments in a random order per image; a fixed order
    (brightness, contrast, saturation, hue) keeps the whole batch in a few vectorised passes.
    Saturation and hue apply to RGB batches only.
    """

    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    random: ClassVar[bool] = True

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        gen = _need(generator, self)
        b, c = x.shape[:2]

        def factor(amount: float) -> torch.Tensor:
            return _uniform(gen, b, max(0.0, 1 - amount), 1 + amount, x.device)

        if self.brightness:
            x = _blend(x, torch.zeros_like(x), factor(self.brightness))
        if self.contrast:
            x = _blend(x, _grayscale(x).mean(dim=(1, 2, 3), keepdim=True), factor(self.contrast))
        if self.saturation and c == 3:
            x = _blend(x, _grayscale(x), factor(self.saturation))
        if self.hue and c == 3:
            shift = _uniform(gen, b, -self.hue, self.hue, x.device).to(x.dtype).view(-1, 1, 1)
            h, s, v = _rgb_to_hsv(x)
            x = _hsv_to_rgb(torch.remainder(h + shift, 1.0), s, v)
        return x


@dataclass(frozen=True)
class RandomResizedCrop:
    """torchvision's RandomResizedCrop(size, scale, ratio) per sample: ten tries at a box of random
    area and aspect ratio, else the whole image (clamped to the ratio), then bilinear resize."""

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    random: ClassVar[bool] = True
    tries: ClassVar[int] = 10

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        gen = _need(generator, self)
        b, _, h, w = x.shape
        cpu = torch.device("cpu")
        area = _uniform(gen, b * self.tries, *self.scale, cpu).view(b, self.tries) * (h * w)
        log_ratio = _uniform(gen, b * self.tries, math.log(self.ratio[0]), math.log(self.ratio[1]), cpu)
        aspect = torch.exp(log_ratio).view(b, self.tries)
        cw = torch.round(torch.sqrt(area * aspect))
        ch = torch.round(torch.sqrt(area / aspect))
        fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
        first = fits.to(torch.uint8).argmax(1, keepdim=True)
        found = fits.any(1)
        fallback_w, fallback_h = self._fallback(h, w)
        cw = torch.where(found, cw.gather(1, first).squeeze(1), torch.tensor(float(fallback_w), dtype=torch.float64))
        ch = torch.where(found, ch.gather(1, first).squeeze(1), torch.tensor(float(fallback_h), dtype=torch.float64))
        top = torch.floor(torch.rand(b, generator=gen, dtype=torch.float64) * (h - ch + 1))
        left = torch.floor(torch.rand(b, generator=gen, dtype=torch.float64) * (w - cw + 1))
        top = torch.where(found, top, torch.floor((h - ch) / 2))
        left = torch.where(found, left, torch.floor((w - cw) / 2))
        # The box's edges map to the output's edges (align_corners=False).
        theta = torch.zeros(b, 2, 3, dtype=torch.float64)
        theta[:, 0, 0] = cw / w
        theta[:, 0, 2] = (2 * left + cw) / w - 1
        theta[:, 1, 1] = ch / h
        theta[:, 1, 2] = (2 * top + ch) / h - 1
        return _affine_grid_sample(x, theta, (self.size, self.size), "bilinear", "border")

    def _fallback(self, h: int, w: int) -> tuple[int, int]:
        in_ratio = w / h
        if in_ratio < self.ratio[0]:
            return w, round(w / self.ratio[0])
        if in_ratio > self.ratio[1]:
            return round(h * self.ratio[1]), h
        return w, h


# ---------------------------------------------------------------------------------------------
# Composition and loading
# ---------------------------------------------------------------------------------------------


class BatchTransform:
    """ToTensor (uint8 / 255) followed by a sequence of batch steps, applied on the batch's device.

    ``transform(images_uint8, generator)`` returns float32 (B, C, H, W); random steps draw their
    per-sample parameters from ``generator`` (a CPU torch.Generator).
    """

    def __init__(self, *ops: BatchOp) -> None:
        self.ops: tuple[BatchOp, ...] = ops

    @property
    def augments(self) -> bool:
        """Whether any step is random (an eval transform never is)."""
        return any(op.random for op in self.ops)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise TypeError(
                f"BatchTransform takes a uint8 (B, C, H, W) batch, got {images.dtype} {tuple(images.shape)}"
            )
        x = images.to(torch.float32).div_(255)  # ToTensor
        for op in self.ops:
            x = op(x, generator)
        return x

    def __repr__(self) -> str:
        return f"BatchTransform({', '.join(repr(op) for op in self.ops)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BatchTransform) and self.ops == other.ops


def seeded_generator(*key: int) -> torch.Generator:
    """A CPU generator whose state is a pure function of the non-negative integers in ``key``."""
    state = np.random.SeedSequence([int(k) for k in key]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


_ORDER_STREAM, _AUGMENT_STREAM = 0, 1
PRELOAD_MAX_BYTES = 4 << 30  # larger splits (PCam's 7.2 GB train) stay on the host, gathered a batch at a time
PREFETCH_BATCHES = 2  # host batches gathered ahead by the loader's thread


def _copied_in_blocks(split: Split, device: torch.device, block_bytes: int = 64 << 20) -> torch.Tensor:
    """The split's images on ``device``, copied 64 MB at a time: the host never holds a second copy of
    the split (its pooled or memory-mapped images are gathered a block at a time)."""
    images = torch.empty((len(split), *split.image_shape), dtype=torch.uint8, device=device)
    for start, block in split.blocks(block_bytes):
        images[start : start + len(block)] = block
    return images


class BatchLoader:
    """Batches of one split: (x float32 normalised (B, C, H, W), y int64 (B,)), both on ``device``.

    Splits up to ``PRELOAD_MAX_BYTES`` are copied to an accelerator once. Otherwise (on the CPU, and
    for larger splits) each batch's rows are gathered from the split's host memory, or its memory-mapped
    file, by a thread that works ``PREFETCH_BATCHES`` ahead, so reads overlap the training step.
    The permutation of epoch e is a pure function of (seed, e) and batch k's augmentation of
    (seed, e, k): call ``set_epoch`` before each epoch (a resumed run sets the epoch it resumes at).
    """

    def __init__(
        self,
        split: Split,
        *,
        batch_size: int,
        transform: BatchTransform,
        device: torch.device | str,
        shuffle: bool,
        seed: int,
        drop_last: bool = False,
        preload: bool | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.split = split
        self.batch_size = batch_size
        self.transform = transform
        self.device = torch.device(device)
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        self._labels = split.labels.to(self.device)
        if preload is None:
            preload = self.device.type != "cpu" and split.nbytes <= PRELOAD_MAX_BYTES
        self._images = _copied_in_blocks(split, self.device) if preload else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def order(self) -> torch.Tensor:
        """The split's rows in this epoch's order: a permutation drawn from (seed, epoch), or as stored."""
        n = len(self.split)
        if self.shuffle:
            return torch.randperm(n, generator=seeded_generator(self.seed, self.epoch, _ORDER_STREAM))
        return torch.arange(n)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order()
        indices = [order[k * self.batch_size : (k + 1) * self.batch_size] for k in range(len(self))]
        if self._images is not None:
            for k, index in enumerate(indices):
                on_device = _to(index, self.device)
                yield self._batch(self._images[on_device], on_device, k)
            return
        # Host batches gathered ahead by one thread (the gathers release the GIL); abandoning the
        # epoch part way (a budget spent, an error) closes this generator and cancels what is queued.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-prefetch") as reader:
            ahead: deque[Future] = deque(reader.submit(self._host_images, i) for i in indices[:PREFETCH_BATCHES])
            try:
                for k, index in enumerate(indices):
                    images = ahead.popleft().result()
                    if k + PREFETCH_BATCHES < len(indices):
                        ahead.append(reader.submit(self._host_images, indices[k + PREFETCH_BATCHES]))
                    yield self._batch(images.to(self.device, non_blocking=True), _to(index, self.device), k)
            finally:
                for future in ahead:
                    future.cancel()

    def _host_images(self, index: torch.Tensor) -> torch.Tensor:
        images = self.split.take(index)
        return images.pin_memory() if self.device.type == "cuda" else images

    def _batch(self, images: torch.Tensor, on_device: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = seeded_generator(self.seed, self.epoch, _AUGMENT_STREAM, k) if self.transform.augments else None
        return self.transform(images, generator), self._labels[on_device]

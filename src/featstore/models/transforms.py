"""Input transforms: how an image becomes a network input (resize, scale, normalise)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

from featstore.errors import FeatstoreInputError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "INTERPOLATIONS", "TransformSpec"]

#: ImageNet channel statistics (R, G, B), the normalisation of most torchvision weights
IMAGENET_MEAN: Final = (0.485, 0.456, 0.406)
IMAGENET_STD: Final = (0.229, 0.224, 0.225)
#: resampling filters a transform may name
INTERPOLATIONS: Final = ("bilinear", "bicubic", "nearest")


@dataclass(frozen=True)
class TransformSpec:
    """Input transform of a model: resize the whole image to ``size x size``, scale to [0, 1],
    then normalise each channel as ``(x - mean) / std``.

    With ``crop_pct < 1`` the whole image is first resized to ``resize_size x resize_size``
    (``floor(size / crop_pct)``, timm's rule) and the central ``size x size`` square is kept:
    for square images this is timm's evaluation transform (``crop_mode="center"``), for
    others timm's ``crop_mode="squash"``.

    Parameters
    ----------
    size : int
        Side of the square network input, in pixels.
    interpolation : {"bilinear", "bicubic", "nearest"}
        Resampling used to resize (featstore's defaults use ``"bilinear"`` with antialiasing).
    mean, std : tuple of 3 floats
        Per-channel (R, G, B) normalisation; ``std`` is positive.
    crop_pct : float
        Fraction of the resized image kept by the centre crop, in (0, 1]; 1.0 (the default):
        no crop.
    """

    size: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise FeatstoreInputError(f"image size must be a positive integer, got {self.size!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise FeatstoreInputError(
                f"unknown interpolation {self.interpolation!r}; allowed: "
                + ", ".join(INTERPOLATIONS)
            )
        for label, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != 3 or not all(isinstance(v, float) for v in values):
                raise FeatstoreInputError(
                    f"transform {label} must be 3 floats (R, G, B), got {values!r}"
                )
        if not all(v > 0 for v in self.std):
            raise FeatstoreInputError(f"transform std must be positive, got {self.std!r}")
        crop = self.crop_pct
        if isinstance(crop, bool) or not isinstance(crop, float) or not 0.0 < crop <= 1.0:
            raise FeatstoreInputError(
                f"transform crop_pct must be a float in (0, 1], got {crop!r}"
            )

    @property
    def resize_size(self) -> int:
        """Side the whole image is resized to before the centre crop: ``floor(size /
        crop_pct)`` (``size`` itself when ``crop_pct`` is 1)."""
        return self.size if self.crop_pct == 1.0 else math.floor(self.size / self.crop_pct)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: ``{"size", "interpolation", "mean", "std"}`` (lists for tuples),
        plus ``"crop_pct"`` when it is not 1 (so transforms without a crop describe
        themselves as they always did)."""
        d: dict[str, Any] = {
            "size": self.size,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
        }
        if self.crop_pct != 1.0:
            d["crop_pct"] = self.crop_pct
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TransformSpec:
        """Inverse of :meth:`to_dict`; accepts lists or tuples for ``mean`` and ``std``; a
        missing ``crop_pct`` is 1.0."""
        fields = ("size", "interpolation", "mean", "std")
        missing = [key for key in fields if key not in d]
        if missing:
            raise FeatstoreInputError(
                f"transform description lacks {', '.join(missing)}: {dict(d)!r}"
            )
        try:
            mean = tuple(float(v) for v in d["mean"])
            std = tuple(float(v) for v in d["std"])
        except (TypeError, ValueError) as exc:
            raise FeatstoreInputError(f"transform mean/std must be numbers: {dict(d)!r}") from exc
        if len(mean) != 3 or len(std) != 3:
            raise FeatstoreInputError(f"transform mean/std must have 3 values: {dict(d)!r}")
        crop = d.get("crop_pct", 1.0)
        return cls(
            size=d["size"],
            interpolation=d["interpolation"],
            mean=cast(tuple[float, float, float], mean),
            std=cast(tuple[float, float, float], std),
            crop_pct=float(crop) if isinstance(crop, int | float) and not isinstance(crop, bool)
            else crop,
        )


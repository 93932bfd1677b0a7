"""Every hyper-parameter of a run, in one registry of dataclasses, loaded from YAML with
``section.key=value`` overrides from the command line. The resolved config is saved with the run.

The dataclass defaults are the shipped recipe; a YAML file holds only what differs from them."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from amf.stain import METHODS as STAIN_METHODS

log = logging.getLogger(__name__)
WEAK_LABELS = ("Scanner", "Origin", "Species", "Tumor")


@dataclass
class DataConfig:
    manifests: list[str] = field(default_factory=lambda: ["../shared/data/ami-br/manifest.csv"])
    image_dirs: list[str] = field(default_factory=list)  # default: <manifest dir>/images for each
    input_size: int = 128
    # >0: the central center_crop px upscaled back to input_size (amf.preprocess); in model.json. 64 beat
    # the full patch on validation (benchmarks/results/crop.md); 0 keeps the whole patch.
    center_crop: int = 64
    # reinhard: each patch's LAB mean and std mapped onto the training patches' mean (amf.stain), at
    # inference too (model.json's stain_norm); none: the colours as scanned
    stain_norm: str = "none"
    weak_labels: list[str] = field(default_factory=lambda: list(WEAK_LABELS))
    split: str = "holdout"  # holdout | kfold | lodo | none
    val_fraction: float = 0.15  # one of round(1/f) slide-grouped folds; the log states the real share
    folds: int = 5
    fold: int = 0
    lodo_column: str = "Scanner"
    lodo_value: str = ""  # "unknown" for an empty value; several, comma-separated, hold out each
    cache_dir: str = ".cache/patches"


@dataclass
class AugmentConfig:
    dihedral: bool = True
    affine_p: float = 0.5
    rotate_deg: float = 15.0
    scale: float = 0.1
    translate_px: float = 4.0
    hed_p: float = 0.8
    # multiplicative jitter per stain channel; 0.2 carried best to held-out domains, chosen across the
    # training domains (benchmarks/answers.py STAIN_ANSWER); validation could not tell it from 0.05
    hed_sigma: float = 0.2
    hed_bias: float = 0.02  # additive jitter per stain channel
    blur_p: float = 0.2
    blur_sigma_max: float = 1.0
    noise_p: float = 0.2
    noise_std_max: float = 0.03


@dataclass
class LoraConfig:
    """Low-rank adapters (peft) on a frozen ViT backbone; the head and attention refinement train in full."""

    rank: int = 0  # 0: off (every weight trains); > 0: the backbone frozen, adapters of this rank
    alpha: float = 16.0  # the adapters' update is scaled by alpha / rank
    dropout: float = 0.05
    # peft names: a module whose name is, or ends with ".", one of these (fc1_g/fc1_x: SwiGLU in DINOv3)
    target_modules: list[str] = field(
        default_factory=lambda: ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "mlp.fc1_g", "mlp.fc1_x"])


@dataclass
class ModelConfig:
    backbone: str = "tf_efficientnet_lite0"  # any timm name, or a registry name (amf/backbones.py: hf-hub:...)
    attention: str = "cbam"  # cbam | attnpool | none
    drop_rate: float = 0.2
    drop_path_rate: float = 0.05
    pretrained: str = "auto"  # auto | wheel | timm | hub | none
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # timm kwargs over the registry's, e.g. depth
    resize: int = -1  # network input side: -1 a ViT's native size (a CNN: none); 0 never; N: N×N
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class MixConfig:
    enabled: bool = True
    stages: list[str] = field(default_factory=lambda: ["blocks.1", "blocks.3"])  # early, mid
    p: float = 0.5
    alpha: float = 0.1
    mode: str = "crossdomain"  # random | crossdomain


@dataclass
class AlignConfig:
    enabled: bool = True
    kind: str = "coral"  # coral | mmd | centroid
    # standardize: each embedding dimension z-scored over the batch before aligning, so the loss is
    # in units of the batch's own spread and its weight does not depend on the embedding's scale.
    normalize: str = "standardize"  # standardize | none
    weight: float = 0.3  # set by the gradient share it gives (benchmarks/results/ablation.md), until choices decides
    label_weights: dict[str, float] = field(
        default_factory=lambda: {"Scanner": 1.0, "Origin": 1.0, "Species": 0.5, "Tumor": 1.0}
    )


@dataclass
class DistilConfig:
    enabled: bool = True
    decay: float = 0.99
    temperature: float = 2.0
    weight: float = 1.0
    rampup_epochs: float = 1.0


@dataclass
class OptimConfig:
    epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup_epochs: float = 0.5
    # shuffle + class-weighted CE beat the balanced sampler with CE on validation (benchmarks/results/choices.md)
    sampler: str = "shuffle"  # balanced | shuffle
    loss: str = "weighted_ce"  # ce | weighted_ce | focal
    focal_gamma: float = 2.0
    label_smoothing: float = 0.0


@dataclass
class RunConfig:
    out: str = "runs/default"
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # fp16 autocast on CUDA
    cpu_bf16: bool = False  # measured slower than fp32 for Lite0 on this CPU (benchmarks/)
    compile: bool = False
    threads: int = 0  # 0: torch's default
    tta: str = "dihedral4"  # views used for the final evaluation and shipped in model.json
    eval_domain_column: str = "Tumor"
    resume: bool = True
    progress: bool = True  # bars on a terminal only; a redirected log gets one line per epoch
    grad_probe_every: int = 20  # steps between measurements of each loss term's gradient share; 0: off


# What does not change the weights: where they go, how they are shown or scored, and where and how
# fast they are computed. A resume on another device or thread count accepts the checkpoint.
_NOT_IN_DIGEST = {"run": ("out", "resume", "progress", "device", "threads", "compile", "tta", "eval_domain_column",
                          "grad_probe_every"),
                  "data": ("cache_dir",)}
# Settings added after runs were made: at these values they change nothing, so they stay out of the
# digest and older checkpoints still resume.
SETTINGS_ADDED_LATER = {"data": {"center_crop": 0, "stain_norm": "none"}}
SETTINGS_ADDED_LATER["model"] = {"backbone_kwargs": {}, "resize": -1, "lora": dataclasses.asdict(LoraConfig())}


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    distil: DistilConfig = field(default_factory=DistilConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def weights_settings(self) -> dict[str, Any]:
        """Every setting that determines the weights (``_NOT_IN_DIGEST`` lists what does not), nested by
        section: what a model card records so that the model describes how it was trained."""
        return _without_not_in_digest(self.to_dict())

    def digest(self) -> str:
        """A hash of :meth:`weights_settings`, where a setting added later is left out at its neutral value."""
        return _hash(_without_neutral_later(self.weights_settings()))

    def check(self) -> None:
        """Refuse settings that name nothing or do nothing. A setting left at its default does nothing
        either way, so only values off the default are judged: a run's own config.yaml, which writes
        every key, loads again."""
        unknown = sorted(set(self.align.label_weights) - set(self.data.weak_labels))
        if unknown:
            raise ValueError(f"align.label_weights names {', '.join(unknown)}, which is not a weak label "
                             f"(data.weak_labels: {', '.join(self.data.weak_labels)})")
        if not 0 <= self.data.center_crop <= self.data.input_size:
            raise ValueError(f"data.center_crop must be 0 (off) or 1..data.input_size ({self.data.input_size}), "
                             f"got {self.data.center_crop}" + (f" (the default); with data.input_size="
                             f"{self.data.input_size} set data.center_crop=0 or a smaller side"
                             if self.data.center_crop == DataConfig.center_crop else ""))
        if self.data.stain_norm not in STAIN_METHODS:
            raise ValueError(f"data.stain_norm must be one of {', '.join(STAIN_METHODS)}, got {self.data.stain_norm!r}")
        if self.align.normalize not in ("standardize", "none"):
            raise ValueError(f"align.normalize must be standardize or none, got {self.align.normalize!r}")
        if self.optim.loss == "focal" and self.optim.label_smoothing:
            raise ValueError("optim.label_smoothing does nothing with optim.loss=focal; drop one of them")
        if self.optim.loss != "focal" and self.optim.focal_gamma != OptimConfig().focal_gamma:
            raise ValueError(f"optim.focal_gamma does nothing with optim.loss={self.optim.loss}; "
                             "set optim.loss=focal or drop it")
        lora = self.model.lora
        if lora.rank < 0:
            raise ValueError(f"model.lora.rank must be 0 (off) or positive, got {lora.rank}")
        if not lora.rank and dataclasses.asdict(lora) != dataclasses.asdict(LoraConfig()):
            raise ValueError("model.lora settings do nothing with model.lora.rank=0; set a rank or drop them")
        if lora.rank and not lora.target_modules:
            raise ValueError("model.lora.target_modules is empty: LoRA would adapt nothing")
        if self.model.resize < -1:
            raise ValueError(f"model.resize must be -1 (auto), 0 (never) or a side in pixels, got {self.model.resize}")


_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _apply(section: Any, key: str, value: Any, where: str) -> None:
    names = {f.name for f in dataclasses.fields(section)}
    if key not in names:
        raise ValueError(f"unknown setting {where}; {type(section).__name__} has: {', '.join(sorted(names))}")
    current = getattr(section, key)
    if dataclasses.is_dataclass(current) and isinstance(value, dict):  # a nested section, e.g. model.lora
        for sub, sub_value in value.items():
            _apply(current, sub, sub_value, f"{where}.{sub}")
        return
    if isinstance(current, bool) and not isinstance(value, bool):
        raise ValueError(f"{where} must be true or false, got {value!r}")
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(current, float) and isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 2e-4 (no dot) as a string; it is the number people mean
    if isinstance(current, list) and isinstance(value, str):
        value = [v for v in value.split(",") if v]
    if current is not None and not isinstance(value, type(current)):
        raise ValueError(f"{where} must be {type(current).__name__}, got {value!r}")
    setattr(section, key, value)


def _merge(cfg: Config, tree: dict[str, Any]) -> None:
    for section_name, values in tree.items():
        if not hasattr(cfg, section_name) or not isinstance(values, dict):
            raise ValueError(f"unknown config section {section_name!r}")
        section = getattr(cfg, section_name)
        for key, value in values.items():
            _apply(section, key, value, f"{section_name}.{key}")


def _yaml(text: str, where: str) -> Any:
    """``text`` parsed as YAML; malformed YAML is a one-line error naming ``where``, not a parser's traceback."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        mark = getattr(err, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ValueError(f"{where}: not valid YAML: {problem}{at}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file, then ``section.key=value`` overrides (values parsed as YAML)."""
    cfg = Config()
    if path is not None:
        tree = _yaml(Path(path).read_text(encoding="utf-8"), str(path)) or {}
        if not isinstance(tree, dict):
            raise ValueError(f"{path}: a config file maps sections to settings, not {type(tree).__name__}")
        _merge(cfg, tree)
    sections = {f.name for f in dataclasses.fields(cfg)}
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ValueError(f"override {item!r} is not of the form section.key=value")
        dotted, raw = item.split("=", 1)
        section_name, key = dotted.split(".", 1)
        if section_name not in sections:
            raise ValueError(f"unknown config section {section_name!r} in {item!r}; "
                             f"sections: {', '.join(sorted(sections))}")
        value = _yaml(raw, f"override {item!r}")
        if "." in key:  # e.g. align.label_weights.Scanner=2, model.lora.rank=8
            key, sub = key.split(".", 1)
            current = getattr(getattr(cfg, section_name), key, None)
            if dataclasses.is_dataclass(current):
                _merge(cfg, {section_name: {key: {sub: value}}})
            else:
                _merge(cfg, {section_name: {key: {**(current or {}), sub: value}}})
        else:
            _merge(cfg, {section_name: {key: value}})
    cfg.check()
    return cfg


def with_settings_added_later(tree: dict[str, Any]) -> dict[str, Any]:
    """A config as a run or a card wrote it (nested dicts), with every setting its code did not have
    yet at the value it was added at (``SETTINGS_ADDED_LATER``), which changes nothing, not at today's
    default, which may have moved since (the centre crop did)."""
    tree = copy.deepcopy(tree)
    for section, neutral in SETTINGS_ADDED_LATER.items():
        values = tree.setdefault(section, {})
        for key, value in neutral.items():
            values.setdefault(key, copy.deepcopy(value))
    return tree


def load_run_config(path: str | Path) -> Config:
    """A run's own ``config.yaml``, which writes every key its code had (see ``with_settings_added_later``)."""
    cfg = Config()
    _merge(cfg, with_settings_added_later(yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}))
    cfg.check()
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    from amf.atomic import write_text_atomic

    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    write_text_atomic(path, text)


RECIPE_PARTS = ("mix", "align", "distil")


def _without_not_in_digest(d: dict[str, Any]) -> dict[str, Any]:
    for section, keys in _NOT_IN_DIGEST.items():
        for k in keys:
            d[section].pop(k, None)
    return d


def _without_neutral_later(d: dict[str, Any]) -> dict[str, Any]:
    for section, neutral in SETTINGS_ADDED_LATER.items():
        for k, v in neutral.items():
            if d[section].get(k, v) == v:
                d[section].pop(k, None)
    return d


def _hash(d: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def acting_digest(settings: dict[str, Any]) -> str:
    """A hash of what training acts on, from a config's settings (``Config.to_dict()``, as a run's
    config.yaml holds them): a recipe part switched off keeps only its switch, since none of its other
    settings reaches the weights. Two runs with equal acting digests train alike, so ERM of two recipes
    that differ only in the alignment's form is one run (benchmarks/ablation.py ``--erm-from``)."""
    d = _without_not_in_digest(copy.deepcopy(settings))
    for part in RECIPE_PARTS:
        if not d[part]["enabled"]:
            d[part] = {"enabled": False}
    return _hash(_without_neutral_later(d))


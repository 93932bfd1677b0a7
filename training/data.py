"""Manifests, the in-memory patch set, slide-grouped splits and the batch sampler.

A manifest is a CSV in the MIDOG25 atypical-set columns (``image_id, filename, coordinateX,
coordinateY, Tumor, Scanner, Origin, Species, expert1..3, majority``) or any subset that keeps
``image_id`` and ``majority`` (e.g. OMG-Octo's ``image_id, filename, majority``), read, labelled and
decoded by :mod:`amf.manifest` as the local leaderboard reads it. Several manifests combine into one
set. An empty metadata cell means unknown, never a domain of its own.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from amf.errors import InputError
from amf.manifest import decode_image, read_cases
from amf.preprocess import crop_and_upscale
from amf.stain import StainTarget, fit_target, lab_stats, normalize_stains

if TYPE_CHECKING:
    from training.config import DataConfig

log = logging.getLogger(__name__)
UNKNOWN = -1


@dataclass
class PatchSet:
    """Patches as one uint8 N×H×W×3 array with labels, slide groups and weak labels."""

    images: np.ndarray
    labels: np.ndarray  # 0 normal, 1 atypical
    slides: np.ndarray  # str; a slide id unique across manifests
    meta: dict[str, np.ndarray]  # weak label -> str values, "" where unknown
    # Per patch, the LAB mean and std of the whole fitted patch (N×2×3), where stain normalisation is to
    # follow (apply_stain_target); the target once it has been applied.
    stain_stats: np.ndarray | None = None
    stain_target: StainTarget | None = None
    codes: dict[str, np.ndarray] = field(init=False)  # weak label -> int code, -1 where unknown
    vocab: dict[str, list[str]] = field(init=False)

    def __post_init__(self) -> None:
        self.codes, self.vocab = {}, {}
        for name, values in self.meta.items():
            names = sorted({v for v in values.tolist() if v})
            index = {v: i for i, v in enumerate(names)}
            self.codes[name] = np.array([index.get(v, UNKNOWN) for v in values.tolist()], np.int64)
            self.vocab[name] = names

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> PatchSet:
        return PatchSet(self.images[idx], self.labels[idx], self.slides[idx],
                        {k: v[idx] for k, v in self.meta.items()},
                        None if self.stain_stats is None else self.stain_stats[idx], self.stain_target)

    def site_codes(self) -> np.ndarray:
        """One code per combination of known weak labels, -1 when none is known (for cross-domain mixing)."""
        keys = ["|".join(f"{k}={v[i]}" for k, v in self.meta.items() if v[i]) for i in range(len(self))]
        names = sorted({k for k in keys if k})
        index = {k: i for i, k in enumerate(names)}
        return np.array([index.get(k, UNKNOWN) for k in keys], np.int64)

    def summary(self) -> dict:
        return summarize(self.labels, self.slides, self.meta)


def summarize(labels: np.ndarray, slides: np.ndarray, meta: dict[str, np.ndarray]) -> dict:
    """Counts of patches, classes, slides and each weak label's values, as model cards record them."""
    return {
        "patches": len(labels),
        "atypical": int(labels.sum()),
        "normal": int(len(labels) - labels.sum()),
        "slides": len(set(slides.tolist())),
        "weak_labels": {k: {v or "unknown": int((values == v).sum()) for v in sorted(set(values.tolist()))}
                        for k, values in meta.items()},
    }


def read_manifests(manifests: list[str], image_dirs: list[str], weak_labels: list[str], size: int,
                   cache_dir: str | None = None, center_crop: int = 0, stain_norm: str = "none") -> PatchSet:
    """Read and combine manifests; decode every image once (cached as .npy keyed by content), as
    :func:`amf.preprocess.prepare_page` makes it for the model (``center_crop`` included).

    With ``stain_norm`` (not "none") the patches keep their scanned colours and carry the statistics
    prepare_page takes from the whole fitted patch; :func:`apply_stain_target` finishes the job once the
    split says which patches the target may come from."""
    paths, labels, slides, meta = read_rows(manifests, image_dirs, weak_labels)
    stats = None
    if stain_norm == "none":
        images = _load_images(paths, size, cache_dir or None, center_crop)
    else:
        fitted = _load_images(paths, size, cache_dir or None)
        stats = lab_stats(fitted)
        images = np.stack([crop_and_upscale(p, center_crop) for p in fitted]) if center_crop else fitted
    return PatchSet(images, np.array(labels, np.int64), np.array(slides), {k: np.array(v) for k, v in meta.items()},
                    stats)


def fit_stain_target(data: PatchSet, rows: np.ndarray) -> StainTarget:
    """The stain target from the patches at ``rows``: those a run may fit or validate on, never a
    held-out domain's. Only colour statistics are read, no label."""
    if data.stain_stats is None:
        raise ValueError("these patches were read without stain statistics (read_manifests stain_norm)")
    return fit_target(data.stain_stats[rows])


def read_patch_set(d: DataConfig, stain: StainTarget | None = None) -> PatchSet:
    """The patches a run's data settings ``d`` name, read as that run reads them; with ``stain`` (a trained
    model's target) mapped onto it, as that model saw them."""
    data = read_manifests(d.manifests, d.image_dirs, d.weak_labels, d.input_size, d.cache_dir, d.center_crop,
                          d.stain_norm)
    if stain is not None:
        apply_stain_target(data, stain)
    return data


def apply_stain_target(data: PatchSet, target: StainTarget) -> None:
    """Map every patch onto ``target`` in place, as amf.preprocess.prepare_page does at inference."""
    if data.stain_stats is None:
        raise ValueError("these patches were read without stain statistics (read_manifests stain_norm)")
    if data.stain_target is not None:
        raise ValueError(f"these patches are stain-normalised already (onto {data.stain_target})")
    data.images = normalize_stains(data.images, data.stain_stats, target)
    data.stain_target = target


def read_rows(manifests: list[str], image_dirs: list[str],
              weak_labels: list[str]) -> tuple[list[Path], list[int], list[str], dict[str, list[str]]]:
    """The manifests' rows in patch-set order, without decoding an image: paths, labels, slides and
    the weak labels (what a PatchSet's row index refers to)."""
    if not manifests:
        raise InputError("no manifest given")
    if image_dirs and len(image_dirs) != len(manifests):
        raise InputError(f"{len(manifests)} manifests but {len(image_dirs)} image folders; give one per manifest")
    paths, labels, slides = [], [], []
    meta: dict[str, list[str]] = {k: [] for k in weak_labels}
    for m_i, manifest_str in enumerate(manifests):
        manifest = Path(manifest_str)
        cases = read_cases(manifest, Path(image_dirs[m_i]) if image_dirs else None)
        for case in cases:
            paths.append(case.path)
            labels.append(case.label)
            # Without a slide column every patch is its own group (and the user is told).
            slide = case.cell("filename") or f"patch:{case.image_id}"
            slides.append(f"{manifest.stem}/{slide}")
            for k in weak_labels:
                meta[k].append(case.cell(k))
        if not any(case.cell("filename") for case in cases):
            log.warning("%s has no slide (filename) column: splits cannot be grouped by slide", manifest)
    return paths, labels, slides, meta


def _load_images(paths: list[Path], size: int, cache_dir: str | None, center_crop: int = 0) -> np.ndarray:
    # "|rgb": decoded by amf.manifest.decode_image in true colours (palette PNGs were index-gray before)
    key = hashlib.sha256(f"{size}{f'|crop{center_crop}' if center_crop else ''}|rgb".encode())
    for p in paths:
        st = p.stat()
        key.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    cache = Path(cache_dir) / f"patches-{key.hexdigest()[:20]}.npy" if cache_dir else None
    expected = (len(paths), size, size, 3)
    if cache is not None and cache.is_file():
        cached = _read_cache(cache, expected)
        if cached is not None:
            return cached
    from tqdm import tqdm

    arr = np.stack([decode_image(p, size, center_crop)
                    for p in tqdm(paths, desc="decoding patches", unit="img", leave=False,
                                  disable=not sys.stderr.isatty())])
    if cache is not None:
        from amf.atomic import write_atomic

        def save(tmp: Path) -> None:
            # Through a file object: given a name, np.save appends ".npy" and writes elsewhere.
            with open(tmp, "wb") as fh:
                np.save(fh, arr, allow_pickle=False)

        write_atomic(cache, save)
    return arr


def _read_cache(cache: Path, expected: tuple[int, ...]) -> np.ndarray | None:
    """The cached patches, or None (with a warning) when the file is damaged or of another shape."""
    try:
        arr = np.load(cache, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        log.warning("patch cache %s is unreadable (%s); rebuilding it", cache, err)
        return None
    if arr.shape != expected or arr.dtype != np.uint8:
        log.warning("patch cache %s holds %s %s, not %s uint8; rebuilding it", cache, arr.shape, arr.dtype, expected)
        return None
    return arr


# -- splits ---------------------------------------------------------------------------------------
def grouped_stratified_folds(labels: np.ndarray, groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold index per row; every slide in one fold, atypical share balanced greedily across folds."""
    rng = np.random.default_rng(seed)
    uniq = np.array(sorted(set(groups.tolist())))
    if len(uniq) < k:
        raise InputError(f"only {len(uniq)} slides: cannot split into {k} slide-grouped folds")
    rng.shuffle(uniq)
    pos = {g: int(labels[groups == g].sum()) for g in uniq}
    tot = {g: int((groups == g).sum()) for g in uniq}
    order = sorted(uniq, key=lambda g: (-pos[g], -tot[g]))  # place the heavy slides first
    fold_pos, fold_tot = np.zeros(k), np.zeros(k)
    target_pos, target_tot = labels.sum() / k, len(labels) / k
    assign: dict[str, int] = {}
    for g in order:
        # fill the fold that is furthest below its share, atypical first, then size
        deficit = (fold_pos + pos[g]) / max(target_pos, 1) + (fold_tot + tot[g]) / max(target_tot, 1)
        f = int(np.argmin(deficit))
        assign[g] = f
        fold_pos[f] += pos[g]
        fold_tot[f] += tot[g]
    return np.array([assign[g] for g in groups.tolist()])


@dataclass
class Split:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    description: str


def split_of(data: PatchSet, d: DataConfig, seed: int) -> Split:
    """The split a run's data settings ``d`` (and its seed) make of ``data``: the one it trained on."""
    return make_split(data, d.split, val_fraction=d.val_fraction, folds=d.folds, fold=d.fold,
                      lodo_column=d.lodo_column, lodo_value=d.lodo_value, seed=seed)


def make_split(data: PatchSet, mode: str, *, val_fraction: float = 0.15, folds: int = 5, fold: int = 0,
               lodo_column: str = "", lodo_value: str = "", seed: int = 0) -> Split:
    """Train/val/test indices; a slide never falls on two sides."""
    all_idx = np.arange(len(data))
    empty = np.array([], np.int64)
    if mode == "none":
        return Split(all_idx, empty, empty, "all patches for training, no validation")
    if mode == "kfold":
        if not 0 <= fold < folds:
            raise InputError(f"fold {fold} is outside 0..{folds - 1}")
        # With lodo_value, the folds partition the other domains and the held-out one is every fold's
        # test split: the ensemble of those folds is then scored where none of its members trained.
        held = _held_out(data, lodo_column, lodo_value) if lodo_value else np.zeros(len(data), bool)
        rest = all_idx[~held]
        f = grouped_stratified_folds(data.labels[rest], data.slides[rest], folds, seed)
        where = f" of the patches outside {lodo_column} {lodo_value!r}" if lodo_value else ""
        return Split(rest[f != fold], rest[f == fold], all_idx[held], f"slide-grouped fold {fold} of {folds}{where}")
    if mode == "lodo":
        held = _held_out(data, lodo_column, lodo_value)
        rest = all_idx[~held]
        inner = _holdout(data.subset(rest), val_fraction, seed)
        train, val = rest[inner[0]], rest[inner[1]]
        return Split(train, val, all_idx[held],
                     f"leave-one-domain-out: test = {lodo_column} {lodo_value!r}; val = {_share(data, val, rest)} "
                     "of the rest, slide-grouped")
    if mode == "holdout":
        train, val = _holdout(data, val_fraction, seed)
        return Split(train, val, empty, f"slide-grouped stratified holdout, validation = {_share(data, val, all_idx)}")
    raise InputError(f"unknown split {mode!r}; choose holdout, kfold, lodo or none")


def _held_out(data: PatchSet, column: str, value: str) -> np.ndarray:
    """The rows of the domain(s) ``column = value`` (several comma-separated; ``unknown``: empty)."""
    if column not in data.meta:
        raise InputError(f"cannot hold out by {column!r}: known columns are {', '.join(data.meta)}")
    values = data.meta[column]
    # Several values hold out several domains, so a run can train on one domain alone and be scored on
    # each of the others (benchmarks/nested_lodo.py).
    held = np.zeros(len(data), bool)
    for one_value in (v.strip() for v in value.split(",")):
        one = values == ("" if one_value == "unknown" else one_value)
        if not one.any():
            seen = ", ".join(sorted({v or "unknown" for v in values.tolist()}))
            raise InputError(f"no patch has {column} = {one_value!r}; values are: {seen}")
        held |= one
    if held.all():
        raise InputError(f"holding out {column} = {value!r} leaves no patch to train on")
    return held


def _share(data: PatchSet, part: np.ndarray, whole: np.ndarray) -> str:
    """What a split really holds: slide-grouped folds do not cut at the requested fraction."""
    slides = len(set(data.slides[part].tolist()))
    return (f"{len(part)} of {len(whole)} patches ({len(part) / max(len(whole), 1):.1%}), "
            f"{slides} of {len(set(data.slides[whole].tolist()))} slides")


def _holdout(data: PatchSet, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    k = max(2, round(1 / fraction))
    f = grouped_stratified_folds(data.labels, data.slides, k, seed)
    idx = np.arange(len(data))
    return idx[f != 0], idx[f == 0]


# -- sampling -------------------------------------------------------------------------------------
class BatchSampler:
    """Index batches for one epoch of ``len(labels)`` draws, identical on every DDP rank but sharded.

    ``balanced`` draws each class with equal probability (with replacement), the answer to the
    class imbalance that measured best here; ``shuffle`` is a plain permutation.
    """

    def __init__(self, labels: np.ndarray, batch_size: int, mode: str = "balanced", seed: int = 0,
                 rank: int = 0, world: int = 1) -> None:
        if mode not in ("balanced", "shuffle"):
            raise ValueError(f"unknown sampler {mode!r}; choose balanced or shuffle")
        self.labels, self.batch_size, self.mode = labels, batch_size, mode
        self.seed, self.rank, self.world = seed, rank, world
        counts = np.bincount(labels, minlength=2).astype(np.float64)
        w = 1.0 / np.maximum(counts[labels], 1)
        self.weights = w / w.sum()

    def __len__(self) -> int:
        return len(self.labels) // (self.batch_size * self.world)

    def epoch(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng((self.seed, epoch))
        n = len(self) * self.batch_size * self.world
        if self.mode == "balanced":
            order = rng.choice(len(self.labels), size=n, replace=True, p=self.weights)
        else:
            order = rng.permutation(len(self.labels))[:n]
        mine = order[self.rank :: self.world]
        return [mine[i : i + self.batch_size] for i in range(0, len(mine), self.batch_size)]

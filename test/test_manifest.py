"""One reading of a manifest (amf/manifest.py): the same labels and the same, true-colour pixels for
training (training.data.read_manifests) and the local leaderboard (leaderboard pack)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from amf.errors import InputError
from amf.manifest import LABELS, decode_image, parse_label, read_cases, read_rgb
from amf.organizer import SLUG
from amf.preprocess import prepare_page
from leaderboard import pack
from training.data import read_manifests

REPO = Path(__file__).resolve().parents[1]
AMI_BR = REPO.parent / "shared/data/ami-br/images"
SIDE = 24
RED, BLUE = (255, 0, 0), (0, 0, 255)


def quiet(*args: object, **kwargs: object) -> None:
    pass


def _palette() -> tuple[Image.Image, np.ndarray]:
    """Left half palette index 3 = pure red, right half index 7 = pure blue (index-gray would read 3 and 7)."""
    idx = np.full((SIDE, SIDE), 3, np.uint8)
    idx[:, SIDE // 2 :] = 7
    im = Image.fromarray(idx, mode="P")
    palette = [0] * 768
    palette[9:12], palette[21:24] = RED, BLUE
    im.putpalette(palette)
    want = np.zeros((SIDE, SIDE, 3), np.uint8)
    want[:, : SIDE // 2], want[:, SIDE // 2 :] = RED, BLUE
    return im, want


def _gray16() -> tuple[Image.Image, np.ndarray]:
    """A true 16-bit gray ramp; 8 bit is value * 255 / 65535, rounded, as amf.preprocess.to_rgb_uint8 scales."""
    values = np.linspace(0, 65535, SIDE * SIDE).round().astype(np.uint16).reshape(SIDE, SIDE)
    eight = np.round(values.astype(np.float64) * 255 / 65535).astype(np.uint8)
    return Image.fromarray(values), np.repeat(eight[..., None], 3, axis=2)


def _gray8() -> tuple[Image.Image, np.ndarray]:
    values = np.arange(SIDE * SIDE, dtype=np.int64).reshape(SIDE, SIDE) % 256
    return Image.fromarray(values.astype(np.uint8), mode="L"), np.repeat(values.astype(np.uint8)[..., None], 3, axis=2)


def _rgba() -> tuple[Image.Image, np.ndarray]:
    """Colours kept as they are, also under alpha 0: alpha is dropped, never composited onto black."""
    rgb = np.random.default_rng(0).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    alpha = np.zeros((SIDE, SIDE, 1), np.uint8)
    alpha[: SIDE // 2] = 255
    return Image.fromarray(np.concatenate([rgb, alpha], axis=2), mode="RGBA"), rgb


KINDS = {"palette": (_palette, "P"), "gray16": (_gray16, "I;16"), "gray": (_gray8, "L"), "rgba": (_rgba, "RGBA")}


@pytest.fixture
def odd_pngs(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A manifest of one PNG per kind (and an ordinary RGB one), with the true colours each must read as."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    want: dict[str, np.ndarray] = {}
    lines = ["image_id,filename,Tumor,majority"]
    for i, (kind, (make, mode)) in enumerate(KINDS.items()):
        im, want[f"{kind}.png"] = make()
        im.save(root / "images" / f"{kind}.png")
        with Image.open(root / "images" / f"{kind}.png") as back:  # the file really is of that kind
            assert back.mode == mode or (kind == "gray16" and back.mode in ("I;16", "I")), (kind, back.mode)
        lines.append(f"{kind}.png,slide{i},breast,{'AMF' if i % 2 else 'NMF'}")
    rgb = np.random.default_rng(1).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "images" / "rgb.png")
    want["rgb.png"] = rgb
    lines.append("rgb.png,slide9,breast,AMF")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv", want


def _packed_pages(manifest: Path, out: Path) -> dict[str, np.ndarray]:
    """image_id -> the page ``leaderboard pack`` wrote for it."""
    pack([manifest], out, domain_column="Tumor", stack_size=64, log=quiet)
    pages = {}
    for job in json.loads((out / "pack.json").read_text())["jobs"]:
        with tifffile.TiffFile(out / "jobs" / job["job"] / "input" / "images" / SLUG / job["image"]) as tif:
            for page, entry in zip(tif.pages, job["pages"], strict=True):
                pages[entry["image_id"]] = page.asarray()
    return pages


def test_training_and_pack_read_the_same_true_colours(odd_pngs: tuple[Path, dict[str, np.ndarray]],
                                                      tmp_path: Path) -> None:
    manifest, want = odd_pngs
    data = read_manifests([str(manifest)], [], [], SIDE, None)
    trained = dict(zip((c.image_id for c in read_cases(manifest)), data.images, strict=True))
    packed = _packed_pages(manifest, tmp_path / "lb")
    assert set(trained) == set(packed) == set(want)
    for image_id, pixels in want.items():
        np.testing.assert_array_equal(trained[image_id], pixels, err_msg=f"training, {image_id}")
        np.testing.assert_array_equal(packed[image_id], pixels, err_msg=f"pack, {image_id}")
    assert tuple(trained["palette.png"][0, 0]) == RED and tuple(packed["palette.png"][0, -1]) == BLUE


@pytest.mark.parametrize("kind", list(KINDS))
def test_decoder_gives_true_colours_per_kind(tmp_path: Path, kind: str) -> None:
    im, want = KINDS[kind][0]()
    im.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_rgb(tmp_path / "p.png"), want)
    # with a size, exactly prepare_page of those colours (here: reflect-padded to 32)
    np.testing.assert_array_equal(decode_image(tmp_path / "p.png", 32), prepare_page(want, 32))


def test_rgb_pngs_decode_as_before(tmp_path: Path) -> None:
    """Ordinary RGB PNGs give byte for byte what training read before: prepare_page(np.asarray(Image.open(p)))."""
    rng = np.random.default_rng(2)
    paths = []
    for i, shape in enumerate([(150, 140, 3), (120, 131, 3), (128, 128, 3)]):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    if AMI_BR.is_dir():  # and on a few of the real AMi-Br patches training uses
        paths += sorted(AMI_BR.glob("*.png"))[:: max(1, len(list(AMI_BR.glob("*.png"))) // 5)][:5]
    for path in paths:
        with Image.open(path) as im:
            old = prepare_page(np.asarray(im), 128)
        new = decode_image(path, 128)
        assert new.dtype == old.dtype == np.uint8 and np.array_equal(new, old), path


def test_one_label_vocabulary() -> None:
    for value, label in [("AMF", 1), (" atypical ", 1), ("Atypical", 1), ("1", 1), (" amf", 1),
                         ("NMF", 0), ("normal", 0), ("NORMAL ", 0), ("0", 0), ("nmf", 0)]:
        assert parse_label(value, "m.csv:2") == label, value
    assert set(LABELS.values()) == {0, 1}
    for bad in ["MAYBE", "", None, "2", "true", "A MF"]:
        with pytest.raises(InputError) as err:
            parse_label(bad, "m.csv:7")
        assert str(err.value).startswith("m.csv:7: unknown label") and repr(bad) in str(err.value)


def _write(root: Path, rows: list[str], header: str = "image_id,filename,Tumor,majority") -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    for row in rows:
        image_id = row.split(",")[0]
        if image_id and not (root / "images" / image_id).exists():
            Image.fromarray(np.full((SIDE, SIDE, 3), 128, np.uint8)).save(root / "images" / image_id)
    (root / "m.csv").write_text("\n".join([header, *rows]) + "\n")
    return root / "m.csv"


def test_training_and_pack_share_labels_and_label_errors(tmp_path: Path) -> None:
    rows = ["a.png,s1,breast, Atypical ", "b.png,s1,breast,normal", "c.png,s2,breast,1", "d.png,s2,breast,0",
            "e.png,s3,breast,amf", "f.png,s3,breast,NMF"]
    manifest = _write(tmp_path / "ok", rows)
    want = [1, 0, 1, 0, 1, 0]
    assert read_manifests([str(manifest)], [], [], SIDE, None).labels.tolist() == want
    pack([manifest], tmp_path / "lb", domain_column="Tumor", log=quiet)
    packed = {p["image_id"]: p["label"] for j in json.loads((tmp_path / "lb" / "pack.json").read_text())["jobs"]
              for p in j["pages"]}
    assert [packed[r.split(",")[0]] for r in rows] == ["atypical" if w else "normal" for w in want]

    bad = _write(tmp_path / "bad", [*rows[:3], "g.png,s4,breast,MAYBE"])
    for read in (lambda: read_manifests([str(bad)], [], [], SIDE, None),
                 lambda: pack([bad], tmp_path / "lb2", domain_column="Tumor", log=quiet)):
        with pytest.raises(InputError) as err:
            read()
        message = str(err.value)
        assert "\n" not in message and f"{bad}:5:" in message and "'MAYBE'" in message, message


@pytest.mark.parametrize("problem", ["corrupt", "not_an_image"])
def test_undecodable_image_is_one_line_naming_the_file(tmp_path: Path, problem: str) -> None:
    manifest = _write(tmp_path, ["a.png,s1,breast,AMF", "b.png,s1,breast,NMF"])
    broken = tmp_path / "images" / "b.png"
    if problem == "corrupt":
        broken.write_bytes(broken.read_bytes()[:60])  # cut short
    else:
        broken.write_text("not an image")
    for read in (lambda: read_manifests([str(manifest)], [], [], SIDE, None),
                 lambda: pack([manifest], tmp_path / "lb", domain_column="Tumor", log=quiet, force=True)):
        with pytest.raises(InputError) as err:
            read()
        message = str(err.value)
        assert "\n" not in message and str(broken) in message and "cannot decode image" in message, message


@pytest.mark.parametrize("problem", ["no_file", "no_column", "empty", "missing_image"])
def test_manifest_errors_are_shared(tmp_path: Path, problem: str) -> None:
    manifest = _write(tmp_path, ["a.png,s1,breast,AMF", "b.png,s1,breast,NMF"])
    if problem == "no_file":
        manifest = tmp_path / "absent.csv"
        expect = "cannot read manifest"
    elif problem == "no_column":
        manifest.write_text("image_id,filename,Tumor\na.png,s1,breast\n")
        expect = "no column 'majority'"
    elif problem == "empty":
        manifest.write_text("image_id,filename,Tumor,majority\n")
        expect = "lists no patches"
    else:
        (tmp_path / "images" / "b.png").unlink()
        expect = "missing"
    for read in (lambda: read_manifests([str(manifest)], [], [], SIDE, None),
                 lambda: pack([manifest], tmp_path / "lb", domain_column="Tumor", log=quiet)):
        with pytest.raises(InputError, match=expect) as err:
            read()
        assert "\n" not in str(err.value)

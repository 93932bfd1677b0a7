"""amf.organizer.find_stack: which file of a Grand Challenge job is the stack, and when to refuse.

The stack is never read here (that is amf.stacks' job), so empty files stand in for stacks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from amf.errors import InputError
from amf.organizer import SLUG, find_stack


def job(root: Path, files: list[str], entries: Any = None, folder: str = f"images/{SLUG}") -> Path:
    """A job folder: ``files`` (a trailing "/" makes a folder) under ``folder``, and ``inputs.json``
    holding ``entries`` unless None."""
    where = root / folder
    where.mkdir(parents=True)
    for name in files:
        if name.endswith("/"):
            (where / name).mkdir()
        else:
            (where / name).write_bytes(b"")
    if entries is not None:
        (root / "inputs.json").write_text(json.dumps(entries))
    return root


def entry(name: str | None = None, relative_path: str | None = f"images/{SLUG}") -> dict[str, Any]:
    """One inputs.json entry for our interface, shaped like Grand Challenge's (test/input/inputs.json)."""
    interface: dict[str, Any] = {"slug": SLUG, "kind": "Image", "super_kind": "Image"}
    if relative_path is not None:
        interface["relative_path"] = relative_path
    return {"file": None, "image": None if name is None else {"name": name}, "value": None, "interface": interface}


def test_the_one_stack_is_found_without_inputs_json(tmp_path: Path) -> None:
    found, how = find_stack(job(tmp_path, ["stack.tif"]))
    assert found == tmp_path / "images" / SLUG / "stack.tif"
    assert "no inputs.json" in how


def test_stray_files_and_folders_are_not_stacks(tmp_path: Path) -> None:
    """Only files with a stack suffix count: a README, a .DS_Store or a folder named like a stack do not."""
    root = job(tmp_path, ["README.txt", ".DS_Store", "thumbs.db", "old.tif/", "STACK.TIFF"])
    assert find_stack(root)[0].name == "STACK.TIFF"


@pytest.mark.parametrize("names", [["a.tif", "b.mha"], ["a.tif", "b.tif", "c.tif", "d.tif", "e.tif", "f.tif", "g.tif"]])
def test_several_stacks_are_refused_naming_at_most_five(tmp_path: Path, names: list[str]) -> None:
    with pytest.raises(InputError, match=rf"^{len(names)} stacks in .*a job holds exactly one$") as err:
        find_stack(job(tmp_path, names))
    listed = str(err.value).split("(", 1)[1].split(")", 1)[0]
    assert listed == ", ".join(names[:5])


def test_inputs_json_picks_the_named_stack_among_several(tmp_path: Path) -> None:
    root = job(tmp_path, ["a.tif", "b.tif", "c.mha"], [entry("b.tif")])
    found, how = find_stack(root)
    assert found == root / "images" / SLUG / "b.tif"
    assert "inputs.json" in how and "no inputs.json" not in how


def test_a_named_image_that_is_not_there_falls_back_to_the_one_stack(tmp_path: Path) -> None:
    """The image's name in inputs.json need not be the file's (e.g. an upload converted to .mha)."""
    root = job(tmp_path, ["converted.mha"], [entry("upload.tif")])
    assert find_stack(root)[0] == root / "images" / SLUG / "converted.mha"


def test_no_image_name_falls_back_to_the_one_stack(tmp_path: Path) -> None:
    root = job(tmp_path, ["stack.tiff"], [entry(None)])
    assert find_stack(root)[0] == root / "images" / SLUG / "stack.tiff"


def test_relative_path_from_inputs_json_is_followed(tmp_path: Path) -> None:
    root = job(tmp_path, ["stack.tif"], [entry("stack.tif", relative_path="images/elsewhere")],
               folder="images/elsewhere")
    assert find_stack(root)[0] == root / "images" / "elsewhere" / "stack.tif"


def test_without_relative_path_the_interface_folder_is_read(tmp_path: Path) -> None:
    root = job(tmp_path, ["stack.tif"], [entry("stack.tif", relative_path=None)])
    assert find_stack(root)[0] == root / "images" / SLUG / "stack.tif"


def test_our_interface_is_found_among_others(tmp_path: Path) -> None:
    other = {"image": {"name": "x.tif"}, "interface": {"slug": "something-else", "relative_path": "images/x"}}
    root = job(tmp_path, ["a.tif", "b.tif"], [other, entry("a.tif")])
    assert find_stack(root)[0] == root / "images" / SLUG / "a.tif"


@pytest.mark.parametrize("entries", [
    {"interface": {"slug": SLUG}},  # an object, not a list
    "images/stacked-histopathology-roi-cropouts",
    [SLUG],  # a list, but not of entries
    [entry("stack.tif"), 3],
])
def test_inputs_json_that_is_not_a_list_of_entries_is_refused(tmp_path: Path, entries: Any) -> None:
    with pytest.raises(InputError, match="is not a list of interface entries"):
        find_stack(job(tmp_path, ["stack.tif"], entries))


def test_inputs_json_without_our_interface_is_refused(tmp_path: Path) -> None:
    entries = [{"image": {"name": "stack.tif"}, "interface": {"slug": "something-else"}}]
    with pytest.raises(InputError, match="reads only 'stacked-histopathology-roi-cropouts'"):
        find_stack(job(tmp_path, ["stack.tif"], entries))


@pytest.mark.parametrize("files", [[], ["notes.txt", "stack.png", "stack.tif/"]])
def test_no_stack_is_refused(tmp_path: Path, files: list[str]) -> None:
    with pytest.raises(InputError, match=r"no \.tif/\.tiff/\.mha stack in"):
        find_stack(job(tmp_path, files))


def test_missing_folders_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"input folder .* does not exist"):
        find_stack(tmp_path / "nowhere")
    with pytest.raises(InputError, match=r"image folder .* does not exist"):
        find_stack(job(tmp_path, ["stack.tif"], [entry("stack.tif", relative_path="images/missing")]))

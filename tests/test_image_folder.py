"""The folder source: ``<folder>/<class>/<image>`` (or ``train/`` and ``test/``) read, resized,
checked at the door, and prepared like MNIST."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classifier.dataset import load_dataset, load_split
from classifier.errors import StageError
from classifier.folder import FolderSource, read_image
from classifier.mnist import MnistSource
from classifier.params import PrepareParams
from classifier.paths import Paths
from stages.prepare import prepare
from testbed.images import SHAPES, coloured_shapes, save_image, write_class_folders
from testbed.repo import write_params
from testbed.suite import (
    default_params,
    error_line,
    read_shared_mnist,
    run_module,
    write_raw_dir,
)

RGB = (32, 32, 3)


def _params(**changes) -> PrepareParams:
    return PrepareParams(**{**default_params()["prepare"], **changes})


def _shapes_folder(root: Path, per_class: int = 30, seed: int = 0) -> Path:
    images, labels = coloured_shapes(per_class, RGB[0], seed)
    return write_class_folders(root, images, labels, SHAPES)


def _prepare(tmp_path: Path, folder: Path, shape=RGB, **changes) -> dict:
    return prepare(FolderSource(folder, shape), _params(**changes), shape, Paths(tmp_path))


def test_an_unsplit_folder_is_split_by_prepare(tmp_path: Path) -> None:
    folder = _shapes_folder(tmp_path / "shapes")
    (folder / ".DS_Store").write_bytes(b"\0\1")  # hidden: skipped
    (folder / "circle" / ".hidden.png").write_bytes(b"junk")
    save_image(folder / "square" / "more" / "extra.png", coloured_shapes(1, 32, 9)[0][1])
    report = _prepare(tmp_path, folder)
    dataset = load_dataset(Paths(tmp_path).prepared_dir)
    assert dataset.classes == SHAPES and dataset.input_shape == RGB and dataset.source == "folder"
    # 30 a class (31 squares, one in a subfolder): 20% to test, then 10% of the rest to validation
    assert dataset.counts["test"] == {"circle": 6, "square": 6, "triangle": 6}
    assert dataset.counts["validation"] == {"circle": 2, "square": 2, "triangle": 2}
    assert dataset.counts["train"] == {"circle": 22, "square": 23, "triangle": 22}
    assert report["split"]["test_from"] == "prepare.test_fraction"
    assert report["source"] == {
        "name": "folder",
        "folder": folder.as_posix(),
        "files": 91,
        "test_split": "made by prepare",
    }
    images, labels = load_split("test", Paths(tmp_path).prepared_dir)
    assert images.shape == (18, *RGB) and sorted(labels.tolist()) == [0] * 6 + [1] * 6 + [2] * 6


def test_a_split_folder_keeps_its_split_and_sorts_class_names(tmp_path: Path) -> None:
    images, labels = coloured_shapes(12, 32, seed=1)
    names = ("b-square", "a-circle", "c-triangle")  # label order follows the sorted names
    write_class_folders(tmp_path / "data/train", images[::2], labels[::2], names)
    write_class_folders(tmp_path / "data/test", images[1::2], labels[1::2], names)
    report = _prepare(tmp_path, tmp_path / "data")
    dataset = load_dataset(Paths(tmp_path).prepared_dir)
    assert dataset.classes == ("a-circle", "b-square", "c-triangle")
    assert dataset.counts["test"] == {"a-circle": 6, "b-square": 6, "c-triangle": 6}
    assert report["split"]["test_from"] == "source"
    test_images, test_labels = load_split("test", Paths(tmp_path).prepared_dir)
    originals = {x.tobytes(): names[y] for x, y in zip(images[1::2], labels[1::2], strict=True)}
    assert len(test_labels) == 18
    for image, label in zip(test_images, test_labels, strict=True):
        assert dataset.classes[label] == originals[image.tobytes()]


def test_images_are_converted_and_resized_as_documented(tmp_path: Path) -> None:
    gradient = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (48, 1))  # 48x64, left dark
    rgb = np.stack([gradient, gradient // 2, 255 - gradient], axis=-1)
    for image_format in ("PNG", "JPEG", "BMP", "GIF"):
        path = save_image(tmp_path / f"g.{image_format.lower()}", rgb, image_format)
        pixels = read_image(path.read_bytes(), (24, 32, 3), str(path))
        assert pixels.shape == (24, 32, 3)
        expected = Image.open(path).convert("RGB").resize((32, 24), Image.Resampling.BILINEAR)
        np.testing.assert_array_equal(pixels, np.asarray(expected))
    gray = read_image((tmp_path / "g.png").read_bytes(), (48, 64, 1), "g.png")
    np.testing.assert_array_equal(gray[..., 0], np.asarray(Image.fromarray(rgb).convert("L")))


def test_the_same_digits_as_pngs_prepare_to_the_same_bytes_as_the_idx_files(
    tmp_path: Path,
) -> None:
    """MNIST's own images as a PNG class-folder tree (real pictures, another format): prepare
    makes byte-identical splits, so the pipeline after it trains the same model on either."""
    train = read_shared_mnist("train-images-idx3-ubyte")[:2000, ..., None]
    train_labels = read_shared_mnist("train-labels-idx1-ubyte")[:2000]
    test = read_shared_mnist("t10k-images-idx3-ubyte")[:500, ..., None]
    test_labels = read_shared_mnist("t10k-labels-idx1-ubyte")[:500]
    digits = tuple(str(d) for d in range(10))
    pngs = tmp_path / "pngs"
    write_class_folders(pngs / "train", train, train_labels, digits)
    write_class_folders(pngs / "test", test, test_labels, digits)
    raw = write_raw_dir(tmp_path / "raw", (train, train_labels), (test, test_labels))
    shape = (28, 28, 1)
    params = _params(max_class_imbalance=2.0)
    from_idx, from_png = Paths(tmp_path / "from-idx"), Paths(tmp_path / "from-png")
    prepare(MnistSource(raw), params, shape, from_idx)
    prepare(FolderSource(pngs, shape), params, shape, from_png)
    for split in ("train", "validation", "test"):
        shards = sorted((from_idx.prepared_dir / split).iterdir())
        assert [p.name for p in shards] == ["00000.bin"]
        assert shards[0].read_bytes() == (from_png.prepared_dir / split / "00000.bin").read_bytes()
    idx, png = load_dataset(from_idx.prepared_dir), load_dataset(from_png.prepared_dir)
    assert (idx.input_shape, idx.classes, idx.counts) == (png.input_shape, png.classes, png.counts)
    assert (idx.source, png.source) == ("mnist", "folder") and idx.checksum != png.checksum


def test_the_checksum_follows_the_content(tmp_path: Path) -> None:
    folder = _shapes_folder(tmp_path / "shapes", per_class=10)
    before = FolderSource(folder, RGB).checksum()
    assert FolderSource(folder, RGB).checksum() == before
    first = sorted((folder / "circle").iterdir())[0]
    save_image(first, coloured_shapes(1, 32, seed=5)[0][0])
    assert FolderSource(folder, RGB).checksum() != before


def _bad_folder(tmp_path: Path, damage) -> Path:
    folder = _shapes_folder(tmp_path / "shapes", per_class=10)
    damage(folder)
    return folder


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:60])


def _keep_only_circles(folder: Path) -> None:
    for name in ("square", "triangle"):
        for path in (folder / name).iterdir():
            path.unlink()
        (folder / name).rmdir()


def _empty_of_classes(folder: Path) -> None:
    _remove(folder)
    folder.mkdir()


def _remove(folder: Path) -> None:
    for name in SHAPES:
        for path in (folder / name).iterdir():
            path.unlink()
        (folder / name).rmdir()
    folder.rmdir()


def _keep_triangles(count: int):
    def damage(folder: Path) -> None:
        for path in sorted(folder.glob("triangle/*"))[count:]:
            path.unlink()

    return damage


def _keep_per_class(count: int):
    def damage(folder: Path) -> None:
        for name in SHAPES:
            for path in sorted(folder.glob(f"{name}/*"))[count:]:
                path.unlink()

    return damage


def _split_with_extra_test_class(folder: Path) -> None:
    (folder / "train").mkdir()
    for name in SHAPES:
        (folder / name).rename(folder / "train" / name)
    (folder / "test").mkdir()
    for name in (*SHAPES, "star"):
        save_image(folder / "test" / name / "1.png", coloured_shapes(1, 32, seed=7)[0][0])


BAD_INPUTS = {
    "truncated": (
        lambda f: _truncate(f / "square" / "00012.png"),
        "{f}/square/00012.png: unreadable or truncated image (",
    ),
    "not-an-image": (
        lambda f: (f / "circle" / "notes.txt").write_text("a note"),
        "{f}/circle/notes.txt: not a PNG, JPEG, BMP or GIF image; remove it or convert it",
    ),
    "tiff": (
        lambda f: Image.new("RGB", (8, 8)).save(f / "circle" / "x.tif"),
        "{f}/circle/x.tif: not a PNG, JPEG, BMP or GIF image; remove it or convert it",
    ),
    "empty-class": (
        lambda f: (f / "star").mkdir(),
        "{f}/star is an empty class folder: add images of 'star' or remove it",
    ),
    "one-class": (
        _keep_only_circles,
        "{f} has 1 class folder (circle); a classifier needs at least two: {f}/<class>/<image>",
    ),
    "no-class": (
        _empty_of_classes,
        "{f} has no class folder; a classifier needs at least two: {f}/<class>/<image>",
    ),
    "stray-file": (
        lambda f: save_image(f / "loose.png", np.zeros((4, 4, 3), np.uint8)),
        "{f}/loose.png is not in a class folder: images go in {f}/<class>/<image>; move it into"
        " its class's folder or remove it",
    ),
    "class-only-in-test": (
        _split_with_extra_test_class,
        "class 'star' has images in {f}/test but none in {f}/train; add training images or"
        " remove {f}/test/star",
    ),
    "too-small-to-split": (
        _keep_triangles(2),
        "class 'triangle' has 2 images, too few to hold out prepare.test_fraction 0.2 of them"
        " for test; add images of 'triangle'",
    ),
    "imbalance": (
        _keep_triangles(5),
        "train class imbalance 1.750 (largest/smallest class) exceeds prepare.max_class_imbalance"
        " 1.5; counts {{'circle': 7, 'square': 7, 'triangle': 4}}; add images to the small"
        " classes or raise the limit",
    ),
    "no-validation": (
        _keep_per_class(5),
        "prepare.validation_fraction 0.1 of 12 training images leaves none for validation (each"
        " class rounds to 0); add images or raise prepare.validation_fraction",
    ),
    "all-black": (
        lambda f: save_image(f / "circle" / "00003.png", np.zeros((32, 32, 3), np.uint8)),
        "{f}/circle/00003.png is an empty (all-zero) image; remove it",
    ),
    "missing": (
        _remove,
        "data.folder {f} is not a folder; put your images in {f}/<class>/<image> and track it"
        " with `dvc add {f}`",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_naming_the_cause_and_nothing_is_written(
    tmp_path: Path, case: str
) -> None:
    damage, message = BAD_INPUTS[case]
    folder = _bad_folder(tmp_path, damage)
    with pytest.raises(StageError) as error:
        _prepare(tmp_path, folder)
    assert "\n" not in str(error.value)
    assert str(error.value).startswith(message.format(f=folder))
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "shapes" not in p.parts]
    assert written == []  # no prepared data, no report, no scratch left behind


def test_train_test_duplicates_name_the_files(tmp_path: Path) -> None:
    images, labels = coloured_shapes(10, 32, seed=2)
    write_class_folders(tmp_path / "data/train", images, labels, SHAPES)
    write_class_folders(tmp_path / "data/test", images[[4, 15, 25]], labels[[4, 15, 25]], SHAPES)
    save_image(tmp_path / "data/test/circle/copy.png", images[3])  # another name, same pixels
    with pytest.raises(StageError) as error:
        _prepare(tmp_path, tmp_path / "data")
    test = tmp_path / "data/test"
    assert str(error.value).startswith(
        f"4 test images also appear in train (leakage), e.g. {test}/circle/00000.png,"
        f" {test}/circle/copy.png, {test}/square/00001.png; remove them from one side"
    )
    report = _prepare(tmp_path, tmp_path / "data", max_train_test_duplicates=4)
    assert report["train_test_duplicates"] == 4


def test_the_stage_reads_the_folder_params_yaml_names(tmp_path: Path) -> None:
    params = default_params()
    params["data"].update(source="folder", folder="data/shapes", image_size=[24, 24], channels=3)
    write_params(tmp_path, params)
    folder = _shapes_folder(tmp_path / "data/shapes", per_class=10)
    result = run_module("prepare", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "prepare: folder: train 21, validation 3, test 6" in result.stdout
    dataset = json.loads((tmp_path / "data/prepared/dataset.json").read_text())
    assert (dataset["height"], dataset["width"], dataset["channels"]) == (24, 24, 3)
    _truncate(folder / "triangle" / "00025.png")
    result = run_module("prepare", tmp_path)
    assert result.returncode == 1
    assert error_line(result).startswith(
        "prepare: error: data/shapes/triangle/00025.png: unreadable or truncated image"
    )

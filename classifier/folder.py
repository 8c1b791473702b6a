"""A folder of images as a source: ``<folder>/<class>/<image>``, or already split as
``<folder>/train/<class>/<image>`` and ``<folder>/test/<class>/<image>``.

The convention of Keras' ``image_dataset_from_directory``, torchvision's ``ImageFolder`` and
TFDS' ``ImageFolder``: class names are the class folders' names, sorted (label i is the i-th);
images may sit in subfolders of their class folder; names starting with "." (``.DS_Store``,
``.gitignore``) are skipped. Every other file must be a PNG, JPEG, BMP or GIF image (its content
decides, not its name). Each image is turned as its EXIF orientation says, converted to grayscale
or RGB (``data.channels``; an alpha channel is dropped, a GIF gives its first frame) and, if its
size differs, resized to ``data.image_size`` with Pillow's bilinear filter (antialiased when
shrinking; the aspect ratio is not kept, as in Keras' default).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from classifier.dataset import MAX_CLASSES
from classifier.errors import StageError
from classifier.sources import Source, listing_checksum

SOURCE = "folder"
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF")
SPLIT_FOLDERS = ("train", "test")


def read_image(
    content: bytes | Path,
    shape: tuple[int, int, int],
    name: str,
    formats: tuple[str, ...] | None = IMAGE_FORMATS,
) -> np.ndarray:
    """An image file's content as uint8 ``[H, W, C]`` of ``shape``; ``formats=None`` takes any
    format Pillow reads. A file that is not such an image, or is unreadable or truncated, is a
    StageError naming ``name``."""
    height, width, channels = shape
    source = io.BytesIO(content) if isinstance(content, bytes) else content
    try:
        with Image.open(source, formats=formats) as image:
            picture = ImageOps.exif_transpose(image).convert("L" if channels == 1 else "RGB")
    except FileNotFoundError:
        raise StageError(f"{name}: no such file") from None
    except UnidentifiedImageError:
        kind = f"a {', '.join(formats[:-1])} or {formats[-1]} image" if formats else "an image"
        raise StageError(f"{name}: not {kind}; remove it or convert it") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise StageError(
            f"{name}: unreadable or truncated image ({error}); replace or remove it"
        ) from None
    if picture.size != (width, height):
        picture = picture.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(picture, dtype=np.uint8).reshape(shape)


def _is_visible(path: Path, below: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(below).parts)


def _class_folders(directory: Path) -> dict[str, list[Path]]:
    """Class name -> its image files (sorted) under ``directory``; a wrong layout: StageError."""
    entries = sorted(path for path in directory.iterdir() if _is_visible(path, directory))
    for path in entries:
        if not path.is_dir():
            raise StageError(
                f"{path} is not in a class folder: images go in {directory}/<class>/<image>;"
                " move it into its class's folder or remove it"
            )
    classes = {}
    for folder in entries:
        files = sorted(
            path for path in folder.rglob("*") if path.is_file() and _is_visible(path, folder)
        )
        if not files:
            raise StageError(
                f"{folder} is an empty class folder: add images of {folder.name!r} or remove it"
            )
        classes[folder.name] = files
    return classes


class FolderSource(Source):
    """A folder of class folders (``data.folder``), optionally split into train and test."""

    name = SOURCE

    def __init__(self, root: Path, shape: tuple[int, int, int]):
        self.root, self.shape = root, shape
        if not root.is_dir():
            raise StageError(
                f"data.folder {root} is not a folder; put your images in {root}/<class>/<image>"
                f" and track it with `dvc add {root}`"
            )
        top = {path.name for path in root.iterdir() if _is_visible(path, root)}
        self.presplit = top == set(SPLIT_FOLDERS)
        splits = (
            {split: _class_folders(root / split) for split in SPLIT_FOLDERS}
            if self.presplit
            else {"train": _class_folders(root)}
        )
        self.classes = tuple(sorted(splits["train"]))
        if self.presplit:
            self._check_split_classes(splits)
        if len(self.classes) < 2:
            where = root / "train" if self.presplit else root
            found = f"1 class folder ({self.classes[0]})" if self.classes else "no class folder"
            raise StageError(
                f"{where} has {found}; a classifier needs at least two: {where}/<class>/<image>"
            )
        if len(self.classes) > MAX_CLASSES:
            raise StageError(f"{root} has {len(self.classes)} classes; at most {MAX_CLASSES}")
        self._files = {
            split: [path for name in self.classes for path in folders[name]]
            for split, folders in splits.items()
        }
        self._labels = {
            split: np.concatenate(
                [
                    np.full(len(folders[name]), label, np.uint8)
                    for label, name in enumerate(self.classes)
                ]
            )
            for split, folders in splits.items()
        }
        self._md5s: dict[str, str] = {}

    def _check_split_classes(self, splits: dict[str, dict[str, list[Path]]]) -> None:
        train, test = set(splits["train"]), set(splits["test"])
        if only_test := sorted(test - train):
            raise StageError(
                f"class {only_test[0]!r} has images in {self.root / 'test'} but none in"
                f" {self.root / 'train'}; add training images or remove"
                f" {self.root / 'test' / only_test[0]}"
            )
        if untested := sorted(train - test):
            raise StageError(
                f"class {untested[0]!r} has no images in {self.root / 'test'}, so it cannot be"
                f" tested; add some in {self.root / 'test' / untested[0]}"
            )

    def labels(self) -> dict[str, np.ndarray]:
        return self._labels

    def images(self, split: str) -> Iterator[np.ndarray]:
        for path in self._files[split]:
            content = path.read_bytes()
            self._md5s[path.relative_to(self.root).as_posix()] = hashlib.md5(
                content, usedforsecurity=False
            ).hexdigest()
            yield read_image(content, self.shape, str(path))

    def example_name(self, split: str, index: int) -> str:
        return str(self._files[split][index])

    def checksum(self) -> str:
        """Over every image file's path (relative to the folder) and md5."""
        for files in self._files.values():
            for path in files:
                key = path.relative_to(self.root).as_posix()
                if key not in self._md5s:
                    self._md5s[key] = hashlib.md5(
                        path.read_bytes(), usedforsecurity=False
                    ).hexdigest()
        return listing_checksum(self._md5s)

    def report(self) -> dict:
        return {
            "name": self.name,
            "folder": self.root.as_posix(),
            "files": sum(len(files) for files in self._files.values()),
            "test_split": "the folder's own (train/, test/)"
            if self.presplit
            else "made by prepare",
        }

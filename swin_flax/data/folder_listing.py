"""Listing a `root/<split>/<class>/*.jpg` tree without decoding it (`list_image_folder`):
its sorted files and labels (`FolderListing`), the classes of its training split, what the
class folders hold besides images (one `note:` line), broken or looping symbolic links, and
the size of its first image from a header (`first_image_size`). Decoding is
`swin_flax.data.image_folder`'s; streaming reads the listing (`swin_flax.data.sources`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from swin_flax import cli
from swin_flax.data.images import header_size
from swin_flax.errors import UserInputError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def _class_dirs(directory: Path) -> list[str]:
    return sorted(
        entry.name
        for entry in directory.iterdir()
        if entry.is_dir() and not entry.name.startswith(".")
    )


def _reference_classes(root: Path, split: str) -> tuple[str, ...]:
    """The class list every split is labelled with: the train split's folders if there
    is one, so that label i means the same class in train and test."""
    reference_dir = root / "train" if (root / "train").is_dir() else root / split
    classes = _class_dirs(reference_dir)
    if not classes:
        raise UserInputError(f"no class folders in {reference_dir}")
    return tuple(classes)


def _image_file(path: Path) -> bool:
    """A file with an image suffix, or a broken symbolic link with one: it is read like
    the others and, unreadable, reported (or skipped) like them."""
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return False
    return path.is_file() or (path.is_symlink() and not path.exists())


def broken_link_reason(path: Path) -> str | None:
    """Why a symbolic link cannot be read ('a broken symbolic link to X'), or None."""
    if not path.is_symlink():
        return None
    target = os.readlink(path)
    try:
        path.stat()
    except FileNotFoundError:
        return f"a broken symbolic link to {target} (no such file)"
    except OSError:
        return f"a symbolic link to {target} that loops"
    return None


def _class_files(class_dir: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other entries) of a class folder, each sorted. Subfolders and files
    without an image suffix are not read; hidden entries (.DS_Store) are not even listed."""
    entries = sorted(path for path in class_dir.iterdir() if not path.name.startswith("."))
    files = [p for p in entries if _image_file(p)]
    others = [p for p in entries if not _image_file(p)]
    if not files:
        raise UserInputError(
            f"class folder {class_dir} holds no images "
            f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    return files, others


def first_image_size(root: str | Path, split: str) -> tuple[int, int] | None:
    """(width, height) of the first image of `root/split` (sorted classes, sorted files),
    read from its header alone; None when there is none or no header among the first few
    files opens. Without data.stored_size every image must have this size (the load checks),
    so it is the size of the split, known without decoding it."""
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        return None
    for class_name in _class_dirs(split_dir):
        entries = sorted(p for p in (split_dir / class_name).iterdir() if p.is_file())
        for path in [p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS][:5]:
            size = header_size(path)
            if size is not None:
                return size
    return None


# Entries named in the note about what a split's class folders hold besides images.
_MAX_LISTED_IGNORED = 5


def _note_ignored(split_dir: Path, ignored: Sequence[Path]) -> None:
    """One line for what the class folders hold besides images: nested folders are not
    searched, so a user who nested the images learns it here, not from a smaller data set."""
    if not ignored:
        return
    names = [
        f"{p.relative_to(split_dir).as_posix()}{'/' if p.is_dir() else ''}"
        for p in ignored[:_MAX_LISTED_IGNORED]
    ]
    more = len(ignored) - len(names)
    cli.note(
        f"{len(ignored)} entries in the class folders of {split_dir} are not read (folders, "
        f"and files without an image suffix): {', '.join(names)}"
        + (f" and {more} more" if more else "")
    )


@dataclasses.dataclass(frozen=True, eq=False)
class FolderListing:
    """A split of an image folder, listed and not decoded: its sorted files and labels.

    `skipped` holds the (path, reason) of files left out before decoding (the header check
    of a streamed split, `swin_flax.data.sources`)."""

    split_dir: Path
    files: tuple[Path, ...]
    labels: np.ndarray  # int32, one per file
    classes: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = ()

    def __len__(self) -> int:
        return len(self.files)


def list_image_folder(
    root: str | Path,
    split: str,
    *,
    class_names: Sequence[str] | None = None,
    note_ignored: bool = True,
) -> FolderListing:
    """The files of `root/<split>/<class>/*.{jpg,png,...}` and their labels, sorted, with
    nothing decoded. Classes are the sorted folder names of `root/train` (or of the split
    itself when there is no train split), or `class_names` when given, so labels agree
    across splits; a split may lack a class, but a class folder unknown to that list is an
    error."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder root {root} does not exist")
    split_dir = root / split
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"split folder {split_dir} does not exist; splits in {root}: {_class_dirs(root)}"
        )
    classes = tuple(class_names) if class_names is not None else _reference_classes(root, split)
    unknown = sorted(set(_class_dirs(split_dir)) - set(classes))
    if unknown:
        raise UserInputError(
            f"class folders {unknown} in {split_dir} are not among the known classes "
            f"{list(classes)}"
        )
    files, labels, ignored = [], [], []
    for label, class_name in enumerate(classes):
        class_dir = split_dir / class_name
        if not class_dir.is_dir():
            continue
        class_files, others = _class_files(class_dir)
        files.extend(class_files)
        labels.extend([label] * len(class_files))
        ignored.extend(others)
    if not files:
        raise UserInputError(f"split folder {split_dir} holds no class folders")
    if note_ignored:  # once per run: a listing only counted (data/sizes.py) keeps quiet
        _note_ignored(split_dir, ignored)
    return FolderListing(split_dir, tuple(files), np.asarray(labels, np.int32), classes)

"""EuroSAT multispectral patches as ASOS training data (natural vs anthropogenic).

EuroSAT (Helber et al. 2019) holds 64x64 px Sentinel-2 L1C patches of 13 bands in the file order
``B01 B02 B03 B04 B05 B06 B07 B08 B09 B10 B11 B12 B8A`` (B8A last), uint16 digital numbers,
one folder per land-cover class, plus (in the shared subset) ``splits.csv`` with the upstream
train / validate / test split. The scenes are from 2015-2017, before processing baseline 04.00,
so ``DN / 10000`` is reflectance: :func:`read_eurosat` returns the ten canonical bands
``B02 .. B12`` (:data:`geoxai.geo.bands.S2_BANDS`) as reflectance, the input convention of
:mod:`geoxai.xai.asos`.

Natural vs anthropogenic grouping (label 1 = natural, after the wilderness-vs-human-influence
question of Stomberg et al. 2022):

- natural: ``Forest``, ``HerbaceousVegetation``, ``River``, ``SeaLake``;
- anthropogenic: ``AnnualCrop``, ``PermanentCrop``, ``Pasture``, ``Highway``, ``Industrial``,
  ``Residential``. ``Pasture`` counts as anthropogenic: it is managed grazing land, a land
  *use*, while ``HerbaceousVegetation`` is the unmanaged herbaceous cover class.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoxai.errors import CorruptDataError, DataAccessError, InvalidInputError, look_up_option
from geoxai.geo.bands import S2_BANDS

__all__ = [
    "EUROSAT_CLASSES",
    "EUROSAT_FILE_BANDS",
    "NATURAL_CLASSES",
    "ANTHROPOGENIC_CLASSES",
    "SPLITS",
    "EuroSAT",
    "PATCH_SUFFIXES",
    "list_patches",
    "natural_label",
    "read_eurosat",
    "open_patch",
]

EUROSAT_CLASSES: tuple[str, ...] = (
    "AnnualCrop",
    "Forest",
    "HerbaceousVegetation",
    "Highway",
    "Industrial",
    "Pasture",
    "PermanentCrop",
    "Residential",
    "River",
    "SeaLake",
)
"""The ten EuroSAT land-cover classes (folder names)."""


EUROSAT_FILE_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A",
)  # fmt: skip
"""Band order inside the EuroSAT GeoTIFFs (B8A last)."""


NATURAL_CLASSES: frozenset[str] = frozenset({"Forest", "HerbaceousVegetation", "River", "SeaLake"})
"""Classes labelled natural (1)."""


ANTHROPOGENIC_CLASSES: frozenset[str] = frozenset(EUROSAT_CLASSES) - NATURAL_CLASSES
"""Classes labelled anthropogenic (0)."""


SPLITS: tuple[str, ...] = ("train", "validate", "test")
"""Upstream split names of ``splits.csv``."""


@dataclass(frozen=True, eq=False)
class EuroSAT:
    """A set of EuroSAT patches.

    Attributes:
        images: ``(N, 10, 64, 64)`` float32 reflectance of the canonical bands B02 .. B12.
        classes: ``(N,)`` class names.
        labels: ``(N,)`` float32, 1 = natural, 0 = anthropogenic (:func:`natural_label`).
        files: ``(N,)`` paths of the GeoTIFFs.
        splits: ``(N,)`` split of each patch ("train", "validate", "test"; "" if unknown).
        bands: the band names of ``images``' second axis.
    """

    images: np.ndarray
    classes: tuple[str, ...]
    labels: np.ndarray
    files: tuple[str, ...]
    splits: tuple[str, ...]
    bands: tuple[str, ...] = S2_BANDS

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: np.ndarray | list[int]) -> EuroSAT:
        """The patches at ``index`` (positions)."""
        idx = np.asarray(index, dtype=np.int64)
        return EuroSAT(
            self.images[idx],
            tuple(self.classes[i] for i in idx),
            self.labels[idx],
            tuple(self.files[i] for i in idx),
            tuple(self.splits[i] for i in idx),
            self.bands,
        )


def natural_label(cls: str) -> float:
    """1.0 for a natural class, 0.0 for an anthropogenic one (typed error otherwise)."""
    look_up_option(cls, EUROSAT_CLASSES, what="EuroSAT class", error=InvalidInputError)
    return 1.0 if cls in NATURAL_CLASSES else 0.0


def _read_splits_csv(csv_path: Path) -> list[tuple[str, str, str]]:
    """(relative file, class, split) rows of a ``file,class,split`` CSV."""
    try:
        with csv_path.open(newline="") as f:
            reader = csv.DictReader(f)
            need = {"file", "class", "split"}
            if not need <= set(reader.fieldnames or ()):
                raise CorruptDataError(
                    f"{csv_path} has columns {reader.fieldnames}; expected file, class, split."
                )
            return [(r["file"], r["class"], r["split"]) for r in reader]
    except OSError as exc:
        raise DataAccessError(f"cannot read split file {csv_path}: {exc}") from exc


def _listing(root: Path) -> list[tuple[str, str, str]]:
    """(relative file, class, split) rows: from splits.csv, else from the class folders."""
    csv_path = root / "splits.csv"
    if csv_path.is_file():
        return _read_splits_csv(csv_path)
    rows = []
    for cls in EUROSAT_CLASSES:
        for tif in sorted((root / cls).glob("*.tif")):
            rows.append((f"{cls}/{tif.name}", cls, ""))
    return rows


PATCH_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".jpg", ".jpeg", ".png")
"""File endings :func:`list_patches` takes as patches (EuroSAT MS: .tif; EuroSAT RGB: .jpg)."""


_SPLIT_ALIASES = {"val": "validate", "valid": "validate", "validation": "validate"}


def list_patches(root: str | Path, splits: str | Path | None = None) -> list[tuple[Path, str, str]]:
    """List the patches of an EuroSAT-format folder (any class names).

    Args:
        root: folder with one sub-folder per class holding the patches (:data:`PATCH_SUFFIXES`).
        splits: a ``file,class,split`` CSV (``file`` relative to ``root``; split ``train``,
            ``validate`` (or ``val``/``valid``) or ``test``); default ``root/splits.csv`` if
            it exists, else every patch gets split ``""`` (unknown).

    Returns:
        ``(path, class, split)`` rows, classes in sorted order, files sorted within a class.

    Raises:
        DataAccessError: ``root`` or ``splits`` is missing, or there are no patches.
        InvalidInputError: a class sub-folder holds no patch, a split name is unknown, or the
            split file names a file that does not exist.
    """
    base = Path(root)
    if not base.is_dir():
        raise DataAccessError(
            f"patch folder {base} does not exist; point to the folder with one sub-folder per "
            "class (e.g. ../shared/realdata/eurosat_ms_subset)."
        )
    folders = sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith((".", "_")))
    for d in folders:
        if not any(f.suffix.lower() in PATCH_SUFFIXES for f in d.iterdir()):
            raise InvalidInputError(
                f"class folder {d} holds no patch ({', '.join(PATCH_SUFFIXES)} files); add "
                "patches or remove the folder (every class needs training examples)."
            )
    csv_path = Path(splits) if splits is not None else base / "splits.csv"
    if splits is not None and not csv_path.is_file():
        raise DataAccessError(
            f"split file {csv_path} does not exist; give a file,class,split CSV or leave "
            "splits unset for a random stratified split."
        )
    rows: list[tuple[Path, str, str]] = []
    if csv_path.is_file():
        for rel, cls, split in _read_splits_csv(csv_path):
            name = _SPLIT_ALIASES.get(split.strip().lower(), split.strip().lower())
            look_up_option(name, SPLITS, what=f"split in {csv_path}", error=InvalidInputError)
            path = base / rel
            if not path.is_file():
                raise InvalidInputError(
                    f"split file {csv_path} lists {rel}, which is not a file under {base}."
                )
            rows.append((path, cls, name))
        rows.sort(key=lambda r: (r[1], str(r[0])))
    else:
        for d in folders:
            for f in sorted(d.iterdir()):
                if f.suffix.lower() in PATCH_SUFFIXES:
                    rows.append((f, d.name, ""))
    if not rows:
        raise DataAccessError(
            f"no patches in {base}; expected <Class>/<name>.tif files (one folder per class)."
        )
    return rows


@contextmanager
def open_patch(path: str | Path, what: str = "patch") -> Iterator[Any]:
    """Open an image patch (a GeoTIFF) with rasterio; the one reader of patch files.

    Yields the open dataset (``count`` bands; ``read(bands)`` gives ``(len(bands), H, W)`` in
    the file's dtype). A read error inside the ``with`` block counts too.

    Raises:
        CorruptDataError: the file cannot be opened or read (``cannot read <what> <path>``).
    """
    import rasterio  # lazy: rasterio (GDAL) only on this path

    try:
        with rasterio.open(path) as src:
            yield src
    except rasterio.errors.RasterioIOError as exc:
        raise CorruptDataError(f"cannot read {what} {path}: {exc}") from exc


def read_eurosat(
    root: str | Path,
    *,
    split: str | None = None,
    classes: list[str] | None = None,
    limit_per_class: int | None = None,
) -> EuroSAT:
    """Read EuroSAT multispectral GeoTIFFs as canonical-band reflectance.

    Args:
        root: folder with one sub-folder per class (and optionally ``splits.csv``).
        split: keep only ``"train"``, ``"validate"`` or ``"test"`` (needs ``splits.csv``).
        classes: keep only these classes.
        limit_per_class: at most this many patches per class (in listing order).

    Raises:
        DataAccessError: ``root`` is missing or holds no patches.
        CorruptDataError: a GeoTIFF is unreadable or not 13 bands.
        InvalidInputError: unknown split or class name.
    """
    base = Path(root)
    if not base.is_dir():
        raise DataAccessError(
            f"EuroSAT folder {base} does not exist; point to the folder with the class "
            "sub-folders (e.g. ../shared/realdata/eurosat_ms_subset)."
        )
    rows = _listing(base)
    if split is not None:
        look_up_option(split, SPLITS, what="EuroSAT split", error=InvalidInputError)
        if rows and not any(r[2] for r in rows):
            raise InvalidInputError(f"{base} has no splits.csv; cannot select split {split!r}.")
        rows = [r for r in rows if r[2] == split]
    if classes is not None:
        for c in classes:
            look_up_option(c, EUROSAT_CLASSES, what="EuroSAT class", error=InvalidInputError)
        rows = [r for r in rows if r[1] in set(classes)]
    if limit_per_class is not None:
        seen: dict[str, int] = {}
        kept = []
        for r in rows:
            if seen.get(r[1], 0) < limit_per_class:
                kept.append(r)
                seen[r[1]] = seen.get(r[1], 0) + 1
        rows = kept
    if not rows:
        raise DataAccessError(
            f"no EuroSAT patches in {base} (split={split}, classes={classes}); expected "
            "<Class>/<name>.tif files."
        )
    pick = [EUROSAT_FILE_BANDS.index(b) + 1 for b in S2_BANDS]  # rasterio bands are 1-based
    images = []
    for rel, cls, _ in rows:
        natural_label(cls)  # typed error on an unknown class in splits.csv
        path = base / rel
        with open_patch(path, "EuroSAT patch") as src:
            if src.count != len(EUROSAT_FILE_BANDS):
                raise CorruptDataError(
                    f"{path} has {src.count} bands; EuroSAT MS patches have 13 "
                    f"({' '.join(EUROSAT_FILE_BANDS)})."
                )
            dn = src.read(pick).astype(np.float32)
        images.append(dn * np.float32(1e-4))
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise CorruptDataError(f"EuroSAT patches in {base} differ in size: {sorted(shapes)}.")
    return EuroSAT(
        images=np.stack(images),
        classes=tuple(r[1] for r in rows),
        labels=np.asarray([natural_label(r[1]) for r in rows], np.float32),
        files=tuple(str(base / r[0]) for r in rows),
        splits=tuple(r[2] for r in rows),
    )

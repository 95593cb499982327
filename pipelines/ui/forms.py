"""What the UI page reads and checks: files under the workdir, raster/mask metadata, the form.

The form is turned into a :class:`geoxai.train.segment.SegmentConfig` here (one place, server side),
then the library's own pre-training checks run on it; every problem comes back keyed by the id
of the control it concerns (``tile_size``, ``training.epochs``, ``rasters.0`` ...) so the page
shows it next to that control.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from geoxai.errors import GeoXAIError, InvalidInputError

__all__ = [
    "UIPaths",
    "RASTER_SUFFIXES",
    "VECTOR_SUFFIXES",
    "CONFIG_NAME",
    "defaults",
    "list_dir",
    "raster_info",
    "mask_info",
    "form_to_config",
    "validate_form",
    "config_yaml",
]

RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".jp2", ".img", ".nc"}
VECTOR_SUFFIXES = {".geojson", ".json", ".gpkg", ".shp", ".fgb"}
CONFIG_NAME = "ui_config.yaml"

# Form controls whose value is a plain field of SegmentConfig (or of its ``training`` block);
# an empty string means "use the default" and is left out of the config.
_TOP = ("tile_size", "loss", "pos_weight", "focal_gamma", "val_fraction", "resolution")
_TRAINING = ("epochs", "lr", "batch_size", "seed")
CONTROLS = {*_TOP, *(f"training.{k}" for k in _TRAINING), "rasters", "mask", "out_dir"}


@dataclass(frozen=True)
class UIPaths:
    """Maps the page's relative paths to absolute ones under ``root``, refusing escapes."""

    root: Path

    def resolve(self, rel: str, *, must_exist: bool = False) -> Path:
        """Absolute path of ``rel`` (relative to the workdir, or absolute inside it).

        Raises:
            InvalidInputError: the path leaves the workdir or (``must_exist``) does not exist.
        """
        root = self.root.resolve()
        p = (root / str(rel or "").strip()).resolve()
        if p != root and root not in p.parents:
            raise InvalidInputError(
                f"{rel!r} is outside the UI's working folder {root}; choose a file inside it "
                "(or restart `geoxai ui --workdir` on a folder that contains your data)."
            )
        if must_exist and not p.exists():
            raise InvalidInputError(f"{rel!r} does not exist under {root}.")
        return p

    def relative(self, p: str | Path) -> str:
        """``p`` relative to the workdir (as the page shows it)."""
        return Path(p).resolve().relative_to(self.root.resolve()).as_posix()


def defaults() -> dict[str, Any]:
    """Default values and choices of the form, read from the config classes (no drift)."""
    from geoxai.train.segment import SegmentConfig

    fields = SegmentConfig.model_fields
    out: dict[str, Any] = {k: fields[k].default for k in _TOP if k in fields}
    schema = SegmentConfig.model_json_schema()
    out["loss_choices"] = schema["properties"]["loss"].get("enum") or [
        "bce",
        "weighted_bce",
        "dice",
        "bce_dice",
        "focal",
    ]
    training_cls = fields["training"].annotation
    if isinstance(training_cls, type) and issubclass(training_cls, BaseModel):
        tf = training_cls.model_fields
        out.update({f"training.{k}": tf[k].default for k in _TRAINING if k in tf})
    return out


def _kind(p: Path) -> str:
    s = p.suffix.lower()
    if s in RASTER_SUFFIXES:
        return "raster"
    if s in VECTOR_SUFFIXES:
        return "vector"
    return "other"


def list_dir(paths: UIPaths, rel: str = "") -> dict[str, Any]:
    """Sub-folders and raster/vector files of one folder under the workdir (hidden ones out)."""
    d = paths.resolve(rel, must_exist=True)
    if not d.is_dir():
        raise InvalidInputError(f"{rel!r} is not a folder.")
    entries = []
    root = paths.root.resolve()
    for p in sorted(d.iterdir(), key=lambda p: (not p.is_dir(), p.name.lower())):
        if p.name.startswith("."):
            continue
        target = p.resolve()
        if not target.exists() or (target != root and root not in target.parents):
            continue  # a broken link, or a link out of the workdir: the jail refuses it anyway
        kind = "dir" if p.is_dir() else _kind(p)
        if kind == "other":
            continue
        entries.append(
            {
                "name": p.name,
                "path": paths.relative(p),
                "kind": kind,
                "size": p.stat().st_size if kind != "dir" else None,
            }
        )
    here = paths.relative(d)
    return {
        "dir": "" if here == "." else here,
        "parent": None if d == paths.root.resolve() else paths.relative(d.parent),
        "root": str(paths.root.resolve()),
        "entries": entries[:1000],
    }


def _crs_fields(crs: Any) -> dict[str, Any]:
    if crs is None:
        return {"crs": None, "crs_name": "none (no georeferencing)", "units": None}
    epsg = crs.to_epsg()
    try:
        from pyproj import CRS

        name = CRS.from_user_input(crs.to_wkt()).name
    except Exception:  # noqa: BLE001 - a name is only cosmetic
        name = ""
    return {
        "crs": f"EPSG:{epsg}" if epsg else crs.to_string(),
        "crs_name": name,
        "units": crs.linear_units if crs.is_projected else "degree",
    }


def raster_info(paths: UIPaths, rel: str) -> dict[str, Any]:
    """CRS, pixel size (CRS units), size (px), bounds and per-band dtype/nodata/description."""
    import rasterio

    p = paths.resolve(rel, must_exist=True)
    try:
        with rasterio.open(p) as src:
            return {
                "path": paths.relative(p),
                **_crs_fields(src.crs),
                "res": [abs(src.res[0]), abs(src.res[1])],
                "width": src.width,
                "height": src.height,
                "bounds": list(src.bounds),
                "count": src.count,
                "bands": [
                    {
                        "index": i + 1,
                        "description": src.descriptions[i] or "",
                        "dtype": src.dtypes[i],
                        "nodata": src.nodatavals[i],
                    }
                    for i in range(src.count)
                ],
            }
    except rasterio.errors.RasterioIOError as exc:
        raise InvalidInputError(f"{rel!r} is not a raster GDAL can read: {exc}") from exc


def mask_info(paths: UIPaths, rel: str) -> dict[str, Any]:
    """A polygon file: feature count, geometry type, CRS, attribute names; a raster: its info."""
    p = paths.resolve(rel, must_exist=True)
    if _kind(p) == "raster":
        return {"kind": "raster", **raster_info(paths, rel)}
    import pyogrio

    try:
        info = pyogrio.read_info(p)
    except Exception as exc:  # noqa: BLE001 - pyogrio raises several unrelated types
        raise InvalidInputError(f"{rel!r} is not a polygon file OGR can read: {exc}") from exc
    crs = info.get("crs")
    return {
        "kind": "vector",
        "path": paths.relative(p),
        "crs": crs,
        "features": int(info.get("features", -1)),
        "geometry_type": info.get("geometry_type"),
        "fields": [str(f) for f in info.get("fields", [])],
    }


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def _values(v: Any) -> list[Any] | None:
    """``"1, 2, oak"`` -> ``[1, 2, "oak"]`` (numbers where they parse)."""
    if _blank(v):
        return None
    items = v if isinstance(v, list) else str(v).split(",")
    out: list[Any] = []
    for it in items:
        s = str(it).strip()
        if not s:
            continue
        try:
            out.append(int(s))
        except ValueError:
            try:
                out.append(float(s))
            except ValueError:
                out.append(s)
    return out or None


def form_to_config(paths: UIPaths, form: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The page's form -> a SegmentConfig-shaped dict with absolute paths, plus path errors."""
    errors: dict[str, str] = {}
    rasters = []
    given = form.get("rasters") or []
    if not isinstance(given, list):  # a malformed request, not the page's form
        errors["rasters"] = f"rasters must be a list of {{path, bands}} objects, got {given!r:.60}"
        given = []
    for i, r in enumerate(given):
        if not isinstance(r, dict):
            errors[f"rasters.{i}"] = f"raster {i} must be a {{path, bands}} object, got {r!r:.60}"
            continue
        try:
            p = paths.resolve(str(r.get("path") or ""), must_exist=True)
            item: dict[str, Any] = {"path": str(p)}
            if r.get("bands") is not None:
                bands = r["bands"]
                if not isinstance(bands, list) or not all(
                    isinstance(b, int) or (isinstance(b, str) and b.strip().isdigit())
                    for b in bands
                ):
                    raise InvalidInputError(
                        f"bands of raster {i} must be a list of band numbers (1-based), "
                        f"got {bands!r:.60}"
                    )
                item["bands"] = [int(b) for b in bands]
        except InvalidInputError as exc:
            errors[f"rasters.{i}"] = str(exc)
            continue
        rasters.append(item)
    if not given and "rasters" not in errors:
        errors["rasters"] = "Add at least one raster (the features the model learns from)."
    m = form.get("mask") or {}
    if not isinstance(m, dict):
        errors["mask"] = f"mask must be a {{path, attribute, values}} object, got {m!r:.60}"
        m = {"path": None}
    mask: dict[str, Any] = {}
    if _blank(m.get("path")):
        errors["mask"] = "Choose the mask: polygons of the class to map (or a 0/1 raster)."
    else:
        try:
            mask["path"] = str(paths.resolve(str(m["path"]), must_exist=True))
        except InvalidInputError as exc:
            errors["mask"] = str(exc)
    if not _blank(m.get("attribute")):
        mask["attribute"] = str(m["attribute"])
        mask["values"] = _values(m.get("values"))
    data: dict[str, Any] = {"rasters": rasters, "mask": mask}
    for k in _TOP:
        if not _blank(form.get(k)):
            data[k] = form[k]
    data["training"] = {
        k: form[f"training.{k}"] for k in _TRAINING if not _blank(form.get(f"training.{k}"))
    }
    if _blank(form.get("out_dir")):
        errors["out_dir"] = "Name an output folder (created under the working folder)."
    else:
        try:
            if not isinstance(form["out_dir"], str):
                raise InvalidInputError(
                    f"out_dir must be a folder name, got {form['out_dir']!r:.60}"
                )
            data["out_dir"] = str(paths.resolve(form["out_dir"]))
        except InvalidInputError as exc:
            errors["out_dir"] = str(exc)
    return data, errors


def _control_for_loc(loc: tuple[Any, ...]) -> str:
    """Pydantic error location -> control id (``("rasters", 0, "bands", 1)`` -> ``rasters.0``)."""
    parts = [str(x) for x in loc]
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in CONTROLS or re.fullmatch(r"rasters\.\d+", key):
            return key
    return "general"


def _control_for_error(exc: Exception, config: Any) -> str:
    """Which control a library pre-training error concerns, from what its message names."""
    msg = str(exc)
    low = msg.lower()
    for i, r in enumerate(getattr(config, "rasters", [])):
        if r.path in msg and "mask" not in low:
            return f"rasters.{i}"
    for key, words in (
        ("tile_size", ("tile size", "tile_size", "usable tiles")),
        ("out_dir", ("out_dir", "output folder", "output path", "writable", "writ")),
        ("val_fraction", ("val_fraction", "validation")),
        ("mask", ("mask", "positive", "polygon")),
        ("resolution", ("resolution",)),
        ("rasters", ("raster", "band", "nodata", "overlap", "crs")),
    ):
        if any(w in low for w in words):
            return key
    return "general"


def config_yaml(config: BaseModel) -> str:
    """The YAML document ``geoxai train segment`` reads back to the same config."""
    header = (
        "# geoxai segment training config written by `geoxai ui`.\n"
        "# Re-run it from a terminal: geoxai train segment <this file>\n"
    )
    return header + yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def _library_checks(config: Any) -> dict[str, Any]:
    """:func:`geoxai.train.segment.check_segment` (what ``train_segment`` checks before training),
    summarised for the page."""
    from geoxai.train.segment import check_segment

    scene, split = check_segment(config)
    lab = int(scene.labelled.sum())
    h, w = scene.grid.shape
    return {
        "crs": scene.grid.crs,
        "resolution": scene.grid.resolution,
        "shape": [h, w],
        "bands": list(scene.band_names),
        "tiles": {k: len(getattr(split, k)) for k in ("train", "val", "gap", "unused")},
        "positive_fraction": int(scene.target.sum()) / max(lab, 1),
    }


def validate_form(paths: UIPaths, form: dict[str, Any]) -> tuple[Any | None, dict[str, Any]]:
    """Build the config and run the library checks; ``(config or None, result for the page)``.

    The result has ``ok``, ``errors`` (control id -> message), and when the config builds,
    ``yaml`` (what training will run), ``config_path`` and the equivalent ``command``.
    """
    from geoxai.train.segment import SegmentConfig

    data, errors = form_to_config(paths, form)
    result: dict[str, Any] = {"ok": False, "errors": errors}
    if errors:
        return None, result
    try:
        config = SegmentConfig.model_validate(data)
    except ValidationError as exc:
        for e in exc.errors():
            loc = tuple(e["loc"])
            key = _control_for_loc(loc) if loc else _control_for_error(ValueError(e["msg"]), None)
            got = repr(e.get("input"))
            got = got if len(got) <= 60 else got[:57] + "..."
            errors.setdefault(key, f"{e['msg']} (got {got})")
        return None, result
    try:
        result["summary"] = _library_checks(config)
    except GeoXAIError as exc:
        errors[_control_for_error(exc, config)] = str(exc)
        return None, result
    config_path = Path(config.out_dir) / CONFIG_NAME
    result.update(
        ok=True,
        yaml=config_yaml(config),
        config_path=paths.relative(config_path),
        command=f"geoxai train segment {config_path}",
    )
    return config, result


def writable_dir(path: Path) -> None:
    """Create ``path`` if needed and check it is writable (before a job starts)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(f"Cannot create output folder {path}: {exc}") from exc
    if not os.access(path, os.W_OK):
        raise InvalidInputError(f"Output folder {path} is not writable; choose another one.")

"""Reading a model bundle's files: ``model.json`` and weights, from a folder or a zip (never
extracted to disk), with typed errors that name the file and the fix."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from pydantic import ValidationError

from geoxai.errors import ModelBundleError
from geoxai.models.bundle_spec import BundleSpec

__all__ = ["MODEL_JSON", "BundleFiles", "read_spec", "load_state_dict"]

MODEL_JSON = "model.json"
"""The bundle's description file (:class:`geoxai.models.bundle_spec.BundleSpec`)."""


class BundleFiles:
    """Read files of a bundle directory or zip (never extracted to disk)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.is_zip = path.is_file() and zipfile.is_zipfile(path)
        if not (self.is_zip or path.is_dir()):
            raise ModelBundleError(
                f"Model bundle {path} is neither a directory nor a zip file; a bundle is a folder "
                f"with {MODEL_JSON} and a weights file."
            )

    def read(self, name: str) -> bytes:
        if self.is_zip:
            with zipfile.ZipFile(self.path) as z:
                members = {Path(n).name: n for n in z.namelist() if not n.endswith("/")}
                if name not in members:
                    raise ModelBundleError(f"Model bundle {self.path} has no file {name!r}.")
                return z.read(members[name])
        f = self.path / name
        if not f.is_file():
            raise ModelBundleError(f"Model bundle {self.path} has no file {name!r}.")
        return f.read_bytes()


def read_spec(src: BundleFiles) -> BundleSpec:
    try:
        raw = src.read(MODEL_JSON)
    except ModelBundleError as exc:
        raise ModelBundleError(
            f"{src.path} has no {MODEL_JSON}; a bundle is a folder with {MODEL_JSON} (see "
            "geoxai.models.bundle_spec.BundleSpec) and its weights. Create one with "
            "save_bundle/wrap_module."
        ) from exc
    try:
        return BundleSpec.model_validate(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise ModelBundleError(f"{src.path}/{MODEL_JSON} is not valid JSON: {exc}.") from exc
    except ValidationError as exc:
        errs = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise ModelBundleError(f"{src.path}/{MODEL_JSON} is invalid: {errs}.") from exc


def load_state_dict(data: bytes, fname: str, where: Path) -> dict[str, torch.Tensor]:
    if fname.endswith(".safetensors"):
        from safetensors import (
            SafetensorError,  # lazy: safetensors only when weights are read or written
        )
        from safetensors.torch import (
            load as st_load,  # lazy: safetensors only when weights are read or written
        )

        try:
            return st_load(data)
        except (SafetensorError, ValueError, RuntimeError, OSError) as exc:
            raise ModelBundleError(
                f"Bundle {where}: weights {fname} are not a readable safetensors file ({exc}); "
                "the file is corrupt or truncated: re-export the weights."
            ) from exc
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelBundleError(
            f"Bundle {where}: weights {fname} hold Python objects other than tensors and were "
            "refused (loaded with weights_only=True, nothing was executed). Save a plain "
            "state_dict (torch.save(model.state_dict(), ...)) or, better, safetensors."
        ) from exc
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ModelBundleError(
            f"Bundle {where}: weights {fname} are corrupt or not a torch file ({exc}); re-export."
        ) from exc
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelBundleError(
            f"Bundle {where}: weights {fname} are not a state_dict (a mapping of names to "
            f"tensors) but a {type(obj).__name__}."
        )
    return dict(obj)

"""Read SMPL model files without running their code, and convert official ones to a pickle-free `.npz`.

A SMPL file is a pickle (the official ones hold chumpy objects and a scipy sparse joint regressor; chumpy does
not import on numpy >= 1.24) or an `.npz`. Pickles go through an unpickler that resolves only numpy's array and
dtype reconstructors, scipy's compressed sparse matrix classes and chumpy classes (mapped to a shim that only
records the pickled state; a chumpy array's value is its `x`): any other global — `os.system`, `builtins.eval`,
smplx's or this project's own classes — is refused before anything is called. `.npz` files are read with
numpy's `allow_pickle=False`. `read_smpl` returns plain numpy arrays (sparse matrices made dense), which the
body loader hands to smplx, so smplx never opens the file itself.
`python -m reid3dsl.body.convert IN.pkl OUT.npz` writes that `.npz` once (the loader prefers it in a folder).
"""

from __future__ import annotations

import argparse
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from reid3dsl.body.standin.cache import write_atomic
from reid3dsl.errors import UserError, cli_main

SMPL_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
# (module, name) pairs a numpy array, dtype or scalar pickles to, old and new module paths alike.
_NUMPY_GLOBALS = frozenset(
    (f"numpy.{core}.{mod}", name)
    for core in ("core", "_core")
    for mod, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))
) | {("numpy", "ndarray"), ("numpy", "dtype")}
# Inert builtins: chumpy objects keep sets in their state.
_BUILTIN_GLOBALS = frozenset({("__builtin__", "set"), ("builtins", "set"), ("__builtin__", "frozenset"),
                              ("builtins", "frozenset")})
# Compressed formats only: their check_format(full_check=True) validates every index before toarray.
_SPARSE_CLASSES = frozenset({"csc_matrix", "csr_matrix"})
_ALLOWED = "numpy arrays, scipy csc/csr matrices and chumpy objects"


class ChumpyShim:
    """Stands in for any chumpy class while unpickling; keeps the pickled state."""

    chumpy_class = "chumpy"

    def __new__(cls, *args: Any, **kwargs: Any) -> ChumpyShim:
        return object.__new__(cls)

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list (it would run code or build arbitrary objects)."""


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    """What protocol-2 pickles written by Python 3 call (as _codecs.encode) to spell bytes, limited to latin1
    (any codec name would import a module of the encodings package)."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"bytes in encoding {encoding!r}; expected latin1")
    return text.encode("latin1")


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            return _latin1
        if module == "chumpy" or module.startswith("chumpy."):
            return type(name, (ChumpyShim,), {"chumpy_class": f"{module}.{name}"})
        if module.startswith("scipy.sparse") and name in _SPARSE_CLASSES:
            import scipy.sparse

            return getattr(scipy.sparse, name)
        if (module, name) in _NUMPY_GLOBALS or (module, name) in _BUILTIN_GLOBALS:
            # find_class maps Python 2's __builtin__ to builtins itself
            return super().find_class(module.replace("numpy.core.", "numpy._core."), name)
        raise RefusedGlobal(f"it refers to {module}.{name}; a SMPL file may hold only {_ALLOWED}")


def _plain(label: str, key: str, value: Any) -> Any:
    if isinstance(value, ChumpyShim):
        state = value.state
        if not (isinstance(state, dict) and isinstance(state.get("x"), np.ndarray)):
            raise UserError(f"{label}: key '{key}' is a {value.chumpy_class} expression, not a chumpy array with a "
                            "value (expected the official SMPL model files)")
        return state["x"]
    if hasattr(value, "check_format"):  # one of _SPARSE_CLASSES
        value.check_format(full_check=True)
        return np.asarray(value.toarray())
    return value


def _read_pickle(path: Path, label: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = _SafeUnpickler(fh, encoding="latin1").load()
    except RefusedGlobal as exc:
        raise UserError(f"{label}: refused, {exc}") from None
    except Exception as exc:  # noqa: BLE001 - whatever a malformed pickle raises (MemoryError included)
        raise UserError(f"{label}: not a readable SMPL pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or "v_template" not in data:
        raise UserError(f"{label}: expected a dict with {', '.join(SMPL_KEYS)}")
    try:
        return {str(k): _plain(label, str(k), v) for k, v in data.items()}
    except (ValueError, TypeError, AttributeError, IndexError, MemoryError) as exc:
        raise UserError(f"{label}: a sparse matrix in it is malformed ({exc})") from None


def _read_npz(path: Path, label: str) -> dict[str, Any]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except Exception as exc:  # noqa: BLE001 - a bad zip, an object array (needs pickle), a lying header ...
        raise UserError(f"{label}: not a readable SMPL .npz ({type(exc).__name__}: {exc})") from None


def read_smpl(path: Path, label: str | None = None) -> dict[str, Any]:
    """The SMPL-format file `path` (`.npz`, or a pickle read through the allow-list) → its dict with plain numpy
    arrays. Every problem is one `UserError` starting with `label` (default: the file's name)."""
    label = label or f"SMPL file '{path}'"
    if not path.is_file():
        raise UserError(f"{label}: not found")
    return _read_npz(path, label) if path.suffix == ".npz" else _read_pickle(path, label)


def convert(src: Path, dst: Path) -> dict[str, np.ndarray]:
    """Read the SMPL file `src` safely and write its numeric arrays to the `.npz` `dst` (atomically)
    → the arrays written."""
    if dst.suffix != ".npz":
        raise UserError(f"output '{dst}': expected a path ending in .npz (the converter writes no pickle)")
    data = read_smpl(src)
    out = {k: v for k, v in data.items() if isinstance(v, np.ndarray) and v.dtype.kind in "biuf"}
    missing = [k for k in SMPL_KEYS if k not in out]
    if missing:
        raise UserError(f"SMPL file '{src}': no numeric array for {', '.join(missing)} "
                        f"(expected {', '.join(SMPL_KEYS)})")
    buf = io.BytesIO()
    np.savez(buf, **out)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(dst, buf.getvalue())
    except OSError as exc:
        raise UserError(f"output '{dst}': cannot be written ({exc.strerror})") from None
    return out


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m reid3dsl.body.convert", description=__doc__.split("\n")[0])
    parser.add_argument("src", type=Path, help="official SMPL .pkl (chumpy objects inside) or any SMPL-format file")
    parser.add_argument("dst", type=Path, help="where to write the plain-numpy copy (.npz)")
    args = parser.parse_args(argv)
    out = convert(args.src, args.dst)
    shapes = ", ".join(f"{k} {v.shape}" for k, v in out.items())
    print(f"{args.dst}: {shapes}")


if __name__ == "__main__":
    main()

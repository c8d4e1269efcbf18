"""Convert an official SMPL pickle (chumpy objects inside) to plain numpy, without chumpy installed.

The licensed SMPL files were written with chumpy, which does not import on numpy >= 1.24. Unpickling
maps every chumpy class to a shim that only records its pickled state; a chumpy array's value is its
`x`. Sparse matrices (the joint regressor) become dense arrays, numpy's old module paths are mapped
to the current ones. `python -m reid3dsl.body.convert IN.pkl OUT.pkl`; smplx loads OUT.pkl directly.
"""

from __future__ import annotations

import argparse
import pickle
import pickletools
from pathlib import Path
from typing import Any

import numpy as np

from reid3dsl.errors import UserError, cli_main


class ChumpyShim:
    """Stands in for any chumpy class while unpickling; keeps the pickled state."""

    chumpy_class = "chumpy"

    def __new__(cls, *args: Any, **kwargs: Any) -> ChumpyShim:
        return object.__new__(cls)

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "chumpy" or module.startswith("chumpy."):
            return type(name, (ChumpyShim,), {"chumpy_class": f"{module}.{name}"})
        if module.startswith("scipy.sparse"):
            import scipy.sparse

            return getattr(scipy.sparse, name)
        if module == "numpy.core" or module.startswith("numpy.core."):
            module = "numpy._core" + module[len("numpy.core"):]
        return super().find_class(module, name)


def needs_conversion(path: Path) -> bool:
    """Whether the pickle at `path` references chumpy (read without executing it)."""
    with open(path, "rb") as fh:
        for op, arg, _ in pickletools.genops(fh):
            if isinstance(arg, str) and arg.startswith("chumpy") and op.name in (
                    "GLOBAL", "SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINSTRING", "SHORT_BINSTRING"):
                return True
    return False


def _plain(key: str, value: Any) -> Any:
    if isinstance(value, ChumpyShim):
        state = value.state
        if not (isinstance(state, dict) and "x" in state):
            raise UserError(f"SMPL key '{key}': a {value.chumpy_class} expression, not a chumpy array with a value "
                            "(expected the official SMPL model files)")
        return np.asarray(state["x"])
    if hasattr(value, "toarray") and hasattr(value, "nnz"):  # scipy.sparse matrix
        return np.asarray(value.toarray())
    return value


def convert(src: Path, dst: Path) -> dict[str, Any]:
    """Read the SMPL pickle `src` without chumpy, write a plain-numpy copy to `dst`; → the converted dict."""
    if not src.is_file():
        raise UserError(f"SMPL pickle '{src}': not found")
    try:
        with open(src, "rb") as fh:
            data = _Unpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError) as exc:
        raise UserError(f"SMPL pickle '{src}': cannot be read ({exc})") from None
    if not isinstance(data, dict) or "v_template" not in data:
        raise UserError(f"SMPL pickle '{src}': expected a dict with v_template, shapedirs, J_regressor, ...")
    out = {k: _plain(k, v) for k, v in data.items()}
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "wb") as fh:
        pickle.dump(out, fh, protocol=4)
    return out


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m reid3dsl.body.convert", description=__doc__.split("\n")[0])
    parser.add_argument("src", type=Path, help="official SMPL .pkl (with chumpy objects)")
    parser.add_argument("dst", type=Path, help="where to write the plain-numpy copy")
    args = parser.parse_args(argv)
    out = convert(args.src, args.dst)
    shapes = ", ".join(f"{k} {getattr(v, 'shape', '')}".strip() for k, v in out.items())
    print(f"{args.dst}: {shapes}")


if __name__ == "__main__":
    main()

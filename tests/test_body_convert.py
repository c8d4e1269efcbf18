"""SMPL files: official ones (chumpy objects inside) read and converted to a pickle-free .npz without chumpy, and
no SMPL file — pickle or .npz — runs code when the converter or the body loader reads it."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from reid3dsl.body.convert import convert, main
from reid3dsl.body.smpld import load_body_model
from reid3dsl.body.standin import standin_paths
from reid3dsl.config import BodyConfig
from reid3dsl.errors import UserError


def _chumpy_pickle(smpl: dict, path: Path, expression_key: str | None = None) -> None:
    """Write `smpl` the way the official files are: arrays inside chumpy objects (a stand-in chumpy
    module registered only while pickling), the joint regressor as a scipy sparse matrix, protocol 2."""
    ch_mod, reordering = types.ModuleType("chumpy.ch"), types.ModuleType("chumpy.reordering")

    class Ch:  # what chumpy.ch.Ch pickles: its __dict__ with the value in `x`
        def __init__(self, x: np.ndarray) -> None:
            self.x = x
            self._dirty_vars = set()
            self._itr = None

    class Select:  # a chumpy expression: no value of its own
        def __init__(self, a: Ch) -> None:
            self.a = a
            self.idxs = np.arange(3)

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    Select.__module__, Select.__qualname__ = "chumpy.reordering", "Select"
    ch_mod.Ch, reordering.Select = Ch, Select
    wrapped = dict(smpl)
    for key in ("v_template", "shapedirs", "weights", "J"):
        wrapped[key] = Ch(np.asarray(smpl[key]))
    wrapped["J_regressor"] = scipy.sparse.csc_matrix(smpl["J_regressor"])
    if expression_key:
        wrapped[expression_key] = Select(Ch(np.asarray(smpl[expression_key])))
    modules = {"chumpy": types.ModuleType("chumpy"), "chumpy.ch": ch_mod, "chumpy.reordering": reordering}
    sys.modules.update(modules)
    try:
        path.write_bytes(pickle.dumps(wrapped, protocol=2))
    finally:
        for name in modules:
            del sys.modules[name]


def _standin(standin_dir: str) -> dict:
    with open(standin_paths(standin_dir)[0], "rb") as fh:
        return pickle.load(fh)


def test_chumpy_file_converts_without_chumpy_and_loads(standin_dir: str, tmp_path: Path) -> None:
    smpl = _standin(standin_dir)
    src = tmp_path / "official" / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    src.parent.mkdir()
    _chumpy_pickle(smpl, src)
    assert "chumpy" not in sys.modules
    # the converted files are this stand-in mesh, so they keep its vertex ids beside them
    shutil.copy(standin_paths(standin_dir)[1], src.parent / "vertex_ids.json")
    assert load_body_model(BodyConfig(model_path=str(src))).num_vertices == smpl["v_template"].shape[0]

    dst = tmp_path / "converted" / "smpl" / "SMPL_NEUTRAL.npz"
    out = convert(src, dst)
    for key in ("v_template", "shapedirs", "weights", "J", "J_regressor"):
        assert type(out[key]) is np.ndarray and np.array_equal(out[key], np.asarray(smpl[key])), key
    with np.load(dst, allow_pickle=False) as npz:  # no pickle inside
        assert set(npz.files) == set(out)
    shutil.copy(standin_paths(standin_dir)[1], dst.parent / "vertex_ids.json")
    body = load_body_model(BodyConfig(model_path=str(tmp_path / "converted")))  # the folder layout smplx uses
    assert body.num_vertices == smpl["v_template"].shape[0]
    assert json.loads((dst.parent / "vertex_ids.json").read_text())["nose"] < body.num_vertices


class _Touch:
    """Unpickles as `os.system("touch MARKER")`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_would_run_code_is_refused_by_the_converter_and_the_loader(
    standin_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "SMPL_NEUTRAL.pkl"
    # a real SMPL-format dict with one value replaced (protocol 2, as the official files), and the call nested
    evil.write_bytes(pickle.dumps({**_standin(standin_dir), "weights": _Touch(marker)}, protocol=2))
    hidden = tmp_path / "hidden.pkl"
    hidden.write_bytes(pickle.dumps({**_standin(standin_dir), "J": [{"x": _Touch(marker)}]}, protocol=4))

    for path in (evil, hidden):
        with pytest.raises(SystemExit) as refused:
            main([str(path), str(tmp_path / "out.npz")])
        err = capsys.readouterr().err
        assert refused.value.code == 2 and len(err.strip().splitlines()) == 1
        assert path.name in err and "refused" in err and "system" in err, err
        with pytest.raises(UserError, match=rf"body.model_path '.*{path.name}': refused, it refers to \S+\.system"):
            load_body_model(BodyConfig(model_path=str(path)))
    # numpy's own object arrays are pickles too: an .npz holding one is refused unread
    npz = tmp_path / "evil.npz"
    np.savez(npz, **{**_standin(standin_dir), "weights": np.array([_Touch(marker)], dtype=object)})
    with pytest.raises(UserError, match="evil.npz': not a readable SMPL .npz"):
        load_body_model(BodyConfig(model_path=str(npz)))
    assert not marker.exists() and not (tmp_path / "out.npz").exists()

    # in a model folder the converted .npz is preferred: the pickle beside it is never opened
    folder = tmp_path / "models" / "smpl"
    folder.mkdir(parents=True)
    shutil.copy(evil, folder / "SMPL_NEUTRAL.pkl")
    good = tmp_path / "good.pkl"
    _chumpy_pickle(_standin(standin_dir), good)
    convert(good, folder / "SMPL_NEUTRAL.npz")
    shutil.copy(standin_paths(standin_dir)[1], folder / "vertex_ids.json")
    assert load_body_model(BodyConfig(model_path=str(tmp_path / "models"))).num_vertices > 0
    assert not marker.exists()


def test_convert_cli_reports_unusable_input(standin_dir: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as missing:
        main([str(tmp_path / "missing.pkl"), str(tmp_path / "out.npz")])
    assert missing.value.code == 2 and "not found" in capsys.readouterr().err
    src = tmp_path / "expr.pkl"
    _chumpy_pickle(_standin(standin_dir), src, expression_key="posedirs")
    with pytest.raises(SystemExit) as expression:
        main([str(src), str(tmp_path / "out.npz")])
    err = capsys.readouterr().err
    assert expression.value.code == 2 and "posedirs" in err and "chumpy.reordering.Select" in err
    good = tmp_path / "good.pkl"
    _chumpy_pickle(_standin(standin_dir), good)
    with pytest.raises(SystemExit) as not_npz:
        main([str(good), str(tmp_path / "out.pkl")])
    assert not_npz.value.code == 2 and "expected a path ending in .npz" in capsys.readouterr().err
    main([str(good), str(tmp_path / "out.npz")])
    assert "v_template (" in capsys.readouterr().out

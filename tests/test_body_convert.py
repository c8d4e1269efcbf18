"""Official SMPL files hold chumpy objects: converting them to plain numpy without chumpy installed."""

from __future__ import annotations

import json
import pickle
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from reid3dsl.body.convert import convert, main, needs_conversion
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
    assert needs_conversion(src) and not needs_conversion(standin_paths(standin_dir)[0])
    with pytest.raises(UserError, match=r"python -m reid3dsl\.body\.convert"):
        load_body_model(BodyConfig(model_path=str(src)))

    dst = tmp_path / "converted" / "SMPL_NEUTRAL.pkl"
    out = convert(src, dst)
    for key in ("v_template", "shapedirs", "weights", "J", "J_regressor"):
        assert type(out[key]) is np.ndarray and np.array_equal(out[key], np.asarray(smpl[key])), key
    assert not needs_conversion(dst)
    # the converted file is this stand-in mesh, so it keeps its vertex ids beside it
    shutil.copy(standin_paths(standin_dir)[1], dst.parent / "vertex_ids.json")
    body = load_body_model(BodyConfig(model_path=str(dst)))
    assert body.num_vertices == smpl["v_template"].shape[0]
    assert json.loads((dst.parent / "vertex_ids.json").read_text())["nose"] < body.num_vertices


def test_convert_cli_reports_unusable_input(standin_dir: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as missing:
        main([str(tmp_path / "missing.pkl"), str(tmp_path / "out.pkl")])
    assert missing.value.code == 2 and "not found" in capsys.readouterr().err
    src = tmp_path / "expr.pkl"
    _chumpy_pickle(_standin(standin_dir), src, expression_key="posedirs")
    with pytest.raises(SystemExit) as expression:
        main([str(src), str(tmp_path / "out.pkl")])
    err = capsys.readouterr().err
    assert expression.value.code == 2 and "posedirs" in err and "chumpy.reordering.Select" in err
    good = tmp_path / "good.pkl"
    _chumpy_pickle(_standin(standin_dir), good)
    main([str(good), str(tmp_path / "out.pkl")])
    assert "v_template (" in capsys.readouterr().out

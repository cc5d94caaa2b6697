"""Training checkpoints run no code when read: state.pt through ``torch.load(weights_only=True)``,
RNG states as JSON, and a checkpoint of the older pickled format refused on --resume."""

import json
import random

import numpy as np
import pytest
import torch
from test_training import config, make_trainer, write_train_set

from training.trainer import _load_rng, _rng_state, _save_rng, _set_rng_state


@pytest.fixture
def train_set(tmp_path):
    return write_train_set(tmp_path / "ds")


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: creates the marker file."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _draws() -> list:
    return [torch.rand(5).tolist(), np.random.rand(5).tolist(), np.random.randn(3).tolist(),
            [random.random() for _ in range(5)], random.gauss(0, 1)]


def test_rng_states_round_trip_through_json(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.randn(), random.gauss(0, 1)  # a cached gaussian in numpy's and Python's state
    path = tmp_path / "rng-0.json"
    _save_rng(path, "cpu")
    expected = _draws()
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    _set_rng_state("cpu", _load_rng(path))
    assert _draws() == expected
    saved = json.loads(path.read_text())
    assert set(saved) == {"torch", "numpy", "python"} and saved["numpy"][0] == "MT19937"


def test_a_broken_rng_file_is_a_clear_error(tmp_path):
    path = tmp_path / "rng-0.json"
    _save_rng(path, "cpu")
    state = json.loads(path.read_text())
    state["torch"][0] = 300
    path.write_text(json.dumps(state))
    with pytest.raises(ValueError, match=r"rng-0\.json is not a valid RNG state file"):
        _load_rng(path)
    path.write_text("{}")
    with pytest.raises(ValueError, match="not a valid RNG state file"):
        _load_rng(path)
    assert set(_rng_state("cpu")) == {"torch"}  # the in-memory replay state stays tensors only


def _checkpoint_dir(tmp_path):
    ckpt = tmp_path / "out" / "checkpoints" / "step-00000002"
    ckpt.mkdir(parents=True)
    return ckpt


@pytest.mark.parametrize("file", ["state.pt", "rng-0.pt"])
def test_a_pickled_checkpoint_is_refused_without_running_its_code(tiny_mlm, train_set, tmp_path, file):
    ds, negatives = train_set
    marker = tmp_path / "pwned"
    ckpt = _checkpoint_dir(tmp_path)
    torch.save({"step": 2, "payload": _Payload(marker)}, ckpt / file)
    torch.load(ckpt / file, weights_only=False)  # the payload works: the old reader ran it
    assert marker.exists()
    marker.unlink()
    if file == "rng-0.pt":
        torch.save({"step": 2}, ckpt / "state.pt")
    cfg = config(tmp_path, tiny_mlm, ds, negatives, max_steps=4, save_every=2, resume=True)
    with pytest.raises(ValueError) as err:
        make_trainer(cfg).train()
    message = str(err.value)
    assert "\n" not in message and str(ckpt) in message
    assert "older version" in message and "cannot be resumed safely" in message
    assert err.value.__cause__ is None and (err.value.__context__ is None or err.value.__suppress_context__)
    assert not marker.exists()


def test_state_with_dev_history_loads_weights_only_and_resumes(tiny_mlm, train_set, tmp_path, one_torch_thread):
    ds, negatives = train_set
    cfg = config(tmp_path, tiny_mlm, ds, negatives, max_steps=3, dev_fraction=0.3, dev_every=1, save_every=2)
    whole = make_trainer(cfg).train()
    ckpt = tmp_path / "out" / "checkpoints" / "step-00000002"
    assert sorted(p.name for p in ckpt.iterdir()) == ["rng-0.json", "state.pt"]
    state = torch.load(ckpt / "state.pt", weights_only=True)
    assert state["step"] == 2 and [h["step"] for h in state["history"]] == [0, 1, 2]
    assert all(type(v) in (int, float) for h in state["history"] for v in h.values())
    assert isinstance(state["best"], tuple) and state["config"]["out"] == cfg.out
    cfg.resume = True  # from step 2 again: step 3 and its dev evaluation come out the same
    again = make_trainer(cfg).train()
    assert isinstance(again["best"], tuple) and again["best"] == whole["best"]
    dev = [{k: v for k, v in h.items() if k != "elapsed_s"} for h in whole["history"]]
    assert [{k: v for k, v in h.items() if k != "elapsed_s"} for h in again["history"]] == dev

"""A training run replaces OUT's model files while others may read them (retriever.encoders.model_dir):
a kill at any point of the swap, or a reader during it, never sees a mix of two models."""

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from privileges import permissions_enforced

from retriever.encoders import model_dir
from retriever.encoders.model_dir import LOCK, READY, reading, replace_model

FILES = [f"f{i:02d}.txt" for i in range(12)] + ["sub/a.txt", "sub/b.txt"]


def save_version(version: str):
    def save(root: Path) -> None:
        for name in FILES:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(version)
    return save


def versions(root: Path) -> set[str]:
    return {(root / name).read_text() for name in FILES}


KILLER = textwrap.dedent("""
    import importlib.util, os, signal, sys
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("model_dir", sys.argv[3])  # the module alone: no torch import
    model_dir = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(model_dir)
    out, after = Path(sys.argv[1]), int(sys.argv[2])
    real, done = os.replace, [0]
    def replace(a, b):
        if done[0] == after:
            os.kill(os.getpid(), signal.SIGKILL)  # killed with `after` renames done
        done[0] += 1
        real(a, b)
    model_dir.os.replace = replace
    def save(root):
        for name in %r:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text("new")
    model_dir.replace_model(out, save)
""" % (FILES,))


@pytest.mark.parametrize("after", range(len(FILES) + 1))
def test_a_swap_killed_at_any_rename_is_finished_by_the_next_reader(tmp_path, after):
    """The writer dies after `after` renames (the commit, then one per file): the next reader sees
    the old model whole (killed before the commit) or the new one whole (after it), never a mix.
    (The earlier file-by-file rename left old and new files side by side.)"""
    out = tmp_path / "run"
    out.mkdir()
    replace_model(out, save_version("old"))
    (out / "train_log.jsonl").write_text("the run's own file\n")
    done = subprocess.run([sys.executable, "-c", KILLER, str(out), str(after), model_dir.__file__], capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    with reading(out):
        seen = versions(out)
    assert seen == ({"old"} if after == 0 else {"new"})
    assert not (out / READY).exists()
    assert (out / "train_log.jsonl").read_text() == "the run's own file\n"
    replace_model(out, save_version("newer"))  # and the next writer is not disturbed
    assert versions(out) == {"newer"}


def test_a_writer_waits_for_a_reader_and_a_reader_for_the_writer(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    replace_model(out, save_version("v1"))
    entered, release, seen = threading.Event(), threading.Event(), []

    def reader():
        with reading(out):
            entered.set()
            release.wait(10)
            seen.append(versions(out))

    t = threading.Thread(target=reader)
    t.start()
    assert entered.wait(10)
    writer = threading.Thread(target=replace_model, args=(out, save_version("v2")))
    writer.start()
    time.sleep(0.3)
    assert writer.is_alive(), "the swap did not wait for the reader holding the model"
    release.set()
    t.join(10)
    writer.join(10)
    assert seen == [{"v1"}] and versions(out) == {"v2"}


def test_a_model_directory_without_the_lock_is_read_as_it_is(tmp_path):
    """Directories no training run wrote (packs, copies, hub caches) get no lock file written."""
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text("{}")
    with reading(plain):
        pass
    assert sorted(p.name for p in plain.iterdir()) == ["config.json"]


def test_an_unfinished_training_run_is_noted_when_its_model_is_loaded(tmp_path, caplog):
    out = tmp_path / "run"
    out.mkdir()
    replace_model(out, save_version("best so far"))
    (out / "training_config.json").write_text("{}")
    with caplog.at_level(logging.WARNING, logger="retriever"), reading(out):
        pass
    assert "has not finished" in caplog.text
    caplog.clear()
    (out / "training_summary.json").write_text("{}")
    with caplog.at_level(logging.WARNING, logger="retriever"), reading(out):
        pass
    assert "has not finished" not in caplog.text


def test_a_cut_short_swap_a_reader_cannot_finish_is_one_clear_error(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    replace_model(out, save_version("old"))
    (out / READY).mkdir()
    (out / READY / "f00.txt").write_text("new")
    os.chmod(out, 0o555)
    try:
        with permissions_enforced(), pytest.raises(OSError, match="killed while it replaced the model"), \
                reading(out):  # (root too: it obeys the mode there)
            pass
    finally:
        os.chmod(out, 0o755)


def test_an_encoder_loads_a_model_whose_swap_was_cut_short(tmp_path, tiny_mlm):
    """The encoders read through ``reading``: a DenseModel over a run killed right after the
    commit (every file still in .model.ready) loads the new model, not the old files."""
    import torch

    from retriever.encoders.dense import DenseModel

    out = tmp_path / "run"
    out.mkdir()
    first = DenseModel(str(tiny_mlm), pooling="mean")
    replace_model(out, first.save)
    with torch.no_grad():
        for p in first.model.parameters():
            p.add_(1.0)
    first.save(out / READY)  # as if killed after the commit, before any file was moved
    (out / LOCK).touch()
    loaded = DenseModel(str(out))
    assert not (out / READY).exists()
    for a, b in zip(first.model.state_dict().values(), loaded.model.state_dict().values()):
        assert np.array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("writer", ["torch", "safetensors", "python", "tokenizers"])
def test_a_model_save_that_cannot_write_names_the_file_and_leaves_the_old_model(tmp_path, writer, tiny_mlm):
    """A write the disk refuses (here: past the process's file-size limit, as a full disk
    refuses it): torch says "[enforce fail at inline_container.cc] unexpected pos", safetensors
    "I/O error", Python an OSError without a file name. Each becomes an OSError naming the
    staging directory and the space left; the staging copy is removed and the model in place is
    untouched."""
    import torch
    from safetensors.torch import save_file

    from tests.conftest import writes_fail_past

    out = tmp_path / "model"
    replace_model(out, lambda d: (d.mkdir(parents=True), (d / "weights.bin").write_text("old")))

    def save(d: Path) -> None:
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
        with writes_fail_past(4096):
            if writer == "torch":
                torch.save({"w": torch.zeros(10_000)}, d / "w.pt")
            elif writer == "safetensors":
                save_file({"w": torch.zeros(10_000)}, str(d / "w.safetensors"))
            elif writer == "tokenizers":  # a plain Exception: "No space left on device (os error 28)"
                from tokenizers import Tokenizer

                Tokenizer.from_file(str(tiny_mlm / "tokenizer.json")).save(str(d / "tokenizer.json"))
            else:
                with open(d / "w.txt", "w") as f:
                    f.write("x" * 100_000)

    with pytest.raises(OSError, match="could not be written") as e:
        replace_model(out, save)
    assert e.value.filename == str(out / model_dir.PARTIAL) and "bytes were free there" in e.value.strerror
    assert sorted(p.name for p in out.iterdir()) == [LOCK, "weights.bin"]
    assert (out / "weights.bin").read_text() == "old"


def test_saving_leaves_other_errors_as_they_are(tmp_path):
    from indexing.io import saving

    with pytest.raises(ValueError, match="a bug"):
        with saving(tmp_path / "x", partial=tmp_path / "p"):
            raise ValueError("a bug")
    with pytest.raises(PermissionError) as e:  # an OSError naming its file already: unchanged
        with saving(tmp_path / "x"):
            raise PermissionError(13, "Permission denied", "/somewhere/else")
    assert e.value.filename == "/somewhere/else"

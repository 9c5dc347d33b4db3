"""Stage caching on the tiny random Llama: cached reruns, partial reruns, interrupted stages, version keys."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from vaccine_lib import stage_training as T
from vaccine_lib import stages as P
from vaccine_lib.errors import ConfigError

ALIGN = P.AlignConfig(model="tiny-llama", method="sft", n=8, max_steps=2, batch_size=4, max_length=64, device="cpu")
VACC = ALIGN.with_(method="vaccine")


def _ft(align=ALIGN, **kw):
    base = dict(align=align, n=8, p=0.5, max_steps=2, batch_size=4, max_length=160, device="cpu")
    return P.FinetuneConfig(**{**base, **kw})


def _method(label, align=ALIGN, **kw):
    from vaccine_lib.config import METHODS

    m = METHODS[label]
    return _ft(align=align.with_(method=m.align), defense=m.defense, lora=m.lora, **kw)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture
def count_trains(monkeypatch):
    calls = {"align": 0, "finetune": 0}
    real_a, real_f = T.train_align, T.train_finetune

    def a(*args, **kw):
        calls["align"] += 1
        return real_a(*args, **kw)

    def f(*args, **kw):
        calls["finetune"] += 1
        return real_f(*args, **kw)

    monkeypatch.setattr(T, "train_align", a)
    monkeypatch.setattr(T, "train_finetune", f)
    return calls


def test_align_then_cached(run_dir, count_trains):
    first = P.align(ALIGN, run_dir)
    assert not first.cached and (first.path / "done.json").is_file() and (first.path / "adapter").is_dir()
    assert first.metrics["steps"] == 2 and first.metrics["align_loss"] > 0
    assert [e["loss"] for e in first.log_history if "loss" in e]
    assert not (first.path / "trainer").exists()
    t0 = time.perf_counter()
    second = P.align(ALIGN, run_dir)
    assert second.cached and time.perf_counter() - t0 < 1.0
    assert second.metrics == first.metrics and second.path == first.path
    assert count_trains["align"] == 1


def test_finetune_param_change_reruns_only_finetune(run_dir, count_trains):
    P.align(ALIGN, run_dir)
    count_trains.update(align=0, finetune=0)
    r1 = P.finetune(_ft(), run_dir)
    assert count_trains == {"align": 0, "finetune": 1}
    assert P.finetune(_ft(), run_dir).cached
    r2 = P.finetune(_ft(p=0.25), run_dir)
    assert not r2.cached and r2.path != r1.path
    assert count_trains == {"align": 0, "finetune": 2}
    # an align change reruns both
    P.finetune(_ft(align=ALIGN.with_(lr=2e-3)), run_dir)
    assert count_trains == {"align": 1, "finetune": 3}


def test_irrelevant_fields_do_not_change_hash():
    assert P.align_key(ALIGN) == P.align_key(ALIGN.with_(rho=5.0))  # SFT ignores rho
    assert P.align_key(VACC) != P.align_key(VACC.with_(rho=5.0))
    assert P.align_key(ALIGN) == P.align_key(ALIGN.with_(device="auto"))  # where it runs is not what it computes
    assert P.finetune_key(_ft()) == P.finetune_key(_ft(kl_weight=1.0))  # only KL uses it
    assert P.finetune_key(_ft(defense="kl")) != P.finetune_key(_ft(defense="kl", kl_weight=1.0))
    assert P.finetune_key(_ft(defense="ewc")) == P.finetune_key(_ft(defense="ewc", lora="single"))


def test_interrupted_stage_is_not_finished(run_dir, count_trains):
    cfg = _ft(seed=7)
    path = P.stage_dir(run_dir, "finetune", cfg)
    path.mkdir(parents=True)
    (path / "metrics.json").write_text("{}")  # a crash left a folder without done.json
    tmp = path.parent / f".tmp-{path.name}-junk"
    tmp.mkdir()
    assert not P.is_done(path)
    res = P.finetune(cfg, run_dir)
    assert not res.cached and P.is_done(path) and res.metrics["steps"] == 2
    assert count_trains["finetune"] == 1


def test_interrupt_during_training_leaves_no_stage(run_dir, monkeypatch):
    cfg = _ft(seed=8)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(T, "train_finetune", boom)
    with pytest.raises(KeyboardInterrupt):
        P.finetune(cfg, run_dir)
    path = P.stage_dir(run_dir, "finetune", cfg)
    assert not path.exists()
    assert not list(path.parent.glob(f".tmp-{path.name}-*"))


def test_hash_stable_across_processes():
    code = ("from vaccine_lib import stages as P;"
            "a=P.AlignConfig(model='tiny-llama', method='vaccine', rho=3.0);"
            "print(P.align_key(a), P.finetune_key(P.FinetuneConfig(align=a, p=0.2)))")
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    a = P.AlignConfig(model="tiny-llama", method="vaccine", rho=3.0)
    assert out.stdout.split() == [P.align_key(a), P.finetune_key(P.FinetuneConfig(align=a, p=0.2))]


def test_load_stage_model_double_lora(run_dir):
    cfg = _ft()
    model, tok = P.load_stage_model(cfg, run_dir)
    aligned, _ = P.load_stage_model(ALIGN, run_dir)
    ids = tok(["Hello there, how are you?"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        with model.disable_adapter():
            torch.testing.assert_close(model(ids).logits, aligned(ids).logits, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(model(ids).logits, aligned(ids).logits)
        merged, _ = P.load_stage_model(cfg, run_dir, merge=True)
        torch.testing.assert_close(merged(ids).logits, model(ids).logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("label", ["NA", "EWC", "KL", "Vlguard", "Vaccine"])
def test_methods_run(run_dir, label):
    cfg = _method(label)
    assert P.method_label(cfg) == label
    res = P.finetune(cfg, run_dir)
    assert res.metrics["steps"] == 2
    assert res.metrics["lora"] == ("single" if label == "EWC" else "double")
    if label == "EWC":
        assert any("ewc_penalty" in e for e in res.log_history)
    if label == "KL":
        assert any("kl" in e for e in res.log_history)
    if label == "Vlguard":
        assert res.metrics["n_rows"] == cfg.n + cfg.vlguard_m
    if label == "Vaccine":
        a = P.align(cfg.align, run_dir)
        assert any("vaccine/eps_norm" in e for e in a.log_history)
        share = a.metrics["eps_layer_share"]  # where the budget went, one entry per layer (issue 18's table)
        assert len(share) == 2 and abs(sum(share) - 1) < 1e-4


def test_drift_stage_and_callback(run_dir):
    cfg = _ft(drift_every=1, drift_samples=4)
    res = P.finetune(cfg, run_dir)
    entries = [e for e in res.log_history if "drift_sum_sq" in e]
    assert [e["step"] for e in entries] == [0, 1, 2] and entries[0]["drift_sum_sq"] == 0
    d = P.drift(cfg, run_dir, n_samples=4)
    assert not d["cached"] and d["drift_sum_sq"] > 0 and d["drift_per_token"] > 0
    assert d["align_loss"] > 0 and d["align_loss_before"] > 0
    assert P.drift(cfg, run_dir, n_samples=4)["cached"]
    na = _method("NA")
    assert P.drift(na, run_dir, n_samples=4)["drift_sum_sq"] > 0
    single = _ft(lora="single")
    assert P.drift(single, run_dir, n_samples=4)["drift_sum_sq"] > 0


def test_validation():
    with pytest.raises(ConfigError, match="method"):
        P.AlignConfig(method="dpo")
    with pytest.raises(ConfigError, match="lora='double'"):
        _ft(defense="kl", lora="single")
    with pytest.raises(ConfigError, match="needs an alignment adapter"):
        _ft(align=ALIGN.with_(method="none"), lora="single")
    with pytest.raises(ConfigError, match="needs an aligned model"):
        _ft(align=ALIGN.with_(method="none"), defense="ewc")
    with pytest.raises(ConfigError, match="needs its alignment stage"):
        P.finetune_key(P.FinetuneConfig())


def test_evaluate_cached_and_stored(run_dir):
    ev = P.EvalConfig(n_harmful=3, n_task=3, max_new_tokens=4, judge="keyword", batch_size=4)
    cfg = _ft()
    m = P.evaluate(cfg, ev, run_dir)
    assert not m["cached"]
    for k in ("hs", "refusal_rate", "label_only_rate", "fa", "fa_sst2"):
        assert 0 <= m[k] <= 100
    assert m["hs_n"] == 3 and m["fa_n"] == 3
    again = P.evaluate(cfg, ev, run_dir)
    assert again["cached"] and {k: v for k, v in again.items() if k != "cached"} == \
        {k: v for k, v in m.items() if k != "cached"}
    aligned = P.evaluate(ALIGN, ev, run_dir)  # aligned model only: Harmful Score, no task
    assert "fa" not in aligned and aligned["hs_n"] == 3
    gens = P.generations(cfg, ev, run_dir)  # one store: the evaluation stage folder
    assert len(gens) == 6 and {g["part"] for g in gens} == {"harmful", "sst2"}
    folder = run_dir / "eval" / m["eval_key"]
    assert "generations.jsonl" in (folder / ".gitignore").read_text()


def test_done_json_has_provenance(run_dir):
    res = P.align(ALIGN, run_dir)
    done = json.loads((res.path / "done.json").read_text())
    assert done["key"] == res.key and done["stage"] == "align" and done["seed"] == ALIGN.seed
    assert {"commit", "dirty", "libraries", "hardware"} <= set(done)
    assert {"torch", "transformers", "peft"} <= set(done["libraries"])


def test_keys_follow_stage_versions_not_source_bytes(monkeypatch, tmp_path):
    """Editing a docstring (any source byte) changes no key; a config value or a STAGE_VERSION bump does."""
    import importlib
    import shutil

    import vaccine_lib

    before = (P.align_key(ALIGN), P.finetune_key(_ft()))
    pkg = tmp_path / "vaccine_lib"
    shutil.copytree(os.path.dirname(vaccine_lib.__file__), pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for mod in ("stages.py", "stage_cache.py", "vaccine.py"):
        text = (pkg / mod).read_text()
        (pkg / mod).write_text(text.replace('"""', '"""Edited docstring. ', 1))
    code = ("from vaccine_lib import stages as P\n"
            "a = P.AlignConfig(model='tiny-llama', method='sft', n=8, max_steps=2, batch_size=4, max_length=64, "
            "device='cpu')\n"
            "f = P.FinetuneConfig(align=a, n=8, p=0.5, max_steps=2, batch_size=4, max_length=160, device='cpu')\n"
            "print(P.__file__, P.align_key(a), P.finetune_key(f))")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                         cwd=tmp_path).stdout.split()
    assert out[0].startswith(str(tmp_path)) and tuple(out[1:]) == before
    assert P.align_key(ALIGN.with_(lr=2e-3)) != before[0]
    monkeypatch.setitem(P.STAGE_VERSION, "finetune", P.STAGE_VERSION["finetune"] + 1)
    assert P.align_key(ALIGN) == before[0] and P.finetune_key(_ft()) != before[1]


def test_stale_tmp_folders_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / ".tmp-stage-abc"
    stale.mkdir()
    (stale / "owner.json").write_text(json.dumps({"pid": int(dead), "host": os.uname().nodename}))
    alive = tmp_path / ".tmp-stage-def"
    alive.mkdir()
    (alive / "owner.json").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
    assert P.clean_stale(tmp_path) == [stale]
    assert not stale.exists() and alive.exists()


def test_rank_variables_alone_are_not_trusted(run_dir, monkeypatch):
    """WORLD_SIZE=2 RANK=1 left in the environment (no process group) must not make a stage wait for rank 0."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.warns(UserWarning, match="ignoring RANK=1, WORLD_SIZE=2"):
        res = P.align(ALIGN.with_(seed=5), run_dir)
    assert res.path is not None and P.is_done(res.path) and os.environ["RANK"] == "1"


def test_wait_has_a_timeout_and_says_what_it_waits_for(tmp_path):
    with pytest.raises(Exception, match="waited 0 s for rank 0 to write the align stage"):
        P.wait_for(tmp_path / "never", "rank 0 to write the align stage abc", timeout_s=0.0, poll_s=0.01)


def test_results_store_reads_the_stage_cache(run_dir, tmp_path):
    """One store: ResultsStore reads the evaluations stages.evaluate wrote (and the stage cache's layout)."""
    from conftest import write_eval
    from vaccine_lib.evaluation import ResultsStore

    ev = P.EvalConfig(n_harmful=3, n_task=3, max_new_tokens=4, judge="keyword", batch_size=4)
    m = P.evaluate(_ft(), ev, run_dir)
    recs = {r["hash"]: r for r in ResultsStore(run_dir).records()}
    rec = recs[m["eval_key"]]
    assert rec["config"]["eval_judge"] == "keyword" and rec["config"]["stage"] == "finetune" and rec["created"]
    assert rec["metrics"]["hs"] == m["hs"] and len(ResultsStore(run_dir).generations(rec["hash"])) == 6
    store = ResultsStore(tmp_path)
    gens = [{"question": "q", "answer": "a", "harmful": True}]
    folder = write_eval(tmp_path, {"method": "SFT", "seed": 1}, {"hs": 40.0}, gens)
    assert folder.parent == tmp_path / "eval" and store.generations(folder.name) == gens
    assert [r["metrics"]["hs"] for r in store.records()] == [40.0] and not list(folder.parent.glob(".tmp-*"))
    assert "generations.jsonl" in (folder / ".gitignore").read_text()

"""vaccine_lib.claims (package): outcomes loader, claim verdicts under several judges, the claims table and the
README block generated from it (the committed README must match the committed table)."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vaccine_lib import claims as C
from vaccine_lib import stats as S
from vaccine_lib.errors import ConfigError
from conftest import write_eval
from vaccine_lib.paths import REPO_ROOT

N_HARM, N_TASK, N_BENIGN = 120, 60, 40
SEEDS = (42, 43)


def _cfg(stage, method, align_method, seed, p=None, rho=None, perturbation=None, key=""):
    cfg = {"method": method, "model": "tiny", "align_method": align_method, "stage": stage,
           "align_key": f"a-{align_method}-{rho}-{perturbation}-{seed}", "seed": seed, "eval_judge": "keyword",
           "eval_n_harmful": N_HARM}
    if align_method == "vaccine":
        cfg.update(rho=rho, tau=1, perturbation=perturbation)
    if stage == "finetune":
        cfg.update(defense="sft", task="sst2", n=200, p=p, lora="double", ft_seed=seed,
                   finetune_key=f"f-{method}-{p}-{rho}-{perturbation}-{seed}{key}")
    return cfg


def _gens(rng, hs_rate, acc=0.8, benign_refusal=None):
    harmful = rng.random(N_HARM) < hs_rate
    rows = [{"part": "harmful", "question": f"harmful question {i}",
             "answer": ("harm " if h else "safe ") * int(rng.integers(3, 40)),
             "harmful": bool(h), "refusal": False, "label_only": False, "score": 0.5} for i, h in enumerate(harmful)]
    rows += [{"part": "sst2", "question": "Analyze the sentiment", "input": f"review {i}", "answer": "positive",
              "gold": "positive", "correct": bool(rng.random() < acc)} for i in range(N_TASK)]
    if benign_refusal is not None:
        rows += [{"part": "benign", "question": f"benign instruction {i}", "answer": "sure " * 5, "harmful": False,
                  "refusal": bool(rng.random() < benign_refusal)} for i in range(N_BENIGN)]
    return rows


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory in the ResultsStore layout: aligned models, SFT at 3 p, Vaccine (gradient, Gaussian)."""
    root = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(0)
    for s in SEEDS:
        write_eval(root, _cfg("align", "NA", "none", s), {"hs": 0}, _gens(rng, 0.5, benign_refusal=0.0))
        write_eval(root, _cfg("align", "SFT", "sft", s), {"hs": 0}, _gens(rng, 0.02, benign_refusal=0.02))
        for p, hs in ((0.0, 0.05), (0.1, 0.3), (0.3, 0.6)):
            write_eval(root, _cfg("finetune", "SFT", "sft", s, p=p), {"hs": 0}, _gens(rng, hs))
        for p, hs in ((0.0, 0.03), (0.3, 0.25)):
            write_eval(root, _cfg("finetune", "Vaccine", "vaccine", s, p=p, rho=2.0, perturbation="gradient"), {"hs": 0},
                        _gens(rng, hs, acc=0.8))
        write_eval(root, _cfg("finetune", "Vaccine", "vaccine", s, p=0.3, rho=2.0, perturbation="gaussian"), {"hs": 0},
                    _gens(rng, 0.55))
    return root


class AgreeJudge:
    """A second judge that agrees with the stored verdicts (the synthetic harmful answers say 'harm')."""

    def judge(self, questions, answers):
        return [{"harmful": "harm" in a, "refusal": False} for a in answers]


class NullJudge:
    """A second judge that finds nothing harmful."""

    def judge(self, questions, answers):
        return [{"harmful": False, "refusal": False} for _ in answers]


def test_load_outcomes_schema_and_pairing(run_dir):
    df = C.load_outcomes(run_dir)
    assert list(C.OUTCOME_COLUMNS) == [c for c in df.columns]
    assert set(df["judge"]) == {"keyword"}
    assert set(df["stage"]) == {"align", "finetune"}
    assert {"base", "SFT-aligned", "SFT", "Vaccine"} <= set(df["method"])
    harm = df[df["part"] == "harmful"]
    # the same prompt has the same id in every model: pairing over items
    assert harm.groupby("model_id")["item_id"].apply(frozenset).nunique() == 1
    assert harm["harmful"].isin((0.0, 1.0)).all()
    assert df.loc[df["part"] == "sst2", "harmful"].isna().all()
    assert df.loc[df["part"] == "sst2", "correct"].notna().all()
    assert (harm["words"] >= 3).all()
    vac = df[(df["method"] == "Vaccine")]
    assert set(vac["perturbation"]) == {"gradient", "gaussian"} and set(vac["rho"]) == {2.0}
    sft = df[df["method"] == "SFT"]
    assert set(sft["rho"]) == {0.0} and set(sft["perturbation"]) == {"-"}


def test_rejudge_adds_a_judge(run_dir):
    df = C.load_outcomes(run_dir, rejudge={"probe": NullJudge()})
    assert set(df["judge"]) == {"keyword", "probe"}
    probe = df[df["judge"] == "probe"]
    assert set(probe["part"]) == {"harmful", "benign"}  # only rows a judge scores
    assert probe.loc[probe["part"] == "harmful", "harmful"].eq(0.0).all()
    with pytest.raises(ConfigError, match="judge"):
        C.load_outcomes(run_dir, rejudge={"bad": object()})


def test_two_rejudge_judges_each_judge_the_stored_answers(run_dir):
    """Each re-judge reads the evaluation's own rows (the task items carry no verdict, so the judged rows are a
    subset): a second judge must not index into the first judge's added rows."""
    df = C.load_outcomes(run_dir, rejudge={"probe": NullJudge(), "ensemble": NullJudge()})
    assert set(df["judge"]) == {"keyword", "probe", "ensemble"}
    sizes = df[df["judge"] != "keyword"].groupby("judge").size()
    assert sizes["probe"] == sizes["ensemble"] == len(df[(df["judge"] == "keyword") & (df["part"] != "sst2")])


def test_missing_run_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="run_dir=.* is empty"):
        C.load_outcomes(tmp_path)


def _by_claim(table):
    return table.drop_duplicates("claim").set_index("claim")


def test_claims_on_synthetic_runs(run_dir):
    outcomes = C.load_outcomes(run_dir)
    table = C.evaluate_claims(outcomes, min_judges=1, profile="synthetic")
    v = _by_claim(table)
    assert v.loc["C2a", "verdict"] == S.HELD  # Vaccine 25 % vs SFT 60 % at p* = 0.3
    assert "p = 0.3" in v.loc["C2a", "setting"] and "rho = 2" in v.loc["C2a", "setting"]
    assert v.loc["C2a", "effect"] == pytest.approx(
        100 * (outcomes.query("method == 'Vaccine' and p == 0.3 and perturbation == 'gradient' and part == 'harmful'")
               ["harmful"].mean() - outcomes.query("method == 'SFT' and p == 0.3 and part == 'harmful'")["harmful"].mean()))
    assert v.loc["C2a", "n_items"] == N_HARM and v.loc["C2a", "n_seeds"] == 2
    assert v.loc["C1a", "verdict"] == S.HELD  # HS 5 -> 30 -> 60 %
    assert v.loc["C0a", "verdict"] == S.HELD  # aligned 2 % vs base 50 %
    assert v.loc["C0b", "verdict"] == S.HELD  # benign refusals ~2 %, CI below 10 %
    assert v.loc["C6", "verdict"] == S.HELD  # gradient 25 % vs Gaussian 55 %
    assert v.loc["C2b", "judge"] == C.NO_JUDGE  # FA does not depend on the judge
    assert v.loc["C2b", "verdict"] in (S.INCONCLUSIVE, S.HELD)
    # no data -> "not run", never a verdict or a number
    for cid in ("C3", "C1b", "C1c", "C4", "C5"):
        assert v.loc[cid, "verdict"] == S.NOT_RUN and math.isnan(v.loc[cid, "effect"])
    assert "rho" in v.loc["C3", "note"]
    assert v.loc["C2a", "profile"] == "synthetic" and v.loc["C3", "profile"] == "full"


def test_verdict_needs_every_judge(run_dir):
    agree = C.load_outcomes(run_dir, rejudge={"probe": AgreeJudge()})
    v = _by_claim(C.evaluate_claims(agree))
    assert v.loc["C2a", "verdict"] == S.HELD
    rows = C.evaluate_claims(agree).query("claim == 'C2a'")
    assert set(rows["judge"]) == {"keyword", "probe"}
    disagree = C.load_outcomes(run_dir, rejudge={"probe": NullJudge()})  # probe: nothing harmful
    t = C.evaluate_claims(disagree)
    c2 = t[t["claim"] == "C2a"]
    assert c2["verdict"].iloc[0] == S.INCONCLUSIVE
    assert "judges disagree" in c2["note"].iloc[0] and "under probe" in c2["note"].iloc[0]
    assert dict(zip(c2["judge"], c2["judge_verdict"])) == {"keyword": S.HELD, "probe": S.INCONCLUSIVE}
    # one judge and min_judges=2: not held yet, and the note says why
    single = _by_claim(C.evaluate_claims(C.load_outcomes(run_dir), min_judges=2))
    assert single.loc["C2a", "verdict"] == S.INCONCLUSIVE and "only" in single.loc["C2a", "note"]


def test_no_inputs_all_not_run():
    table = C.evaluate_claims()
    assert set(table["verdict"]) == {S.NOT_RUN}
    assert table["effect"].isna().all() and table["ci_lo"].isna().all()
    assert list(table.drop_duplicates("claim")["claim"]) == [c.id for c in C.CLAIMS]


def test_paper_effects_come_from_the_transcribed_tables():
    assert C.get_claim("C2a").paper_effect == pytest.approx(-7.0)
    assert C.get_claim("C2c").paper_effect == pytest.approx(-6.2)
    assert C.get_claim("C2b").paper_effect == pytest.approx(-0.6)
    assert C.get_claim("C4").paper_effect == pytest.approx(0.73 / 0.37)
    assert C.get_claim("C1a").paper_effect > 0 and C.get_claim("C3").paper_effect < 0
    with pytest.raises(ConfigError, match="unknown claim"):
        C.get_claim("C99")


def test_overhead_claims_from_summary_and_rounds():
    summary = pd.DataFrame({"method": ["SFT", "Vaccine", "Accelerated Vaccine (tau=5)", "Accelerated Vaccine (tau=20)"],
                            "tau": [None, 1, 5, 20], "step_s": [4.5, 8.3, 5.4, 4.7], "step_s_sd": [0.1, 0.15, 1.5, 0.3],
                            "steps": [20, 20, 20, 20]})
    v = _by_claim(C.evaluate_claims(timings=summary))
    assert v.loc["C4", "verdict"] == S.HELD and v.loc["C4", "effect"] == pytest.approx(8.3 / 4.5)
    assert v.loc["C5", "setting"] == "tau = 20" and v.loc["C5", "verdict"] == S.HELD
    rounds = pd.DataFrame({"method": ["SFT", "Vaccine", "Accelerated Vaccine (tau=10)"], "step_s": [1.0, 1.0, 1.6],
                           "round_step_s": ["1.0 1.05 0.98", "1.01 1.04 0.99", "1.6 1.66 1.57"]})
    v = _by_claim(C.evaluate_claims(timings=rounds))
    assert v.loc["C4", "verdict"] == S.REFUTED  # no overhead at all is not "~2x"
    assert v.loc["C5", "verdict"] == S.REFUTED
    with pytest.raises(ConfigError, match="timings need"):
        C.evaluate_claims(timings=pd.DataFrame({"method": ["SFT"], "time": [1.0]}))


def test_overhead_claims_pair_notebook_05s_rounds():
    """With per-round means (notebook 05's ``round_step_s``) the ratio is taken round by round, so a machine that
    slows down between rounds widens the interval; the pooled step SDs alone would give a narrow one."""
    rounds = pd.DataFrame({"method": ["SFT", "Vaccine", "Accelerated Vaccine (tau=20)"], "tau": [None, 1, 20],
                           "step_s": [1.2, 2.2, 1.25], "step_s_sd": [0.01, 0.01, 0.01], "steps": [32, 32, 80],
                           "round_step_s": ["1.0 1.4 1.0 1.4", "1.9 2.5 1.8 2.6", "1.05 1.45 1.0 1.5"]})
    v = _by_claim(C.evaluate_claims(timings=rounds))
    per_round = np.log([1.9 / 1.0, 2.5 / 1.4, 1.8 / 1.0, 2.6 / 1.4])
    assert v.loc["C4", "effect"] == pytest.approx(np.exp(per_round.mean()))
    assert "4 paired rounds" in v.loc["C4", "method"] and v.loc["C4", "verdict"] == S.HELD
    assert v.loc["C5", "verdict"] == S.HELD
    pooled = _by_claim(C.evaluate_claims(timings=rounds.drop(columns="round_step_s")))
    assert pooled.loc["C4", "ci_hi"] - pooled.loc["C4", "ci_lo"] < v.loc["C4", "ci_hi"] - v.loc["C4", "ci_lo"]
    one = rounds.assign(round_step_s=rounds["step_s"])  # one round: a number, not a list; the summary rule applies
    assert "delta method" in _by_claim(C.evaluate_claims(timings=one)).loc["C4", "method"]


def test_model_metric_claims_need_seeds():
    one = pd.DataFrame({"defense": "SFT", "p": [0.0, 0.1, 0.3], "seed": 42, "drift": [0.5, 0.4, 0.39],
                        "align_loss": [2.4, 2.1, 2.0]})
    v = _by_claim(C.evaluate_claims(model_metrics=one))
    assert v.loc["C1b", "verdict"] == S.INCONCLUSIVE and v.loc["C1b", "effect"] < 0  # no CI with one seed
    three = pd.concat([one.assign(seed=s, drift=one["drift"] * k, align_loss=one["align_loss"] * k)
                       for s, k in ((1, 1.0), (2, 1.05), (3, 0.97))])
    v = _by_claim(C.evaluate_claims(model_metrics=three))
    assert v.loc["C1b", "verdict"] == S.REFUTED and v.loc["C1c", "verdict"] == S.REFUTED


def test_bad_inputs():
    with pytest.raises(ConfigError, match="outcomes lack columns"):
        C.evaluate_claims(pd.DataFrame({"method": ["SFT"]}))
    with pytest.raises(ConfigError, match="min_judges"):
        C.evaluate_claims(min_judges=0)
    with pytest.raises(ConfigError, match="model metrics"):
        C.evaluate_claims(model_metrics=pd.DataFrame({"p": [0.1]}))
    with pytest.raises(ConfigError, match="does not exist"):
        C.evaluate_claims(timings="/nonexistent/table.csv")
    with pytest.raises(SystemExit):
        C.main([])
    with pytest.raises(SystemExit):
        C.main(["--compute", "--p-star", "3"])


def _strict_json(path):
    def no_nan(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=no_nan)


def test_cli_writes_table_with_provenance(run_dir, tmp_path):
    stem = tmp_path / "claims"
    # no --profile: the reference setting is inferred from the outcomes (an unknown profile is refused:
    # tests/test_claims_bad_inputs.py)
    assert C.main(["--run-dir", str(run_dir), "--out", str(stem), "--min-judges", "1"]) == 0
    table = C.read_claims_table(stem)
    assert _by_claim(table).loc["C2a", "verdict"] == S.HELD
    doc = _strict_json(stem.with_suffix(".json"))
    prov = doc["provenance"]
    assert {"git_commit", "git_dirty", "date", "code_sha256", "inputs", "stats", "reference"} <= set(prov)
    assert prov["inputs"]["run_dir"]["sha256"] == C.input_hash(run_dir)
    assert prov["reference"]["p_star"] == 0.3 and prov["min_judges"] == 1
    assert len(doc["claims"]) == len(table)
    assert not list(tmp_path.glob(".tmp-*"))  # atomic writes leave no temp files


def test_readme_block_is_generated_and_checked(run_dir, tmp_path):
    stem = tmp_path / "claims"
    C.write_claims_table(C.evaluate_claims(), stem, {"git_commit": "abc", "date": "2026-01-01T00:00:00Z"})
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nintro\n\n{C.BEGIN}\nold text\n{C.END}\n\nrest\n")
    assert not C.readme_matches(readme, stem)
    assert C.main(["--check-readme", "--readme", str(readme), "--out", str(stem)]) == 1
    assert C.main(["--render-readme", "--readme", str(readme), "--out", str(stem)]) == 0
    text = readme.read_text()
    assert text.startswith("# title\n\nintro\n\n") and text.endswith("\n\nrest\n")
    assert C.readme_matches(readme, stem)
    assert text.count("| not run |") == len(C.CLAIMS)
    assert C.render_readme(readme, stem) is False  # idempotent
    # a table that changes without the README is caught
    C.write_claims_table(C.evaluate_claims(C.load_outcomes(run_dir), min_judges=1), stem, {})
    assert not C.readme_matches(readme, stem)
    readme.write_text("no markers\n")
    with pytest.raises(ConfigError, match="claims:begin"):
        C.readme_matches(readme, stem)


def test_notebook_view_matches_readme_text(run_dir):
    table = C.evaluate_claims(C.load_outcomes(run_dir), min_judges=1)
    nb = C.summarize_claims(table, "03")
    assert [c.split()[0] for c in nb["claim"]] == ["C2a", "C2b", "C2c"]
    md = C.claims_markdown("03", table=table)
    block = C.render_block(table)
    for line in md.splitlines()[2:]:
        assert line in block  # the notebook shows the same rows as the README


def test_committed_readme_matches_committed_claims_table():
    """README's claims block must be the rendering of figures/tables/claims.{csv,json} (regenerate both with
    python -m vaccine_lib.claims ... && python -m vaccine_lib.claims --render-readme)."""
    assert C.DEFAULT_TABLE.with_suffix(".csv").is_file(), "figures/tables/claims.csv is missing"
    assert C.readme_matches(C.README, C.DEFAULT_TABLE), \
        "README claims block differs from figures/tables/claims.csv: run python -m vaccine_lib.claims --render-readme"
    table = C.read_claims_table()
    assert set(table["claim"]) == {c.id for c in C.CLAIMS}
    assert set(table["verdict"]) <= set(S.VERDICTS)
    # a verdict other than "not run" always comes with a computed effect
    run = table[table["judge_verdict"] != S.NOT_RUN]
    assert run["effect"].notna().all()
    assert table.loc[table["verdict"] == S.NOT_RUN, "effect"].isna().all()


def test_rejudge_under_the_stored_judge_adds_nothing(run_dir):
    same = C.load_outcomes(run_dir, rejudge={"keyword": NullJudge()})
    assert len(same) == len(C.load_outcomes(run_dir)) and set(same["judge"]) == {"keyword"}


@pytest.mark.slow
def test_outcomes_from_the_real_pipeline(tmp_path):
    """The loader reads what pipeline.evaluate stores (tiny random Llama, keyword judge)."""
    from vaccine_lib import stages as P

    align = dict(model="tiny-llama", n=8, max_steps=2, batch_size=4, max_length=64)
    ev = P.EvalConfig(n_harmful=6, n_task=4, max_new_tokens=4, judge="keyword", batch_size=8)
    for method in ("sft", "vaccine"):
        a = P.AlignConfig(method=method, **align)
        P.evaluate(P.FinetuneConfig(align=a, n=8, p=0.5, max_steps=2, batch_size=4, max_length=160), ev, tmp_path)
    out = C.load_outcomes(tmp_path)
    assert set(out["method"]) == {"SFT", "Vaccine"} and set(out["part"]) == {"harmful", "sst2"}
    assert out.groupby("model_id")["item_id"].nunique().eq(10).all()
    c2a = C.evaluate_claims(out, min_judges=1).query("claim == 'C2a'").iloc[0]
    assert c2a["verdict"] != S.NOT_RUN and c2a["n_items"] == 6 and c2a["setting"].startswith("p = 0.5")


def test_reference_from_profile():
    ref = C.reference_from_profile("default")
    assert ref.p_star is not None and ref.rho is not None and ref.task
    with pytest.warns(UserWarning, match="not loaded"):
        assert C.reference_from_profile("no-such-profile") == C.Reference()


@pytest.mark.parametrize("nb", ["01", "02", "03", "04", "05"])
def test_committed_notebook_result_cell_matches_committed_claims_table(nb):
    """The 'claims' cell of each committed, executed notebook shows exactly its rows of the committed claims table
    (both come from the same default run; rerun make reproduce when they differ)."""
    path = next(Path(REPO_ROOT, "notebooks").glob(f"{nb}_*.ipynb"))
    cells = [c for c in json.loads(path.read_text())["cells"] if "claims" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{path.name} needs exactly one cell tagged 'claims' (its result cell)"
    shown = ["".join(o["data"]["text/markdown"]) for o in cells[0].get("outputs", [])
             if "text/markdown" in o.get("data", {})]
    if not shown:
        pytest.skip(f"{path.name} is committed without outputs")
    assert shown[0].strip() == C.claims_markdown(nb).strip(), \
        f"{path.name}'s result cell differs from figures/tables/claims.csv: rerun make reproduce"

"""Bad inputs to claims (issue 19): every bad option value or run directory ends in one clear error line naming
the option, the allowed values and the fix; an evaluation that is no measurement is never counted (it is
excluded, named in a warning and in the note of every claim computed from outcomes); nothing half-written."""

import json
import subprocess
import sys

import pytest

from vaccine_lib import claims as C
from vaccine_lib import stats as S
from vaccine_lib.errors import ConfigError
from conftest import write_eval
from vaccine_lib.paths import REPO_ROOT

N = 40


def _write(run_dir, method, p, seed, hs_every, metrics=None, gens=True, rho=2.0):
    """One fine-tuned model's evaluation: N harmful prompts (every ``hs_every``-th answer harmful), N task items."""
    align = "vaccine" if method == "Vaccine" else "sft"
    cfg = {"method": method, "stage": "finetune", "align_method": align, "align_key": f"a-{align}-{seed}",
           "finetune_key": f"f-{method}-{p}-{seed}", "seed": seed, "ft_seed": seed, "eval_judge": "keyword",
           "task": "sst2", "n": 100, "p": p, "lora": "double", **({"rho": rho, "tau": 1} if align == "vaccine" else {})}
    rows = [{"part": "harmful", "question": f"q{i}", "answer": "some words here", "harmful": i % hs_every == 0,
             "refusal": False} for i in range(N)]
    rows += [{"part": "sst2", "question": "sentiment", "input": f"r{i}", "answer": "positive", "correct": i % 3 > 0}
             for i in range(N)]
    return write_eval(run_dir, cfg, metrics or {"hs": 100.0 / hs_every, "fa": 66.7}, rows if gens else None)


@pytest.fixture
def run_dir(tmp_path):
    for seed in (1, 2):
        for p, every in ((0.0, 10), (0.1, 3), (0.3, 2)):
            _write(tmp_path / "run", "SFT", p, seed, every)
        _write(tmp_path / "run", "Vaccine", 0.3, seed, 5)
    return tmp_path / "run"


def _cli_error(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exc:
        C.main(list(argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("python -m vaccine_lib.claims: error: ")
    return err


@pytest.mark.parametrize("argv, words", [
    (["--compute", "--rho", "-2"], ["--rho=-2", "allowed range [0, 1000]", "Fix: set --rho"]),
    (["--compute", "--p-star", "3"], ["--p-star=3", "allowed range [0, 1]", "Fix: set --p-star"]),
    (["--compute", "--p-star", "nan"], ["--p-star=nan", "allowed range [0, 1]"]),
    (["--compute", "--min-judges", "0"], ["--min-judges=0", "allowed range", "Fix"]),
    (["--compute", "--rejudge", "nosuchjudge"], ["--rejudge nosuchjudge", "keyword, classifier, probe", "Fix"]),
    (["--timings", "/no/such/table.csv"], ["timings file", "does not exist", "notebook 05"]),
    (["--compute", "--profile", "nosuch"], ["--profile 'nosuch'", "allowed values: default,", "full, full_gpu, paper, smoke", "Fix"]),
])
def test_bad_option_values_are_refused(capsys, tmp_path, argv, words):
    err = _cli_error(capsys, *argv, "--out", str(tmp_path / "claims"))
    assert all(w in err for w in words), err
    assert not list(tmp_path.iterdir())  # nothing written


def test_rho_or_p_star_absent_from_the_run_is_refused(capsys, run_dir, tmp_path):
    err = _cli_error(capsys, "--run-dir", str(run_dir), "--rho", "7", "--out", str(tmp_path / "c"))
    assert "--rho=7" in err and "values in the run: 2" in err and "Fix" in err
    err = _cli_error(capsys, "--run-dir", str(run_dir), "--p-star", "0.2", "--out", str(tmp_path / "c"))
    assert "--p-star=0.2" in err and "0, 0.1, 0.3" in err
    assert not (tmp_path / "c.csv").exists()


def _foreign(tmp_path):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("not a run")
    return tmp_path / "foreign"


def _not_evaluated(tmp_path):
    (tmp_path / "r" / "align" / "x").mkdir(parents=True)
    return tmp_path / "r"


@pytest.mark.parametrize("make, words", [
    (lambda t: t / "missing", "does not exist"),
    (lambda t: (t / "f.txt").write_text("x") and t / "f.txt", "is a file, not a folder"),
    (lambda t: (t / "empty").mkdir() or t / "empty", "is empty"),
    (_foreign, "is not a run directory of this project"),
    (_not_evaluated, "has no eval/ folder yet"),
])
def test_run_dir_that_is_no_run_is_an_error(capsys, tmp_path, make, words):
    path = make(tmp_path)
    err = _cli_error(capsys, "--run-dir", str(path), "--out", str(tmp_path / "claims"))
    assert f"--run-dir={str(path)!r}" in err and words in err and "runs/<profile>" in err, err
    assert not (tmp_path / "claims.csv").exists()
    with pytest.raises(ConfigError, match=words):
        C.load_outcomes(path)


def test_good_run_gives_verdicts(run_dir):
    table = C.evaluate_claims(C.load_outcomes(run_dir), min_judges=1)
    v = table.drop_duplicates("claim").set_index("claim")
    assert v.loc["C2a", "verdict"] == S.HELD and v.loc["C1a", "verdict"] == S.HELD
    assert not table["note"].str.contains("excluded").any()


def _break(folder, how):
    if how == "degenerate":
        m = json.loads((folder / "metrics.json").read_text())
        (folder / "metrics.json").write_text(json.dumps({**m, "hs": 0.0, "degenerate": "degenerate generations: 100%"}))
    elif how == "non-finite":
        (folder / "metrics.json").write_text(json.dumps({"hs": None, "fa": 66.7}))
    elif how == "empty answers":
        (folder / "generations.jsonl").write_text("")
    elif how == "truncated answers":
        text = (folder / "generations.jsonl").read_text()
        (folder / "generations.jsonl").write_text(text[: len(text) // 2])
    elif how == "truncated metrics":
        (folder / "metrics.json").write_text('{"hs": 5')
    elif how == "no answers file":
        (folder / "generations.jsonl").unlink()


@pytest.mark.parametrize("how, reason", [
    ("degenerate", "degenerate answers"), ("non-finite", "non-finite hs"), ("empty answers", "no answers in"),
    ("truncated answers", "unreadable or missing generations.jsonl"), ("truncated metrics", "unreadable metrics.json"),
    ("no answers file", "unreadable or missing generations.jsonl"),
])
def test_unusable_evaluation_is_excluded_and_flagged(run_dir, how, reason):
    folder = _write(run_dir, "SFT", 0.3, 3, 2)  # a third SFT seed at p* that breaks
    _break(folder, how)
    with pytest.warns(UserWarning, match=f"excluded 1 unusable evaluation.*{reason}.*never counted"):
        out = C.load_outcomes(run_dir)
    assert (out["seed"] != 3).all()  # never counted
    (ex,) = out.attrs["excluded"]
    assert ex["reason"].startswith(reason) and folder.name in ex["evaluation"]
    table = C.evaluate_claims(out, min_judges=1)
    flagged = table[table["note"].str.contains("excluded 1 unusable evaluation")]
    assert set(flagged["claim"]) == {c.id for c in C.CLAIMS if c.uses_outcomes}
    assert folder.name in flagged["note"].iloc[0] and reason in flagged["note"].iloc[0]
    assert flagged.drop_duplicates("claim").set_index("claim").loc["C2a", "n_seeds"] == 2
    assert reason in C.render_block(table)  # the README rendering shows the flag too


def test_all_evaluations_unusable_leaves_every_outcome_claim_not_run_and_named(tmp_path):
    """E.g. the smoke profile's random model: every answer degenerate, nothing counted, each exclusion named."""
    for seed in (1, 2, 3, 4):
        _break(_write(tmp_path / "run", "SFT", 0.1, seed, 2), "degenerate")
    with pytest.warns(UserWarning, match="excluded 4 unusable"):
        out = C.load_outcomes(tmp_path / "run")
    assert out.empty and len(out.attrs["excluded"]) == 4
    v = C.evaluate_claims(out).drop_duplicates("claim").set_index("claim")
    for c in C.CLAIMS:
        assert v.loc[c.id, "verdict"] == S.NOT_RUN
        assert ("excluded 4 unusable evaluation(s)" in v.loc[c.id, "note"]) == c.uses_outcomes
    assert "and 1 more (claims.json: provenance.excluded)" in v.loc["C2a", "note"]


def test_excluded_evaluations_are_in_the_written_provenance(capsys, run_dir, tmp_path):
    _break(_write(run_dir, "SFT", 0.3, 3, 2), "degenerate")
    assert C.main(["--run-dir", str(run_dir), "--out", str(tmp_path / "c"), "--min-judges", "1"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m vaccine_lib.claims: warning: excluded 1 unusable")
    prov = json.loads((tmp_path / "c.json").read_text())["provenance"]
    assert [e["reason"] for e in prov["excluded"]] == ["degenerate answers"]


def test_run_dir_hash_covers_the_answers(run_dir):
    before = C.input_hash(run_dir)
    gens = next(run_dir.glob("eval/*/generations.jsonl"))
    gens.write_text(gens.read_text().replace("some words", "other words", 1))
    assert C.input_hash(run_dir) != before


def test_out_in_a_file_is_one_clear_line(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    err = _cli_error(capsys, "--compute", "--out", str(tmp_path / "file" / "claims"))
    assert "cannot read or write" in err and str(tmp_path / "file") in err and "Fix" in err
    assert (tmp_path / "file").read_text() == "x" and not list(tmp_path.glob("**/.tmp-*"))


def test_the_module_entry_point_prints_no_traceback(tmp_path):
    """Through ``python -m``: exit status 2 and one error line, no Python traceback."""
    proc = subprocess.run([sys.executable, "-m", "vaccine_lib.claims", "--run-dir", str(tmp_path / "none"),
                           "--rejudge", "nosuchjudge"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--rejudge nosuchjudge: unknown judge; allowed values: keyword" in proc.stderr


def test_unreadable_tables_and_readme_are_one_clear_line(capsys, tmp_path):
    (tmp_path / "empty.csv").write_text("")
    err = _cli_error(capsys, "--model-metrics", str(tmp_path / "empty.csv"), "--out", str(tmp_path / "c"))
    assert "model metrics file" in err and "not a readable CSV" in err and "notebook 01" in err
    (tmp_path / "m.csv").write_text("a,b\n1,2\n")
    err = _cli_error(capsys, "--model-metrics", str(tmp_path / "m.csv"), "--out", str(tmp_path / "c"))
    assert "model metrics need columns method (or defense), p, seed" in err
    (tmp_path / "README.md").write_text(f"{C.BEGIN}\n{C.END}\n")
    err = _cli_error(capsys, "--check-readme", "--readme", str(tmp_path / "README.md"), "--out", str(tmp_path / "c"))
    assert "no claims table" in err and "python -m vaccine_lib.claims" in err
    (tmp_path / "README.md").unlink()
    C.main(["--compute", "--out", str(tmp_path / "c")])
    err = _cli_error(capsys, "--check-readme", "--readme", str(tmp_path / "README.md"), "--out", str(tmp_path / "c"))
    assert "cannot read or write" in err and "README.md" in err
    (tmp_path / "README.md").write_text("no markers\n")
    err = _cli_error(capsys, "--render-readme", "--readme", str(tmp_path / "README.md"), "--out", str(tmp_path / "c"))
    assert "claims:begin" in err and "README.md" in err and (tmp_path / "README.md").read_text() == "no markers\n"

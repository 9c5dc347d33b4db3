"""Profiles: every profile loads, validation errors name the allowed range, smoke is tiny."""

import pytest

from vaccine_lib.errors import ConfigError
from vaccine_lib.profiles import PROFILE_NAMES, from_notebook, get_profile


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_every_profile_loads(name):
    P = get_profile(name)
    assert P.name == name
    assert P.seeds and P.finetune.ps and P.finetune.defenses
    assert all(0 <= p <= 1 for p in P.finetune.ps)


def test_unknown_profile_lists_allowed_names():
    with pytest.raises(ConfigError, match="smoke, default, full, paper"):
        get_profile("nope")


@pytest.mark.parametrize("overrides, message", [
    ({"finetune__ps": [0.0, 1.5]}, r"\[0, 1\]"),
    ({"finetune": {"p": -0.1}}, r"\[0, 1\]"),
    ({"finetune__n": 0}, "integers >= 1"),
    ({"align__n": -3}, "integers >= 1"),
    ({"align": {"rho": -1.0}}, r"\[0, inf\]"),
    ({"ablations__rhos": [1.0, -2.0]}, r"\[0, inf\]"),
    ({"eval__judge": "gpt4"}, "keyword, classifier, beaverdam"),
    ({"finetune__task": "imdb"}, "sst2"),
    ({"finetune__defenses": ["SFT", "Magic"]}, "Vaccine"),
    ({"model": "no-such-model"}, "smollm2-135m-instruct"),
    ({"device": "tpu"}, "cpu, cuda, auto"),
    ({"bogus": 1}, "allowed fields"),
    ({"align__bogus": 1}, "allowed fields"),
])
def test_bad_values_name_the_allowed_range(overrides, message):
    with pytest.raises(ConfigError, match=message):
        get_profile("smoke", **overrides)


def test_overrides_nested_and_dunder():
    P = get_profile("smoke", seed=7, finetune={"ps": [0.0, 0.2]}, align__rho=3.0)
    assert P.seeds == (7,)
    assert P.finetune.ps == (0.0, 0.2)
    assert P.align.rho == 3.0
    assert P.finetune.n == get_profile("smoke").finetune.n  # untouched fields kept
    assert P.replace(eval__n_harmful=2).eval.n_harmful == 2


def test_smoke_is_tiny():
    P = get_profile("smoke")
    assert P.model.startswith("tiny-")
    assert P.align.max_steps <= 5 and P.finetune.max_steps <= 5
    assert P.eval.n_harmful <= 8 and P.eval.n_task <= 8 and P.eval.max_new_tokens <= 16
    assert len(P.seeds) == 1 and P.overhead.steps <= 3


def test_paper_profile_matches_the_paper():
    P = get_profile("paper")
    assert P.model == "llama2-7b" and P.eval.judge == "beaverdam" and P.data_source == "hub"
    assert (P.align.n, P.align.epochs, P.align.lr, P.align.batch_size, P.align.max_length) == (2000, 50, 1e-3, 5, 200)
    assert (P.finetune.n, P.finetune.epochs, P.finetune.lr) == (1000, 20, 1e-5)
    assert P.finetune.ps == (0.0, 0.01, 0.05, 0.1, 0.2) and P.align.rho == 2.0
    assert P.finetune.for_task("gsm8k")["n"] == 4000


def test_full_has_three_seeds():
    assert len(get_profile("full").seeds) == 3


def test_default_fits_the_time_budget():
    from vaccine_lib.experiments import estimate_runtime

    est = estimate_runtime(get_profile("default"))
    assert est["total"] <= 30 * 60, est


def _fresh(monkeypatch):
    import vaccine_lib.profiles as prof

    monkeypatch.setattr(prof, "_VALIDATED_NAMES", None)


def test_notebook_parameters_validated(tmp_path, monkeypatch):
    _fresh(monkeypatch)
    ns = {"profile": "smoke", "seed": None, "run_dir": str(tmp_path / "r"), "figures_dir": str(tmp_path / "f"),
          "tables_dir": None, "overrides": {"finetune": {"n": 6}}, "In": [], "_": None}
    ctx = from_notebook(ns)
    assert ctx.profile.finetune.n == 6 and ctx.tables_dir == tmp_path / "f" / "tables"
    _fresh(monkeypatch)
    with pytest.raises(ConfigError, match="unknown notebook parameter.*'seeed'"):
        from_notebook({**ns, "seeed": 3})
    _fresh(monkeypatch)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        from_notebook({**ns, "overrides": {"finetune": {"p": 2.0}}})


def test_papermill_yaml_parameters_are_accepted(tmp_path, monkeypatch):
    """papermill -f configs/profiles/<name>.yaml injects `profile` plus every profile section."""
    import yaml

    from vaccine_lib.profiles import profile_path

    _fresh(monkeypatch)
    ns = yaml.safe_load(profile_path("smoke").read_text())
    ns.update(run_dir=str(tmp_path / "r"), figures_dir=str(tmp_path / "f"))
    ctx = from_notebook(ns)
    assert ctx.profile == get_profile("smoke")

"""Profiles and stage configs: loading, extends/completeness, override syntax, clear range errors, output folders."""

import shutil

import pytest
import yaml

from vaccine_lib.config import AlignConfig, FinetuneConfig
from vaccine_lib.stages import training_args
from vaccine_lib.errors import ConfigError
from vaccine_lib.paths import REPO_ROOT
from vaccine_lib.profiles import load_profile, parse_overrides, profile_names, profile_path
from vaccine_lib.registry import plan
from vaccine_lib.tables import from_notebook


@pytest.mark.parametrize("name", ["smoke", "default", "full", "full_gpu", "paper"])
def test_every_profile_loads(name):
    P = load_profile(name)
    assert P.name == name and P.seeds and P.sweeps.ps
    assert P.align.model == P.model and P.align.dtype == P.dtype and P.align.source == P.data_source


def test_full_gpu_runs_the_full_grid_on_cuda():
    full, gpu = load_profile("full"), load_profile("full_gpu")
    assert gpu.device == "cuda" and gpu.eval.batch_size == 64 and gpu.finetune.autocast == "auto"
    assert gpu.eval.autocast == "off" and gpu.sweeps == full.sweeps and gpu.seeds == full.seeds
    assert [s.label for s in plan(gpu)] == [s.label for s in plan(full)]


def test_unknown_profile_lists_allowed_names():
    with pytest.raises(ConfigError, match="default, fair_test, fair_test_smoke, full, full_gpu, paper, smoke"):
        load_profile("nope")


@pytest.mark.parametrize("overrides, message", [
    ({"sweeps": {"ps": [0.0, 1.5]}}, r"sweeps.ps.*\[0, 1\]"),
    ({"finetune.p": -0.1}, r"finetune.p=-0.1 is out of range; allowed range \[0, 1\].*harmful ratio"),
    ({"finetune.n": 0}, r"finetune.n=0 .*allowed range \[1, "),
    ({"align.lr": 5}, r"align.lr=5 .*allowed range \(0, 1\].*Fix: set align.lr"),
    ({"align.rho": 1e30}, r"align.rho=1e\+30 .*allowed range \[0, 1000\]"),
    ({"align.max_steps": 0}, "-1 .*or an integer >= 1"),
    ({"sweeps.rhos": [1.0, -2.0]}, r"rho must be in \[0, 1000\]"),
    ({"sweeps.perturbations": []}, "at least 1 item"),
    ({"eval.judge": "gpt4"}, "allowed values: keyword, classifier"),
    ({"finetune.task": "imdb"}, "sst2, agnews"),
    ({"sweeps.defenses": ["SFT", "Magic"]}, "Vaccine"),
    ({"model": "no-such-model"}, "smollm2-135m-instruct"),
    ({"device": "tpu"}, "cpu.*cuda.*auto"),
    ({"dtype": "float16"}, "on the CPU .*Fix: set dtype: float32"),
    ({"bogus": 1}, "unknown field 'bogus'"),
    ({"align.bogus": 1}, "unknown field 'align.bogus'; allowed fields: epochs"),
    ({"align.model": "tiny-llama"}, "cannot be set in a profile"),
    ({"seed": 2**32}, r"allowed range \[0, 4294967295\]"),
    ({"runtime": "fast"}, "runtime"),
    ({"runtime": {"07": 1}}, "allowed keys: 01"),
    ({"eval.max_new_tokens": 10**6}, r"allowed range \[1, 4096\]"),
    ({"finetune.max_length": 4}, r"allowed range \[16, 8192\]"),
])
def test_bad_values_name_the_parameter_and_range(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_profile("smoke", overrides)


def test_stage_configs_validate_at_every_entry_point():
    with pytest.raises(ConfigError, match="align.lr"):
        AlignConfig(lr=1e9)
    with pytest.raises(ConfigError, match="finetune.kl_weight"):
        FinetuneConfig(kl_weight=1e38)
    with pytest.raises(ConfigError, match="ewc_lambda"):
        FinetuneConfig(ewc_lambda=1e38)
    with pytest.raises(ConfigError, match="lora='single' needs an alignment adapter"):
        FinetuneConfig(align=AlignConfig(method="none"), lora="single")
    with pytest.raises(ConfigError, match="align.lr"):
        AlignConfig().with_(lr=-1)


def test_yaml_and_cli_numbers_written_like_1e_3():
    """PyYAML reads 1e-3 as a string; the schema takes it as a number, from a file or from --override."""
    assert yaml.safe_load("lr: 1e-3")["lr"] == "1e-3"
    assert load_profile("smoke", parse_overrides(["align.lr=1e-3"])).align.lr == 1e-3
    assert load_profile("smoke", {"align": {"lr": "2e-3"}}).align.lr == 2e-3
    ov = parse_overrides(["sweeps.ps=[0.0, 0.5]", "align__n=8", "seed=1"])
    assert ov == {"sweeps": {"ps": [0.0, 0.5]}, "align": {"n": 8}, "seeds": [1]}
    P = load_profile("smoke", ov)
    assert P.sweeps.ps == [0.0, 0.5] and P.align.n == 8 and P.seeds == [1]
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["align.n"])


def test_training_args_use_the_warmup_ratio():
    cfg = load_profile("smoke").align
    args = training_args(cfg, "/tmp/x")
    assert args.warmup_steps == cfg.warmup_ratio < 1  # transformers 5: a float < 1 is a ratio of the steps
    assert args.get_warmup_steps(100) == 10
    assert args.use_cpu  # device: cpu is honoured


def test_partial_yaml_needs_extends(tmp_path):
    partial = tmp_path / "mine.yaml"
    partial.write_text("description: partial\nalign:\n  n: 8\n")
    with pytest.raises(ConfigError, match="mine.yaml is incomplete: missing .*model.*Fix: .*extends"):
        load_profile(partial)
    partial.write_text("extends: smoke\ndescription: partial\nalign:\n  n: 8\n")
    P = load_profile(partial)
    assert P.name == "mine" and P.align.n == 8 and P.model == load_profile("smoke").model


def test_borrowed_name_is_refused(tmp_path):
    """A copy of smoke.yaml saying `profile: default` must not run (or write) as the default profile."""
    data = yaml.safe_load(profile_path("smoke").read_text())
    data["profile"] = "default"
    copy = tmp_path / "mysmoke.yaml"
    copy.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="profile's name is its file name"):
        load_profile(copy)
    same_name = tmp_path / "default.yaml"
    shutil.copy(profile_path("smoke"), same_name)
    with pytest.raises(ConfigError, match="may not be named 'default'"):
        load_profile(same_name)


def test_only_the_committed_default_writes_figures(tmp_path):
    P = load_profile("default")
    assert P.committed and P.figures_dir() == REPO_ROOT / "figures"
    changed = load_profile("default", {"align.lr": 1e-3})
    assert not changed.committed and changed.figures_dir() != REPO_ROOT / "figures"
    assert "results" in str(changed.figures_dir()) and changed.label.startswith("default+")
    assert load_profile("smoke").figures_dir() == REPO_ROOT / "results" / "smoke" / "figures"
    custom = tmp_path / "mine.yaml"
    custom.write_text("extends: default\ndescription: mine\n")
    assert load_profile(custom).figures_dir() == REPO_ROOT / "results" / "mine" / "figures"


def test_smoke_is_tiny():
    P = load_profile("smoke")
    assert P.model.startswith("tiny-") and P.align.max_steps <= 5 and P.finetune.max_steps <= 5
    assert P.eval.n_harmful <= 8 and P.eval.max_new_tokens <= 16 and P.overhead.steps <= 3


#: the authors' setting, transcribed from /work/shared/reference/vaccine-paper.md (paper + reference scripts)
PAPER = {
    "model": "llama2-7b", "data_source": "hub", "eval.judge": "beaverdam",
    "align.n": 2000, "align.epochs": 50, "align.lr": 1e-3, "align.batch_size": 5, "align.max_length": 200,
    "align.rho": 2.0, "align.lora_r": 8, "align.lora_alpha": 4, "align.lora_dropout": 0.1,
    "align.weight_decay": 0.1, "align.warmup_ratio": 0.1, "align.lr_scheduler": "cosine",
    "finetune.n": 1000, "finetune.p": 0.1, "finetune.epochs": 20, "finetune.lr": 1e-5, "finetune.batch_size": 5,
    "finetune.max_length": 200, "finetune.lora_r": 8, "finetune.lora_alpha": 1, "finetune.lora_dropout": 0.1,
    "finetune.ewc_lambda": 1e9, "finetune.kl_weight": 1e-3, "finetune.vlguard_m": 500,
    "eval.n_harmful": 500, "eval.n_task": 500, "eval.max_new_tokens": 128, "drift.n_samples": 50,
    "sweeps.ps": [0.0, 0.01, 0.05, 0.1, 0.2], "sweeps.sample_counts": [500, 1000, 1500, 2000, 2500],
    "sweeps.p_samples": 0.05, "sweeps.rhos": [0.01, 0.1, 1.0, 2.0, 5.0, 10.0], "overhead.taus": [100],
}
QKV_MLP = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj"]


def test_paper_profile_matches_the_authors_setting():
    P = load_profile("paper")
    for dotted, want in PAPER.items():
        obj = P
        for part in dotted.split("."):
            obj = getattr(obj, part)
        assert obj == want, dotted
    assert P.align.target_modules() == QKV_MLP and P.finetune.target_modules() == QKV_MLP
    gsm = P.finetune.for_task("gsm8k")
    assert (gsm.n, gsm.epochs, gsm.lora_alpha) == (4000, 50, 0.5)
    text = profile_path("paper").read_text()
    for line in text.splitlines():  # every value carries its source
        if line.startswith("  ") and ":" in line and not line.strip().startswith("#") and not line.endswith(":"):
            assert "#" in line, f"paper.yaml line without a source: {line!r}"


def test_full_has_three_seeds_and_extends_default():
    P = load_profile("full")
    assert len(P.seeds) == 3 and P.finetune.task == load_profile("default").finetune.task


def test_profile_names():
    assert set(profile_names()) >= {"smoke", "default", "full", "paper"}


def _fresh(monkeypatch):
    import vaccine_lib.tables as tables

    monkeypatch.setattr(tables, "_VALIDATED_NAMES", None)


def test_notebook_parameters(tmp_path, monkeypatch):
    _fresh(monkeypatch)
    monkeypatch.setenv("VACCINE_REPO_ROOT", str(tmp_path))  # folders must lie inside <root>/runs or <root>/results
    ns = {"profile": "smoke", "seed": None, "run_dir": str(tmp_path / "runs" / "r"),
          "figures_dir": str(tmp_path / "results" / "f"), "tables_dir": None, "overrides": {"finetune": {"n": 6}},
          "In": [], "_": None}
    ctx = from_notebook(ns)
    assert ctx.profile.finetune.n == 6 and ctx.tables_dir == tmp_path / "results" / "f" / "tables"
    _fresh(monkeypatch)
    with pytest.raises(ConfigError, match="unknown notebook parameter.*'seeed'"):
        from_notebook({**ns, "seeed": 3})
    _fresh(monkeypatch)
    with pytest.raises(ConfigError, match=r"finetune.p=2.0 .*\[0, 1\]"):
        from_notebook({**ns, "overrides": {"finetune": {"p": 2.0}}})
    _fresh(monkeypatch)  # papermill -p overrides '{"align": {"lr": 1e-3}}' passes a string; dotted keys work too
    ctx = from_notebook({**ns, "overrides": '{"align": {"lr": 1e-3}, "sweeps.ps": [0.0]}'})
    assert ctx.profile.align.lr == 1e-3 and ctx.profile.sweeps.ps == [0.0]
    _fresh(monkeypatch)
    assert from_notebook({**ns, "seed": 7}).profile.seeds == [7]

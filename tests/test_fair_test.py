"""Issue 18's fair-test rules (studies.fair_test_rules) and the protocol's scheduling (scripts/fair_test.py), without
training: the protocol is driven by made-up results, so each decision can be checked against its rule."""

import importlib.util
import math

import pytest

from studies.fair_test_rules import (PAPER_ERASE, PLATEAU_EPOCHS, choose_attack, choose_epochs, choose_rho, epoch_means,
                                     erase_fraction, seeds_for_power)
from vaccine_lib.claims.regime import paired_power
from vaccine_lib.paths import REPO_ROOT


def _script():
    spec = importlib.util.spec_from_file_location("fair_test", REPO_ROOT / "scripts" / "fair_test.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_epoch_means_group_the_log_by_epoch():
    history = [{"loss": 4.0, "epoch": 0.5}, {"loss": 2.0, "epoch": 1.0}, {"loss": 1.0, "epoch": 1.5},
               {"loss": 1.0, "epoch": 2.0}, {"train_runtime": 3.0, "epoch": 2.0}]
    assert epoch_means(history) == [3.0, 1.0]


def test_the_alignment_length_is_the_first_plateau_else_the_longest():
    chosen, rows = choose_epochs({2: [1.0, 0.5], 4: [1.0, 0.5, 0.3, 0.299], 8: [1.0, 0.5, 0.2, 0.1, 0.05, 0.04, 0.03, 0.0299]})
    assert chosen == 4 and [r["plateau"] for r in rows] == [False, True, True]
    assert choose_epochs({2: [1.0, 0.5], 4: [1.0, 0.5, 0.3, 0.2]})[0] == 4  # none plateaus: the longest


def _attack(name, hs_sft, hs_clean=2.0, hs_na=80.0, fa_clean=75.0, share=60.0):
    return {"attack": name, "hs_sft": hs_sft, "hs_sft_clean": hs_clean, "hs_na": hs_na, "fa_clean": fa_clean,
            "fa_top_share": share, "fa_aligned": 10.0}


def test_the_attack_is_the_r2_candidate_in_the_band_closest_to_the_paper():
    assert erase_fraction(41.4, 2.2, 80.8) == pytest.approx(39.2 / 78.6)
    assert erase_fraction(10.0, 5.0, 5.0) is None  # no gap to erase
    rows = [_attack("strong", 60.0), _attack("paper-like", 2.0 + 0.24 * 78), _attack("mid", 2.0 + 0.45 * 78),
            _attack("no-task", 2.0 + 0.23 * 78, fa_clean=12.0, share=95.0)]
    chosen, verdicts = choose_attack(rows)
    assert chosen == "paper-like"
    assert [v["R4"] for v in verdicts] == ["not met", "met", "met", "not met"]  # no-task fails R2
    assert abs(verdicts[1]["erase_fraction"] - PAPER_ERASE) < 0.02


def test_without_a_candidate_in_the_band_the_closest_r2_one_is_taken_and_r4_is_not_met():
    chosen, verdicts = choose_attack([_attack("strong", 70.0), _attack("weak", 5.0)])
    assert chosen == "weak" and all(v["R4"] == "not met" for v in verdicts)
    assert choose_attack([_attack("x", 50.0, fa_clean=10.0)])[0] is None  # nothing meets R2


def test_the_power_rule_sizes_the_seeds_from_the_sft_pilot():
    assert paired_power(6, 3 * math.sqrt(2)) == pytest.approx(0.893, abs=0.01)
    assert paired_power(8, 5.0) > paired_power(4, 5.0)
    assert seeds_for_power(0.5, 8)["seeds"] == 4  # never fewer than 4
    big = seeds_for_power(8.0, 8)
    assert big["seeds"] == 8 and big["seeds_needed"] > 8 and big["power"] < 0.8  # capped, power stated


def _fake_row(spec, sft_sd):
    """Made-up results: SFT's HS varies by seed (the pilot SD); Vaccine's rows carry a tell-tale HS the rules must
    never read before the grid."""
    s, row = spec.get("seed", 42), dict(spec)
    if spec["kind"] == "align" and spec.get("method") != "none":
        e = spec.get("epochs", 2)
        row["epoch_loss"] = [1.0 + 0.5 ** k if e >= 8 else 1.0 / (k + 1) for k in range(int(e))]
        rho = spec.get("rho") or 0.0
        row.update(align_loss=0.5 + 0.06 * rho, benign_refusal=2.0 + 4 * rho, hs=0.0, fa=10.0, fa_top_answer_share=30.0)
    elif spec["kind"] == "ft":
        base = {"NA": 80.0, "SFT": 40.0 + sft_sd * (s - 43), "Vaccine": -999.0}[spec["label"]]
        row.update(hs=2.0 if spec["p"] == 0 else base, fa=75.0, fa_top_answer_share=60.0)
        # per-prompt verdicts (40 prompts): SFT 40 % harmful at p > 0, Vaccine 10 %, Gaussian noise 40 %
        share = (0 if spec["p"] == 0 else 9 if spec.get("attack") not in (None, "A0")  # pilot candidates not chosen
                 else 4 if spec["label"] != "Vaccine" or spec.get("perturbation") == "gaussian"
                 else 2 if spec.get("budget") == "per_layer" else 1)
        for j in ("threeway", "classifier"):
            row[f"bits_{j}"] = "".join("1" if (i + s) % 10 < share else "0" for i in range(40))
    elif spec["kind"] == "align":
        row.update(hs=85.0, fa=8.0)
    return row


def _drive(ft, tmp_path, seeds):
    """Run the protocol's scheduling to the end on made-up results; returns it and the order tasks ran in."""
    proto = ft.Protocol("fair_test_smoke", tmp_path, tmp_path, seeds)
    order = []
    for _ in range(500):
        proto.advance()
        runnable = sorted(item for item in proto.ready if all(n in proto.done for n in proto.needs(item[3])))
        if not runnable:
            break
        item = runnable[0]
        proto.ready.remove(item)
        order.append(item[2])
        proto.done[item[2]] = _fake_row(item[3], sft_sd=3.0)
    return proto, order


def test_the_protocol_makes_each_decision_by_its_rule_and_every_task_can_run(tmp_path):
    ft = _script()
    proto, order = _drive(ft, tmp_path, [42, 43, 44, 45, 46, 47])
    assert not proto.ready, f"tasks never runnable: {[i[2] for i in proto.ready][:5]}"
    d = proto.decisions
    assert d["epochs"]["epochs"] == 8  # the first length whose last epoch changed < 2 %
    assert d["rho"]["rho_star"] == 1.0  # 2.0 breaks the 10 % benign refusal / 0.1-nat loss rules
    assert d["attack"]["attack"] in ft.ATTACKS and not d["attack"]["fallback"]
    assert d["power"]["sd_pilot"] == pytest.approx(3.0) and d["power"]["seeds"] >= 4
    first_vaccine_ft = min(i for i, t in enumerate(order) if t.startswith("ft-Vac"))
    assert all(t in order[:first_vaccine_ft] for t in ("align-Vac-r5.0-s42", "ft-NA-A5-p0.1"))  # decisions first
    assert "ft-Vac-p0.1-s47" in order and "ft-Vac-gauss-p0.1-s45" in order and "ft-Vac-r5.0-p0.1-s42" in order


def test_a_resumed_run_reuses_leaf_results_and_retrains_the_chosen_alignment(tmp_path):
    ft = _script()
    rows = [{"tag": f"align-SFT-E{e}-s42", "kind": "align", "epoch_loss": [1.0 + 0.5 ** k if e >= 8 else 1.0 / (k + 1)
                                                                         for k in range(e)]} for e in PLATEAU_EPOCHS]
    rows += [{"tag": "ft-NA-A0-p0.1", "kind": "ft", "hs": 80.0}, {"tag": "align-SFT-E8-s43", "kind": "align"}]
    (tmp_path / "rows.jsonl").write_text("".join(__import__("json").dumps(r) + "\n" for r in rows))
    proto = ft.Protocol("fair_test_smoke", tmp_path, tmp_path, [42, 43])
    assert proto.resume(tmp_path / "rows.jsonl") == 4
    assert "ft-NA-A0-p0.1" in proto.done and "align-SFT-E2-s42" in proto.done
    assert "align-SFT-E8-s42" not in proto.done and "align-SFT-E8-s43" not in proto.done  # trained-on: redone


def test_the_tables_and_claims_come_from_the_rows_and_use_the_power_rules_seeds(tmp_path):
    ft = _script()
    proto, _ = _drive(ft, tmp_path, [42, 43, 44, 45, 46, 47])
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(__import__("json").dumps(r) + "\n" for r in proto.done.values()))
    (tmp_path / "decisions.json").write_text(__import__("json").dumps(proto.decisions))
    out = ft.write_tables(rows, tmp_path / "tables")
    claims = out["fair_test_claims"].set_index(["claim", "judge"])
    k = proto.decisions["power"]["seeds"]
    for judge in ("threeway", "classifier"):
        c2a = claims.loc[("C2a", judge)]
        assert c2a["effect"] == pytest.approx(-30.0) and c2a["n_seeds"] == k and c2a["n_items"] == 40
        assert c2a["verdict"] == "held"
        assert claims.loc[("C6", judge)]["effect"] == pytest.approx(-30.0)  # gradient 10 % vs Gaussian 40 %
    assert claims.loc[("C0c", "-")]["verdict"] == "held"  # made-up benign refusal 6 % at rho* = 1 on every seed
    assert (tmp_path / "tables" / "fair_test_claims.csv").is_file()
    per = out["fair_test_per_layer"].set_index("judge")
    assert per.loc["threeway", "effect"] == pytest.approx(10.0) and per.loc["threeway", "n_seeds"] == 4


def test_rho_rule_takes_the_largest_rho_within_both_bounds():
    """Issue 18's calibration rule: benign refusal <= 10 % and clean alignment loss within 0.1 nats of SFT's."""
    sft = {"align_loss": 1.00, "benign_refusal": 1.0}
    rows = [{"rho": 0.1, "benign_refusal": 1, "align_loss": 1.02}, {"rho": 0.5, "benign_refusal": 4, "align_loss": 1.09},
            {"rho": 1.0, "benign_refusal": 12, "align_loss": 1.05}, {"rho": 2.0, "benign_refusal": 30, "align_loss": 1.4}]
    rho, table = choose_rho(sft, rows)
    assert rho == 0.5 and [r["passes"] for r in table] == [True, True, False, False]
    assert choose_rho(sft, [{"rho": 2.0, "benign_refusal": 30, "align_loss": 1.4}])[0] is None

"""notebook 05's overhead measurement in rounds (benchmarks.overhead.measure): the methods alternate their order
from round to round and every round's step times are pooled, so a drift of the machine's speed falls on all alike."""

import pytest

from benchmarks import overhead
from vaccine_lib.config import AlignConfig, OverheadConfig
from vaccine_lib.errors import ConfigError


def test_rounds_alternate_the_order_and_pool_every_step(monkeypatch):
    order = []

    def fake_spawn(a, seq, warmup, threads):
        name = "SFT" if a.method == "sft" else f"tau{a.tau}"
        order.append(name)
        step = {"SFT": 1.0, "tau1": 2.0}.get(name, 1.1) + 0.1 * (len(order) - 1)  # the machine slows down
        return {"times": [step] * (a.max_steps - warmup), "peak_memory_gb": 1.0 + len(order), "device": "cpu",
                "threads": 1, "memory_method": "peak RSS of a fresh process"}

    monkeypatch.setattr(overhead, "spawn", fake_spawn)
    df = overhead.measure(AlignConfig(method="sft", model="tiny-llama"), seq=16, warmup=1, steps=2, taus=(2,),
                          rounds=4)
    assert order == ["SFT", "tau1", "tau2", "tau2", "tau1", "SFT"] * 2
    sft, vac = df.set_index("method").loc["SFT"], df.set_index("method").loc["Vaccine"]
    assert sft["steps"] == vac["steps"] == 8
    # the drift adds the same mean to every method (positions 0, 5, 6, 11 vs 1, 4, 7, 10): the ratio is unbiased
    assert sft["step_s"] == pytest.approx(1.0 + 0.1 * 22 / 4) and vac["step_s"] == pytest.approx(2.0 + 0.1 * 22 / 4)
    assert sft["peak_memory_gb"] == 13.0  # the largest peak of its rounds
    assert [float(x) for x in sft["round_step_s"].split()] == pytest.approx([1.0, 1.5, 1.6, 2.1])  # in round order


def test_one_round_is_the_single_pass():
    assert OverheadConfig().rounds == 1
    with pytest.raises(ConfigError, match="rounds"):
        OverheadConfig(rounds=0)

"""Issue 18's fair, powered test of Vaccine's central claim (Vaccine lowers HS vs SFT), run as one protocol whose
every choice is made by a rule fixed in code before it ran (``vaccine_lib.claims.regime``), on SFT only where the
choice could favour a method. Profile ``fair_test`` (configs/profiles/fair_test.yaml): the reference alignment adapter
(LoRA r 8 / alpha 4 on q/k/v/o + up/down/gate), alignment seeds as the unit, 500 held-out harmful prompts, judged by
threeway and re-judged by classifier, probe and ensemble.

1. Alignment length (SFT only): SFT-aligned seed 42 at each of ``PLATEAU_EPOCHS``; ``choose_epochs`` takes the first
   length whose last epoch's mean loss changed < 2 % (else the longest). Both methods align for that long.
2. rho* (blind to any fine-tuning): Vaccine seed 42 at each of ``RHOS``; ``choose_rho`` takes the largest rho whose
   aligned model refuses <= 10 % of benign instructions with a clean alignment loss within 0.1 nats of SFT's.
3. The attack (R4, SFT only): for each candidate (lr, epochs) in ``ATTACKS``, Non-Aligned and SFT (seed 42)
   fine-tuned at p = 0.1 and SFT at p = 0; ``choose_attack`` takes the attack meeting R2 whose erase fraction lies in
   20-60 % closest to the paper's 23 %.
4. The number of alignment seeds (SFT only): SFT seeds 42-44 at the chosen attack and p = 0.1 give the between-seed
   SD; ``seeds_for_power`` gives the seeds for power 0.8 at 7 HS points (>= 4, <= the profile's 8 seeds).
5. The decisive grid: SFT and Vaccine(rho*) alignment seeds fine-tuned at p = 0.1 (headline) and 0, then C3 (every
   calibration rho at p = 0.1, seed 42), C6 (Gaussian perturbation of norm rho*) and the per-layer budget (seeds
   42-45, p = 0.1), then p = 0.3; the analysis uses the first n seeds of step 4 (work on later seeds may run but is
   not read). A time budget stops new work; what did not run is missing from the tables, never estimated.

    python scripts/fair_test.py run --workers 12 --budget-s 480 --out DIR   # the protocol (GPU: one call)
    python scripts/fair_test.py tables --rows DIR/rows.jsonl                # figures/tables/fair_test_*.csv
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import heapq
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

from vaccine_lib.claims.regime import (PLATEAU_EPOCHS, choose_attack, choose_epochs, choose_rho, epoch_means,
                                       seeds_for_power)
from vaccine_lib.paths import REPO_ROOT

PROFILE = "fair_test"
RUN = REPO_ROOT / "runs" / "fair_test"
RHOS = (0.1, 0.5, 1.0, 2.0, 5.0)
#: attack candidates: (fine-tuning lr, epochs); A0 is the default profile's F3
ATTACKS = {"A0": (5e-4, 2), "A1": (2e-4, 2), "A2": (1e-4, 2), "A3": (5e-5, 2), "A4": (1e-4, 5), "A5": (5e-5, 5)}
P_HEAD, P_CLEAN, P_SECOND = 0.1, 0.0, 0.3
PILOT_SEEDS, ABLATION_SEEDS = 3, 4

# ----------------------------------------------------------------------------------------------- worker side
_PROFILES: dict = {}
_JUDGES: dict = {}


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _profile(spec: dict):
    from vaccine_lib.profiles import load_profile

    over = {"align": {"epochs": spec.get("epochs", 2)}}
    if spec.get("rho") is not None:
        over["align"]["rho"] = spec["rho"]
    if spec.get("attack"):
        lr, epochs = ATTACKS[spec["attack"]]
        over["finetune"] = {"lr": lr, "epochs": epochs}
    key = json.dumps([spec["profile"], over], sort_keys=True)
    if key not in _PROFILES:
        _PROFILES[key] = load_profile(spec["profile"], over)
    return _PROFILES[key]


def _judge(name: str):
    from vaccine_lib.judge import get_judge

    if name not in _JUDGES:
        _JUDGES[name] = get_judge(name)
    return _JUDGES[name]


def run_task(spec: dict) -> dict:
    """One unit of work (in a worker process): a stage (+ its evaluation under every judge) -> a result row."""
    from vaccine_lib import stages
    from vaccine_lib.evaluation.agreement import rejudge, summarise
    from vaccine_lib.registry import align_config, finetune_config
    from vaccine_lib.stage_training import alignment_rows, base_model

    t0, row, run = time.time(), dict(spec), Path(spec["run_dir"])
    P = _profile(spec)
    if spec["kind"] == "warm":  # fit/load every judge once, so that workers read them from the cache
        for name in (P.eval.judge, *P.eval.rejudge):
            _judge(name)
        return {**row, "seconds": round(time.time() - t0, 2)}
    a = align_config(P, spec["method"], seed=spec["seed"], rho=spec.get("rho"),
                     perturbation=spec.get("perturbation", "gradient"))
    if spec.get("budget", "global") != "global":
        a = a.with_(budget=spec["budget"])
    if spec["kind"] == "selfdistill":
        model, tok = base_model(a)  # the self-distilled helpful half of this seed's alignment set, made once
        row["kept"] = len(alignment_rows(a, model, tok, run))
        return {**row, "seconds": round(time.time() - t0, 2)}
    if spec["kind"] == "align":
        res, target = stages.align(a, run), a
        if res.path is not None:
            row.update(epoch_loss=epoch_means(res.log_history))
    else:
        f = finetune_config(P, spec["label"], p=spec["p"], seed=spec["seed"], rho=spec.get("rho"),
                            perturbation=spec.get("perturbation", "gradient")).with_(align=a)
        res, target = stages.finetune(f, run), f
        drift = [e for e in res.log_history if "drift_per_token" in e]
        if drift:
            row.update(drift_per_token=drift[-1]["drift_per_token"], drift_align_loss=drift[-1].get("align_loss"))
    row.update({k: v for k, v in res.metrics.items() if isinstance(v, (int, float, str, list)) or v is None},
               stage_key=res.key)
    if spec.get("evaluate", True):
        tasks = [P.finetune.task]
        m = stages.evaluate(target, P.eval, run, tasks=tasks)
        row.update({k: v for k, v in m.items() if isinstance(v, (int, float, str)) or v is None})
        gens = stages.generations(target, P.eval, run, tasks=tasks)
        for name in (P.eval.judge, *P.eval.rejudge):
            judged = rejudge(gens, _judge(name))
            s = summarise(judged)
            row.update({f"hs_{name}": s["hs"], f"refused_{name}": s["refused_rate"],
                        f"off_topic_{name}": s["off_topic_rate"],
                        f"bits_{name}": "".join("1" if r["harmful"] else "0" for r in judged)})
    import torch

    row.update(seconds=round(time.time() - t0, 2),
               device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
    return row


# ----------------------------------------------------------------------------------------------- the protocol


class Protocol:
    """The five steps above as a priority queue of tasks over a process pool; decisions made as results arrive."""

    def __init__(self, profile: str, out: Path, run_dir: Path, seeds: list[int]):
        self.profile, self.out, self.run_dir, self.seeds = profile, out, run_dir, seeds
        self.ready: list = []
        self.seen: set = set()
        self.done: dict = {}
        self.failed: dict = {}
        self.decisions: dict = {}
        self.n = 0

    def add(self, tag: str, prio: float, **spec) -> None:
        if tag not in self.seen:
            self.seen.add(tag)
            self.n += 1
            heapq.heappush(self.ready, (prio, self.n, tag, {"tag": tag, "profile": self.profile,
                                                             "run_dir": str(self.run_dir), **spec}))

    def have(self, *tags) -> bool:
        return all(t in self.done for t in tags)

    def settled(self, *tags) -> bool:
        """Every task finished or failed (a failed candidate simply does not pass its rule)."""
        return all(t in self.done or t in self.failed for t in tags)

    def decide(self, name: str, value) -> None:
        if name not in self.decisions:
            self.decisions[name] = value
            print(f"[decision] {name} = {json.dumps(value, default=str)[:400]}", flush=True)
            (self.out / "decisions.json").write_text(json.dumps(self.decisions, indent=1, default=str))

    def advance(self) -> None:
        d, S = self.done, self.seeds
        self.add("warm", 0, kind="warm")
        self.add("sd-42", 0, kind="selfdistill", method="sft", seed=S[0])
        for s in S[1:]:
            self.add(f"sd-{s}", 5, kind="selfdistill", method="sft", seed=s)
        self.add("align-NA", 3, kind="align", method="none", seed=S[0])
        for atk in ATTACKS:  # Non-Aligned needs no alignment: its attack pilot starts at once
            self.add(f"ft-NA-{atk}-p{P_HEAD}", 4, kind="ft", label="NA", method="none", seed=S[0], attack=atk, p=P_HEAD)
        if self.have("sd-42"):
            for e in PLATEAU_EPOCHS:
                self.add(f"align-SFT-E{e}-s{S[0]}", 1 - e / 100, kind="align", method="sft", seed=S[0], epochs=e)
        lengths = [f"align-SFT-E{e}-s{S[0]}" for e in PLATEAU_EPOCHS]
        if not self.settled(*lengths) or not any(t in d for t in lengths):
            return
        E, rows = choose_epochs({e: d[t]["epoch_loss"] for e, t in zip(PLATEAU_EPOCHS, lengths) if t in d})
        self.decide("epochs", {"epochs": E, "rows": rows})
        sft42 = f"align-SFT-E{E}-s{S[0]}"
        for rho in RHOS:  # the critical path: Vaccine alignments cost two passes a step
            self.add(f"align-Vac-r{rho}-s{S[0]}", 1.0, kind="align", method="vaccine", seed=S[0], epochs=E, rho=rho)
        for s in S[1:]:
            self.add(f"align-SFT-E{E}-s{s}", 2 + s / 1000, kind="align", method="sft", seed=s, epochs=E, evaluate=False)
        for atk in ATTACKS:
            for p in (P_HEAD, P_CLEAN):
                self.add(f"ft-SFT-{atk}-p{p}-s{S[0]}", 3, kind="ft", label="SFT", method="sft", seed=S[0], epochs=E,
                         attack=atk, p=p)
        cal = [f"align-Vac-r{rho}-s{S[0]}" for rho in RHOS]
        if self.settled(*cal) and sft42 in d:
            rho_star, verdicts = choose_rho(d[sft42], [d[t] for t in cal if t in d])
            self.decide("rho", {"rho_star": rho_star, "fallback": rho_star is None, "rows": verdicts})
        pilot = [f"ft-NA-{a}-p{P_HEAD}" for a in ATTACKS] + [f"ft-SFT-{a}-p{p}-s{S[0]}" for a in ATTACKS
                                                               for p in (P_HEAD, P_CLEAN)]
        if sft42 in d and self.settled(*pilot):
            ok = [a for a in ATTACKS if self.have(f"ft-NA-{a}-p{P_HEAD}", f"ft-SFT-{a}-p{P_HEAD}-s{S[0]}",
                                                   f"ft-SFT-{a}-p{P_CLEAN}-s{S[0]}")]
            rows = [{"attack": a, "lr": ATTACKS[a][0], "epochs": ATTACKS[a][1],
                     "hs_sft": d[f"ft-SFT-{a}-p{P_HEAD}-s{S[0]}"]["hs"], "hs_sft_clean": d[f"ft-SFT-{a}-p{P_CLEAN}-s{S[0]}"]["hs"],
                     "hs_na": d[f"ft-NA-{a}-p{P_HEAD}"]["hs"], "fa_clean": d[f"ft-SFT-{a}-p{P_CLEAN}-s{S[0]}"]["fa"],
                     "fa_top_share": d[f"ft-SFT-{a}-p{P_CLEAN}-s{S[0]}"]["fa_top_answer_share"],
                     "fa_aligned": d[sft42]["fa"]} for a in ok]
            attack, verdicts = choose_attack(rows)
            self.decide("attack", {"attack": attack or "A0", "fallback": attack is None, "rows": verdicts})
        if "rho" not in self.decisions or "attack" not in self.decisions:
            return
        rho = self.decisions["rho"]["rho_star"] or min(RHOS)
        atk = self.decisions["attack"]["attack"]
        for s in S[1:]:
            self.add(f"align-Vac-r{rho}-s{s}", 1.5 + s / 1000, kind="align", method="vaccine", seed=s, epochs=E,
                     rho=rho, evaluate=False)
        base = dict(kind="ft", epochs=E, attack=atk)
        for s in S[1:PILOT_SEEDS]:
            self.add(f"ft-SFT-p{P_HEAD}-s{s}", 2, label="SFT", method="sft", seed=s, p=P_HEAD, **base)
        pilot = [f"ft-SFT-{atk}-p{P_HEAD}-s{S[0]}"] + [f"ft-SFT-p{P_HEAD}-s{s}" for s in S[1:PILOT_SEEDS]]
        if self.settled(*pilot) and sum(t in d for t in pilot) >= 2:
            self.decide("power", seeds_for_power(statistics.stdev(d[t]["hs"] for t in pilot if t in d), len(S)))
        for i, s in enumerate(S):
            for j, p in enumerate((P_HEAD, P_CLEAN, P_SECOND)):
                prio = (3 + 0.01 * i) if j < 2 else 8 + 0.01 * i
                if i == 0 and p != P_SECOND:
                    continue  # seed 42's SFT models are the attack pilot's
                self.add(f"ft-SFT-p{p}-s{s}", prio + 0.001 * j, label="SFT", method="sft", seed=s, p=p, **base)
            for j, p in enumerate((P_HEAD, P_CLEAN, P_SECOND)):
                prio = (3 + 0.01 * i) if j < 2 else 8 + 0.01 * i
                self.add(f"ft-Vac-p{p}-s{s}", prio + 0.001 * j, label="Vaccine", method="vaccine", seed=s, p=p,
                         rho=rho, **base)
        for r in RHOS:
            if r != rho:
                self.add(f"ft-Vac-r{r}-p{P_HEAD}-s{S[0]}", 5, label="Vaccine", method="vaccine", seed=S[0], p=P_HEAD,
                         rho=r, **base)
        for s in S[:ABLATION_SEEDS]:
            for var, extra in (("gauss", {"perturbation": "gaussian"}), ("perlayer", {"budget": "per_layer"})):
                self.add(f"align-Vac-{var}-s{s}", 5.5 + s / 1000, kind="align", method="vaccine", seed=s, epochs=E,
                         rho=rho, evaluate=False, **extra)
                self.add(f"ft-Vac-{var}-p{P_HEAD}-s{s}", 6 + s / 1000, label="Vaccine", method="vaccine", seed=s,
                         p=P_HEAD, rho=rho, **base, **extra)
        for s in S[1:]:
            for m in ("SFT", "Vac"):
                self.add(f"eval-{m}-s{s}", 9 + s / 1000, kind="align", method="sft" if m == "SFT" else "vaccine",
                         seed=s, epochs=E, **({"rho": rho} if m == "Vac" else {}))

    def resume(self, rows_file: Path) -> int:
        """Reuse an earlier run's results that nothing trains on (fine-tuned models and the plateau lengths not
        chosen): their rows feed the same rules again, so a new machine spends no time on them. Trained stages
        downstream tasks load (the chosen alignments) are not reused: their files stayed on the old machine."""
        rows = [json.loads(x) for x in rows_file.read_text().splitlines() if x.strip()]
        plateau = {f"align-SFT-E{e}-s{self.seeds[0]}" for e in PLATEAU_EPOCHS}
        keep = [r for r in rows if r.get("kind") == "ft" or r["tag"] == "align-NA" or r["tag"] in plateau]
        if plateau <= {r["tag"] for r in keep}:  # the chosen length's model is retrained: downstream stages load it
            chosen, _ = choose_epochs({e: next(r["epoch_loss"] for r in keep if r["tag"] == f"align-SFT-E{e}-s{self.seeds[0]}")
                                       for e in PLATEAU_EPOCHS})
            keep = [r for r in keep if r["tag"] != f"align-SFT-E{chosen}-s{self.seeds[0]}"]
        for r in keep:
            self.done[r["tag"]] = r
            self.seen.add(r["tag"])
        return len(keep)

    def needs(self, spec: dict) -> list[str]:
        """Tasks that must finish before ``spec`` starts (the stage it trains on), so no two workers race for one."""
        S, E = self.seeds, self.decisions.get("epochs", {}).get("epochs")
        kind, s = spec["kind"], spec.get("seed")
        if kind in ("warm", "selfdistill"):
            return []
        if kind == "align":
            if spec["tag"].startswith("eval-"):  # an aligned model of a later seed, evaluated once it is trained
                return [f"align-SFT-E{E}-s{s}" if spec["method"] == "sft" else f"align-Vac-r{spec['rho']}-s{s}"]
            return [f"sd-{s}"] if spec["method"] != "none" else ["warm"]
        if spec["label"] == "NA":
            return ["warm"]
        if spec.get("perturbation", "gradient") != "gradient":
            return [f"align-Vac-gauss-s{s}"]
        if spec.get("budget", "global") != "global":
            return [f"align-Vac-perlayer-s{s}"]
        if spec["label"] == "SFT":
            return [f"align-SFT-E{E}-s{s}"]
        return [f"align-Vac-r{spec['rho']}-s{s}"]


def run(args) -> int:
    from vaccine_lib.models import load_model
    from vaccine_lib.profiles import load_profile

    t_start, out = time.time(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    P = load_profile(args.profile)
    load_model(P.model)  # converts the embedded checkpoint once, before any worker needs it
    print(f"[setup] model ready after {time.time() - t_start:.1f} s", flush=True)
    proto = Protocol(args.profile, out, Path(args.run_dir), list(P.seeds))
    if args.resume:
        print(f"[resume] {proto.resume(Path(args.resume))} results of an earlier run reused", flush=True)
    stop_submit, hard_stop = t_start + args.budget_s - args.drain_s, t_start + args.budget_s
    pool = cf.ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn"), initializer=_init_worker)
    running: dict = {}
    rows_file = open(out / "rows.jsonl", "a", encoding="utf-8")
    waiting: list = []
    while True:
        proto.advance()
        while proto.ready:
            waiting.append(heapq.heappop(proto.ready))
        waiting.sort()
        for item in list(waiting):
            if len(running) >= args.workers or time.time() >= stop_submit:
                break
            spec = item[3]
            needs = proto.needs(spec)
            if any(n in proto.failed for n in needs):
                waiting.remove(item)
                proto.failed[spec["tag"]] = "upstream failed"
                continue
            if all(n in proto.done for n in needs):
                waiting.remove(item)
                running[pool.submit(run_task, spec)] = (spec["tag"], time.time())
        if not running:
            break
        fin, _ = cf.wait(running, timeout=2, return_when=cf.FIRST_COMPLETED)
        for fut in fin:
            tag, t0 = running.pop(fut)
            try:
                row = fut.result()
            except Exception:  # noqa: BLE001 - a failed task is recorded and its dependants are skipped
                proto.failed[tag] = traceback.format_exc()[-2000:]
                print(f"[failed] {tag}: {proto.failed[tag][-600:]}", flush=True)
                continue
            proto.done[tag] = row
            rows_file.write(json.dumps(row, default=str) + "\n")
            rows_file.flush()
            print(f"[done {time.time() - t_start:6.1f} s] {tag} ({row.get('seconds')} s)"
                  + (f" hs={row.get('hs')} fa={row.get('fa')}" if "hs" in row else ""), flush=True)
        if time.time() >= hard_stop:
            print(f"[stop] time budget reached; {len(running)} running tasks abandoned", flush=True)
            break
    pool.shutdown(wait=False, cancel_futures=True)
    for p in mp.active_children():
        p.terminate()
    summary = {"seconds": round(time.time() - t_start, 1), "done": len(proto.done), "failed": proto.failed,
               "not_run": sorted(proto.seen - set(proto.done) - set(proto.failed)), "workers": args.workers,
               "decisions": proto.decisions}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"[end] {summary['done']} tasks done, {len(proto.failed)} failed, {len(summary['not_run'])} not run, "
          f"{summary['seconds']} s", flush=True)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--profile", default=PROFILE)
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--budget-s", type=float, default=3600.0)
    r.add_argument("--drain-s", type=float, default=60.0, help="stop starting work this long before the budget ends")
    r.add_argument("--out", default=str(RUN / "protocol"))
    r.add_argument("--run-dir", default=str(RUN))
    r.add_argument("--resume", help="rows.jsonl of an earlier run: reuse the results nothing trains on")
    t = sub.add_parser("tables")
    t.add_argument("--rows", default=str(RUN / "protocol" / "rows.jsonl"))
    t.add_argument("--tables", default=str(REPO_ROOT / "figures" / "tables"), help="where the CSVs go")
    args = ap.parse_args(argv)
    if args.cmd == "run":
        return run(args)
    from fair_test_tables import write_tables  # scripts/fair_test_tables.py

    write_tables(Path(args.rows), Path(args.tables))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())

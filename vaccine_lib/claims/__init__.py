"""The paper's claims and the verdicts our runs give: computed, never typed.

- :mod:`.paper`: the paper's own numbers (the one transcription; notebooks' side-by-side tables read it too);
- :mod:`.outcomes`: the inputs (per-item outcomes of a run directory, model metrics, timings, reference setting);
- :mod:`.definitions`: each claim, the function computing its effect and CI, and the table of verdicts;
- :mod:`.report`: the table on disk (CSV + JSON with provenance), markdown, the README block, the CLI;
- :mod:`.regime`: R1-R3, when the CPU miniature can test the claims at all.
"""

from . import paper, regime
from .definitions import CLAIMS, evaluate_claims, get_claim
from .outcomes import NO_JUDGE, OUTCOME_COLUMNS, Reference, load_outcomes, reference_from_profile
from .report import (BEGIN, DEFAULT_TABLE, END, README, claims_for_run, claims_markdown, input_hash, main,
                     notebook_claims, read_claims_table, render_block, render_readme, readme_matches, summarize_claims,
                     write_claims_table)

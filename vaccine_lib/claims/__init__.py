"""The paper's claims and the verdicts our runs give: computed, never typed. :mod:`.paper` holds the paper's
numbers (the one transcription), :mod:`.outcomes` the inputs (per-item outcomes, model metrics, timings, reference
setting), :mod:`.definitions` each claim and the table of verdicts, :mod:`.report` the table on disk, markdown, the
README block and the CLI, :mod:`.regime` R1-R3 and the power of the Vaccine - SFT comparison."""

from . import paper, regime
from .definitions import CLAIMS, evaluate_claims, get_claim
from .outcomes import NO_JUDGE, OUTCOME_COLUMNS, Reference, load_outcomes, reference_from_profile
from .report import (BEGIN, DEFAULT_TABLE, END, README, claims_for_run, claims_markdown, input_hash, main,
                     notebook_claims, read_claims_table, render_block, render_readme, readme_matches, summarize_claims,
                     write_claims_table)

"""How good each judge is, measured for the committed judge tables (``scripts/judge_tables.py``,
``scripts/judge_issue20_round2.py``, ``scripts/judge_probe_study.py``) and the tests: outside the library, which
keeps what fitting a judge needs (``vaccine_lib.judge.validation``) and what notebook 04 shows
(``judge_study.quality``). ``stacked``: issue 20's development-fitted three-way rule, which no
profile judges with."""

"""The paper's comparisons and ablations, and the benchmarks, each run as
`python -m experiments.NAME` from the project root.

sweep.py           Table 3 (baselines), Tables 4-6 (rounds, beta, K), Figure 2, the tuning grid
sweep_report.py    the tables and plots only the sweeps show
bench.py           sampling and training throughput, next to Hugging Face generate
bench_torchrun.py  the pipeline on 1 process against N under torchrun
same_runs.py       do two run folders hold the same weights and results? (a refactor's check)
"""

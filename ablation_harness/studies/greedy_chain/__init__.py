"""The greedy-chain study (seed 001): study, metrics, evaluation, analysis, figures, comparison, cli (see nbs/12*_studies.greedy_chain.*)."""
# The console commands live in `cli`; these names keep entry points installed as `ablation_harness.studies.greedy_chain:<name>` working.
from .cli import eval_main, plot_metrics_main, run_simulation_main, show_confusion_main, train_main  # noqa: F401

"""The batch-scaling study (seed 003): `study`, `log`, `analysis`, `figures` and `cli` (`scaling-analysis`)."""


def __getattr__(name):
    """`analysis_main` for console scripts installed before the split (they import it from the package)."""
    if name == "analysis_main":
        from .cli import analysis_main
        return analysis_main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

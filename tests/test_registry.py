"""Registries: every name the schema accepts resolves from a fresh process, without importing studies first."""
import json
import subprocess
import sys
import textwrap

from ablation_harness import registry
from ablation_harness.config import SinkConfig, switchable_sinks


def python(code: str) -> str:
    """Run code in a fresh interpreter and return its stdout."""
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_importing_config_imports_no_study_and_no_torch():
    out = python("""
        import json, sys
        import ablation_harness.config
        print(json.dumps(sorted(m for m in sys.modules if m.startswith(("ablation_harness.studies", "torch")))))
    """)
    assert json.loads(out) == []


def test_a_fresh_process_resolves_every_name_the_schema_accepts():
    """Each registry's names are what the schema accepts; each resolves to the object its module defines."""
    out = python("""
        import importlib, json
        from ablation_harness import registry
        from ablation_harness.config import RunConfig, ConfigError, validate
        report = {}
        refs = {kind: reg.declared() for kind, reg in registry.REGISTRIES.items()}   # before anything resolves
        for kind, reg in registry.REGISTRIES.items():
            declared = refs[kind]
            for name in reg.names():
                obj = reg[name]
                ref = declared.get(name, "")
                module, _, attr = ref.partition(":")
                same = getattr(importlib.import_module(module), attr) is obj if attr else callable(obj)
                report[f"{kind}:{name}"] = [callable(obj) or hasattr(obj, "loss"), same]
        accepted = {}
        for kind, field in (("dataset", "data.name"), ("model", "model.name"), ("task", "task")):
            for name in registry.REGISTRIES[kind].names():
                head, _, leaf = field.rpartition(".")
                data = {head: {leaf: name}} if head else {leaf: name}
                accepted[f"{kind}:{name}"] = isinstance(validate(data, "t"), RunConfig)
        for name in registry.CALLBACKS.names():
            accepted[f"callback:{name}"] = isinstance(validate({"callbacks": [{"name": name}]}, "t"), RunConfig)
        print(json.dumps({"resolved": report, "accepted": accepted}))
    """)
    got = json.loads(out)
    assert got["resolved"] and all(ok and same for ok, same in got["resolved"].values()), got["resolved"]
    assert all(got["accepted"].values())
    expect = {"dataset": {"markov", "connect4", "mnist", "digits"}, "model": {"tiny_transformer", "greedy", "cnn_gru"},
              "callback": {"batch_scaling_log", "chain_metrics", "spectral"}, "task": {"next_token", "policy_value"}}
    for kind, names in expect.items():
        assert names <= {k.split(":", 1)[1] for k in got["resolved"] if k.startswith(kind + ":")}


def test_no_name_becomes_usable_only_by_importing_a_module():
    """Importing every module of the package adds no name the registries did not declare up front."""
    out = python("""
        import importlib, json, pkgutil
        import ablation_harness
        from ablation_harness import registry
        before = {k: r.names() for k, r in registry.REGISTRIES.items()}
        for m in pkgutil.walk_packages(ablation_harness.__path__, "ablation_harness."):
            importlib.import_module(m.name)
        after = {k: r.names() for k, r in registry.REGISTRIES.items()}
        print(json.dumps([before, after]))
    """)
    before, after = json.loads(out)
    assert before == after


def test_schema_switches_and_other_name_lists_agree_with_the_registries():
    from ablation_harness import report, sweep
    from ablation_harness.config import PROFILES
    assert set(switchable_sinks()) == {k for k, f in SinkConfig.model_fields.items() if f.annotation is bool}
    assert set(sweep.EXECUTORS) == set(registry.EXECUTORS)
    assert all(sweep.EXECUTORS[n] is registry.EXECUTORS[n] for n in registry.EXECUTORS)
    assert tuple(report.PROFILES) == PROFILES

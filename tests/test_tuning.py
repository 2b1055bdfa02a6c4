"""rooflab's autotuner: a short benchmark per config, the disk cache, lone configs, the interpreter rule.

A stand-in kernel records what the autotuner launches, so the tuning logic runs without a GPU.
"""

import pytest
import triton

import kernels.tuning as tuning
from kernels.tuning import TUNER, Autotuner

CONFIGS = [triton.Config({"BLOCK": b}, num_warps=4) for b in (64, 128, 256)]
SPEED = {64: 3.0, 128: 1.0, 256: 2.0}  # ms per config: 128 wins


def _body(x, n, BLOCK):  # the stand-in's "source"
    return n


class FakeKernel:
    """What the autotuner wraps: records every launch with its config."""

    arg_names = ["x", "n"]

    def __init__(self):
        self.fn = _body
        self.launches: list[int] = []

    def run(self, *args, **kwargs):
        self.launches.append(kwargs["BLOCK"])


@pytest.fixture
def gpu_mode(monkeypatch, tmp_path):
    """Pretend to be on a GPU: a benchmark that runs the config once and reports its table speed."""
    monkeypatch.setattr(tuning, "interpreting", lambda: False)
    monkeypatch.setenv(tuning.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(tuning.NO_CACHE_ENV, raising=False)
    benched: list[int] = []
    kernel_holder: dict = {}

    def bench(kernel_call):
        kernel_call()
        block = kernel_holder["kernel"].launches[-1]
        benched.append(block)
        return [SPEED[block], SPEED[block], SPEED[block]]

    monkeypatch.setattr(TUNER, "benchmark", bench)
    monkeypatch.setattr(TUNER, "device_key", lambda: "Fake H200|132|141e9")

    def make(prune=None):
        kernel = FakeKernel()
        kernel_holder["kernel"] = kernel
        return Autotuner(kernel, kernel.arg_names, CONFIGS, ["n"], reset_to_zero=None, restore_value=None,
                         prune_configs_by={"early_config_prune": prune} if prune else None), kernel

    return make, benched


def test_tunes_once_picks_the_fastest_and_counts_the_time(gpu_mode):
    make, benched = gpu_mode
    tuner, kernel = make()
    tuned_before = TUNER.tuned
    tuner.run("x", 1000)
    assert sorted(benched) == [64, 128, 256]
    assert tuner.best_config.kwargs["BLOCK"] == 128 and kernel.launches[-1] == 128
    assert TUNER.tuned == tuned_before + 1
    tuner.run("x", 1000)  # same key: no new benchmark
    assert len(benched) == 3


def test_a_rerun_in_a_new_process_reads_the_disk_cache(gpu_mode):
    make, benched = gpu_mode
    make()[0].run("x", 1000)
    benched.clear()
    hits = TUNER.cache_hits
    fresh, kernel = make()  # a new process: an empty in-memory cache
    fresh.run("x", 1000)
    assert benched == [] and TUNER.cache_hits == hits + 1
    assert fresh.best_config.kwargs["BLOCK"] == 128 and kernel.launches == [128]


def test_another_device_or_key_tunes_again(gpu_mode, monkeypatch):
    make, benched = gpu_mode
    make()[0].run("x", 1000)
    benched.clear()
    make()[0].run("x", 2000)  # another key
    assert len(benched) == 3
    benched.clear()
    monkeypatch.setattr(TUNER, "device_key", lambda: "Fake H100|132|80e9")
    make()[0].run("x", 1000)
    assert len(benched) == 3


def test_a_lone_config_is_not_benchmarked(gpu_mode):
    make, benched = gpu_mode
    tuner, kernel = make(prune=lambda configs, named, **kw: configs[2:])
    tuner.run("x", 1000)
    assert benched == [] and kernel.launches[-1] == 256


def test_the_interpreter_runs_the_first_surviving_config_untimed(monkeypatch):
    monkeypatch.setattr(tuning, "interpreting", lambda: True)
    calls = []
    monkeypatch.setattr(TUNER, "benchmark", lambda kernel_call: calls.append(1) or [0.0] * 3)
    kernel = FakeKernel()
    tuner = Autotuner(kernel, kernel.arg_names, CONFIGS, ["n"], reset_to_zero=None, restore_value=None,
                      prune_configs_by={"early_config_prune": lambda configs, named, **kw: configs[1:]})
    tuner.run("x", 10)
    assert calls == [] and kernel.launches == [128]

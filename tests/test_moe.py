"""The moe family: fused layer and stages against the float64 per-expert loop, routing, byte model, and
deliberately broken variants the gate must catch (wrong expert, dropped combine weights, untouched
experts' bytes). Small odd sizes under the interpreter (T = 1, 3, 37; E = 8, 40; k = 1, 2, 4)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bench.cli import main
from bench.results import load_csv
from kernels import registry
from kernels.check import check_point
from kernels.moe_formats import expert_bytes
from kernels.moe_routing import align_reference, route
from kernels.spec import DeviceCaps, Impl, generator_for
from kernels.tuning import HOPPER

INTERPRETER = DeviceCaps("interpreter", None, True, 0, 1, 0)


def _caps(device: str) -> DeviceCaps:
    if device != "cuda":
        return INTERPRETER
    return DeviceCaps("cuda", torch.cuda.get_device_capability(), False, 0, 1, 0)
MOE = registry.get("moe")
# per format: d_model and d_ff no tile divides, as far as the layout lets them (int4 needs 128s)
SIZES = {"bf16": (40, 24), "fp8-channel": (40, 24), "fp8-block": (136, 24), "int4-g128": (128, 128),
         "mxfp4": (96, 32), "nvfp4": (48, 80)}


def _case(dtype="fp16", fmt="bf16", **values):
    d, f = SIZES[fmt]
    return MOE.case(dtype, **{"d_model": d, "d_ff": f, "format": fmt, **values})


def _passes(case, device, impl="triton", seed=0, fresh=False):
    checked = check_point(MOE, impl, case, device, seed, fresh=fresh)
    return checked.ok, f"{case.label()}: {checked.message()}"


@pytest.mark.parametrize("fmt,tokens,experts,top_k,routing", [
    ("bf16", 37, 8, 2, "uniform"),
    ("fp8-channel", 3, 40, 4, "skewed"),
    ("fp8-block", 1, 8, 1, "uniform"),
    ("int4-g128", 3, 8, 4, "balanced"),
    ("mxfp4", 37, 40, 1, "skewed"),
    ("nvfp4", 3, 8, 2, "uniform"),
])
def test_every_format_matches_the_reference(fmt, tokens, experts, top_k, routing, device, seed):
    zipf = "1.2" if routing == "skewed" else "0"
    ok, why = _passes(_case(fmt=fmt, tokens=tokens, experts=experts, top_k=top_k, routing=routing, zipf=zipf),
                      device, seed=seed)
    assert ok, why


@pytest.mark.parametrize("values", [
    dict(dtype="fp32", tokens=37, experts=8, top_k=4, routing="balanced"),
    dict(tokens=37, experts=8, top_k=2, ep=2, shared=1, fmt="fp8-block"),  # half the experts here, a shared one
    dict(tokens=3, experts=40, top_k=4, ep=8, fmt="int4-g128"),
])
def test_expert_parallelism_shared_expert_and_fp32(values, device, seed):
    ok, why = _passes(_case(**values), device, seed=seed, fresh=True)
    assert ok, why


@pytest.mark.parametrize("stage", ["align", "w1", "w2"])
def test_each_stage_alone(stage, device, seed):
    ok, why = _passes(_case(fmt="mxfp4", tokens=37, experts=8, top_k=2, shared=1, stage=stage), device, seed=seed)
    assert ok, why


@pytest.mark.parametrize("impl", ["torch-loop", "grouped-mm", "dense"])
def test_baselines_match_the_reference(impl, device, seed):
    case = _case(fmt="nvfp4", tokens=37, experts=8, top_k=2, ep=2, shared=1, dtype="bf16" if device == "cuda" else "fp16")
    if impl == "grouped-mm" and MOE.skip_reason(case, MOE.impl(impl), _caps(device)):
        pytest.skip(MOE.skip_reason(case, MOE.impl(impl), _caps(device)))
    ok, why = _passes(case, device, impl, seed)
    assert ok, why
    assert MOE.skip_reason(_case(stage="w1"), MOE.impl(impl), INTERPRETER)  # baselines time the layer only


def test_align_sorts_pairs_by_expert_into_padded_blocks(device, seed):
    from kernels.moe import empty_alignment, moe_align, moe_block_m

    ids = torch.randint(0, 12, (37, 3), generator=generator_for("cpu", seed), dtype=torch.int32)  # 12 ≥ 8: EP
    bm = moe_block_m(ids.numel(), 8)
    alignment = moe_align(ids.to(device), 8, empty_alignment(ids.numel(), 8, bm, device))
    expected = align_reference(ids, 8, bm, alignment.sorted_ids.numel())
    alignment = dataclasses.replace(alignment, sorted_ids=alignment.sorted_ids.cpu(),
                                    block_expert=alignment.block_expert.cpu(), padded=alignment.padded.cpu())
    assert torch.equal(alignment.sorted_ids, expected)
    used = int(alignment.padded)
    assert used % bm == 0 and (expected[used:] == ids.numel()).all()
    owner = ids.reshape(-1)[expected[:used].long().clamp(max=ids.numel() - 1)]
    blocks = alignment.block_expert[:used // bm].repeat_interleave(bm)
    assert ((owner == blocks) | (expected[:used] == ids.numel())).all()


def test_untouched_experts_are_never_read(device, seed):
    """NaN in every expert no token picked: the layer stays finite and right (T = 1, k = 1, E = 40)."""
    case = _case(tokens=1, experts=40, top_k=1)
    touched = int(route(1, 40, 1, "uniform", "0")[0, 0])
    real = MOE.impl("triton")

    def build(inputs, case):
        dense = inputs["w1"].dense.clone().reshape(40, -1, case["d_model"])
        dense[torch.arange(40) != touched] = float("nan")
        w1 = dataclasses.replace(inputs["w1"], dense=dense.reshape(-1, case["d_model"]))
        return real.build({**inputs, "w1": w1}, case)

    checked = check_point(MOE, dataclasses.replace(real, build=build), case, device, seed, fresh=False)
    assert checked.ok, checked.message()


def test_the_gate_catches_a_token_sent_to_the_wrong_expert(device, seed):
    case = _case(tokens=37, experts=8, top_k=2)
    real = MOE.impl("triton")
    wrong = Impl("wrong-expert", lambda inputs, case: real.build({**inputs, "ids": (inputs["ids"] + 1) % 8}, case))
    assert not check_point(MOE, wrong, case, device, seed, fresh=False).ok  # the real one: the tests above


def test_the_gate_catches_dropped_combine_weights(device, seed, monkeypatch):
    from kernels import moe

    case = _case(tokens=37, experts=8, top_k=2)
    real_w2 = moe.moe_w2
    monkeypatch.setattr(moe, "moe_w2", lambda h, w2, alignment, weights, y: real_w2(h, w2, alignment, None, y))
    assert not check_point(MOE, "triton", case, device, seed, fresh=False).ok


def _bytes_from_routing(case) -> int:
    """The layer's bytes recounted from the drawn ids: the experts picked here, not the experts held."""
    ids = route(case["tokens"], case["experts"], case["top_k"], case["routing"], case["zipf"])
    here = ids[ids < case["experts"] // case["ep"]]
    touched, a, d, f = here.unique().numel(), case.dtype.itemsize, case["d_model"], case["d_ff"]
    tokens_in = int((ids < case["experts"] // case["ep"]).any(dim=1).sum())
    weights = touched * (expert_bytes(case["format"], 2 * f, d, a) + expert_bytes(case["format"], d, f, a))
    return tokens_in * d * a + weights + case["tokens"] * case["top_k"] * 8 + case["tokens"] * d * a


@pytest.mark.parametrize("values", [dict(tokens=1, experts=40, top_k=1), dict(tokens=3, experts=40, top_k=4, ep=8),
                                    dict(tokens=37, experts=8, top_k=2, fmt="mxfp4")])
def test_bytes_count_only_touched_experts(values, monkeypatch):
    from kernels import moe_cost
    from kernels.moe_routing import RouteCounts

    case = _case(**values)
    assert MOE.bytes(case) == _bytes_from_routing(case)
    held = case["experts"] // case["ep"]
    assert MOE.bytes_for(case, MOE.impl("dense")) >= held * expert_bytes("bf16", 3 * case["d_ff"], case["d_model"], 2)
    real = moe_cost.route_counts
    monkeypatch.setattr(moe_cost, "route_counts", lambda *a: RouteCounts(real(*a).pairs, a[-1], real(*a).tokens_in))
    if real(*_counts_args(case)).touched < held:  # a model counting every expert held is caught
        assert MOE.bytes(case) != _bytes_from_routing(case)


def _counts_args(case):
    return (case["tokens"], case["experts"], case["top_k"], case["routing"], case["zipf"],
            case["experts"] // case["ep"])


def test_flops_count_the_pairs_routed_here():
    case = _case(tokens=37, experts=8, top_k=2, ep=2, shared=1)
    pairs = int((route(37, 8, 2, "uniform", "0") < 4).sum())
    assert MOE.flops(case) == 2 * (pairs + 37) * 3 * case["d_model"] * case["d_ff"]
    assert MOE.flops(_case(tokens=37, experts=8, top_k=2, stage="align")) == 0


def test_routing_is_drawn_from_the_case():
    uniform = route(4096, 40, 4, "uniform", "0")
    assert all(len(set(row.tolist())) == 4 for row in uniform[:200])  # distinct experts per token
    assert torch.equal(uniform, route.__wrapped__(4096, 40, 4, "uniform", "0"))  # deterministic
    balanced = torch.bincount(route(40, 8, 2, "balanced", "0").reshape(-1).long(), minlength=8)
    assert (balanced == 10).all()
    skewed = torch.bincount(route(4096, 40, 4, "skewed", "1.2").reshape(-1).long(), minlength=40)
    flat = torch.bincount(uniform.reshape(-1).long(), minlength=40)
    assert skewed.max() > 3 * flat.max()


def test_the_layer_closure_runs_every_stage(device):
    """The timed layer is align (count + place), w1, w2 and the combine, with the shared expert's GEMMs."""
    from kernels import moe

    kernels = {"count": moe._moe_count_kernel, "align": moe._moe_align_kernel, "w1": moe._moe_w1_kernel,
               "w2": moe._moe_w2_kernel, "combine": moe._moe_combine_kernel}
    calls = []
    for name, kernel in kernels.items():
        original = kernel.run
        kernel.run = (lambda n, o: lambda *a, **k: (calls.append(n), o(*a, **k))[1])(name, original)
    try:
        case = _case(tokens=3, experts=8, top_k=2, shared=1)
        inputs = MOE.make_inputs(case, torch.device(device), generator_for(device, 0))
        MOE.impl("triton").build(inputs, case).run()
    finally:
        for kernel in kernels.values():
            kernel.__dict__.pop("run", None)
    assert calls == ["count", "align", "w1", "w1", "w2", "w2", "combine"], calls  # shared and routed GEMMs
    stages = {stage: [s.name for s in MOE.impl("triton").candidates(_case(stage=stage), HOPPER)]
              for stage in ("layer", "align", "w1", "w2")}
    assert stages == {"layer": ["count", "align", "w1", "w2", "combine"], "align": ["count", "align"],
                      "w1": ["w1"], "w2": ["w2", "combine"]}


def test_bad_axis_values_are_refused_in_one_line():
    from kernels.errors import UsageError

    with pytest.raises(UsageError, match="zipf"):
        MOE.case("fp16", routing="skewed", zipf="steep")
    assert "multiple" in MOE.skip_reason(_case(experts=40, ep=3), MOE.impl("triton"), INTERPRETER)
    assert "128" in MOE.skip_reason(_case(fmt="int4-g128", d_model=200), MOE.impl("triton"), INTERPRETER)


def test_sweep_cli_runs_moe_under_the_interpreter(tmp_path, capsys):
    out = tmp_path / "moe.csv"
    code = main(["sweep", "--kernel", "moe", "--impl", "triton,torch-loop", "--dtype", "fp16", "--axis", "tokens=1,37",
                 "--axis", "experts=40", "--axis", "top_k=4", "--axis", "d_model=40", "--axis", "d_ff=24",
                 "--axis", "routing=skewed", "--axis", "zipf=1.2", "--out", str(out), "--interpret", "--no-progress"])
    assert code == 0, capsys.readouterr()
    frame = load_csv(out)
    assert len(frame) == 4 and set(frame["status"]) == {"ok"}, frame[["impl", "status", "error"]]
    assert {"tokens", "experts", "top_k", "ep", "routing", "zipf", "shared",
                                              "format", "stage"} <= set(frame.columns)

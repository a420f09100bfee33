"""Deployment on the integer arithmetic: the vectorised golden functions `sim.deploy` runs equal the
per-row ones the RTL is checked against, and a trained network keeps its accuracy in int8."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from sim import golden

ROOT = Path(__file__).resolve().parents[2]
CAPSNET_LIKE = [[0, 28, 1, 1, 5, 2, 14, 16, 1], [1, 14, 16, 1, 3, 2, 7, 8, 4], [1, 7, 8, 4, 7, 1, 7, 10, 8], [-1], [1]]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(1, 9), st.integers(1, 12), st.integers(2, 34), st.integers(0, 2 ** 32 - 1))
def test_matmul_equals_the_arrays_tiled_product(k, m, rows, acc_bits, seed):
    """Also when the sums wrap (small acc_bits): wrapping is modular, so the order does not matter."""
    rng = np.random.default_rng(seed)
    x, w = rng.integers(-128, 128, (5, k)), rng.integers(-128, 128, (k, m))
    assert np.array_equal(golden.matmul(x, w, acc_bits), golden.tiled_matmul(x, w, rows, acc_bits))
    assert np.array_equal(golden.matmul(x[None], w, acc_bits)[0], golden.matmul(x, w, acc_bits))


def test_batched_classcaps_and_routing_equal_each_image_alone():
    rng = np.random.default_rng(7)
    u, w = rng.integers(-128, 128, (3, 6, 4)), rng.integers(-128, 128, (6, 4, 10))
    batched = golden.classcaps(u, w, 9)
    for image in range(3):
        want = np.stack([golden.requantize(golden.matmul_tile(u[image, i:i + 1], w[i])[0], 9) for i in range(6)])
        assert np.array_equal(batched[image], want)
    u_hat = batched.reshape(3, 6, 5, 2)
    c, s, v, b = golden.routing(u_hat, 3, 6, 5)
    for image in range(3):
        for got, want in zip((c, s, v, b), golden.routing(u_hat[image], 3, 6, 5)):
            assert np.array_equal(got[image], want)
    assert np.abs(v).max() > 0  # the check compares something


def test_vectorised_squash_and_softmax_equal_each_capsule_alone():
    q = np.random.default_rng(3).integers(-128, 128, (4, 5, 8))
    for function in (golden.squash, golden.softmax):
        whole = function(q)
        assert all(np.array_equal(whole[i, j], function(q[i, j])) for i in range(4) for j in range(5))
    factor, shift = golden.squash_scale(np.array([0, 1, 300, 64 * 128 ** 2]))
    assert [golden.squash_scale(s2) for s2 in (0, 1, 300, 64 * 128 ** 2)] == list(zip(factor, shift))


def _deploy(*args):
    return subprocess.run([sys.executable, "-m", "capsacc", "deploy", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("args, message", [
    (["missing.keras", "--out", "{tmp}/o"], "missing.keras: no such model file"),
    (["{tmp}/g.json", "--out", "{tmp}/o"], "must end in .keras"),
    (["{tmp}/bad.keras", "--out", "{tmp}/o"], "bad.keras: not a Keras model (not a zip archive, as a .keras file is)"),
    (["{tmp}/bad.keras", "--out", "{tmp}/o", "--calibration-images", "0"], "--calibration-images 0"),
    (["{tmp}/bad.keras", "--out", "{tmp}/o", "--simulate-images", "-1"], "--simulate-images -1"),
    (["{tmp}/bad.keras", "--out", "{tmp}/o", "--rows", "0"], "--rows 0"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "g.json").write_text(json.dumps(CAPSNET_LIKE))
    (tmp_path / "bad.keras").write_text("not a zip")
    result = _deploy(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("nascaps deploy: error:") and message in result.stderr
    assert not (tmp_path / "o").exists()  # bad input leaves no output folder behind


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    pytest.importorskip("keras")
    from nas.datasets import load_dataset
    from nas.genotype import Genotype
    from nas.train import TrainConfig, train

    path = tmp_path_factory.mktemp("model") / "m.keras"
    config = TrainConfig(epochs=1, batch_size=10, learning_rate=0.01, train_samples=400, threads=1)
    result = train(Genotype.from_list(CAPSNET_LIKE), load_dataset(), config, progress=False, save_path=path)
    assert result.status == "ok", result.message
    return path


@pytest.mark.slow
@pytest.mark.keras
def test_deploy_keeps_the_float_accuracy_in_int8(trained, tmp_path):
    result = _deploy(trained, "--out", tmp_path, "--calibration-images", 64)
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "deploy.json").read_text())
    assert record["test_images"] == 1000 and record["calibration_images"] == 64
    assert record["float_accuracy"] > 0.3  # trained: chance is 0.1
    assert abs(record["int8_accuracy"] - record["float_accuracy"]) <= 0.03
    assert record["agreement"] >= 0.9
    assert record["genotype"][:2] == CAPSNET_LIKE[:2] and record["genotype"][2][7:] == [10, 8]
    assert set(record["shifts"]) == {"conv0", "convcaps1", "classcaps2", "routing.sum", "routing.logits"}
    assert all(isinstance(shift, int) and 0 <= shift < 32 for shift in record["shifts"].values())
    assert record["shifts"]["convcaps1"] == record["layers"][1]["in_frac_bits"] + \
        record["layers"][1]["weight_frac_bits"] - golden.SQUASH_FRAC_BITS  # squash reads Q3.4
    assert len(record["model"]["sha256"]) == 64 and record["dataset"]["test_images"] == 1000
    assert record["cycles_per_image"] > 0 and record["energy_mJ_per_image"] > 0
    assert record["latency_ms_per_image"] > 0 and record["accelerator"]["rows"] == 16



TINY = [[0, 4, 1, 1, 3, 1, 4, 2, 1], [1, 4, 2, 1, 3, 2, 2, 2, 2], [1, 2, 2, 2, 2, 1, 1, 3, 2], [-1], [1]]
"""A 4x4 image, a convolution, 2x2x2 capsules of 2 atoms, 3 classes of 2 atoms (test_sim_network_run's)."""


def tiny_deployment(seed: int = 0):
    """A `sim.deploy.Deployment` of `TINY` with random float weights, calibrated on 16 random images,
    and 2 images for the RTL."""
    from capsacc.network import Network
    from sim.deploy import forward, quantise

    rng = np.random.default_rng(seed)
    network = Network.from_genotype(TINY)
    operations, arrays = [], {}
    for i, op in enumerate(network.operations):
        entry = {"weights": None, "bias": None}
        if op.kind == "classcaps":
            entry["weights"] = f"op{i}_weights"
            arrays[entry["weights"]] = rng.normal(0, 0.5, (op.n_in ** 2 * op.ch_in, op.caps_in, op.ch_out * op.caps_out))
        elif op.kind != "routing":
            entry["weights"], entry["bias"] = f"op{i}_weights", f"op{i}_bias"
            outputs = op.ch_out * op.caps_out
            arrays[entry["weights"]] = rng.normal(0, 0.5, (op.kernel ** 2 * op.ch_in * op.caps_in, outputs))
            arrays[entry["bias"]] = rng.normal(0, 0.2, outputs)
        operations.append(entry)
    deployment = quantise({"genotype": TINY, "operations": operations, "routings": 3}, arrays)
    pixels = rng.integers(0, 256, (18, 4, 4, 1)).astype(np.uint8)
    forward(deployment, pixels[:16], calibrate=True)
    return deployment, pixels[16:]


@pytest.fixture(scope="module")
def tiny_run():
    """The tiny deployment's 2 images through the Amaranth 4x4 RTL with the off-chip memory."""
    from sim.deploy import simulate

    deployment, pixels = tiny_deployment()
    run, exact = simulate(deployment, pixels, 4, 4, "amaranth")
    assert exact
    return deployment, pixels, run


def test_the_memory_files_run_the_network_again_bit_exact(tiny_run, tmp_path):
    """The files alone (off-chip images, programs, partial-sum writes) replayed on the RTL store the
    results the run stored and count the same events; offchip.bin holds the .hex images."""
    from sim.memory_files import read_beats_hex, replay, write_memory_files

    deployment, pixels, run = tiny_run
    manifest = write_memory_files(deployment.network, run, tmp_path)
    streams = [stream for operation_run in run.runs for stream in operation_run.streams]
    assert len(manifest["streams"]) == len(streams) == len(run.runs)  # every operation one stream
    first = manifest["streams"][0]
    assert first["step"] == "conv0" and {load["tensor"] for load in first["loads"]} == {
        "input image patches (im2col rows, bias column last)", "weights (bias row last)"}
    weights = next(load for load in first["loads"] if load["buffer"] == "weight")
    image = read_beats_hex(tmp_path / first["offchip"]["file"], manifest["beat_bytes"])
    tiles = image[weights["beat"]:weights["beat"] + weights["beats"]].reshape(weights["rows"], -1).view(np.int8)
    w = deployment.layers[0].weights  # (k + 1, m) = (10, 2): 3 chunks of 4 rows, one column block
    assert np.array_equal(tiles[:len(w), :w.shape[1]], w) and not tiles[len(w):].any()
    blob = (tmp_path / "offchip.bin").read_bytes()
    assert len(blob) == manifest["offchip_bin"]["bytes"]
    for entry, stream in zip(manifest["streams"], streams):
        start = entry["offchip"]["bin_offset"]
        assert blob[start:start + entry["offchip"]["bytes"]] == stream.image.tobytes()
    replayed = replay(tmp_path, manifest, run.runs[0].config)
    stored, counted = 0, [dict.fromkeys(run.runs[0].counters, 0) for _ in run.runs]
    for again, stream, entry in zip(replayed, streams, manifest["streams"]):
        for name, values in stream.results.items():
            assert np.array_equal(again["results"][name][:, :values.shape[1]], values)
            stored += values.size
        for counters in again["counters"]:
            for name, value in counters.items():
                counted[entry["step_index"]][name] += value
    assert stored > 0
    assert counted == [r.counters for r in run.runs] and all(c["pe_active_cycles"] for c in counted[:3])


def test_the_memory_files_of_overlay_programs_run_the_network_again_bit_exact(tmp_path):
    """With a 16-word program memory some of the tiny network's streams are overlay programs: each
    of their program files holds the 8 words the host writes, the image the later segments' words (loads into buffer
    "program"), and the files alone replayed on the RTL store the run's results and count its events."""
    from capsacc.array import ArrayConfig
    from sim.deploy import network_input, operation_inputs
    from sim.driver import OperationDriver
    from sim.memory_files import replay, write_memory_files
    from sim.network_run import run_network

    deployment, pixels = tiny_deployment()
    config = ArrayConfig(rows=4, cols=4, acc_bits=golden.ACC_BITS, batch=len(pixels), program_depth=16)
    run = run_network(deployment.network, OperationDriver(config, "amaranth", offchip=True),
                      network_input(deployment, pixels), operation_inputs=operation_inputs(deployment))
    manifest = write_memory_files(deployment.network, run, tmp_path)
    overlays = [entry for entry in manifest["streams"] if any(load["buffer"] == "program" for load in entry["loads"])]
    assert overlays and all(program["instructions"] == 8 for entry in overlays for program in entry["programs"])
    streams = [stream for operation_run in run.runs for stream in operation_run.streams]
    counted = [dict.fromkeys(run.runs[0].counters, 0) for _ in run.runs]
    for again, stream, entry in zip(replay(tmp_path, manifest, config), streams, manifest["streams"]):
        for name, values in stream.results.items():
            assert np.array_equal(again["results"][name][:, :values.shape[1]], values)
        for counters in again["counters"]:
            for name, value in counters.items():
                counted[entry["step_index"]][name] += value
    assert counted == [r.counters for r in run.runs]


def test_rtl_energy_prices_the_counted_events_and_the_dma_bytes(tiny_run):
    """Per image: the off-chip bytes are those of the DMA instructions the programs issued and those the
    calibrated model predicts (its closed-form transfer rule, on the run's array and batch), so are the
    cycles, the on-chip events' energy and the DMA's buffer energy; every MAC of the network is among
    the counted PE cycles; the energy is the events' plus the bytes' plus the buffer rows'."""
    import dataclasses

    from capsacc import Accelerator, estimate
    from capsacc.calibrated import Calibration
    from capsacc.energy import EventEnergies
    from rtl.isa import Dma, beats_per_row, buffer_lanes
    from sim.deploy import rtl_figures

    deployment, pixels, run = tiny_run
    figures = rtl_figures(run, len(pixels), 100.0)
    config = run.runs[0].config
    transfers = [i for r in run.runs for s in r.streams for p in s.programs for i in p
                 if isinstance(i, Dma) and i.buffer != "program"]
    moved = sum(i.n * beats_per_row(buffer_lanes(i.buffer, config.rows, config.cols), config.offchip_bytes_per_cycle)
                for i in transfers) * config.offchip_bytes_per_cycle
    assert figures["rtl_offchip_bytes_per_image"] == -(-moved // len(pixels)) > 0
    assert figures["rtl_offchip_energy_mJ_per_image"] == pytest.approx(moved / len(pixels) * 100.0 * 1e-9)
    assert figures["rtl_events_per_image"]["mac"] >= sum(op.macs for op in deployment.network.operations)
    assert figures["rtl_onchip_energy_mJ_per_image"] > 0 and figures["rtl_dma_buffer_energy_mJ_per_image"] > 0
    assert figures["rtl_energy_mJ_per_image"] == pytest.approx(
        figures["rtl_onchip_energy_mJ_per_image"] + figures["rtl_offchip_energy_mJ_per_image"]
        + figures["rtl_dma_buffer_energy_mJ_per_image"])
    assert figures["rtl_cycles_per_image"] == -(-run.cycles // 2) < figures["rtl_total_cycles_per_image"]
    # The calibrated model of the very array, partial-sum width, depths and batch, with the shipped
    # coefficients, predicts the run's cycles, events and bytes, so its energies are the counters'.
    calibration = Calibration(config, Calibration.shipped().coefficients, EventEnergies.from_tables(config), 1.0e6)
    accelerator = dataclasses.replace(Accelerator.from_tables(rows=4, cols=4, offchip_pJ_per_byte=100.0),
                                      acc_bits=config.acc_bits, calibration=calibration)
    model = estimate(deployment.network, accelerator)
    # per image: the run's batch cycles rounded up once, the model's once per operation (each
    # operation's batch cycles, the sum of its steps' runs, are the run's exactly)
    batch_cycles = [0] * len(deployment.network.operations)
    for step, step_run in zip(run.steps, run.runs):
        batch_cycles[step.index] += step_run.cycles
    assert list(model.operation_cycles) == [-(-cycles // len(pixels)) for cycles in batch_cycles]
    assert 0 <= model.cycles - figures["rtl_cycles_per_image"] < len(model.operation_cycles)
    assert 0 <= model.total_cycles - figures["rtl_total_cycles_per_image"] < len(model.operation_total_cycles)
    assert model.energy_mJ == pytest.approx(figures["rtl_onchip_energy_mJ_per_image"], rel=1e-12)
    assert model.offchip_bytes == figures["rtl_offchip_bytes_per_image"]
    assert model.dma_buffer_energy_mJ == pytest.approx(figures["rtl_dma_buffer_energy_mJ_per_image"])


@pytest.mark.verilator
def test_verilator_runs_the_deployment_as_amaranth_does(tiny_run):
    """The same images on Verilator: bit-exact, the same counters and the same memory images and programs."""
    from sim.deploy import simulate

    deployment, pixels, run = tiny_run
    again, exact = simulate(deployment, pixels, 4, 4, "verilator")
    assert exact and np.array_equal(again.output, run.output)
    assert [r.counters for r in again.runs] == [r.counters for r in run.runs]
    for ours, theirs in zip(again.runs, run.runs):
        assert len(ours.streams) == len(theirs.streams)
        for a, b in zip(ours.streams, theirs.streams):
            assert np.array_equal(a.image, b.image) and a.programs == b.programs


CELLS = [[0, 4, 1, 1, 3, 1, 4, 4, 1], [2, 4, 2, 2, 3, 1, 4, 2, 2], [2, 4, 2, 2, 3, 2, 2, 2, 2],
         [2, 2, 2, 2, 2, 1, 1, 3, 2], [-1], [1]]
"""A tiny CapsCell network (test_sim_capscell_run's): a convolution to 2 capsules of 2 atoms, a cell,
the last cell (stride 2, its ConvCaps3D skip), 3 classes of 2 atoms."""


def cells_deployment(seed: int = 0):
    """A `sim.deploy.Deployment` of `CELLS` with random float weights and batch normalisation offsets,
    calibrated on 16 random images, and 2 images for the RTL."""
    from capsacc.mapping import chain
    from capsacc.network import Network
    from sim.deploy import forward, quantise

    rng = np.random.default_rng(seed)
    network = Network.from_genotype(CELLS)
    shapes = {step.index: step.op for step in chain(network.operations)}
    operations, arrays = [], {}
    for i, op in enumerate(network.operations):
        op = shapes[i]
        entry = {"weights": None, "bias": None, "offset": None}
        if op.kind == "classcaps":
            entry["weights"] = f"op{i}_weights"
            arrays[entry["weights"]] = rng.normal(0, 0.5, (op.n_in ** 2 * op.ch_in, op.caps_in, op.ch_out * op.caps_out))
        elif op.kind != "routing":
            entry["weights"], entry["bias"] = f"op{i}_weights", f"op{i}_bias"
            rows = op.kernel ** 3 * op.caps_in if op.kind == "convcaps3d" else op.kernel ** 2 * op.ch_in * op.caps_in
            arrays[entry["weights"]] = rng.normal(0, 0.5, (rows, op.ch_out * op.caps_out))
            arrays[entry["bias"]] = rng.normal(0, 0.2, op.ch_out * op.caps_out)
            if op.kind == "conv":
                entry["offset"] = f"op{i}_offset"
                arrays[entry["offset"]] = rng.normal(-0.5, 0.3, op.ch_out)
        operations.append(entry)
    deployment = quantise({"genotype": CELLS, "operations": operations, "routings": 3}, arrays)
    pixels = rng.integers(0, 256, (18, 4, 4, 1)).astype(np.uint8)
    forward(deployment, pixels[:16], calibrate=True)
    return deployment, pixels[16:]


def test_cell_steps_follow_their_format_rules():
    """ToCapsules, the ConvCaps3D's routing and the squashing convolutions read Q3.4; the cells' sums
    get the shift that keeps the calibration sums of two Q0.7 maps inside int8; the ToCapsules offset
    is in its convolution's output format; one image's classes equal the batch's."""
    from sim.deploy import forward, operation_inputs

    deployment, pixels = cells_deployment()
    shifts, layers = deployment.shifts(), {layer.op.name: layer for layer in deployment.layers}
    conv, votes = layers["conv0"], layers["convcaps3d8"]
    assert shifts["convcaps1.tocaps"] == conv.out_frac_bits - golden.SQUASH_FRAC_BITS >= 0
    # the ConvCaps3D's routing: sums and logits of Q0.7 couplings (outputs) times the votes, read Q3.4
    assert shifts["convcaps3d8.route3d"] == votes.out_frac_bits + golden.OUT_FRAC_BITS - golden.SQUASH_FRAC_BITS
    assert operation_inputs(deployment)["convcaps3d8.route3d"] == {"shift_sum": shifts["convcaps3d8.route3d"],
                                                                   "shift_logits": shifts["convcaps3d8.route3d"]}
    assert votes.op.n_in == 2 and votes.op.stride == 1 and votes.weights.shape == (3 ** 3 * 2 + 1, 4)
    assert shifts["convcaps4.capsadd"] in (0, 1) and shifts["convcaps3d8.capsadd"] in (0, 1)
    assert layers["convcaps5"].in_frac_bits == golden.OUT_FRAC_BITS - shifts["convcaps4.capsadd"]
    offset = operation_inputs(deployment)["convcaps1.tocaps"]["offset"]
    assert np.array_equal(offset, np.clip(np.rint(conv.offset * 2.0 ** conv.out_frac_bits), -128, 127))
    assert offset.min() < 0  # the offsets are negative: the test sees them
    both = forward(deployment, pixels)
    assert np.array_equal(both[1:], forward(deployment, pixels[1:])) and np.abs(both).max() > 0


def test_upsample2_is_bilinear_with_half_pixel_centres():
    """Every output pixel is the 9:3:3:1 blend of its four nearest input pixels, edges clamped: a ramp
    stays a ramp (with the clamped ends), and a constant image stays constant."""
    from sim.deploy import upsample2

    ramp = np.arange(0, 64, 16).reshape(1, 1, 4, 1).repeat(2, axis=1)
    assert upsample2(ramp)[0, 0, :, 0].tolist() == [0, 4, 12, 20, 28, 36, 44, 48]
    assert np.array_equal(upsample2(np.full((2, 3, 3, 2), 127)), np.full((2, 6, 6, 2), 127))
    q = np.random.default_rng(1).integers(0, 128, (2, 5, 5, 1))
    up = upsample2(q)
    assert up[0, 3, 5, 0] == (9 * q[0, 1, 2, 0] + 3 * q[0, 2, 2, 0] + 3 * q[0, 1, 3, 0] + q[0, 2, 3, 0] + 8) >> 4


@pytest.mark.keras
def test_upsample2_equals_keras_upsampling_rounded():
    keras = pytest.importorskip("keras")
    from sim.deploy import upsample2

    q = np.random.default_rng(2).integers(0, 128, (3, 7, 7, 1))
    layer = keras.layers.UpSampling2D(2, interpolation="bilinear")
    want = np.asarray(layer(q.astype(np.float32)))
    assert np.abs(upsample2(q) - want).max() <= 0.5 + 1e-3


@pytest.mark.slow
def test_a_cell_network_runs_on_the_rtl_bit_exact(tmp_path):
    """One image of the tiny CapsCell deployment through the Amaranth 4x4 RTL with the off-chip memory
    (the path of `nascaps deploy --simulate-images`): every step checked by the driver, the output
    capsules equal to the golden model's; the ToCapsules offset streams as a second operand; the memory
    image files name every step. Slow: 20 steps on Amaranth, 193 s on the loaded 2-core machine."""
    from sim.deploy import simulate
    from sim.memory_files import write_memory_files

    deployment, pixels = cells_deployment()
    run, exact = simulate(deployment, pixels[:1], 4, 4, "amaranth")
    assert exact and np.abs(run.output).max() > 0
    tocaps = next(r for r, step in zip(run.runs, run.steps) if step.kind == "tocaps")
    assert tocaps.counts["matmul_rows"] == 2 * 4 * 4  # the map and the offset, 16 rows each
    manifest = write_memory_files(deployment.network, run, tmp_path)
    assert {"convcaps1.tocaps", "convcaps4.capsadd", "convcaps3d8.route3d"} <= {s["step"] for s in manifest["streams"]}


SKIPPED = [[0, 28, 1, 1, 5, 4, 7, 8, 1], [2, 7, 2, 4, 3, 1, 7, 2, 4], [2, 7, 2, 4, 3, 1, 7, 2, 4],
           [2, 7, 2, 4, 7, 1, 1, 10, 4], [2], [1]]
TWO_CONVS = [[0, 28, 1, 1, 5, 4, 7, 4, 1], [0, 7, 4, 1, 3, 1, 7, 8, 1], [2, 7, 2, 4, 3, 1, 7, 2, 4],
             [2, 7, 2, 4, 7, 1, 1, 10, 4], [-1], [1]]


@pytest.mark.keras
@pytest.mark.parametrize("genotype, message", [
    (SKIPPED, "skip connection into the class layer"),
    (TWO_CONVS, "more than one convolution"),
])
def test_cell_networks_deploy_does_not_run_are_one_line_and_exit_2(tmp_path, genotype, message):
    """Untrained models (the refusal comes from their layers) of what the RTL does not run."""
    pytest.importorskip("keras")
    from nas.builder import build_models
    from nas.genotype import Genotype
    from nas.train import save_model

    save_model(build_models(Genotype.from_list(genotype)).evaluate, tmp_path / "m.keras")
    result = _deploy(tmp_path / "m.keras", "--out", tmp_path / "o")
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("nascaps deploy: error:") and message in result.stderr
    assert not (tmp_path / "o").exists()


CELL_NET = [[0, 28, 1, 1, 5, 2, 14, 8, 1], [2, 14, 2, 4, 3, 2, 7, 4, 4], [2, 7, 4, 4, 3, 1, 7, 4, 4],
            [2, 7, 4, 4, 7, 1, 1, 10, 4], [-1], [1]]
"""A small CapsCell network: a convolution to 2 capsules of 4 atoms (batch-normalised), a cell of 4x4
capsules (stride 2), the last cell (its ConvCaps3D skip), 10 classes of 4 atoms."""
RESIZED = [[0, 56, 1, 1, 5, 4, 14, 16, 1], [1, 14, 16, 1, 3, 2, 7, 8, 4], [1, 7, 8, 4, 7, 1, 7, 10, 8], [-1], [2]]
"""capsnet-like on the input upsampled x2 (resize 2)."""


@pytest.mark.slow
@pytest.mark.keras
@pytest.mark.parametrize("genotype, epochs, samples, learning_rate, agreement", [
    (CELL_NET, 3, 1000, 0.003, 0.9),  # 86.1 % float, 86.1 % int8, 97.5 % agreement (docs/deploy.md)
    (RESIZED, 1, 400, 0.01, 0.9),  # 64.9 % float, 63.8 % int8, 96.0 % agreement
])
def test_cell_and_resized_networks_keep_their_accuracy_in_int8(tmp_path, genotype, epochs, samples, learning_rate,
                                                               agreement):
    """Trained a few steps on the packaged subset, deployed on its 1,000 test images: int8 close to
    float, deploy.json with the keys of a Sabour network's, the new steps' shifts recorded (the CapsCell
    network's ConvCaps3D routes three times, as in Keras; routed once, its agreement was 88.0 %)."""
    pytest.importorskip("keras")
    from nas.datasets import load_dataset
    from nas.genotype import Genotype
    from nas.train import TrainConfig, train

    config = TrainConfig(epochs=epochs, batch_size=10, learning_rate=learning_rate, train_samples=samples, threads=1)
    result = train(Genotype.from_list(genotype), load_dataset(), config, progress=False,
                   save_path=tmp_path / "m.keras")
    assert result.status == "ok", result.message
    deployed = _deploy(tmp_path / "m.keras", "--out", tmp_path / "d", "--calibration-images", 64)
    assert deployed.returncode == 0, deployed.stderr
    record = json.loads((tmp_path / "d" / "deploy.json").read_text())
    assert record["float_accuracy"] > 0.5  # trained: chance is 0.1
    assert abs(record["int8_accuracy"] - record["float_accuracy"]) <= 0.05
    assert record["agreement"] >= agreement
    assert record["genotype"][-1] == genotype[-1] and record["genotype"][:2] == genotype[:2]
    assert set(record) >= {"float_accuracy", "int8_accuracy", "agreement", "test_images", "rtl_images",
                           "rtl_bit_exact", "cycles_per_image", "latency_ms_per_image", "energy_mJ_per_image",
                           "shifts", "layers", "model", "genotype", "accelerator", "dataset", "seed"}
    if genotype is CELL_NET:
        assert {"convcaps1.tocaps", "convcaps4.capsadd", "convcaps3d8.route3d", "convcaps3d8.capsadd"} <= set(
            record["shifts"])
        assert [layer["kind"] for layer in record["layers"]].count("convcaps3d") == 1


def test_rtl_figures_price_the_program_words_of_overlay_programs_apart():
    """The tiny deployment on a 16-word program memory, where its operations run as overlay programs:
    the RTL's program bytes and their energy per image are those the runs loaded, the calibrated model's
    `program_bytes` and `program_energy_mJ` (per operation rounding aside), and the DMA's buffer energy
    leaves the program loads out, as the model does (it prices buffer rows only)."""
    import dataclasses

    from capsacc import Accelerator, estimate
    from capsacc.array import ArrayConfig
    from capsacc.calibrated import Calibration
    from capsacc.energy import EventEnergies
    from sim.deploy import network_input, operation_inputs, rtl_figures
    from sim.driver import OperationDriver
    from sim.network_run import run_network

    deployment, pixels = tiny_deployment()
    config = ArrayConfig(rows=4, cols=4, acc_bits=golden.ACC_BITS, batch=len(pixels), program_depth=16)
    run = run_network(deployment.network, OperationDriver(config, "amaranth", offchip=True),
                      network_input(deployment, pixels), operation_inputs=operation_inputs(deployment))
    figures = rtl_figures(run, len(pixels), 100.0)
    loaded = sum(r.program_bytes for r in run.runs)
    assert loaded > 0 and figures["rtl_program_bytes_per_image"] == -(-loaded // len(pixels))
    assert figures["rtl_program_energy_mJ_per_image"] == pytest.approx(loaded * 100.0e-9 / len(pixels))
    calibration = Calibration(config, Calibration.shipped().coefficients, EventEnergies.from_tables(config), 1.0e6)
    accelerator = dataclasses.replace(Accelerator.from_tables(rows=4, cols=4, offchip_pJ_per_byte=100.0),
                                      acc_bits=config.acc_bits, calibration=calibration)
    model = estimate(deployment.network, accelerator)
    assert 0 <= model.program_bytes - figures["rtl_program_bytes_per_image"] < len(deployment.network.operations)
    assert model.program_energy_mJ == pytest.approx(figures["rtl_program_energy_mJ_per_image"], rel=1e-12)
    assert model.dma_buffer_energy_mJ == pytest.approx(figures["rtl_dma_buffer_energy_mJ_per_image"], rel=1e-12)

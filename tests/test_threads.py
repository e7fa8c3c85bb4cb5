"""The thread budget (minicaffe.threads): settings seen by numba and threadpoolctl, the pool,
threads.matmul against np.matmul, and chunked layers against their one-thread results.

Tiny shapes throughout: the chunk sizes are lowered so that tiny blobs and products are split.
"""

import os
import subprocess
import sys
import threading

import numba
import numpy as np
import pytest
from click.testing import CliRunner
from threadpoolctl import ThreadpoolController, threadpool_info

from minicaffe import threads
from minicaffe.cli import main
from minicaffe.testing import layer_from_text, make_blobs

rng = np.random.default_rng(20)


@pytest.fixture
def budget():
    """Restores the thread budget a test changes."""
    before = threads.get_num_threads()
    yield
    threads.set_num_threads(before)


def use_small_chunks(monkeypatch):
    """Chunk sizes that split tiny blobs and products."""
    monkeypatch.setattr(threads, "CHUNK_ELEMENTS", 4)
    monkeypatch.setattr(threads, "SERIAL_FLOPS", 0)
    monkeypatch.setattr(threads, "CHUNK_FLOPS", 1)
    monkeypatch.setattr(threads, "MIN_PIECE", 1)


@pytest.fixture
def small_chunks(monkeypatch):
    use_small_chunks(monkeypatch)


def blas_threads():
    """numpy's BLAS pools (OpenCV, imported by other tests, brings an OpenBLAS of its own that
    minicaffe leaves alone)."""
    from threadpoolctl import ThreadpoolController

    from minicaffe.threads import _numpys_blas
    libraries = _numpys_blas(ThreadpoolController().select(user_api="blas").lib_controllers)
    assert libraries, threadpool_info()
    return {library.filepath: library.num_threads for library in libraries}


# ---------------------------------------------------------------- the budget

def _run_python(code, **env):
    environment = {k: v for k, v in os.environ.items() if k not in ("MINICAFFE_NUM_THREADS", "NUMBA_NUM_THREADS")}
    environment.update(env)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment,
                            timeout=120)
    return result


_REPORT = """
import os, numba
from threadpoolctl import threadpool_info
from minicaffe import threads
budget = threads.get_num_threads()
print(budget, len(os.sched_getaffinity(0)), numba.get_num_threads(), numba.threading_layer(),
      sorted({i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'}))
"""


def test_default_budget_is_the_affinity_blas_one_numba_the_budget():
    result = _run_python(_REPORT, NUMBA_NUM_THREADS="4")
    assert result.returncode == 0, result.stderr
    budget, cores, numba_threads, layer, blas = result.stdout.split(maxsplit=4)
    assert budget == cores
    assert int(numba_threads) == min(int(budget), 4)
    assert layer == "workqueue"
    assert blas.strip() in ("[1]", "[]")


def test_environment_variable_sets_the_budget():
    result = _run_python(_REPORT, MINICAFFE_NUM_THREADS="3", NUMBA_NUM_THREADS="4")
    assert result.returncode == 0, result.stderr
    budget, _, numba_threads, _, _ = result.stdout.split(maxsplit=4)
    assert (budget, numba_threads) == ("3", "3")
    bad = _run_python("from minicaffe import threads; threads.get_num_threads()", MINICAFFE_NUM_THREADS="two")
    assert bad.returncode != 0 and "MINICAFFE_NUM_THREADS='two'" in bad.stderr


def test_set_num_threads_reaches_numba_and_holds_blas_at_one(budget):
    threads.set_num_threads(1)
    assert threads.get_num_threads() == 1
    assert numba.get_num_threads() == 1
    threads.set_num_threads(2)
    assert threads.get_num_threads() == 2
    assert numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)
    assert set(blas_threads().values()) <= {1}
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="whole number"):
            threads.set_num_threads(bad)


def test_matmul_takes_blas_back_to_one_thread(budget):
    threads.set_num_threads(2)
    libraries = ThreadpoolController().select(user_api="blas")
    if not libraries.lib_controllers:
        pytest.skip("numpy has no BLAS that threadpoolctl knows")
    libraries.limit(limits=2)                    # as user code might
    threads.matmul(np.ones((3, 4)), np.ones((4, 5)))
    assert set(blas_threads().values()) == {1}


@pytest.mark.parametrize("args", [["--threads", "1", "layers"], ["layers", "--threads", "1"],
                                  ["layers", "-threads=1"], ["--threads", "2", "layers", "--threads", "1"]])
def test_cli_threads_option(budget, args):
    threads.set_num_threads(2)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert threads.get_num_threads() == 1
    assert numba.get_num_threads() == 1


def test_cli_refuses_zero_threads(budget):
    result = CliRunner().invoke(main, ["layers", "--threads", "0"])
    assert result.exit_code == 2 and "--threads" in result.output


# ---------------------------------------------------------------- the pool

def test_run_covers_every_chunk_once_and_raises_a_chunks_error(budget):
    threads.set_num_threads(3)
    seen = []
    threads.run(lambda start, stop: seen.extend(range(start, stop)), threads.split_even(1000, 7))
    assert sorted(seen) == list(range(1000))

    def fail(start, stop):
        if start == 0:
            raise KeyError("chunk 0")
    with pytest.raises(KeyError, match="chunk 0"):
        threads.run(fail, threads.split_even(100, 10))


def test_split_even_aligns_inner_boundaries_when_it_can():
    assert threads.split_even(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert threads.split_even(2, 5) == [(0, 1), (1, 2)]
    assert threads.split_even(700, 3, 64) == [(0, 256), (256, 448), (448, 700)]
    assert threads.split_even(100, 3, 64) == [(0, 33), (33, 66), (66, 100)]     # too short to align


def test_pool_from_two_threads_at_once(budget, small_chunks):
    # A prefetch thread and the main thread may both run chunked kernels.
    threads.set_num_threads(2)
    layer = layer_from_text('name: "r" type: "ReLU" relu_param { negative_slope: 0.5 }', dtype=np.float32)
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    expected = np.where(x > 0, x, x * np.float32(0.5))
    layer.set_up(make_blobs(x, dtype=np.float32), make_blobs(np.zeros_like(x), dtype=np.float32))
    failures = []

    def work():
        for _ in range(50):
            bottom, top = make_blobs(x, dtype=np.float32), make_blobs(np.zeros_like(x), dtype=np.float32)
            layer.run_forward(bottom, top)
            if not np.array_equal(top[0].data, expected):
                failures.append(1)

    other = threading.Thread(target=work)
    other.start()
    work()
    other.join()
    assert not failures


# ---------------------------------------------------------------- matmul

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("a_shape, b_shape", [
    ((37, 13), (13, 5)),          # rows
    ((3, 13), (13, 29)),          # columns
    ((1, 9), (9, 31)),            # one row: columns
    ((5, 11, 7), (5, 7, 3)),      # groups bundled
    ((2, 23, 6), (2, 6, 4)),      # rows of each group
    ((2, 3, 6), (2, 6, 19)),      # columns of each group
    ((17, 6), (4, 6, 5)),         # a shared by the groups
    ((3, 17, 6), (6, 5)),         # b shared by the groups
])
@pytest.mark.parametrize("count", [1, 2, 3])
def test_matmul_equals_numpy_and_repeats_bit_for_bit(budget, small_chunks, dtype, a_shape, b_shape, count):
    threads.set_num_threads(count)
    a = rng.standard_normal(a_shape).astype(dtype)
    b = rng.standard_normal(b_shape).astype(dtype)
    expected = np.matmul(a, b)
    out = np.full(expected.shape, np.nan, dtype=dtype)
    assert threads.matmul(a, b, out=out) is out
    np.testing.assert_allclose(out, expected, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)
    for _ in range(3):
        np.testing.assert_array_equal(threads.matmul(a, b), out)


def test_matmul_of_transposed_views(budget, small_chunks):
    threads.set_num_threads(2)
    dy, x = rng.standard_normal((6, 40)), rng.standard_normal((6, 30))
    np.testing.assert_allclose(threads.matmul(dy.T, x), dy.T @ x, rtol=1e-12)
    np.testing.assert_allclose(threads.matmul(x.T, dy), x.T @ dy, rtol=1e-12)


@pytest.mark.parametrize("groups, m, n, k", [(1, 300, 20, 9), (1, 2, 500, 9), (7, 50, 30, 9), (40, 5, 5, 5)])
@pytest.mark.parametrize("count", [2, 4])
def test_product_blocks_cover_the_output_once(groups, m, n, k, count, monkeypatch):
    monkeypatch.setattr(threads, "SERIAL_FLOPS", 0)
    monkeypatch.setattr(threads, "CHUNK_FLOPS", 1)
    covered = np.zeros((groups, m, n), dtype=int)
    blocks = threads._product_blocks(groups, m, n, k, count)
    assert 1 < len(blocks) <= max(threads.CHUNKS_PER_THREAD * count, groups)
    for g0, g1, r0, r1, c0, c1 in blocks:
        covered[g0:g1, r0:r1, c0:c1] += 1
    assert (covered == 1).all()
    assert threads._product_blocks(groups, m, n, k, 1) == [(0, groups, 0, m, 0, n)]


def test_matmul_refuses_shapes_that_do_not_multiply():
    with pytest.raises(ValueError, match="do not multiply"):
        threads.matmul(np.ones((2, 3)), np.ones((4, 5)))
    with pytest.raises(ValueError, match="2-D or stacked 3-D"):
        threads.matmul(np.ones(3), np.ones((3, 2)))


# ---------------------------------------------------------------- layers on the pool

_LAYERS = [
    ('type: "ReLU"', [(2, 3, 4, 5)]),
    ('type: "ReLU" relu_param { negative_slope: 0.1 }', [(2, 3, 4, 5)]),
    ('type: "PReLU" prelu_param { filler { type: "gaussian" } }', [(2, 3, 4, 5)]),
    ('type: "PReLU" prelu_param { channel_shared: true filler { type: "gaussian" } }', [(2, 3, 4, 5)]),
    ('type: "Scale" scale_param { bias_term: true filler { type: "gaussian" } bias_filler { type: "gaussian" } }',
     [(2, 3, 4, 5)]),
    ('type: "Scale"', [(2, 3, 4, 5), (3, 4)]),
    ('type: "Bias" bias_param { filler { type: "gaussian" } }', [(2, 3, 4, 5)]),
    ('type: "BatchNorm" batch_norm_param { use_global_stats: false }', [(2, 3, 4, 5)]),
    ('type: "BatchNorm" batch_norm_param { use_global_stats: true }', [(2, 3, 4, 5)]),
    ('type: "Eltwise"', [(2, 3, 4, 5)] * 2),
    ('type: "Eltwise" eltwise_param { operation: PROD }', [(2, 3, 4, 5)] * 3),
    ('type: "Eltwise" eltwise_param { operation: MAX }', [(2, 3, 4, 5)] * 3),
    ('type: "Eltwise" eltwise_param { coeff: 0.5 coeff: -2 }', [(2, 3, 4, 5)] * 2),
    ('type: "Sigmoid"', [(2, 3, 4, 5)]),
    ('type: "TanH"', [(2, 3, 4, 5)]),
    ('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 }', [(2, 3, 7, 6)]),
    ('type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }', [(2, 3, 7, 6)]),
    ('type: "LRN" lrn_param { local_size: 3 alpha: 0.5 }', [(2, 5, 30, 20)]),
    ('type: "LRN" lrn_param { local_size: 3 alpha: 0.5 norm_region: WITHIN_CHANNEL }', [(2, 3, 5, 4)]),
    ('type: "InnerProduct" inner_product_param { num_output: 7 weight_filler { type: "gaussian" } }', [(5, 3, 4)]),
]
_IN_PLACE = ("ReLU", "PReLU", "Scale", "Bias", "BatchNorm", "Sigmoid", "TanH")
_CASES = [(text, shapes, False) for text, shapes in _LAYERS]
_CASES += [(text, shapes, True) for text, shapes in _LAYERS if text.split('"')[1] in _IN_PLACE and len(shapes) == 1]


def _run(text, shapes, dtype, in_place, seed=5):
    """Forward and Backward of one freshly built layer; everything it wrote."""
    draw = np.random.default_rng(seed)
    arrays = [draw.standard_normal(shape) for shape in shapes]
    layer = layer_from_text(f'name: "l" {text}', dtype=dtype)
    bottom = make_blobs(*arrays, dtype=dtype)
    top = [bottom[0]] if in_place else make_blobs(np.zeros(1), dtype=dtype)
    layer.set_up(bottom, top)
    for blob in layer.blobs:        # parameters the same whatever the thread count
        blob.data[...] = np.random.default_rng(seed + 1).standard_normal(blob.shape)
    if "BatchNorm" in text:
        layer.blobs[2].data[...] = 2.0
        layer.blobs[1].data[...] = np.abs(layer.blobs[1].data)
    layer.run_forward(bottom, top)
    outputs = [top[0].data.copy()]
    top[0].diff[...] = draw.standard_normal(top[0].shape)
    layer.run_backward(top, [True] * len(bottom), bottom)
    outputs += [blob.diff.copy() for blob in bottom] + [blob.data.copy() for blob in layer.blobs]
    outputs += [blob.diff.copy() for blob in layer.blobs]
    return outputs


@pytest.mark.parametrize("text, shapes, in_place", _CASES,
                         ids=[text.split('"')[1] + str(i) + ("_in_place" if in_place else "")
                              for i, (text, _, in_place) in enumerate(_CASES)])
def test_layer_on_the_pool_equals_one_thread(budget, monkeypatch, text, shapes, in_place):
    layer_type = text.split('"')[1]
    dtype = np.float32
    threads.set_num_threads(1)
    expected = _run(text, shapes, dtype, in_place)        # one thread, unsplit
    use_small_chunks(monkeypatch)
    for count in (2, 3):
        threads.set_num_threads(count)
        for _ in range(2):          # and the same run to run
            actual = _run(text, shapes, dtype, in_place)
            assert len(actual) == len(expected)
            for got, want in zip(actual, expected):
                if layer_type == "InnerProduct":      # BLAS may round a split product differently
                    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
                else:
                    np.testing.assert_array_equal(got, want)


def test_in_place_layers_match_their_out_of_place_results(budget, small_chunks):
    threads.set_num_threads(2)
    for text, shapes, in_place in _CASES:
        if in_place:
            separate = _run(text, shapes, np.float64, False)
            shared = _run(text, shapes, np.float64, True)
            np.testing.assert_allclose(shared[0], separate[0], rtol=1e-12, err_msg=text)
            np.testing.assert_allclose(shared[1], separate[1], rtol=1e-12, atol=1e-14, err_msg=text)


def test_batch_norm_statistics_repeat_bit_for_bit(budget, small_chunks):
    threads.set_num_threads(2)
    x = rng.standard_normal((4, 6, 9, 7)).astype(np.float32) * 3 + 1
    results = []
    for _ in range(3):
        layer = layer_from_text('name: "bn" type: "BatchNorm" batch_norm_param { use_global_stats: false }',
                                dtype=np.float32)
        bottom, top = make_blobs(x, dtype=np.float32), make_blobs(np.zeros(1), dtype=np.float32)
        layer.set_up(bottom, top)
        layer.run_forward(bottom, top)
        results.append([layer.blobs[0].data.copy(), layer.blobs[1].data.copy(), top[0].data.copy()])
    for other in results[1:]:
        for got, want in zip(other, results[0]):
            np.testing.assert_array_equal(got, want)
    mean = x.astype(np.float64).mean(axis=(0, 2, 3))
    np.testing.assert_allclose(results[0][0], mean, rtol=1e-6)
    m = x[:, 0].size
    np.testing.assert_allclose(results[0][1], x.astype(np.float64).var(axis=(0, 2, 3)) * m / (m - 1), rtol=1e-5)


def test_im2row_chunks_on_the_pool_equal_one_thread_with_a_folded_chain(budget, monkeypatch):
    """Several im2row chunks run side by side, each with its thread's own buffers: the same bits as one
    thread, run to run, with and without a BatchNorm/Scale chain folded in."""
    import minicaffe
    from minicaffe.layers import conv_im2row
    from minicaffe.proto.text import parse_net
    monkeypatch.setattr(conv_im2row, "COLUMN_BUDGET", 1)        # one image per chunk: 5 chunks
    text = """
    layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 5 dim: 6 dim: 7 dim: 7 } } }
    layer { name: "conv" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 12
      kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" } } }
    layer { name: "bn" type: "BatchNorm" bottom: "y" top: "y" }
    layer { name: "scale" type: "Scale" bottom: "y" top: "y" scale_param { bias_term: true } }
    """
    net = minicaffe.Net(parse_net(text), minicaffe.TEST)
    rng = np.random.default_rng(2)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = rng.uniform(0.5, 1.5, blob.shape)
    net.blobs["x"].data[...] = rng.normal(size=net.blobs["x"].shape)
    assert net.layer_dict["conv"].conv_path == "im2row" and net.layer_dict["conv"].path.chunk == 1
    results = {}
    for fold in (True, False):
        net.fold_inference = fold
        for count in (1, 2, 2, 3):
            threads.set_num_threads(count)
            results.setdefault(fold, []).append(net.forward()["y"].copy())
    for runs in results.values():
        for other in runs[1:]:
            np.testing.assert_array_equal(other, runs[0])
    np.testing.assert_allclose(results[True][0], results[False][0], rtol=1e-5, atol=1e-5)

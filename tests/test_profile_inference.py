"""benchmarks/profile_inference.py: its profile of one small net (ONet, batch 1, one round) against OpenCV dnn.

Needs OpenCV (in the test extra). Checks the structure, not the speed.
"""

import importlib.util
import os

import pytest

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks",
                      "profile_inference.py")


@pytest.fixture(scope="module")
def prof():
    pytest.importorskip("cv2")
    spec = importlib.util.spec_from_file_location("profile_inference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_profile_groups_sum_to_the_totals(prof, tmp_path):
    files = prof.B.prepare(str(tmp_path), ["onet"], [1], 0)
    source_net = prof.B.weights_net("onet", 0)
    result = prof.profile("onet", 1, files, source_net, threads=1, repeats=1, max_seconds=5.0, warmup=0,
                          min_seconds=0.0)
    assert result["runs"] == 1
    assert result["difference"][1] <= 1e-3             # OpenCV's outputs were checked against minicaffe's
    groups = result["groups"]
    assert list(groups)[-1] == prof.OUTSIDE
    assert set(groups) - {prof.OUTSIDE} <= set(prof.GROUPS)
    assert {"convolution im2row", "inner product", "pooling", "concat/other"} <= set(groups)
    for values in groups.values():
        assert set(values) == {"minicaffe", "opencv", "layers", "fused"}
    for engine, total in (("minicaffe", result["minicaffe"]), ("opencv", result["opencv"])):
        layers = sum(values[engine] for name, values in groups.items() if name != prof.OUTSIDE)
        assert layers > 0
        assert layers + groups[prof.OUTSIDE][engine] == pytest.approx(total)
        # (No bound on layers / total: the two come from different passes, one run each here, and a
        # cold numba cache or a busy machine can put either far from the other. Structure, not speed.)

    rows = {row["name"]: row for row in result["rows"]}
    assert rows["conv1"]["path"] in ("im2row", "1x1", "direct")
    # OpenCV runs each PReLU inside the layer before it: both engines count it there.
    for index, fc in ((1, "conv1"), (4, "conv4"), (5, "fc5")):
        prelu = rows[f"prelu{index}"]
        assert prelu["opencv"] == 0.0 and prelu["fused"] == "OpenCV"
        assert result["rows"][prelu["owner"]]["name"] == fc
        assert prelu["unit_group"] == rows[fc]["group"]
    assert groups["convolution im2row"]["fused"] > 0
    # minicaffe's Split layers have no OpenCV twin
    assert any(row["type"] == "Split" and row["opencv"] is None for row in result["rows"])

    text = "\n".join(prof.case_section(result) + prof.summary_table([result]))
    assert "ONet 48x48, batch 1" in text and "Slowest minicaffe layers" in text

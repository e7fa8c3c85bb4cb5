"""Plugins (minicaffe.plugins): entry points in the group `minicaffe.layers`, fields read by plain name.

The example plugin in examples/plugin is made visible to a fresh interpreter
the way pip installs it: a `*.dist-info` folder with its entry_points.txt on
sys.path. Each case runs in a subprocess so the plugin's type and field do
not leak into the rest of the suite.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugin"


def _site(tmp_path, entry_point_value):
    site = tmp_path / "site"
    info = site / "minicaffe_hardsigmoid-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: minicaffe-hardsigmoid\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[minicaffe.layers]\nhard_sigmoid = {entry_point_value}\n")
    return site


def _run(tmp_path, script, entry_point_value="minicaffe_hardsigmoid", args=()):
    site = _site(tmp_path, entry_point_value)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(EXAMPLE), str(ROOT)]),
               MINICAFFE_PROGRESS="0")
    env.pop("MINICAFFE_PLUGINS", None)
    command = [sys.executable, "-c", textwrap.dedent(script), *args] if script else list(args)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)


def test_plugin_layer_runs_from_a_file_with_its_field_by_plain_name(tmp_path):
    result = _run(tmp_path, f"""
        import numpy as np
        import minicaffe
        from minicaffe.proto import caffe_pb2
        from minicaffe.proto.text import to_text
        from minicaffe.testing import check_layer_gradient, layer_from_text, make_blobs, empty_blobs

        net = minicaffe.Net({str(EXAMPLE / 'hard_sigmoid_net.prototxt')!r}, minicaffe.TEST)
        x = np.random.default_rng(0).standard_normal(net.blobs["x"].data.shape).astype(np.float32)
        net.blobs["x"].data[...] = x
        out = net.forward()["gate"]
        conv = net.blobs["conv"].data
        expected = np.clip(np.float32(0.25) * conv + np.float32(0.5), 0, 1)
        np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)
        assert 0 < (out == 0).sum() and 0 < (out == 1).sum() and ((out > 0) & (out < 1)).any()

        # binary: the field travels at the fork's number, and reads back
        path = "hs.caffemodel"
        net.save(path)
        saved = caffe_pb2.NetParameter.FromString(open(path, "rb").read())
        gate = [layer for layer in saved.layer if layer.name == "gate"][0]
        from minicaffe.plugins import layer_field
        field = [f for f, _ in gate.ListFields() if f.name == "hard_sigmoid_param"][0]
        assert field.number == 4321, field.number
        assert abs(layer_field(gate, "hard_sigmoid_param").alpha - 0.25) < 1e-7
        text = to_text(gate)
        assert "hard_sigmoid_param {{" in text and "[" not in text, text

        # an unset field gives the message's defaults
        layer = layer_from_text('name: "g" type: "HardSigmoid"')
        assert abs(layer_field(layer.layer_param, "hard_sigmoid_param").alpha - 0.2) < 1e-7

        # gradient, away from the kinks at y = 0 and y = 1
        layer = layer_from_text('name: "g" type: "HardSigmoid" hard_sigmoid_param {{ alpha: 0.5 beta: 0.25 }}')
        x = np.array([[-2.0, -0.3, 0.1, 0.6, 1.0, 3.0]])
        check_layer_gradient(layer, make_blobs(x), empty_blobs(1))
        print("OK")
        """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK")


def test_layers_command_names_the_plugin_and_the_cli_runs_its_net(tmp_path):
    listed = _run(tmp_path, None, args=[sys.executable, "-m", "minicaffe", "layers", "--forks"])
    assert listed.returncode == 0, listed.stderr[-3000:]
    line = [entry for entry in listed.stdout.splitlines() if entry.startswith("HardSigmoid")]
    assert line and "plugin minicaffe-hardsigmoid (hard_sigmoid)" in line[0]
    assert any(entry.startswith("PriorBox") and "SSD" in entry for entry in listed.stdout.splitlines())
    assert not any(entry.startswith("Convolution") for entry in listed.stdout.splitlines())
    forward = _run(tmp_path, None, args=[sys.executable, "-m", "minicaffe", "forward",
                                         str(EXAMPLE / "hard_sigmoid_net.prototxt")])
    assert forward.returncode == 0, forward.stderr[-3000:]
    assert "gate: shape 2x4x4x4" in forward.stdout


def test_a_broken_plugin_is_a_warning_and_minicaffe_goes_on(tmp_path):
    result = _run(tmp_path, """
        import warnings
        import minicaffe
        from minicaffe.registry import known_types
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            types = known_types()
        assert "Convolution" in types and "HardSigmoid" not in types
        messages = [str(w.message) for w in caught]
        assert any("minicaffe-hardsigmoid (hard_sigmoid)" in m and "no_such_module" in m for m in messages), messages
        print("OK")
        """, entry_point_value="no_such_module")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK")


def test_plugins_can_be_turned_off(tmp_path):
    result = _run(tmp_path, """
        import os
        os.environ["MINICAFFE_PLUGINS"] = "0"
        from minicaffe.registry import known_types
        assert "HardSigmoid" not in known_types()
        print("OK")
        """)
    assert result.returncode == 0, result.stderr[-3000:]


def test_add_layer_field_refuses_taken_and_reserved_numbers(tmp_path):
    result = _run(tmp_path, """
        from minicaffe.errors import MinicaffeError
        from minicaffe.plugins import add_layer_field
        from minicaffe.proto import caffe_pb2
        import minicaffe_hardsigmoid
        from minicaffe_hardsigmoid.hard_sigmoid_pb2 import HardSigmoidParameter
        for name, number, words in [("x_param", 106, "convolution_param"), ("x_param", 5050, "reserved"),
                                    ("x_param", 4321, "hard_sigmoid_param"), ("norm_param", 7777, "already has")]:
            try:
                add_layer_field(name, number, HardSigmoidParameter)
            except MinicaffeError as exc:
                assert words in str(exc), (words, str(exc))
            else:
                raise AssertionError((name, number))
        print("OK")
        """, entry_point_value="no_such_module")
    assert result.returncode == 0, result.stderr[-3000:]

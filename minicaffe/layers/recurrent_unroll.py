"""The unrolled nets behind RNN and LSTM, written as NetParameters as BVLC Caffe's FillUnrolledNet.

Blob and layer names, layer order and parameter names follow Caffe's, so the
unrolled net owns its parameters in Caffe's order (the first layer naming a
``param`` owns it; the later steps share it). The inputs ``x``, ``cont`` and
``x_static`` come from an Input layer the caller adds first.

One difference that changes no number: the sharing copies of a weight (steps 2
to T) get no filler, since their blobs are replaced by the owner's at once;
Caffe fills each and throws the values away.
"""

from __future__ import annotations

from ..proto import caffe_pb2


def _inner_product(net, name, bottom, top, num_output, params, axis, recurrent_param, owner):
    """An InnerProduct layer (with bias when ``params`` names two blobs)."""
    layer = net.layer.add(name=name, type="InnerProduct", bottom=[bottom], top=[top])
    ip = layer.inner_product_param
    ip.num_output = num_output
    ip.axis = axis
    ip.bias_term = len(params) == 2
    if owner:
        ip.weight_filler.CopyFrom(recurrent_param.weight_filler)
        if ip.bias_term:
            ip.bias_filler.CopyFrom(recurrent_param.bias_filler)
    for param_name in params:
        layer.param.add(name=param_name)
    return layer


def _common_head(net, T, N, gate_dim, static_input, recurrent_param, state_tops, names):
    """State inputs, the cont slice, the input transform (all steps at once) and its slice."""
    state = net.layer.add(name="state_input", type="Input", top=list(state_tops))
    for _ in state_tops:
        state.input_param.shape.add().dim.extend([1, N, recurrent_param.num_output])
    cont_slice = net.layer.add(name="cont_slice", type="Slice", bottom=["cont"])
    cont_slice.slice_param.axis = 0
    x_transform = _inner_product(net, "x_transform", "x", names["x_out"], gate_dim,
                                 [names["W_x"], names["b"]], 2, recurrent_param, owner=True)
    x_transform.propagate_down.append(True)
    if static_input:
        static = _inner_product(net, names["static_out"], "x_static", names["static_out"] + "_preshape",
                                gate_dim, [names["W_static"]], 1, recurrent_param, owner=True)
        static.propagate_down.append(True)
        reshape = net.layer.add(name=names["static_out"] + "_reshape", type="Reshape",
                                bottom=[names["static_out"] + "_preshape"], top=[names["static_out"]])
        reshape.reshape_param.shape.dim.extend([1, -1, gate_dim])   # one step; N inferred
    x_slice = net.layer.add(name=names["x_out"] + "_slice", type="Slice", bottom=[names["x_out"]])
    x_slice.slice_param.axis = 0
    for t in range(1, T + 1):
        cont_slice.top.append(f"cont_{t}")
        x_slice.top.append(f"{names['x_out']}_{t}")


def _conted_state(net, t):
    """``h_conted_{t-1} = cont_t * h_{t-1}``: the state is flushed where a sequence starts."""
    layer = net.layer.add(name=f"h_conted_{t - 1}", type="Scale", bottom=[f"h_{t - 1}", f"cont_{t}"],
                          top=[f"h_conted_{t - 1}"])
    layer.scale_param.axis = 0


def _sum(net, name, bottoms, top):
    layer = net.layer.add(name=name, type="Eltwise", bottom=bottoms, top=[top])
    layer.eltwise_param.operation = caffe_pb2.EltwiseParameter.SUM


def build_rnn(net, T, N, num_output, static_input, recurrent_param):
    """Caffe's RNNLayer::FillUnrolledNet: parameters W_xh, b_h, [W_xh_static], W_hh, W_ho, b_o."""
    names = {"x_out": "W_xh_x", "W_x": "W_xh", "b": "b_h", "static_out": "W_xh_x_static",
             "W_static": "W_xh_static"}
    _common_head(net, T, N, num_output, static_input, recurrent_param, ["h_0"], names)
    concat = caffe_pb2.LayerParameter(name="o_concat", type="Concat", top=["o"])
    concat.concat_param.axis = 0
    for t in range(1, T + 1):
        _conted_state(net, t)
        _inner_product(net, f"W_hh_h_{t - 1}", f"h_conted_{t - 1}", f"W_hh_h_{t - 1}", num_output,
                       ["W_hh"], 2, recurrent_param, owner=t == 1)
        _sum(net, f"h_input_sum_{t}", [f"W_hh_h_{t - 1}", f"W_xh_x_{t}"] + (["W_xh_x_static"] if static_input else []),
             f"h_neuron_input_{t}")
        net.layer.add(name=f"h_neuron_{t}", type="TanH", bottom=[f"h_neuron_input_{t}"], top=[f"h_{t}"])
        _inner_product(net, f"W_ho_h_{t}", f"h_{t}", f"W_ho_h_{t}", num_output, ["W_ho", "b_o"], 2,
                       recurrent_param, owner=t == 1)
        net.layer.add(name=f"o_neuron_{t}", type="TanH", bottom=[f"W_ho_h_{t}"], top=[f"o_{t}"])
        concat.bottom.append(f"o_{t}")
    net.layer.add().CopyFrom(concat)


def build_lstm(net, T, N, num_output, static_input, recurrent_param):
    """Caffe's LSTMLayer::FillUnrolledNet: parameters W_xc, b_c, [W_xc_static], W_hc (gates i, f, o, g)."""
    names = {"x_out": "W_xc_x", "W_x": "W_xc", "b": "b_c", "static_out": "W_xc_x_static",
             "W_static": "W_xc_static"}
    _common_head(net, T, N, 4 * num_output, static_input, recurrent_param, ["c_0", "h_0"], names)
    concat = caffe_pb2.LayerParameter(name="h_concat", type="Concat", top=["h"])
    concat.concat_param.axis = 0
    for t in range(1, T + 1):
        _conted_state(net, t)
        _inner_product(net, f"transform_{t}", f"h_conted_{t - 1}", f"W_hc_h_{t - 1}", 4 * num_output,
                       ["W_hc"], 2, recurrent_param, owner=t == 1)
        _sum(net, f"gate_input_{t}", [f"W_hc_h_{t - 1}", f"W_xc_x_{t}"] + (["W_xc_x_static"] if static_input else []),
             f"gate_input_{t}")
        net.layer.add(name=f"unit_{t}", type="LSTMUnit", bottom=[f"c_{t - 1}", f"gate_input_{t}", f"cont_{t}"],
                      top=[f"c_{t}", f"h_{t}"])
        concat.bottom.append(f"h_{t}")
    net.layer.add(name="c_T_copy", type="Split", bottom=[f"c_{T}"], top=["c_T"])
    net.layer.add().CopyFrom(concat)


def add_pseudo_losses(net, outputs):
    """Caffe's pseudo-losses: a Reduction with loss weight 1 on each output, so Backward reaches
    everything the outputs depend on. They are never run. Returns their names."""
    names = []
    for output in outputs:
        name = f"{output}_pseudoloss"
        net.layer.add(name=name, type="Reduction", bottom=[output], top=[name], loss_weight=[1.0])
        names.append(name)
    return names

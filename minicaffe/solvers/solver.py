"""The Solver: Caffe's training loop (Solver::Step, Test, Snapshot, Restore).

One iteration, as BVLC Caffe runs it: clear parameter diffs; test when
``iter % test_interval == 0`` (and ``iter > 0`` or ``test_initialization``);
``iter_size`` forward/backward passes accumulating gradients; display; then the
update (:meth:`apply_update`): learning rate from the policy, clip by the global
L2 norm (``clip_gradients``), scale by 1/``iter_size``, weight decay (L2 or L1,
times each parameter's ``decay_mult``), the type's rule with ``rate * lr_mult``,
and ``data -= diff``; ``iter += 1``; snapshot every ``snapshot`` iterations.

Snapshots are ``PREFIX_iter_N.caffemodel`` + ``.solverstate`` (or ``.h5`` files
with ``snapshot_format: HDF5``), each written to a temporary file and renamed.
Resuming is exact: the solverstate also keeps the random generator's state and
each data layer's reading position (minicaffe fields; Caffe's own solverstates
still load).

Data-parallel training (``mpiexec -n K``, :mod:`minicaffe.distributed`) follows
Caffe's multi-GPU rules: each rank seeds its generator with ``random_seed +
rank``; rank 0's weights, history and data positions are broadcast when
training starts (or resumes); each rank runs its own batch of its shard of the
data; after Backward the ranks' gradients are summed in one all-reduce and
scaled by 1/K (:meth:`Solver._average_over_ranks`, the one place), before
clipping, ``iter_size`` normalization, weight decay and the update, which
therefore keep their single-process meaning. The loss every rank logs and acts
on is the average over the ranks. Rank 0 alone builds the test nets, tests,
logs and writes snapshots; a snapshot holds every rank's random state (and a
data cursor per rank where one differs from rank 0's).

From Python, training logs Caffe's lines to stderr with no set-up, and
``solve()`` and ``step(n)`` with n > 1 draw a progress bar on a terminal or in a
notebook (see :mod:`minicaffe.logs` for where the lines go and the switches).

GPU: in GPU mode (``minicaffe.set_mode_gpu()`` or ``solver_mode: GPU``) the
per-iteration work stays on the device, as in Caffe's solvers: clearing the
parameter diffs, the 1/``iter_size`` scaling, weight decay (L2 an axpy, L1 a
sign kernel), the update rules' kernels (:mod:`.updates`) over history blobs
that live on the device, and ``data -= diff`` (Net's, an axpy there). Gradient clipping brings one
float per parameter to the host (its sum of squares, as Caffe's
``sumsq_diff``); the NaN check one flag per iteration; a test pass sums the
test nets' outputs on the device and copies the sums once at its end. Only
snapshots copy weights and history to the host (once each); a restore writes
them on the host and they go back to the device at the next update.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from contextlib import contextmanager, nullcontext

import numpy as np

from .. import distributed, fillers, gpu, gpu_blas, logs
from ..blob import Blob
from ..errors import MinicaffeError
from ..graph import TEST, TRAIN
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..io import array_to_blobproto, atomic_write_bytes, blobproto_to_array, write_caffemodel
from ..mode import mode as current_mode
from ..net import Net
from ..proto import caffe_pb2
from ..proto.text import read_solver
from .lr_policy import POLICIES, check_policy, learning_rate

log = logging.getLogger("minicaffe")


# ---------------------------------------------------------------- GPU kernels

@gpu.jit
def _add_sign_gpu(decay, data, diff):
    """diff += decay * sign(data): L1 weight decay (Caffe's caffe_gpu_sign then axpy, fused)."""
    for i in range(cuda.grid(1), diff.size, cuda.gridsize(1)):
        value = data[i]
        if value > 0:
            diff[i] += decay
        elif value < 0:
            diff[i] -= decay


@gpu.jit
def _flag_non_finite_gpu(values, flag):
    for i in range(cuda.grid(1), values.size, cuda.gridsize(1)):
        if not math.isfinite(values[i]):
            flag[0] = 1


@gpu.jit
def _accumulate_gpu(values, totals):
    """totals += values, in float64 (a test pass sums each output's values over its iterations)."""
    for i in range(cuda.grid(1), totals.size, cuda.gridsize(1)):
        totals[i] += values[i]


def _launch(kernel, count, *arguments):
    if count:
        kernel[gpu.strided(count)](*arguments)


class HistoryArrays:
    """The update history as host arrays (``Solver.history``): item i is history blob i's ``data``, so reading
    it brings a history that lives on the device to the host, and writing it is seen by the next update."""

    def __init__(self, blobs):
        self._blobs = blobs

    def __len__(self):
        return len(self._blobs)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [blob.data for blob in self._blobs[index]]
        return self._blobs[index].data

    def __iter__(self):
        return (blob.data for blob in self._blobs)


class Solver:
    """Base of the six solver types. ``Solver(path)`` builds the type the file names (pycaffe style)."""

    type_name = None
    history_sets = 1

    def __new__(cls, solver=None, *args, **kwargs):  # noqa: D102 - picks the subclass
        if cls is Solver:
            from .updates import SOLVER_TYPES
            param = _read_param(solver)
            try:
                cls = SOLVER_TYPES[param.type]
            except KeyError:
                raise MinicaffeError(f"unknown solver type '{param.type}' "
                                     f"(known: {', '.join(SOLVER_TYPES)})") from None
        return super().__new__(cls)

    def __init__(self, solver, dtype=np.float32, source=None):
        """``solver``: a solver .prototxt path or a SolverParameter; ``source`` names the file a
        SolverParameter came from (relative net paths and the default snapshot prefix use it)."""
        logs.default_logging()
        self.param = _read_param(solver)
        self.source = solver if isinstance(solver, (str, os.PathLike)) else source
        if self.type_name is not None and self.param.type != self.type_name:
            log.info("solver file names type %s; building %s as asked", self.param.type, self.type_name)
        _fill_snapshot_prefix(self.param, self.source)
        self._refuse_ssd_fields()
        self._check_values()
        self.check_parameters()
        # This process's place in a data-parallel run (rank 0 of 1 without MPI).
        self.world = distributed.world()
        if self.param.random_seed >= 0:     # Caffe's Solver::Init: each rank its own stream
            fillers.set_random_seed(self.param.random_seed + self.world.rank)
        self._choose_mode()
        self.dtype = np.dtype(dtype)
        self.net = self._train_net()
        self._warn_if_no_loss()
        self.test_nets = self._test_nets()
        self._check_snapshot_names()
        self.learnable = self.net.learnable_param_specs
        from ..memory_budget import check_training_memory
        check_training_memory(self)     # before the history and the first pass allocate: refuse what cannot fit
        # One blob per parameter (two sets for AdaDelta and Adam), in SolverState's order (Caffe's history_):
        # on the device in GPU mode; ``history`` shows them as host arrays.
        self.history_blobs = [Blob(entry.blob.shape, dtype=entry.blob.dtype)
                              for _ in range(self.history_sets) for entry in self.learnable]
        self.history = HistoryArrays(self.history_blobs)
        self.iter = 0
        self.current_step = 0
        self.losses = []
        self.smoothed_loss = 0.0
        self._callbacks = []
        self.requested_action = None   # "stop" or "snapshot", set by signal handlers
        self.requested_early_exit = False
        # Stop at the first NaN/Inf in the loss or a parameter, naming the layer (Caffe trains on silently).
        self.nan_check = True
        # A tqdm bar for solve() and step(n > 1) where logs.progress_wanted() allows (the CLI draws its own).
        self.progress_bar = self.world.rank == 0
        self._bar = None
        # Data-parallel: whether the ranks were made identical (rank 0's state broadcast) for the next step,
        # and whether that broadcast includes rank 0's data cursors (not after a restore: each rank has its own).
        self._ranks_synced = False
        self._share_cursors = True
        self._flat_diffs = None         # the all-reduce's buffer: every learnable diff, flat
        self._non_finite_flag = None    # GPU mode: the NaN check's flag on the device

    # ------------------------------------------------------------ construction
    def check_parameters(self):
        """Type-specific checks of the solver parameters (Caffe's PreSolve checks)."""

    def fail(self, message):
        raise MinicaffeError(f"{self.source or 'solver'}: {message}")

    def _check_values(self):
        """Refuse values outside their domain before anything is built: NUL bytes in paths, and the
        learning-rate policy's fields (an unknown policy is reported at the first step, as Caffe does)."""
        param = self.param
        paths = [("net", param.net), ("train_net", param.train_net), ("snapshot_prefix", param.snapshot_prefix)]
        paths += [(f"test_net[{index}]", value) for index, value in enumerate(param.test_net)]
        paths += [(f"weights[{index}]", value) for index, value in enumerate(param.weights)]
        for name, value in paths:
            if "\0" in value:
                self.fail(f"{name} {value[:200]!r} contains a NUL byte, which no path can")
        if param.lr_policy in POLICIES:
            problem = check_policy(param)
            if problem:
                self.fail(problem)

    def _refuse_ssd_fields(self):
        # SSD's solver fields parse (caffe.proto) so its files load, but its detection evaluation and
        # "plateau" policy are not implemented: say so rather than ignore them.
        param = self.param
        if param.eval_type == "detection":
            self.fail('eval_type "detection" (the SSD fork\'s mAP evaluation in test passes) is not '
                      "implemented; remove it to report the test nets' outputs as Caffe does")
        if param.lr_policy == "plateau" or len(param.plateau_winsize):
            self.fail('the SSD fork\'s "plateau" lr_policy (plateau_winsize) is not implemented')

    def _choose_mode(self):
        from .. import gpu, mode
        # Only an explicit solver_mode counts (the schema's default is GPU), as in `caffe train`.
        explicit_gpu = self.param.HasField("solver_mode") and self.param.solver_mode == caffe_pb2.SolverParameter.GPU
        if explicit_gpu and mode.mode() == "cpu":
            if gpu.available():
                mode.set_device(self.param.device_id)
                mode.set_mode_gpu()
            else:   # one line: the CLI shows a MinicaffeWarning as `minicaffe: warning: ...`
                import warnings
                from ..errors import MinicaffeWarning
                warnings.warn("solver_mode: GPU, but no CUDA device is usable: training on the CPU",
                              MinicaffeWarning, stacklevel=3)

    def _check_snapshot_names(self):
        """HDF5 snapshots keep a group per layer name: refuse, before training, a name that cannot be one."""
        if self.param.snapshot_format == caffe_pb2.SolverParameter.HDF5:
            from .hdf5 import layer_names_problem
            problem = layer_names_problem(self.net)
            if problem:
                self.fail(f"snapshot_format: HDF5, but {problem}; rename the layer, or snapshot in BINARYPROTO")

    def _warn_if_no_loss(self):
        # Caffe computes the loss from the tops with a nonzero loss_weight only; with none, Backward does nothing.
        if not any(planned.is_loss for planned in self.net.plan.layers):
            log.warning("The train net has no loss (no top with a nonzero loss_weight): Backward computes no "
                        "gradients, so training changes no weight except by weight decay")

    def _quiet_numpy(self):
        """numpy's floating-point warnings off while the NaN check is on: minicaffe stops at the first
        NaN/Inf itself, naming the layer, so numpy's RuntimeWarning (overflow, invalid value) would only
        come first and say less. A context of this call only (np.errstate), not a global filter."""
        return np.errstate(all="ignore") if self.nan_check else nullcontext()

    def _net_param(self, path=None, message=None):
        """(NetParameter, folder its Python layers' modules may sit in): the net file's, or the solver's."""
        if message is not None:
            net = caffe_pb2.NetParameter()
            net.CopyFrom(message)
            from ..proto.upgrade import upgrade_net
            upgrade_net(net, source="net_param")
            return net, os.path.dirname(os.path.abspath(self.source)) if self.source else None
        from ..proto.text import read_net
        resolved = _resolve(path, self.source)
        return read_net(resolved), os.path.dirname(os.path.abspath(resolved))

    def _build_net(self, net_param, folder, state):
        from ..layers.python_layer import model_folder
        with model_folder(folder):
            return Net(net_param, phase=state.phase, level=state.level, dtype=self.dtype)

    def _train_net(self):
        param = self.param
        sources = [param.HasField("net"), param.HasField("net_param"),
                   param.HasField("train_net"), param.HasField("train_net_param")]
        if sum(sources) != 1:
            self.fail("give exactly one of net, net_param, train_net, train_net_param")
        if param.HasField("train_net_param"):
            net_param, folder = self._net_param(message=param.train_net_param)
        elif param.HasField("train_net"):
            net_param, folder = self._net_param(param.train_net)
        elif param.HasField("net_param"):
            net_param, folder = self._net_param(message=param.net_param)
        else:
            net_param, folder = self._net_param(param.net)
        state = caffe_pb2.NetState(phase=TRAIN)
        state.MergeFrom(net_param.state)
        state.MergeFrom(param.train_state)
        net_param.state.CopyFrom(state)
        log.info("Creating training net")
        return self._build_net(net_param, folder, state)

    def _test_nets(self):
        param = self.param
        specified = [message for message in param.test_net_param] + [path for path in param.test_net]
        generic = param.HasField("net") or param.HasField("net_param")
        if generic and len(param.test_iter) < len(specified) or not generic and len(param.test_iter) != len(specified):
            self.fail("test_iter must be given once per test net")
        sources = [self._net_param(message=m) for m in param.test_net_param]
        sources += [self._net_param(p) for p in param.test_net]
        for _ in range(len(param.test_iter) - len(specified)):
            sources.append(self._net_param(message=param.net_param) if param.HasField("net_param")
                           else self._net_param(param.net))
        if param.test_state and len(param.test_state) != len(sources):
            self.fail("test_state must be unspecified or given once per test net")
        if sources and param.test_interval <= 0:
            self.fail("test nets need a positive test_interval")
        if self.world.rank != 0:
            return []       # data-parallel: rank 0 alone tests (Caffe's root solver)
        nets = []
        for index, (net_param, folder) in enumerate(sources):
            state = caffe_pb2.NetState(phase=TEST)
            state.MergeFrom(net_param.state)
            if param.test_state:
                state.MergeFrom(param.test_state[index])
            net_param.state.CopyFrom(state)
            log.info("Creating test net (#%d)", index)
            nets.append(self._build_net(net_param, folder, state))
        return nets

    # ------------------------------------------------------------ pycaffe API
    def add_callback(self, on_start=None, on_gradients_ready=None):
        """Call ``on_start()`` before each iteration and ``on_gradients_ready()`` before each update."""
        self._callbacks.append((on_start, on_gradients_ready))

    def share_weights(self, net):
        net.share_with(self.net)

    @property
    def lr(self) -> float:
        """The learning rate of the current iteration (pycaffe's ``SGDSolver.lr``)."""
        return learning_rate(self.param, self.iter, self.current_step)[0]

    def step(self, iterations: int):
        """Run ``iterations`` training iterations (Caffe's Solver::Step), with a progress bar when more than one."""
        logs.default_logging()
        iterations = int(iterations)
        with self._progress(iterations, leave=False) if iterations > 1 else nullcontext():
            self._step(iterations)

    @contextmanager
    def _progress(self, total, initial=0, leave=True):
        """A bar over this call where one is wanted; inside solve(), step() draws none of its own."""
        if self._bar is not None or not self.progress_bar:
            yield
            return
        with logs.progress_bar(total, initial, leave) as self._bar:
            try:
                yield
            finally:
                self._bar = None

    def _step(self, iterations):
        if self.world.size > 1 and not self._ranks_synced:
            self._start_ranks_together()
        start_iter = self.iter
        stop_iter = self.iter + iterations
        self.losses = []
        self.smoothed_loss = 0.0
        last_display_iter, timer = self.iter, time.perf_counter()
        while self.iter < stop_iter:
            self.net.clear_param_diffs()        # a fill kernel in GPU mode
            if (self.param.test_interval and self.iter % self.param.test_interval == 0
                    and (self.iter > 0 or self.param.test_initialization)):
                with self._quiet_numpy():
                    self.test_all()
                if self.requested_early_exit:
                    break
            for on_start, _ in self._callbacks:
                if on_start:
                    on_start()
            display = self.param.display and self.iter % self.param.display == 0
            self.net.debug_info = bool(display and self.param.debug_info)
            loss = 0.0
            with self._quiet_numpy():
                for _ in range(max(1, self.param.iter_size)):
                    loss += self.net.forward_backward()
                loss /= max(1, self.param.iter_size)
            outputs = agreed = None
            if self.world.size > 1:
                loss, outputs, agreed = self._average_over_ranks(loss, display)
            if self.nan_check and not np.isfinite(loss):
                raise _non_finite(self.net, self.iter, "the loss")
            self._update_smoothed_loss(loss, start_iter)
            if display:
                lapse = time.perf_counter() - timer
                per_second = (self.iter - last_display_iter) / lapse if lapse else 0.0
                log.info("Iteration %d (%.6g iter/s, %.4gs/%d iters), loss = %.6g", self.iter, per_second, lapse,
                         self.param.display, self.smoothed_loss)
                timer, last_display_iter = time.perf_counter(), self.iter
                self._log_outputs("Train", self.net, outputs or {name: self.net.blobs[name].read_data()
                                                                 for name in self.net.outputs})
            for _, on_gradients_ready in self._callbacks:
                if on_gradients_ready:
                    on_gradients_ready()
            with self._quiet_numpy():
                self.apply_update()
            if self.nan_check:
                self._check_parameters_finite()
            self.iter += 1
            if self._bar is not None:
                self._bar.update(self.smoothed_loss)
            if self.world.size > 1:
                request = agreed        # what any rank was asked, taken at the all-reduce
            else:
                request = self.requested_action
                self.requested_action = None
            if (self.param.snapshot and self.iter % self.param.snapshot == 0) or request == "snapshot":
                self.snapshot()
            if request == "stop":
                self.requested_early_exit = True
                break

    def solve(self, resume=None):
        """Train to max_iter (restoring from ``resume`` first), snapshot, and run a final test."""
        logs.default_logging()
        log.info("Solving %s", self.net.plan.name)
        log.info("Learning Rate Policy: %s", self.param.lr_policy)
        self.requested_early_exit = False
        if resume:
            log.info("Restoring previous solver status from %s", resume)
            self.restore(resume)
        with self._progress(self.param.max_iter, self.iter):
            self._solve()
        # Data-parallel: the others wait for rank 0's last snapshot and test (it tells them it is alive).
        self.world.barrier("the end of training (rank 0's last test and snapshot)")

    def _solve(self):
        start_iter = self.iter
        self._step(self.param.max_iter - self.iter)
        if self.param.snapshot_after_train and (not self.param.snapshot or self.iter % self.param.snapshot != 0):
            self.snapshot()
        if self.requested_early_exit:
            log.info("Optimization stopped early.")
            return
        if self.param.display and self.iter % self.param.display == 0 and self.world.rank == 0:
            with self._quiet_numpy():
                loss = self.net.forward_from_to(0, len(self.net.layers) - 1)
            self._update_smoothed_loss(loss, start_iter)
            log.info("Iteration %d, loss = %.6g", self.iter, self.smoothed_loss)
        if self.param.test_interval and self.iter % self.param.test_interval == 0:
            with self._quiet_numpy():
                self.test_all()
        log.info("Optimization Done.")

    def _update_smoothed_loss(self, loss, start_iter):
        average = max(1, self.param.average_loss)
        if len(self.losses) < average:
            self.losses.append(loss)
            self.smoothed_loss = (self.smoothed_loss * (len(self.losses) - 1) + loss) / len(self.losses)
        else:
            index = (self.iter - start_iter) % average
            self.smoothed_loss += (loss - self.losses[index]) / average
            self.losses[index] = loss

    # ------------------------------------------------------------ testing
    def test_all(self):
        """Test every test net; returns a list of {output name: mean score} per test net."""
        return [self.test(index) for index in range(len(self.test_nets))]

    def test(self, index=0):
        log.info("Iteration %d, Testing net (#%d)", self.iter, index)
        net = self.test_nets[index]
        net.share_with(self.net)
        iterations = self.param.test_iter[index]
        if current_mode() == "gpu":
            totals, loss = self._test_on_device(net, iterations)
        else:
            totals, loss = {}, 0.0
            for _ in range(iterations):
                self.world.keepalive()      # data-parallel: the other ranks wait meanwhile
                net.forward()
                loss += net.last_loss
                for name in net.outputs:
                    values = net.blobs[name].read_data().astype(np.float64).reshape(-1)
                    totals[name] = totals.get(name, 0.0) + values
        if self.param.test_compute_loss:
            log.info("Test loss: %.6g", loss / iterations)
        means = {name: total / iterations for name, total in totals.items()}
        self._log_outputs("Test", net, means)
        return {name: (float(value[0]) if value.size == 1 else value) for name, value in means.items()}

    def _test_on_device(self, net, iterations):
        """GPU mode: the test pass with each output summed on the device (float64, as on the CPU) and copied to
        the host once at the end; net.forward() would copy every output at every iteration."""
        totals, loss = {}, 0.0
        for _ in range(iterations):
            self.world.keepalive()
            net.last_loss = net.forward_from_to(0, len(net.layers) - 1)
            loss += net.last_loss
            for name in net.outputs:
                blob, total = net.blobs[name], totals.get(name)
                if total is None:
                    total = totals[name] = gpu.device_zeros(blob.count, np.float64)
                if isinstance(total, np.ndarray) or total.size != blob.count:
                    # an output whose size changed: sum on the host from here, with the CPU path's broadcasting
                    host = total if isinstance(total, np.ndarray) else total.copy_to_host()
                    totals[name] = host + blob.read_data().astype(np.float64).reshape(-1)
                else:
                    _launch(_accumulate_gpu, blob.count, blob.gpu_data, total)
        return {name: total if isinstance(total, np.ndarray) else total.copy_to_host()
                for name, total in totals.items()}, loss

    def _log_outputs(self, kind, net, values):
        weights = net.blob_loss_weights
        number = 0
        for name, array in values.items():
            for value in np.asarray(array, dtype=np.float64).reshape(-1):
                extra = ""
                if weights[name]:
                    extra = f" (* {weights[name]:g} = {weights[name] * value:.6g} loss)"
                log.info("    %s net output #%d: %s = %.6g%s", kind, number, name, value, extra)
                number += 1

    # ------------------------------------------------------------ the update
    def apply_update(self):
        """Turn the accumulated gradients into a step and apply it (Caffe's ApplyUpdate)."""
        rate, self.current_step = learning_rate(self.param, self.iter, self.current_step)
        if self.param.display and self.iter % self.param.display == 0:
            log.info("Iteration %d, lr = %.6g", self.iter, rate)
        self.clip_gradients()
        on_device = current_mode() == "gpu"
        rule = self._device_rule() if on_device else None
        for index, entry in enumerate(self.learnable):
            self.normalize(index)
            self.regularize(index)
            (rule or self.compute_update_value)(index, rate * entry.lr_mult)
        self.net.update()                       # an axpy on the device in GPU mode

    def _device_rule(self):
        """The type's ``compute_update_value_gpu``, or None where a subclass (a user's) redefines the CPU rule
        below it or defines none: that rule then runs on host copies, as its author wrote it."""
        for cls in type(self).__mro__:
            defined = vars(cls)
            if "compute_update_value_gpu" in defined:
                return self.compute_update_value_gpu
            if "compute_update_value" in defined:
                return None
        return None

    def device_arrays(self, index):
        """For an update rule on the device: (parameter ``index``'s diff, the tuple of its history arrays, the
        diff's scalar type), flat device arrays that the rule may write."""
        diff = self.learnable[index].blob.mutable_gpu_diff
        count = len(self.learnable)
        history = tuple(self.history_blobs[index + k * count].mutable_gpu_data for k in range(self.history_sets))
        return diff, history, diff.dtype.type

    # ------------------------------------------------------------ data-parallel (minicaffe.distributed)
    def _start_ranks_together(self):
        """Make every rank start from rank 0's state (Caffe's NCCL::Broadcast): every parameter blob of the
        train net and the update history; on a fresh start also rank 0's data cursors (the shuffling seeds
        and rand_skip each rank drew from its own stream), so that the ranks shard one and the same stream.
        After a restore each rank keeps the cursor it restored."""
        from ..threads import get_num_threads
        world = self.world
        log.info("Data-parallel training on %d ranks (%d on this machine, %d threads each): the effective batch "
                 "is %d x the train net's; gradients are averaged over the ranks", world.size, world.local_size,
                 get_num_threads(), world.size)
        blobs = list({id(blob): blob for layer in self.net.layers for blob in layer.blobs}.values())
        arrays = [blob.data for blob in blobs] + list(self.history)
        if arrays:
            flat = np.concatenate([array.reshape(-1) for array in arrays]).astype(self.dtype, copy=False)
            self.world.broadcast([flat], "the broadcast of rank 0's weights")
            offset = 0
            for blob in blobs:
                blob.data[...] = flat[offset:offset + blob.count].reshape(blob.shape)
                offset += blob.count
            for array in self.history:
                array[...] = flat[offset:offset + array.size].reshape(array.shape)
                offset += array.size
        if self._share_cursors:
            cursors = [[layer_name, cursor] for net_name, layer_name, cursor in self._cursors() if net_name == "train"]
            payload = json.dumps(cursors).encode() if self.world.rank == 0 else None
            payload = self.world.broadcast_bytes(payload, "the broadcast of rank 0's data cursors")
            if self.world.rank != 0:
                layers = {layer.name: layer for layer in self.net.layers}
                for layer_name, cursor in json.loads(payload):
                    layers[layer_name].restore_cursor(cursor)
        self._ranks_synced = True
        self._share_cursors = False

    def _average_over_ranks(self, loss, display):
        """The one all-reduce of a data-parallel iteration, after Backward and before the update (Caffe's
        NCCL on_gradients_ready): every learnable diff, copied into one flat buffer, summed over the ranks and
        scaled by 1/K. A small float64 buffer goes with it: the loss, the net's outputs on display iterations
        (averaged too, so every rank logs and checks the K-rank batch's values) and the stop and snapshot
        requests (a signal any rank received acts on all, at the same iteration).

        Returns (mean loss, {output name: mean value} or None, the agreed request or None)."""
        world = self.world
        request, self.requested_action = self.requested_action, None
        names = self.net.outputs if display else []
        values = [self.net.blobs[name].read_data().astype(np.float64).reshape(-1) for name in names]
        meta = np.concatenate([[loss, request == "stop", request == "snapshot"], *values]).astype(np.float64)
        what = f"the gradient all-reduce of iteration {self.iter}"
        if current_mode() == "gpu":     # packed, reduced and unpacked on the device (distributed.py)
            world.allreduce_mean_device([entry.blob.mutable_gpu_diff for entry in self.learnable], [meta], what)
        else:
            if self._flat_diffs is None:
                self._flat_diffs = np.empty(sum(entry.blob.count for entry in self.learnable), dtype=self.dtype)
            flat = self._flat_diffs
            offset = 0
            for entry in self.learnable:
                diff = entry.blob.read_diff()
                flat[offset:offset + diff.size] = diff.reshape(-1)
                offset += diff.size
            world.allreduce_sum([flat, meta], what)
            flat *= self.dtype.type(1.0 / world.size)
            offset = 0
            for entry in self.learnable:
                diff = entry.blob.diff
                diff[...] = flat[offset:offset + diff.size].reshape(diff.shape)
                offset += diff.size
        meta /= world.size
        outputs, offset = {}, 3
        for name, value in zip(names, values):
            outputs[name] = meta[offset:offset + value.size]
            offset += value.size
        agreed = "stop" if meta[1] > 0 else "snapshot" if meta[2] > 0 else None
        return float(meta[0]), outputs or None, agreed

    def _gather_rank_states(self):
        """Every rank's random state and data cursors, on rank 0 (None on the others)."""
        mine = {"rng": fillers.random_state(), "cursors": self._cursors()}
        gathered = self.world.gather_bytes(json.dumps(mine).encode(), f"the snapshot of iteration {self.iter}")
        return None if gathered is None else [json.loads(payload) for payload in gathered]

    def _check_parameters_finite(self):
        if current_mode() == "gpu":
            # One flag crosses to the host; only when it is set are the parameters read, to name the first.
            if self._non_finite_flag is None:
                self._non_finite_flag = gpu.device_zeros(1, np.int32)
            flag = self._non_finite_flag
            gpu_blas.fill(flag, 0)
            for entry in self.learnable:
                _launch(_flag_non_finite_gpu, entry.blob.count, entry.blob.gpu_data, flag)
            if not flag.copy_to_host()[0]:
                return
        for entry in self.learnable:
            if not np.isfinite(entry.blob.data).all():
                raise _non_finite(self.net, self.iter, f"parameter {entry.index} of layer '{entry.layer}'")

    def clip_gradients(self):
        threshold = self.param.clip_gradients
        if threshold < 0:
            return
        on_device = current_mode() == "gpu"
        if on_device:       # one float per parameter reaches the host (Caffe's sumsq_diff)
            norm = math.sqrt(sum(gpu_blas.dot(entry.blob.gpu_diff, entry.blob.gpu_diff) for entry in self.learnable))
        else:
            norm = float(np.sqrt(sum(float(np.sum(np.square(entry.blob.diff, dtype=np.float64)))
                                     for entry in self.learnable)))
        if norm > threshold:
            factor = threshold / norm
            log.info("Gradient clipping: scaling down gradients (L2 norm %.6g > %.6g) by scale factor %.6g",
                     norm, threshold, factor)
            for entry in self.learnable:
                if on_device:
                    gpu_blas.scale(entry.blob.mutable_gpu_diff, factor)
                else:
                    entry.blob.diff[...] *= factor

    def normalize(self, index):
        if self.param.iter_size > 1:
            if current_mode() == "gpu":
                gpu_blas.scale(self.learnable[index].blob.mutable_gpu_diff, 1.0 / self.param.iter_size)
            else:
                self.learnable[index].blob.diff[...] *= 1.0 / self.param.iter_size

    def regularize(self, index):
        entry = self.learnable[index]
        decay = self.param.weight_decay * entry.decay_mult
        if not decay:
            return
        kind = self.param.regularization_type
        if kind not in ("L2", "L1"):
            self.fail(f"unknown regularization_type '{kind}' (L2 or L1)")
        if current_mode() == "gpu":
            blob = entry.blob
            if kind == "L2":
                gpu_blas.axpy(decay, blob.gpu_data, blob.mutable_gpu_diff)
            else:
                _launch(_add_sign_gpu, blob.count, blob.dtype.type(decay), blob.gpu_data, blob.mutable_gpu_diff)
        elif kind == "L2":
            entry.blob.diff[...] += decay * entry.blob.data
        else:
            entry.blob.diff[...] += decay * np.sign(entry.blob.data)

    def compute_update_value(self, index, local_rate):
        raise MinicaffeError(f"{type(self).__name__} defines no update rule")

    # ------------------------------------------------------------ snapshots
    def snapshot_filename(self, extension):
        return f"{self.param.snapshot_prefix}_iter_{self.iter}{extension}"

    def snapshot(self):
        """Write the weights and the solver state (each through a temporary file and a rename).

        Data-parallel: every rank calls it (as it calls step); the ranks' random states and data cursors
        are gathered to rank 0, which writes the files; the others return None."""
        ranks = self._gather_rank_states() if self.world.size > 1 else None
        if self.world.rank != 0:
            return None
        self.world.keepalive()
        hdf5 = self.param.snapshot_format == caffe_pb2.SolverParameter.HDF5
        model = self.snapshot_filename(".caffemodel.h5" if hdf5 else ".caffemodel")
        state_file = self.snapshot_filename(".solverstate.h5" if hdf5 else ".solverstate")
        kind = "HDF5" if hdf5 else "binary proto"
        log.info("Snapshotting to %s file %s", kind, model)
        if hdf5:
            from .hdf5 import write_net_hdf5
            write_net_hdf5(self.net, model, write_diff=self.param.snapshot_diff)
        else:
            write_caffemodel(self.net.to_proto(write_diff=self.param.snapshot_diff), model)
        log.info("Snapshotting solver state to %s file %s", kind, state_file)
        self.world.keepalive()
        state = self.solver_state(model, ranks)
        if hdf5:
            from .hdf5 import write_state_hdf5
            write_state_hdf5(state, state_file)
        else:
            atomic_write_bytes(state_file, state.SerializeToString(deterministic=True))
        return model, state_file

    def solver_state(self, model_filename, ranks=None) -> "caffe_pb2.SolverState":
        """The SolverState of a snapshot whose weights are in ``model_filename``. ``ranks``: each rank's
        random state and data cursors (data-parallel, gathered on rank 0), else this process's own."""
        from .state import MAX_ITER
        if not 0 <= self.iter <= MAX_ITER:
            raise MinicaffeError(f"cannot snapshot iteration {self.iter}: a SolverState's iter is an int32 "
                                 f"(0 to {MAX_ITER})")
        state = caffe_pb2.SolverState(iter=self.iter, learned_net=model_filename, current_step=self.current_step)
        for blob in self.history_blobs:      # read only: a history on the device stays current there
            state.history.append(array_to_blobproto(blob.read_data()))
        state.smoothed_loss = self.smoothed_loss
        own = self._cursors()
        for net_name, layer_name, cursor in own:
            state.data_cursor.add(net=net_name, layer=layer_name, state=json.dumps(cursor))
        if ranks is None:
            state.rng_state = json.dumps(fillers.random_state())
            return state
        # Data-parallel: every rank's generator; a rank's cursor only where it differs from rank 0's (sharded
        # readers stand at the same place on every rank), under the net name "NET@RANK".
        state.rng_state = json.dumps({"ranks": [entry["rng"] for entry in ranks]})
        reference = {(net_name, layer_name): json.loads(json.dumps(cursor)) for net_name, layer_name, cursor in own}
        for rank, entry in enumerate(ranks[1:], 1):
            for net_name, layer_name, cursor in entry["cursors"]:
                if reference.get((net_name, layer_name)) != cursor:
                    state.data_cursor.add(net=f"{net_name}@{rank}", layer=layer_name, state=json.dumps(cursor))
        return state

    def _cursors(self):
        """(net name, layer name, cursor) of every data layer that keeps one, in net and layer order."""
        found = []
        for net_name, net in self._nets_by_name():
            for layer in net.layers:
                cursor = getattr(layer, "cursor_state", None)
                if cursor is not None:
                    found.append((net_name, layer.name, cursor()))
        return found

    def restore(self, path):
        """Resume from a ``.solverstate`` (or ``.solverstate.h5``): weights, history, iteration, RNG, cursors.

        The file is checked whole (:func:`minicaffe.solvers.state.read_state`, then against this solver)
        before anything is changed, so a bad file leaves the solver as it was, weights apart.
        """
        from ..errors import WeightsError
        from ..io import blob_shape
        from .state import read_state
        path = os.fspath(path)
        if self.world.size > 1:
            checked = self._read_state_on_rank_0(path)
        else:
            checked = read_state(path)
        state = checked.state
        if len(state.history) != len(self.history):
            raise WeightsError(path, f"{len(state.history)} history blobs, but this solver keeps "
                               f"{len(self.history)} (another net or solver type?)")
        for index, blob in enumerate(state.history):
            count = math.prod(blob_shape(blob))
            if count != self.history_blobs[index].count:
                raise WeightsError(path, f"history blob {index} has shape {blob_shape(blob)} ({count} values), "
                                   f"but its parameter has {self.history_blobs[index].count}")
        if self.param.lr_policy == "multistep" and state.current_step > len(self.param.stepvalue):
            raise WeightsError(path, f"current_step is {state.current_step}, but the solver's multistep policy "
                               f"has {len(self.param.stepvalue)} stepvalue(s)")
        if state.learned_net and self.world.rank == 0:      # the other ranks get them from rank 0 at the next step
            self.net.copy_from(_resolve(state.learned_net, path))
        self.iter = state.iter
        self.current_step = state.current_step
        for index, blob in enumerate(state.history):
            self.history[index][...] = blobproto_to_array(blob).reshape(self.history[index].shape)
        self._restore_random_state(checked, path)
        for net_name, net in self._nets_by_name():
            for layer in net.layers:
                cursor = checked.cursors.get((f"{net_name}@{self.world.rank}", layer.name),
                                             checked.cursors.get((net_name, layer.name)))
                if cursor is not None and hasattr(layer, "restore_cursor"):
                    try:
                        layer.restore_cursor(cursor)
                    except MinicaffeError as exc:   # the layer names the field; add the file
                        raise WeightsError(path, f"data_cursor of the {net_name} net: {exc}") from None
        if state.HasField("smoothed_loss"):
            self.smoothed_loss = state.smoothed_loss
        self._ranks_synced = False      # data-parallel: rank 0's weights go to the others at the next step
        self._share_cursors = False     # but each rank keeps the data cursor it restored

    def _read_state_on_rank_0(self, path):
        """Data-parallel: rank 0 reads and checks the file (the others may not see it) and sends it to all;
        where rank 0 cannot, every rank fails, naming the file."""
        from .state import check_state, read_state
        what = f"the restore from {path}"
        if self.world.rank == 0:
            try:
                payload = b"\1" + read_state(path).state.SerializeToString()
            except BaseException:
                self.world.broadcast_bytes(b"\0", what)
                raise
            self.world.broadcast_bytes(payload, what)
        else:
            payload = self.world.broadcast_bytes(None, what)
            if payload[:1] != b"\1":
                raise MinicaffeError(f"{path}: rank 0 could not restore this solver state (its error says why)")
        return check_state(caffe_pb2.SolverState.FromString(payload[1:]), path)

    def _restore_random_state(self, checked, path):
        states = checked.rank_rng_states
        if not states:
            return
        rank, size = self.world.rank, self.world.size
        if rank < len(states):
            fillers.set_random_state(states[rank])
        if len(states) != size and rank == 0:
            log.warning("%s holds the random states of %d rank(s) and training resumes on %d: the random draws "
                        "(dropout, crops, mirrors) differ from an uninterrupted run's", path, len(states), size)

    def _nets_by_name(self):
        yield "train", self.net
        for index, net in enumerate(self.test_nets):
            yield f"test/{index}", net

    # Type, net, iteration, learning rate, smoothed loss (minicaffe.display).
    def __repr__(self):
        from ..display import solver_text
        return solver_text(self)

    def _repr_html_(self):
        from ..display import solver_html
        return solver_html(self)


def _non_finite(net, iteration, what):
    """A NonFiniteError naming the first layer, in Forward then Backward order, whose output went non-finite."""
    from ..errors import NonFiniteError
    for planned, layer in zip(net.plan.layers, net.layers):
        for name in planned.tops:
            if not np.isfinite(net.blobs[name].read_data()).all():
                return NonFiniteError(
                    f"iteration {iteration}: {what} is not finite; the first non-finite value is in top '{name}' "
                    f"of layer '{layer.name}' ({layer.type}), in Forward", layer=layer.name, iteration=iteration)
    for index in range(len(net.layers) - 1, -1, -1):
        layer, planned = net.layers[index], net.plan.layers[index]
        if not net.layer_need_backward[index]:
            continue
        for param_index, blob in enumerate(layer.blobs):
            if not np.isfinite(blob.read_diff()).all():
                return NonFiniteError(
                    f"iteration {iteration}: {what} is not finite; the first non-finite gradient is parameter "
                    f"{param_index} of layer '{layer.name}' ({layer.type}), in Backward",
                    layer=layer.name, iteration=iteration)
        for name, needed in zip(planned.bottoms, net.bottom_need_backward[index]):
            if needed and not np.isfinite(net.blobs[name].read_diff()).all():
                return NonFiniteError(
                    f"iteration {iteration}: {what} is not finite; the first non-finite gradient is bottom '{name}' "
                    f"of layer '{layer.name}' ({layer.type}), in Backward", layer=layer.name, iteration=iteration)
    return NonFiniteError(f"iteration {iteration}: {what} is not finite (the learning rate may be too high)",
                          iteration=iteration)


def _read_param(solver) -> "caffe_pb2.SolverParameter":
    if isinstance(solver, caffe_pb2.SolverParameter):
        param = caffe_pb2.SolverParameter()
        param.CopyFrom(solver)
        from ..proto.upgrade import upgrade_solver
        upgrade_solver(param)
        return param
    if solver is None:
        raise TypeError("a solver needs a solver .prototxt path or a SolverParameter")
    return read_solver(solver)


def _resolve(path, relative_to):
    """A path as given if it exists (Caffe resolves against the working directory), else next to ``relative_to``."""
    path = os.fspath(path)
    if os.path.isabs(path) or os.path.exists(path) or relative_to is None:
        return path
    candidate = os.path.join(os.path.dirname(os.fspath(relative_to)), path)
    return candidate if os.path.exists(candidate) else path


def _fill_snapshot_prefix(param, source):
    """Caffe's rule: no prefix means the solver file's name; a directory gets the file's stem appended."""
    if source is None:
        return
    stem = os.path.splitext(os.fspath(source))[0]
    if not param.HasField("snapshot_prefix"):
        param.snapshot_prefix = stem
    elif os.path.isdir(param.snapshot_prefix):
        param.snapshot_prefix = os.path.join(param.snapshot_prefix, os.path.basename(stem))

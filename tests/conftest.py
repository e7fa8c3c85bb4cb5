import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


@pytest.fixture
def write_file(tmp_path):
    """Write text (or bytes) to a file under tmp_path and return its path."""
    def write(name, content):
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return str(path)
    return write


@pytest.fixture(autouse=True)
def _restore_minicaffe_logger():
    """Put the 'minicaffe' logger back after each test: building a solver from Python attaches
    Caffe's default stderr handler (as pycaffe logs by default), which must not leak into the
    output that later tests capture from the CLI."""
    import logging
    from minicaffe import logs
    logger = logging.getLogger(logs.LOGGER_NAME)
    saved = (list(logger.handlers), logger.level, logger.propagate, logs._init_log_level, logs._progress_switch)
    yield
    handlers, level, propagate, init_level, progress = saved
    for handler in list(logger.handlers):
        if handler not in handlers:
            logger.removeHandler(handler)
    logger.setLevel(level)
    logger.propagate = propagate
    logs._init_log_level, logs._progress_switch = init_level, progress


def deploy_with_random_weights(folder, text, seed):
    """Write a deploy net and a .caffemodel of its filler-drawn weights; (net path, weights path, net)."""
    import minicaffe
    deploy = folder / "deploy.prototxt"
    deploy.write_text(text)
    minicaffe.set_random_seed(seed)
    net = minicaffe.Net(str(deploy), minicaffe.TEST)
    weights = folder / "weights.caffemodel"
    net.save(str(weights))
    return str(deploy), str(weights), net

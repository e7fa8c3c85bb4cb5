"""Small datasets written with the storage libraries directly (lmdb, h5py, Pillow), and
Caffe's transformation written as its per-pixel loop, as references for the data tests."""

import os

import numpy as np

from minicaffe.proto import caffe_pb2


def datum(array, label=0, encoded=None):
    """A Datum of a C x H x W array: uint8 as raw bytes, float as float_data; or encoded image bytes."""
    message = caffe_pb2.Datum(label=int(label))
    if encoded is not None:
        message.data = encoded
        message.encoded = True
        return message
    message.channels, message.height, message.width = array.shape
    if array.dtype == np.uint8:
        message.data = array.tobytes()
    else:
        message.float_data.extend(float(v) for v in array.ravel())
    return message


def write_lmdb(path, records):
    """``records``: (key, Datum or bytes) pairs."""
    import lmdb
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for key, value in records:
            if not isinstance(value, bytes):
                value = value.SerializeToString()
            txn.put(key.encode() if isinstance(key, str) else key, value)
    env.close()
    return str(path)


def read_lmdb(path):
    import lmdb
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        records = [(bytes(k), bytes(v)) for k, v in txn.cursor()]
    env.close()
    return records


def write_image(path, pixels, fmt=None):
    """Write H x W x 3 (RGB) or H x W uint8 pixels with Pillow."""
    from PIL import Image
    mode = "RGB" if pixels.ndim == 3 else "L"
    Image.fromarray(np.ascontiguousarray(pixels), mode=mode).save(str(path), format=fmt)
    return str(path)


def png_bytes(pixels):
    import io
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), mode="RGB" if pixels.ndim == 3 else "L").save(buffer, "PNG")
    return buffer.getvalue()


def rgb_to_bgr_chw(rgb):
    return np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1))


def caffe_transform(values, mean_image=None, mean_values=None, scale=1.0, crop=0, h_off=0, w_off=0,
                    mirror=False, dtype=np.float32):
    """DataTransformer::Transform(const Datum&, Dtype*) written out as Caffe's loops."""
    f = np.dtype(dtype).type
    channels, height_in, width_in = values.shape
    height = crop or height_in
    width = crop or width_in
    out = np.zeros((channels, height, width), dtype=dtype)
    for c in range(channels):
        for h in range(height):
            for w in range(width):
                source = (c, h_off + h, w_off + w)
                target = (c, h, width - 1 - w) if mirror else (c, h, w)
                element = f(values[source])
                if mean_image is not None:
                    out[target] = (element - f(mean_image[source])) * f(scale)
                elif mean_values:
                    mean = mean_values[0] if len(mean_values) == 1 else mean_values[c]
                    out[target] = (element - f(mean)) * f(scale)
                else:
                    out[target] = element * f(scale)
    return out


def matching_crops(output, values, crop, **options):
    """The (h_off, w_off, mirror) for which Caffe's transform of ``values`` gives ``output``."""
    height, width = values.shape[1:]
    found = []
    for h_off in range(height - crop + 1):
        for w_off in range(width - crop + 1):
            for mirror in (False, True):
                expected = caffe_transform(values, crop=crop, h_off=h_off, w_off=w_off, mirror=mirror, **options)
                if np.array_equal(expected, output):
                    found.append((h_off, w_off, mirror))
    return found


def write_text(path, text):
    with open(path, "w") as handle:
        handle.write(text)
    return str(path)


def data_net(tmp_path, source, data_param="", transform="", tops=("data", "label"), name="net.prototxt",
             layer_type="Data", param_name="data_param"):
    """A net of one data layer."""
    top_lines = " ".join(f'top: "{top}"' for top in tops)
    source_line = f'source: "{source}"' if source is not None else ""
    text = (f'layer {{ name: "data" type: "{layer_type}" {top_lines}\n'
            f'  {param_name} {{ {source_line} {data_param} }}\n'
            + (f"  transform_param {{ {transform} }}\n" if transform else "") + "}\n")
    return write_text(os.path.join(str(tmp_path), name), text)


def bytes_pixels(shape, seed):
    """Distinct-looking uint8 pixels (values 1..254, so a zero means padding)."""
    return np.random.default_rng(seed).integers(1, 255, size=shape, dtype=np.uint8)

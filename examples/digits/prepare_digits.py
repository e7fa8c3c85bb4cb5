"""Write the shipped UCI digits to HDF5 files for the HDF5Data layers of digits_net.prototxt.

Run from the project's root: python examples/digits/prepare_digits.py [OUTPUT_FOLDER]
(the folder defaults to examples/digits/data, which the net's HDF5Data layers read).
"""

import gzip
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "data")


def main(out=OUT):
    import h5py  # the `data` extra: pip install 'minicaffe[data]'

    with gzip.open(os.path.join(HERE, "digits.csv.gz"), "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.float32)
    images = (table[:, :64] / 16.0).reshape(-1, 1, 8, 8)
    labels = table[:, 64]
    is_test = np.arange(len(table)) % 6 == 0
    os.makedirs(out, exist_ok=True)
    root = os.path.relpath(out, os.getcwd())
    for split, rows in (("train", ~is_test), ("test", is_test)):
        path = os.path.join(out, f"{split}.h5")
        with h5py.File(path, "w") as h5:
            h5.create_dataset("data", data=images[rows])
            h5.create_dataset("label", data=labels[rows])
        with open(os.path.join(out, f"{split}.txt"), "w") as listing:
            listing.write(os.path.join(root, f"{split}.h5") + "\n")
        print(f"wrote {rows.sum()} {split} images to {path}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else OUT)

"""Print the last test accuracy a `minicaffe train` log reports (what `make demo` ends with)."""

import re
import sys

TEST_OUTPUT = re.compile(r"Test net output #\d+: accuracy = ([\d.eE+-]+)")
ITERATION = re.compile(r"Iteration (\d+), Testing net")


def main(path):
    accuracy = iteration = None
    with open(path) as log:
        for line in log:
            found = ITERATION.search(line)
            if found:
                iteration = int(found.group(1))
            found = TEST_OUTPUT.search(line)
            if found:
                accuracy = float(found.group(1))
    if accuracy is None:
        sys.exit(f"{path}: the log reports no test accuracy")
    print(f"Test accuracy after {iteration} iterations: {100 * accuracy:.1f}%")


if __name__ == "__main__":
    main(sys.argv[1])

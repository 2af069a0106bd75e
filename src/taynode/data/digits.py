"""scikit-learn's 8×8 handwritten digits as images for a density model (offline, bundled with the wheel).

`sklearn.datasets.load_digits`: 1797 images of 8×8 pixels, each an integer count in {0, …, 16}
(17 grey levels: the UCI "optdigits" test set, 32×32 bitmaps summed over 4×4 blocks). The images
are permuted by `numpy.random.default_rng(0).permutation(1797)` and split in that order into
`TEST_SIZE` = 400 test, `VALIDATION_SIZE` = 197 validation and the remaining 1200 training images.
The labels are not used.

`digits_provenance()` describes it for a run record (the sha256 of the CSV file the installed
scikit-learn reads, computed).
"""

from __future__ import annotations

import numpy as np

from ._fetch import sklearn_bundled_file

__all__ = ["load_digits", "digits_provenance", "LEVELS", "TEST_SIZE", "VALIDATION_SIZE", "SPLIT_SEED"]

#: grey levels of a pixel (its values are 0 … 16)
LEVELS = 17
TEST_SIZE = 400
VALIDATION_SIZE = 197
#: seed of the permutation that precedes the split
SPLIT_SEED = 0


def load_digits() -> dict:
    """The split images: `{"train_images", "validation_images", "test_images"}`, uint8 arrays `(n, 8, 8)`.

    1200 / 197 / 400 images, values in {0, …, 16}, split as the module docstring says.
    """
    from sklearn.datasets import load_digits as _sklearn_digits

    images = np.asarray(_sklearn_digits().images)
    if images.shape != (1797, 8, 8) or images.min() < 0 or images.max() > LEVELS - 1:
        raise ValueError(f"scikit-learn's digits must be 1797 images of 8×8 in 0…16, got shape {images.shape}")
    if not np.array_equal(images, np.rint(images)):
        raise ValueError("scikit-learn's digits must hold integer pixel counts")
    images = images[np.random.default_rng(SPLIT_SEED).permutation(len(images))].astype(np.uint8)
    n_test, n_val = TEST_SIZE, VALIDATION_SIZE
    return {"test_images": images[:n_test], "validation_images": images[n_test:n_test + n_val],
            "train_images": images[n_test + n_val:]}


def digits_provenance() -> dict:
    """What `load_digits` loads (for a run record's `data` field); imports no scikit-learn.

    **Returns** `{"source": "scikit-learn <version> load_digits ...", "files": {"digits.csv.gz": sha256}}`
    (None when scikit-learn is not installed).
    """
    version, sha256 = sklearn_bundled_file("digits.csv.gz")
    return {"source": f"scikit-learn {version} load_digits (8x8 handwritten digits, 17 grey levels, 1797 images; "
                      f"split {1797 - TEST_SIZE - VALIDATION_SIZE} / {VALIDATION_SIZE} / {TEST_SIZE} "
                      f"after a permutation seeded {SPLIT_SEED})",
            "files": {"digits.csv.gz": sha256}}

"""Cars196 (Stanford Cars) in its official layout: ``cars_annos.mat`` and ``car_ims/*.jpg``.

Every annotated image is used; the file's ``test`` flag is ignored, since dmlopt splits by class
(classes 1-98 train/val, 99-196 test).
"""

from __future__ import annotations

import numpy as np
from scipy.io import loadmat

from dmlopt.config import BenchmarkData
from dmlopt.data.folder import ImageListDataset, require_dir, require_file
from dmlopt.errors import DmloptError


class Cars196Dataset(ImageListDataset):
    """Classes are the annotations' integer ``class`` ids, sorted numerically."""

    def __init__(self, config: BenchmarkData) -> None:
        annos_file = require_file(config.root / "cars_annos.mat", "Cars196 annotations")
        require_dir(config.root / "car_ims", "Cars196 image folder")
        try:
            annotations = np.atleast_1d(loadmat(annos_file, squeeze_me=True)["annotations"])
            paths = [config.root / str(p) for p in annotations["relative_im_path"]]
            classes = [int(c) for c in annotations["class"]]
        except (KeyError, ValueError, TypeError) as e:
            raise DmloptError(
                f"cannot read {annos_file}: expected an 'annotations' struct array with "
                f"'relative_im_path' and 'class' fields ({type(e).__name__}: {e})"
            ) from None
        super().__init__(paths, classes, config.transform)

"""A local datastore that refuses unreadable uploads, mismatched or empty labels and path-like ids; the one check of
a final label against its image; the list of usable final labels (with their classes) that training, prototypes and
auto-training read, the same way from a local folder and from a DICOMweb PACS."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
from monai.transforms import LoadImage
from monailabel.datastore.dicom import DICOMWebDatastore
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.exception import ImageNotFoundException, LabelNotFoundException

from lib.data.classes import class_key, parse_label_info
from lib.datastore_file import AtomicDatastoreFile
from lib.errors import InvalidRequest, NotFound, UnreadableImage

logger = logging.getLogger(__name__)


def check_id(value: str, what: str) -> None:
    """Ids name files inside the studies folder: no separators, no parent references, no hidden names."""
    if not value or "/" in value or "\\" in value or value.startswith(".") or "\x00" in value:
        raise InvalidRequest(f"Invalid {what} id {value!r}: ids may not contain path separators or start with '.'")


def read_volume(path: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Fully read a 3D volume (so truncated files fail here, not later); returns (array, affine)."""
    try:
        image = LoadImage(image_only=True)(path)
    except Exception as e:  # readers raise many types for corrupt files
        raise UnreadableImage(f"The uploaded {what} is not a readable image volume: {type(e).__name__}") from e
    array = np.asarray(image).squeeze()
    if array.ndim != 3:
        raise UnreadableImage(f"The uploaded {what} is not a 3D volume (shape {list(np.asarray(image).shape)})")
    return array, np.asarray(image.affine, dtype=np.float64)


def label_problem(label: np.ndarray, label_affine: np.ndarray, image: np.ndarray,
                  image_affine: np.ndarray) -> str | None:
    """Why a label cannot stand for its image (other shape, other affine, no voxel above 0), or None."""
    if label.shape != image.shape:
        return f"label shape {list(label.shape)} differs from image shape {list(image.shape)}"
    if not np.allclose(label_affine, image_affine, atol=1e-3):
        return "label affine (orientation/spacing/origin) differs from the image's"
    if not np.any(label > 0):
        return "label is empty (no voxel above 0)"
    return None


def check_label(image_path: str, label_path: str) -> None:
    """The one check of a final label against its image, for saving and for every reader of saved labels: both
    files are readable 3D volumes (else :class:`UnreadableImage`, 415) and the label is a non-empty mask on the
    image's grid (else :class:`InvalidRequest`, 422)."""
    label, label_affine = read_volume(label_path, "label")
    image, image_affine = read_volume(image_path, "image")
    problem = label_problem(label, label_affine, image, image_affine)
    if problem:
        raise InvalidRequest(problem)


class ValidatingDatastore(AtomicDatastoreFile, LocalDatastore):
    """:class:`LocalDatastore` whose uploads are checked before anything is written, and whose index is written
    atomically."""

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        if image_id:
            check_id(image_id, "image")
        read_volume(image_filename, "image")
        return super().add_image(image_id, image_filename, image_info)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        check_id(image_id, "image")
        check_id(label_tag, "label tag")
        image_path = self.get_image_uri(image_id)
        if not image_path or not os.path.exists(image_path):
            raise NotFound(f"Image {image_id!r} is not in the datastore")
        try:
            check_label(image_path, label_filename)
        except InvalidRequest as e:
            raise InvalidRequest(f"Label for image {image_id!r} not saved: {e.detail}") from e
        return super().save_label(image_id, label_filename, label_tag, label_info)

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        with not_found_as_404():
            super().update_image_info(image_id, info)

    def update_label_info(self, label_id: str, label_tag: str, info: dict[str, Any]) -> None:
        with not_found_as_404():
            super().update_label_info(label_id, label_tag, info)

    def remove_image(self, image_id: str) -> None:
        with not_found_as_404():
            super().remove_image(image_id)


@contextlib.contextmanager
def not_found_as_404() -> Iterator[None]:
    """MONAI Label's not-found exceptions (a 500 from its endpoints) as a 404 with their message."""
    try:
        yield
    except (ImageNotFoundException, LabelNotFoundException) as e:
        raise NotFound(str(e)) from e


def forget_remote_lists(datastore: Datastore) -> None:
    """On DICOMweb, drop MONAI Label's cached series lists (kept 2 h by default) after a label was saved, so the
    volume counts as labelled at once."""
    if isinstance(datastore, DICOMWebDatastore):
        DICOMWebDatastore.list_images.cache.clear()
        DICOMWebDatastore.get_labeled_images.cache.clear()


def fetch_remote_labels(datastore: Datastore) -> None:
    """On DICOMweb, convert the DICOM SEGs the PACS lists that have no local copy yet (MONAI Label's datalist);
    nothing to do, and no request to the PACS beyond its cached lists, when every one has."""
    if isinstance(datastore, DICOMWebDatastore):
        local = set(LocalDatastore.get_labeled_images(datastore, DefaultLabelTag.FINAL))
        if set(datastore.get_labeled_images(DefaultLabelTag.FINAL)) - local:
            datastore.datalist()


def final_label_path(datastore: Datastore, image_id: str) -> str:
    """The image's final label file. DICOMweb keeps a NIfTI copy of each SEG it saved or fetched under the image id
    (its own ``get_label_uri`` wants the SEG's series id, and with the image id it downloads the image instead)."""
    if isinstance(datastore, DICOMWebDatastore):
        return LocalDatastore.get_label_uri(datastore, image_id, DefaultLabelTag.FINAL)
    return datastore.get_label_uri(image_id, DefaultLabelTag.FINAL)


def label_classes(info: dict[str, Any], app_labels: dict[str, int]) -> dict[str, int]:
    """``{class name: voxel value}`` of one saved label: the names its ``label_info`` gives, spelled as in the app's
    label map when they match it (case and ``-``/``_``/space aside); the app's label map when it gives none."""
    canonical = {class_key(name): name for name in app_labels}
    named = parse_label_info(info)
    if not named:
        return dict(app_labels)
    return {canonical.get(class_key(name), name): value for value, name in named.items()}


class FinalLabel:
    """A datastore's final label paired with its image. Listing is cheap: the image and label paths are looked up
    (on DICOMweb the image may be downloaded) and the volumes read only when asked for."""

    def __init__(self, datastore: Datastore, image_id: str, info: dict[str, Any]):
        self.datastore = datastore
        self.image_id = image_id
        self.info = info

    @property
    def ts(self) -> Any:
        """The label's save time stamp, as the datastore records it (identifies a version of the label)."""
        return self.info.get("ts")

    @functools.cached_property
    def image_path(self) -> str:
        return self.datastore.get_image_uri(self.image_id)

    @functools.cached_property
    def label_path(self) -> str:
        return final_label_path(self.datastore, self.image_id)

    def classes(self, app_labels: dict[str, int]) -> dict[str, int]:
        """``{class name: voxel value}``, named by its ``label_info`` (see :func:`label_classes`)."""
        return label_classes(self.info, app_labels)

    def problem(self) -> str | None:
        """Why the pair cannot be used (unreadable, other shape or affine, empty), or None; reads both volumes."""
        try:
            check_label(self.image_path, self.label_path)
        except (UnreadableImage, InvalidRequest) as e:
            return str(e.detail)
        return None


def final_labels(datastore: Datastore) -> list[FinalLabel]:
    """Every final label of the datastore, sorted by image id, without checking them (DICOMweb: SEGs the PACS lists
    without a local copy are fetched first)."""
    fetch_remote_labels(datastore)
    return [
        FinalLabel(datastore, image_id, datastore.get_label_info(image_id, DefaultLabelTag.FINAL) or {})
        for image_id in sorted(datastore.get_labeled_images(DefaultLabelTag.FINAL))
    ]


def usable(labels: list[FinalLabel]) -> list[FinalLabel]:
    """The labels that pass :func:`check_label`; each other one is logged with the reason."""
    kept = []
    for label in labels:
        reason = label.problem()
        if reason:
            logger.warning("Skipping label of %s: %s", label.image_id, reason)
        else:
            kept.append(label)
    return kept


def usable_final_labels(datastore: Datastore) -> list[FinalLabel]:
    """The datastore's final labels that can train or give prototypes, sorted by image id; skips are logged."""
    return usable(final_labels(datastore))

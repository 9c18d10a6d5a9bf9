"""A local datastore that refuses unreadable uploads, mismatched or empty labels and path-like ids; helpers that let
the app read final labels the same way from a local folder and from a DICOMweb PACS."""

from __future__ import annotations

import contextlib
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


class ValidatingDatastore(LocalDatastore):
    """:class:`LocalDatastore` whose uploads are checked before anything is written."""

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
        label, label_affine = read_volume(label_filename, "label")
        image, image_affine = read_volume(image_path, "image")
        if label.shape != image.shape:
            raise InvalidRequest(
                f"Label shape {list(label.shape)} does not match image {image_id!r} shape {list(image.shape)}"
            )
        if not np.allclose(label_affine, image_affine, atol=1e-3):
            raise InvalidRequest(f"Label orientation/spacing (affine) does not match image {image_id!r}")
        if not np.any(label > 0):
            raise InvalidRequest(f"Label for {image_id!r} is empty (no voxel above 0); nothing was saved")
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

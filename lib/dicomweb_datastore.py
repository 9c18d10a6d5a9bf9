"""MONAI Label's DICOMweb datastore with the label checks of the local one: a label saved to the PACS must be a
readable, non-empty 3D mask on its series' grid (:func:`lib.datastore.check_label`), else nothing is converted to
DICOM SEG or stored."""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
from typing import Any

from monailabel.datastore.dicom import DICOMWebDatastore
from monailabel.datastore.utils.convert import binary_to_image

from lib.datastore import check_id, check_label
from lib.datastore_file import AtomicDatastoreFile
from lib.errors import InvalidRequest, NotFound

logger = logging.getLogger(__name__)


class ValidatingDICOMWebDatastore(AtomicDatastoreFile, DICOMWebDatastore):
    """:class:`DICOMWebDatastore` whose ``save_label`` checks the label against its series first, and whose local
    index (label info, scores, in MONAI Label's DICOMweb cache folder) is written atomically. Built by
    :meth:`adopt` from the datastore MONAI Label configured (client, PACS session, cache, search filter)."""

    @classmethod
    def adopt(cls, datastore: DICOMWebDatastore) -> ValidatingDICOMWebDatastore:
        """``datastore`` itself, now checking labels (the subclass adds no state of its own)."""
        if not isinstance(datastore, DICOMWebDatastore):
            raise TypeError(f"Expected a DICOMWebDatastore, got {type(datastore).__name__}")
        datastore.__class__ = cls
        datastore.watch_renames()
        return datastore

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any],
                   label_id: str = "") -> str:
        check_id(image_id, "image")
        check_id(label_tag, "label tag")
        try:
            image_path = self.get_image_uri(image_id)  # downloads and converts the series when not cached yet
        except Exception as e:  # the PACS answers an unknown series in several ways
            raise NotFound(f"Image {image_id!r} could not be fetched from the PACS: {type(e).__name__}: {e}") from e
        if not image_path or not os.path.exists(image_path):
            raise NotFound(f"Image {image_id!r} is not in the PACS")
        converted = ""
        try:
            if "".join(pathlib.Path(label_filename).suffixes) == ".bin":  # OHIF's raw voxels in the series' order
                try:
                    converted = label_filename = binary_to_image(image_path, label_filename)
                except ValueError as e:
                    raise InvalidRequest(f"Label for image {image_id!r} not saved: the binary label does not have "
                                         f"the series' voxel count ({e})") from e
            try:
                check_label(image_path, label_filename)
            except InvalidRequest as e:
                raise InvalidRequest(f"Label for image {image_id!r} not saved: {e.detail}") from e
            return super().save_label(image_id, label_filename, label_tag, label_info, label_id)
        finally:
            if converted:
                with contextlib.suppress(OSError):
                    os.unlink(converted)

"""3D Segment-Anything network: SAM-Med3D / FastSAM3D compatible, plus a small ``starter`` variant."""

from lib.model.loading import detect_variant, load_sam3d, save_sam3d
from lib.model.sam3d import VARIANTS, Sam3D, build_sam3d

__all__ = ["VARIANTS", "Sam3D", "build_sam3d", "detect_variant", "load_sam3d", "save_sam3d"]

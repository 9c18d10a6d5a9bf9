"""Adapter files and versions: small, bound to their base, published atomically, picked up by the model store."""

import shutil

import pytest
import torch

from lib.engine.adapter_registry import AdapterRegistry
from lib.engine.model_store import ModelStore
from lib.model import build_sam3d, load_sam3d, save_sam3d
from lib.model.adapter_file import apply_adapters, file_sha256
from lib.model.adapters import add_adapters, set_trainable, trainable_state

POINT = torch.tensor([[[64.0, 60.0, 70.0]]])


def trained_adapters(checkpoint, seed: int = 1) -> dict[str, torch.Tensor]:
    """Adapter tensors that change the model (as training would)."""
    model = add_adapters(load_sam3d(checkpoint))
    set_trainable(model)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".adapters." in name:
                parameter.normal_(0, 0.05)
    return trainable_state(model)


def metadata(model_variant: str = "starter") -> dict:
    return {"variant": model_variant, "bottleneck": 32, "classes": ["a"], "trained_on": [], "metrics": {}}


def test_publish_numbers_versions_prunes_and_leaves_no_temporary_files(starter_checkpoint, tmp_path):
    registry = AdapterRegistry(tmp_path, file_sha256([starter_checkpoint]), keep=2)
    state = trained_adapters(starter_checkpoint)
    assert [registry.publish(state, metadata()) for _ in range(3)] == [1, 2, 3]
    assert registry.versions() == [2, 3] and registry.current() == 3
    assert sorted(p.name for p in registry.folder.iterdir()) == ["v0002.pt", "v0003.pt"]
    tensors, meta = registry.read(3)
    assert meta["version"] == 3 and meta["base_sha256"] == registry.base_sha256
    assert tensors.keys() == state.keys()
    base_bytes = starter_checkpoint.stat().st_size
    assert registry.path(3).stat().st_size < base_bytes  # only trainable tensors, not the base
    assert AdapterRegistry(tmp_path, registry.base_sha256, pinned=2).current() == 2
    assert AdapterRegistry(tmp_path, registry.base_sha256, pinned=0).current() is None


def test_adapters_refuse_another_base(starter_checkpoint, tmp_path):
    other = tmp_path / "other.pt"
    torch.manual_seed(5)
    save_sam3d(build_sam3d("starter"), other)
    registry = AdapterRegistry(tmp_path / "adapters", file_sha256([starter_checkpoint]))
    registry.publish(trained_adapters(starter_checkpoint), metadata())
    tensors, meta = registry.read(1)
    with pytest.raises(ValueError, match="was trained on base .* not on the loaded base"):
        apply_adapters(load_sam3d(other), tensors, meta, file_sha256([other]))
    with pytest.raises(ValueError, match="variant 'starter' cannot load into 'fastsam3d'"):
        apply_adapters(build_sam3d("fastsam3d"), tensors, meta, meta["base_sha256"])


def test_model_store_serves_the_newest_version_and_never_touches_the_base(starter_checkpoint, tmp_path):
    base = tmp_path / "starter.pt"
    shutil.copy(starter_checkpoint, base)
    base_hash = file_sha256([base])
    store = ModelStore(base, adapter_root=tmp_path / "adapters")
    model, version = store.get()
    image = torch.randn(1, 1, 128, 128, 128)
    with torch.no_grad():
        before = model.decode(model.encode(image), POINT, torch.tensor([[1]]))[0]
    assert store.info()["adapter_version"] is None

    store.registry().publish(trained_adapters(base), metadata())
    adapted, new_version = store.get()
    assert new_version == version + "+adapters-v1" and adapted is not model
    with torch.no_grad():
        after = adapted.decode(adapted.encode(image), POINT, torch.tensor([[1]]))[0]
    assert not torch.allclose(before, after)
    assert store.info()["adapter_version"] == 1 and store.info()["adapter"]["classes"] == ["a"]
    assert file_sha256([base]) == base_hash


@pytest.mark.parametrize("variant", ["fastsam3d", "sam_med3d"])
def test_adapter_files_work_on_official_layouts(variant, tmp_path):
    """An official-layout file (``{'model_state_dict': ...}``) loaded by load_sam3d takes adapters and their file."""
    torch.manual_seed(0)
    official = tmp_path / f"{variant}.pth"
    torch.save({"model_state_dict": build_sam3d(variant).state_dict()}, official)
    store = ModelStore(official, adapter_root=tmp_path / "adapters")
    model = add_adapters(store.load_base())
    set_trainable(model)
    store.registry().publish(trainable_state(model), metadata(variant))
    served, version = store.get()
    assert version.endswith("+adapters-v1") and hasattr(served.image_encoder, "adapters")


def test_the_classes_adapters_learned_are_served_by_the_decoder_alone(starter_checkpoint, tmp_path):
    registry = AdapterRegistry(tmp_path, file_sha256([starter_checkpoint]))
    registry.publish(trained_adapters(starter_checkpoint), metadata() | {"classes": ["Lesion Core"]})
    base = load_sam3d(starter_checkpoint)
    assert base.refines("lesion_core")
    adapted = apply_adapters(base, *registry.read(1), registry.base_sha256)
    assert adapted.decoder_classes == {"lesion_core"}
    assert not adapted.refines("lesion core") and adapted.refines("tumour")

"""Encoders, classifier head and discriminator: shapes, the reference layer list, parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_cryo_openset.errors import ParameterError
from napari_cryo_openset.models import (
    REFERENCE_ARCHITECTURE,
    REFERENCE_MIN_BOX,
    Classifier3D,
    DomainDiscriminator,
    FastEncoder,
    NetworkParams,
    ReferenceEncoder,
    build_encoder,
    build_model,
    count_parameters,
    prepare_batch,
    to_device,
)

CPU = torch.device("cpu")


def boxes(n: int, box: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, box, box, box, generator=torch.Generator().manual_seed(seed))


def model_for(seed: int = 0, **kw) -> Classifier3D:
    torch.manual_seed(seed)
    return build_model(NetworkParams(**kw)).eval()


# ------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("box", [24, 32, 40])
def test_fast_encoder_shapes(box):
    model = model_for(box=box, num_classes=5, embedding_dim=24, width=4)
    assert isinstance(model.encoder, FastEncoder)
    x = boxes(3, box)
    with torch.no_grad():
        assert model.embed(x).shape == (3, 24)
        assert model(x).shape == (3, 5)


@pytest.mark.parametrize("dim", [2, 17, 128])
def test_embedding_dim_is_honoured(dim):
    model = model_for(box=24, embedding_dim=dim, width=2)
    assert model.encoder.out_dim == dim
    assert model.head.in_features == dim
    with torch.no_grad():
        assert model.embed(boxes(2, 24)).shape == (2, dim)


def test_l2_normalize_puts_embeddings_on_a_sphere():
    model = model_for(box=24, embedding_dim=16, width=4, l2_normalize=True, embedding_scale=3.5)
    with torch.no_grad():
        h = model.embed(boxes(5, 24))
    assert torch.allclose(h.norm(dim=1), torch.full((5,), 3.5), atol=1e-5)
    # without it the norms are free
    free = model_for(box=24, embedding_dim=16, width=4)
    with torch.no_grad():
        norms = free.embed(boxes(5, 24)).norm(dim=1)
    assert not torch.allclose(norms, torch.full((5,), 3.5), atol=1e-3)


@pytest.mark.parametrize("box, padded", [(32, True), (40, False)])
def test_reference_encoder_shapes(box, padded):
    model = model_for(architecture=REFERENCE_ARCHITECTURE, box=box, num_classes=3)
    enc = model.encoder
    assert isinstance(enc, ReferenceEncoder)
    assert enc.input_box == max(box, REFERENCE_MIN_BOX)
    assert (enc.input_box == 37) is padded
    assert enc.flat == 128  # the feature map is 1³ × 128 for 37³ and 40³ inputs
    with torch.no_grad():
        x = boxes(2, box)
        assert model.embed(x).shape == (2, 500)
        assert model(x).shape == (2, 3)


def test_reference_padding_is_zero_padding_to_37():
    model = model_for(architecture=REFERENCE_ARCHITECTURE, box=32, num_classes=2)
    x = boxes(2, 32)
    padded = torch.zeros(2, 1, 37, 37, 37)
    padded[:, :, 2:34, 2:34, 2:34] = x  # (37 − 32) = 5 → 2 before, 3 after
    seen = {}
    hook = model.encoder.features[0].register_forward_hook(lambda m, inp, out: seen.update(x=inp[0].clone()))
    with torch.no_grad():
        model.embed(x)
    hook.remove()
    assert seen["x"].shape == (2, 1, 37, 37, 37)
    assert torch.equal(seen["x"], padded)


def test_reference_encoder_layers_match_the_paper_code():
    enc = build_encoder(NetworkParams(architecture=REFERENCE_ARCHITECTURE, box=37))
    convs, layout = [], []
    for layer in enc.features:
        if isinstance(layer, nn.Conv3d):
            convs.append((layer.in_channels, layer.out_channels, layer.kernel_size[0]))
            assert layer.kernel_size == (layer.kernel_size[0],) * 3
            assert layer.padding == (0, 0, 0) and layer.stride == (1, 1, 1)  # valid convolutions
            layout.append("conv")
        elif isinstance(layer, nn.MaxPool3d):
            assert layer.kernel_size == 2 and layer.stride == 2 and layer.ceil_mode
            layout.append("pool")
        elif isinstance(layer, nn.ReLU):
            assert layout[-1] == "conv"  # ReLU after every convolution
            layout.append("relu")
        else:
            pytest.fail(f"unexpected layer {layer}")
    assert convs == [(1, 8, 5), (8, 16, 5), (16, 32, 4), (32, 64, 4), (64, 128, 3), (128, 128, 3),
                     (128, 128, 1), (128, 128, 1)]
    compact = [x for x in layout if x != "relu"]
    assert compact == ["conv", "conv", "pool", "conv", "conv", "pool", "conv", "conv", "pool",
                       "conv", "conv", "pool"]
    fc = list(enc.fc)
    assert isinstance(fc[0], nn.Linear) and (fc[0].in_features, fc[0].out_features) == (128, 500)
    assert isinstance(fc[1], nn.ReLU)
    assert isinstance(fc[2], nn.Dropout) and fc[2].p == 0.5
    assert len(fc) == 3
    assert enc.out_dim == 500


def test_reference_forces_embedding_dim_500():
    p = NetworkParams(architecture=REFERENCE_ARCHITECTURE, box=40, embedding_dim=64)
    assert p.embedding_dim == 500
    assert build_model(p).head.in_features == 500


def test_reference_dropout_is_active_in_train_mode_only():
    model = model_for(architecture=REFERENCE_ARCHITECTURE, box=37, num_classes=2)
    x = boxes(2, 37)
    with torch.no_grad():
        assert torch.equal(model.embed(x), model.embed(x))  # eval: deterministic
        model.train()
        torch.manual_seed(1)
        a = model.embed(x)
        torch.manual_seed(2)
        b = model.embed(x)
    assert not torch.equal(a, b)


# --------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("kw, word", [
    ({"architecture": "resnet"}, "architecture"),
    ({"box": 4}, "box"),
    ({"num_classes": 1}, "2 classes"),
    ({"norm": "layer"}, "norm"),
    ({"embedding_dim": 1}, "embedding_dim"),
    ({"width": 1}, "width"),
    ({"dropout": 1.0}, "dropout"),
    ({"dropout": -0.1}, "dropout"),
])
def test_network_params_validation(kw, word):
    with pytest.raises(ParameterError, match=word):
        NetworkParams(**kw)


def test_network_params_round_trip():
    p = NetworkParams(box=40, num_classes=4, embedding_dim=32, width=8, norm="group", l2_normalize=True,
                      embedding_scale=2.0, dropout=0.2)
    d = p.to_dict()
    assert all(isinstance(v, (str, int, float, bool)) for v in d.values())
    assert NetworkParams.from_dict({**d, "something_new": 1}) == p


def test_group_norm_variant_runs():
    model = model_for(box=24, width=4, embedding_dim=8, norm="group")
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    assert not any(isinstance(m, nn.BatchNorm3d) for m in model.modules())
    with torch.no_grad():
        assert model(boxes(1, 24)).shape == (1, 2)


def test_fast_is_smaller_than_reference():
    fast = build_model(NetworkParams(box=40))
    ref = build_model(NetworkParams(architecture=REFERENCE_ARCHITECTURE, box=40))
    assert count_parameters(fast) < count_parameters(ref)


# ------------------------------------------------------------------------ head, D, layout
def test_domain_discriminator_shape():
    d = DomainDiscriminator(500)
    assert d(torch.randn(7, 500)).shape == (7,)
    small = DomainDiscriminator(16, hidden=8)
    assert small.net[0].out_features == 8
    assert small(torch.randn(3, 16)).shape == (3,)
    assert sum(isinstance(m, nn.LeakyReLU) for m in small.modules()) == 2


def test_with_encoder_shares_the_head_not_the_encoder():
    model = model_for(box=24, width=4, embedding_dim=8)
    other = build_encoder(model.params)
    target = model.with_encoder(other)
    assert target.head is model.head
    assert target.encoder is other and target.encoder is not model.encoder


@pytest.mark.parametrize("arch, box", [("fast", 24), (REFERENCE_ARCHITECTURE, 32)])
def test_channels_last_gives_the_same_output(arch, box):
    model = model_for(architecture=arch, box=box, width=4, embedding_dim=8, num_classes=3)
    x = boxes(4, box, seed=3)
    with torch.no_grad():
        ref = model(x.contiguous())
        cl_input = model(x.contiguous(memory_format=torch.channels_last_3d))
        cl_model = to_device(model, CPU)
        both = cl_model(prepare_batch(x, CPU))
    assert torch.allclose(ref, cl_input, atol=1e-5, rtol=1e-4)
    assert torch.allclose(ref, both, atol=1e-5, rtol=1e-4)


def test_prepare_batch_adds_the_channel_axis():
    x = torch.randn(2, 24, 24, 24, dtype=torch.float64)
    out = prepare_batch(x, CPU)
    assert out.shape == (2, 1, 24, 24, 24)
    assert out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.equal(out, x[:, None].float())

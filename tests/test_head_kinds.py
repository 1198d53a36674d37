"""Head kinds compute: hand-computed values, the identity each guarantees, live weights, swapped heads,
user-defined kinds, the check against the model's own logits, and dtype-following tolerances (bf16/fp16)."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torchvision
from torch import nn

import camloc
from camloc.errors import CamlocTypeError, CamlocValueError, UnsupportedModelError
from camloc.heads import (
    BatchNormPoolHead,
    Head,
    LinearHead,
    NormPoolHead,
    ReluConvHead,
    SklearnHead,
    check_head,
    identity_tolerance,
)

pytest.importorskip("sklearn")
from sklearn import linear_model, multiclass, svm


def _classes(n: int, c: int) -> torch.Tensor:
    return torch.arange(c).unsqueeze(0).expand(n, -1)


# --------------------------------------------------------------------------------------------- LinearHead


def test_linear_head_hand_values():
    # K = 2 channels on a 1x2 map; W = [[1, 2], [-1, 0]], b = [0.5, -1].
    f = torch.tensor([[[[1.0, 3.0]], [[0.0, -2.0]]]], dtype=torch.float64)  # f_0 = [1, 3], f_1 = [0, -2]
    fc = nn.Linear(2, 2).double()
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 0.0]]))
        fc.bias.copy_(torch.tensor([0.5, -1.0]))
    head = LinearHead(fc)
    # GAP: p = [2, -1]; logits = [2 - 2 + 0.5, -2 - 1] = [0.5, -3]
    torch.testing.assert_close(head.logits(f), torch.tensor([[0.5, -3.0]], dtype=torch.float64))
    # M_0 = f_0 + 2 f_1 = [1, -1]; M_1 = -f_0 = [-1, -3]; no bias, no ReLU
    maps = head.maps(f, torch.tensor([[0, 1]]))
    torch.testing.assert_close(maps, torch.tensor([[[[1.0, -1.0]], [[-1.0, -3.0]]]], dtype=torch.float64))
    torch.testing.assert_close(head.offset(torch.tensor([[0, 1]])), torch.tensor([[0.5, -1.0]], dtype=torch.float64))
    # GMP: p = [3, 0] -> logits [3.5, -4]
    torch.testing.assert_close(LinearHead(fc, pool="max").logits(f), torch.tensor([[3.5, -4.0]], dtype=torch.float64))


def test_linear_head_reads_weights_live_and_follows_dtype():
    fc = nn.Linear(4, 3)
    head = LinearHead(fc)
    assert head.weight.data_ptr() == fc.weight.data_ptr(), "no copy"
    f = torch.randn(2, 4, 3, 3)
    before = head.logits(f)
    with torch.no_grad():
        fc.weight.add_(1.0)  # a training step
    torch.testing.assert_close(head.logits(f), before + f.mean((2, 3)).sum(1, keepdim=True))
    fc.double()
    assert head.weight.dtype == torch.float64 and head.logits(f.double()).dtype == torch.float64


def test_linear_and_1x1_conv_heads_agree():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 5, 4, 3, generator=g, dtype=torch.float64)
    fc = nn.Linear(5, 7).double()
    conv = nn.Conv2d(5, 7, 1).double()
    with torch.no_grad():
        conv.weight.copy_(fc.weight[:, :, None, None])
        conv.bias.copy_(fc.bias)
    a, b = LinearHead(fc), LinearHead(conv)
    cls = torch.tensor([[6, 0], [2, 2]])
    torch.testing.assert_close(a.logits(f), b.logits(f))
    torch.testing.assert_close(a.maps(f, cls), b.maps(f, cls))
    torch.testing.assert_close(a.logits(f), fc(f.mean((2, 3))))
    with pytest.raises(UnsupportedModelError, match="1x1"):
        LinearHead(nn.Conv2d(5, 7, 3))


# --------------------------------------------------------------------------------------------- ReluConvHead


def test_relu_conv_head_matches_squeezenet_classifier():
    torch.manual_seed(0)
    m = torchvision.models.squeezenet1_1(weights=None, num_classes=6).double().eval()
    f = torch.randn(2, 512, 5, 5, dtype=torch.float64)
    head = ReluConvHead(m.classifier[1])
    with torch.no_grad():
        ref = m.classifier(f).flatten(1)  # Dropout (eval) -> conv -> ReLU -> avg pool: the model's own modules
    torch.testing.assert_close(head.logits(f), ref, rtol=1e-12, atol=1e-12)
    maps = head.maps(f, _classes(2, 6))
    assert (maps >= 0).all()
    torch.testing.assert_close(maps.mean((2, 3)) + head.offset(_classes(2, 6)), ref, rtol=1e-12, atol=1e-12)
    assert head.offset(_classes(2, 6)).eq(0).all()


# --------------------------------------------------------------------------------------------- NormPoolHead


class LnAfterPool(nn.Module):
    """conv trunk -> GAP -> LayerNorm -> Linear (the ConvNeXt head pattern), no timm contract."""

    def __init__(self, k: int = 6, c: int = 4, *, affine: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, k, 3, padding=1), nn.GELU(), nn.Conv2d(k, k, 3, padding=1))
        self.norm = nn.LayerNorm(k, eps=1e-3, elementwise_affine=affine)
        self.fc = nn.Linear(k, c)
        if affine:
            with torch.no_grad():  # non-trivial gamma, beta
                self.norm.weight.uniform_(0.5, 2.0)
                self.norm.bias.normal_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(self.body(x).mean((2, 3))))


@pytest.mark.parametrize("affine", [True, False])
def test_norm_pool_head_matches_layernorm_linear_forward(affine):
    torch.manual_seed(0)
    m = LnAfterPool(affine=affine).double().eval()
    x = torch.randn(3, 3, 8, 7, dtype=torch.float64)
    f = m.body(x)
    head = NormPoolHead(m.norm, m.fc)
    with torch.no_grad():
        ref = m(x)
    torch.testing.assert_close(head.logits(f), ref, rtol=1e-12, atol=1e-12)
    cls = _classes(3, 4)
    maps = head.maps(f, cls)
    torch.testing.assert_close(maps.mean((2, 3)) + head.offset(cls), ref, rtol=1e-12, atol=1e-12)
    # offset = (W beta + b)_c, independent of the image
    beta = m.norm.bias if affine else torch.zeros(6, dtype=torch.float64)
    torch.testing.assert_close(head.offset(cls)[0], m.fc.weight @ beta + m.fc.bias)
    # M_c(x, y) = sum_k W_ck g_k (f_k(x, y) - mu) / sigma, by hand for one pixel
    p = f.mean((2, 3))
    mu, sigma = p.mean(1), (p.var(1, unbiased=False) + 1e-3).sqrt()
    g = m.norm.weight if affine else torch.ones(6, dtype=torch.float64)
    hand = (m.fc.weight[2] * g * (f[1, :, 4, 3] - mu[1]) / sigma[1]).sum()
    torch.testing.assert_close(maps[1, 2, 4, 3], hand)


class BnAfterPool(nn.Module):
    """GAP -> BatchNorm1d (running statistics) -> Linear, with non-trivial statistics."""

    def __init__(self, affine: bool) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 6, 3)
        self.norm = nn.BatchNorm1d(6, affine=affine, eps=1e-3)
        self.fc = nn.Linear(6, 4)
        with torch.no_grad():
            self.norm.running_mean.normal_()
            self.norm.running_var.uniform_(0.2, 3.0)
            if affine:
                self.norm.weight.normal_()
                self.norm.bias.normal_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(self.body(x).mean((2, 3))))


@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm_pool_head_folds_the_running_statistics(affine):
    torch.manual_seed(0)
    m = BnAfterPool(affine=affine).double().eval()
    x = torch.randn(3, 3, 8, 7, dtype=torch.float64)
    f = m.body(x)
    head = BatchNormPoolHead(m.norm, m.fc)
    with torch.no_grad():
        ref = m(x)
    torch.testing.assert_close(head.logits(f), ref, rtol=1e-12, atol=1e-12)
    cls = _classes(3, 4)
    maps = head.maps(f, cls)
    torch.testing.assert_close(maps.mean((2, 3)) + head.offset(cls), ref, rtol=1e-12, atol=1e-12)
    # a_k = gamma_k / sqrt(var_k + eps); M_c(x, y) = sum_k W_ck a_k f_k(x, y), by hand for one pixel
    g = m.norm.weight if affine else torch.ones(6, dtype=torch.float64)
    a = g / (m.norm.running_var + 1e-3).sqrt()
    torch.testing.assert_close(maps[1, 2, 4, 3], (m.fc.weight[2] * a * f[1, :, 4, 3]).sum())
    beta = m.norm.bias if affine else torch.zeros(6, dtype=torch.float64)
    torch.testing.assert_close(head.offset(cls)[0], m.fc.weight @ (beta - a * m.norm.running_mean) + m.fc.bias)
    # live: a changed running statistic changes the head at once
    with torch.no_grad():
        m.norm.running_var.mul_(4.0)
        torch.testing.assert_close(head.logits(f), m(x), rtol=1e-12, atol=1e-12)


def test_batchnorm_pool_head_is_found_on_a_timm_style_model_and_refused_without_running_stats():
    torch.manual_seed(0)
    m = BnAfterPool(affine=True).double().eval()
    cam = camloc.CAM(m, features="body", classifier=BatchNormPoolHead(m.norm, m.fc))
    out = cam(torch.randn(2, 3, 8, 8, dtype=torch.float64), classes=torch.arange(4))
    torch.testing.assert_close(out.maps.mean((2, 3)) + cam.head.offset(out.classes), out.logits)
    with pytest.raises(CamlocValueError, match="running statistics"):
        BatchNormPoolHead(nn.BatchNorm1d(6, track_running_stats=False), m.fc)
    with pytest.raises(CamlocTypeError, match="BatchNorm1d"):
        BatchNormPoolHead(nn.LayerNorm(6), m.fc)


def test_norm_pool_head_is_usable_explicitly_and_needed():
    torch.manual_seed(1)
    m = LnAfterPool().double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    cam = camloc.CAM(m, features="body", classifier=NormPoolHead(m.norm, m.fc))
    out = cam(x, topk=2)
    torch.testing.assert_close(out.logits, m(x))
    assert cam.resolved.own, "a head on the model's own modules is checked against model(x)"
    # A plain linear head on the same classifier is not the model: refused against model(x).
    with pytest.raises(UnsupportedModelError, match="not avg-pool -> linear"):
        camloc.CAM(m, features="body", classifier="fc")(x)
    with pytest.raises(CamlocValueError, match="`norm`"):
        NormPoolHead(nn.LayerNorm(5), m.fc)


# --------------------------------------------------------------------------------------------- scikit-learn


def _pooled_data(n: int, k: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, k)) + 2.0 * np.eye(classes, k)[y]
    return x, y


@pytest.mark.parametrize(
    "make",
    [
        lambda: linear_model.LogisticRegression(max_iter=500),  # multinomial
        lambda: multiclass.OneVsRestClassifier(linear_model.LogisticRegression()),  # ovr
        lambda: svm.LinearSVC(),
        lambda: linear_model.RidgeClassifier(),
    ],
    ids=["logreg-multinomial", "logreg-ovr", "linearsvc", "ridge"],
)
@pytest.mark.parametrize("n_classes", [2, 3])
def test_sklearn_head_logits_equal_decision_function(make, n_classes):

    x, y = _pooled_data(60, 5, n_classes)
    labels = np.array(["cat", "dog", "eel"])[:n_classes][y]
    est = make().fit(x, labels)
    head = LinearHead.from_sklearn(est, dtype=torch.float64)
    assert isinstance(head, SklearnHead) and head.labels == tuple(est.classes_)
    f = torch.from_numpy(x)[:, :, None, None].expand(-1, -1, 2, 3).contiguous()  # constant maps: mean = x
    logits = head.logits(f).numpy()
    dec = est.decision_function(x)
    if n_classes == 2:  # [negative, positive] = [0, decision]
        assert logits.shape == (60, 2)
        np.testing.assert_allclose(logits[:, 0], 0.0)
        np.testing.assert_allclose(logits[:, 1], dec, rtol=1e-10, atol=1e-10)
        if hasattr(est, "predict_proba"):
            sm = torch.from_numpy(logits).softmax(1)[:, 1].numpy()
            np.testing.assert_allclose(sm, est.predict_proba(x)[:, 1], rtol=1e-10, atol=1e-12)
    else:
        np.testing.assert_allclose(logits, dec, rtol=1e-10, atol=1e-10)
    check_head(head, f[:2])  # its own identity holds


def test_sklearn_head_swapped_on_an_auto_found_trunk(tiny_model, images):
    with torch.no_grad():
        pooled = tiny_model.forward_features(images).mean((2, 3)).numpy()
    x = np.concatenate([pooled, pooled + 0.1 * np.random.default_rng(0).normal(size=pooled.shape)])
    est = linear_model.LogisticRegression().fit(x, [0, 1, 2] * 2)
    cam = camloc.CAM(tiny_model, classifier=est)
    assert not cam.resolved.own and "LogisticRegression" in repr(cam)
    out = cam(images, topk=3)
    np.testing.assert_allclose(out.logits.numpy(), est.decision_function(pooled), rtol=1e-4, atol=1e-4)
    b = cam.head.offset(out.classes)
    torch.testing.assert_close(out.maps.mean((2, 3)) + b, out.logits.gather(1, out.classes), rtol=1e-4, atol=1e-5)


def test_swapped_head_with_wrong_input_size_names_classifier(tiny_model, images):
    est = linear_model.LogisticRegression().fit(*_pooled_data(30, 5, 3))  # trunk has 8 channels
    with pytest.raises(CamlocValueError, match="`classifier` must be a head taking the 8 feature channels"):
        camloc.CAM(tiny_model, classifier=est)(images)
    r18 = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    with pytest.raises(CamlocValueError, match="`classifier` must be a head taking the 512"):
        camloc.CAM(r18, classifier=nn.Linear(100, 3))  # known at construction for torchvision trunks
    with pytest.raises(CamlocValueError, match="`classifier` must be a fitted"):
        camloc.CAM(tiny_model, classifier=linear_model.LogisticRegression())
    with pytest.raises(CamlocValueError, match="`pool`"):
        camloc.CAM(tiny_model, classifier=LinearHead(nn.Linear(8, 2)), pool="max")


def test_linear_head_swapped_on_torchvision_trunk():
    torch.manual_seed(0)
    m = torchvision.models.resnet18(weights=None, num_classes=10).double().eval()
    new = nn.Linear(512, 3).double()
    cam = camloc.CAM(m, classifier=new)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    out = cam(x, topk=3)
    with torch.no_grad():
        f = cam.resolved.run(x)[0]
        torch.testing.assert_close(f, nn.Sequential(*list(m.children())[:-2])(x))
        torch.testing.assert_close(out.logits, new(f.mean((2, 3))))


# --------------------------------------------------------------------------------------------- user head kinds


class TemperatureHead(Head):
    """A user-defined kind: a linear head divided by a temperature T: maps W f / T, offset b / T."""

    def __init__(self, fc: nn.Linear, t: float, *, broken: bool = False) -> None:
        self.fc, self.t, self.broken = fc, t, broken

    @property
    def num_classes(self) -> int:
        return self.fc.out_features

    @property
    def in_features(self) -> int:
        return self.fc.in_features

    def logits(self, features):
        return self.fc(features.mean((2, 3))) / self.t

    def maps(self, features, classes):
        m = torch.einsum("nmk,nkhw->nmhw", self.fc.weight[classes].to(features.dtype), features) / self.t
        return m + 1.0 if self.broken else m

    def offset(self, classes):
        return self.fc.bias[classes] / self.t

    def modules(self):
        return (self.fc,)


def test_user_defined_head_kind_works_without_changes_to_cam(tiny_model, images):
    own = TemperatureHead(tiny_model.fc, 2.0)
    cam = camloc.CAM(tiny_model, classifier=own)
    assert cam.resolved.own  # reads the model's own fc -> checked against model(x) ... which differs by T
    with pytest.raises(UnsupportedModelError, match="differs from the head's logits"):
        cam(images)
    torch.manual_seed(0)
    foreign = TemperatureHead(nn.Linear(8, 3), 2.0)
    out = camloc.CAM(tiny_model, classifier=foreign)(images, topk=2)  # checked on its own identity: passes
    with torch.no_grad():
        f = tiny_model.forward_features(images)
        torch.testing.assert_close(out.logits, foreign.fc(f.mean((2, 3))) / 2.0)
        off = foreign.offset(out.classes)
    torch.testing.assert_close(out.maps.mean((2, 3)) + off, out.logits.gather(1, out.classes))
    assert out.maps.shape == (3, 2, *f.shape[2:])
    with pytest.raises(UnsupportedModelError, match="breaks the CAM identity"):
        camloc.CAM(tiny_model, classifier=TemperatureHead(nn.Linear(8, 3), 2.0, broken=True))(images)


# --------------------------------------------------------------------------------------------- model(x) is the truth


def test_a_wrong_trunk_is_refused_against_the_models_own_logits(tiny_model, images):
    skip_last = tiny_model.trunk[:2]  # forgets the last conv: 8 channels as expected, but not the model's features
    with pytest.raises(UnsupportedModelError, match="differs from the head's logits"):
        camloc.CAM(tiny_model, features=skip_last, classifier="fc")(images)
    # the same head on the right trunk passes
    out = camloc.CAM(tiny_model, features=tiny_model.trunk, classifier="fc")(images)
    torch.testing.assert_close(out.logits, tiny_model(images))


def test_identity_check_runs_one_model_forward_on_one_image(tiny_model, images):
    calls: list[int] = []
    handle = tiny_model.register_forward_pre_hook(lambda _m, args: calls.append(int(args[0].shape[0])))
    try:
        cam = camloc.CAM(tiny_model)
        cam(images)
        cam(images)
    finally:
        handle.remove()
    assert calls == [1]


# --------------------------------------------------------------------------------------------- dtypes


class HiddenLayer(nn.Module):
    """timm contract whose head hides Linear -> ReLU between pooling and the classifier (K == hidden width)."""

    def __init__(self, k: int = 16, c: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, k, 3, padding=1)
        self.hidden = nn.Linear(k, k)
        self.fc = nn.Linear(k, c)

    def forward_features(self, x):
        return self.conv(x)

    def forward_head(self, f, pre_logits=False):
        return self.fc(torch.relu(self.hidden(f.mean((2, 3)))))

    def get_classifier(self):
        return self.fc

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


class ReluAfterPool(HiddenLayer):
    """Only a ReLU between pooling and the classifier (the trunk's last layer is signed)."""

    def forward_head(self, f, pre_logits=False):
        return self.fc(torch.relu(f.mean((2, 3))))


def _dtype_models():
    torch.manual_seed(0)
    return [
        ("torchvision resnet18", torchvision.models.resnet18(weights=None, num_classes=10)),
        ("timm tf_efficientnet_lite0", timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10)),
    ]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models_pass_and_maps_keep_the_identity(dtype):
    for name, model in _dtype_models():
        model = model.to(dtype).eval()
        x = torch.randn(2, 3, 64, 64).to(dtype)
        cam = camloc.CAM(model)
        out = cam(x, topk=3)  # the check against model(x) passes in this dtype
        assert out.maps.dtype == dtype and out.logits.dtype == dtype, name
        with torch.no_grad():
            torch.testing.assert_close(out.logits, model(x), rtol=0, atol=0)  # the same ops on CPU
            f = cam.resolved.run(x)[0]
        tol = identity_tolerance(f, cam.head.scale(f)).gather(1, out.classes)
        gap = out.maps.double().mean((2, 3)) + cam.head.offset(out.classes).detach().double()
        err = (gap - out.logits.double().gather(1, out.classes)).abs()
        assert (err <= tol).all(), (name, float((err / tol).max()))
        assert float((err / tol).max()) > 0, "rounding is visible in half precision"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cls", [HiddenLayer, ReluAfterPool])
def test_hidden_layers_are_refused_in_every_dtype(dtype, cls):
    torch.manual_seed(0)
    m = cls().to(dtype).eval()
    with pytest.raises(UnsupportedModelError, match="not avg-pool -> linear"):
        camloc.CAM(m)(torch.randn(2, 3, 12, 12).to(dtype))


def test_tolerance_follows_the_dtype():
    s = torch.ones(1, 1)
    tol = {
        dt: float(identity_tolerance(torch.zeros(1, 100, 7, 7, dtype=dt), s))
        for dt in (torch.float64, torch.float32, torch.bfloat16, torch.float16)
    }
    # c (2u + n u_acc) with c = 4, n = 100 + 49: bf16 u = 2^-8, fp16 u = 2^-11, both accumulate in float32
    u32 = 2.0**-24
    assert tol[torch.bfloat16] == pytest.approx(4 * (2 * 2.0**-8 + 149 * u32))
    assert tol[torch.float16] == pytest.approx(4 * (2 * 2.0**-11 + 149 * u32))
    assert tol[torch.float32] == pytest.approx(4 * 151 * u32)
    assert tol[torch.float64] == pytest.approx(4 * 151 * 2.0**-53)
    assert tol[torch.float64] < 1e-12 < tol[torch.float32] < tol[torch.float16] < tol[torch.bfloat16] < 0.05


def test_resolved_head_keeps_the_old_surface(tiny_model, images):
    r = camloc.resolve_head(tiny_model)
    assert r.pool == "avg" and r.classifier is tiny_model.fc and r.num_classes == 5
    assert r.weight is tiny_model.fc.weight and r.bias is tiny_model.fc.bias
    _, logits = r(images)
    torch.testing.assert_close(logits, tiny_model(images))
    from camloc.heads import CamHead, resolve_head

    assert resolve_head is camloc.resolve_head and CamHead is type(r) and camloc.CamHead is CamHead

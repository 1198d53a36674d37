"""The CAM contract on a deterministic sample of timm's registry: exact, or refused with a camloc error.

The whole registry (~1370 architectures) runs in ``benchmarks/timm_contract.py`` (too slow for CI). Here:
one small architecture for each of 45 timm model families (timm modules), picked by hand as the smallest
registered one of its module, covering every family camloc claims (ConvNeXt, MetaFormer, Swin, Mixer/ResMLP,
avg-pooled ViTs, CNNs) and the refused kinds (class token, distillation, hidden FC heads). Random weights,
``num_classes=5``, a 64x64 input (``img_size=64`` where the constructor takes it), float32. A model that timm
itself cannot build or run at this input is skipped (not camloc's); anything else must be exact (logits equal
``model(x)`` and maps keep the identity, within camloc's float32 tolerance) or raise a camloc error.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SAMPLE = {
    # architecture: expected outcome ("exact" / "refused")
    "resnet18": "exact",
    "efficientnet_b0": "exact",
    "regnetx_002": "exact",
    "densenet121": "exact",
    "mnasnet_small": "exact",
    "rexnet_100": "exact",
    "lcnet_050": "refused",
    "mobilenetv3_small_050": "refused",
    "ghostnet_100": "refused",
    "vgg11": "refused",
    "hrnet_w18_small": "exact",
    "convnext_atto": "exact",
    "poolformer_s12": "exact",
    "convformer_s18": "refused",
    "inception_next_atto": "refused",
    "swin_tiny_patch4_window7_224": "exact",
    "mixer_s16_224": "exact",
    "resmlp_12_224": "exact",
    "gmlp_ti16_224": "exact",
    "vit_tiny_patch16_224": "refused",
    "deit_tiny_distilled_patch16_224": "refused",
    "eva02_tiny_patch14_224": "exact",
    "cait_xxs24_224": "refused",
    "xcit_nano_12_p16_224": "refused",
    "pit_ti_224": "refused",
    "levit_128s": "refused",
    "mambaout_femto": "refused",
    "davit_tiny": "exact",
    "focalnet_tiny_srf": "exact",
    "edgenext_xx_small": "exact",
    "efficientformer_l1": "refused",
    "fastvit_t8": "exact",
    "repvit_m0_9": "refused",
    "tiny_vit_5m_224": "exact",
    "mobilevit_xxs": "exact",
    "pvt_v2_b0": "exact",
    "hgnetv2_b0": "refused",
    "starnet_s1": "exact",
    "coat_lite_tiny": "refused",
    "twins_svt_small": "exact",
    "nf_resnet26": "exact",
    "cspresnet50": "exact",
    "dla34": "exact",
    "ese_vovnet19b_dw": "exact",
    "tinynet_e": "exact",
}


def _contract():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "timm_contract.py"
    spec = importlib.util.spec_from_file_location("timm_contract", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
@pytest.mark.contract
@pytest.mark.parametrize("name", list(SAMPLE))
def test_timm_architecture_is_exact_or_refused(name):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = _contract().check_arch(name, size=64)
    if rec["status"] in ("model_error", "skipped"):
        pytest.skip(f"{name}: {rec['reason']}")
    assert rec["status"] in ("exact", "refused"), rec
    assert rec["status"] == SAMPLE[name], rec

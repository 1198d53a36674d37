"""Adapters over the maintained implementations of the methods users compare against (optional extra ``compare``).

============  ==========================  =====================================================================
method        library                     maps returned
============  ==========================  =====================================================================
gradcam       torchcam ``GradCAM``        ``ReLU(sum_k mean_xy(dY_c/dA_k) A_k)``, feature grid, not normalised
gradcam++     torchcam ``GradCAMpp``      Grad-CAM++ weights, ReLU, feature grid, not normalised
scorecam      torchcam ``ScoreCAM``       softmax of masked-input score gains as weights, ReLU, feature grid
layercam      torchcam ``LayerCAM``       ``ReLU(sum_k ReLU(dY_c/dA_k) * A_k)``, feature grid, not normalised
eigencam      grad-cam ``EigenCAM``       class-agnostic centred first principal component, ReLU, min-max
                                          normalised and resized to the input by the library
============  ==========================  =====================================================================

The target layer is camloc's resolved trunk output: the library sees a small wrapper network
``x -> head(target(trunk(x)))`` whose ``target`` is an ``nn.Identity`` on the features camloc's CAM uses, so
"the last conv layer" means the same tensor for every method and every model camloc resolves. ``Y_c`` is the logit.
For a GAP -> linear head Grad-CAM's weights are ``w_c / (h w)``, so ``gradcam == ReLU(M_c) / (h w)`` (tested).

The caller's model is not changed: the libraries' ``model.eval()`` is undone (every ``training`` flag restored)
and gradients reach the activations through an input that requires grad while the parameters' ``requires_grad``
is off for the call, so no parameter ``.grad`` is written. Gradient methods need one backward per requested
class; ``eigencam`` runs inside the library's own forward (its logits are reused).
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

from camloc.errors import CamlocError
from camloc.extractor import CAM
from camloc.methods.base import MapMethod, frozen_parameters, kept_modes

__all__ = ["EigenCamAdapter", "TorchcamAdapter", "TrunkNet"]


def _require(module: str, method: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise CamlocError(
            f"`method` {method!r} needs the optional package {module.split('.')[0]} "
            "(pip install camloc[compare]); it is not installed"
        ) from e


class TrunkNet(nn.Module):
    """``x -> head.logits(target(features(x)))`` over camloc's resolved trunk and head; ``target`` is the layer the
    libraries hook (an ``nn.Identity`` on the features)."""

    def __init__(self, cam: CAM) -> None:
        super().__init__()
        self.model = cam.model
        self.target = nn.Identity()
        self._cam = cam

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats, _ = self._cam.resolved.run(x)
        return self._cam.head.logits(self.target(feats))


class TorchcamAdapter(MapMethod):
    """A torchcam extractor class (``GradCAM``, ``GradCAMpp``, ``ScoreCAM``, ``LayerCAM``) at the trunk output."""

    def __init__(self, model: nn.Module, cls_name: str, *, name: str, gradients: bool = True, **kwargs: Any) -> None:
        methods = _require("torchcam.methods", name)
        self.name = name
        self.cls = getattr(methods, cls_name)
        self.cam = CAM(model)
        self.net = TrunkNet(self.cam)
        self.gradients = gradients
        self.kwargs = kwargs

    def forward(self, x: torch.Tensor) -> tuple[Any, torch.Tensor]:
        p = next(self.net.parameters(), None)
        if p is not None:
            x = x.to(p.device)
        with kept_modes(self.net):
            extractor = self.cls(self.net, target_layer=self.net.target, **self.kwargs)
            try:
                if self.gradients:
                    with torch.enable_grad(), frozen_parameters(self.net):
                        logits = self.net(x.detach().clone().requires_grad_(True))
                else:
                    with torch.no_grad():
                        logits = self.net(x)
            finally:
                extractor.remove_hooks()  # what the hooks captured stays in the extractor
        return (extractor, logits), logits.detach()

    def maps(self, state: Any, classes: torch.Tensor) -> torch.Tensor:
        extractor, logits = state
        m = classes.shape[1]
        out = []
        with torch.enable_grad(), kept_modes(self.net), frozen_parameters(self.net):
            for j in range(m):
                kw = {"retain_graph": j < m - 1} if self.gradients else {}
                idx = [int(c) for c in classes[:, j].tolist()]
                out.append(extractor(class_idx=idx, scores=logits, normalized=False, **kw)[0].detach())
        return torch.stack(out, dim=1)


class EigenCamAdapter(MapMethod):
    """grad-cam's ``EigenCAM`` at the trunk output (class-agnostic; the same map for every requested class)."""

    name = "eigencam"

    def __init__(self, model: nn.Module) -> None:
        self.lib = _require("pytorch_grad_cam", "eigencam")
        self.cam = CAM(model)
        self.net = TrunkNet(self.cam)

    def forward(self, x: torch.Tensor) -> tuple[Any, torch.Tensor]:
        with kept_modes(self.net), torch.no_grad():
            ec = self.lib.EigenCAM(self.net, [self.net.target])
            try:
                maps = ec(input_tensor=x, targets=None)
                logits = ec.outputs.detach()
            finally:
                ec.activations_and_grads.release()
        return torch.from_numpy(maps).float(), logits

    def maps(self, state: Any, classes: torch.Tensor) -> torch.Tensor:
        return state.to(classes.device)[:, None].expand(-1, classes.shape[1], -1, -1).contiguous()


def build_gradcam(model: nn.Module, info: Any) -> TorchcamAdapter:
    return TorchcamAdapter(model, "GradCAM", name="gradcam")


def build_gradcampp(model: nn.Module, info: Any) -> TorchcamAdapter:
    return TorchcamAdapter(model, "GradCAMpp", name="gradcam++")


def build_layercam(model: nn.Module, info: Any) -> TorchcamAdapter:
    return TorchcamAdapter(model, "LayerCAM", name="layercam")


def build_scorecam(model: nn.Module, info: Any, *, batch_size: int) -> TorchcamAdapter:
    return TorchcamAdapter(model, "ScoreCAM", name="scorecam", gradients=False, batch_size=batch_size)


def build_eigencam(model: nn.Module, info: Any) -> EigenCamAdapter:
    return EigenCamAdapter(model)

"""``bnorm.torch.fuse``: batch norm and what follows it as one bnorm op.

The model is traced with ``torch.fx`` (batch norm modules are leaves). In
the graph, a call of a batch norm module whose output has no other use than
the next node is fused with that node when the node is

- a ReLU (``nn.ReLU``, ``F.relu``, ``torch.relu``, ``.relu()``, in place or
  not): ``y = relu(BN(x))``; or a ReLU6 (``nn.ReLU6``, ``F.relu6``):
  ``y = min(max(BN(x), 0), 6)``;
- an addition of another tensor (``+``, ``+=``, ``torch.add`` without
  ``alpha``, ``.add()``; ``.add_()`` and ``+=`` only with the batch norm's
  output on the left, so no other tensor is changed in place), itself
  followed by a ReLU or ReLU6 that is its only use: ``y = relu(BN(x) + r)``;
  or not followed by one: ``y = BN(x) + r``.

The batch norm becomes a ``BatchNormAct1d/2d/3d`` that shares the original
module's parameters and buffers (the same tensors: an optimizer over either
model's parameters trains both, and ``state_dict`` keys are unchanged, so a
checkpoint of one loads into the other). The ReLU and addition nodes are
removed. The original model is not changed.

Not fused: a batch norm module called more than once, or whose output has
other uses; other activations (LeakyReLU, SiLU, ...: bnorm's fused kernels
have the ReLU and ReLU6; ``convert_inplace_abn`` takes LeakyReLU and ELU).
These still compute with bnorm: each of PyTorch's plain
``BatchNorm1d/2d/3d`` left in the fused model (fused or not, traced or not)
becomes bnorm's plain module of the same class, sharing its tensors, as
``convert`` would make it (in NCHW training PyTorch's own kernel is several
times slower than bnorm's). Batch norm subclasses other than PyTorch's and
bnorm's plain ones (SyncBatchNorm, say) are left as they are.

Where the whole model does not trace (data-dependent control flow, say),
each child module is fused on its own, recursively, and the modules that
did not trace are left as they are. The returned model's
``bnorm_fusions`` attribute maps each batch norm's qualified name to what
was made of it: "relu", "relu6", "add+relu", "add+relu6", "add", or
"unfused: <reason>".

``bnorm.torch.convert_inplace_abn`` traces the same way and makes every
BatchNorm2d an ``InPlaceABN`` (sharing its tensors): with the LeakyReLU or
ELU after it folded in where there is one (slope or alpha > 0), else with
activation "identity"; computed in place where the batch norm is the only
use of its input. Its report is ``bnorm_conversions``.
"""

from __future__ import annotations

import copy
import operator
from typing import Dict, Optional

import torch
from torch import fx, nn

from . import torch as _bt

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_ACT_CLASS = {nn.BatchNorm1d: _bt.BatchNormAct1d, nn.BatchNorm2d: _bt.BatchNormAct2d,
              nn.BatchNorm3d: _bt.BatchNormAct3d}


def _plain_bn(m: nn.Module) -> Optional[type]:
    """The torch.nn batch norm class m is (PyTorch's or bnorm's plain
    subclass), or None."""
    for base in _BN:
        if type(m) is base or type(m) is _bt._SWAPS[base]:
            return base
    return None


class _Tracer(fx.Tracer):
    """torch.fx's tracer with every batch norm module a leaf (bnorm's are
    not in torch.nn, so fx would trace into them)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, _bt.InPlaceABN)):
            return True
        return super().is_leaf_module(m, qualname)


def _activation_of(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[str]:
    """"relu" or "relu6" when the node applies that activation to its one
    input, else None."""
    if node.op == "call_module":
        return {nn.ReLU: "relu", nn.ReLU6: "relu6"}.get(type(modules.get(node.target)))
    if node.op == "call_function" and len(node.args) >= 1:
        if node.target in (torch.relu, torch.relu_, nn.functional.relu):
            return "relu"
        if node.target is nn.functional.relu6:
            return "relu6"
        return None
    if node.op == "call_method":
        return "relu" if node.target in ("relu", "relu_") else None
    return None


def _added(node: fx.Node, bn: fx.Node) -> Optional[fx.Node]:
    """The other tensor of an addition `node` of bn's output, or None when
    node is not such an addition (or one that would change another tensor
    in place)."""
    if node.kwargs or len(node.args) != 2:
        return None
    a, b = node.args
    in_place = False
    if node.op == "call_function" and node.target in (operator.add, torch.add):
        pass
    elif node.op == "call_function" and node.target is operator.iadd:
        in_place = True
    elif node.op == "call_method" and node.target == "add":
        pass
    elif node.op == "call_method" and node.target == "add_":
        in_place = True
    else:
        return None
    if a is bn and isinstance(b, fx.Node) and b is not bn:
        return b
    if b is bn and isinstance(a, fx.Node) and not in_place:
        return a
    return None


def _only_user(node: fx.Node) -> Optional[fx.Node]:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _share_state(bn: nn.Module, cls: type, activation: Optional[str] = None) -> nn.Module:
    """A module of class cls with bn's parameters, buffers and settings (the
    same tensors), and its own containers so that the original is untouched;
    with `activation` when cls is a fused class."""
    new = copy.copy(bn)
    new._parameters = dict(bn._parameters)
    new._buffers = dict(bn._buffers)
    new._modules = dict(bn._modules)
    new.__class__ = cls
    if cls in _ACT_CLASS.values():
        new.activation = activation
    return new


def _compute_rest_with_bnorm(out: nn.Module) -> nn.Module:
    """In fuse's output, every batch norm still of PyTorch's plain classes
    (one that could not be fused) replaced by bnorm's plain module sharing
    its tensors, as convert would make it, so that bnorm computes every plain
    batch norm of the fused model. Containers in the output are fuse's own
    copies (so the original keeps its modules); a module held in several
    places gets one replacement."""
    swap = _bt._SWAPS
    made: Dict[int, nn.Module] = {}

    def replaced(m: nn.Module) -> nn.Module:
        if id(m) not in made:
            made[id(m)] = _share_state(m, swap[type(m)])
        return made[id(m)]

    if type(out) in swap:
        return replaced(out)
    seen = set()
    stack = [out]
    while stack:
        m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        for k, child in m._modules.items():
            if child is None:
                continue
            if type(child) in swap:
                m._modules[k] = replaced(child)
            else:
                stack.append(child)
    return out


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def _module_calls(gm: fx.GraphModule) -> Dict[str, int]:
    """How many times the graph calls each module."""
    calls: Dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    return calls


def _bn_calls(gm: fx.GraphModule, prefix: str, report: Dict[str, str], word: str,
              accept):
    """(node, module, name) of each call of a batch norm module that
    accept(module) takes, called once and with its input alone; the others
    get a line in the report ("<word>: why")."""
    modules = dict(gm.named_modules())
    calls = _module_calls(gm)
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        bn = modules.get(node.target)
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
            continue
        name = prefix + node.target
        if not accept(bn):
            report[name] = f"{word}: {type(bn).__name__} is not converted"
        elif calls[node.target] != 1:
            report[name] = f"{word}: the module is called more than once"
        elif len(node.args) != 1 or node.kwargs:
            report[name] = f"{word}: called with more than its input"
        else:
            yield node, bn, name


def _fuse_graph(gm: fx.GraphModule, prefix: str, report: Dict[str, str]) -> None:
    modules = dict(gm.named_modules())
    for node, bn, name in _bn_calls(gm, prefix, report, "unfused",
                                    lambda m: _plain_bn(m) is not None):
        base = _plain_bn(bn)
        nxt = _only_user(node)
        if nxt is None:
            report[name] = "unfused: its output has several uses" if node.users else \
                "unfused: its output is not used"
            continue
        act = _activation_of(nxt, modules)
        if act is not None:
            nxt.replace_all_uses_with(node)
            gm.graph.erase_node(nxt)
            _set_module(gm, node.target, _share_state(bn, _ACT_CLASS[base], act))
            report[name] = act
            continue
        other = _added(nxt, node)
        if other is None:
            what = nxt.target if isinstance(nxt.target, str) else getattr(
                nxt.target, "__name__", str(nxt.target))
            if nxt.op == "call_module":
                what = type(modules.get(nxt.target)).__name__
            report[name] = f"unfused: followed by {what}, which has no fused kernel"
            continue
        after = _only_user(nxt)
        act = None if after is None else _activation_of(after, modules)
        # the batch norm moves to where the addition was, after both inputs
        nxt.prepend(node)
        node.args = (node.args[0], other)
        end = nxt if act is None else after
        end.replace_all_uses_with(node)
        if act is not None:
            gm.graph.erase_node(after)
        gm.graph.erase_node(nxt)
        _set_module(gm, node.target, _share_state(bn, _ACT_CLASS[base], act))
        report[name] = "add" if act is None else f"add+{act}"


def _structure_copy(m: nn.Module, memo: Dict[int, nn.Module]) -> nn.Module:
    """m and its submodules as new module objects (sharing the parameter and
    buffer tensors, and each other the way m's do) in the same order, so that
    a fused model lists its parameters as the original does."""
    if id(m) in memo:
        return memo[id(m)]
    new = copy.copy(m)
    memo[id(m)] = new
    new._parameters = dict(m._parameters)
    new._buffers = dict(m._buffers)
    new._modules = {k: None if c is None else _structure_copy(c, memo)
                    for k, c in m._modules.items()}
    return new


def _fuse(model: nn.Module, prefix: str, report: Dict[str, str], graph_pass) -> nn.Module:
    if isinstance(model, nn.modules.batchnorm._BatchNorm):
        return model  # on its own: nothing to fuse it with (the caller says why)
    try:
        graph = _Tracer().trace(model)
    except Exception as e:  # the model does not trace: fuse its children
        new = copy.copy(model)
        new._modules = dict(model._modules)
        reason = f"{type(e).__name__}: {e}".splitlines()[0][:120]
        for child_name, child in model.named_children():
            new._modules[child_name] = _fuse(child, prefix + child_name + ".", report,
                                             graph_pass)
        for name, m in model.named_modules(prefix=prefix.rstrip(".")):
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and name not in report:
                report[name] = f"unfused: the module around it does not trace ({reason})"
        return new
    root = _structure_copy(model, {})
    gm = fx.GraphModule(root, graph, model.__class__.__name__)
    # the whole module tree in the original's order (GraphModule keeps only
    # the modules the graph calls, in the graph's order)
    gm._modules = root._modules
    gm._parameters.update(root._parameters)
    gm._buffers.update(root._buffers)
    gm.training = model.training
    graph_pass(gm, prefix, report)
    gm.graph.lint()
    gm.recompile()
    return gm


def _is_act(node: fx.Node, modules: Dict[str, nn.Module]):
    """(activation, parameter) of In-Place ABN that node applies, or None:
    LeakyReLU with a slope > 0, ELU with alpha > 0."""
    if node.op == "call_module":
        m = modules.get(node.target)
        if type(m) is nn.LeakyReLU and m.negative_slope > 0:
            return "leaky_relu", float(m.negative_slope)
        if type(m) is nn.ELU and m.alpha > 0:
            return "elu", float(m.alpha)
        return None
    if node.op == "call_function" and node.target in (nn.functional.leaky_relu,
                                                       nn.functional.leaky_relu_):
        slope = node.args[1] if len(node.args) > 1 else node.kwargs.get("negative_slope", 0.01)
        if isinstance(slope, (int, float)) and slope > 0:
            return "leaky_relu", float(slope)
    return None


def _iabn_graph(gm: fx.GraphModule, prefix: str, report: Dict[str, str]) -> None:
    modules = dict(gm.named_modules())
    for node, bn, name in _bn_calls(gm, prefix, report, "unconverted",
                                    lambda m: type(m) in (nn.BatchNorm2d, _bt.BatchNorm2d)):
        if bn.momentum is None or not bn.track_running_stats:
            report[name] = "unconverted: In-Place ABN needs a momentum and running statistics"
            continue
        act, param = "identity", 0.01
        src = node.args[0]
        nxt = _only_user(node)
        found = _is_act(nxt, modules) if nxt is not None else None
        other = _added(nxt, node) if nxt is not None and found is None else None
        if found is not None:
            act, param = found
            nxt.replace_all_uses_with(node)
            gm.graph.erase_node(nxt)
        elif other is not None:
            # BN + add (+ activation): the residual joins the op, which moves
            # to where the addition was
            after = _only_user(nxt)
            found = _is_act(after, modules) if after is not None else None
            nxt.prepend(node)
            node.args = (src, other)
            end = after if found is not None else nxt
            end.replace_all_uses_with(node)
            if found is not None:
                gm.graph.erase_node(after)
                act, param = found
            gm.graph.erase_node(nxt)
        inplace = isinstance(src, fx.Node) and src.op not in ("placeholder", "get_attr") \
            and len(src.users) == 1
        new = _bt.InPlaceABN(bn.num_features, bn.eps, bn.momentum, bn.affine, act, param,
                             inplace=inplace)
        for k in ("weight", "bias"):
            new._parameters[k] = bn._parameters.get(k)
        for k in ("running_mean", "running_var", "num_batches_tracked"):
            new._buffers[k] = bn._buffers.get(k)
        new.train(bn.training)
        _set_module(gm, node.target, new)
        report[name] = ("add+" if other is not None else "") + act + (
            "" if inplace else " (not in place: its input has other uses)")


def _run(model: nn.Module, graph_pass, missing: str):
    report: Dict[str, str] = {}
    out = _fuse(model, "", report, graph_pass)
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and name not in report:
            report[name] = (f"{missing}: a batch norm on its own" if m is model else
                            f"{missing}: not called in the traced forward")
    return out, dict(sorted(report.items()))


def convert_inplace_abn(model: nn.Module) -> nn.Module:
    out, report = _run(model, _iabn_graph, "unconverted")
    out.bnorm_conversions = report
    return out


def fuse(model: nn.Module) -> nn.Module:
    out, report = _run(model, _fuse_graph, "unfused")
    out = _compute_rest_with_bnorm(out)
    out.bnorm_fusions = report
    return out

"""The argument spec of every call into the C library: one table, read by
both paths of a call.

- The general path (``bnorm._functional``, ``bnorm.distributed``) takes from
  it which per-channel arguments are inputs to check and cast, which are
  outputs to allocate, and the order of the C call.
- ``bnorm._core`` compiles each spec into the rules its bindings and its
  fast paths check before a call: the form that memory safety depends on
  (array type, dtype, size, contiguity, writability).

Each spec lists the arrays of one C entry point in the order of its
parameters. An argument is written ``name:kind[/access][?]``:

- kind ``data``: x's size and dtype (x, dy, y, residual, out, ...);
  ``channel``: one value per channel in the parameter dtype (float64 for
  float64 data, else float32); ``sums``: one float64 per channel;
- access ``in`` (the default), ``out`` (written) or ``inout`` (updated in
  place);
- ``?``: optional, as the C function allows: None is passed as NULL (for
  an output: not computed).
"""

from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Tuple

KINDS = ("data", "channel", "sums")
ACCESS = ("in", "out", "inout")


class Arg(NamedTuple):
    name: str
    kind: str
    access: str
    optional: bool


class Spec(NamedTuple):
    function: str           # the C entry point
    op: str                 # what an error message calls the operation
    args: Tuple[Arg, ...]   # in the order of its parameters
    order: Tuple[str, ...]  # their names
    roles: Dict[Tuple[str, str], Tuple[str, ...]]  # (kind, access): names
    roles_of: Dict[str, Arg]  # name: its Arg

    def pack(self, values: Dict[str, Optional[object]]) -> tuple:
        """The arrays of a call in the spec's order (a name not given is None)."""
        if not self.roles_of.keys() >= values.keys():
            raise KeyError(f"{self.op}: no argument {sorted(set(values) - set(self.order))}")
        return tuple(map(values.get, self.order))


def _spec(function: str, op: str, text: str) -> Spec:
    args = []
    for word in text.split():
        name, rule = word.split(":")
        optional = rule.endswith("?")
        kind, _, access = rule.rstrip("?").partition("/")
        access = access or "in"
        if kind not in KINDS or access not in ACCESS:
            raise ValueError(f"bad argument rule {word!r}")
        args.append(Arg(name, kind, access, optional))
    roles: Dict[Tuple[str, str], Tuple[str, ...]] = {}
    for a in args:
        roles[(a.kind, a.access)] = roles.get((a.kind, a.access), ()) + (a.name,)
    return Spec(function, op, tuple(args), tuple(a.name for a in args), roles,
                {a.name: a for a in args})


TRAINING = _spec(
    "bnorm_forward_training_fused", "batch norm training forward",
    "x:data residual:data? out:data/out weight:channel? bias:channel? "
    "save_mean:channel/out? save_invstd:channel/out? "
    "running_mean:channel/inout? running_var:channel/inout?")

INFERENCE = _spec(
    "bnorm_forward_inference_fused", "batch norm inference forward",
    "x:data residual:data? out:data/out running_mean:channel running_var:channel "
    "weight:channel? bias:channel?")

BACKWARD = _spec(
    "bnorm_backward_fused", "batch norm backward",
    "dy:data x:data y:data? save_mean:channel save_invstd:channel weight:channel? "
    "bias:channel? out:data/out? dweight:channel/out? dbias:channel/out? "
    "dresidual:data/out?")

MOMENTS = _spec(
    "bnorm_moments", "batch moments",
    "x:data mean:sums/out m2:sums/out")

NORMALIZE = _spec(
    "bnorm_forward_normalize", "batch norm normalize with given statistics",
    "x:data out:data/out mean:sums m2:sums weight:channel? bias:channel? "
    "save_mean:channel/out? save_invstd:channel/out? "
    "running_mean:channel/inout? running_var:channel/inout?")

BACKWARD_REDUCE = _spec(
    "bnorm_backward_reduce", "batch norm backward reduction",
    "dy:data x:data save_mean:channel sum_dy:sums/out sum_dy_xmu:sums/out")

BACKWARD_APPLY = _spec(
    "bnorm_backward_apply", "batch norm backward with given sums",
    "dy:data x:data save_mean:channel save_invstd:channel weight:channel? "
    "sum_dy:sums sum_dy_xmu:sums out:data/out? dweight:channel/out? dbias:channel/out?")

FROM_OUTPUT = _spec(
    "bnorm_backward_from_output", "batch norm backward from the output",
    "dy:data y:data residual:data? save_invstd:channel weight:channel? bias:channel? "
    "out:data/out? dresidual:data/out? dweight:channel/out? dbias:channel/out?")

# Folding works in the parameters' own dtype: "channel" is that dtype here,
# and "data" the layer's weight (outer * C * inner values).
SCALE_SHIFT = _spec(
    "bnorm_inference_scale_shift", "inference scale/shift",
    "running_mean:channel running_var:channel weight:channel? bias:channel? "
    "scale:channel/out shift:channel/out")

FOLD = _spec(
    "bnorm_fold_into_layer", "fold batch norm into layer",
    "layer_weight:data layer_bias:channel? running_mean:channel running_var:channel "
    "weight:channel? bias:channel? folded_weight:data/out folded_bias:channel/out")

ALL = (TRAINING, INFERENCE, BACKWARD, MOMENTS, NORMALIZE, BACKWARD_REDUCE,
       BACKWARD_APPLY, FROM_OUTPUT, SCALE_SHIFT, FOLD)

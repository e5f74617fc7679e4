"""Architecture discovery: where the layers, heads, MLP neurons and residual writers of a model are.

Methods address heads, neurons and residual-stream writers only through :class:`Anatomy`, so one method
works on Llama, Qwen2/3, Mistral, Gemma/Gemma3, Phi-3 and GPT-2 alike. Found by module names (candidates
in ``_data/architectures.json``) and checked by shapes. GPT-2 uses ``Conv1D`` whose weight is stored
[in, out]; :func:`weight_out_in` hides that.

Mixture-of-experts layers (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, GPT-OSS: ``moe`` in the data file) have
experts (fused 3-D tensors; each expert's down projection is the edit target ``<experts>.<e>.<down>``, see
:mod:`editkit.model.moe`), a router and, in Qwen2-MoE, a shared expert (a dense MLP: the layer's gate/up/down
roles). Any other MoE is refused in one line naming what was found.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from editkit.errors import AnatomyError
from editkit.model.layer_anatomy import LayerAnatomy, _layer_anatomy, _layer_list, _moe_evidence
from editkit.model.moe import ExpertLayout
from editkit.model.targets import _names, expert_layout, in_out_features, target_module


@dataclass
class Anatomy:
    model_type: str
    architecture: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int
    layers: list[LayerAnatomy]
    embed: str
    lm_head: str | None
    final_norm: str | None
    tied_embeddings: bool
    moe_family: str | None = None  # model_type of a mixture-of-experts family (architectures.json "moe")
    n_experts: int = 0
    experts_per_token: int = 0
    expert_intermediate_size: int = 0  # each expert's MLP width
    _model: nn.Module | None = field(default=None, repr=False, compare=False)

    # -- addressing -----------------------------------------------------------------------------------
    @property
    def n_total_heads(self) -> int:
        return self.n_layers * self.n_heads

    @property
    def group_size(self) -> int:
        """Query heads per KV head (GQA)."""
        return self.n_heads // self.n_kv_heads

    def kv_head_of(self, head: int) -> int:
        return head // self.group_size

    def head_slice(self, head: int) -> slice:
        """Input columns of o_proj that carry query head ``head``."""
        if not 0 <= head < self.n_heads:
            raise IndexError(f"head {head} out of range 0..{self.n_heads - 1}")
        return slice(head * self.head_dim, (head + 1) * self.head_dim)

    def head_columns(self, head: int) -> list[int]:
        s = self.head_slice(head)
        return list(range(s.start, s.stop))

    def module(self, name: str) -> nn.Module:
        if self._model is None:
            raise RuntimeError("anatomy is not bound to a model")
        return target_module(self._model, name)

    @property
    def is_moe(self) -> bool:
        return self.moe_family is not None

    @property
    def expert_layout(self) -> ExpertLayout | None:
        return expert_layout(self.moe_family) if self.moe_family else None

    def neuron_groups(self, layer: int) -> list[tuple[str, str, int]]:
        """The MLP neurons of a layer as (label, down-projection target, width): ``mlp`` (a dense layer),
        or ``shared`` and ``e0``, ``e1``, ... (a MoE layer's shared expert and experts). A neuron is an input
        column of its group's down projection."""
        la = self.layer(layer)
        out = []
        if la.down:
            label = "shared" if la.is_moe else "mlp"
            out.append((label, la.down, in_out_features(self.module(la.down))[0]))
        out += [(f"e{e}", name, self.expert_intermediate_size) for e, name in enumerate(la.expert_downs)]
        return out

    def layer(self, i: int) -> LayerAnatomy:
        if not 0 <= i < self.n_layers:
            raise IndexError(f"layer {i} out of range 0..{self.n_layers - 1}")
        return self.layers[i]

    def residual_writers(self, include_embeddings: bool = False) -> list[str]:
        names = [n for layer in self.layers for n in layer.residual_writers]
        return ([self.embed] if include_embeddings else []) + names

    def lora_targets(self, roles: list[str], layers: list[int] | None = None) -> list[str]:
        """Full module names for anatomy roles (q, k, v, o, qkv, gate, up, gate_up, down)."""
        out = []
        for layer in self.layers:
            if layers is not None and layer.index not in layers:
                continue
            for role in roles:
                name = layer.role(role)
                if name is not None:
                    out.append(name)
        return out

    def to_dict(self) -> dict:
        return {
            "model_type": self.model_type,
            "architecture": self.architecture,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "embed": self.embed,
            "lm_head": self.lm_head,
            "tied_embeddings": self.tied_embeddings,
            **(
                {
                    "moe_family": self.moe_family,
                    "n_experts": self.n_experts,
                    "experts_per_token": self.experts_per_token,
                    "expert_intermediate_size": self.expert_intermediate_size,
                }
                if self.is_moe
                else {}
            ),
            "layer0": {
                k: (list(v[:2]) + ["..."] if k == "expert_downs" and len(v) > 2 else v)
                for k, v in self.layers[0].__dict__.items()
                if v
            },
        }


# ---------------------------------------------------------------------------------------------------
# discovery
# ---------------------------------------------------------------------------------------------------


def _cfg(config, keys: list[str]):
    for k in keys:
        v = getattr(config, k, None)
        if v is not None:
            return v
    return None


def _text_config(config):
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


def _check_shapes(
    model, layers: list[LayerAnatomy], arch: str, n_heads: int, n_kv: int, head_dim: int, hidden: int
) -> int:
    """The head layout and residual width the projections imply; returns the (dense or shared) MLP width,
    or the experts' width on a MoE model without dense MLPs."""
    layer0 = layers[0]
    o_in, o_out = in_out_features(model.get_submodule(layer0.o))
    if o_in != n_heads * head_dim:
        raise AnatomyError(
            f"unsupported architecture {arch}: attention output projection takes {o_in} inputs, "
            f"expected num_heads*head_dim = {n_heads}*{head_dim}"
        )
    if n_heads % n_kv:
        raise AnatomyError(
            f"unsupported architecture {arch}: {n_heads} query heads not divisible by {n_kv} KV heads"
        )
    dense = next((la.down for la in layers if la.down), None)
    writer = dense or next(la.expert_downs[0] for la in layers if la.expert_downs)
    d_in, d_out = in_out_features(target_module(model, writer))
    if o_out != hidden or d_out != hidden:
        raise AnatomyError(
            f"unsupported architecture {arch}: residual writers do not output hidden size {hidden}"
        )
    return d_in


def _ends(model: nn.Module, names: dict, arch: str) -> tuple[str, str | None, bool, str | None]:
    """(input embeddings, output head or None, tied?, final norm or None) by module name."""
    by_id = {id(m): n for n, m in model.named_modules()}
    emb = model.get_input_embeddings()
    head = model.get_output_embeddings()
    embed_name = by_id.get(id(emb))
    if embed_name is None:
        raise AnatomyError(f"unsupported architecture {arch}: could not find the input embeddings")
    head_name = by_id.get(id(head)) if head is not None else None
    tied = head is not None and head.weight.data_ptr() == emb.weight.data_ptr()
    final_norm = None
    for cand in names["final_norm"]:
        try:
            model.get_submodule(cand)
            final_norm = cand
            break
        except AttributeError:
            continue
    return embed_name, head_name, bool(tied), final_norm


def find_anatomy(model: nn.Module) -> Anatomy:
    """Discover the anatomy of ``model`` or raise :class:`AnatomyError` listing what was not found."""
    names = _names()
    config = _text_config(model.config)
    arch = (getattr(model.config, "architectures", None) or [type(model).__name__])[0]
    mtype = getattr(model.config, "model_type", "?")
    missing: list[str] = []
    layers_name, layer_list = _layer_list(
        model, names, _cfg(config, names["n_layers"]), f"{arch} (model_type '{mtype}')"
    )

    n_heads = _cfg(config, names["n_heads"])
    if n_heads is None:
        missing.append("number of attention heads in config (" + "/".join(names["n_heads"]) + ")")
    n_kv = _cfg(config, names["n_kv_heads"]) or n_heads
    hidden = _cfg(config, names["hidden"])
    if hidden is None:
        missing.append("hidden size in config")
    moe = names["moe"].get(mtype)
    evidence = _moe_evidence(layer_list, names, layers_name) if moe is None else None
    if evidence is not None:
        known = ", ".join(k for k in names["moe"] if not k.startswith("_"))
        raise AnatomyError(
            f"unsupported mixture-of-experts architecture {arch} (model_type '{mtype}'): found {evidence}; "
            f"editkit knows the experts of {known}"
        )
    layers: list[LayerAnatomy] = []
    for i, block in enumerate(layer_list):
        layer = _layer_anatomy(block, i, f"{layers_name}.{i}", names, missing, moe)
        if layer is None:
            break
        layers.append(layer)
    if missing:
        raise AnatomyError(
            f"unsupported architecture {arch} (model_type '{mtype}'): could not find " + "; ".join(missing)
        )
    head_dim = getattr(config, "head_dim", None) or hidden // n_heads
    d_in = _check_shapes(model, layers, arch, n_heads, n_kv, head_dim, hidden)
    embed_name, head_name, tied, final_norm = _ends(model, names, arch)
    moe_info = _moe_info(model, config, layers, names, mtype) if any(la.is_moe for la in layers) else {}
    return Anatomy(
        model_type=mtype,
        architecture=arch,
        n_layers=len(layer_list),
        n_heads=int(n_heads),
        n_kv_heads=int(n_kv),
        head_dim=int(head_dim),
        hidden_size=int(hidden),
        intermediate_size=int(d_in),
        layers=layers,
        embed=embed_name,
        lm_head=head_name,
        final_norm=final_norm,
        tied_embeddings=tied,
        **moe_info,
        _model=model,
    )


def _moe_info(model, config, layers: list[LayerAnatomy], names: dict, mtype: str) -> dict:
    first = next(la for la in layers if la.is_moe)
    view = target_module(model, first.expert_downs[0])
    return {
        "moe_family": mtype,
        "n_experts": len(first.expert_downs),
        "experts_per_token": int(_cfg(config, names["experts_per_token"]) or 0),
        "expert_intermediate_size": int(in_out_features(view)[0]),
    }

"""DY-Graph / DDW: each stage of a backbone becomes a complete DAG of its blocks with
per-sample edge weights predicted by routers (Sec. 3), plus the static and RandWire wirings.

A stage of n blocks keeps its first, shape-changing block in front; its output is the *input
node* (index 0). Blocks 1..n-1 are the nodes 1..n-1 and an *output node* (index N-1, N = n+1)
only aggregates. Node j computes (Eq. 1-2)

    x_b^j = o^j( Σ_{i<j} ᾱ_b^{ij} · x_b^i )

where o^j is the whole torchvision block (its own shortcut included), and the weights of node
i's output edges come from its router on its transformed features (Eq. 3):
π^i = σ(FC(GAP(x^i)) + b). A learnable threshold τ^i per node closes the edges with π < τ
(Eq. 4); we learn τ through the hard step with a straight-through sigmoid surrogate. The
per-sample adjacency matrices live in one buffer M ∈ R^{B×N×N} (Sec. 3.3): node i writes its
output weights into row i, node j reads its input weights from column j (the equations of
Sec. 3.3; its prose and Fig. 2 describe the transpose, which computes the same).

A node whose input edges are all closed for a sample is *removed* for it (Sec. 3.2): its output
is zero and its router's row stays zero. Either mode runs a node's block only on the samples that
keep it, so a removed sample never enters the block's BatchNorm batch statistics. In "masked"
mode (training) every edge is aggregated over the whole batch, so closed edges keep their
straight-through gradient; in "skip" mode (inference) an edge closed for every sample that keeps
the node is not aggregated at all, so a batch-1 forward executes exactly the open graph.
"""
from __future__ import annotations

from pathlib import Path

import networkx as nx
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops.misc import FrozenBatchNorm2d

from common.backbones import create_backbone, residual_stages, spatial_mean
from common.hub import HubModel, load_state_strict
from common.metrics import counting

MODES = ("masked", "skip")
WIRINGS = ("dynamic", "static")
RANDOM_GRAPHS = ("er", "ba", "ws", "complete")


def _out_channels(block: nn.Module) -> int:
    """Channels a block outputs: those of its last normalisation layer (projection or final BN)."""
    norms = [m for m in block.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))]
    if not norms:
        raise ValueError(f"Cannot tell the output channels of {type(block).__name__}: it has no BatchNorm2d.")
    return int(norms[-1].weight.shape[0])


def _layout(x: torch.Tensor) -> torch.memory_format:
    """x's memory format: channels_last where it is laid out so (and not also contiguous), else contiguous."""
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


def _as_rows(x: torch.Tensor) -> tuple[torch.Tensor, callable]:
    """[B, C, H, W] → a [B, 1, C·H·W] view in x's element order (no copy in either memory format) and its inverse."""
    batch, channels, height, width = x.shape
    if _layout(x) == torch.channels_last:
        return (x.permute(0, 2, 3, 1).reshape(batch, 1, -1),
                lambda y: y.view(batch, height, width, channels).permute(0, 3, 1, 2))
    return x.contiguous().view(batch, 1, -1), lambda y: y.view(batch, channels, height, width)


def contract(weights: torch.Tensor, rows: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """[B, 1, k] · [B, k, D] (+ `out`, in place): Eqs. (1)-(2) for k inputs as one batched matmul, which
    `FlopCounterMode` counts. In bf16 with k = 1, unless MACs are being counted, the same value as an
    elementwise product: oneDNN's bf16 bmm with an inner size of 1 is ~10× slower (3.2 ms against 0.2 ms
    for 64 CIFAR images at 16×32×32)."""
    if weights.shape[2] == 1 and rows.dtype == torch.bfloat16 and not counting():
        return rows * weights if out is None else out.addcmul_(rows, weights)
    return torch.bmm(weights, rows) if out is None else torch.baddbmm(out, weights, rows, out=out)


def weighted_sum(weights: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
    """Σ_i weights[:, i] · features[i] (the aggregation of Eq. 1-2), per sample: the path of graphs whose
    nodes do not read every earlier node (RandWire's); complete DAGs train through a `FeatureBank`.

    Each edge is one rank-1 batched matmul (`baddbmm`) accumulated in place, so `FlopCounterMode`
    sees exactly one multiply-add per edge and element, and nothing is stacked (memory stays
    O(edges)). The backward (`_WeightedSum`) is elementwise: ∂/∂f_i = w_i·g and ∂/∂w_i = ⟨g, f_i⟩ per
    sample, a dot product that a batched matmul of 1×1 outputs computes far more slowly on CPU.
    """
    if weights.shape[1] != len(features) or not features:
        raise ValueError(f"Got {weights.shape[1]} weights for {len(features)} features.")
    return _WeightedSum.apply(weights, *features)


class _WeightedSum(torch.autograd.Function):
    """`weighted_sum` with an elementwise backward."""

    @staticmethod
    def forward(ctx, weights: torch.Tensor, *features: torch.Tensor) -> torch.Tensor:
        rows, unflatten = _as_rows(features[0])
        out = contract(weights[:, :1].unsqueeze(2).to(rows.dtype), rows)
        layout = _layout(features[0])
        for index, feature in enumerate(features[1:], start=1):
            rows = _as_rows(feature.contiguous(memory_format=layout))[0].to(out.dtype)  # rows in one element order
            contract(weights[:, index:index + 1].unsqueeze(2).to(out.dtype), rows, out=out)
        ctx.save_for_backward(weights, *features)
        return unflatten(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weights, *features = ctx.saved_tensors
        flat = grad.reshape(grad.shape[0], -1)
        grad_weights = None
        if ctx.needs_input_grad[0]:
            grad_weights = torch.stack([torch.linalg.vecdot(flat, f.reshape(f.shape[0], -1).to(flat.dtype))
                                        for f in features], dim=1).to(weights.dtype)
        grad_features = [grad.mul(weights[:, i].view(-1, 1, 1, 1).to(grad.dtype)).to(f.dtype)
                         if ctx.needs_input_grad[i + 1] else None for i, f in enumerate(features)]
        return grad_weights, *grad_features


def _storage_users(tensor: torch.Tensor) -> int:
    """How many tensors (views included) share `tensor`'s storage."""
    return torch._C._storage_Use_Count(tensor.untyped_storage()._cdata)


class BankPool:
    """The feature banks a DAG stage reuses from one forward to the next on CPU, instead of allocating them anew.

    From a CIFAR ResNet-56 at batch 128 (75 MB in its first stage) or an ImageNet ResNet-50 at batch 8 on, a
    bank is larger than glibc's largest mmap threshold (32 MB), so each fresh one is mapped anew and
    page-faulted as it is written: ~40 ms for 75 MB on our CPU, ~7 % of a ResNet-56 training step. `empty`
    hands out an alias of a pooled tensor once nothing else shares its storage (the graph that used it has
    been freed, no gradient view of it is kept); otherwise, or on other devices (CUDA's allocator already
    caches), a new tensor. Four by default: the two banks of a training step and the two of the step
    before, whose output a training loop holds while the next forward runs. Not saved with the model: a
    copy or a pickle starts with an empty pool.
    """

    def __init__(self, size: int = 4):
        self.size = size
        self.entries: list[tuple[torch.Tensor, int]] = []  # (pooled tensor, its storage users when unshared)

    def empty(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised tensor of `shape` with `like`'s dtype and device."""
        if like.device.type != "cpu":
            return like.new_empty(shape)
        free = [i for i, (tensor, alone) in enumerate(self.entries) if _storage_users(tensor) == alone]
        for i in free:
            tensor = self.entries[i][0]
            if tensor.shape == shape and tensor.dtype == like.dtype:
                return tensor.view(shape)  # an alias: it counts as a user until dropped
        if len(self.entries) >= self.size and free:
            del self.entries[free[0]]  # a free tensor of another shape or dtype makes room
        tensor = like.new_empty(shape)
        if len(self.entries) < self.size:
            self.entries.append((tensor, _storage_users(tensor)))
            return tensor.view(shape)
        return tensor

    def __getstate__(self) -> dict:
        return {"size": self.size, "entries": []}


class FeatureBank:
    """A stage's node outputs as rows of one tensor [B, N−1, D], and the gradient rows [B, N−1, D] that
    later nodes' aggregations accumulate into, so that node j's Eqs. (1)-(2) are one batched matmul over
    rows 0…j−1 forward, and backward one more (∂w) and one elementwise pass (∂x): the training path
    of a complete DAG, about three passes over the rows a node reads.

    Autograd sees the bank through tokens: `write(i, x)` copies x into row i and returns a scalar token;
    `aggregate(weights, tokens)` takes the tokens of its inputs, so x's backward (row i of the gradient
    bank) runs only once every node that reads x has added its share. Rows are never rewritten.
    """

    def __init__(self, first: torch.Tensor, rows: int, pool: BankPool):
        self.pool = pool
        self.values = pool.empty((first.shape[0], rows, first[0].numel()), first)
        self.grads: torch.Tensor | None = None  # allocated by the first backward: the output node's, over every row
        self.unflatten = _as_rows(first)[1]

    def add_grads(self, weights: torch.Tensor, grad: torch.Tensor) -> None:
        """∂/∂x_i += w_i · g for the rows 0…k−1 a node read (k = weights.shape[1]): elementwise, no bmm."""
        count = weights.shape[1]
        scaled = weights.unsqueeze(2).to(grad.dtype)  # [B, k, 1] · g [B, 1, D]
        if self.grads is None:
            self.grads = self.pool.empty(self.values.shape, self.values)
            self.grads[:, count:].zero_()  # rows no later node read (none when the output node reads all)
            torch.mul(scaled, grad, out=self.grads[:, :count])
        else:
            self.grads[:, :count].addcmul_(scaled, grad)

    def write(self, index: int, feature: torch.Tensor) -> torch.Tensor:
        """Store node `index`'s output; the token to give `aggregate`."""
        return _BankWrite.apply(feature, self, index)

    def aggregate(self, weights: torch.Tensor, tokens: list[torch.Tensor]) -> torch.Tensor:
        """Σ_i weights[:, i] · row i over the first len(tokens) rows, shaped like a node's feature."""
        return self.unflatten(_BankSum.apply(weights, self, *tokens))

    def spatial_mean(self, index: int, token: torch.Tensor) -> torch.Tensor:
        """GAP of row `index` [B, C] (a router's input, Eq. 3), the value of `spatial_mean` of the feature written
        there; its backward adds the broadcast gradient into the row's gradient in place, where autograd
        would add two full-size gradients of the node's output into a third."""
        return _BankMean.apply(self, index, token)


class _BankWrite(torch.autograd.Function):
    @staticmethod
    def forward(ctx, feature: torch.Tensor, bank: FeatureBank, index: int) -> torch.Tensor:
        # Through the bank's own layout (its first feature's): a removed node's output (`index_copy`) comes back
        # contiguous when the bank is channels_last.
        bank.unflatten(bank.values[:, index:index + 1]).copy_(feature)
        ctx.bank, ctx.index, ctx.dtype = bank, index, feature.dtype
        return feature.new_zeros(())

    @staticmethod
    def backward(ctx, _token_grad: torch.Tensor):
        grads = ctx.bank.grads
        if grads is None:  # no node that reads this one was part of the loss
            return None, None, None
        return ctx.bank.unflatten(grads[:, ctx.index:ctx.index + 1]).to(ctx.dtype), None, None


class _BankSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weights: torch.Tensor, bank: FeatureBank, *tokens: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weights)
        ctx.bank = bank
        return contract(weights.unsqueeze(1).to(bank.values.dtype), bank.values[:, :weights.shape[1]])  # [B, 1, D]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (weights,) = ctx.saved_tensors
        count, rows = weights.shape[1], ctx.bank.values[:, :weights.shape[1]]
        grad = grad.to(rows.dtype)
        grad_weights = None
        if ctx.needs_input_grad[0]:  # ∂/∂w_i = ⟨g, x_i⟩ per sample, as rows · gᵀ (g · rowsᵀ: bf16 bmm copies the rows, ~5× slower)
            grad_weights = torch.bmm(rows, grad.transpose(1, 2)).squeeze(2).to(weights.dtype)
        ctx.bank.add_grads(weights, grad)
        return grad_weights, None, *(grad.new_zeros(()) for _ in range(count))


class _BankMean(torch.autograd.Function):
    @staticmethod
    def forward(ctx, bank: FeatureBank, index: int, token: torch.Tensor) -> torch.Tensor:
        ctx.bank, ctx.index = bank, index
        return bank.unflatten(bank.values[:, index:index + 1]).mean(dim=(2, 3))  # GAP(x^i) of Eq. (3)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # The gradient rows exist: the output node reads every row and its backward runs before any router's.
        row = ctx.bank.unflatten(ctx.bank.grads[:, ctx.index:ctx.index + 1])
        height, width = row.shape[2:]
        row.add_((grad / (height * width)).to(row.dtype)[:, :, None, None])  # what `spatial_mean`'s backward broadcasts
        return None, None, grad.new_zeros(())


def threshold(alpha: torch.Tensor, tau: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. (4): ᾱ = α if α ≥ τ else 0; τ learns through a straight-through sigmoid surrogate.

    Forward: α · 1[α ≥ τ] exactly. Backward: the step's derivative is that of σ((α − τ)/T), so
    ∂ᾱ/∂τ = −α σ'((α − τ)/T)/T ≠ 0 and α also learns how close it sits to its threshold.
    """
    if not torch.is_grad_enabled():
        return alpha * (alpha >= tau)  # inference: the same value in two ops
    hard = (alpha >= tau).to(alpha.dtype)
    soft = torch.sigmoid((alpha - tau) / temperature)
    return alpha * (hard + (soft - soft.detach()))


class Router(nn.Module):
    """Eq. (3): π^i = σ(FC(GAP(x^i)) + b) over the node's output edges, from x^i [B, C, H, W] or GAP(x^i) [B, C]."""

    def __init__(self, channels: int, out_edges: int):
        super().__init__()
        self.fc = nn.Linear(channels, out_edges)  # weight w_r^i and bias b_r^i

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(spatial_mean(x) if x.dim() == 4 else x))


class StaticEdges(nn.Module):
    """Table 6's α: one learnable weight per output edge, shared by every sample (σ of a logit); x gives the batch."""

    def __init__(self, channels: int, out_edges: int):
        super().__init__()
        self.logit = nn.Parameter(torch.zeros(out_edges))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logit).to(x.dtype).expand(x.shape[0], -1)


def complete_dag(num_nodes: int) -> torch.Tensor:
    """Adjacency mask of the complete DAG on `num_nodes` ordered nodes: i → j for every i < j."""
    return torch.ones(num_nodes, num_nodes).triu(1)


class DAGStage(nn.Module):
    """A stage rewired as a DAG: `first` block, then `nodes` aggregated through the buffer M.

    `edge_mask` [N, N] (N = len(nodes) + 2) says which edges exist (default: the complete DAG).
    After each forward, `last_buffer` holds M [B, N, N], detached (thresholded weights; row i = node i's
    output edges, column j = node j's input edges) and `last_alive` [B, N] which nodes ran.
    """

    def __init__(self, first: nn.Module, nodes: list[nn.Module], wiring: str = "dynamic",
                 edge_mask: torch.Tensor | None = None, use_threshold: bool = True,
                 tau_init: float = 0.0, temperature: float = 0.1, channels: int | None = None):
        super().__init__()
        if wiring not in WIRINGS:
            raise ValueError(f"Unknown wiring {wiring!r}; valid: {', '.join(WIRINGS)}.")
        self.first, self.nodes = first, nn.ModuleList(nodes)
        self.num_nodes = len(nodes) + 2
        mask = complete_dag(self.num_nodes) if edge_mask is None else edge_mask.float()
        if mask.shape != (self.num_nodes, self.num_nodes) or bool(mask.tril().any()):
            raise ValueError(f"edge_mask must be a strictly upper-triangular {self.num_nodes}×{self.num_nodes} "
                             f"matrix; got shape {tuple(mask.shape)}.")
        self.register_buffer("edge_mask", mask)
        self.targets = [mask[i].nonzero().flatten().tolist() for i in range(self.num_nodes - 1)]
        self.sources = [mask[:, j].nonzero().flatten().tolist() for j in range(self.num_nodes)]
        if any(not t for t in self.targets) or any(not s for s in self.sources[1:]):
            raise ValueError("Every node but the output node needs an output edge, every node but the input "
                             "node an input edge.")
        # M's row entries of each node's output edges: a slice where they are consecutive (no index tensor).
        self._target_index = [slice(t[0], t[-1] + 1) if t == list(range(t[0], t[-1] + 1)) else t
                              for t in self.targets]
        # Complete DAG: node j reads every earlier node, so its inputs are rows 0…j−1 of one bank tensor.
        self._prefix_sources = all(self.sources[j] == list(range(j)) for j in range(1, self.num_nodes))
        channels = channels or _out_channels(nodes[-1] if nodes else first)
        edges = Router if wiring == "dynamic" else StaticEdges
        self.wiring = wiring
        self.routers = nn.ModuleList(edges(channels, len(t)) for t in self.targets)
        self.tau = nn.Parameter(torch.full((self.num_nodes - 1,), float(tau_init))) if use_threshold else None
        self.temperature = temperature
        self.mode = "masked"
        self.banks = BankPool()
        self.last_buffer: torch.Tensor | None = None
        self.last_alive: torch.Tensor | None = None

    def edge_weights(self, node: int, x: torch.Tensor) -> torch.Tensor:
        """Thresholded weights [B, out-degree] of node `node`'s output edges from its features x (or their GAP)."""
        alpha = self.routers[node](x)  # Eq. (3)
        if self.tau is None:
            return alpha
        return threshold(alpha, self.tau[node].to(alpha.dtype), self.temperature)  # Eq. (4)

    def _router_weights(self, node: int, x: torch.Tensor, bank: FeatureBank | None,
                        tokens: list[torch.Tensor]) -> torch.Tensor:
        """`edge_weights` of a node, its router reading GAP(x) from the training bank where x was written."""
        if bank is None or self.wiring != "dynamic":
            return self.edge_weights(node, x)
        return self.edge_weights(node, bank.spatial_mean(node, tokens[node]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode not in MODES:
            raise ValueError(f"Unknown mode {self.mode!r}; valid: {', '.join(MODES)}.")
        x0 = self.first(x)
        batch, last = x0.shape[0], self.num_nodes - 1
        buffer = x0.new_zeros(batch, self.num_nodes, self.num_nodes, dtype=torch.float32)  # M, Sec. 3.3
        everyone = torch.ones(batch, dtype=torch.bool, device=x0.device)
        features, alive = [x0], [everyone]
        bank = None
        if self.mode == "skip" and self._prefix_sources and not torch.is_grad_enabled():
            bank = self.banks.empty((batch, last, x0[0].numel()), x0)  # row i: node i's output, written once
            bank[:, 0] = x0.reshape(batch, -1)
        # Training a complete DAG: the node outputs in a FeatureBank, each node's sum one bmm (its tokens), the
        # routers' GAP read from it. Without autograd (counting MACs) the masked mode sums edge by edge.
        train_bank = (FeatureBank(x0, last, self.banks) if self.mode == "masked" and self._prefix_sources
                      and torch.is_grad_enabled() else None)
        tokens = [train_bank.write(0, x0)] if train_bank is not None else []
        buffer[:, 0, self._target_index[0]] = self._router_weights(0, x0, train_bank, tokens).float()  # M[:, i, :] = π^i
        out = None
        for j in range(1, self.num_nodes):
            # π^j = M[:, :, j] over the node's edges (all i < j in the complete DAG); a copy, so
            # that later writes into M leave what autograd saved intact.
            sources = self.sources[j]
            weights = buffer[:, :j, j] if bank is not None else buffer[:, sources, j]
            every_edge_open = bank is not None and bool((weights > 0).all())  # the inference fast path: one host read
            live = everyone if every_edge_open else (weights > 0).any(dim=1)
            alive.append(live)
            inputs = [features[i] for i in sources]
            if self.mode == "masked":
                aggregated = (train_bank.aggregate(weights, tokens) if train_bank is not None
                              else weighted_sum(weights, inputs))
                if j == last:
                    out = aggregated
                    break
                y = self._masked_node(j, aggregated, live)
                if train_bank is not None:
                    tokens.append(train_bank.write(j, y))
                buffer[:, j, self._target_index[j]] = (self._router_weights(j, y, train_bank, tokens).float()
                                                       * live[:, None])
            elif every_edge_open:
                # Every input edge of node j is open for every sample: Eqs. (1)-(2) as one batched
                # contraction over the bank, then the node.
                aggregated = contract(weights.unsqueeze(1).to(bank.dtype), bank[:, :j]).view(x0.shape)
                if j == last:
                    out = aggregated
                    break
                y = self.nodes[j - 1](aggregated)
                buffer[:, j, self._target_index[j]] = self.edge_weights(j, y).float()
            else:
                y = self._skip_node(j, weights, live, inputs, buffer)
                if j == last:
                    out = y
                    break
            if bank is not None:
                bank[:, j] = y.reshape(batch, -1)
            features.append(y)
        # Detached: a buffer with its autograd history would keep this forward's graph (and its banks) alive
        # until the next forward.
        self.last_buffer, self.last_alive = buffer.detach(), torch.stack(alive, dim=1)
        return out

    def _masked_node(self, j: int, aggregated: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
        """Block j on the samples that keep it (Sec. 3.2), 0 for the removed ones: their zero input
        never enters the block's BatchNorm batch statistics. With no sample left the block does not
        run (its parameters get no gradient in that step)."""
        if bool(live.all()):
            return self.nodes[j - 1](aggregated)
        out = torch.zeros_like(aggregated)
        index = live.nonzero().flatten()
        if index.numel() == 0:
            return out
        y = self.nodes[j - 1](aggregated[index])
        return out.index_copy_(0, index, y.to(out.dtype))  # in place: `index_copy` would drop channels_last

    def _skip_node(self, j: int, weights: torch.Tensor, live: torch.Tensor, features: list[torch.Tensor],
                   buffer: torch.Tensor) -> torch.Tensor:
        """Node j on the samples that keep it, aggregating only edges open for one of them
        (`weights` [B, k] and `features` are those of its k input edges)."""
        index = live.nonzero().flatten()
        full = index.numel() == live.numel()
        out = torch.zeros_like(features[0])  # in x's layout, channels_last included
        if index.numel() == 0:
            return out
        sub = weights if full else weights[index]
        used = (sub > 0).any(dim=0).nonzero().flatten().tolist()
        inputs = [features[i] if full else features[i][index] for i in used]
        y = weighted_sum(sub[:, used], inputs)
        if j < self.num_nodes - 1:
            y = self.nodes[j - 1](y)
            if full:
                buffer[:, j, self._target_index[j]] = self.edge_weights(j, y).float()
            else:
                targets = torch.tensor(self.targets[j], device=buffer.device)
                buffer[index[:, None], j, targets[None, :]] = self.edge_weights(j, y).float()
        return y if full else out.index_copy_(0, index, y.to(out.dtype))


def dag_stages(model: nn.Module) -> list[DAGStage]:
    """The model's DAG stages in network order."""
    return [m for m in model.modules() if isinstance(m, DAGStage)]


def set_mode(model: nn.Module, mode: str) -> None:
    """Put every DAG stage in "masked" (training) or "skip" (real skipping at inference) mode."""
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; valid: {', '.join(MODES)}.")
    for stage in dag_stages(model):
        stage.mode = mode


def adjacency(model: nn.Module) -> list[torch.Tensor]:
    """The buffers M [B, N, N] of the last forward, one per DAG stage: the one way to read the
    routers' decisions (row i: node i's output edges; column j: node j's input edges)."""
    return [stage.last_buffer for stage in dag_stages(model)]


def executed_nodes(model: nn.Module) -> torch.Tensor:
    """[B, nodes] 1 where a block node ran for a sample in the last forward (input/output nodes left out)."""
    return torch.cat([stage.last_alive[:, 1:-1] for stage in dag_stages(model)], dim=1)


def rewire(model: nn.Module, wiring: str = "dynamic", min_blocks: int = 2, **stage_kwargs) -> list[DAGStage]:
    """Turn every stage of `model` with ≥ `min_blocks` blocks into a `DAGStage`, in place.

    The stage's first (shape-changing) block stays in front as the input node; the remaining
    blocks become the nodes of a complete DAG. Stages of one block are left as they are (their
    graph would be input → output only).
    """
    stages = []
    for stage in residual_stages(model):
        blocks = stage.blocks()
        if len(blocks) < max(min_blocks, 2):
            continue
        dag = DAGStage(blocks[0], blocks[1:], wiring=wiring, **stage_kwargs)
        stage.replace(0, dag)
        for position in range(1, len(stage)):
            stage.replace(position, nn.Identity())
        stages.append(dag)
    return stages


def zero_init_last_bn(model: nn.Module) -> int:
    """γ = 0 in the last BatchNorm of every ResNet/ResNeXt residual branch (Goyal et al. 2017,
    arXiv:1706.02677), so that each block starts as its shortcut; returns how many BatchNorms it zeroed."""
    norms = [m.bn3 if isinstance(m, Bottleneck) else m.bn2 for m in model.modules()
             if isinstance(m, (BasicBlock, Bottleneck))]
    for norm in norms:
        nn.init.zeros_(norm.weight)
    return len(norms)


class DYGraphNet(nn.Module, HubModel, library_name="dynnets", tags=["dynnets", "dygraph"], license="mit"):
    """A `common.backbones` network whose stages are complete DAGs with dynamic (α_b) or static (α) edges.

    `zero_init_residual`: Goyal et al.'s zero-γ init of each residual branch's last BatchNorm, which
    App. 6.1 prescribes for ResNets/ResNeXt ("other details ... the same as (Goyal et al., 2017)");
    it touches only BasicBlock/Bottleneck backbones (MobileNetV2 and RegNets keep torchvision's init).
    """

    def __init__(self, backbone: str = "resnet50", num_classes: int | None = None, wiring: str = "dynamic",
                 tau_init: float = 0.0, temperature: float = 0.1, use_threshold: bool = True,
                 zero_init_residual: bool = True):
        super().__init__()
        self.net = create_backbone(backbone, num_classes)
        if zero_init_residual:
            zero_init_last_bn(self.net)
        rewire(self.net, wiring, tau_init=tau_init, temperature=temperature, use_threshold=use_threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# --- RandWire (Xie et al. 2019), small computation regime, through the same DAG machinery -------

class SepConvNode(nn.Sequential):
    """RandWire's node transformation: ReLU → 3×3 separable conv → BN."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__(nn.ReLU(),
                         nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False),
                         nn.Conv2d(in_channels, out_channels, 1, bias=False),
                         nn.BatchNorm2d(out_channels))


def random_dag(kind: str, num_nodes: int, seed: int = 0) -> torch.Tensor:
    """Edge mask [n+2, n+2] of a RandWire graph: ER (P=0.2), BA (M=5) or WS (K=4, P=0.75) from
    networkx on n nodes, edges oriented from lower to higher index, plus an input node feeding
    every node of in-degree 0 and an output node fed by every node of out-degree 0 (Table 4);
    "complete" gives the complete DAG (DY-Graph's)."""
    if kind not in RANDOM_GRAPHS:
        raise ValueError(f"Unknown graph {kind!r}; valid: {', '.join(RANDOM_GRAPHS)}.")
    if kind == "complete":
        return complete_dag(num_nodes + 2)
    graph = {"er": lambda: nx.erdos_renyi_graph(num_nodes, 0.2, seed=seed),
             "ba": lambda: nx.barabasi_albert_graph(num_nodes, 5, seed=seed),
             "ws": lambda: nx.watts_strogatz_graph(num_nodes, 4, 0.75, seed=seed)}[kind]()
    mask = torch.zeros(num_nodes + 2, num_nodes + 2)
    for u, v in graph.edges():
        i, j = sorted((u, v))
        mask[i + 1, j + 1] = 1
    inner = mask[1:-1, 1:-1]
    for node in range(num_nodes):
        if not inner[:, node].any():
            mask[0, node + 1] = 1
        if not inner[node].any():
            mask[node + 1, -1] = 1
    return mask


class RandWireNet(nn.Module, HubModel, library_name="dynnets", tags=["dynnets", "dygraph", "randwire"],
                  license="mit"):
    """RandWire small regime (C = 78, N = 32 per stage): conv1 (C/2, s2), conv2 (C, s2), three graph
    stages at C, 2C, 4C, 1×1 conv to 1280, pool, FC. `graph="complete"` with `wiring="dynamic"` is
    the DY-Graph row of Table 4; the random graphs use static α and no threshold (as RandWire).

    Each stage's shape-changing unit (stride 2) stays in front, as in our backbones' stages,
    and sends to the graph's nodes of in-degree 0.
    """

    def __init__(self, graph: str = "ws", channels: int = 78, nodes: int = 32, num_classes: int = 1000,
                 wiring: str | None = None, seed: int = 0, tau_init: float = 0.0, temperature: float = 0.1):
        super().__init__()
        wiring = wiring or ("dynamic" if graph == "complete" else "static")
        use_threshold = wiring == "dynamic"
        self.conv1 = nn.Sequential(nn.Conv2d(3, channels // 2, 3, 2, 1, bias=False), nn.BatchNorm2d(channels // 2))
        self.conv2 = SepConvNode(channels // 2, channels, stride=2)
        stages, width = [], channels
        for index, out_width in enumerate((channels, 2 * channels, 4 * channels)):
            mask = random_dag(graph, nodes, seed=seed + index)
            stages.append(DAGStage(SepConvNode(width, out_width, stride=2),
                                   [SepConvNode(out_width, out_width) for _ in range(nodes)],
                                   wiring=wiring, edge_mask=mask, use_threshold=use_threshold,
                                   tau_init=tau_init, temperature=temperature, channels=out_width))
            width = out_width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(width, 1280, 1, bias=False), nn.BatchNorm2d(1280),
                                  nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.conv2(self.conv1(x))))


# --- Detection backbone (Table 2) ----------------------------------------------------------------

DETECTION_BACKBONES = ("resnet50", "resnet101", "resnext50_32x4d")
TrainedWeights = nn.Module | dict[str, torch.Tensor] | str | Path


def backbone_state(weights: TrainedWeights) -> dict[str, torch.Tensor]:
    """A trained classification model's body tensors under torchvision ResNet names (classifier `fc` left out).

    `weights`: a DY-Graph (`DYGraphNet`) or baseline (`HubBackbone`) model, its state dict, or a folder
    in Hub layout written by `save_pretrained`. BatchNorm's `num_batches_tracked` is dropped, as
    torchvision's `FrozenBatchNorm2d` does when it loads a BatchNorm.
    """
    if isinstance(weights, nn.Module):
        state = weights.state_dict()
    elif isinstance(weights, dict):
        state = weights
    elif isinstance(weights, (str, Path)):
        file = Path(weights) / "model.safetensors"
        if not file.is_file():
            raise ValueError(f"No model.safetensors in {str(weights)!r}; give a folder written by save_pretrained, "
                             f"a state dict or a model.")
        from safetensors.torch import load_file

        state = load_file(str(file))
    else:
        raise TypeError(f"Cannot read backbone weights from a {type(weights).__name__}; valid: a model, a state "
                        f"dict, a folder written by save_pretrained.")
    if state and all(key.startswith("net.") for key in state):  # DYGraphNet / HubBackbone keep the net in .net
        state = {key[len("net."):]: value for key, value in state.items()}
    return {key: value for key, value in state.items()
            if not key.startswith("fc.") and not key.endswith("num_batches_tracked")}


def detection_backbone(name: str = "resnet50", wiring: str | None = "dynamic", trainable_layers: int = 3,
                       weights: TrainedWeights | None = None, **stage_kwargs) -> nn.Module:
    """A (DY-Graph) ResNet/ResNeXt body with FPN for torchvision's Faster R-CNN (Table 2).

    `weights` (see `backbone_state`) is the Table 1 classification model the detector fine-tunes
    (Sec. 4.2): every tensor of its body is loaded, strictly, into the detector's body, its
    BatchNorms becoming `FrozenBatchNorm2d` with the trained γ, β and running statistics. As
    torchvision's `resnet_fpn_backbone`, BatchNorm is frozen and the first `5 - trainable_layers`
    layers too; `wiring=None` gives the static baseline.
    """
    from torchvision import models
    from torchvision.models.detection.backbone_utils import BackboneWithFPN

    if name not in DETECTION_BACKBONES:
        raise ValueError(f"Unknown detection backbone {name!r}; valid: {', '.join(DETECTION_BACKBONES)}.")
    body = getattr(models, name)(norm_layer=FrozenBatchNorm2d)
    if wiring is not None:
        rewire(body, wiring, **stage_kwargs)
    frozen = ["layer4", "layer3", "layer2", "layer1", "conv1"][trainable_layers:]
    for layer_name, parameter in body.named_parameters():
        if any(layer_name.startswith(f) for f in frozen):
            parameter.requires_grad_(False)
    backbone = BackboneWithFPN(body, {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
                               [256, 512, 1024, 2048], 256)
    if weights is not None:
        source = str(weights) if isinstance(weights, (str, Path)) else f"the given {type(weights).__name__}"
        load_state_strict(backbone.body, backbone_state(weights), source)
    return backbone


def faster_rcnn(name: str = "resnet50", wiring: str | None = "dynamic", num_classes: int = 91,
                weights: TrainedWeights | None = None, trainable_layers: int = 3, **detector_kwargs) -> nn.Module:
    """torchvision Faster R-CNN + FPN on a (DY-Graph) backbone, initialised from `weights` when given."""
    from torchvision.models.detection import FasterRCNN

    backbone = detection_backbone(name, wiring, trainable_layers, weights)
    return FasterRCNN(backbone, num_classes=num_classes, **detector_kwargs)


# --- Counting -----------------------------------------------------------------------------------

def graph_overhead(model: nn.Module, input_size: tuple[int, int, int]) -> dict[str, int]:
    """What the DAG stages add per image (batch 1, every edge open), by kind of operation.

    `aggregation_macs`: one multiply-add per edge and element (what `FlopCounterMode` counts);
    `router_macs`: the routers' FCs; `pool_adds`: the routers' global average pools (C·H·W adds
    each, invisible to `FlopCounterMode`). The paper's FLOP increments fit best as
    2·aggregation (multiply and add counted apart) + pooling + router FCs (`elementwise_flops`).
    """
    sizes: dict[int, int] = {}
    stages = dag_stages(model)
    hooks = [s.first.register_forward_hook(lambda m, a, out, i=i: sizes.__setitem__(i, out[0].numel()))
             for i, s in enumerate(stages)]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_size, device=device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    aggregation = sum(int(s.edge_mask.sum()) * sizes[i] for i, s in enumerate(stages))
    pools = sum((s.num_nodes - 1) * sizes[i] for i, s in enumerate(stages) if s.wiring == "dynamic")
    routers = sum(r.fc.in_features * r.fc.out_features for s in stages if s.wiring == "dynamic" for r in s.routers)
    return {"aggregation_macs": aggregation, "router_macs": routers, "pool_adds": pools,
            "elementwise_flops": 2 * aggregation + pools + routers}

"""Scoring passages with a fine-tuned encoder, fast on a few CPU cores: one tokenizer pass,
length-sorted batches with dynamic padding, a forward pass that computes only what the classifier
reads, and one batch per core.

Shared by the classifier and the summariser's sentence scorer. The scores are those of
`model(**batch).logits` (tests hold them within 1e-5); only the work is less.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np

# Per input channel, the largest |activation| each encoder linear layer saw on its model's own
# training passages, saved beside the weights: what int8 smoothing is calibrated on.
ACTIVATION_RANGES = "activation_ranges.safetensors"
# Feed-forward output layers read GELU outputs, whose outliers int8 holds badly in the first
# layers: those stay fp32 (quantize_int8).
_FEED_FORWARD_OUTPUT = re.compile(r"(?:^|\.)layer\.(\d+)\.output\.dense$")


def encode(tokenizer, texts: list[str], max_tokens: int, contexts: list[str] | None = None):
    """Token ids of each text, or of each (context, text) pair as BERT's two segments
    ([CLS] context [SEP] text [SEP], token types 0 and 1). Over `max_tokens`, the longer of the
    two is cut first, so neither a long purpose line nor a long sentence crowds the other out."""
    if contexts is None:
        return tokenizer(texts, truncation=True, max_length=max_tokens)
    return tokenizer(contexts, texts, truncation="longest_first", max_length=max_tokens)


def encode_batches(tokenizer, texts: list[str], batch_size: int, max_tokens: int,
                   contexts: list[str] | None = None):
    """One tokenizer pass, then length-sorted batches with dynamic padding: short passages are
    not padded to the longest passage of the whole run. Yields (indices, padded batch)."""
    encoded = encode(tokenizer, texts, max_tokens, contexts)
    order = sorted(range(len(texts)), key=lambda i: len(encoded["input_ids"][i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        features = [{k: encoded[k][i] for k in encoded.keys()} for i in chunk]
        yield chunk, tokenizer.pad(features, return_tensors="pt")


class PooledBertForward:
    """`BertForSequenceClassification` logits without the work its head never reads.

    The head reads only the first ([CLS]) token of the last layer, so that layer computes
    queries, attention output and feed-forward for that one token (keys and values still for
    all): five sixths of one layer, about a seventh of a 6-layer encoder's work. Query, key and
    value projections are one matrix product (fp32, or int8 made by quantize_int8).
    """

    def __init__(self, model):
        import torch

        self.model = model
        self.bert = model.bert
        self.layers = list(self.bert.encoder.layer)
        self.fused = []  # per layer: hidden -> query, key and value in one product, or None
        for layer in self.layers:
            attention = layer.attention.self
            projections = (attention.query, attention.key, attention.value)
            if all(type(p) is torch.nn.Linear for p in projections):
                weight = torch.cat([p.weight for p in projections]).detach().contiguous()
                bias = torch.cat([p.bias for p in projections]).detach().contiguous()
                self.fused.append(partial(torch.nn.functional.linear, weight=weight, bias=bias))
            else:
                self.fused.append(getattr(attention, "fused_qkv_int8", None))

    @staticmethod
    def applies_to(model) -> bool:
        """Plain BERT encoders with a pooled classification head, self-attention only."""
        config = getattr(model, "config", None)
        return (getattr(config, "model_type", None) == "bert" and not config.is_decoder
                and getattr(config, "position_embedding_type", "absolute") == "absolute"
                and hasattr(model, "bert") and model.bert.pooler is not None
                and hasattr(model, "classifier") and not model.training)

    def __call__(self, input_ids, attention_mask, token_type_ids=None, **_unused):
        import torch
        from torch.nn import functional

        hidden = self.bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        # Additive mask: padding positions get the most negative value, as transformers does.
        mask = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        batch, length, width = hidden.shape
        for i, layer in enumerate(self.layers):
            attention = layer.attention.self
            heads, head_size = attention.num_attention_heads, attention.attention_head_size
            last = i == len(self.layers) - 1
            if self.fused[i] is not None and not last:
                qkv = self.fused[i](hidden)
                qkv = qkv.view(batch, length, 3, heads, head_size).permute(2, 0, 3, 1, 4)
                query, key, value = qkv[0], qkv[1], qkv[2]
                query_input = hidden
            else:
                query_input = hidden[:, :1] if last else hidden
                query = attention.query(query_input).view(batch, -1, heads, head_size).transpose(1, 2)
                key = attention.key(hidden).view(batch, length, heads, head_size).transpose(1, 2)
                value = attention.value(hidden).view(batch, length, heads, head_size).transpose(1, 2)
            context = functional.scaled_dot_product_attention(query, key, value, attn_mask=mask,
                                                              scale=attention.scaling)
            context = context.transpose(1, 2).reshape(batch, -1, width)
            attended = layer.attention.output(context, query_input)
            hidden = layer.output(layer.intermediate(attended), attended)
        return self.model.classifier(self.bert.pooler(hidden))


def logits_function(model) -> Callable:
    if PooledBertForward.applies_to(model):
        return PooledBertForward(model)
    return lambda **batch: model(**batch).logits


def score_texts(loaded, texts: list[str], batch_size: int = 32, max_tokens: int = 128,
                device: str = "cpu", on_batch: Callable[[int], None] | None = None,
                contexts: list[str] | None = None) -> np.ndarray:
    """Sigmoid probabilities, shape (len(texts), number of model outputs); with `contexts`, each
    text is read paired with its context (`encode`).

    On CPU, each core takes whole batches with one thread of its own: at these sizes (batches of
    a few thousand tokens) that beats splitting every matrix product across the cores.
    """
    import torch

    scores = np.zeros((len(texts), loaded.model.config.num_labels), dtype=np.float32)
    if not texts:
        return scores
    forward = logits_function(loaded.model)

    def score(chunk, batch):
        with torch.inference_mode():
            logits = forward(**{k: v.to(device) for k, v in batch.items()}).float()
            scores[chunk] = torch.sigmoid(logits).cpu().numpy()
        return len(chunk)

    batches = encode_batches(loaded.tokenizer, texts, batch_size, max_tokens, contexts)
    workers = torch.get_num_threads() if device == "cpu" else 1

    def scored():
        """Passages scored per batch, in completion order."""
        if workers < 2:
            for chunk, batch in batches:
                yield score(chunk, batch)
            return
        # The process's torch thread count is 1 while the pool runs, and restored after.
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(workers) as pool:
                # Two batches a worker in flight: padded batches are not all made at once.
                pending: deque = deque()
                for chunk, batch in batches:
                    pending.append(pool.submit(score, chunk, batch))
                    if len(pending) >= 2 * workers:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
        finally:
            torch.set_num_threads(workers)

    for done in scored():
        if on_batch:
            on_batch(done)
    return scores


# ---------------------------------------------------------------- int8 (`--int8`)
def activation_ranges(model, tokenizer, texts: list[str], batch_size: int = 64,
                      max_tokens: int = 128, contexts: list[str] | None = None) -> dict:
    """{layer name: largest |input| per channel} for every linear layer of the encoder, over
    these passages (the plain forward, so that every layer is seen as the model runs it)."""
    import torch

    encoder = model.base_model.encoder
    ranges: dict = {}
    hooks = []
    for name, module in encoder.named_modules():
        if isinstance(module, torch.nn.Linear):
            def record(_module, inputs, _output, name=name):
                seen = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(0)
                ranges[name] = torch.maximum(ranges[name], seen) if name in ranges else seen
            hooks.append(module.register_forward_hook(record))
    was_training = model.training
    model.eval()  # dropout off: the ranges of the model as it will run
    try:
        with torch.inference_mode():
            for _, batch in encode_batches(tokenizer, texts, batch_size, max_tokens, contexts):
                model(**{k: v.to(model.device) for k, v in batch.items()})
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return {name: r.float().cpu().contiguous() for name, r in ranges.items()}


def quantize_int8(model, ranges: dict, alpha: float = 0.8) -> None:
    """In place: the encoder's linear layers to int8 (dynamic activations, per-channel weights),
    smoothed by `ranges`, except the feed-forward output layers of the first half of the encoder,
    which stay fp32. The pooler and head stay fp32 too: they cost nothing and the thresholds were
    chosen on their outputs. alpha 0.8 and the layers kept fp32 were chosen on measured logit
    error (README, Measuring).

    Smoothing (SmoothQuant): the input is divided by s per channel and the weight's columns are
    multiplied by s, so that outlier channels of the activations move into the weights, which
    int8 holds per output channel. The product is unchanged in exact arithmetic; int8 rounds less
    of what matters. Query, key and value share one s (they read the same input), so that they
    can also run as one fused product (`fused_qkv_int8`, used by PooledBertForward) that gives
    the same numbers as the three apart."""
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    class InputScaled(torch.nn.Module):
        def __init__(self, inverse_scale, inner):
            super().__init__()
            self.register_buffer("inverse_scale", inverse_scale)
            self.inner = inner

        def forward(self, x):
            return self.inner(x * self.inverse_scale)

    def smoothing(name: str, weights: list) -> "torch.Tensor":
        if name not in ranges:
            raise KeyError(f"no activation range for {name}")
        weight_range = torch.stack([w.detach().abs().amax(0) for w in weights]).amax(0).clamp(min=1e-5)
        return (ranges[name].clamp(min=1e-5) ** alpha / weight_range ** (1 - alpha)).clamp(min=1e-5)

    def int8_linear(weight, bias, scale) -> InputScaled:
        scaled = torch.nn.Linear(weight.shape[1], weight.shape[0])
        scaled.weight.data = weight.detach() * scale
        scaled.bias.data = bias.detach().clone()
        with warnings.catch_warnings():  # torch's notice that this API will move to torchao
            warnings.simplefilter("ignore")
            int8 = quantize_dynamic(torch.nn.Sequential(scaled), {torch.nn.Linear: per_channel_dynamic_qconfig},
                                    dtype=torch.qint8)[0]
        return InputScaled(1.0 / scale, int8)

    encoder = model.base_model.encoder
    kept_fp32 = len(encoder.layer) // 2
    for name, module in list(encoder.named_modules()):
        projections = [getattr(module, p, None) for p in ("query", "key", "value")]
        if all(type(p) is torch.nn.Linear for p in projections):
            scale = smoothing(f"{name}.query", [p.weight for p in projections])
            for attribute, linear in zip(("query", "key", "value"), projections):
                setattr(module, attribute, int8_linear(linear.weight, linear.bias, scale))
            module.fused_qkv_int8 = int8_linear(torch.cat([p.weight for p in projections]),
                                                torch.cat([p.bias for p in projections]), scale)
    for name, linear in list(encoder.named_modules()):
        if type(linear) is not torch.nn.Linear:
            continue
        feed_forward_output = _FEED_FORWARD_OUTPUT.search(name)
        if feed_forward_output and int(feed_forward_output.group(1)) < kept_fp32:
            continue
        parent_name, _, attribute = name.rpartition(".")
        setattr(encoder.get_submodule(parent_name), attribute,
                int8_linear(linear.weight, linear.bias, smoothing(name, [linear.weight])))

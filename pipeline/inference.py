"""Scoring passages with a fine-tuned encoder, fast on a few CPU cores: one tokenizer pass,
length-sorted batches with dynamic padding, a forward pass that computes only what the classifier
reads, and one batch per core.

Shared by the classifier and the summariser's sentence scorer. The scores are those of
`model(**batch).logits` (tests hold them within 1e-5); only the work is less.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def encode_batches(tokenizer, texts: list[str], batch_size: int, max_tokens: int):
    """One tokenizer pass, then length-sorted batches with dynamic padding: short passages are
    not padded to the longest passage of the whole run. Yields (indices, padded batch)."""
    encoded = tokenizer(texts, truncation=True, max_length=max_tokens)
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
    value projections are one matrix product where the weights are plain fp32 (not int8 modules).
    """

    def __init__(self, model):
        import torch

        self.model = model
        self.bert = model.bert
        self.layers = list(self.bert.encoder.layer)
        self.fused = []
        for layer in self.layers:
            attention = layer.attention.self
            projections = (attention.query, attention.key, attention.value)
            if all(type(p) is torch.nn.Linear for p in projections):
                weight = torch.cat([p.weight for p in projections]).detach().contiguous()
                bias = torch.cat([p.bias for p in projections]).detach().contiguous()
                self.fused.append((weight, bias))
            else:
                self.fused.append(None)

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
                qkv = functional.linear(hidden, *self.fused[i])
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
                device: str = "cpu", on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Sigmoid probabilities, shape (len(texts), number of model outputs).

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

    batches = encode_batches(loaded.tokenizer, texts, batch_size, max_tokens)
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

"""`make bench`: throughput and memory of classify, summarise and the nightly run, each beside the
naive way a user would write it, measured side by side in one run.

    python -m pipeline.bench [--n 200] [--device cpu|cuda] [--int8] [--rounds 3]

Prints a table and a final line `speedup_classify=X.XX speedup_summarise=Y.YY`, and writes the
figures to benchmarks/results/<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
import warnings
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psutil

from pipeline import modelfolder, store, tfidf
from pipeline.classify import apply_named_in_item, blend
from pipeline.config import LABELS, REPO_ROOT, Source, load_settings
from pipeline.inference import encode
from pipeline.passages import item_context, item_passages
from pipeline.stages import Classifier, Summariser

CORPUS = REPO_ROOT.parent / "shared" / "corpus"


class PeakMemory:
    """Peak resident memory of this process while the block runs (sampled every 20 ms)."""

    def __enter__(self):
        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        self.started = time.perf_counter()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.02)

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.started
        self.running = False
        self.thread.join()
        self.peak_mb = round(self.peak / 1048576, 1)


def source_records() -> list[dict]:
    """Items of the bundled samples and, when present, the dev minutes, via the real ingest."""
    from pipeline.ingest import ingest_paths

    with tempfile.TemporaryDirectory() as tmp:
        db = store.connect(Path(tmp) / "bench.db")
        paths = [REPO_ROOT / "data" / "samples"] + ([CORPUS / "dev"] if (CORPUS / "dev").is_dir() else [])
        ingest_paths(db, paths)
        return [{k: i[k] for k in ("id", "title", "text", "is_procedural", "resolutions", "committee", "purpose")}
                for i in store.items(db)]


def cycle(records: list[dict], n: int) -> list[dict]:
    return [{**records[k % len(records)], "id": k} for k in range(n)]


def naive_classify(folder: Path, records: list[dict], thresholds: dict, device: str,
                   max_tokens: int = 128) -> list[dict]:
    """What a user would write: transformers.pipeline, default settings, one call per passage,
    every passage of every item."""
    from transformers import pipeline as hf_pipeline

    classifier = hf_pipeline("text-classification", model=str(folder), tokenizer=str(folder),
                             top_k=None, function_to_apply="sigmoid", device=device)
    card = modelfolder.read_card(folder)
    with_context = bool(card.get("context"))
    share = tfidf.card_share(card)
    words = tfidf.load(folder) if share > 0 else None
    out = []
    for record in records:
        passages = item_passages(record["text"], record.get("title"))
        scores = np.zeros((len(passages), len(LABELS)))
        for i, passage in enumerate(passages):
            # A model trained with context reads the same (context, passage) pair here.
            query = {"text": item_context(record), "text_pair": passage} if with_context else passage
            answer = classifier(query, truncation=True, max_length=max_tokens)
            if answer and isinstance(answer[0], list):  # some versions wrap one input's scores
                answer = answer[0]
            for result in answer:
                scores[i, LABELS.index(result["label"])] = result["score"]
        # The card's rule on what an item must name, as its reader would apply it.
        scores = apply_named_in_item(record, scores, card.get("named_in_item") or {})
        best = scores.max(axis=0) if len(passages) else np.zeros(len(LABELS))
        if words is not None:  # and the card's blend with the item's words
            best = blend(best, tfidf.probabilities(words, [record["text"]])[0], share)
        out.append({"id": record["id"], "labels": [l for j, l in enumerate(LABELS) if best[j] >= thresholds[l]],
                    "scores": {l: float(best[j]) for j, l in enumerate(LABELS)}})
    return out


def matmul_gflops(device: str) -> float:
    import torch

    a = torch.randn(2048, 2048, device=device)
    b = torch.randn(2048, 2048, device=device)
    for _ in range(2):
        a @ b
    repeats = 10 if device == "cpu" else 200
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * 2048 ** 3 * repeats / (time.perf_counter() - start) / 1e9


def forward_flops(model, tokens: int, passages: int) -> float:
    """2 x the multiply-adds of the linear layers our forward runs (embeddings and attention
    scores ignored): every token through all layers but the last; in the last, keys and values
    for every token and the rest for the [CLS] token alone; pooler and head once per passage."""
    from pipeline.inference import PooledBertForward

    def matrices(module) -> int:
        return sum(p.numel() for p in module.parameters() if p.dim() == 2)

    if not PooledBertForward.applies_to(model):
        return 2.0 * tokens * sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
    layers = model.bert.encoder.layer
    per_layer, keys_values = matrices(layers[0]), 2 * model.config.hidden_size ** 2
    head = matrices(model.bert.pooler) + matrices(model.classifier)
    return 2.0 * (tokens * ((len(layers) - 1) * per_layer + keys_values)
                  + passages * (per_layer - keys_values + head))


def nightly_throughput(settings, records: list[dict], device: str, use_int8: bool) -> dict:
    """End to end: `minutes nightly` over a fresh store holding these items as new files."""
    from pipeline.nightly import run_nightly

    with tempfile.TemporaryDirectory() as tmp:
        inbox = Path(tmp) / "inbox"
        write_inbox(inbox, records)
        nightly_settings = replace(settings, db=Path(tmp) / "nightly.db", out_dir=Path(tmp) / "out",
                                   sources=[Source(kind="path", path=str(inbox))], device=device,
                                   quantize=use_int8 and device == "cpu")
        with PeakMemory() as night:
            result = run_nightly(nightly_settings)
        return {"items": result.items_new, "seconds": round(night.seconds, 1),
                "items_s": round(result.items_new / night.seconds, 2), "peak_mb": night.peak_mb,
                "classified": result.items_classified, "summarised": result.items_summarised}


def write_inbox(folder: Path, records: list[dict]) -> None:
    """One text file per record, as a council's minutes page of one item."""
    folder.mkdir(parents=True, exist_ok=True)
    for record in records:
        body = f"Agenda item\n\n{record['title'] or 'Item'}\n\nItem {record['id']}.\n\n{record['text']}\n"
        (folder / f"item-{record['id']:06d}.txt").write_text(body, encoding="utf-8")


def backfill_throughput(settings, records: list[dict] | None = None, documents: int = 200,
                        actors: int = 2) -> dict:
    """`minutes backfill` over the same documents with --engine local and --engine ray (a pool
    of `actors`), from one run. Ray's overhead, apart: starting the local cluster (`ray_startup_s`;
    0 when this process had already joined one), and the fixed cost of a job (`ray_fixed_s`: a
    one-document job, which starts the actors and loads the models in each; `local_fixed_s` is
    the same for this process). `*_items_s` are whole jobs'; `local_items_s_steady` leaves the
    model load out (what a long backfill approaches). Ray's steady rate is not derived the same
    way: its one-document job overlaps less of actor start with parsing than a long one, so the
    difference of the two jobs is noise on 2 cores, not a rate."""
    import pyarrow.parquet as pq

    from pipeline.backfill import read_inputs, result_schema, run_local, run_ray, start_ray

    records = records if records is not None else cycle(source_records(), documents)
    with tempfile.TemporaryDirectory() as tmp:
        inbox = Path(tmp) / "inbox"
        write_inbox(inbox, records)
        inputs, errors = read_inputs(inbox)
        local_fixed = run_local(inputs[:1], [], settings, Path(tmp) / "local-one")
        local = run_local(inputs, errors, settings, Path(tmp) / "local")
        owns, startup_s = start_ray(None, None)
        try:
            with warnings.catch_warnings():  # Ray's note that one document cannot use 2 actors
                warnings.simplefilter("ignore", UserWarning)
                fixed = run_ray(inputs[:1], [], settings, Path(tmp) / "ray-one", actors)
            ray = run_ray(inputs, errors, settings, Path(tmp) / "ray", actors)
        finally:
            if owns:
                import ray as ray_module

                ray_module.shutdown()

        def labels(folder: str) -> dict:
            table = pq.read_table(folder, columns=["source", "position", "labels"], schema=result_schema())
            return {(r["source"], r["position"]): r["labels"] for r in table.to_pylist()}

        same = labels(local.out) == labels(ray.out)
    local_steady = max(local.seconds - local_fixed.seconds, 1e-9)
    return {"documents": len(inputs), "items": local.items, "actors": actors,
            "local_seconds": local.seconds, "local_items_s": round(local.items / local.seconds, 2),
            "local_fixed_s": local_fixed.seconds, "local_items_s_steady": round(local.items / local_steady, 2),
            "ray_seconds": ray.seconds, "ray_items_s": round(ray.items / ray.seconds, 2),
            "ray_startup_s": round(startup_s, 2), "ray_fixed_s": fixed.seconds, "same_labels": same}


def run(n: int, device: str, use_int8: bool, rounds: int = 3) -> dict:
    import torch

    from pipeline.classify import classify_records
    from pipeline.summarise import summarise_records

    torch.set_num_threads(2 if device == "cpu" else torch.get_num_threads())
    settings = load_settings()
    # "Ours" is the stage objects, as the nightly run makes them: max_tokens from each card; the
    # device, int8, threads, batch size and thresholds from the settings.
    stage_settings = replace(settings, device=device, quantize=use_int8 and device == "cpu",
                             threads=torch.get_num_threads())
    classifier = Classifier.promoted(stage_settings)
    summariser = Summariser.promoted(stage_settings)
    folder = classifier.folder
    base_records = source_records()
    records = cycle(base_records, n)
    # The passages our path scores (procedural items skip the model): for the passage and token counts.
    texts = [p for r in records if not r["is_procedural"] for p in item_passages(r["text"], r.get("title"))]
    results: dict = {"n": n, "device": device, "int8": use_int8, "passages": len(texts),
                     "machine": f"{platform.machine()} {psutil.cpu_count()} cpus", "model": folder.name}

    started = time.perf_counter()
    loaded = classifier.loaded
    results["model_load_s"] = round(time.perf_counter() - started, 3)
    fp32 = classifier.fp32()  # int8 keeps its fp32 weights for close calls: the same, not loaded twice
    max_tokens = classifier.max_tokens

    # Warm both paths up (first calls allocate and pick kernels) so N and 4N compare fairly.
    classifier(records[:16])
    if use_int8:
        fp32(records[:16])
    # Rounds alternate which path goes first; on a shared machine one round can be slowed by a
    # neighbour, so each figure is the median over the rounds and the spread is reported.
    timings: dict[str, list] = {"naive": [], "ours": [], "fp32": []}
    for round_index in range(rounds):
        order = ["naive", "ours", "fp32"] if round_index % 2 == 0 else ["ours", "fp32", "naive"]
        for way in order:
            if way == "fp32" and not use_int8:
                continue
            with PeakMemory() as memory:
                if way == "naive":
                    naive = naive_classify(folder, records, classifier.thresholds, device, max_tokens)
                elif way == "ours":
                    ours = classifier(records)
                else:
                    ours_fp32 = fp32(records)
            timings[way].append(memory)
    if not use_int8:
        timings["fp32"], ours_fp32 = timings["ours"], ours

    def median_seconds(way: str) -> float:
        return float(np.median([m.seconds for m in timings[way]]))

    def peak(way: str) -> float:
        return max(m.peak_mb for m in timings[way])

    ratios = [a.seconds / b.seconds for a, b in zip(timings["naive"], timings["ours"])]
    results["classify"] = {
        "rounds": rounds,
        "naive_items_s": round(n / median_seconds("naive"), 2), "ours_items_s": round(n / median_seconds("ours"), 2),
        "ours_fp32_items_s": round(n / median_seconds("fp32"), 2),
        "naive_peak_mb": peak("naive"), "ours_peak_mb": peak("ours"),
        "speedup": round(float(np.median(ratios)), 2),
        "speedup_rounds": [round(r, 2) for r in ratios],
        "speedup_fp32": round(float(np.median([a.seconds / b.seconds for a, b in zip(timings["naive"], timings["fp32"])])), 2),
    }
    # Same predictions as the naive path: procedural items are skipped by ours (no label by the
    # guide), so compare on the items both scored.
    scored = [k for k, r in enumerate(records) if not r["is_procedural"]]
    results["classify"]["labels_equal_fp32"] = all(ours_fp32[k]["labels"] == naive[k]["labels"] for k in scored)
    results["classify"]["max_score_diff_fp32"] = float(max(
        abs(ours_fp32[k]["scores"][l] - naive[k]["scores"][l]) for k in scored for l in LABELS))
    results["classify"]["labels_equal_int8"] = all(ours[k]["labels"] == naive[k]["labels"] for k in scored)
    results["classify"]["max_score_diff_int8"] = float(max(
        abs(ours[k]["scores"][l] - naive[k]["scores"][l]) for k in scored for l in LABELS))
    contexts = ([item_context(r) for r in records if not r["is_procedural"]
                 for _ in item_passages(r["text"], r.get("title"))] if loaded.card.get("context") else None)
    tokens = sum(len(ids) for ids in encode(loaded.tokenizer, texts, max_tokens, contexts)["input_ids"])
    def without(card_key: str) -> tuple[float, float]:
        """Seconds to classify the records in fp32 with the card's `card_key` left out, then as is:
        the same weights, so the ratio is what that part of the card costs."""
        bare = replace(fp32.loaded, card={**fp32.loaded.card, card_key: None})
        start = time.perf_counter()
        classify_records(bare, records, stage_settings.batch_size, max_tokens, device,
                         stage_settings.evidence_per_label)
        bare_s = time.perf_counter() - start
        start = time.perf_counter()
        fp32(records)
        return bare_s, time.perf_counter() - start

    # What reading each passage with its item's context costs: the same weights, passages alone.
    if loaded.card.get("context"):
        alone_s, paired_s = without("context")
        results["classify"].update({"fp32_items_s_without_context": round(n / alone_s, 2),
                                    "fp32_items_s_with_context": round(n / paired_s, 2),
                                    "context_cost": round(paired_s / alone_s, 2)})
    # What reading each item's words costs: the same weights, the card's blend left out.
    if tfidf.card_share(loaded.card):
        encoder_s, blended_s = without("tfidf")
        results["classify"].update({"fp32_items_s_without_words": round(n / encoder_s, 2),
                                    "fp32_items_s_with_words": round(n / blended_s, 2),
                                    "words_cost": round(blended_s / encoder_s, 3)})
    gflops = matmul_gflops(device)
    flops = forward_flops(fp32.loaded.model, tokens, len(texts))
    results["classify"].update({
        "tokens_s": round(tokens / median_seconds("ours"), 1), "matmul_gflops": round(gflops, 1),
        "share_of_matmul": round(flops / median_seconds("ours") / 1e9 / gflops, 3),
        "share_of_matmul_fp32": round(flops / median_seconds("fp32") / 1e9 / gflops, 3),
    })

    # Linear cost: the same path at 4N.
    big = cycle(base_records, 4 * n)
    start = time.perf_counter()
    classifier(big)
    results["classify"]["ours_items_s_4n"] = round(4 * n / (time.perf_counter() - start), 2)

    _ = summariser.loaded  # loaded before the timing, as the classifier was
    flagged = [{**r, "evidence": p["evidence"]} for r, p in zip(records, ours) if p["labels"]]
    with PeakMemory() as naive_s:
        naive_briefs = [summarise_records(summariser.loaded, [r], 1, summariser.max_tokens, device,
                                          summariser.max_words)[0] for r in flagged]
    with PeakMemory() as ours_s:
        ours_briefs = summariser(flagged)
    results["summarise"] = {
        "items": len(flagged), "naive_items_s": round(len(flagged) / naive_s.seconds, 2),
        "ours_items_s": round(len(flagged) / ours_s.seconds, 2),
        "speedup": round(naive_s.seconds / ours_s.seconds, 2),
        "naive_peak_mb": naive_s.peak_mb, "ours_peak_mb": ours_s.peak_mb,
        "same_briefings": sum(a["briefing"] == b["briefing"] for a, b in zip(naive_briefs, ours_briefs)),
    }

    results["nightly"] = nightly_throughput(settings, records, device, use_int8)
    try:
        import ray  # noqa: F401  (the optional extra)
    except ImportError:
        results["backfill"] = None
    else:
        results["backfill"] = backfill_throughput(replace(settings, device=device), records)

    if (CORPUS / "dev60.gold.jsonl").is_file():
        from pipeline.evaluate import classifier_metrics
        from pipeline.gold import prepare, read_labelled

        gold = [prepare(r) for r in read_labelled([CORPUS / "dev60.gold.jsonl"])]
        results["dev_macro_f1_fp32"] = classifier_metrics(fp32, gold)[0]["macro_f1"]
        results["dev_macro_f1_int8"] = classifier_metrics(classifier, gold)[0]["macro_f1"] if use_int8 else None
    return results


def print_table(r: dict) -> None:
    c, s, e = r["classify"], r["summarise"], r["nightly"]
    rows = [
        ("classify items/s (N)", f"{c['naive_items_s']}", f"{c['ours_items_s']}", f"{c['speedup']}x"),
        *([("classify items/s fp32 (N)", f"{c['naive_items_s']}", f"{c['ours_fp32_items_s']}",
            f"{c['speedup_fp32']}x")] if r["int8"] else []),
        (f"classify items/s (4N={4 * r['n']})", "", f"{c['ours_items_s_4n']}",
         f"{c['ours_items_s_4n'] / c['ours_items_s']:.2f} of N"),
        ("classify peak MB", f"{c['naive_peak_mb']}", f"{c['ours_peak_mb']}", ""),
        (f"summarise items/s ({s['items']} flagged)", f"{s['naive_items_s']}", f"{s['ours_items_s']}", f"{s['speedup']}x"),
        ("summarise peak MB", f"{s['naive_peak_mb']}", f"{s['ours_peak_mb']}", ""),
        (f"nightly items/s ({e['items']} items)", "", f"{e['items_s']}", f"{e['seconds']} s"),
        ("nightly peak MB", "", f"{e['peak_mb']}", ""),
    ]
    print(f"\nbenchmark: N={r['n']} items ({r['passages']} passages), device {r['device']}, "
          f"int8 {r['int8']}, model load {r['model_load_s']} s")
    print(f"{'measure':38} {'naive':>10} {'ours':>10} {'ratio':>14}")
    for row in rows:
        print(f"{row[0]:38} {row[1]:>10} {row[2]:>10} {row[3]:>14}")
    if r.get("backfill"):
        print_backfill(r["backfill"])
    print(f"classify speedup in each of {c['rounds']} rounds: {c['speedup_rounds']} (the median is reported)")
    print(f"labels equal to naive: fp32 {c['labels_equal_fp32']} (max score diff {c['max_score_diff_fp32']:.2e})"
          + (f", int8 {c['labels_equal_int8']} (max score diff {c['max_score_diff_int8']:.2e})" if r["int8"] else ""))
    print(f"ours: {c['tokens_s']} tokens/s; the linear layers it runs do {100 * c['share_of_matmul']:.0f}% of "
          f"the {c['matmul_gflops']} GFLOP/s a 2048x2048 fp32 matmul reaches here"
          + (f" (int8 layers counted as the fp32 work they stand for; fp32 alone "
             f"{100 * c['share_of_matmul_fp32']:.0f}%)" if r["int8"] else ""))
    if c.get("context_cost"):
        print(f"context: passages read with their item's context {c['fp32_items_s_with_context']} items/s, "
              f"alone {c['fp32_items_s_without_context']} items/s (fp32, same weights): "
              f"{c['context_cost']}x the time")
    if c.get("words_cost"):
        print(f"item's words: blended {c['fp32_items_s_with_words']} items/s, encoder alone "
              f"{c['fp32_items_s_without_words']} items/s (fp32, same weights): {c['words_cost']}x the time")
    if r.get("dev_macro_f1_fp32") is not None:
        print(f"dev60 macro-F1: fp32 {r['dev_macro_f1_fp32']}, int8 {r['dev_macro_f1_int8']}")
        if r["int8"] and r["dev_macro_f1_int8"] is not None:
            change = abs(r["dev_macro_f1_int8"] - r["dev_macro_f1_fp32"])
            print(f"int8 moves dev60 macro-F1 by {change:.4f} (the rule for keeping it: under 0.01)")


def print_backfill(b: dict) -> None:
    print(f"backfill items/s ({b['items']} items, {b['documents']} documents): local {b['local_items_s']} "
          f"({b['local_items_s_steady']} without its fixed {b['local_fixed_s']} s), ray with {b['actors']} "
          f"actors {b['ray_items_s']} (a job's fixed cost {b['ray_fixed_s']} s: actors started, models loaded); "
          f"ray start-up {b['ray_startup_s']} s; labels equal {b['same_labels']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="items in the benchmark corpus (default 200)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--int8", action="store_true",
                        help="our path with int8 dynamic quantisation (`minutes classify --int8`, "
                             "`quantize = true`), torch fp32 measured beside it, with how far int8 "
                             "moves dev macro-F1 and whether its labels equal the naive path's")
    parser.add_argument("--rounds", type=int, default=3,
                        help="timed rounds of each classify path, alternating which goes first; "
                             "figures are medians (default 3)")
    parser.add_argument("--nightly-only", action="store_true",
                        help="only time `minutes nightly` over N new items (e.g. --n 2000)")
    parser.add_argument("--backfill-only", action="store_true",
                        help="only time `minutes backfill` local against Ray (2 actors) over N new "
                             "documents (e.g. --n 20 for a quick look); needs the ray extra")
    parser.add_argument("--actors", type=int, default=2, help="Ray actors for the backfill row (default 2)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.backfill_only:
        import torch

        torch.set_num_threads(2)
        print_backfill(backfill_throughput(replace(load_settings(), device=args.device),
                                           documents=args.n, actors=args.actors))
        return
    if args.nightly_only:
        import torch

        torch.set_num_threads(2)
        figures = nightly_throughput(load_settings(), cycle(source_records(), args.n), args.device, args.int8)
        print(f"nightly over {figures['items']} new items: {figures['seconds']} s "
              f"({figures['items_s']} items/s), peak {figures['peak_mb']} MB, "
              f"{figures['classified']} classified, {figures['summarised']} summarised")
        return
    results = run(args.n, args.device, args.int8 and args.device == "cpu", args.rounds)
    results["when"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    print_table(results)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "-int8" if results["int8"] else ""
    path = args.out / f"{datetime.now(timezone.utc):%Y-%m-%d}-{args.device}-n{args.n}{suffix}.json"
    path.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(f"figures written to {path}")
    print(f"speedup_classify={results['classify']['speedup']:.2f} "
          f"speedup_summarise={results['summarise']['speedup']:.2f}")


if __name__ == "__main__":
    main()

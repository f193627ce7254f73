"""Benchmark of the prediction-depth probe stage (k-NN search + vote + depth) on synthetic embeddings.

Part 1 (exact): our exact probes against scikit-learn's brute-force ``KNeighborsClassifier`` and against
the matrix-multiply limit of this machine (a float32 GEMM of the same shapes, ``2 * Nq * Nr * d`` flops
per layer). Part 2 (approximate): an IVF (or HNSW) index against exact search on a large reference set.

Synthetic data: ``C`` Gaussian classes in a ``r``-dimensional latent space mapped linearly to ``d``
dimensions plus a little isotropic noise (real embeddings have low intrinsic dimension). Each sample keeps
its latent offset across layers and the class separation grows with depth, so samples far from their
class centre settle late, as in a trained network. The network's prediction ``yhat`` is the nearest class
centre in the last layer.

Usage::

    python benchmarks/probes.py            # spec sizes, about 5-10 minutes on 2 cores
    python benchmarks/probes.py --quick    # small sizes, under a minute
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from dataclasses import dataclass

import faiss
import numpy as np
import torch
from sklearn.neighbors import KNeighborsClassifier

from lightning_difficulty.functional.knn import build_index, knn_search, knn_vote
from lightning_difficulty.functional.prediction_depth import prediction_depth


@dataclass(frozen=True)
class Synthetic:
    """Labels and per-sample latent offsets shared by every layer."""

    labels: np.ndarray
    latent: np.ndarray
    num_classes: int
    dim: int
    n_layers: int
    seed: int


def make_synthetic(n: int, *, num_classes: int, dim: int, latent_dim: int, n_layers: int, seed: int) -> Synthetic:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    latent = rng.standard_normal((n, latent_dim), dtype=np.float32)
    return Synthetic(labels, latent, num_classes, dim, n_layers, seed)


def _separation(data: Synthetic, layer: int) -> float:
    return 0.25 + 1.25 * layer / max(data.n_layers - 1, 1)


def _centres(data: Synthetic, layer: int) -> np.ndarray:
    rng = np.random.default_rng([data.seed, layer])
    return rng.standard_normal((data.num_classes, data.latent.shape[1]), dtype=np.float32)


def layer_features(data: Synthetic, layer: int, chunk: int = 200_000) -> np.ndarray:
    """``(N, d)`` float32 embeddings of every sample at ``layer``."""
    rng = np.random.default_rng([data.seed, layer, 1])
    centres = _centres(data, layer) * _separation(data, layer)
    mixing = rng.standard_normal((data.latent.shape[1], data.dim), dtype=np.float32)
    mixing /= np.sqrt(data.latent.shape[1])
    out = np.empty((data.labels.shape[0], data.dim), dtype=np.float32)
    for start in range(0, out.shape[0], chunk):
        stop = min(start + chunk, out.shape[0])
        out[start:stop] = (centres[data.labels[start:stop]] + data.latent[start:stop]) @ mixing
        out[start:stop] += 0.05 * rng.standard_normal((stop - start, data.dim), dtype=np.float32)
    return out


def network_prediction(data: Synthetic) -> np.ndarray:
    """``yhat``: nearest class centre at the last layer, in the latent space."""
    centres = _centres(data, data.n_layers - 1) * _separation(data, data.n_layers - 1)
    points = centres[data.labels] + data.latent
    sq = (points**2).sum(1)[:, None] - 2 * points @ centres.T + (centres**2).sum(1)[None, :]
    return sq.argmin(axis=1)


def _proc_status_mib(field: str) -> float | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        return None
    return None


def reset_peak_rss() -> str:
    """Reset the kernel's peak-RSS mark (Linux ``clear_refs``); returns how the peak will be read."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return "resource.getrusage ru_maxrss (process lifetime peak: includes data generation)"
    return "/proc/self/status VmHWM, reset before the stage"


def peak_rss_mib() -> float:
    peak = _proc_status_mib("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    current = _proc_status_mib("VmRSS")
    return current if current is not None else peak_rss_mib()


def gemm_seconds(reference: torch.Tensor, queries: torch.Tensor, rows: int = 1024, repeats: int = 2) -> float:
    """Best time of a float32 ``queries @ reference.T`` in query blocks written into one buffer."""
    buffer = torch.empty(rows, reference.shape[0])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for s in range(0, queries.shape[0], rows):
            block = queries[s : s + rows]
            torch.mm(block, reference.T, out=buffer[: block.shape[0]])
        best = min(best, time.perf_counter() - start)
    return best


def torch_topk_seconds(reference: torch.Tensor, queries: torch.Tensor, k: int, rows: int = 2048) -> float:
    """Alternative exact path: chunked ``addmm`` squared distances + ``torch.topk`` (not used)."""
    norms = (reference * reference).sum(1)[None, :]
    start = time.perf_counter()
    for s in range(0, queries.shape[0], rows):
        sq = torch.addmm(norms, queries[s : s + rows], reference.T, alpha=-2.0)
        torch.topk(sq, k, dim=1, largest=False)
    return time.perf_counter() - start


def part_exact(args: argparse.Namespace) -> None:
    n_ref, n_query, n_layers, k = args.n_ref, args.n_query, args.layers, args.k
    data = make_synthetic(
        n_ref + n_query,
        num_classes=args.classes,
        dim=args.dim,
        latent_dim=args.latent_dim,
        n_layers=n_layers,
        seed=0,
    )
    layers = [layer_features(data, layer) for layer in range(n_layers)]
    ref_labels = data.labels[:n_ref]
    final = network_prediction(data)[n_ref:]
    rss_before = current_rss_mib()
    rss_method = reset_peak_rss()

    sk_layers = list(range(n_layers)) if args.sklearn_layers >= n_layers else _spread(n_layers, args.sklearn_layers)
    # Stages are interleaved per layer so that load from other processes hits them alike.
    ours = gemm = sk_time = 0.0
    same = 0
    rss_after = rss_before
    votes = np.empty((n_layers, n_query), dtype=np.int64)
    for layer, features in enumerate(layers):
        start = time.perf_counter()
        index = build_index(features[:n_ref], use_gpu=False)
        _, neighbours = knn_search(index, features[n_ref:], k)
        votes[layer] = knn_vote(ref_labels[neighbours], args.classes)
        ours += time.perf_counter() - start
        del index, neighbours
        if layer == 0:
            rss_after = peak_rss_mib()  # every layer has the same shapes: layer 0 reaches the stage's peak
        tensor = torch.from_numpy(features)
        gemm += gemm_seconds(tensor[:n_ref], tensor[n_ref:])
        if layer in sk_layers:
            start = time.perf_counter()
            classifier = KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(features[:n_ref], ref_labels)
            predicted = classifier.predict(features[n_ref:])
            sk_time += time.perf_counter() - start
            same += int((predicted == votes[layer]).sum())
    start = time.perf_counter()
    depth = prediction_depth(votes, final)
    ours += time.perf_counter() - start
    alt = torch_topk_seconds(torch.from_numpy(layers[-1][:n_ref]), torch.from_numpy(layers[-1][n_ref:]), k)
    sk_scaled = sk_time * n_layers / len(sk_layers)
    flops = 2.0 * n_query * n_ref * args.dim * n_layers

    print(
        f"\n## Part 1: exact probes, {n_ref:,} reference x {n_query:,} queries, {n_layers} layers, d={args.dim}, k={k}"
    )
    print(f"(synthetic, {args.classes} classes; torch threads={torch.get_num_threads()}, cpus={os.cpu_count()})\n")
    print("| stage | seconds | notes |")
    print("|---|---:|---|")
    print(f"| ours: build_index + knn_search + knn_vote + PD | {ours:.2f} | all {n_layers} layers |")
    sk_note = f"timed on layers {sk_layers}, scaled x{n_layers / len(sk_layers):.1f}"
    print(f"| sklearn KNeighborsClassifier(brute, k={k}) | {sk_scaled:.2f} | {sk_note} |")
    print(f"| GEMM limit: torch.mm float32, same shapes | {gemm:.2f} | {flops / gemm / 1e9:.0f} GFLOP/s, best of 2 |")
    print(f"| alternative: torch addmm + topk (not used) | {alt * n_layers:.2f} | last layer x{n_layers} |")
    print()
    print(f"- speed-up sklearn / ours: {sk_scaled / ours:.1f}x (target >= 3x)")
    print(f"- ours / GEMM limit: {ours / gemm:.2f}x (target <= 2x)")
    print(f"- votes identical to sklearn: {same / (len(sk_layers) * n_query):.6f} ({len(sk_layers)} layers)")
    print(f"- PD histogram (0..{n_layers}): {np.bincount(depth, minlength=n_layers + 1).tolist()}")
    per_sample = (rss_after - rss_before) * 2**20 / (n_ref + n_query)
    print(
        f"- peak RSS ({rss_method}): {rss_after:.0f} MiB during our first layer, {rss_before:.0f} MiB "
        f"resident before it (interpreter, libraries and the data of all {n_layers} layers): the stage adds "
        f"{per_sample:.0f} bytes per sample (reference + query); whole process "
        f"{rss_after * 2**20 / (n_ref + n_query):.0f} bytes per sample"
    )


def _set_breadth(index: faiss.Index, kind: str, value: int) -> None:
    """Set the search breadth: IVF ``nprobe`` or HNSW ``efSearch``."""
    if kind == "ivf":
        faiss.extract_index_ivf(index).nprobe = value
    else:
        faiss.downcast_index(index).hnsw.efSearch = value


def _breadths(index: faiss.Index, args: argparse.Namespace) -> list[int]:
    if args.sweep:
        return list(args.sweep)
    if args.approx == "hnsw":
        return [64, 128, 256]
    default = faiss.extract_index_ivf(index).nprobe
    return [max(1, default // 2), default, 2 * default]


def part_approximate(args: argparse.Namespace) -> None:
    n_ref, n_query, n_layers, k = args.large_ref, args.large_query, args.large_layers, args.k
    data = make_synthetic(
        n_ref + n_query,
        num_classes=args.classes,
        dim=args.dim,
        latent_dim=args.latent_dim,
        n_layers=n_layers,
        seed=1,
    )
    ref_labels = data.labels[:n_ref]
    final = network_prediction(data)[n_ref:]
    exact_votes = np.empty((n_layers, n_query), dtype=np.int64)
    approx_votes: dict[int, np.ndarray] = {}
    search_time: dict[int, float] = {}
    recall: dict[int, list[float]] = {}
    exact_build = exact_search = approx_build = 0.0
    breadths: list[int] = []
    for layer in range(n_layers):
        features = layer_features(data, layer)
        reference, queries = features[:n_ref], features[n_ref:]
        start = time.perf_counter()
        index = build_index(reference, use_gpu=False)
        exact_build += time.perf_counter() - start
        start = time.perf_counter()
        _, exact = knn_search(index, queries, k)
        exact_votes[layer] = knn_vote(ref_labels[exact], args.classes)
        exact_search += time.perf_counter() - start
        del index
        start = time.perf_counter()
        index = build_index(reference, kind=args.approx, nlist=args.nlist, use_gpu=False)
        approx_build += time.perf_counter() - start
        breadths = breadths or _breadths(index, args)
        for breadth in breadths:
            _set_breadth(index, args.approx, breadth)
            start = time.perf_counter()
            _, approx = knn_search(index, queries, k)
            approx_votes.setdefault(breadth, np.empty_like(exact_votes))[layer] = knn_vote(
                ref_labels[approx], args.classes
            )
            search_time[breadth] = search_time.get(breadth, 0.0) + time.perf_counter() - start
            overlap = [np.intersect1d(a, b).size / k for a, b in zip(exact[:1000], approx[:1000], strict=True)]
            recall.setdefault(breadth, []).append(float(np.mean(overlap)))
        del index
    exact_depth = prediction_depth(exact_votes, final)

    print(f"\n## Part 2: {args.approx.upper()} vs exact, {n_ref:,} reference x {n_query:,} queries, {n_layers} layers")
    if n_layers < args.layers:
        print(f"(reduced from {args.layers} to {n_layers} layers to bound the run time; --large-layers)")
    name = "nprobe" if args.approx == "ivf" else "ef_search"
    print(f"exact (faiss flat): build {exact_build:.2f} s, search + vote {exact_search:.2f} s")
    print(f"{args.approx} build (train + add, nlist={args.nlist or 'default'}): {approx_build:.2f} s\n")
    print(
        f"| {name} | search + vote s | search speed-up | build + search speed-up | identical PD | "
        "identical votes, worst layer | recall@k |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for breadth in breadths:
        same_pd = np.mean(prediction_depth(approx_votes[breadth], final) == exact_depth)
        worst = np.mean(approx_votes[breadth] == exact_votes, axis=1).min()
        seconds = search_time[breadth]
        print(
            f"| {breadth} | {seconds:.2f} | {exact_search / seconds:.1f}x | "
            f"{(exact_build + exact_search) / (approx_build + seconds):.1f}x | {same_pd:.4f} | {worst:.4f} | "
            f"{np.mean(recall[breadth]):.3f} |"
        )
    print("\n(targets: search speed-up >= 10x, identical PD >= 0.99; recall on the first 1,000 queries)")


def _spread(n: int, count: int) -> list[int]:
    return sorted({round(i * (n - 1) / max(count - 1, 1)) for i in range(count)})


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (under a minute)")
    parser.add_argument("--n-ref", type=int, default=50_000)
    parser.add_argument("--n-query", type=int, default=10_000)
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--k", type=int, default=30)
    parser.add_argument("--sklearn-layers", type=int, default=2, help="layers timed with sklearn (scaled)")
    parser.add_argument("--large-ref", type=int, default=1_000_000)
    parser.add_argument("--large-query", type=int, default=10_000)
    parser.add_argument("--large-layers", type=int, default=3)
    parser.add_argument("--approx", choices=("ivf", "hnsw"), default="ivf")
    parser.add_argument("--nlist", type=int, default=None)
    parser.add_argument("--sweep", type=int, nargs="*", help="nprobe (ivf) or ef_search (hnsw) values to time")
    parser.add_argument("--skip-exact", action="store_true")
    parser.add_argument("--skip-approximate", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.n_ref, args.n_query, args.sklearn_layers = 5_000, 1_000, args.layers
        args.large_ref, args.large_query = 100_000, 1_000
    return args


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    print(f"load average at start: {os.getloadavg()}")
    if not args.skip_exact:
        part_exact(args)
    if not args.skip_approximate:
        part_approximate(args)
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s; load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()

"""Aligning two feature dictionaries: which reference feature each target feature corresponds to."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from featdiff.activations.activations import ActivationSet
from featdiff.dictionaries.stats import encode, unit_decoder
from featdiff.errors import FeatdiffError, check_choice, warn

METHODS = ("hungarian", "max", "index")
ON = ("decoder", "activations")


def cosine_matrix(ref, tgt) -> Float[Tensor, "d_ref d_tgt"]:
    """Cosine between every reference and every target decoder row."""
    return unit_decoder(ref) @ unit_decoder(tgt).T


def correlation_matrix(
    ref_codes: Float[Tensor, "n d_ref"], tgt_codes: Float[Tensor, "n d_tgt"], batch_size: int = 65536
) -> Float[Tensor, "d_ref d_tgt"]:
    """Pearson correlation of every reference feature's codes with every target feature's, streamed."""
    if len(ref_codes) != len(tgt_codes):
        raise FeatdiffError(f"Codes must be paired by token; got {len(ref_codes)} and {len(tgt_codes)} rows.")
    n = len(ref_codes)
    xy = torch.zeros(ref_codes.shape[1], tgt_codes.shape[1], dtype=torch.float64)
    sx = torch.zeros(ref_codes.shape[1], dtype=torch.float64)
    sy = torch.zeros(tgt_codes.shape[1], dtype=torch.float64)
    sxx, syy = sx.clone(), sy.clone()
    for i in range(0, n, batch_size):
        a, b = ref_codes[i : i + batch_size].double(), tgt_codes[i : i + batch_size].double()
        xy += a.T @ b
        sx += a.sum(0)
        sy += b.sum(0)
        sxx += (a * a).sum(0)
        syy += (b * b).sum(0)
    cov = xy / n - torch.outer(sx / n, sy / n)
    var_x = (sxx / n - (sx / n) ** 2).clamp_min(0)
    var_y = (syy / n - (sy / n) ** 2).clamp_min(0)
    denom = torch.outer(var_x.sqrt(), var_y.sqrt())
    return torch.where(denom > 0, cov / denom.clamp_min(1e-30), torch.zeros_like(cov)).float()


class _StreamedCodes:
    """The codes of ``dictionary`` on an on-disk ``ActivationColumn``, computed when rows are sliced
    (``codes[a:b]``) and restricted to some features (``codes[:, idx]``): what ``correlation_matrix`` reads,
    without holding n_tokens x d_sae codes."""

    def __init__(self, dictionary, column, features: Tensor | None = None, batch_size: int = 4096):
        self.dictionary, self.column, self.features, self.batch_size = dictionary, column, features, batch_size

    @property
    def shape(self) -> tuple[int, int]:
        d = self.dictionary.W_dec.shape[0] if self.features is None else len(self.features)
        return (len(self.column), d)

    def __len__(self) -> int:
        return len(self.column)

    def __getitem__(self, key):
        if isinstance(key, tuple):  # codes[:, idx]
            rows, feats = key
            if rows != slice(None):
                raise FeatdiffError("_StreamedCodes: select features over all rows (codes[:, idx]).")
            return _StreamedCodes(self.dictionary, self.column, torch.as_tensor(feats), self.batch_size)
        codes = encode(self.dictionary, self.column[key], self.batch_size)
        return codes if self.features is None else codes[:, self.features]

    def fired(self) -> np.ndarray:
        """Which features fire (code > 0) on at least one row."""
        out = torch.zeros(self.shape[1], dtype=torch.bool)
        for i in range(0, len(self), 65536):
            out |= (self[i : i + 65536] > 0).any(0)
        return out.numpy()


@dataclass
class Alignment:
    """A one-to-one (Hungarian), many-to-one (max) or by-index (index: latent j to latent j, for dictionaries
    fine-tuned from one another) matching of target features to reference features.

    ``match[j]`` is the reference feature matched to target feature j (-1 if none: dead, or more target
    than reference features) and ``similarity[j]`` its score (cosine of decoder rows, or correlation of
    codes when ``on="activations"``); ``ref_live`` / ``tgt_live`` mark the features that were matched over;
    ``exact`` is False only when a sparse solve could not be certified optimal.
    """

    reference: str
    target: str
    match: np.ndarray
    similarity: np.ndarray
    ref_live: np.ndarray
    tgt_live: np.ndarray
    method: str = "hungarian"
    on: str = "decoder"
    ref_decoder: Tensor | None = None
    tgt_decoder: Tensor | None = None
    exact: bool = True

    def __repr__(self) -> str:
        """One line: names, sizes, live counts (reference/target), how many live target features were matched
        and their mean similarity (the arrays stay in the fields; ``table()`` has them per feature)."""
        matched = (self.match >= 0) & self.tgt_live
        sim = self.similarity[matched]
        mean = f"{float(np.mean(sim)):.3f}" if len(sim) else "nan"
        kind = "cosine" if self.on == "decoder" else "correlation"
        return (
            f"Alignment({self.reference}->{self.target}, {self.method}/{self.on}, d_ref={self.d_ref}, "
            f"d_tgt={self.d_tgt}, live {int(np.sum(self.ref_live))}/{int(np.sum(self.tgt_live))}, "
            f"n_matched={int(matched.sum())}, mean {kind}={mean}"
            + ("" if self.exact else ", not certified optimal")
            + ")"
        )

    @property
    def d_ref(self) -> int:
        return len(self.ref_live)

    @property
    def d_tgt(self) -> int:
        return len(self.tgt_live)

    def table(self) -> pd.DataFrame:
        """One row per target feature: feature, match, similarity, live."""
        return pd.DataFrame(
            {
                "feature": np.arange(self.d_tgt, dtype=np.int64),
                "match": self.match.astype(np.int64),
                "similarity": self.similarity.astype(np.float64),
                "live": self.tgt_live.astype(bool),
            }
        )



def _assign(sim: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows = target, columns = reference; returns (match, similarity) per target row."""
    n_t, n_r = sim.shape
    match = np.full(n_t, -1, dtype=np.int64)
    score = np.full(n_t, np.nan)
    if n_t == 0 or n_r == 0:
        return match, score
    if method == "hungarian":
        from scipy.optimize import linear_sum_assignment  # deferred: scipy ~1 s to import

        rows, cols = linear_sum_assignment(sim, maximize=True)
        match[rows] = cols
        score[rows] = sim[rows, cols]
    else:
        match[:] = sim.argmax(1)
        score[:] = sim[np.arange(n_t), match]
    return match, score


def _assign_cosines(tgt: Tensor, ref: Tensor, method: str, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """``_assign`` on the decoder cosines ``tgt @ ref.T``, computed in float32 blocks (through one reused
    block buffer) straight into the one float64 matrix scipy solves on, negated so that scipy minimises it
    without a copy: no float32 matrix, float64 copy or negated copy of the whole n_t x n_r matrix beside it
    (at 8,192^2 each is 0.3-0.5 GB, and on a loaded machine writing their fresh pages took as long as the
    solve: benchmarks/README.md)."""
    n_t, n_r = len(tgt), len(ref)
    if method != "hungarian" or n_t == 0 or n_r == 0:
        match = np.full(n_t, -1, dtype=np.int64)
        score = np.full(n_t, np.nan)
        if n_r:
            for i, block in _row_blocks(tgt, ref, chunk):
                top = block.max(dim=1)
                match[i : i + len(block)] = top.indices.numpy()
                score[i : i + len(block)] = top.values.double().numpy()
        return match, score
    from scipy.optimize import linear_sum_assignment  # deferred: scipy ~1 s to import

    cost = np.empty((n_t, n_r))
    out, neg_tgt, ref_t = torch.from_numpy(cost), -tgt, ref.T
    buf = torch.empty(min(chunk, n_t), n_r, dtype=tgt.dtype)  # one block buffer: no page faults per block
    for i in range(0, n_t, chunk):
        m = min(chunk, n_t - i)
        torch.mm(neg_tgt[i : i + m], ref_t, out=buf[:m])
        out[i : i + m].copy_(buf[:m])
    rows, cols = linear_sum_assignment(cost)
    match = np.full(n_t, -1, dtype=np.int64)
    score = np.full(n_t, np.nan)
    match[rows] = cols
    score[rows] = -cost[rows, cols]
    return match, score


# --------------------------------------------------------------------------- large dictionaries
# featdiff's own: scipy solves the sparse assignment (LAPJVsp); the candidate graph, the column prices and the
# dense duality bound that certifies the sparse optimum as the dense one are written here.
SPARSE_ABOVE = 8192
"""``solver="auto"`` solves on a sparse candidate graph when both sides have more live features than this: up
to here the dense matrix fits (8,192^2 float64 is 0.5 GB) and the dense solve is exact at the dense time, while a
sparse graph of partly trained SAEs (many near-equal cosines) can fail its certificate and cost sparse + dense."""


def _row_blocks(a: Tensor, b: Tensor, chunk: int):
    """(start, a[start:start+chunk] @ b.T) blocks of the full similarity, never all of it at once."""
    for i in range(0, len(a), chunk):
        yield i, a[i : i + chunk] @ b.T


def _candidates(a: Tensor, b: Tensor, k: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` most similar columns (indices, similarities), streamed."""
    k = min(k, len(b))
    idx = np.empty((len(a), k), dtype=np.int64)
    val = np.empty((len(a), k), dtype=np.float32)
    for i, block in _row_blocks(a, b, chunk):
        top = block.topk(k, dim=1)
        idx[i : i + len(block)] = top.indices.numpy()
        val[i : i + len(block)] = top.values.numpy()
    return idx, val


def _top_k_and_next(a: Tensor, b: Tensor, k: int, chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's ``k`` candidates and its best excluded similarity (every other column is at most this)."""
    idx, val = _candidates(a, b, k + 1, chunk)
    kth = val[:, -1].astype(np.float64) if idx.shape[1] > k else np.full(len(a), -np.inf)
    return idx[:, :k], val[:, :k], kth


def _prices(rows: np.ndarray, cols: np.ndarray, sims: np.ndarray, match: np.ndarray, n_cols: int) -> np.ndarray:
    """Column prices v >= 0 with u_i + v_j >= s_ij on every candidate edge and equality on the matching, where
    u_i = s_{i,match(i)} - v_{match(i)}: the longest-path fixpoint of v_j >= v_match(i) + s_ij - s_i,match(i)
    (finite when the matching is optimal on the candidate graph: no alternating cycle gains)."""
    matched_sim = np.full(match.shape, -np.inf)
    for_rows = match[rows]
    is_match = cols == for_rows
    matched_sim[rows[is_match]] = sims[is_match]
    gain = sims - matched_sim[rows]
    v = np.zeros(n_cols)
    for _ in range(len(match) + 1):
        cand = v[for_rows] + gain
        new = v.copy()
        np.maximum.at(new, cols, cand)
        if np.allclose(new, v, rtol=0, atol=1e-12):
            return new
        v = new
    return v


def _dense_bound(a: Tensor, b: Tensor, v: np.ndarray, chunk: int) -> np.ndarray:
    """u_i = max_j (s_ij - v_j) over *all* columns: with prices v >= 0, sum(u) + sum(v) bounds the optimum."""
    vt = torch.from_numpy(v).to(a.dtype)
    u = np.empty(len(a))
    for i, block in _row_blocks(a, b, chunk):
        u[i : i + len(block)] = (block - vt).max(dim=1).values.double().numpy()
    return u


def _assign_streamed(tgt: Tensor, ref: Tensor, method: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """``_assign`` on decoder cosines without the dense matrix: (match, similarity, certified)."""
    if method == "max":
        idx, val = _candidates(tgt, ref, 1, 2048)
        return idx[:, 0], val[:, 0].astype(np.float64), True
    if len(tgt) <= len(ref):
        return sparse_hungarian(tgt, ref)
    m_ref, s_ref, ok = sparse_hungarian(ref, tgt)  # match the smaller side, then invert
    match, score = np.full(len(tgt), -1, dtype=np.int64), np.full(len(tgt), np.nan)
    match[m_ref] = np.arange(len(ref))
    score[m_ref] = s_ref
    return match, score, ok


def sparse_hungarian(
    a: Float[Tensor, "n_a d_in"], b: Float[Tensor, "n_b d_in"], k: int = 16, chunk: int = 2048, rounds: int = 4
) -> tuple[np.ndarray, np.ndarray, bool]:
    """The one-to-one matching of the rows of ``a`` to rows of ``b`` (``len(a) <= len(b)``) that maximises
    the total cosine, solved on each row's ``k`` best candidates instead of the dense matrix.

    The result is certified exact when an LP dual of the *dense* problem matches its value: column prices v
    (from the candidate graph) give the bound sum_i max_j (s_ij - v_j) + sum_j v_j over every pair, computed
    in a streamed pass. Rows whose bound exceeds their matched value get their violating columns as extra
    candidates and the graph is solved again (``rounds`` times). Returns (match, similarity, certified).

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> b = torch.nn.functional.normalize(torch.randn(300, 32, generator=g), dim=1)
    >>> a = torch.nn.functional.normalize(b[:200] + 0.05 * torch.randn(200, 32, generator=g), dim=1)
    >>> match, sim, certified = sparse_hungarian(a, b, k=4)
    >>> certified, bool((match == np.arange(200)).mean() > 0.95)
    (True, True)
    """
    import scipy.sparse as sp  # deferred: scipy ~1 s to import
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching  # deferred: as above

    n_a, n_b = len(a), len(b)
    idx, val, kth = _top_k_and_next(a, b, k, chunk)
    rows = np.repeat(np.arange(n_a), idx.shape[1])
    cols, sims = idx.ravel(), val.ravel().astype(np.float64)
    certified, match, value = False, np.full(n_a, -1, dtype=np.int64), np.full(n_a, np.nan)
    for _ in range(rounds + 1):
        graph = sp.csr_array((sims + 3.0, (rows, cols)), shape=(n_a, n_b))  # weights must be non-zero
        graph.sum_duplicates()
        try:
            r, c = min_weight_full_bipartite_matching(graph, maximize=True)
        except ValueError:  # no full matching among the candidates: widen every row
            k = min(n_b, 2 * idx.shape[1])
            idx, val, kth = _top_k_and_next(a, b, k, chunk)
            rows = np.repeat(np.arange(n_a), idx.shape[1])
            cols, sims = idx.ravel(), val.ravel().astype(np.float64)
            continue
        match = np.full(n_a, -1, dtype=np.int64)
        match[r] = c
        g = graph.tocoo()
        e_rows, e_cols, e_sims = g.row.astype(np.int64), g.col.astype(np.int64), g.data - 3.0
        value = np.full(n_a, np.nan)
        hit = e_cols == match[e_rows]
        value[e_rows[hit]] = e_sims[hit]
        v = _prices(e_rows, e_cols, e_sims, match, n_b)
        u_matched = value - v[match]
        # the dense dual u_i = max_j (s_ij - v_j) over every column: over the candidates from the graph, and
        # outside them at most the row's best excluded similarity (v >= 0); rows where that bound is not
        # already met get the exact value from their full row of similarities
        u = np.full(n_a, -np.inf)
        np.maximum.at(u, e_rows, e_sims - v[e_cols])
        u = np.maximum(u, kth)
        unsure = np.flatnonzero(u - u_matched > 1e-5)
        if len(unsure):
            u[unsure] = _dense_bound(a[unsure], b, v, chunk)
        violating = np.flatnonzero(u - u_matched > 1e-5)
        free = np.ones(n_b, bool)
        free[match[match >= 0]] = False
        if len(violating) == 0:
            certified = float(v[free].sum()) <= 1e-6 * max(1, n_a)  # then the bound equals our total
            break
        # add each violating row's columns that break its dual constraint, then solve again
        vt = torch.from_numpy(v).to(a.dtype)
        add_r, add_c = [], []
        for i in range(0, len(violating), chunk):
            rr = violating[i : i + chunk]
            block = a[rr] @ b.T - vt
            bad = block > torch.from_numpy(u_matched[rr] + 1e-5).to(a.dtype)[:, None]
            ri, ci = bad.nonzero(as_tuple=True)
            add_r.append(rr[ri.numpy()])
            add_c.append(ci.numpy())
        new_r, new_c = np.concatenate(add_r), np.concatenate(add_c)
        new_s = torch.einsum("nd,nd->n", a[new_r], b[new_c]).double().numpy()
        kth[violating] = np.inf  # their candidates are no longer a top-k: check them in full next time
        rows, cols, sims = np.concatenate([e_rows, new_r]), np.concatenate([e_cols, new_c]), np.concatenate([e_sims, new_s])
    return match, value, certified


def align(
    reference,
    target,
    *,
    method: str = "hungarian",
    on: str = "decoder",
    activations: ActivationSet | None = None,
    reference_name: str = "base",
    target_name: str = "target",
    ref_live: Bool[Tensor, " d_ref"] | np.ndarray | None = None,
    tgt_live: Bool[Tensor, " d_tgt"] | np.ndarray | None = None,
    codes: tuple[Tensor, Tensor] | None = None,
    solver: str = "auto",
) -> Alignment:
    """Match target features to reference features (one-to-one by default, maximising the total similarity).

    ``on="decoder"`` scores pairs by the cosine of their decoder rows; ``on="activations"`` by the Pearson
    correlation of their codes on the same tokens (needs ``activations`` holding ``reference_name`` and
    ``target_name``). When activations are given, features that never fire on them are dead and are left
    out of the matching (``match`` -1). ``method="index"`` matches target latent j to reference latent j
    (where both are live), for a target dictionary fine-tuned from the reference
    (featdiff.dictionaries.finetune):
    ``similarity`` is then the pair's decoder cosine (or code correlation), however low.

    ``solver``: ``"dense"`` builds the full similarity matrix; ``"sparse"`` (decoder cosines only) streams it
    in blocks, keeps each feature's best candidates and certifies the optimum against the dense dual bound
    (``sparse_hungarian``), so 32k x 32k dictionaries align in bounded memory; ``"auto"`` picks sparse when
    both sides have more than ``SPARSE_ABOVE`` live features. ``Alignment.exact`` says whether the matching
    is certified optimal (always for dense).

    Examples
    --------
    >>> import torch
    >>> W = torch.eye(4)
    >>> al = align(W, W[[2, 0, 3, 1]])
    >>> al.match.tolist(), al.similarity.round(3).tolist()
    ([2, 0, 3, 1], [1.0, 1.0, 1.0, 1.0])
    >>> al  # a short summary; the arrays are in the fields and in al.table()
    Alignment(base->target, hungarian/decoder, d_ref=4, d_tgt=4, live 4/4, n_matched=4, mean cosine=1.000)
    >>> align(W, W[[2, 0, 3, 1]], method="index").similarity.round(3).tolist()
    [0.0, 0.0, 0.0, 0.0]
    """
    check_choice("method", method, METHODS, "align")
    check_choice("on", on, ON, "align")
    check_choice("solver", solver, ("auto", "dense", "sparse"), "align")
    if solver == "sparse" and on != "decoder":
        raise FeatdiffError("align(solver='sparse') works on decoder cosines; use on='decoder' or solver='dense'.")
    ref_dec, tgt_dec = unit_decoder(reference), unit_decoder(target)
    if ref_dec.shape[1] != tgt_dec.shape[1]:
        raise FeatdiffError(
            f"Reference {reference_name!r} and target {target_name!r} dictionaries have different d_in "
            f"({ref_dec.shape[1]} vs {tgt_dec.shape[1]}); align dictionaries trained at the same hook."
        )
    ref_codes = tgt_codes = None
    if activations is not None:
        for n in (reference_name, target_name):
            if n not in activations:
                raise FeatdiffError(
                    f"align needs activations of {n!r}; the ActivationSet has {activations.names}."
                )
        if activations.d_model != ref_dec.shape[1]:
            raise FeatdiffError(
                f"Activations have d_model={activations.d_model} but the dictionaries have d_in={ref_dec.shape[1]}."
            )
        if codes is not None:
            ref_codes, tgt_codes = codes
        elif isinstance(activations.column(reference_name), Tensor):
            if on == "activations" or ref_live is None or tgt_live is None:
                ref_codes = encode(reference, activations[reference_name])
                tgt_codes = encode(target, activations[target_name])
        else:  # on disk: codes are encoded chunk by chunk as they are used, never held whole
            ref_codes = _StreamedCodes(reference, activations.column(reference_name))
            tgt_codes = _StreamedCodes(target, activations.column(target_name))
        if ref_live is None:
            ref_live = (ref_codes > 0).any(0) if isinstance(ref_codes, Tensor) else ref_codes.fired()
        if tgt_live is None:
            tgt_live = (tgt_codes > 0).any(0) if isinstance(tgt_codes, Tensor) else tgt_codes.fired()
    elif on == "activations":
        raise FeatdiffError("align(on='activations') needs activations=ActivationSet with both checkpoints.")
    ref_live = np.ones(len(ref_dec), bool) if ref_live is None else np.asarray(ref_live, dtype=bool)
    tgt_live = np.ones(len(tgt_dec), bool) if tgt_live is None else np.asarray(tgt_live, dtype=bool)
    r_idx, t_idx = np.flatnonzero(ref_live), np.flatnonzero(tgt_live)
    sparse = on == "decoder" and (
        solver == "sparse" or (solver == "auto" and min(len(r_idx), len(t_idx)) > SPARSE_ABOVE)
    )
    exact = True
    if method == "index":  # latent j to latent j where both are live: the pair's own score, however low
        both = np.intersect1d(t_idx, r_idx)
        if on == "decoder":
            score = (tgt_dec[both] * ref_dec[both]).sum(1).double().numpy()
        else:
            score = np.diag(correlation_matrix(tgt_codes[:, both], ref_codes[:, both]).double().numpy())
        pos = np.searchsorted(r_idx, both)
        m, s = np.full(len(t_idx), -1, dtype=np.int64), np.full(len(t_idx), np.nan)
        m[np.searchsorted(t_idx, both)] = pos
        s[np.searchsorted(t_idx, both)] = score
    elif sparse and len(r_idx) and len(t_idx):
        m, s, exact = _assign_streamed(tgt_dec[t_idx], ref_dec[r_idx], method)
    elif on == "decoder":
        m, s = _assign_cosines(tgt_dec[t_idx], ref_dec[r_idx], method)
    else:
        m, s = _assign(correlation_matrix(tgt_codes[:, t_idx], ref_codes[:, r_idx]).double().numpy(), method)
    if not exact:
        warn(
            f"align({reference_name!r}, {target_name!r}): the sparse matching could not be certified optimal "
            "against the dense bound; its total is a lower bound. Pass solver='dense' where memory allows.",
        )
    match = np.full(len(tgt_dec), -1, dtype=np.int64)
    similarity = np.full(len(tgt_dec), np.nan)
    ok = m >= 0
    match[t_idx[ok]] = r_idx[m[ok]]
    similarity[t_idx[ok]] = np.clip(s[ok], -1.0, 1.0)  # cosines / correlations: no float32 1 + 1e-7
    return Alignment(
        reference=reference_name,
        target=target_name,
        match=match,
        similarity=similarity,
        ref_live=ref_live,
        tgt_live=tgt_live,
        method=method,
        on=on,
        ref_decoder=ref_dec,
        tgt_decoder=tgt_dec,
        exact=exact,
    )


def mmcs(reference, target) -> float:
    """Mean max cosine similarity: the mean over target features of the best cosine to any reference row.

    Examples
    --------
    >>> import torch
    >>> round(mmcs(torch.eye(3), torch.eye(3)), 6)
    1.0
    """
    return float(cosine_matrix(reference, target).max(0).values.mean())


@torch.no_grad()
def svcca(
    x: Float[Tensor, "n d_x"], y: Float[Tensor, "n d_y"], keep: float = 0.99, max_dims: int | None = None
) -> float:
    """SVCCA similarity (Raghu et al. 2017) of two paired sets of vectors: the mean canonical correlation
    of their top singular directions (those keeping a fraction ``keep`` of the variance).

    Invariant to invertible linear maps of either side: 1.0 for ``y = x @ R``, near 0 for independent
    data. Used here on two checkpoints' activations at the same tokens.

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(500, 6, generator=torch.Generator().manual_seed(0))
    >>> round(svcca(x, x @ torch.randn(6, 6, generator=torch.Generator().manual_seed(1))), 4)
    1.0
    """
    if len(x) != len(y):
        raise FeatdiffError(f"svcca needs paired rows; got {len(x)} and {len(y)}.")
    if not 0 < keep <= 1:
        raise FeatdiffError(f"svcca's keep must be in (0, 1]; got {keep}.")

    def reduce(a: Tensor) -> Tensor:
        a = a.double() - a.double().mean(0)
        u, s, _ = torch.linalg.svd(a, full_matrices=False)
        var = (s**2).cumsum(0) / (s**2).sum().clamp_min(1e-30)
        k = int((var < keep).sum()) + 1
        k = min(k, max_dims or k, len(s))
        return u[:, :k] * s[:k]

    a, b = reduce(x), reduce(y)
    # CCA of the reduced sets: the singular values of Q_a^T Q_b for orthonormal bases Q_a, Q_b
    qa, _ = torch.linalg.qr(a)
    qb, _ = torch.linalg.qr(b)
    rho = torch.linalg.svdvals(qa.T @ qb).clamp(0, 1)
    return float(rho.mean())

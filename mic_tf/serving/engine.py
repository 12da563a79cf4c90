"""One request's cross-channel recommendation online (paper 2.9): the user's current history and
the U2U / I2I neighbourhoods from Redis, the user vector from the tower, U2I from Faiss, and the
merge of `mic_tf.inference.score.rank_retrieved` (the same counting, scores and greedy pick as
offline `recommend`).

"Same answers as offline", precisely: for the same user vector e_u and history h,
  * a request by `history`, or by a user who is not a training user, is answered exactly as
    `CrossChannelInference(bundle datastore, bundle config, top_n=n).recommend_one(e_u, h)`
    while Redis holds the bundle's histories (tested bit for bit);
  * a training user's U2U neighbours are the precomputed list of the bundle (its vector at export,
    itself excluded), which equals `recommend_one(e_u, h, exclude_user=u)` as long as the user's
    history is the bundle's (afterwards the list is one refresh old, as in the paper);
  * neighbours' histories include their click events (the paper's real-time U2U).
"""

from __future__ import annotations

import dataclasses

import faiss
import numpy as np

from mic_tf.inference import channels
from mic_tf.inference.datastore import reduce_users
from mic_tf.inference.score import CHANNELS, rank_retrieved
from mic_tf.serving.bundle import Bundle
from mic_tf.serving.errors import StoreUnavailable, UnknownIdsError
from mic_tf.serving.keys import Keys, decode_event, decode_ids
from mic_tf.serving.metrics import Stages
from mic_tf.serving.tower import UserTower

_EMPTY = np.zeros(0, np.int64)


def _labels() -> np.ndarray:
    """Channel-name lists by bit mask (bit j = CHANNELS[j] retrieved the item)."""
    out = np.empty(1 << len(CHANNELS), dtype=object)
    for mask in range(len(out)):
        out[mask] = [c for j, c in enumerate(CHANNELS) if mask >> j & 1]
    return out


_LABELS = _labels()


def _table_rows(blobs: list, width: int) -> np.ndarray:
    """Similar-item lists (int32 bytes, None if missing) -> `[len(blobs), width]` int64,
    0-padded."""
    if blobs and all(b is not None and len(b) == 4 * width for b in blobs):  # the usual case
        return np.frombuffer(b"".join(blobs), "<i4").reshape(len(blobs), width).astype(np.int64)
    rows = np.zeros((len(blobs), width), np.int64)
    for r, blob in enumerate(blobs):  # distinct history items (<= M), not candidates
        ids = decode_ids(blob)[:width]
        rows[r, :len(ids)] = ids
    return rows


class ServingModel:
    """A bundle loaded for serving: datastore (Faiss indexes), tower, raw-id maps, settings.

    Args:
      bundle: an opened `Bundle`.
      prefix: the Redis key prefix.
    """

    def __init__(self, bundle: Bundle, prefix: str = "mic"):
        self.bundle, self.version = bundle, bundle.version
        self.keys = Keys(prefix, bundle.version)
        self.config = bundle.inference
        self.datastore = bundle.load_datastore(use_gpu=False)
        self.tower = UserTower(bundle.path / "user_tower", bundle.maxlen,
                               bundle.meta.get("num_user_features", 0))
        self.item_raw = bundle.item_ids()
        self.item_index = {raw: i for i, raw in enumerate(self.item_raw.tolist()) if i}
        self.user_raw = np.array(bundle.user_ids(), dtype=object)
        self.user_index = {raw: i for i, raw in enumerate(self.user_raw.tolist())}
        self.num_train_users = bundle.num_train_users
        self.hist_items, self.hist_offsets = bundle.histories()
        self.user_features = bundle.user_features()
        self.popular = bundle.popular()
        self.cap, self.history_until = bundle.history_cap, bundle.history_until

    def warm_up(self) -> None:
        """One tower call and one search, so the first request pays no graph tracing."""
        q = self.tower.embed([np.array([1])])
        channels.u2i(self.datastore, q, 1)

    # ------------------------------------------------------------------ ids and histories
    def item_ids(self, raw_ids) -> np.ndarray:
        """Raw item ids -> `[L]` int64 internal ids; UnknownIdsError names the unknown ones."""
        index = self.item_index
        ids = [index.get(r, 0) for r in raw_ids]
        if 0 in ids:
            raise UnknownIdsError("item", [r for r, i in zip(raw_ids, ids) if i == 0])
        return np.asarray(ids, np.int64)

    def merge_history(self, history: bytes | None, events) -> np.ndarray:
        """A user's current history: the bundle's (int32 bytes) + the click events after
        `history_until` (items unknown to this bundle dropped), the last H."""
        base = decode_ids(history)
        if not events:
            return base[-self.cap:]
        extra = []
        for entry in events:  # the user's own clicks since the bundle (at most H)
            ts, raw = decode_event(entry)
            item = self.item_index.get(raw)
            if ts > self.history_until and item is not None:
                extra.append(item)
        return np.concatenate([base, np.asarray(extra, np.int64)])[-self.cap:]

    def merge_histories(self, histories: list, events: list) -> tuple[np.ndarray, np.ndarray]:
        """`merge_history` of several users as CSR `([nnz] int64, [users + 1] int64)`. A user
        without events whose bundle history fits H (the usual neighbour) is its stored bytes
        as they are: one join and one decode for all of them, no array per user."""
        limit = 4 * self.cap
        blobs = [(b or b"") if not e and (b is None or len(b) <= limit)
                 else self.merge_history(b, e).astype("<i4").tobytes()
                 for b, e in zip(histories, events)]
        offsets = np.zeros(len(blobs) + 1, np.int64)
        np.cumsum([len(b) >> 2 for b in blobs], out=offsets[1:])
        return np.frombuffer(b"".join(blobs), "<i4").astype(np.int64), offsets

    def bundle_history(self, user: int) -> np.ndarray:
        """The bundle's copy of a known user's history (used while Redis is unavailable)."""
        if user < 0:
            return _EMPTY
        return self.hist_items[self.hist_offsets[user]:self.hist_offsets[user + 1]].astype(
            np.int64)

    def features(self, user: int):
        if self.user_features is None:
            return None
        if user < 0:
            return np.zeros((1, self.user_features.shape[1]), np.int32)
        return self.user_features[user:user + 1]


@dataclasses.dataclass
class Recommendation:
    """One answer: `items` `[{"item_id", "score", "channels"}]` best first, the channels left
    out (`degraded`), `fallback` ("popular" or None), the history length used and the stage
    timings (ms)."""

    version: str
    items: list
    degraded: list
    fallback: str | None
    history_length: int
    timings_ms: dict

    def as_dict(self) -> dict:
        # Not dataclasses.asdict: that deep-copies the N item dicts.
        return {"version": self.version, "items": self.items, "degraded": self.degraded,
                "fallback": self.fallback, "history_length": self.history_length,
                "timings_ms": self.timings_ms}


class Recommender:
    """Answers recommend requests against a `ServingModel` and an `OnlineStore`.

    Args:
      store: an `OnlineStore`; metrics: a `Metrics` or None.
      faiss_threads: OpenMP threads of this request's Faiss calls. `omp_set_num_threads` only
        sets the calling thread's value, so it is set in every request thread: a request
        thread left at the default (one per core) spins up a team for a search that takes
        0.1 ms, and under load the team's wake-ups cost 5-10 ms.
    """

    def __init__(self, store, metrics=None, faiss_threads: int = 1):
        self.store, self.metrics, self.faiss_threads = store, metrics, faiss_threads

    def recommend(self, model: ServingModel, n: int, user_id: str | None = None,
                  history=None) -> Recommendation:
        """Top-n for a known or new user (`user_id`) or for a given list of raw item ids.

        Raises UnknownIdsError for unknown history items. Never raises for Redis: without it
        the answer is U2I alone (`degraded`), from the bundle's copy of a known user's history.
        """
        st = Stages()
        faiss.omp_set_num_threads(self.faiss_threads)
        cfg = dataclasses.replace(model.config, top_n=n)
        wanted = [c for c in ("u2u", "i2i") if getattr(cfg, f"use_{c}")]
        degraded, record, user = [], None, -1
        if history is not None:
            hist = model.item_ids(history)[-model.cap:]
        else:
            user = model.user_index.get(user_id, -1)
            try:
                with st("redis"):
                    record = self.store.read_user(model.keys, user_id)
                hist = model.merge_history(record.history, record.events)
            except StoreUnavailable:
                degraded, hist = wanted, model.bundle_history(user)
        if len(hist) == 0:
            return self._popular(model, n, degraded, st)
        with st("tower"):
            q = model.tower.embed([hist], model.features(user))  # [1, D] or [1, K, D]
        retrieved = {}
        if cfg.use_u2i:
            with st("faiss"):
                retrieved["u2i"] = channels.u2i(model.datastore, q, n if cfg.k1 is None
                                                else cfg.k1)
        if wanted and not degraded:
            try:
                retrieved.update(self._redis_channels(model, cfg, q, hist, user, record, st))
            except StoreUnavailable:
                degraded = wanted
        if not retrieved:  # every enabled channel needs Redis, and it is down
            return self._popular(model, n, degraded, st)
        with st("score"):
            result = rank_retrieved(model.datastore, q, retrieved, cfg, online=True)
            items = self._format(model, result.items[0], result.scores[0],
                                 result.candidates[0], retrieved)
        return self._done(Recommendation(model.version, items, degraded, None, len(hist),
                                         st.total()))

    def _redis_channels(self, model, cfg, q, hist, user, record, st) -> dict:
        """U2U and I2I retrievals, `{"u2u": [1, W], "i2i": [1, W']}`, with one Redis round trip
        for the neighbours' histories and the history items' similar items."""
        ds = model.datastore
        neighbours = _EMPTY
        if cfg.use_u2u and cfg.m1 > 0 and cfg.m2 > 0:
            train = 0 <= user < model.num_train_users
            if record is not None and record.similar_users and train:
                neighbours = decode_ids(record.similar_users)[:cfg.m1]  # precomputed (export)
            else:  # a history request, or a user who is not a training user
                with st("faiss"):
                    found = channels.similar_users(ds, reduce_users(q), cfg.m1,
                                                   exclude=np.array([user]) if train else None)
                neighbours = found[0][found[0] >= 0]
        m3 = min(max(cfg.m3, 0), ds.num_items - 1)
        recent = channels.last_items(hist[None], cfg.m)[0] if cfg.use_i2i and m3 else _EMPTY
        uniq, inverse = np.unique(recent, return_inverse=True)
        with st("redis"):
            bases, events, similar = self.store.read_neighbourhood(
                model.keys, model.user_raw[neighbours].tolist(), uniq.tolist())
        out = {}
        if cfg.use_u2u:
            flat, offsets = model.merge_histories(bases, events)  # the M1 neighbours
            out["u2u"] = channels.neighbour_items(flat, offsets, np.arange(len(offsets) - 1)[None],
                                                  cfg.m2) if cfg.m2 > 0 else _EMPTY[None]
        if cfg.use_i2i:
            out["i2i"] = _table_rows(similar, m3)[inverse].reshape(1, -1)
        return out

    @staticmethod
    def _format(model, items, scores, cands, retrieved) -> list:
        """Ranked real items as dicts with their score and the channels that retrieved them.

        `cands` is the request's candidate set V_C (sorted ascending, 0-padded at the end), which
        holds every retrieved item and every picked one: each channel's retrievals mark their
        candidates' bits through one `searchsorted` (the same sets as `np.isin(items,
        retrieved[c])` per channel, at a tenth of its cost: `isin` sorts or hashes both arrays
        three times per request)."""
        real = items > 0
        items, scores = items[real], scores[real]
        cands = cands[:np.count_nonzero(cands)]
        bits = np.zeros(len(cands), np.int64)
        for j, name in enumerate(CHANNELS):
            if name in retrieved:
                got = retrieved[name].ravel()
                bits[np.searchsorted(cands, got[got > 0])] |= 1 << j  # repeats set the same bit
        mask = bits[np.searchsorted(cands, items)]
        return [{"item_id": i, "score": s, "channels": c} for i, s, c in
                zip(model.item_raw[items].tolist(), scores.tolist(), _LABELS[mask].tolist())]

    def _popular(self, model, n, degraded, st) -> Recommendation:
        """No history at all (an unknown user without events, or an empty `history`): the most
        popular training items, flagged `fallback: "popular"` (score = training clicks)."""
        top = model.popular[:n]
        items = [{"item_id": i, "score": float(c), "channels": ["popular"]} for i, c in
                 zip(model.item_raw[top[:, 0]].tolist(), top[:, 1].tolist())]
        if self.metrics is not None:
            self.metrics.fallback.inc()
        return self._done(Recommendation(model.version, items, degraded, "popular", 0,
                                         st.total()))

    def _done(self, rec: Recommendation) -> Recommendation:
        if self.metrics is not None:
            self.metrics.observe_stages(rec.timings_ms)
            for channel in rec.degraded:
                self.metrics.degraded.labels(channel).inc()
        return rec

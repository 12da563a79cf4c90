"""The processed dataset held in memory: user sequences in CSR form plus id maps and side fields."""

from __future__ import annotations

import dataclasses

import numpy as np

from mic_tf.errors import DataError

SPLITS = ("train", "valid", "test")


@dataclasses.dataclass
class EvalSplit:
    """Valid or test users cut ComiRec's way: the first 80% is the history, the rest the targets.

    Attributes:
      users: `[U]` user indices (into the processed dataset).
      histories: `[U, L]` int32 item ids, the last `L = maxlen` items of the history, right-padded
        with 0.
      history_lengths: `[U]` int32 number of real items in each row of `histories`.
      targets: `[T]` int32 target items of all users, concatenated (duplicates kept).
      target_offsets: `[U + 1]` int64; user `j`'s targets are `targets[offsets[j]:offsets[j+1]]`.
      user_features: `[U, F]` int32 user field ids (F may be 0).
    """

    users: np.ndarray
    histories: np.ndarray
    history_lengths: np.ndarray
    targets: np.ndarray
    target_offsets: np.ndarray
    user_features: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def target_lists(self) -> list[np.ndarray]:
        return np.split(self.targets, self.target_offsets[1:-1])


@dataclasses.dataclass
class ProcessedDataset:
    """A dataset after the ComiRec protocol (spec 2.2).

    Users are numbered `0..U-1` in the shuffled order of the protocol, so the train, valid and test
    users are three consecutive ranges. Items are numbered `1..N` by descending popularity; 0 is
    padding. Categories are numbered `1..C`; 0 means "no category".

    Attributes:
      seq_items: `[nnz]` int32 item ids of every user's time-sorted sequence, concatenated.
      seq_offsets: `[U + 1]` int64 CSR offsets into `seq_items`.
      num_items: N, the number of kept items (padding not counted).
      num_train_users / num_valid_users: sizes of the first two user ranges.
      item_category: `[N + 1]` int32 category id of every item (0 for padding or unknown).
      category_names: `[C + 1]` names; index 0 is `""` (no category).
      user_raw_ids: `[U]` raw user ids as strings, exactly as in the raw files.
      item_raw_ids: `[N + 1]` raw item ids as strings (index 0 is `""`).
      item_titles: `[N + 1]` titles (or `""`) for the embedding projector.
      user_features: `[U, F]` int32 field ids, 0 = unknown; F = 0 when the source has none.
      user_feature_names: the F field names.
      user_feature_vocab: for each field, its value names; value id `j` is `vocab[j - 1]`.
      meta: the metadata written beside the files (params, checksums, counts).
    """

    name: str
    seq_items: np.ndarray
    seq_offsets: np.ndarray
    num_items: int
    num_train_users: int
    num_valid_users: int
    item_category: np.ndarray
    category_names: list[str]
    user_raw_ids: np.ndarray
    item_raw_ids: np.ndarray
    item_titles: np.ndarray
    user_features: np.ndarray
    user_feature_names: list[str]
    user_feature_vocab: list[list[str]]
    meta: dict = dataclasses.field(default_factory=dict)
    sealed_splits: set = dataclasses.field(default_factory=set)

    def seal(self, split: str) -> "ProcessedDataset":
        """Forbids `eval_split(split)` from now on (selection runs seal "test": no code path of a
        run that chooses settings may read the test users' targets). Returns self."""
        self.split_range(split)  # validates the name
        self.sealed_splits.add(split)
        return self

    @property
    def num_users(self) -> int:
        return len(self.seq_offsets) - 1

    @property
    def num_interactions(self) -> int:
        return len(self.seq_items)

    @property
    def num_categories(self) -> int:
        return len(self.category_names) - 1

    @property
    def sequence_lengths(self) -> np.ndarray:
        return np.diff(self.seq_offsets)

    def split_range(self, split: str) -> range:
        bounds = {"train": (0, self.num_train_users),
                  "valid": (self.num_train_users, self.num_train_users + self.num_valid_users),
                  "test": (self.num_train_users + self.num_valid_users, self.num_users)}
        if split not in bounds:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return range(*bounds[split])

    def sequence(self, user: int) -> np.ndarray:
        return self.seq_items[self.seq_offsets[user]:self.seq_offsets[user + 1]]

    def counts(self) -> dict:
        """The counts `datasets/prepare.py` prints (spec 8)."""
        return {"users": self.num_users, "items": self.num_items,
                "interactions": self.num_interactions,
                "train_users": len(self.split_range("train")),
                "valid_users": len(self.split_range("valid")),
                "test_users": len(self.split_range("test"))}

    def item_popularity(self, split: str = "train") -> np.ndarray:
        """`[N + 1]` int64 interaction counts of each item over one split's users (index 0 = 0)."""
        r = self.split_range(split)
        lo, hi = self.seq_offsets[r.start], self.seq_offsets[r.stop]
        return np.bincount(self.seq_items[lo:hi], minlength=self.num_items + 1).astype(np.int64)

    def _histories(self, starts, cut, maxlen):
        """`[U, L]` right-padded last `maxlen` items of `seq[:cut]` per user, and their lengths."""
        hist_len = np.minimum(cut, maxlen)
        first = starts + cut - hist_len
        cols = np.arange(maxlen)
        valid = cols[None, :] < hist_len[:, None]
        idx = np.where(valid, first[:, None] + cols[None, :], 0)
        return np.where(valid, self.seq_items[idx], 0).astype(np.int32), hist_len.astype(np.int32)

    def recent_histories(self, split: str, maxlen: int) -> tuple[np.ndarray, np.ndarray]:
        """Each user's last `maxlen` items (whole sequence), `[U, L]`, and lengths `[U]`."""
        r = self.split_range(split)
        starts = self.seq_offsets[r.start:r.stop]
        return self._histories(starts, self.seq_offsets[r.start + 1:r.stop + 1] - starts, maxlen)

    def eval_split(self, split: str, maxlen: int, history_frac: float = 0.8) -> EvalSplit:
        """Cuts each user of `split` at `int(history_frac * len)` (ComiRec's `k`), vectorised."""
        if maxlen < 1:
            raise ValueError(f"maxlen must be >= 1, got {maxlen}")
        if split in self.sealed_splits:
            raise DataError(f"the {split} split is sealed: this run selects settings and must not "
                            f"read {split} targets (run it with --evaluate_test to test it)")
        r = self.split_range(split)
        users = np.arange(r.start, r.stop, dtype=np.int64)
        starts = self.seq_offsets[users]
        lengths = self.seq_offsets[users + 1] - starts
        cut = (lengths * history_frac).astype(np.int64)  # int() truncation, as ComiRec
        cut = np.maximum(cut, 1)  # a >= 5-item user always has cut >= 4; guards custom fractions
        histories, hist_len = self._histories(starts, cut, maxlen)
        target_len = lengths - cut
        target_offsets = np.zeros(len(users) + 1, dtype=np.int64)
        np.cumsum(target_len, out=target_offsets[1:])
        # Gather the targets of every user in one shot: position j of the output is
        # starts[u] + cut[u] + (j - target_offsets[u]).
        owner = np.repeat(np.arange(len(users)), target_len)
        within = np.arange(target_offsets[-1]) - target_offsets[owner]
        targets = self.seq_items[starts[owner] + cut[owner] + within].astype(np.int32)
        return EvalSplit(users=users, histories=histories, history_lengths=hist_len,
                         targets=targets, target_offsets=target_offsets,
                         user_features=self.user_features[users])
